//! Helpers shared by the engine's integration suites (`tests/*.rs`).
//!
//! Each suite is its own crate and uses a different subset of these, hence the `dead_code` allow.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use lsm::{Clock, Db, Iter, ManualClock, Options, WriteBatch};

/// Reads an integer knob from the environment (for longer local soak runs), or `default`.
pub fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(s) => s
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not an integer")),
        Err(_) => default,
    }
}

/// Seconds-valued knob as a `Duration`.
pub fn env_secs(name: &str, default: u64) -> Duration {
    Duration::from_secs(env_u64(name, default))
}

/// A seed for the suite's RNG: `STRATA_SEED` when set (to replay a failure), else random. It is
/// printed so that a failing CI run can be replayed.
pub fn seed(suite: &str) -> u64 {
    let s = env_u64("STRATA_SEED", rand::random());
    eprintln!("{suite}: STRATA_SEED={s}");
    s
}

/// Options that make every code path run on a few kilobytes of data: the memtable seals every
/// few KiB, SSTs are cut at a few KiB, L1 overflows into L2 quickly, and blocks hold few entries.
pub fn tiny_options(clock: Option<Arc<ManualClock>>) -> Options {
    let mut o = Options {
        write_buffer_size: 8 << 10,
        target_file_size: 8 << 10,
        max_bytes_for_level_base: 32 << 10,
        l0_compaction_trigger: 2,
        block_size: 512,
        block_cache_bytes: 256 << 10,
        ..Options::default()
    };
    if let Some(c) = clock {
        o.clock = c as Arc<dyn Clock>;
    }
    o
}

/// Drains an iterator, stopping at the first error.
pub fn collect(it: Iter) -> lsm::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    it.map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect()
}

/// Drains an iterator forward, or backward with `next_back` (then returned in key order again so
/// that callers can check ordering the same way).
pub fn collect_dir(it: Iter, reverse: bool) -> lsm::Result<Vec<(Vec<u8>, Vec<u8>)>> {
    if !reverse {
        return collect(it);
    }
    let mut v: Vec<_> = it
        .rev()
        .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
        .collect::<lsm::Result<_>>()?;
    v.reverse();
    Ok(v)
}

/// Files of `dir` whose name satisfies `keep`, sorted by name (so by file number).
fn files_named(dir: &Path, keep: impl Fn(&str) -> bool) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(&keep))
        .collect();
    v.sort();
    v
}

/// Files of `dir` whose name ends with `suffix`, sorted by name (so by file number).
pub fn files_ending(dir: &Path, suffix: &str) -> Vec<PathBuf> {
    files_named(dir, |n| n.ends_with(suffix))
}

/// Files of `dir` whose name starts with `prefix`, sorted by name.
pub fn files_starting(dir: &Path, prefix: &str) -> Vec<PathBuf> {
    files_named(dir, |n| n.starts_with(prefix))
}

/// Copies every regular file of `src` into a fresh directory `dst`. Taken while a database is
/// open and idle, this is exactly what a crash at that moment would leave on disk (everything a
/// `sync` write acknowledged is already in the files).
pub fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

/// A fresh copy of the database image `image` under `root`, for one damage trial.
pub fn trial(image: &Path, root: &Path) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = root.join(format!("trial{}", N.fetch_add(1, Ordering::Relaxed)));
    copy_dir(image, &d);
    d
}

/// Cuts `path` to `len` bytes.
pub fn truncate(path: &Path, len: u64) {
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len).unwrap();
}

/// XORs the byte at `at` of `path` with `mask`.
pub fn flip(path: &Path, at: usize, mask: u8) {
    let mut data = std::fs::read(path).unwrap();
    data[at] ^= mask;
    std::fs::write(path, data).unwrap();
}

/// Splits a log file (WAL or MANIFEST: records framed as `[u32 LE len][u32 crc][payload]`) into
/// record end offsets. `None` when the framing does not tile the file exactly, in which case the
/// caller falls back to weaker checks instead of guessing.
pub fn record_ends(data: &[u8]) -> Option<Vec<usize>> {
    let mut ends = Vec::new();
    let mut at = 0usize;
    while at < data.len() {
        let len = u32::from_le_bytes(data.get(at..at + 4)?.try_into().unwrap()) as usize;
        let end = at.checked_add(8)?.checked_add(len)?;
        if end > data.len() {
            return None;
        }
        ends.push(end);
        at = end;
    }
    Some(ends)
}

/// Key `i` of the sequential workloads (crash and corruption suites); sorts in `i` order.
pub fn seq_key(i: u64) -> Vec<u8> {
    format!("key{i:010}").into_bytes()
}

/// The value written for key `i`: its length varies with `i` (up to ~1.2 KiB, so memtables fill
/// and blocks split), and its content is unique to `i` so a value under the wrong key is caught.
pub fn seq_value(i: u64) -> Vec<u8> {
    let len = 16 + (i.wrapping_mul(2654435761) % 1200) as usize;
    let mut v = format!("value-{i}-").into_bytes();
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    while v.len() < len {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        v.push(b'a' + (x % 26) as u8);
    }
    v
}

/// Parses a key produced by [`seq_key`].
pub fn parse_seq_key(k: &[u8]) -> Option<u64> {
    std::str::from_utf8(k.strip_prefix(b"key")?)
        .ok()?
        .parse()
        .ok()
}

/// Writes `items` in batches of `per_batch`, `op` adding each item to its batch.
pub fn write_in_batches<T>(
    db: &Db,
    items: impl IntoIterator<Item = T>,
    per_batch: usize,
    mut op: impl FnMut(&mut WriteBatch, T),
) -> lsm::Result<()> {
    let (mut batch, mut n) = (WriteBatch::new(), 0);
    for item in items {
        op(&mut batch, item);
        n += 1;
        if n == per_batch {
            db.write(std::mem::replace(&mut batch, WriteBatch::new()))?;
            n = 0;
        }
    }
    if n > 0 {
        db.write(batch)?;
    }
    Ok(())
}
