//! The engine's replicated mode (`Options::replicated`): replicas applying the same entries end
//! with the same tables in a shared object store, duplicates change nothing, a restart resumes
//! from the flushed point, and a manifest image brings a new replica up without copying data.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lsm::object::{LocalDirStore, ObjectStore};
use lsm::{ColdTier, Db, ManifestImage, Options, TableEdit, WriteBatch};

fn replica_options(store: &Arc<dyn ObjectStore>) -> Options {
    let mut cold = ColdTier::new(store.clone(), "group-1");
    cold.gc_grace = Some(Duration::ZERO);
    Options {
        wal: false,
        replicated: true,
        cold_tier: Some(cold),
        ..common::tiny_options(None)
    }
}

fn open(dir: &Path, store: &Arc<dyn ObjectStore>) -> Db {
    Db::open(dir, replica_options(store)).expect("open replica")
}

/// The group's shared object store, under `root`.
fn bucket(root: &Path) -> Arc<dyn ObjectStore> {
    Arc::new(LocalDirStore::open(root.join("bucket")).unwrap())
}

/// A replica acting as the leader: it deletes garbage objects and numbers its tables as a
/// leader of term 1 would.
fn open_leader(dir: &Path, store: &Arc<dyn ObjectStore>) -> Db {
    let db = open(dir, store);
    db.set_object_gc(true);
    // No other replica reads these objects here: no progress floor, the grace period alone.
    db.set_gc_floor(u64::MAX);
    db.number_tables_within(1 << 32..2 << 32).unwrap();
    db
}

fn batch(i: u64) -> WriteBatch {
    let mut b = WriteBatch::new();
    b.put(
        format!("key{:05}", i % 700),
        format!("value-{i}-{}", "x".repeat(40)),
    );
    if i.is_multiple_of(5) {
        b.delete(format!("key{:05}", (i * 7) % 700));
    }
    b
}

/// What a Raft log would carry, applied to every replica in `dbs`; the first one leads.
#[derive(Clone)]
enum Entry {
    Write(u64),
    Seal,
    Chunk(u64, TableEdit),
    Compacted(TableEdit),
}

fn apply_one(db: &Db, index: u64, e: &Entry) -> bool {
    match e {
        Entry::Write(i) => db.apply_at(index, &batch(*i)).unwrap(),
        Entry::Seal => db.apply_seal(index).unwrap(),
        Entry::Chunk(s, edit) => db.apply_chunk(*s, edit, &index.to_le_bytes()).unwrap(),
        Entry::Compacted(edit) => db.apply_compaction(edit, &index.to_le_bytes()).unwrap(),
    }
}

fn contents(db: &Db) -> Vec<(Vec<u8>, Vec<u8>)> {
    common::collect(db.iter()).unwrap()
}

/// A leader-driven log: the leader (`dbs[0]`) seals when its memtable is full, builds and adds
/// each sealed memtable, compacts when needed; every entry is applied by every replica and
/// recorded.
#[derive(Default)]
struct Log {
    entries: Vec<(u64, Entry)>,
}

impl Log {
    fn append(&mut self, dbs: &[&Db], e: Entry) -> Vec<bool> {
        let index = self.entries.len() as u64 + 1;
        let applied = dbs.iter().map(|db| apply_one(db, index, &e)).collect();
        self.entries.push((index, e));
        applied
    }

    fn drive(&mut self, dbs: &[&Db], writes: std::ops::Range<u64>) {
        let leader = dbs[0];
        for i in writes {
            assert!(self.append(dbs, Entry::Write(i)).iter().all(|a| *a));
            if leader.replica_status().active_bytes >= 8 << 10 {
                self.append(dbs, Entry::Seal);
            }
            for s in leader.replica_status().sealed {
                let edit = leader.build_chunk(s).unwrap();
                assert!(self.append(dbs, Entry::Chunk(s, edit)).iter().all(|a| *a));
            }
            if let Some(edit) = leader.compact_step(0).unwrap() {
                assert!(self.append(dbs, Entry::Compacted(edit)).iter().all(|a| *a));
            }
        }
    }

    /// Applies every entry again: what was applied already must be recognised.
    fn replay(&self, db: &Db) {
        for (index, e) in &self.entries {
            apply_one(db, *index, e);
        }
    }
}

