//! A read under a deadline (`lsm::object::with_deadline`) gives up at the deadline when the
//! cold tier's store hangs, instead of holding its thread for the store's timeouts times the
//! retry attempts; whether the request that hangs opens the cold table or reads one of its
//! blocks. The error names the timeout, and the same read succeeds once the store answers.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lsm::object::{with_deadline, FaultConfig, FaultyStore, LocalDirStore, ObjectOp};
use lsm::{ColdTier, Db, Error, Options};

const N: u32 = 2_000;

fn key(i: u32) -> String {
    format!("k{i:06}")
}

fn value(i: u32) -> Vec<u8> {
    format!("v-{i}-{}", "x".repeat((i % 40) as usize)).into_bytes()
}

fn open(dir: &Path, store: &Arc<FaultyStore<LocalDirStore>>) -> Db {
    let opts = Options {
        write_buffer_size: 16 << 10,
        target_file_size: 16 << 10,
        max_bytes_for_level_base: 64 << 10,
        l0_compaction_trigger: 2,
        block_size: 1024,
        // The default retry policy: four attempts with backoff, as a server runs it.
        cold_tier: Some(ColdTier::new(store.clone(), "db")),
        ..Options::default()
    };
    Db::open(dir, opts).expect("open")
}

/// A database whose every key is in cold tables, reopened so that no table is open and no
/// block cached; with `keep_meta` false the saved table metadata is gone too, so opening a
/// table is a request to the store.
fn cold_db(dir: &Path, store: &Arc<FaultyStore<LocalDirStore>>, keep_meta: bool) -> Db {
    let db = open(dir, store);
    for i in 0..N {
        db.put(key(i), value(i)).expect("put");
    }
    db.compact_range::<&[u8], _>(..).expect("compact");
    let s = db.stats();
    assert_eq!(s.levels[0].files, 0, "a table stayed local");
    assert!(s.levels.iter().skip(1).any(|l| l.files > 0));
    db.close().expect("close");
    if !keep_meta {
        for p in meta_files(dir) {
            std::fs::remove_file(&p).expect("remove meta");
        }
    }
    open(dir, store)
}

/// The saved metadata of cold tables: a table opened from the store leaves one.
fn meta_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .expect("read dir")
        .map(|e| e.expect("entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "meta"))
        .collect()
}

/// Reads `k` under a deadline `budget` from now, on a thread of its own so that a read that
/// ignores the deadline fails the test rather than hanging it.
fn read_with_deadline(
    db: &Arc<Db>,
    k: String,
    budget: Duration,
) -> (lsm::Result<Option<bytes::Bytes>>, Duration) {
    let (tx, rx) = std::sync::mpsc::channel();
    let db = db.clone();
    std::thread::spawn(move || {
        let t = Instant::now();
        let r = with_deadline(t + budget, || db.get(k));
        let took = t.elapsed();
        // Before the answer, so the test can close the database once it has it.
        drop(db);
        let _ = tx.send((r, took));
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the read ignored its deadline")
}

fn hang_reads(store: &FaultyStore<LocalDirStore>) {
    let hang = FaultConfig {
        latency: Duration::from_secs(3600),
        ..Default::default()
    };
    for op in [ObjectOp::Get, ObjectOp::GetRange, ObjectOp::Size] {
        store.set(op, hang);
    }
}

fn check_gives_up_at_the_deadline(keep_meta: bool) {
    let dir = tempfile::tempdir().expect("tempdir");
    let objdir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(FaultyStore::new(
        LocalDirStore::open(objdir.path()).expect("store"),
        3,
    ));
    let db = Arc::new(cold_db(dir.path(), &store, keep_meta));
    db.put("hot", "local").expect("put");
    hang_reads(&store);
    let gets = || store.calls(ObjectOp::Get) + store.calls(ObjectOp::GetRange);
    let before = gets();

    let budget = Duration::from_millis(300);
    let (r, took) = read_with_deadline(&db, key(777), budget);
    eprintln!("keep_meta {keep_meta}: gave up after {took:?}: {r:?}");
    match &r {
        Err(e @ Error::Unavailable(msg)) => {
            assert!(msg.contains("timed out"), "{e}");
            assert!(msg.contains("deadline"), "{e}");
        }
        other => panic!("expected a timeout, got {other:?}"),
    }
    assert!(
        took >= budget && took < Duration::from_secs(2),
        "the read took {took:?}"
    );
    assert!(gets() > before, "the read never reached the store");
    if !keep_meta {
        assert!(
            meta_files(dir.path()).is_empty(),
            "a table was opened without the request that hangs"
        );
    }

    // Reads that need no request are not held to the deadline, even a passed one.
    let hot = with_deadline(Instant::now(), || db.get("hot")).expect("local read");
    assert_eq!(hot.as_deref(), Some(&b"local"[..]));

    // Nothing of the abandoned read sticks: once the store answers, the same read succeeds.
    store.clear();
    let (r, _) = read_with_deadline(&db, key(777), Duration::from_secs(10));
    assert_eq!(r.expect("read").as_deref(), Some(&value(777)[..]));
    assert!(!meta_files(dir.path()).is_empty());
    match Arc::try_unwrap(db) {
        Ok(db) => db.close().expect("close"),
        Err(_) => panic!("a reader still holds the database"),
    }
}

/// Opening the table costs no request (its metadata is saved locally); the request that hangs
/// reads a data block.
#[test]
fn a_block_read_from_a_hanging_store_gives_up_at_the_deadline() {
    check_gives_up_at_the_deadline(true);
}

/// The table is not open and its metadata not saved: the request that hangs opens it
/// (`TableCache::get`, a suffix GET).
#[test]
fn opening_a_table_on_a_hanging_store_gives_up_at_the_deadline() {
    check_gives_up_at_the_deadline(false);
}
