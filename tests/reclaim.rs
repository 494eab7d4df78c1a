//! Space reclamation: compaction really drops overwritten versions, tombstones and expired
//! values once no snapshot can see them, and keeps them while one can. (The model tests prove
//! nothing is dropped wrongly; these prove the space actually comes back.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use lsm::{Db, ManualClock, Options};

fn opts(clock: Arc<ManualClock>) -> Options {
    Options {
        write_buffer_size: 64 << 10,
        target_file_size: 64 << 10,
        max_bytes_for_level_base: 256 << 10,
        clock,
        ..Options::default()
    }
}

/// 200 incompressible bytes determined by key index and generation, so sizes on disk track
/// the number of live entries.
fn value(i: usize, tag: u8) -> Vec<u8> {
    let mut x = (i as u64 + 1).wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ u64::from(tag);
    (0..200)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

fn fill(db: &Db, n: usize, tag: u8) {
    common::write_in_batches(db, 0..n, 100, |b, i| {
        b.put(format!("key{i:06}"), value(i, tag))
    })
    .expect("write");
}

fn delete_all(db: &Db, n: usize) {
    common::write_in_batches(db, 0..n, 500, |b, i| b.delete(format!("key{i:06}"))).expect("delete");
}

fn entries(db: &Db) -> (u64, usize) {
    let s = db.stats();
    (s.total_sst_bytes(), s.levels.iter().map(|l| l.files).sum())
}

#[test]
fn deletes_and_overwrites_are_reclaimed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let db = Db::open(dir.path(), opts(clock)).expect("open");
    fill(&db, 5_000, 1);
    db.compact_range::<&[u8], _>(..).expect("compact");
    let (one_copy, _) = entries(&db);
    assert!(one_copy > 500_000, "data should be on disk: {one_copy}");

    // Three more generations of the same keys: after a full compaction only one remains.
    for tag in 2..5 {
        fill(&db, 5_000, tag);
        db.flush().expect("flush");
    }
    db.compact_range::<&[u8], _>(..).expect("compact");
    let (after_overwrites, _) = entries(&db);
    assert!(
        after_overwrites < one_copy + one_copy / 10,
        "overwritten versions kept: {after_overwrites} vs {one_copy}"
    );
    assert_eq!(
        db.get("key000042").expect("get").as_deref(),
        Some(&value(42, 4)[..])
    );

    // Delete everything: a full compaction leaves no table at all.
    delete_all(&db, 5_000);
    db.compact_range::<&[u8], _>(..).expect("compact");
    assert_eq!(entries(&db), (0, 0), "tombstones or deleted data left");
    assert_eq!(db.iter().count(), 0);
}

#[test]
fn a_snapshot_pins_what_it_sees_until_dropped() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let db = Db::open(dir.path(), opts(clock)).expect("open");
    fill(&db, 2_000, 1);
    let snap = db.snapshot();
    delete_all(&db, 2_000);
    db.compact_range::<&[u8], _>(..).expect("compact");
    // The snapshot still reads every value, so the data must still be on disk.
    assert_eq!(snap.iter().count(), 2_000);
    assert_eq!(
        snap.get("key001999").expect("get").as_deref(),
        Some(&value(1999, 1)[..])
    );
    assert!(entries(&db).0 > 200_000);
    assert_eq!(db.iter().count(), 0);
    drop(snap);
    db.compact_range::<&[u8], _>(..).expect("compact");
    assert_eq!(
        entries(&db),
        (0, 0),
        "nothing should survive once the snapshot is gone"
    );
}

#[test]
fn expired_values_are_reclaimed_and_never_resurrect_older_ones() {
    let dir = tempfile::tempdir().expect("tempdir");
    let clock = Arc::new(ManualClock::new(1_000_000));
    let db = Db::open(dir.path(), opts(clock.clone())).expect("open");
    fill(&db, 1_000, 1);
    db.compact_range::<&[u8], _>(..).expect("compact");
    // Newer TTL versions on top of the old values, in another file above them.
    for i in 0..1_000 {
        db.put_with_ttl(format!("key{i:06}"), value(i, 2), Duration::from_secs(60))
            .expect("put ttl");
    }
    db.flush().expect("flush");
    assert_eq!(
        db.get("key000007").expect("get").as_deref(),
        Some(&value(7, 2)[..])
    );
    clock.advance(61_000);
    // Expired: absent, and the older value underneath must not come back, before or after
    // compaction.
    assert_eq!(db.get("key000007").expect("get"), None);
    db.compact_range::<&[u8], _>(..).expect("compact");
    assert_eq!(db.get("key000007").expect("get"), None);
    assert_eq!(db.iter().count(), 0);
    assert_eq!(entries(&db), (0, 0), "expired values left on disk");
}
