//! The local disk cache of cold data blocks, through the whole engine: blocks that point lookups
//! fetched survive a restart, so the same lookups then cost no GET; with the object store down,
//! cached blocks still serve and the others fail with `Unavailable`; damage to the cache's files
//! is a miss (a GET, or `Unavailable` when the store is down), never wrong data.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use lsm::object::{FaultConfig, FaultyStore, LocalDirStore, ObjectOp, RetryPolicy};
use lsm::{ColdTier, Db, Error, Options};

const N: u32 = 20_000;
const CACHE_BYTES: u64 = 8 << 20;

fn key(i: u32) -> String {
    format!("user:{i:08}")
}

fn value(i: u32) -> Vec<u8> {
    format!("value-{i}-{}", "v".repeat((i % 64) as usize)).into_bytes()
}

/// Lookups that warm the cache: every 101st key of the first half, each in its own block.
fn warmed() -> impl Iterator<Item = u32> {
    (0..N / 2).step_by(101)
}

struct Env {
    db: tempfile::TempDir,
    cache: tempfile::TempDir,
    _objects: tempfile::TempDir,
    store: Arc<FaultyStore<LocalDirStore>>,
}

impl Env {
    fn options(&self, cache_dir: &Path) -> Options {
        Options {
            write_buffer_size: 256 << 10,
            target_file_size: 256 << 10,
            // A small block cache, so lookups miss it and reach the disk cache.
            block_cache_bytes: 64 << 10,
            cold_tier: Some(
                ColdTier {
                    // Outages here are total: fail fast, the point is the outcome.
                    retry: RetryPolicy {
                        max_attempts: 2,
                        base_delay: Duration::from_millis(1),
                        max_delay: Duration::from_millis(2),
                        max_in_flight: 8,
                    },
                    ..ColdTier::new(self.store.clone(), "dc")
                }
                .with_disk_cache(cache_dir, CACHE_BYTES),
            ),
            ..Options::default()
        }
    }

    fn open(&self) -> Db {
        Db::open(self.db.path(), self.options(self.cache.path())).expect("open")
    }

    fn segments(&self) -> Vec<PathBuf> {
        let mut v: Vec<_> = std::fs::read_dir(self.cache.path())
            .expect("list cache")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "dcseg"))
            .collect();
        v.sort();
        v
    }

    fn store_down(&self, down: bool) {
        for op in [ObjectOp::Get, ObjectOp::GetRange] {
            let error_rate = if down { 1.0 } else { 0.0 };
            self.store.set(
                op,
                FaultConfig {
                    error_rate,
                    ..Default::default()
                },
            );
        }
    }
}

/// N keys compacted into the cold tier; the warm lookups done once (filling the disk cache); the
/// database closed. Returns the environment and the number of blocks the disk cache holds.
fn warmed_env() -> (Env, u64) {
    let objects = tempfile::tempdir().expect("tempdir");
    let env = Env {
        db: tempfile::tempdir().expect("tempdir"),
        cache: tempfile::tempdir().expect("tempdir"),
        store: Arc::new(FaultyStore::new(
            LocalDirStore::open(objects.path()).expect("store"),
            1,
        )),
        _objects: objects,
    };
    let db = env.open();
    common::write_in_batches(&db, 0..N, 200, |b, i| b.put(key(i), value(i))).expect("write");
    db.compact_range::<&[u8], _>(..).expect("compact");
    let s = db.stats();
    assert_eq!(s.levels[0].files, 0);
    // Compaction read its cold inputs ahead, in runs: none of that is cached.
    assert_eq!(s.disk_cache_inserts, 0, "compaction filled the disk cache");
    db.close().expect("close");

    let db = env.open();
    for i in warmed() {
        assert_eq!(db.get(key(i)).expect("get").as_deref(), Some(&value(i)[..]));
    }
    let s = db.stats();
    assert!(
        s.cold_gets >= 50,
        "{} GETs: lookups missed the store",
        s.cold_gets
    );
    // Every block a lookup fetched went into the disk cache, and nothing else did.
    assert_eq!(s.disk_cache_inserts, s.cold_gets);
    assert_eq!(s.disk_cache_capacity, CACHE_BYTES);
    assert!(s.disk_cache_usage > 0 && s.disk_cache_usage <= CACHE_BYTES);
    db.close().expect("close");
    (env, s.disk_cache_inserts)
}

