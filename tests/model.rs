//! Model-based test: random operation sequences run against the engine and against a `BTreeMap`
//! model, and every read is compared. Options are tiny so that flushes, multi-level compactions
//! and multi-block tables happen within a few hundred operations.
//!
//! `PROPTEST_CASES` overrides the case count (default 48 per variant).

mod common;

use std::collections::{BTreeMap, VecDeque};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use lsm::{Clock, Db, Iter, ManualClock, Snapshot, WriteBatch};
use proptest::prelude::*;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestRunner};

/// Clock moves and TTLs are counted in ticks of this many ms. TTLs are `n * TICK + TICK / 2`,
/// so the clock (always a whole number of ticks) never sits exactly on an expiry time and the
/// model does not depend on whether expiry is inclusive (`ttl_boundary` pins that separately).
const TICK: u64 = 10;
const MAX_SNAPSHOTS: usize = 3;

type Key = Vec<u8>;
type Range = (Bound<Key>, Bound<Key>);

#[derive(Clone, Debug)]
enum W {
    Put(Key, usize),
    PutTtl(Key, usize, u64),
    Del(Key),
}

#[derive(Clone, Debug)]
enum Op {
    Write(W),
    Batch(Vec<W>),
    Advance(u64),
    TakeSnapshot,
    /// Snapshot index (mod count), a range with its next/next_back pattern, and a prefix.
    CheckSnapshot(usize, Range, Vec<bool>, Key),
    Get(Key),
    /// `true` = `next()`, `false` = `next_back()`; the rest is drained forward afterwards.
    Scan(Range, Vec<bool>),
    Prefix(Key, bool),
    Flush,
    Compact(Range),
    Reopen,
}

fn key() -> impl Strategy<Value = Key> {
    prop_oneof![
        1 => Just(Vec::new()),
        30 => prop::collection::vec(prop::sample::select(&b"abcd"[..]), 1..=3),
    ]
}

fn value_len() -> impl Strategy<Value = usize> {
    prop_oneof![12 => 0usize..24, 1 => 1000usize..6000]
}

fn write() -> impl Strategy<Value = W> {
    prop_oneof![
        6 => (key(), value_len()).prop_map(|(k, l)| W::Put(k, l)),
        2 => (key(), value_len(), 1u64..20).prop_map(|(k, l, t)| W::PutTtl(k, l, t)),
        3 => key().prop_map(W::Del),
    ]
}

fn bound() -> impl Strategy<Value = Bound<Key>> {
    prop_oneof![
        1 => Just(Bound::Unbounded),
        2 => key().prop_map(Bound::Included),
        2 => key().prop_map(Bound::Excluded),
    ]
}

/// A range whose start is not after its end (the bound kinds stay random, so `[k, k)` and
/// `(k, k)` — empty ranges — do occur).
fn range() -> impl Strategy<Value = Range> {
    (bound(), bound()).prop_map(|(a, b)| {
        let key_of = |b: &Bound<Key>| match b {
            Bound::Included(k) | Bound::Excluded(k) => Some(k.clone()),
            Bound::Unbounded => None,
        };
        match (key_of(&a), key_of(&b)) {
            (Some(x), Some(y)) if x > y => (a.map(|_| y), b.map(|_| x)),
            _ => (a, b),
        }
    })
}

fn dirs() -> impl Strategy<Value = Vec<bool>> {
    prop::collection::vec(any::<bool>(), 0..24)
}

fn op() -> impl Strategy<Value = Op> {
    let prefix = prop::collection::vec(prop::sample::select(&b"abcd"[..]), 0..=2);
    prop_oneof![
        30 => write().prop_map(Op::Write),
        6 => prop::collection::vec(write(), 1..8).prop_map(Op::Batch),
        4 => (1u64..15).prop_map(Op::Advance),
        2 => Just(Op::TakeSnapshot),
        3 => (any::<usize>(), range(), dirs(), prefix.clone())
            .prop_map(|(i, r, d, p)| Op::CheckSnapshot(i, r, d, p)),
        8 => key().prop_map(Op::Get),
        6 => (range(), dirs()).prop_map(|(r, d)| Op::Scan(r, d)),
        2 => (prefix, any::<bool>()).prop_map(|(p, rev)| Op::Prefix(p, rev)),
        2 => Just(Op::Flush),
        1 => range().prop_map(Op::Compact),
        1 => Just(Op::Reopen),
    ]
}

/// Per-key state of the model: the value and its expiry time (ms), if any.
type Model = BTreeMap<Key, (Vec<u8>, Option<u64>)>;

