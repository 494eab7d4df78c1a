//! Replays the lsm fuzz targets' corpora and regressions on stable (see
//! `testkit::fuzz_corpus` and "Fuzzing" in the README).
//!
//! `cargo test -p strata --test lsm_fuzz_corpus -- --ignored` rewrites the generated seeds after a deliberate format
//! change.

use lsm::fuzzing::{seeds, TARGETS};
use testkit::fuzz_corpus;

#[test]
fn corpora_and_regressions_replay_without_panics() {
    for (target, f) in TARGETS {
        fuzz_corpus::replay(target, *f);
    }
}

#[test]
fn committed_seeds_match_the_encoders() {
    fuzz_corpus::check_seeds(seeds().expect("seeds"));
}

#[test]
#[ignore = "writes the seed corpora into the source tree"]
fn write_seed_corpora() {
    fuzz_corpus::write_seeds(seeds().expect("seeds"));
}
