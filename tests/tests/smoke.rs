#![allow(clippy::unwrap_used)]
use idempotent_core::{Error, IdempotencyStore, MemoryStore, idempotent};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

static RUNS: AtomicUsize = AtomicUsize::new(0);

#[idempotent(key = "order_id, action")]
async fn charge(order_id: u64, action: &str, amount: u64) -> Result<String, Error> {
    RUNS.fetch_add(1, Ordering::SeqCst);
    let x: u32 = "5".parse().map_err(|_| Error::LeaseLost)?;
    Ok(format!("{order_id}-{action}-{amount}-{x}"))
}

struct Service {
    store: Arc<dyn IdempotencyStore>,
    count: u32,
}

impl Service {
    #[idempotent(key = "id", store = self.store)]
    async fn act(&mut self, id: u32) -> Result<u32, Error> {
        self.count += 1;
        Ok(self.count + id)
    }
}

#[idempotent(key = "id", store = store)]
async fn with_store(store: &MemoryStore, id: u32) -> Result<(), Error> {
    let _ = id;
    Ok(())
}

#[tokio::test]
async fn smoke() {
    assert_eq!(charge(1, "a", 5).await.unwrap(), "1-a-5-5");
    assert_eq!(charge(1, "a", 5).await.unwrap(), "1-a-5-5");
    assert_eq!(RUNS.load(Ordering::SeqCst), 1);
    assert!(matches!(
        charge(1, "a", 6).await,
        Err(Error::PayloadMismatch { .. })
    ));
    let mut s = Service {
        store: Arc::new(MemoryStore::new()),
        count: 0,
    };
    assert_eq!(s.act(1).await.unwrap(), 2);
    assert_eq!(s.act(1).await.unwrap(), 2);
    let m = MemoryStore::new();
    with_store(&m, 3).await.unwrap();
    assert_eq!(m.len(), 1);
}
