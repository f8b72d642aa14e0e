//! What a call may be told: ttl, lease, waiting and failure policies.

use std::time::Duration;

use crate::error::Error;

/// The shortest lease a call accepts: 1 second.
///
/// While a body runs, the heartbeat renews its claim every `lease / 3`, and each renewal must
/// reach the store before the lease runs out, through scheduling delays and a store round
/// trip on a loaded machine. Leases of a few milliseconds lose their claim mid-body, and a
/// duplicate then runs the body a second time; a second leaves two thirds of it, over 600 ms,
/// for a renewal to land. Shorter leases are refused ([`Error::LeaseTooShort`]), never
/// silently lengthened. `#[idempotent(lease = "...")]` checks the same minimum at compile time.
pub const MIN_LEASE: Duration = Duration::from_secs(1);

/// What a call does when another call holds the key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnInFlight {
    /// Wait for the other call to finish and replay its result (bounded by the wait budget).
    #[default]
    Wait,
    /// Fail at once with [`Error::InFlight`].
    Reject,
}

/// What a call does when the store itself fails (connection lost, timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum OnStoreError {
    /// Return [`Error::Store`]; the body does not run. The safe default.
    #[default]
    FailClosed,
    /// Run the body without protection when the claim cannot be made, and return its result
    /// even if it cannot be recorded. Duplicates arriving during the outage run again: choose
    /// this only where a second execution is cheaper than an outage.
    FailOpen,
}

/// Options for one idempotent call. `const`, so generated code builds them at compile time.
///
/// ```
/// use std::time::Duration;
/// use idempotent_core::{CallOptions, OnInFlight};
///
/// const OPTIONS: CallOptions = CallOptions::new()
///     .ttl(Duration::from_secs(3600))
///     .lease(Duration::from_secs(10))
///     .on_in_flight(OnInFlight::Reject);
/// assert_eq!(OPTIONS.ttl_duration(), Duration::from_secs(3600));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    pub(crate) ttl: Duration,
    pub(crate) lease: Duration,
    wait_timeout: Option<Duration>,
    pub(crate) on_in_flight: OnInFlight,
    pub(crate) on_store_error: OnStoreError,
}

impl Default for CallOptions {
    fn default() -> Self {
        Self::new()
    }
}

impl CallOptions {
    /// Defaults: ttl 24 hours, lease 30 seconds, wait for in-flight calls up to one lease,
    /// fail closed.
    pub const fn new() -> Self {
        CallOptions {
            ttl: Duration::from_secs(24 * 60 * 60),
            lease: Duration::from_secs(30),
            wait_timeout: None,
            on_in_flight: OnInFlight::Wait,
            on_store_error: OnStoreError::FailClosed,
        }
    }

    /// How long a completed result is replayed.
    pub const fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// How long a claim holds without a heartbeat. While the body runs, the claim is extended
    /// every `lease / 3`; if the process dies, another caller takes over after `lease`. At
    /// least [`MIN_LEASE`]; a call with a shorter one fails with [`Error::LeaseTooShort`].
    pub const fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// How long a call waits for an in-flight duplicate before failing with
    /// [`Error::InFlight`]. Default: one lease.
    pub const fn wait_timeout(mut self, wait: Duration) -> Self {
        self.wait_timeout = Some(wait);
        self
    }

    /// Wait for in-flight duplicates, or reject them.
    pub const fn on_in_flight(mut self, policy: OnInFlight) -> Self {
        self.on_in_flight = policy;
        self
    }

    /// Fail closed (default) or open when the store is unavailable.
    pub const fn on_store_error(mut self, policy: OnStoreError) -> Self {
        self.on_store_error = policy;
        self
    }

    /// The configured ttl.
    pub const fn ttl_duration(&self) -> Duration {
        self.ttl
    }

    /// The configured lease.
    pub const fn lease_duration(&self) -> Duration {
        self.lease
    }

    /// Checks the options a call cannot run with: a lease shorter than [`MIN_LEASE`] fails with
    /// [`Error::LeaseTooShort`]. [`Call::run`](crate::Call::run) checks this before it claims anything.
    pub const fn validate(&self) -> Result<(), Error> {
        if self.lease.as_nanos() < MIN_LEASE.as_nanos() {
            return Err(Error::LeaseTooShort {
                lease: self.lease,
                minimum: MIN_LEASE,
            });
        }
        Ok(())
    }

    pub(crate) fn wait_budget(&self) -> Duration {
        match self.wait_timeout {
            Some(wait) => wait,
            None => self.lease,
        }
    }
}
