//! The WAL's exact rule for damage, through `Db::open` on crash images (directories copied while
//! the database is open): damage before a record that claims it synced fails the open with
//! `Error::Corruption` naming the file and offset; any other damage is a torn tail, cut.

use std::path::{Path, PathBuf};

use lsm::{Db, Error, Options, WriteBatch, WriteOptions};

/// Nothing is flushed: every write stays in the WAL.
fn wal_only() -> Options {
    Options {
        write_buffer_size: 4 << 20,
        ..Options::default()
    }
}

fn key(i: u64) -> Vec<u8> {
    format!("key{i:06}").into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    vec![(i % 251) as u8; 60 + (i % 5) as usize * 30]
}

fn put(db: &Db, i: u64, sync: bool) {
    let mut b = WriteBatch::new();
    b.put(key(i), value(i));
    db.write_with(b, &WriteOptions { sync }).unwrap();
}

fn copy_dir(src: &Path, dst: &Path) {
    std::fs::create_dir_all(dst).unwrap();
    for e in std::fs::read_dir(src).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_file() {
            std::fs::copy(e.path(), dst.join(e.file_name())).unwrap();
        }
    }
}

/// Writes keys `0..synced` synced one by one, then `synced..total` unsynced, and returns a crash
/// image of the directory and its WAL segment.
fn image(root: &Path, synced: u64, total: u64) -> (PathBuf, PathBuf) {
    let live = root.join("live");
    let db = Db::open(&live, wal_only()).unwrap();
    for i in 0..total {
        put(&db, i, i < synced);
    }
    let image = root.join("image");
    copy_dir(&live, &image);
    drop(db);
    let wal = std::fs::read_dir(&image)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "wal"))
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    (image, wal)
}

/// Start offsets of the WAL's records (the first is the format header).
fn records(path: &Path) -> Vec<usize> {
    let b = std::fs::read(path).unwrap();
    let mut out = Vec::new();
    let mut at = 0;
    while at + 8 <= b.len() {
        out.push(at);
        at += 8 + u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
    }
    out
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

/// The keys the store holds, which must be `0..m` with their values; returns `m`.
fn prefix(db: &Db) -> u64 {
    let mut m = 0;
    for item in db.iter() {
        let (k, v) = item.unwrap();
        assert_eq!((&k[..], &v[..]), (&key(m)[..], &value(m)[..]));
        m += 1;
    }
    m
}

fn assert_refused(dir: &Path, wal: &Path, offset: usize) {
    match Db::open(dir, wal_only()) {
        Err(Error::Corruption { path, detail }) => {
            assert_eq!(path.file_name(), wal.file_name());
            assert!(
                detail.contains(&format!("byte offset {offset}")),
                "{detail}"
            );
        }
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("damage before synced records was not refused"),
    }
}

#[test]
fn a_flipped_length_before_synced_records_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (dir, wal) = image(root.path(), 40, 40);
    let recs = records(&wal);
    // Record 10 holds key 9; synced records follow it.
    edit(&wal, |b| b[recs[10]] ^= 0x08);
    assert_refused(&dir, &wal, recs[10]);
    // Refused, not repaired: it stays refused.
    assert_refused(&dir, &wal, recs[10]);
}

#[test]
fn damage_followed_only_by_unsynced_records_is_cut() {
    let root = tempfile::tempdir().unwrap();
    let (dir, wal) = image(root.path(), 10, 30);
    let recs = records(&wal);
    // Record 15 holds key 14, written after the last sync (key 9) like all after it.
    edit(&wal, |b| b[recs[15] + 20] ^= 0x01);
    let db = Db::open(&dir, wal_only()).unwrap();
    assert_eq!(prefix(&db), 14);
    assert!(db.recovery_report().wal_bytes_dropped > 0);
    // The cut is kept: writes go on, and reopening finds them after the recovered ones.
    put(&db, 14, true);
    db.close().unwrap();
    let db = Db::open(&dir, wal_only()).unwrap();
    assert_eq!(prefix(&db), 15);
}

#[test]
fn a_power_cut_hole_in_unsynced_records_is_a_torn_tail() {
    let root = tempfile::tempdir().unwrap();
    let (dir, wal) = image(root.path(), 20, 200);
    let recs = records(&wal);
    // Lost: one 4 KiB page in the middle of the unsynced writes, and everything after key 179.
    // Unsynced records after the hole survived.
    let page = 4096;
    let hole = (recs[60] / page + 1) * page;
    assert!(hole + page < recs[180]);
    edit(&wal, |b| {
        b[hole..hole + page].fill(0);
        b.truncate(recs[181]);
    });
    let db = Db::open(&dir, wal_only()).unwrap();
    let first_lost = recs.partition_point(|&o| o <= hole) as u64 - 1;
    // Every synced write, and the unsynced ones before the hole (record r holds key r - 1).
    assert_eq!(prefix(&db), first_lost - 1);
    assert!(prefix(&db) >= 20);
}

#[test]
fn a_hole_in_synced_records_is_refused() {
    let root = tempfile::tempdir().unwrap();
    let (dir, wal) = image(root.path(), 200, 200);
    let recs = records(&wal);
    let page = 4096;
    let hole = (recs[60] / page + 1) * page;
    edit(&wal, |b| b[hole..hole + page].fill(0));
    let first_lost = recs.partition_point(|&o| o <= hole) - 1;
    assert_refused(&dir, &wal, recs[first_lost]);
}
