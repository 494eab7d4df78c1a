//! Concurrency stress: writers (each owning disjoint key spaces, writing increasing versions with
//! single puts and multi-key batches, and putting/deleting a few "churn" keys), readers (gets,
//! forward/reverse scans), a snapshot checker and a thread forcing flushes and manual
//! compactions, over tiny memtables so background flush and compaction never stop.
//!
//! Every observation is checked against what writers had *finished* before the read began and
//! *started* before it ended (linearizability), versions seen by one reader never go backwards,
//! scans are sorted and complete, batches are seen whole, and snapshots never change.
//! `STRATA_STRESS_SECS` sets the duration (default 20), `STRATA_SEED` replays the choices.

mod common;

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::{Duration, Instant};

use lsm::{Db, Iter, Options, Snapshot, WriteBatch};
use rand::{rngs::StdRng, Rng, SeedableRng};

const WRITERS: u64 = 3;
const READERS: u64 = 2;
const KEYS: u64 = 128;
/// Keys that are alternately put (odd versions) and deleted (even versions; 0 is "never
/// written"), so tombstones are flushed, compacted and read concurrently too.
const CHURN: u64 = 32;
/// Key spaces: `0..WRITERS` are writer `s`'s main keys, `WRITERS..` writer `s - WRITERS`'s churn
/// keys. Only one writer ever writes a space, so its versions only grow.
const SPACES: u64 = 2 * WRITERS;

fn churn(s: u64) -> bool {
    s >= WRITERS
}

fn prefix(s: u64) -> String {
    if churn(s) {
        format!("x{}/", s - WRITERS)
    } else {
        format!("w{s}/")
    }
}

fn len(s: u64) -> u64 {
    if churn(s) {
        CHURN
    } else {
        KEYS
    }
}

fn key(s: u64, j: u64) -> Vec<u8> {
    format!("{}{j:04}", prefix(s)).into_bytes()
}

/// Index of a key within its space (its last four digits).
fn idx(k: &[u8]) -> u64 {
    std::str::from_utf8(&k[k.len() - 4..])
        .unwrap()
        .parse()
        .unwrap()
}

/// Positions of space `s` in the per-key version arrays.
fn slots(s: u64) -> Range<usize> {
    let start = if churn(s) {
        WRITERS * KEYS + (s - WRITERS) * CHURN
    } else {
        s * KEYS
    };
    start as usize..(start + len(s)) as usize
}

/// A value names its key, its version and the batch (`j0..j0+n` of the same space) it came in.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Val {
    v: u64,
    j0: u64,
    n: u64,
}

fn value(k: &[u8], x: Val, pad: usize) -> Vec<u8> {
    let mut s = format!("{}#{}#{}#{}#", String::from_utf8_lossy(k), x.v, x.j0, x.n).into_bytes();
    s.resize(s.len() + pad, b'.');
    s
}

fn parse(k: &[u8], b: &[u8]) -> Val {
    let s = std::str::from_utf8(b).expect("value is not what a writer wrote");
    let f: Vec<&str> = s.split('#').collect();
    assert_eq!(f[0].as_bytes(), k, "value of another key returned");
    let n = |i: usize| f[i].parse::<u64>().expect("malformed value");
    let x = Val {
        v: n(1),
        j0: n(2),
        n: n(3),
    };
    assert!(
        (x.j0..x.j0 + x.n).contains(&idx(k)),
        "value outside its own batch"
    );
    x
}

/// Per key: the highest version whose write has begun, and the highest whose write has returned.
struct Shared {
    started: Vec<AtomicU64>,
    done: Vec<AtomicU64>,
    stop: AtomicBool,
}

fn load(v: &[AtomicU64], s: u64) -> Vec<u64> {
    v[slots(s)].iter().map(|a| a.load(SeqCst)).collect()
}

/// Stops every thread when one of them panics, so a failure ends the run promptly.
struct StopOnPanic<'a>(&'a AtomicBool);

impl Drop for StopOnPanic<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.0.store(true, SeqCst);
        }
    }
}

