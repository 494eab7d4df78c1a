//! Obsolete cold objects stay in the store for the grace period (replicas sharing the bucket,
//! snapshot installs and backups may still read them), then go; orphans found at open wait too;
//! objects this database cannot have written are never touched or replaced; readers that still
//! hold a replaced table keep reading it.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use lsm::object::{LocalDirStore, ObjectStore};
use lsm::{ColdTier, Db, Options};

fn open(dir: &std::path::Path, store: &Arc<LocalDirStore>, grace: Option<Duration>) -> Db {
    let opts = Options {
        write_buffer_size: 32 << 10,
        target_file_size: 32 << 10,
        cold_tier: Some(ColdTier {
            gc_grace: grace,
            ..ColdTier::new(store.clone(), "gc")
        }),
        ..Options::default()
    };
    Db::open(dir, opts).expect("open")
}

fn write_gen(db: &Db, gen: u32) {
    common::write_in_batches(db, 0..3_000u32, 100, |b, i| {
        b.put(format!("k{i:06}"), format!("v{gen}-{i}-{}", "x".repeat(40)))
    })
    .expect("write");
    db.compact_range::<&[u8], _>(..).expect("compact");
}

fn objects(store: &LocalDirStore) -> Vec<String> {
    store
        .list("gc/sst/")
        .expect("list")
        .into_iter()
        .map(|o| o.key)
        .collect()
}

fn cold_tables(db: &Db) -> usize {
    db.stats().levels.iter().skip(1).map(|l| l.files).sum()
}

/// Runs a collection pass now: a compaction of an empty range compacts nothing and collects.
fn collect(db: &Db) {
    db.compact_range("~".."~").expect("collect");
}

#[test]
fn obsolete_objects_outlive_the_grace_period_only() {
    let grace = Duration::from_secs(4);
    let dir = tempfile::tempdir().unwrap();
    let objdir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::open(objdir.path()).unwrap());
    let db = open(dir.path(), &store, Some(grace));
    write_gen(&db, 1);
    let first = cold_tables(&db);
    assert!(first > 1);
    let pending1 = db.stats().cold_objects_pending_deletion as usize;
    assert_eq!(objects(&store).len(), first + pending1);

    // Rewriting every key makes every first-generation table obsolete, but its object stays.
    write_gen(&db, 2);
    let replaced_at = Instant::now();
    let pending = db.stats().cold_objects_pending_deletion as usize;
    assert!(
        pending >= pending1 + first,
        "{pending} pending, {first} replaced"
    );
    collect(&db);
    if replaced_at.elapsed() < grace {
        assert_eq!(
            objects(&store).len(),
            cold_tables(&db) + pending,
            "deleted early"
        );
        assert_eq!(db.stats().cold_objects_deleted, 0);
    }

    std::thread::sleep(grace.saturating_sub(replaced_at.elapsed()));
    collect(&db);
    assert_eq!(objects(&store).len(), cold_tables(&db));
    let s = db.stats();
    assert_eq!(s.cold_objects_deleted as usize, pending);
    assert_eq!(s.cold_objects_pending_deletion, 0);
    assert_eq!(db.get("k000042").unwrap().unwrap()[..3], b"v2-"[..]);
    db.close().unwrap();
}

#[test]
fn orphans_found_at_open_wait_and_foreign_objects_are_left_alone() {
    let grace = Duration::from_secs(3);
    let dir = tempfile::tempdir().unwrap();
    let objdir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::open(objdir.path()).unwrap());
    let db = open(dir.path(), &store, Some(grace));
    write_gen(&db, 1);
    write_gen(&db, 2);
    let pending = db.stats().cold_objects_pending_deletion;
    assert!(pending > 0);
    // Closing loses the in-memory queue; the objects are orphans for the next open.
    db.close().unwrap();
    let number = |k: &str| -> u64 { k[7..13].parse().unwrap() };
    let highest = objects(&store).iter().map(|k| number(k)).max().unwrap();
    // An upload whose manifest edit never happened (a number this database had reserved)...
    let partial = format!("gc/sst/{:06}.sst", highest + 1);
    store.put(&partial, Bytes::from_static(b"partial")).unwrap();
    // ...and an object far above anything it reserved: another database on the same prefix.
    let foreign = "gc/sst/900000.sst";
    store.put(foreign, Bytes::from_static(b"foreign")).unwrap();

    let opened = Instant::now();
    let db = open(dir.path(), &store, Some(grace));
    assert_eq!(db.recovery_report().orphan_objects_found, pending + 1);
    if opened.elapsed() < grace {
        assert_eq!(
            objects(&store).len(),
            cold_tables(&db) + pending as usize + 2
        );
    }
    for i in (0..3_000).step_by(111) {
        assert_eq!(&db.get(format!("k{i:06}")).unwrap().unwrap()[..3], b"v2-");
    }
    // New tables are numbered above every listed object, so no upload replaces one.
    write_gen(&db, 3);
    std::thread::sleep(grace);
    collect(&db);
    let left = objects(&store);
    assert_eq!(left.len(), cold_tables(&db) + 1, "{left:?}");
    assert!(!left.contains(&partial));
    assert_eq!(&store.get(foreign).unwrap()[..], b"foreign");
    assert!(left
        .iter()
        .filter(|k| k.as_str() != foreign)
        .all(|k| number(k) > 900_000));
    db.close().unwrap();
}

/// With no grace at all, a table replaced under an open iterator stays readable through it:
/// deletion waits for the last version that names it.
#[test]
fn an_open_iterator_keeps_replaced_tables_readable() {
    let dir = tempfile::tempdir().unwrap();
    let objdir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::open(objdir.path()).unwrap());
    let db = open(dir.path(), &store, Some(Duration::ZERO));
    write_gen(&db, 1);
    let snap = db.snapshot();
    let mut it = snap.iter();
    let first = it.next().unwrap().unwrap();
    assert_eq!(&first.1[..3], b"v1-");
    write_gen(&db, 2);
    collect(&db);
    let rest: Vec<_> = it
        .map(|r| r.expect("read through a replaced table"))
        .collect();
    assert_eq!(rest.len(), 2_999);
    assert!(rest.iter().all(|(_, v)| &v[..3] == b"v1-"));
    assert_eq!(&snap.get("k002999").unwrap().unwrap()[..3], b"v1-");
    drop(snap);
    collect(&db);
    assert_eq!(objects(&store).len(), cold_tables(&db));
    db.close().unwrap();
}

/// A replica that reads objects another node owns (`gc_grace: None`) never deletes one.
#[test]
fn no_grace_means_no_deletion() {
    let dir = tempfile::tempdir().unwrap();
    let objdir = tempfile::tempdir().unwrap();
    let store = Arc::new(LocalDirStore::open(objdir.path()).unwrap());
    let db = open(dir.path(), &store, None);
    write_gen(&db, 1);
    let before = objects(&store).len();
    write_gen(&db, 2);
    collect(&db);
    assert!(objects(&store).len() > before);
    assert_eq!(db.stats().cold_objects_pending_deletion, 0);
    assert_eq!(db.stats().cold_objects_deleted, 0);
    db.close().unwrap();
}
