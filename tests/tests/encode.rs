//! Results JSON cannot store exactly are refused when they are stored, never replayed as
//! something else: JSON writes `None`, `()`, unit structs and non-finite floats all as `null`,
//! so a `Some` holding one of them would come back as `None`.

use std::sync::atomic::{AtomicUsize, Ordering};

use idempotent_core::{Call, Disposition, Error, MemoryStore, idempotent, observe};
use serde::{Deserialize, Serialize};

#[idempotent(key = "id", store = store, skip = "runs", scope = "encode.some_unit")]
async fn some_unit(store: &MemoryStore, runs: &AtomicUsize, id: u64) -> Result<Option<()>, Error> {
    let _ = id;
    runs.fetch_add(1, Ordering::SeqCst);
    Ok(Some(()))
}

#[tokio::test]
async fn some_unit_result_is_an_encode_error_not_a_replay_of_none() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);
    for attempt in 1..=2 {
        let result = some_unit(&store, &runs, 1).await;
        assert!(
            matches!(result, Err(Error::Encode { .. })),
            "Ok(Some(())) must not be stored to replay as Ok(None): {result:?}"
        );
        assert_eq!(runs.load(Ordering::SeqCst), attempt, "the key was released");
    }
}

#[derive(Debug, PartialEq, Serialize, Deserialize)]
struct Shipment {
    id: u64,
    tracking: Option<Option<String>>,
}

#[tokio::test]
async fn nested_some_of_none_is_an_encode_error_and_other_options_replay_exactly() {
    let store = MemoryStore::new();
    let refused = Call::new(&store, "encode.nested", "k")
        .run(async {
            Ok::<_, Error>(Shipment {
                id: 1,
                tracking: Some(None),
            })
        })
        .await;
    assert!(matches!(refused, Err(Error::Encode { .. })), "{refused:?}");
    let nan = Call::new(&store, "encode.nan", "k")
        .run(async { Ok::<_, Error>(Some(f64::NAN)) })
        .await;
    assert!(matches!(nan, Err(Error::Encode { .. })), "{nan:?}");

    // Options JSON can tell apart round-trip like any other value.
    for (key, value) in [("none", None), ("some-some", Some(Some(String::new())))] {
        let first = Call::new(&store, "encode.exact", key)
            .run(async {
                Ok::<_, Error>(Shipment {
                    id: 2,
                    tracking: value.clone(),
                })
            })
            .await
            .unwrap();
        let (replay, how) = observe(Call::new(&store, "encode.exact", key).run(async {
            Ok::<_, Error>(Shipment {
                id: 0,
                tracking: None,
            })
        }))
        .await;
        let replay = replay.unwrap();
        assert!(replay.is_replayed(), "{how:?}");
        assert_eq!(replay.value, first.value);
        assert_eq!(how, Some(Disposition::Replayed));
    }
}