/// The model as readers must see it at time `now`.
fn visible(m: &Model, now: u64) -> BTreeMap<Key, Vec<u8>> {
    m.iter()
        .filter(|(_, (_, exp))| exp.is_none_or(|e| now < e))
        .map(|(k, (v, _))| (k.clone(), v.clone()))
        .collect()
}

/// A value unique to the write number `n` (first 4 bytes), so a stale version is always caught;
/// the rest is pseudo-random so that LZ4 cannot shrink multi-KB values into nothing.
fn make_value(n: u32, len: usize) -> Vec<u8> {
    let mut x = u64::from(n).wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut v = n.to_le_bytes().to_vec();
    v.resize(len, 0);
    for b in v.iter_mut().skip(4) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    v
}

fn ttl(ticks: u64) -> Duration {
    Duration::from_millis(ticks * TICK + TICK / 2)
}

/// Applies one write to the model (write number `n` is bumped) and returns the value written.
fn apply(w: &W, m: &mut Model, n: &mut u32, now: u64) -> Vec<u8> {
    *n += 1;
    let (k, v, expiry) = match w {
        W::Put(k, l) => (k, make_value(*n, *l), None),
        W::PutTtl(k, l, t) => (
            k,
            make_value(*n, *l),
            Some(now + ttl(*t).as_millis() as u64),
        ),
        W::Del(k) => {
            m.remove(k);
            return Vec::new();
        }
    };
    m.insert(k.clone(), (v.clone(), expiry));
    v
}

fn fail(e: impl std::fmt::Display) -> TestCaseError {
    TestCaseError::fail(e.to_string())
}

/// Compares an iterator, driven by the `next`/`next_back` pattern `dirs` and then drained
/// forward, with the expected entries in key order.
fn check_iter(
    mut it: Iter,
    expected: Vec<(Key, Vec<u8>)>,
    dirs: &[bool],
) -> Result<(), TestCaseError> {
    let mut exp: VecDeque<_> = expected.into();
    for (step, &fwd) in dirs.iter().enumerate() {
        let got = if fwd { it.next() } else { it.next_back() };
        let got = got
            .transpose()
            .map_err(fail)?
            .map(|(k, v)| (k.to_vec(), v.to_vec()));
        let want = if fwd { exp.pop_front() } else { exp.pop_back() };
        prop_assert_eq!(
            got,
            want,
            "step {} ({})",
            step,
            if fwd { "next" } else { "next_back" }
        );
    }
    let rest = common::collect(it).map_err(fail)?;
    prop_assert_eq!(rest, Vec::from(exp), "remainder after the mixed steps");
    Ok(())
}

fn in_range(r: &Range) -> impl Fn(&(Key, Vec<u8>)) -> bool + '_ {
    move |(k, _)| std::ops::RangeBounds::contains(r, k)
}

/// Whole-run evidence that the configuration really exercised the on-disk paths.
#[derive(Default)]
struct Evidence {
    flushes: AtomicU64,
    compactions: AtomicU64,
    deep_cases: AtomicU64,
    cold_bytes: AtomicU64,
}

/// Where levels below L0 live.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tier {
    Local,
    Dir,
    S3,
}