fn levels(db: &Db) -> Vec<usize> {
    db.stats().levels.iter().map(|l| l.files).collect()
}

#[test]
fn replicas_agree_and_duplicates_change_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = bucket(tmp.path());
    let a = open_leader(&tmp.path().join("a"), &store);
    let b = open(&tmp.path().join("b"), &store);
    let mut log = Log::default();
    log.drive(&[&a, &b], 0..3000);
    assert!(a.stats().compactions > 0, "the run should compact");
    assert_eq!(contents(&a), contents(&b));
    assert_eq!(levels(&a), levels(&b));
    assert_eq!(a.replica_status(), b.replica_status());

    // Applying the whole log again changes nothing on either replica.
    let before = contents(&b);
    log.replay(&b);
    log.replay(&a);
    assert_eq!(contents(&b), before);
    assert_eq!(contents(&a), before);
    assert_eq!(levels(&a), levels(&b));

    // A compaction edit is applied once; a second application is refused.
    a.number_tables_within(2 << 32..3 << 32).unwrap();
    log.drive(&[&a, &b], 3000..3400);
    if let Some(edit) = a.compact_step(0).unwrap() {
        assert_eq!(
            log.append(&[&a, &b], Entry::Compacted(edit.clone())),
            vec![true, true]
        );
        assert!(!a.apply_compaction(&edit, b"").unwrap());
        assert!(!b.apply_compaction(&edit, b"").unwrap());
    }
    assert_eq!(contents(&a), contents(&b));
}

#[test]
fn restart_resumes_at_the_flushed_point_and_an_image_bootstraps_a_replica() {
    let tmp = tempfile::tempdir().unwrap();
    let store = bucket(tmp.path());
    let db_dir = tmp.path().join("b");
    let a = open(&tmp.path().join("a"), &store);
    let b = open(&db_dir, &store);
    a.number_tables_within(1 << 32..2 << 32).unwrap();
    let mut log = Log::default();
    log.drive(&[&a, &b], 0..1500);
    // A few writes stay in the memtable, unflushed.
    for i in 1500..1510 {
        log.append(&[&a, &b], Entry::Write(i));
    }
    let want = contents(&a);
    let status = b.replica_status();
    assert!(status.flushed_seq > 0 && status.flushed_seq < status.last_seq);
    let app = b.app_state();
    assert_eq!(app, {
        // The state saved with the last table change, chunk or compaction: the index of its
        // entry (see `apply_one`).
        let (i, _) = log
            .entries
            .iter()
            .rev()
            .find(|(_, e)| matches!(e, Entry::Chunk(..) | Entry::Compacted(..)))
            .unwrap();
        i.to_le_bytes().to_vec()
    });
    drop(b);

    let b = open(&db_dir, &store);
    let st = b.replica_status();
    assert_eq!(
        st.last_seq, status.flushed_seq,
        "restart resumes at the flushed point"
    );
    assert!(st.memtables_empty);
    assert_eq!(b.app_state(), app);
    log.replay(&b);
    assert_eq!(contents(&b), want, "replaying the log restores the rest");
    assert_eq!(b.replica_status(), a.replica_status());

    // The image names the tables; it does not carry them.
    let image = a.export_image();
    let bytes = image.encode();
    let decoded = ManifestImage::decode(&bytes).unwrap();
    assert_eq!(decoded, image);
    assert!(image.tables() > 0);
    assert!((bytes.len() as u64) < image.table_bytes() / 10);
    let mut flipped = bytes.clone();
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(ManifestImage::decode(&flipped).is_err());
    assert!(ManifestImage::decode(&bytes[..bytes.len() - 1]).is_err());

    // A new replica installs the image, reads the data from the shared store, and catches up
    // with the entries after the image's flushed point.
    let c_dir = tmp.path().join("c");
    let c = open(&c_dir, &store);
    c.install_image(&decoded).unwrap();
    assert_eq!(c.replica_status().last_seq, image.flushed_seq());
    assert_eq!(c.app_state(), image.app_state());
    drop(c);
    let c = open(&c_dir, &store);
    assert_eq!(
        c.replica_status().last_seq,
        image.flushed_seq(),
        "the install is durable"
    );
    for (index, e) in log.entries.iter().filter(|(i, _)| *i > image.flushed_seq()) {
        apply_one(&c, *index, e);
    }
    assert_eq!(contents(&c), want);
}

