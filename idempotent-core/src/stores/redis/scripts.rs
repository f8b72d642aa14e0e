//! The Lua scripts that decide every state change, from the `.lua` files beside this one.
//!
//! The scripts are written for the server's time per call (every `redis.call` costs about as
//! much as a small command): no helper closures, and the checks that need string scans
//! (hex fields) run only when a cheaper comparison has not settled the question already.
//! Numbers are written with `%.0f`, exact for integers below 2^53 (Lua numbers are doubles);
//! epochs (microseconds) and deadlines (milliseconds) stay below it for centuries.

use std::sync::LazyLock;

use redis::Script;

const READ_LUA: &str = include_str!("read.lua");
const CLAIM_LUA: &str = include_str!("claim.lua");
const RECORD_LUA: &str = include_str!("record.lua");
const COMPLETE_LUA: &str = include_str!("complete.lua");
const RELEASE_LUA: &str = include_str!("release.lua");
const EXTEND_LUA: &str = include_str!("extend.lua");
const PURGE_LUA: &str = include_str!("purge.lua");

/// Where a script reads and checks the record with `read.lua`, which claims and record
/// inspection share.
const READ_MARKER: &str = "--[[read.lua]]";

pub(super) struct Scripts {
    pub(super) claim: Script,
    pub(super) record: Script,
    pub(super) complete: Script,
    pub(super) release: Script,
    pub(super) extend: Script,
    pub(super) purge: Script,
    /// The text of every script, loaded when a store connects.
    pub(super) all: [String; 6],
}

/// `code` with `read.lua` in place of its marker.
fn with_read(code: &str) -> String {
    code.replacen(READ_MARKER, READ_LUA, 1)
}

/// Compiled once per process: `Script::new` computes each script's SHA-1.
pub(super) static SCRIPTS: LazyLock<Scripts> = LazyLock::new(|| {
    let all = [
        with_read(CLAIM_LUA),
        with_read(RECORD_LUA),
        COMPLETE_LUA.to_owned(),
        RELEASE_LUA.to_owned(),
        EXTEND_LUA.to_owned(),
        PURGE_LUA.to_owned(),
    ];
    Scripts {
        claim: Script::new(&all[0]),
        record: Script::new(&all[1]),
        complete: Script::new(&all[2]),
        release: Script::new(&all[3]),
        extend: Script::new(&all[4]),
        purge: Script::new(&all[5]),
        all,
    }
});

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_read_is_put_in_once_per_script_that_asks() {
        for code in &SCRIPTS.all[..2] {
            assert!(!code.contains(READ_MARKER));
            assert_eq!(code.matches("redis.pcall('HMGET'").count(), 1);
        }
        assert!(SCRIPTS.all[2..].iter().all(|code| !code.contains("--[[")));
    }
}
