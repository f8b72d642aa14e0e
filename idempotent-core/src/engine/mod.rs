//! The engine every entry point runs through: claim, run the body with a heartbeat, record the
//! result or give the claim up.
//!
//! - [`options`]: what a call may be told ([`CallOptions`], the policies, [`MIN_LEASE`]).
//! - [`call`]: [`Call`], the one description of a call, and its run.
//! - `drive`: everything a call does that does not depend on its result type, as one future
//!   compiled once: `claim` (the claim and wait loop), `heartbeat` (renewing the claim while
//!   the body runs) and `record` (where the result is kept). Only polling the body and
//!   encoding and decoding its result are generic.
//! - [`outcome`]: what the caller learns ([`Outcome`], [`observe`], [`current_epoch`]);
//!   `trace`: what the outside world sees (a span per call, metrics).

pub(crate) mod call;
mod claim;
mod drive;
pub(crate) mod heartbeat;
pub(crate) mod options;
pub(crate) mod outcome;
pub(crate) mod record;
pub(crate) mod trace;

pub use call::Call;
pub use heartbeat::HeartbeatHook;
pub use options::{CallOptions, MIN_LEASE, OnInFlight, OnStoreError};
pub use outcome::{Disposition, Outcome, current_epoch, observe};