fn writer(db: &Db, sh: &Shared, w: u64, seed: u64) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let _g = StopOnPanic(&sh.stop);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut last = BTreeMap::new();
    let mut v = 0;
    while !sh.stop.load(SeqCst) {
        let pad = rng.gen_range(0..400);
        if rng.gen_bool(0.2) {
            let (s, j) = (WRITERS + w, rng.gen_range(0..CHURN));
            let (k, slot) = (key(s, j), slots(s).start + j as usize);
            let cv = sh.started[slot].load(SeqCst) + 1;
            sh.started[slot].store(cv, SeqCst);
            if cv & 1 == 1 {
                let val = value(&k, Val { v: cv, j0: j, n: 1 }, pad);
                db.put(&k, &val).unwrap();
                last.insert(k, val);
            } else {
                db.delete(&k).unwrap();
                last.remove(&k);
            }
            sh.done[slot].store(cv, SeqCst);
            continue;
        }
        v += 1;
        let n = if rng.gen_bool(0.6) {
            1
        } else {
            rng.gen_range(2..=8)
        };
        let j0 = rng.gen_range(0..=KEYS - n);
        let mut b = WriteBatch::new();
        for j in j0..j0 + n {
            let val = value(&key(w, j), Val { v, j0, n }, pad);
            sh.started[slots(w).start + j as usize].store(v, SeqCst);
            b.put(key(w, j), &val);
            last.insert(key(w, j), val);
        }
        if n == 1 && rng.gen_bool(0.5) {
            db.put(key(w, j0), &last[&key(w, j0)]).unwrap();
        } else {
            db.write(b).unwrap();
        }
        for j in j0..j0 + n {
            sh.done[slots(w).start + j as usize].store(v, SeqCst);
        }
    }
    last
}

/// Checks what one consistent read saw of key `j` of space `s`, given the versions done before
/// it and started after it: a main key holds a version in range (absent only if never written);
/// a churn key holds an odd (put) version in range, or is absent if an even one is in range.
fn check_key(s: u64, j: u64, got: Option<Val>, before: u64, after: u64, what: &str) {
    let what = format!("{what}: {}{j:04}", prefix(s));
    match got {
        None if churn(s) => assert!(
            before & 1 == 0 || before < after,
            "{what} absent, v{before}"
        ),
        None => assert_eq!(before, 0, "{what} missing"),
        Some(x) => {
            assert!(
                before <= x.v && x.v <= after,
                "{what} v{} not in [{before}, {after}]",
                x.v
            );
            assert!(!churn(s) || x.v & 1 == 1, "{what} holds a deleted version");
        }
    }
}

/// Checks a consistent view (scan or snapshot) of keys `lo..hi` of space `s`: every key as in
/// `check_key`, nothing outside the range, and batches whole.
fn check_view(
    s: u64,
    view: &BTreeMap<u64, Val>,
    before: &[u64],
    after: &[u64],
    r: Range<u64>,
    what: &str,
) {
    assert!(
        view.keys().all(|j| r.contains(j)),
        "{what}: key outside the range"
    );
    for j in r.clone() {
        let x = view.get(&j).copied();
        check_key(s, j, x, before[j as usize], after[j as usize], what);
        for k in x.map_or(0..0, |x| x.j0.max(r.start)..(x.j0 + x.n).min(r.end)) {
            let (v, other) = (x.unwrap().v, view.get(&k).map_or(0, |o| o.v));
            assert!(
                other >= v,
                "{what}: batch v{v} torn: key {j} has it, key {k} v{other}"
            );
        }
    }
}

/// Collects a scan as `index -> value`, checking order, duplicates and the key prefix.
fn scan_view(it: Iter, reverse: bool, s: u64, what: &str) -> BTreeMap<u64, Val> {
    let items = common::collect_dir(it, reverse).unwrap();
    assert!(
        items.windows(2).all(|p| p[0].0 < p[1].0),
        "{what}: scan out of order or duplicate"
    );
    let stray = items
        .iter()
        .find(|(k, _)| !k.starts_with(prefix(s).as_bytes()));
    assert!(stray.is_none(), "{what}: stray key {stray:?}");
    items.iter().map(|(k, b)| (idx(k), parse(k, b))).collect()
}

