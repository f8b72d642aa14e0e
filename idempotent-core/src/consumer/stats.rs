//! What a consumer did, counted as it goes.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

/// Live counters of a [`Consumer`](super::Consumer), shared by every clone.
#[derive(Debug, Clone, Default)]
pub struct Stats(Arc<Counters>);

#[derive(Debug, Default)]
pub(super) struct Counters {
    received: AtomicU64,
    processed: AtomicU64,
    duplicates: AtomicU64,
    in_flight: AtomicU64,
    failed: AtomicU64,
    store_errors: AtomicU64,
    dead_lettered: AtomicU64,
    rejected: AtomicU64,
    unprotected: AtomicU64,
    cancelled: AtomicU64,
    settle_errors: AtomicU64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Messages received from the broker, redeliveries included.
    pub received: u64,
    /// Messages whose handler ran and whose record is durable; each was then acknowledged.
    pub processed: u64,
    /// Duplicates of a processed message: acknowledged without running the handler.
    pub duplicates: u64,
    /// Duplicates of a message in flight elsewhere: requeued, not acknowledged.
    pub in_flight: u64,
    /// Handler errors: the claim released and the message requeued (or dead-lettered at the
    /// poison limit).
    pub failed: u64,
    /// Store failures (outage, lost lease): the message requeued, not acknowledged.
    pub store_errors: u64,
    /// Messages dead-lettered (poison, missing key, payload mismatch, unprocessable).
    pub dead_lettered: u64,
    /// Messages without a key that were rejected.
    pub rejected: u64,
    /// Messages without a key whose handler ran unprotected.
    pub unprotected: u64,
    /// Messages in flight at shutdown that did not finish in time: released and requeued.
    pub cancelled: u64,
    /// Acknowledgements and other settlements the broker did not take (the message will be
    /// redelivered and recognised).
    pub settle_errors: u64,
}

/// Which counter to bump.
#[derive(Debug, Clone, Copy)]
pub(super) enum Count {
    Received,
    Processed,
    Duplicate,
    InFlight,
    Failed,
    StoreError,
    DeadLettered,
    Rejected,
    Unprotected,
    Cancelled,
    SettleError,
}

impl Stats {
    pub(super) fn bump(&self, count: Count) {
        let c = &self.0;
        let counter = match count {
            Count::Received => &c.received,
            Count::Processed => &c.processed,
            Count::Duplicate => &c.duplicates,
            Count::InFlight => &c.in_flight,
            Count::Failed => &c.failed,
            Count::StoreError => &c.store_errors,
            Count::DeadLettered => &c.dead_lettered,
            Count::Rejected => &c.rejected,
            Count::Unprotected => &c.unprotected,
            Count::Cancelled => &c.cancelled,
            Count::SettleError => &c.settle_errors,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.0;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        StatsSnapshot {
            received: read(&c.received),
            processed: read(&c.processed),
            duplicates: read(&c.duplicates),
            in_flight: read(&c.in_flight),
            failed: read(&c.failed),
            store_errors: read(&c.store_errors),
            dead_lettered: read(&c.dead_lettered),
            rejected: read(&c.rejected),
            unprotected: read(&c.unprotected),
            cancelled: read(&c.cancelled),
            settle_errors: read(&c.settle_errors),
        }
    }
}
