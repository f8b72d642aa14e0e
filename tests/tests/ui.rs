//! Compile-fail and compile-pass tests for `#[idempotent]`: one file per rule in `ui/fail/`,
//! each with the exact diagnostic it must produce, and every supported form in `ui/pass/`.
//!
//! Regenerate the `.stderr` files with `TRYBUILD=overwrite` and review every one of them.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.pass("ui/pass/*.rs");
    t.compile_fail("ui/fail/*.rs");
}
