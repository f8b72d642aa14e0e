//! The check every backend must pass: many concurrent duplicates of one call run its body once.

use std::fmt::Debug;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use idempotent_core::{Disposition, Error, observe};
use tokio::sync::Barrier;

/// Starts `calls` duplicates of one call at once, each on a task of its own released by one
/// barrier, and checks that they collapsed into one execution: the body ran once (`runs`, which
/// the body counts), exactly one call executed and every other replayed, and every caller got
/// `expected`.
///
/// `call` makes one duplicate: typically a call of an `#[idempotent]` function with the same
/// key every time.
pub async fn assert_duplicates_run_once<T, F, Fut>(
    calls: usize,
    runs: &AtomicUsize,
    expected: T,
    call: F,
) where
    T: Debug + PartialEq + Send + 'static,
    F: Fn() -> Fut,
    Fut: Future<Output = Result<T, Error>> + Send + 'static,
{
    let barrier = Arc::new(Barrier::new(calls));
    let tasks: Vec<_> = (0..calls)
        .map(|_| {
            let (duplicate, barrier) = (call(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                observe(duplicate).await
            })
        })
        .collect();
    let (mut executed, mut replayed) = (0, 0);
    for task in tasks {
        let (result, how) = task.await.expect("a duplicate's task panicked");
        assert_eq!(result.expect("a duplicate failed"), expected);
        match how {
            Some(Disposition::Executed) => executed += 1,
            Some(Disposition::Replayed) => replayed += 1,
            None => panic!("an idempotent call reported no disposition"),
        }
    }
    assert_eq!(runs.load(Ordering::SeqCst), 1, "the body must run once");
    assert_eq!((executed, replayed), (1, calls - 1));
}