fn run_case(
    ev: &Evidence,
    wal: bool,
    tier: Tier,
    params: (usize, usize, u64),
    ops: Vec<Op>,
) -> Result<(), TestCaseError> {
    let (wbs, block, base) = params;
    let clock = Arc::new(ManualClock::new(1_000_000 * TICK));
    let mut opts = common::tiny_options(Some(clock.clone()));
    opts.write_buffer_size = wbs;
    opts.block_size = block;
    opts.max_bytes_for_level_base = base;
    opts.wal = wal;
    let objects = tempfile::tempdir().unwrap();
    let disk_cache = tempfile::tempdir().unwrap();
    match tier {
        Tier::Local => {}
        Tier::Dir => {
            let store = lsm::object::LocalDirStore::open(objects.path()).map_err(fail)?;
            // With a disk cache, so that blocks it serves after a reopen are checked against
            // the model too.
            opts.cold_tier = Some(lsm::ColdTier {
                // Objects go as soon as no version names them, so snapshots and iterators
                // reading replaced tables are checked against deletion too.
                gc_grace: Some(Duration::ZERO),
                ..lsm::ColdTier::new(Arc::new(store), "model")
                    .with_disk_cache(disk_cache.path(), lsm::MIN_DISK_CACHE_BYTES)
            });
        }
        Tier::S3 => {
            // One bucket, a fresh prefix per case.
            static CASE: AtomicU64 = AtomicU64::new(0);
            static STORE: std::sync::OnceLock<Arc<lsm::object::S3Store>> =
                std::sync::OnceLock::new();
            let store = STORE.get_or_init(|| Arc::new(testkit::shared().store("model").unwrap()));
            let prefix = format!("case{}", CASE.fetch_add(1, Relaxed));
            opts.cold_tier = Some(lsm::ColdTier {
                gc_grace: Some(Duration::ZERO),
                ..lsm::ColdTier::new(store.clone(), &prefix)
            });
        }
    }
    let dir = tempfile::tempdir().unwrap();
    let open = || Db::open(dir.path(), opts.clone()).map_err(fail);
    let mut db = Some(open()?);
    let mut model = Model::new();
    let mut snaps: Vec<(Snapshot, Model)> = Vec::new();
    let mut writes = 0u32;
    let mut deepest = 0usize;
    for (step, op) in ops.into_iter().enumerate() {
        let d = db.as_ref().unwrap();
        let now = clock.now_millis();
        match op {
            Op::Write(w) => {
                let v = apply(&w, &mut model, &mut writes, now);
                let r = match &w {
                    W::Put(k, _) => d.put(k, v),
                    W::PutTtl(k, _, t) => d.put_with_ttl(k, v, ttl(*t)),
                    W::Del(k) => d.delete(k),
                };
                r.map_err(fail)?;
            }
            Op::Batch(ws) => {
                let mut b = WriteBatch::new();
                for w in &ws {
                    let v = apply(w, &mut model, &mut writes, now);
                    match w {
                        W::Put(k, _) => b.put(k, v),
                        W::PutTtl(k, _, t) => b.put_with_ttl(k, v, ttl(*t)),
                        W::Del(k) => b.delete(k),
                    }
                }
                prop_assert_eq!(b.len(), ws.len());
                d.write(b).map_err(fail)?;
            }
            Op::Advance(t) => clock.advance(t * TICK),
            Op::TakeSnapshot => {
                if snaps.len() == MAX_SNAPSHOTS {
                    snaps.remove(0);
                }
                let s = d.snapshot();
                if let Some((prev, _)) = snaps.last() {
                    prop_assert!(s.seq() >= prev.seq(), "snapshot seq went backwards");
                }
                snaps.push((s, model.clone()));
            }
            Op::CheckSnapshot(i, r, dirs, p) => {
                if snaps.is_empty() {
                    continue;
                }
                let (s, frozen) = &snaps[i % snaps.len()];
                // TTL is judged against the current clock, even for old snapshots.
                let vis = visible(frozen, now);
                for k in frozen.keys().chain(model.keys()) {
                    let got = s.get(k).map_err(fail)?.map(|v| v.to_vec());
                    prop_assert_eq!(got, vis.get(k).cloned(), "snapshot get {:?}", k);
                }
                let all: Vec<_> = vis.into_iter().collect();
                check_iter(s.iter(), all.clone(), &[])?;
                check_iter(s.iter(), all.clone(), &vec![false; all.len()])?;
                let want = all.iter().filter(|e| in_range(&r)(e)).cloned().collect();
                check_iter(s.range(r.clone()), want, &dirs)?;
                let want = all
                    .iter()
                    .filter(|(k, _)| k.starts_with(&p))
                    .cloned()
                    .collect();
                check_iter(s.prefix(&p), want, &dirs)?;
            }
            Op::Get(k) => {
                let got = d.get(&k).map_err(fail)?.map(|v| v.to_vec());
                prop_assert_eq!(got, visible(&model, now).get(&k).cloned(), "get {:?}", k);
            }
            Op::Scan(r, dirs) => {
                let want = visible(&model, now)
                    .into_iter()
                    .filter(in_range(&r))
                    .collect();
                check_iter(d.range(r.clone()), want, &dirs)?;
            }
            Op::Prefix(p, rev) => {
                let want: Vec<_> = visible(&model, now)
                    .into_iter()
                    .filter(|(k, _)| k.starts_with(&p))
                    .collect();
                check_iter(d.prefix(&p), want.clone(), &[])?;
                if rev {
                    check_iter(d.prefix(&p), want, &[false; 64])?;
                }
            }
            Op::Flush => d.flush().map_err(fail)?,
            Op::Compact(r) => d.compact_range(r).map_err(fail)?,
            Op::Reopen => {
                snaps.clear();
                let old = db.take().unwrap();
                record(ev, &old, &mut deepest);
                // Without a WAL only close() promises to persist the memtable; with one, a plain
                // drop must be just as safe, so both are exercised.
                if !wal || step % 2 == 0 {
                    old.close().map_err(fail)?;
                } else {
                    drop(old);
                }
                db = Some(open()?);
            }
        }
    }
    // Final full comparison, then once more after a reopen (snapshots pin the store open).
    drop(snaps);
    let d = db.take().unwrap();
    let now = clock.now_millis();
    let want: Vec<_> = visible(&model, now).into_iter().collect();
    check_iter(d.iter(), want.clone(), &[])?;
    record(ev, &d, &mut deepest);
    d.close().map_err(fail)?;
    let d = open()?;
    check_iter(d.iter(), want, &[])?;
    if deepest >= 2 {
        ev.deep_cases.fetch_add(1, Relaxed);
    }
    Ok(())
}

