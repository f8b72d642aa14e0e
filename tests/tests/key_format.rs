//! Golden tests for the persisted formats: key encoding, fingerprints and stored payloads.
//!
//! The expected digests were computed independently with Python's `hashlib` from the encoding
//! table in `idempotent_core::key`'s docs. If one of these fails, stored keys would no longer
//! be found after an upgrade: change the domain tag (`v2`) instead of editing the format.

use std::collections::BTreeMap;
use std::time::Duration;

use idempotent_core::key::{Fingerprint, IdempotencyKey};
use idempotent_core::store::{Claim, ClaimRequest, OwnerId};
use idempotent_core::{Call, Error, IdempotencyStore, MemoryStore, idempotent};

#[test]
fn key_of_scope_and_parts_is_pinned() {
    let key = IdempotencyKey::builder("orders.charge")
        .part(&42u64)
        .part("capture")
        .finish();
    assert_eq!(
        key.as_str(),
        "894180452737bd1ae4b46516e7cacbc2491e17aa5bddb08bb14eb6baf71df9e1"
    );
}

#[test]
fn key_of_scope_alone_is_pinned() {
    assert_eq!(
        IdempotencyKey::builder("ns").finish().as_str(),
        "f5fc05bbb621de98ba271494866fbcd379768b374880e0de0ecb41231cadb3f7"
    );
}

#[test]
fn key_of_every_encoding_kind_is_pinned() {
    let map: BTreeMap<&str, u8> = BTreeMap::from([("a", 1)]);
    let key = IdempotencyKey::builder("mixed")
        .part(&Some(-7i32))
        .part(&true)
        .part(&'é')
        .part(&vec![1u8, 2])
        .part(&(1u16, "a"))
        .part(&None::<u64>)
        .part(&map)
        .part(&1.5f64)
        .part(&())
        .finish();
    assert_eq!(
        key.as_str(),
        "15ea9edb72d81d8bdb70bd4fe1a86ec86994adc631cb81477b78df7207988bc9"
    );
}

#[test]
fn uuid_key_part_is_pinned() {
    let uuid = uuid::Uuid::from_bytes(std::array::from_fn(|i| i as u8));
    let key = IdempotencyKey::builder("uuid").part(&uuid).finish();
    assert_eq!(
        key.as_str(),
        "183a53db3829731d6e83232649bc27b76ad843a0c53be3b568ab124dc4c4e3c0"
    );
}

#[test]
fn fingerprints_are_pinned() {
    let fields = Fingerprint::builder()
        .field("amount", &1999u64)
        .field("currency", "USD")
        .finish();
    assert_eq!(
        fields.to_hex(),
        "a09bf25934f05a14409c113afeba94026e724db8f6fd8a00a76cf0582e62e158"
    );
    assert_eq!(
        Fingerprint::of_bytes(b"raw body").to_hex(),
        "d382724b3e01b9b8e7359352f5097b131c1bf378b12ee7679c8883ef1a3e316c"
    );
}

#[idempotent(key = "order_id, action", scope = "orders.charge", store = store)]
async fn charge(store: &MemoryStore, order_id: u64, action: &str) -> Result<u32, Error> {
    let _ = (order_id, action);
    Ok(7)
}

#[tokio::test]
async fn macro_stores_under_the_pinned_scope_and_key() {
    let store = MemoryStore::new();
    charge(&store, 42, "capture").await.unwrap();
    let claim = store
        .claim(&ClaimRequest {
            lease: Duration::from_secs(1),
            ..support::request(
                "orders.charge",
                "894180452737bd1ae4b46516e7cacbc2491e17aa5bddb08bb14eb6baf71df9e1",
                OwnerId::new(),
            )
        })
        .await
        .unwrap();
    match claim {
        Claim::Completed(record) => assert_eq!(&record.payload[..], b"\x017"),
        other => panic!("expected the completed record, got {other:?}"),
    }
}

#[tokio::test]
async fn stored_payload_is_a_version_byte_then_json() {
    #[derive(serde::Serialize, serde::Deserialize)]
    struct Receipt {
        id: String,
        amount: u64,
    }
    let store = MemoryStore::new();
    let fingerprint = Fingerprint::of_bytes(b"request");
    Call::new(&store, "scope", "key")
        .fingerprint(fingerprint)
        .run(async {
            Ok::<_, Error>(Receipt {
                id: "r1".into(),
                amount: 5,
            })
        })
        .await
        .unwrap();
    let claim = store
        .claim(&ClaimRequest {
            fingerprint,
            lease: Duration::from_secs(1),
            ..support::request("scope", "key", OwnerId::new())
        })
        .await
        .unwrap();
    match claim {
        Claim::Completed(record) => {
            assert_eq!(&record.payload[..], b"\x01{\"id\":\"r1\",\"amount\":5}");
            assert!(record.epoch > 0);
        }
        other => panic!("expected the completed record, got {other:?}"),
    }
}