fn reader(db: &Db, sh: &Shared, seed: u64) -> u64 {
    let _g = StopOnPanic(&sh.stop);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut seen = vec![0u64; sh.done.len()]; // highest version this reader has seen per key
    let mut checks = 0;
    while !sh.stop.load(SeqCst) {
        checks += 1;
        let s = rng.gen_range(0..SPACES);
        let (before, view, after, what);
        if rng.gen_bool(0.7) {
            let j = rng.gen_range(0..len(s));
            before = load(&sh.done, s);
            let got = db.get(key(s, j)).unwrap().map(|b| parse(&key(s, j), &b));
            after = load(&sh.started, s);
            what = "get".to_string();
            view = got.map(|x| (j, x)).into_iter().collect();
            check_key(s, j, got, before[j as usize], after[j as usize], &what);
        } else {
            let (a, b) = (rng.gen_range(0..=len(s)), rng.gen_range(0..=len(s)));
            let (whole, reverse) = (rng.gen_bool(0.2), rng.gen_bool(0.5));
            let r = if whole { 0..len(s) } else { a.min(b)..a.max(b) };
            what = format!("scan {}[{r:?}] reverse={reverse}", prefix(s));
            before = load(&sh.done, s);
            let it = if whole {
                db.prefix(prefix(s))
            } else {
                db.range(key(s, r.start)..key(s, r.end))
            };
            view = scan_view(it, reverse, s, &what);
            after = load(&sh.started, s);
            check_view(s, &view, &before, &after, r, &what);
        }
        for (j, x) in &view {
            let seen = &mut seen[slots(s).start + *j as usize];
            assert!(
                x.v >= *seen,
                "{what}: {}{j:04} went back from v{seen}",
                prefix(s)
            );
            *seen = x.v;
        }
    }
    checks
}

/// Takes snapshots, checks them like scans, and re-reads older ones (which live across many
/// flushes and compactions) to make sure they never change.
fn snapshotter(db: &Db, sh: &Shared, seed: u64) -> u64 {
    let _g = StopOnPanic(&sh.stop);
    let mut rng = StdRng::seed_from_u64(seed);
    let mut kept: Vec<(Snapshot, Vec<BTreeMap<u64, Val>>)> = Vec::new();
    let mut checks = 0;
    while !sh.stop.load(SeqCst) {
        let before: Vec<_> = (0..SPACES).map(|s| load(&sh.done, s)).collect();
        let snap = db.snapshot();
        let after: Vec<_> = (0..SPACES).map(|s| load(&sh.started, s)).collect();
        let mut views = Vec::new();
        for s in 0..SPACES {
            let view = scan_view(snap.prefix(prefix(s)), false, s, "snapshot");
            let (b, a) = (&before[s as usize], &after[s as usize]);
            check_view(s, &view, b, a, 0..len(s), "snapshot");
            views.push(view);
        }
        kept.push((snap, views));
        if kept.len() > 3 {
            kept.remove(0);
        }
        std::thread::sleep(Duration::from_millis(rng.gen_range(5..50)));
        for (snap, views) in &kept {
            checks += 1;
            for s in 0..SPACES {
                let rev = rng.gen_bool(0.5);
                let again = scan_view(snap.prefix(prefix(s)), rev, s, "snapshot rescan");
                assert!(
                    again == views[s as usize],
                    "snapshot {} changed, rev={rev}",
                    prefix(s)
                );
                let k = key(s, rng.gen_range(0..len(s)));
                let got = snap.get(&k).unwrap().map(|b| parse(&k, &b));
                let want = views[s as usize].get(&idx(&k)).copied();
                assert_eq!(got, want, "snapshot get {}", String::from_utf8_lossy(&k));
            }
        }
    }
    checks
}

