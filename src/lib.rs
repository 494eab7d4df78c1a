//! Shared helpers for Strata's cross-crate integration tests (`tests/`) and benchmarks (`benches/`).
