//! Test-only package: see `tests/`, `ui/` and `benches/`.