#[test]
fn ordinary_writes_are_refused_and_options_checked() {
    let tmp = tempfile::tempdir().unwrap();
    let store = bucket(tmp.path());
    let db = open(&tmp.path().join("a"), &store);
    assert!(db.put("k", "v").is_err());
    assert!(db.flush().is_err());
    let mut o = replica_options(&store);
    o.wal = true;
    assert!(Db::open(tmp.path().join("b"), o).is_err());
    assert!(TableEdit::decode(b"\xff\xff").is_err());
}

#[test]
fn objects_compacted_away_are_deleted_without_further_writes() {
    let tmp = tempfile::tempdir().unwrap();
    let store = bucket(tmp.path());
    let a = open_leader(&tmp.path().join("a"), &store);
    let mut log = Log::default();
    let pending = |db: &Db| db.stats().cold_objects_pending_deletion;
    let mut next = 0;
    let mut compacted = false;
    for _ in 0..100 {
        for i in next..next + 100 {
            log.append(&[&a], Entry::Write(i));
        }
        next += 100;
        log.append(&[&a], Entry::Seal);
        for s in a.replica_status().sealed {
            let edit = a.build_chunk(s).unwrap();
            log.append(&[&a], Entry::Chunk(s, edit));
        }
        // The seal woke the engine's background thread: let it collect what is due, so that it
        // goes back to waiting. Nothing below wakes it (no seal, no write, no leadership change).
        let settle = std::time::Instant::now() + Duration::from_secs(10);
        while pending(&a) > 0 && std::time::Instant::now() < settle {
            std::thread::sleep(Duration::from_millis(20));
        }
        // A compaction applied now, as a replica applies the one its leader ran.
        if let Some(edit) = a.compact_step(0).unwrap() {
            log.append(&[&a], Entry::Compacted(edit));
            compacted = true;
            break;
        }
    }
    assert!(compacted, "no compaction in 10,000 writes");
    assert!(pending(&a) > 0, "the compaction queued no garbage");
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while pending(&a) > 0 {
        assert!(
            std::time::Instant::now() < deadline,
            "{} objects of a compaction applied after the last wake-up were never deleted",
            pending(&a)
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(a.stats().cold_objects_deleted > 0);
}

#[test]
fn a_replica_that_knows_a_newer_leaders_tables_uploads_none_in_its_old_term() {
    let tmp = tempfile::tempdir().unwrap();
    let store = bucket(tmp.path());
    let a = open_leader(&tmp.path().join("a"), &store);
    let b = open(&tmp.path().join("b"), &store);
    let mut log = Log::default();
    log.drive(&[&a, &b], 0..300);
    // b leads term 2 and adds tables numbered in that term; a applies them.
    b.number_tables_within(2 << 32..3 << 32).unwrap();
    log.drive(&[&b, &a], 300..600);
    let objects = || {
        let mut v: Vec<u64> = std::fs::read_dir(tmp.path().join("bucket/group-1/sst"))
            .unwrap()
            .filter_map(|e| {
                let name = e.unwrap().file_name().to_string_lossy().into_owned();
                name.strip_suffix(".sst")?.split('-').next()?.parse().ok()
            })
            .collect();
        v.sort();
        v
    };
    assert!(
        objects().last().is_some_and(|&n| n >= 2 << 32),
        "b added no table of term 2: {:?}",
        objects()
    );
    // a still believes it leads term 1 (a restart restores that belief until it hears of term
    // 2): it must neither accept that numbering nor build a table under term 2's numbers.
    for i in 600..700 {
        log.append(&[&a, &b], Entry::Write(i));
    }
    log.append(&[&a, &b], Entry::Seal);
    let sealed = *a.replica_status().sealed.first().unwrap();
    assert!(a.number_tables_within(1 << 32..2 << 32).is_err());
    let before = objects();
    assert!(a.build_chunk(sealed).is_err());
    assert_eq!(objects(), before, "a uploaded a table");
    // The same holds for a replica opened afresh: it starts numbering above every listed object.
    drop(a);
    let a = open(&tmp.path().join("a"), &store);
    assert!(a.number_tables_within(1 << 32..2 << 32).is_err());
    // Its next term is fine.
    a.number_tables_within(3 << 32..4 << 32).unwrap();
}
