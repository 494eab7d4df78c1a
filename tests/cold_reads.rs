//! Request counts of cold reads through the whole engine: opening a database whose tables are
//! in the object store costs no request (their metadata is kept locally), a point lookup of a
//! present key costs at most one GET, and a lookup of an absent key costs none except for the
//! filter's rare false positives.

mod common;

use std::sync::Arc;

use lsm::object::LocalDirStore;
use lsm::{ColdTier, Db, Options};

const N: u32 = 20_000;

fn key(i: u32) -> String {
    format!("user:{i:08}")
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-{}", "v".repeat((i % 64) as usize)).into_bytes()
}

fn open(dir: &std::path::Path, objects: &std::path::Path) -> Db {
    let store = LocalDirStore::open(objects).expect("store");
    let opts = Options {
        write_buffer_size: 256 << 10,
        target_file_size: 256 << 10,
        // A small block cache, so most lookups miss it and go to the store.
        block_cache_bytes: 64 << 10,
        cold_tier: Some(ColdTier::new(Arc::new(store), "reads")),
        ..Options::default()
    };
    Db::open(dir, opts).expect("open")
}

/// N keys, fully compacted into the cold tier, then the database reopened so that nothing is
/// cached. Returns the directories (kept alive) and the database.
fn cold_db() -> ((tempfile::TempDir, tempfile::TempDir), Db) {
    let dir = tempfile::tempdir().expect("tempdir");
    let objects = tempfile::tempdir().expect("tempdir");
    let db = open(dir.path(), objects.path());
    common::write_in_batches(&db, 0..N, 200, |b, i| b.put(key(i), value(i))).expect("write");
    db.compact_range::<&[u8], _>(..).expect("compact");
    let s = db.stats();
    assert_eq!(s.levels[0].files, 0);
    assert!(s.cold_puts > 0 && s.cold_bytes_uploaded > 0);
    db.close().expect("close");
    let db = open(dir.path(), objects.path());
    ((dir, objects), db)
}

#[test]
fn cold_lookups_cost_at_most_one_get_and_absent_keys_none() {
    let (_dirs, db) = cold_db();
    // Every table is cold, its metadata local: nothing was fetched to open.
    assert_eq!(db.stats().cold_gets, 0, "opening fetched something");

    let mut cold_hits = 0;
    for i in (0..N).step_by(101) {
        let before = db.stats().cold_gets;
        assert_eq!(db.get(key(i)).expect("get").as_deref(), Some(&value(i)[..]));
        let gets = db.stats().cold_gets - before;
        assert!(gets <= 1, "lookup of key {i} made {gets} GETs");
        cold_hits += gets;
    }
    assert!(
        cold_hits > 100,
        "lookups should have gone to the store: {cold_hits} GETs"
    );
    let s = db.stats();
    assert_eq!(s.cold_lookups, (0..N).step_by(101).count() as u64);
    assert!(s.cold_gets_per_lookup() <= 1.0 && s.cold_gets_per_lookup() > 0.5);

    let before = db.stats().cold_gets;
    let absent = 5_000;
    for i in 0..absent {
        assert_eq!(db.get(format!("user:{i:08}x")).expect("get"), None);
        assert_eq!(db.get(format!("missing:{i}")).expect("get"), None);
    }
    let gets = db.stats().cold_gets - before;
    // A 1% filter over 2 * 5000 lookups: expect about 100; 3% bounds the noise.
    assert!(gets <= 300, "{gets} GETs for {} absent keys", 2 * absent);
    eprintln!(
        "cold reads: {cold_hits} GETs for {} present-key lookups, {gets} for {} absent-key lookups",
        (0..N).step_by(101).count(),
        2 * absent
    );
}

#[test]
fn cold_scans_read_ahead_and_leave_the_block_cache_alone() {
    let (_dirs, db) = cold_db();
    let s = db.stats();
    let (tables, bytes): (usize, u64) =
        (s.levels.iter().map(|l| l.files).sum(), s.total_sst_bytes());
    let blocks_per_get = |gets: u64| bytes as f64 / gets.max(1) as f64;
    for reverse in [false, true] {
        let (gets0, cache0) = (db.stats().cold_gets, db.stats().block_cache_usage);
        let keys: Vec<_> = if reverse {
            db.iter().rev().map(|r| r.expect("scan").0).collect()
        } else {
            db.iter().map(|r| r.expect("scan").0).collect()
        };
        assert_eq!(keys.len(), N as usize);
        assert!(
            keys.windows(2).all(|w| (w[0] < w[1]) != reverse),
            "scan out of order"
        );
        let gets = db.stats().cold_gets - gets0;
        // One GET per 256 KiB of table (plus one partial run per table), not one per block.
        let bound = bytes / (256 << 10) + 2 * tables as u64 + 2;
        assert!(
            gets <= bound,
            "scan made {gets} GETs for {bytes} bytes in {tables} tables"
        );
        assert_eq!(
            db.stats().block_cache_usage,
            cache0,
            "a scan filled the block cache"
        );
        eprintln!(
            "cold scan (reverse: {reverse}): {gets} GETs, {:.0} bytes per GET, {tables} tables",
            blocks_per_get(gets)
        );
    }
}
