//! `anyhow::Result` as an annotated function's return type: results replay, a body's error
//! releases the key, and the library's own errors come back as an `anyhow::Error` that
//! downcasts to `idempotent_core::Error`.

use std::sync::atomic::{AtomicUsize, Ordering};

use idempotent_core::{Error, MemoryStore, idempotent};

#[idempotent(key = "order_id", store = store, skip = "runs, fail")]
async fn ship(
    store: &MemoryStore,
    runs: &AtomicUsize,
    fail: bool,
    order_id: u64,
    quantity: u32,
) -> anyhow::Result<String> {
    runs.fetch_add(1, Ordering::SeqCst);
    if fail {
        anyhow::bail!("the carrier is down");
    }
    Ok(format!("parcel-{order_id}x{quantity}"))
}

#[tokio::test]
async fn anyhow_results_replay_and_library_errors_downcast() {
    let store = MemoryStore::new();
    let runs = AtomicUsize::new(0);

    let failed = ship(&store, &runs, true, 1, 2).await;
    assert_eq!(
        failed.map_err(|error| error.to_string()),
        Err("the carrier is down".to_owned())
    );
    // The error released the key: the retry runs, then later retries replay.
    assert_eq!(
        ship(&store, &runs, false, 1, 2).await.ok().as_deref(),
        Some("parcel-1x2")
    );
    assert_eq!(
        ship(&store, &runs, false, 1, 2).await.ok().as_deref(),
        Some("parcel-1x2")
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);

    // Same key, other quantity: the library's error, inside the anyhow::Error.
    let mismatch = ship(&store, &runs, false, 1, 3).await;
    let error = mismatch.expect_err("a different payload must not replay");
    assert!(
        matches!(
            error.downcast_ref::<Error>(),
            Some(Error::PayloadMismatch { .. })
        ),
        "{error:?}"
    );
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}
