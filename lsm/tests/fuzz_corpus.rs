//! Replays the fuzz targets' seed corpora and every crash the fuzzers found (`fuzz/corpus/<t>/`
//! and `fuzz/regressions/<t>/` at the repository root) through the same entry points the
//! targets call, so a decoder that panics again fails `cargo test` on stable, without nightly or
//! cargo-fuzz. See "Fuzzing" in the README.
//!
//! `cargo test -p lsm --test fuzz_corpus -- --ignored` rewrites the generated seeds
//! (`valid-*`, `reject-*`) after a deliberate format change.

use std::path::{Path, PathBuf};

use lsm::fuzzing::{seeds, Outcome, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz")
}

/// The files of `dir`, sorted; none when it does not exist (a target with no crash yet).
fn files(dir: &Path) -> Vec<PathBuf> {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<PathBuf> = rd
        .map(|e| e.expect("listing a corpus").path())
        .filter(|p| p.is_file())
        .collect();
    out.sort();
    out
}

/// Runs `f` on every file of the target's corpus and regressions; returns how many it ran.
/// `valid-*` files must be accepted and `reject-*` files refused; any file must not panic.
pub fn replay(target: &str, f: fn(&[u8]) -> Outcome) -> usize {
    let mut n = 0;
    for kind in ["corpus", "regressions"] {
        for path in files(&fuzz_dir().join(kind).join(target)) {
            let data = std::fs::read(&path).expect("reading a corpus file");
            let r = std::panic::catch_unwind(|| f(&data))
                .unwrap_or_else(|_| panic!("{} panicked", path.display()));
            let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if name.starts_with("valid-") {
                assert_eq!(r, Ok(()), "{} must be accepted", path.display());
            } else if name.starts_with("reject-") {
                assert!(r.is_err(), "{} must be refused", path.display());
            }
            n += 1;
        }
    }
    n
}

#[test]
fn corpora_and_regressions_replay_without_panics() {
    for (target, f) in TARGETS {
        let n = replay(target, *f);
        assert!(n > 0, "no corpus for {target}: run the ignored seed writer");
    }
}

/// The committed seeds are what the encoders produce today: a format change that forgot to
/// bump a version, or to regenerate the seeds, shows up here.
#[test]
fn committed_seeds_match_the_encoders() {
    for (target, name, bytes) in seeds().expect("seeds") {
        let path = fuzz_dir().join("corpus").join(target).join(&name);
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run the ignored seed writer)", path.display()));
        assert!(committed == bytes, "{} is stale", path.display());
    }
}

#[test]
#[ignore = "writes the seed corpora into the source tree"]
fn write_seed_corpora() {
    for (target, name, bytes) in seeds().expect("seeds") {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("creating a corpus directory");
        std::fs::write(dir.join(name), bytes).expect("writing a seed");
    }
}
