//! How a call went, as its caller sees it: the outcome, [`observe`] and [`current_epoch`].

use std::cell::Cell;
use std::future::Future;

/// Whether a call ran its body or replayed a stored result.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// The body ran in this call.
    Executed,
    /// The result was recorded by an earlier call and replayed.
    Replayed,
}

/// A successful call's value and how it was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome<T> {
    /// The body's value, or the stored value of the call that ran it.
    pub value: T,
    /// Whether this call ran the body.
    pub disposition: Disposition,
}

impl<T> Outcome<T> {
    /// Whether the value was replayed from an earlier call.
    pub fn is_replayed(&self) -> bool {
        self.disposition == Disposition::Replayed
    }

    /// The value.
    pub fn into_value(self) -> T {
        self.value
    }
}

tokio::task_local! {
    static OBSERVED: Cell<Option<Disposition>>;
    static CURRENT_EPOCH: u64;
}

/// Runs `future` and reports whether the idempotent call it made ran or replayed.
///
/// `#[idempotent]` functions return the plain value, so a caller that needs to know (to set a
/// header, to count replays) wraps the call. When `future` makes several idempotent calls, the
/// one that finished last is reported; `None` means it made none.
///
/// ```
/// use idempotent_core::{Disposition, Error, idempotent, observe};
///
/// #[idempotent(key = "id", scope = "docs.observe")]
/// async fn create(id: u64) -> Result<u64, Error> {
///     Ok(id * 2)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Error> {
/// let (first, how) = observe(create(7)).await;
/// assert_eq!((first?, how), (14, Some(Disposition::Executed)));
/// let (second, how) = observe(create(7)).await;
/// assert_eq!((second?, how), (14, Some(Disposition::Replayed)));
/// # Ok(())
/// # }
/// ```
pub async fn observe<F: Future>(future: F) -> (F::Output, Option<Disposition>) {
    OBSERVED
        .scope(Cell::new(None), async move {
            let output = future.await;
            (output, OBSERVED.with(Cell::get))
        })
        .await
}

/// The fencing token of the claim the current idempotent body runs under, if any.
///
/// The epoch grows with every claim on a record, so a downstream system that remembers the
/// highest epoch it has seen per key can refuse writes from a worker whose lease was taken over.
pub fn current_epoch() -> Option<u64> {
    CURRENT_EPOCH.try_with(|epoch| *epoch).ok()
}

/// Tells an enclosing [`observe`] how the call went.
pub(crate) fn report(disposition: Disposition) {
    let _ = OBSERVED.try_with(|cell| cell.set(Some(disposition)));
}

/// Runs `poll` (one poll of a body) with [`current_epoch`] answering `epoch`. Setting the value
/// around each poll, rather than wrapping each body in a task-local future, and taking the
/// poll as a `dyn` closure, keep this out of every body's generated code.
pub(crate) fn with_epoch(epoch: u64, poll: &mut dyn FnMut()) {
    CURRENT_EPOCH.sync_scope(epoch, poll);
}
