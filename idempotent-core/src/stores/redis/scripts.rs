//! The Lua scripts that decide every state change, from the `.lua` files beside this one.
//!
//! The scripts are written for the server's time per call (every `redis.call` costs about as
//! much as a small command): no helper closures, and the checks that need string scans
//! (hex fields) run only when a cheaper comparison has not settled the question already.
//! Numbers are written with `%.0f`, exact for integers below 2^53 (Lua numbers are doubles);
//! epochs (microseconds) and deadlines (milliseconds) stay below it for centuries.

use std::sync::LazyLock;

use redis::Script;

const CLAIM_LUA: &str = include_str!("claim.lua");
const COMPLETE_LUA: &str = include_str!("complete.lua");
const RELEASE_LUA: &str = include_str!("release.lua");
const EXTEND_LUA: &str = include_str!("extend.lua");
const PURGE_LUA: &str = include_str!("purge.lua");

pub(super) struct Scripts {
    pub(super) claim: Script,
    pub(super) complete: Script,
    pub(super) release: Script,
    pub(super) extend: Script,
    pub(super) purge: Script,
}

/// Compiled once per process: `Script::new` computes each script's SHA-1.
pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| Scripts {
    claim: Script::new(CLAIM_LUA),
    complete: Script::new(COMPLETE_LUA),
    release: Script::new(RELEASE_LUA),
    extend: Script::new(EXTEND_LUA),
    purge: Script::new(PURGE_LUA),
});

/// Loaded when a store connects.
pub(super) const ALL_SCRIPTS: [&str; 5] =
    [CLAIM_LUA, COMPLETE_LUA, RELEASE_LUA, EXTEND_LUA, PURGE_LUA];
