//! The cold tier under object-store faults: uploads that fail or lose their response, reads
//! while the store is down. Writes go on, nothing acknowledged is lost, nothing wrong is ever
//! returned, and everything recovers once the faults clear.

mod common;

use std::sync::Arc;

use lsm::object::{FaultConfig, FaultyStore, LocalDirStore, ObjectOp, ObjectStore, RetryPolicy};
use lsm::{ColdTier, Db, Error, Options};

fn value(i: u32, gen: u32) -> Vec<u8> {
    format!("v{gen}-{i}-{}", "x".repeat((i % 40) as usize)).into_bytes()
}

fn key(i: u32) -> String {
    format!("k{i:06}")
}

fn open(dir: &std::path::Path, store: &Arc<FaultyStore<LocalDirStore>>) -> Db {
    let opts = Options {
        write_buffer_size: 16 << 10,
        target_file_size: 16 << 10,
        max_bytes_for_level_base: 64 << 10,
        l0_compaction_trigger: 2,
        block_size: 1024,
        cold_tier: Some(ColdTier {
            // Three quick attempts: outages here are total, and the point is the outcome.
            retry: RetryPolicy {
                max_attempts: 3,
                base_delay: std::time::Duration::from_millis(1),
                max_delay: std::time::Duration::from_millis(2),
                max_in_flight: 8,
            },
            // Orphans and obsolete tables go at once, so the test can count what is left.
            gc_grace: Some(std::time::Duration::ZERO),
            ..ColdTier::new(store.clone(), "db")
        }),
        ..Options::default()
    };
    Db::open(dir, opts).expect("open")
}

fn write_gen(db: &Db, n: u32, gen: u32) {
    common::write_in_batches(db, 0..n, 50, |b, i| b.put(key(i), value(i, gen)))
        .expect("writes continue whatever the object store does");
}

fn check_all(db: &Db, n: u32, gen: u32) {
    for i in 0..n {
        assert_eq!(
            db.get(key(i)).expect("get").as_deref(),
            Some(&value(i, gen)[..]),
            "key {i}"
        );
    }
    assert_eq!(db.iter().count(), n as usize);
}

fn objects(store: &FaultyStore<LocalDirStore>) -> usize {
    store.inner().list("db/sst/").expect("list").len()
}

#[test]
fn failed_and_ambiguous_uploads_lose_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let objdir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FaultyStore::new(
        LocalDirStore::open(objdir.path()).expect("store"),
        11,
    ));
    let db = open(dir.path(), &store);
    write_gen(&db, 3_000, 1);
    db.compact_range::<&[u8], _>(..).expect("compact");
    assert!(
        objects(&store) > 0,
        "compaction should have uploaded tables"
    );
    check_all(&db, 3_000, 1);

    // Uploads fail: compaction pauses, writes go on into L0, reads stay right.
    store.set(
        ObjectOp::Put,
        FaultConfig {
            error_rate: 1.0,
            ..Default::default()
        },
    );
    write_gen(&db, 3_000, 2);
    db.flush().expect("flush is local");
    match db.compact_range::<&[u8], _>(..) {
        Err(Error::Unavailable(_)) => {}
        other => panic!("expected Unavailable from compaction, got {other:?}"),
    }
    check_all(&db, 3_000, 2);

    // Uploads take effect but the caller never hears back: the tables are orphans.
    store.set(
        ObjectOp::Put,
        FaultConfig {
            lost_response_rate: 1.0,
            ..Default::default()
        },
    );
    assert!(db.compact_range::<&[u8], _>(..).is_err());
    check_all(&db, 3_000, 2);

    // Faults clear: compaction catches up; after a reopen the orphans are swept.
    store.clear();
    db.compact_range::<&[u8], _>(..)
        .expect("compact after recovery");
    check_all(&db, 3_000, 2);
    db.close().expect("close");
    let db = open(dir.path(), &store);
    check_all(&db, 3_000, 2);
    let live: usize = db.stats().levels.iter().skip(1).map(|l| l.files).sum();
    assert_eq!(objects(&store), live, "orphan objects left after reopen");
    assert!(db.recovery_report().orphan_files_deleted > 0);
}