fn record(ev: &Evidence, db: &Db, deepest: &mut usize) {
    let s = db.stats();
    ev.flushes.fetch_add(s.flushes, Relaxed);
    ev.compactions.fetch_add(s.compactions, Relaxed);
    ev.cold_bytes.fetch_add(s.cold_bytes_uploaded, Relaxed);
    if let Some(l) = s.levels.iter().rposition(|l| l.files > 0) {
        *deepest = (*deepest).max(l);
    }
}

fn run(wal: bool, tier: Tier) {
    let cases = common::env_u64("PROPTEST_CASES", 48) as u32;
    let ev = Evidence::default();
    let mut runner = TestRunner::new(Config {
        cases,
        source_file: Some(file!()),
        failure_persistence: Some(Box::new(FileFailurePersistence::WithSource(
            "proptest-regressions",
        ))),
        max_shrink_time: 120_000,
        ..Config::default()
    });
    let params = (4096usize..16384, 256usize..1024, (4u64 << 10)..(16 << 10));
    let strategy = (params, prop::collection::vec(op(), 1..200));
    if let Err(e) = runner.run(&strategy, |(p, ops)| run_case(&ev, wal, tier, p, ops)) {
        panic!("{e}");
    }
    eprintln!(
        "model (wal={wal}, tier={tier:?}): {cases} cases, {} flushes, {} compactions, {} cases reached L2+",
        ev.flushes.load(Relaxed),
        ev.compactions.load(Relaxed),
        ev.deep_cases.load(Relaxed)
    );
    // Guard against a configuration that silently never reaches the on-disk code paths (only
    // meaningful with enough cases: about a quarter of them reach L2).
    if cases >= 32 {
        assert!(ev.flushes.load(Relaxed) > 0, "no flush happened");
        assert!(ev.compactions.load(Relaxed) > 0, "no compaction happened");
        assert!(
            ev.deep_cases.load(Relaxed) > 0,
            "no case ever had a file below L1"
        );
        if tier != Tier::Local {
            assert!(
                ev.cold_bytes.load(Relaxed) > 0,
                "nothing reached the cold tier"
            );
        }
    }
}

#[test]
fn model_with_wal() {
    run(true, Tier::Local);
}

#[test]
fn model_without_wal() {
    run(false, Tier::Local);
}

/// The same sequences with every level below L0 in an object store (a local directory).
#[test]
fn model_with_cold_tier() {
    run(true, Tier::Dir);
}

/// The same sequences with the cold tier in a real S3 server on loopback (`s3s-fs`, SigV4).
#[test]
fn model_with_s3_cold_tier() {
    run(true, Tier::S3);
}

/// `put_with_ttl(.., ttl)` expires at `now + ttl`: visible one millisecond before, absent at it,
/// both from the memtable and from an SST, and the expired entry does not uncover an older value.
#[test]
fn ttl_boundary() {
    let clock = Arc::new(ManualClock::new(50_000));
    let dir = tempfile::tempdir().unwrap();
    let db = Db::open(dir.path(), common::tiny_options(Some(clock.clone()))).unwrap();
    db.put("k", "old").unwrap();
    db.put_with_ttl("k", "new", Duration::from_millis(100))
        .unwrap();
    db.put_with_ttl("other", "x", Duration::from_millis(1000))
        .unwrap();
    for flushed in [false, true] {
        clock.set(50_099);
        assert_eq!(
            db.get("k").unwrap().as_deref(),
            Some(&b"new"[..]),
            "flushed={flushed}"
        );
        clock.set(50_100);
        assert_eq!(db.get("k").unwrap(), None, "flushed={flushed}");
        let keys: Vec<_> = common::collect(db.iter())
            .unwrap()
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert_eq!(keys, vec![b"other".to_vec()], "flushed={flushed}");
        db.flush().unwrap();
    }
    // Compaction may drop the expired entry, but must not resurrect "old".
    db.compact_range::<&[u8], _>(..).unwrap();
    assert_eq!(db.get("k").unwrap(), None);
    clock.set(60_000);
    assert_eq!(common::collect(db.iter()).unwrap(), vec![]);
}
