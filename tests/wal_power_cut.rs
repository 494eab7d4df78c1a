//! Randomized power cuts of the WAL, through `Db::open` (issue 13).
//!
//! Each case writes keys `key(0)`, `key(1)`, ... one batch each, some with `sync: true`, some
//! without, with an occasional `flush` (which seals the memtable into a new WAL segment and
//! writes a table). The test itself is the file layer that records what was synced: after the
//! open, every synced write and every flush, it snapshots the WAL segments as they then were,
//! which is what a power cut cannot take back. The cut is applied to a copy of the directory:
//! bytes the last sync of a segment covered stay; every 4 KiB page written after it is, at
//! random, kept, reverted (to its synced bytes, zeros past the synced size), or lost together
//! with the rest of the file (the file ends at the page, but never below its synced size). Holes
//! (a reverted page before kept ones) come out of this naturally. Some cases cut during a seal
//! instead, after the old segment was synced and before the new one's creation was durable (the
//! new file empty or holding part of its header).
//!
//! Other files (tables, manifest, CURRENT) are copied as they are: the workload leaves no
//! background work running when the image is taken (no automatic seal, no compaction), and the
//! rule under test is the WAL's.
//!
//! The reopened store must open (a power cut never makes a healthy store look corrupt), hold
//! every synced write, and hold a prefix of what was written: keys `0..m`, none missing in the
//! middle, each with its value.
//!
//! Cases: `PROPTEST_CASES` (default 48). A failing case prints its seed; `POWER_CUT_SEED=<seed>`
//! runs that case alone.
//!
//! An `EIO` from the WAL's `fdatasync` is `lsm/tests/wal_sync_failure.rs`'s. The cut itself is
//! `testkit::power_cut`, shared with the Raft log's suite.

use std::collections::BTreeMap;
use std::path::Path;

use lsm::{Db, Options, WriteBatch, WriteOptions};
use testkit::power_cut::{power_cut, run_cases, Rng};

/// Nothing is sealed or compacted behind the test's back: the memtable holds every write until
/// the test flushes, and no number of L0 tables starts a compaction.
fn opts() -> Options {
    Options {
        write_buffer_size: 16 << 20,
        l0_compaction_trigger: 1000,
        l0_slowdown_trigger: 1000,
        l0_stop_trigger: 1000,
        ..Options::default()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

/// The value of key `i` in the case of `seed`: its length (1 B to 2 KiB, so writes span pages)
/// and bytes depend on both, so a value of another case or key never matches.
fn value(seed: u64, i: u64) -> Vec<u8> {
    let mut r = Rng(seed ^ i.wrapping_mul(0xA24B_AED4_963E_E407));
    let len = 1 + r.below(2048) as usize;
    (0..len).map(|_| r.next_u64() as u8).collect()
}

fn put(db: &Db, seed: u64, i: u64, sync: bool) {
    let mut b = WriteBatch::new();
    b.put(key(i), value(seed, i));
    db.write_with(b, &WriteOptions { sync }).unwrap();
}

fn is_wal(name: &str) -> bool {
    name.ends_with(".wal")
}

/// The WAL segments of `dir` and their bytes, by name. A segment a flush just retired may vanish
/// while it is listed; it is left out.
fn wal_segments(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    let mut out = BTreeMap::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if is_wal(&name) {
            if let Ok(bytes) = std::fs::read(e.path()) {
                out.insert(name, bytes);
            }
        }
    }
    out
}

/// One case: workload, power cut, reopen, checks.
fn run_case(seed: u64) {
    let mut rng = Rng(seed);
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    let db = Db::open(&live, opts()).unwrap();

    // The durable image of each WAL segment: its bytes when its last sync completed. The open
    // created the current segment with its header, synced.
    let mut durable = wal_segments(&live);
    // Keys below this were synced (acknowledged, or flushed into a table).
    let mut synced_next = 0u64;
    let mut next = 0u64;
    // Then, in most cases, a burst of writes no sync covered, so that the cut finds many
    // unsynced pages to tear.
    let synced_steps = 5 + rng.below(60);
    let burst = if rng.chance(70) { 3 + rng.below(30) } else { 0 };
    for step in 0..synced_steps + burst {
        let may_sync = step < synced_steps;
        if may_sync && rng.chance(5) {
            db.flush().unwrap();
            synced_next = next;
            durable = wal_segments(&live);
            continue;
        }
        let sync = may_sync && rng.chance(20);
        put(&db, seed, next, sync);
        next += 1;
        if sync {
            synced_next = next;
            // A sync covers the whole tail segment (earlier ones were synced when sealed).
            durable = wal_segments(&live);
        }
    }

    // The crash image, taken while the store is still open (closing would sync the WAL).
    let image = root.path().join("image");
    std::fs::create_dir_all(&image).unwrap();
    let during_seal = rng.chance(20);
    // How likely each changed page survives, varied per case: from mostly lost to mostly kept.
    let keep_percent = [10, 40, 70, 95][rng.below(4) as usize];
    for e in std::fs::read_dir(&live).unwrap() {
        let e = e.unwrap();
        let name = e.file_name().to_string_lossy().into_owned();
        if !e.file_type().unwrap().is_file() || name == "LOCK" {
            continue;
        }
        let Ok(now) = std::fs::read(e.path()) else {
            continue; // a retired segment, deleted while listed
        };
        let bytes = if !is_wal(&name) || during_seal {
            // Not under test, or synced by the seal.
            now
        } else {
            let synced = durable
                .get(&name)
                .unwrap_or_else(|| panic!("{name} appeared without a snapshot"));
            power_cut(synced, &now, &mut rng, keep_percent)
        };
        std::fs::write(image.join(&name), bytes).unwrap();
    }
    if during_seal {
        synced_next = next;
        // The next segment's creation was interrupted: the file exists, empty or with part of
        // its header (a segment's first record, 20 bytes). Its number is above every file's.
        let (last, tail) = wal_segments(&live).into_iter().next_back().unwrap();
        let number: u64 = last.trim_end_matches(".wal").parse().unwrap();
        let partial = &tail[..rng.below(20) as usize];
        std::fs::write(image.join(format!("{:06}.wal", number + 100)), partial).unwrap();
    }
    drop(db);

    let db =
        Db::open(&image, opts()).unwrap_or_else(|e| panic!("a power cut's image was refused: {e}"));
    let m = check_prefix(&db, seed, next);
    assert!(
        m >= synced_next,
        "synced writes lost: the store holds keys below {m}, keys below {synced_next} were \
         synced ({:?})",
        db.recovery_report()
    );
    // The repair holds: writes go on from where recovery left them, and a reopen keeps both.
    put(&db, seed, m, true);
    db.close().unwrap();
    let db = Db::open(&image, opts()).unwrap();
    assert_eq!(check_prefix(&db, seed, next.max(m + 1)), m + 1);
}

/// Checks that the store holds keys `0..m` (for some `m <= written`) with their values, and
/// nothing else; returns `m`.
fn check_prefix(db: &Db, seed: u64, written: u64) -> u64 {
    let mut m = 0;
    for item in db.iter() {
        let (k, v) = item.unwrap();
        assert_eq!(&k[..], &key(m)[..], "keys missing before {m}");
        assert!(v[..] == value(seed, m)[..], "key {m} has the wrong value");
        m += 1;
    }
    assert!(m <= written, "{m} keys, only {written} were written");
    m
}

#[test]
fn power_cuts_keep_synced_writes_and_never_refuse() {
    run_cases(run_case);
}