/// Forces flushes and manual compactions of random ranges on top of the automatic ones.
fn maintainer(db: &Db, sh: &Shared, seed: u64) {
    let _g = StopOnPanic(&sh.stop);
    let mut rng = StdRng::seed_from_u64(seed);
    while !sh.stop.load(SeqCst) {
        std::thread::sleep(Duration::from_millis(rng.gen_range(50..300)));
        if rng.gen_bool(0.5) {
            db.flush().unwrap();
        } else {
            let s = rng.gen_range(0..SPACES);
            db.compact_range(key(s, 0)..key(s, rng.gen_range(1..=len(s))))
                .unwrap();
        }
    }
}

fn check_final(db: &Db, expected: &BTreeMap<Vec<u8>, Vec<u8>>) {
    for (k, v) in expected {
        let got = db.get(k).unwrap();
        assert!(
            got.as_deref() == Some(&v[..]),
            "final get {}",
            String::from_utf8_lossy(k)
        );
    }
    let all: BTreeMap<_, _> = common::collect(db.iter()).unwrap().into_iter().collect();
    assert!(
        &all == expected,
        "final scan: {} keys, {} expected",
        all.len(),
        expected.len()
    );
}

#[test]
fn concurrent_readers_writers_snapshots() {
    let secs = common::env_secs("STRATA_STRESS_SECS", 20);
    let seed = common::seed("stress");
    let dir = tempfile::tempdir().unwrap();
    let options = || Options {
        write_buffer_size: 16 << 10,
        max_bytes_for_level_base: 64 << 10,
        ..common::tiny_options(None)
    };
    let db = Db::open(dir.path(), options()).unwrap();
    let n = (WRITERS * (KEYS + CHURN)) as usize;
    let sh = Shared {
        started: (0..n).map(|_| AtomicU64::new(0)).collect(),
        done: (0..n).map(|_| AtomicU64::new(0)).collect(),
        stop: AtomicBool::new(false),
    };
    let started = Instant::now();
    let (expected, reads, snaps) = std::thread::scope(|sc| {
        let (db, sh) = (&db, &sh);
        let ws: Vec<_> = (0..WRITERS)
            .map(|w| sc.spawn(move || writer(db, sh, w, seed ^ w)))
            .collect();
        let rs: Vec<_> = (0..READERS)
            .map(|r| sc.spawn(move || reader(db, sh, seed ^ (100 + r))))
            .collect();
        let snaps = sc.spawn(move || snapshotter(db, sh, seed ^ 200));
        let maint = sc.spawn(move || maintainer(db, sh, seed ^ 300));
        while started.elapsed() < secs && !sh.stop.load(SeqCst) {
            std::thread::sleep(Duration::from_millis(100));
        }
        sh.stop.store(true, SeqCst);
        // A panicking thread's own message is printed above; these only propagate it.
        let mut expected = BTreeMap::new();
        for h in ws {
            expected.extend(h.join().expect("writer panicked"));
        }
        let reads: u64 = rs
            .into_iter()
            .map(|h| h.join().expect("reader panicked"))
            .sum();
        let snaps = snaps.join().expect("snapshot checker panicked");
        maint.join().expect("maintenance thread panicked");
        (expected, reads, snaps)
    });
    let st = db.stats();
    let files: Vec<_> = st.levels.iter().map(|l| l.files).collect();
    eprintln!(
        "stress: {:?}, {} live keys, {reads} reader checks, {snaps} snapshot checks, {} flushes, \
         {} compactions, {} stalls, files per level {files:?}",
        started.elapsed(),
        expected.len(),
        st.flushes,
        st.compactions,
        st.write_stalls,
    );
    assert!(
        reads > 100 && snaps > 10,
        "the run did too little to mean anything"
    );
    assert!(
        st.flushes > 10 && st.compactions > 0,
        "background work did not run"
    );
    check_final(&db, &expected);
    db.close().unwrap();
    let db = Db::open(dir.path(), options()).unwrap();
    check_final(&db, &expected);
}
