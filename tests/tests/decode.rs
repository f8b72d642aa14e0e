//! Unreadable records: a stored payload that cannot be decoded is `Error::Decode`, never a
//! second execution.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use idempotent_core::key::IdempotencyKey;
use idempotent_core::store::{Claim, ClaimRequest, OwnerId};
use idempotent_core::{Error, IdempotencyStore, MemoryStore, idempotent};
use serde::{Deserialize, Serialize};

const NAMESPACE: &str = "decode.receipt";

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Receipt {
    charge_id: String,
    amount: u64,
}

#[idempotent(key = "order_id", store = store, skip = "runs", scope = "decode.receipt")]
async fn receipt(store: &MemoryStore, runs: &AtomicUsize, order_id: u64) -> Result<Receipt, Error> {
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(Receipt {
        charge_id: format!("ch_{order_id}"),
        amount: 100,
    })
}

/// Completes a record under the exact scope and key `receipt(order_id)` uses, holding `payload`.
async fn plant(store: &MemoryStore, order_id: u64, payload: &[u8]) {
    let key = IdempotencyKey::builder(NAMESPACE).part(&order_id).finish();
    let claim = store
        .claim(&ClaimRequest {
            ttl: Duration::from_secs(3600),
            ..support::request(NAMESPACE, key.as_str(), OwnerId::new())
        })
        .await
        .unwrap();
    let Claim::Acquired(lease) = claim else {
        panic!("expected Acquired, got {claim:?}");
    };
    store
        .complete(
            &lease,
            Bytes::copy_from_slice(payload),
            Duration::from_secs(3600),
        )
        .await
        .unwrap();
}

/// Calls `receipt(order_id)` twice over a planted payload: both fail with `Decode` in the
/// function's scope, and the body never runs.
async fn assert_undecodable(payload: &[u8]) {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    plant(&store, 1, payload).await;

    for _ in 0..2 {
        let result = receipt(&store, &runs, 1).await;
        assert!(
            matches!(&result, Err(Error::Decode { scope, .. }) if scope == NAMESPACE),
            "payload {payload:?}: {result:?}"
        );
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "payload {payload:?}");
    assert_eq!(store.len(), 1, "the unreadable record is kept");

    // Another key in the same store is unaffected.
    assert_eq!(receipt(&store, &runs, 2).await.unwrap().charge_id, "ch_2");
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn planted_valid_payload_is_replayed_without_running_the_body() {
    // Control: the planting helper hits the exact record the function reads.
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    plant(&store, 1, b"\x01{\"charge_id\":\"planted\",\"amount\":7}").await;

    let replayed = receipt(&store, &runs, 1).await.unwrap();
    assert_eq!(
        replayed,
        Receipt {
            charge_id: "planted".into(),
            amount: 7
        }
    );
    assert_eq!(runs.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn garbage_bytes_record_is_a_decode_error_not_a_reexecution() {
    assert_undecodable(b"\xff\x00garbage\x13\x37").await;
}

#[tokio::test]
async fn garbage_after_a_valid_format_byte_is_a_decode_error_not_a_reexecution() {
    assert_undecodable(b"\x01\xff\x00garbage").await;
}

#[tokio::test]
async fn valid_json_of_the_wrong_shape_is_a_decode_error_not_a_reexecution() {
    assert_undecodable(b"\x01{\"unexpected\":true}").await;
    assert_undecodable(b"\x01[1,2,3]").await;
    assert_undecodable(b"\x01null").await;
}

#[tokio::test]
async fn bare_json_without_a_format_byte_is_a_decode_error_not_a_reexecution() {
    assert_undecodable(b"{\"charge_id\":\"ch_1\",\"amount\":100}").await;
}

#[tokio::test]
async fn empty_payload_is_a_decode_error_not_a_reexecution() {
    assert_undecodable(b"").await;
}

#[tokio::test]
async fn cached_error_record_read_by_a_function_without_cache_errors_is_a_decode_error() {
    assert_undecodable(b"\x02\"declined\"").await;
}
