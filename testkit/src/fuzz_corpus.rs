//! Replays the fuzz targets' corpora on stable: every file of `fuzz/corpus/<target>/` and
//! `fuzz/regressions/<target>/` (at the repository root) goes through the entry point the target
//! calls, so a decoder that panics again fails `cargo test` without nightly or cargo-fuzz.
//! `valid-*` files must be accepted, `reject-*` files refused, and nothing may panic. The seeds
//! each crate generates (`valid-*`, `reject-*`, `edge-*`) are checked against its encoders, and
//! rewritten by the crate's ignored `write_seed_corpora` test after a deliberate format change.

use std::path::{Path, PathBuf};

/// What an entry point says of an input: accepted, or refused with a reason.
pub type Outcome = Result<(), String>;

/// The repository's `fuzz/` directory.
pub fn fuzz_dir() -> PathBuf {
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

/// Runs `f` on every file of `target`'s corpus and regressions, checking the file-name rules;
/// panics (naming the file) on a violation or when the target has no corpus at all.
pub fn replay(target: &str, f: fn(&[u8]) -> Outcome) {
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
    assert!(n > 0, "no corpus for {target}: run the ignored seed writer");
}

/// Asserts the committed seeds are what the encoders produce today: a format change that
/// forgot to bump a version, or to regenerate the seeds, shows up here.
pub fn check_seeds<N: AsRef<str>>(seeds: impl IntoIterator<Item = (&'static str, N, Vec<u8>)>) {
    for (target, name, bytes) in seeds {
        let path = fuzz_dir().join("corpus").join(target).join(name.as_ref());
        let committed = std::fs::read(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run the ignored seed writer)", path.display()));
        assert!(committed == bytes, "{} is stale", path.display());
    }
}

/// Writes the seeds into the source tree.
pub fn write_seeds<N: AsRef<str>>(seeds: impl IntoIterator<Item = (&'static str, N, Vec<u8>)>) {
    for (target, name, bytes) in seeds {
        let dir = fuzz_dir().join("corpus").join(target);
        std::fs::create_dir_all(&dir).expect("creating a corpus directory");
        std::fs::write(dir.join(name.as_ref()), bytes).expect("writing a seed");
    }
}