#[test]
fn reads_during_an_outage_fail_cleanly_and_recover() {
    let dir = tempfile::tempdir().expect("tempdir");
    let objdir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FaultyStore::new(
        LocalDirStore::open(objdir.path()).expect("store"),
        5,
    ));
    let db = open(dir.path(), &store);
    write_gen(&db, 2_000, 1);
    db.compact_range::<&[u8], _>(..).expect("compact");
    // Reopen with a cold block cache so reads must go to the store.
    db.close().expect("close");
    let db = open(dir.path(), &store);
    db.put("hot", "in the memtable").expect("put");

    store.set_all(FaultConfig {
        error_rate: 1.0,
        ..Default::default()
    });
    assert_eq!(
        db.get("hot").expect("local data is served").as_deref(),
        Some(&b"in the memtable"[..])
    );
    let mut unavailable = 0;
    for i in (0..2_000).step_by(37) {
        match db.get(key(i)) {
            Ok(Some(v)) => assert_eq!(&v[..], &value(i, 1)[..], "wrong data during outage"),
            Ok(None) => panic!("key {i} reported absent during an outage"),
            Err(Error::Unavailable(_)) => unavailable += 1,
            Err(e) => panic!("unexpected error {e}"),
        }
    }
    assert!(unavailable > 0, "no read reached the store");
    for item in db.iter() {
        match item {
            Ok((k, v)) => {
                if k.as_ref() != b"hot" {
                    let i: u32 = std::str::from_utf8(&k[1..])
                        .expect("key")
                        .parse()
                        .expect("key");
                    assert_eq!(&v[..], &value(i, 1)[..]);
                }
            }
            Err(e) => {
                assert!(matches!(e, Error::Unavailable(_)), "scan failed with {e}");
                break;
            }
        }
    }
    store.clear();
    check_all_with_hot(&db);
}

fn check_all_with_hot(db: &Db) {
    for i in 0..2_000 {
        assert_eq!(
            db.get(key(i)).expect("get").as_deref(),
            Some(&value(i, 1)[..])
        );
    }
    assert_eq!(db.iter().count(), 2_001);
}

/// Errors, timeouts, lost responses and latency on every kind of request at once, while
/// writes, compactions and reads run: every read is right or `Unavailable`, never wrong or
/// missing; once the faults clear, compaction catches up, every write is there, and after a
/// reopen no orphan object is left.
#[test]
fn mixed_faults_during_a_workload_never_return_wrong_data() {
    let dir = tempfile::tempdir().expect("tempdir");
    let objdir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FaultyStore::new(
        LocalDirStore::open(objdir.path()).expect("store"),
        23,
    ));
    let db = open(dir.path(), &store);
    write_gen(&db, 2_000, 1);
    db.compact_range::<&[u8], _>(..).expect("compact");
    store.set_all(FaultConfig {
        latency: std::time::Duration::from_micros(200),
        error_rate: 0.2,
        timeout_rate: 0.1,
        timeout: std::time::Duration::from_millis(3),
        lost_response_rate: 0.1,
        ..Default::default()
    });
    let (mut unavailable, mut served) = (0, 0);
    for gen in 2..6 {
        write_gen(&db, 2_000, gen);
        match db.compact_range::<&[u8], _>(..) {
            Ok(()) | Err(Error::Unavailable(_)) => {}
            Err(e) => panic!("compaction under faults failed with {e}"),
        }
        for i in (0..2_000).step_by(13) {
            match db.get(key(i)) {
                Ok(Some(v)) => {
                    assert_eq!(&v[..], &value(i, gen)[..], "wrong data under faults");
                    served += 1;
                }
                Ok(None) => panic!("key {i} reported absent under faults"),
                Err(Error::Unavailable(_)) => unavailable += 1,
                Err(e) => panic!("unexpected error {e}"),
            }
        }
    }
    eprintln!("under faults: {served} reads served, {unavailable} unavailable");
    assert!(served > 0);
    let s = db.stats();
    assert!(s.cold_failures > 0, "no fault was injected");

    store.clear();
    db.compact_range::<&[u8], _>(..)
        .expect("compact after the faults");
    check_all(&db, 2_000, 5);
    db.close().expect("close");
    let db = open(dir.path(), &store);
    check_all(&db, 2_000, 5);
    let live: usize = db.stats().levels.iter().skip(1).map(|l| l.files).sum();
    assert_eq!(objects(&store), live, "orphan objects left after reopen");
}
