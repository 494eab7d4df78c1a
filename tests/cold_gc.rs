//! Obsolete cold objects stay in the store for the grace period (replicas sharing the bucket,
//! snapshot installs and backups may still read them), then go; orphans found at open wait too.

use std::sync::Arc;
use std::time::{Duration, Instant};

use lsm::object::{LocalDirStore, ObjectStore};
use lsm::{Clock, ColdTier, Db, ManualClock, Options, WriteBatch};

const GRACE: Duration = Duration::from_secs(600);

fn open(dir: &std::path::Path, store: &Arc<LocalDirStore>, clock: &Arc<ManualClock>) -> Db {
    let opts = Options {
        write_buffer_size: 32 << 10,
        target_file_size: 32 << 10,
        clock: clock.clone(),
        cold_tier: Some(ColdTier {
            gc_grace: GRACE,
            ..ColdTier::new(store.clone(), "gc")
        }),
        ..Options::default()
    };
    Db::open(dir, opts).expect("open")
}

fn write_gen(db: &Db, gen: u32) {
    for chunk in (0..3_000u32).collect::<Vec<_>>().chunks(100) {
        let mut b = WriteBatch::new();
        for &i in chunk {
            b.put(format!("k{i:06}"), format!("v{gen}-{i}-{}", "x".repeat(40)));
        }
        db.write(b).expect("write");
    }
    db.compact_range::<&[u8], _>(..).expect("compact");
}

fn objects(store: &LocalDirStore) -> usize {
    store.list("gc/sst/").expect("list").len()
}

fn cold_tables(db: &Db) -> usize {
    db.stats().levels.iter().skip(1).map(|l| l.files).sum()
}

/// Waits for the compaction thread's next collection pass (it looks once a second).
fn wait_until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn obsolete_objects_outlive_the_grace_period_only() {
    let dir = tempfile::tempdir().unwrap();
    let objdir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::open(objdir.path()).unwrap());
    let clock = Arc::new(ManualClock::new(1_000_000));
    let db = open(dir.path(), &store, &clock);
    write_gen(&db, 1);
    let first = cold_tables(&db);
    assert!(first > 1);
    let pending1 = db.stats().cold_objects_pending_deletion as usize;
    assert_eq!(objects(&store), first + pending1);

    // Rewriting every key makes every first-generation table obsolete, but its object stays.
    write_gen(&db, 2);
    let pending = db.stats().cold_objects_pending_deletion as usize;
    assert!(
        pending >= pending1 + first,
        "{pending} pending, {first} replaced"
    );
    assert_eq!(objects(&store), cold_tables(&db) + pending);
    std::thread::sleep(Duration::from_millis(1_500)); // a collection pass or two
    assert_eq!(objects(&store), cold_tables(&db) + pending, "deleted early");

    clock.advance(GRACE.as_millis() as u64 - 1);
    std::thread::sleep(Duration::from_millis(1_500));
    assert_eq!(
        db.stats().cold_objects_deleted,
        0,
        "deleted before the deadline"
    );

    clock.advance(1);
    wait_until("obsolete objects deleted", || {
        objects(&store) == cold_tables(&db)
    });
    assert_eq!(db.stats().cold_objects_deleted as usize, pending);
    assert_eq!(db.stats().cold_objects_pending_deletion, 0);
    assert_eq!(db.get("k000042").unwrap().unwrap()[..3], b"v2-"[..]);
    db.close().unwrap();
}

#[test]
fn orphans_found_at_open_wait_for_the_grace_period() {
    let dir = tempfile::tempdir().unwrap();
    let objdir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::open(objdir.path()).unwrap());
    let clock = Arc::new(ManualClock::new(1_000_000));
    let db = open(dir.path(), &store, &clock);
    write_gen(&db, 1);
    write_gen(&db, 2);
    let pending = db.stats().cold_objects_pending_deletion;
    assert!(pending > 0);
    // Closing loses the in-memory queue; the objects are orphans for the next open.
    db.close().unwrap();
    // An upload whose manifest edit never happened.
    store
        .put("gc/sst/999999.sst", bytes::Bytes::from_static(b"partial"))
        .unwrap();

    let db = open(dir.path(), &store, &clock);
    let report = db.recovery_report();
    assert_eq!(report.orphan_objects_found, pending + 1);
    assert_eq!(objects(&store), cold_tables(&db) + pending as usize + 1);
    for i in (0..3_000).step_by(111) {
        let v = db.get(format!("k{i:06}")).unwrap().unwrap();
        assert_eq!(&v[..3], b"v2-");
    }
    clock.advance(GRACE.as_millis() as u64);
    wait_until("orphans deleted", || objects(&store) == cold_tables(&db));
    assert!(clock.now_millis() > 0);
    db.close().unwrap();
}