#[test]
fn a_warm_disk_cache_survives_reopen_and_serves_without_gets() {
    let (env, blocks) = warmed_env();
    let db = env.open();
    assert_eq!(db.stats().disk_cache_usage, {
        let files = env.segments();
        files
            .iter()
            .map(|p| std::fs::metadata(p).expect("stat").len())
            .sum::<u64>()
    });
    for i in warmed() {
        assert_eq!(db.get(key(i)).expect("get").as_deref(), Some(&value(i)[..]));
    }
    let s = db.stats();
    assert_eq!(s.cold_gets, 0, "the warmed lookups went to the store");
    assert_eq!(s.disk_cache_hits, blocks);
    assert_eq!(s.disk_cache_errors, 0);

    // Lookups of the other half were never cached: they cost GETs (and fill the cache).
    for i in (N / 2..N).step_by(101) {
        assert_eq!(db.get(key(i)).expect("get").as_deref(), Some(&value(i)[..]));
    }
    let s = db.stats();
    assert!(s.cold_gets > 0);
    assert_eq!(s.disk_cache_inserts, s.cold_gets);

    // The cache directory is this database's while it is open.
    let other = tempfile::tempdir().expect("tempdir");
    let mut opts = env.options(env.cache.path());
    if let Some(c) = opts.cold_tier.as_mut() {
        c.prefix = "other".into();
    }
    match Db::open(other.path(), opts) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("in use"), "{m}"),
        Err(e) => panic!("a second database on the same cache directory: {e}"),
        Ok(_) => panic!("a second database opened the same cache directory"),
    }
    assert_eq!(db.get(key(0)).expect("get").as_deref(), Some(&value(0)[..]));
    // An iterator outliving close keeps tables alive, but not the cache directory's lock.
    let it = db.iter();
    db.close().expect("close");

    // Scans read cached blocks from the disk cache too, but add nothing they fetch to it: a
    // scan would otherwise flush the point lookups' working set out of a FIFO cache.
    let db = env.open();
    for i in warmed() {
        let got: Vec<_> = db
            .range(key(i)..=key(i))
            .map(|r| r.expect("scan"))
            .collect();
        assert_eq!(got.len(), 1);
        assert_eq!(&got[0].1[..], &value(i)[..]);
    }
    let s = db.stats();
    assert!(
        s.disk_cache_hits >= warmed().count() as u64,
        "{} disk cache hits for {} scans starting in cached blocks",
        s.disk_cache_hits,
        warmed().count()
    );
    assert_eq!(db.iter().count(), N as usize);
    assert_eq!(
        db.stats().disk_cache_inserts,
        0,
        "a scan filled the disk cache"
    );
    drop(it);
}

#[test]
fn with_the_store_down_cached_blocks_serve_and_the_rest_is_unavailable() {
    let (env, _) = warmed_env();
    env.store_down(true);
    let db = env.open();
    for i in warmed() {
        assert_eq!(db.get(key(i)).expect("get").as_deref(), Some(&value(i)[..]));
    }
    let (mut served, mut unavailable) = (0, 0);
    for i in (0..N).step_by(37) {
        match db.get(key(i)) {
            Ok(Some(v)) => {
                assert_eq!(&v[..], &value(i)[..], "key {i}");
                served += 1;
            }
            Err(Error::Unavailable(_)) => unavailable += 1,
            other => panic!("key {i}: {other:?}"),
        }
    }
    assert!(
        served > 0 && unavailable > 0,
        "{served} served, {unavailable} unavailable"
    );
    // Back up: everything reads again.
    env.store_down(false);
    for i in (0..N).step_by(37) {
        assert_eq!(db.get(key(i)).expect("get").as_deref(), Some(&value(i)[..]));
    }
}

/// Flips a byte in the middle of the data of every other record of a segment; returns how many.
fn damage_every_other_record(path: &Path) -> u64 {
    let mut d = std::fs::read(path).expect("read segment");
    let u32_at = |d: &[u8], at: usize| u32::from_le_bytes(d[at..at + 4].try_into().unwrap());
    let (mut at, mut n, mut damaged) = (8, 0, 0);
    // Record: 32-byte header (data len at 8, key len at 12), key, data.
    while at + 32 <= d.len() {
        let data_len = u32_at(&d, at + 8) as usize;
        let key_len = u16::from_le_bytes([d[at + 12], d[at + 13]]) as usize;
        let data = at + 32 + key_len;
        if n % 2 == 0 {
            d[data + data_len / 2] ^= 0x01;
            damaged += 1;
        }
        n += 1;
        at = data + data_len;
    }
    assert_eq!(at, d.len(), "records do not tile the segment");
    std::fs::write(path, d).expect("write segment");
    damaged
}

#[test]
fn damaged_cache_records_are_misses_never_wrong_data() {
    let (env, blocks) = warmed_env();
    let damaged: u64 = env
        .segments()
        .iter()
        .map(|p| damage_every_other_record(p))
        .sum();
    assert!(damaged > 0);

    // Store down: intact blocks serve, damaged ones are Unavailable, none is wrong.
    env.store_down(true);
    let db = env.open();
    let mut unavailable = 0;
    for i in warmed() {
        match db.get(key(i)) {
            Ok(v) => assert_eq!(v.as_deref(), Some(&value(i)[..]), "key {i}"),
            Err(Error::Unavailable(_)) => unavailable += 1,
            Err(e) => panic!("key {i}: {e}"),
        }
    }
    assert_eq!(unavailable, damaged);
    let s = db.stats();
    assert_eq!(s.disk_cache_errors, damaged);
    assert_eq!(s.disk_cache_hits, blocks - damaged);

    // Store up: the damaged blocks are fetched again, cached again, and served from then on.
    env.store_down(false);
    for i in warmed() {
        assert_eq!(db.get(key(i)).expect("get").as_deref(), Some(&value(i)[..]));
    }
    let s = db.stats();
    assert_eq!(s.disk_cache_inserts, damaged);
    db.close().expect("close");
    env.store_down(true);
    let db = env.open();
    for i in warmed() {
        assert_eq!(db.get(key(i)).expect("get").as_deref(), Some(&value(i)[..]));
    }
    assert_eq!(db.stats().disk_cache_errors, 0);
}
