//! Histories of concurrent operations on a group of three `strata` processes, checked for
//! linearizability per key (Wing–Gong–Lowe, `testkit::linearizability`) while nodes are killed
//! and restarted: the multi-process version of raftlog/tests/linearizable.rs.
//!
//! Eight client threads put (unique values), read (`GET /kv`, linearizable by default: a
//! follower serves it at the leader's read index) and compare-and-set (`?if_version=`, mostly
//! from the version the client saw last) on four keys, each through a random live node
//! (followers forward writes). Meanwhile a nemesis kill -9s a node, every other time the one
//! that leads, and restarts it after 1–2 s on the same address and data directory; one node at
//! most is down, so a quorum always remains. A write answered 503, or not at all, is recorded
//! with an unknown outcome (it may still commit); a read without an answer observed nothing.
//! Once the group is whole again every node reads every key, which pins the last unknown
//! writes and checks the restarted nodes' state.
//!
//! A leader killed and restarted before the others elect one comes back as the leader of its
//! old term (openraft restores it at once); this test caught its linearizable reads going back
//! to what it had applied before the crash (see `raftlog::Replica::read_log_id`).
//!
//! The second test runs the same clients over 64 ranges (the group pre-split, one register
//! key per range), with some clients writing unique keys and a scanner paginating over every
//! range in both directions while the nemesis kills nodes and leaders move: every page must
//! come in order, no key twice, and every key acknowledged before the scan began must be in
//! it; once the cluster is whole every node scans everything again.
//!
//! `STRATA_CRASH_SECS` sets how long the clients run (default 15), `STRATA_SEED` replays the
//! clients' and the nemesis's choices (not their timing).

mod common;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{
    auth, init_group, request, restart_member, start_member, status, try_request,
    try_request_within, wait_for_leader, Node, Resp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use testkit::linearizability::{History, Op, Outcome};

const NODES: usize = 3;
const CLIENTS: usize = 8;
/// Items per scan page of the scanner: small, so pages end inside ranges and at their edges.
const SCAN_PAGE: usize = 13;
/// How long a client waits for an answer: a node killed under a request must not stall it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

/// Register `k` lives in range `k` of a cluster split at `r01`, `r02`, ...
fn path(k: u64) -> String {
    format!("/kv/r{k:02}/reg")
}

/// What the clients and the nemesis share.
struct Shared {
    /// Registers (and ranges) the clients use.
    keys: u64,
    /// Node `i + 1` listens on `addrs[i]`, before and after its restarts.
    addrs: Vec<SocketAddr>,
    /// Cleared just before the nemesis kills a node, set once it listens again.
    up: Vec<AtomicBool>,
    history: History<u64>,
    /// Answers a correct node never gives (anything but 200, 404, 409 and 503, or a 200 or 409
    /// without its version).
    odd: Mutex<Vec<String>>,
    /// Unique keys written for the scanner (when it runs): acknowledged, and ever tried.
    scan_keys: Option<Mutex<(BTreeSet<String>, BTreeSet<String>)>>,
    /// Scans completed (forward, reverse) and given up (a node died under one).
    scans: [AtomicUsize; 3],
}

impl Shared {
    fn odd(&self, what: String) -> Outcome {
        self.odd.lock().unwrap().push(what);
        Outcome::Unknown
    }
}

fn version(r: &Resp) -> Option<u64> {
    r.header("x-strata-version")?.parse().ok()
}

/// A linearizable read of key `k` through `addr`, recorded as one operation of `client`.
fn get(s: &Shared, client: usize, addr: SocketAddr, k: u64) -> Option<u64> {
    let p = s.history.invoke(client, k, Op::Get);
    let r = try_request_within(addr, "GET", &path(k), &[], b"", CLIENT_TIMEOUT);
    let mut seen = None;
    let outcome = match r {
        None => Outcome::Unknown,
        Some(r) => match (r.status, version(&r)) {
            (200, Some(v)) => {
                seen = Some(v);
                Outcome::Read(Some((v, r.body)))
            }
            (404, _) => Outcome::Read(None),
            (503, _) => Outcome::Unknown,
            (st, _) => s.odd(format!("GET {} via {addr}: {st} {}", path(k), r.text())),
        },
    };
    let unknown = outcome == Outcome::Unknown;
    s.history.complete(p, outcome);
    back_off_if(unknown);
    seen
}

/// After an unknown outcome (the node is down, or the group has no leader for a moment), waits
/// a little: retrying at once would only pile up unknown writes, which the checker must
/// consider pending forever.
fn back_off_if(unknown: bool) {
    if unknown {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A put of a unique key in range `k` for the scanner: recorded as tried, then acknowledged.
fn put_unique(
    s: &Shared,
    keys: &Mutex<(BTreeSet<String>, BTreeSet<String>)>,
    client: usize,
    addr: SocketAddr,
    k: u64,
    seq: u64,
) {
    let key = format!("r{k:02}/s-{client}-{seq}");
    keys.lock().unwrap().1.insert(key.clone());
    let r = try_request_within(
        addr,
        "PUT",
        &format!("/kv/{key}"),
        &auth(),
        b"x",
        CLIENT_TIMEOUT,
    );
    match r.map(|r| r.status) {
        Some(200) => {
            keys.lock().unwrap().0.insert(key);
        }
        Some(503) | None => back_off_if(true),
        Some(st) => {
            s.odd(format!("PUT {key} via {addr}: {st}"));
        }
    }
}

/// One random operation of `client`; `seen` is the last version it saw of each key (a CAS
/// mostly expects it, so that some succeed).
fn one_op(s: &Shared, client: usize, rng: &mut StdRng, seen: &mut [u64], seq: &mut u64) {
    let k = rng.gen_range(0..s.keys);
    let live: Vec<usize> = (0..NODES)
        .filter(|i| s.up[*i].load(Ordering::SeqCst))
        .collect();
    let addr = s.addrs[live[rng.gen_range(0..live.len())]];
    let roll = rng.gen_range(0..100);
    if let Some(keys) = s.scan_keys.as_ref().filter(|_| roll >= 80) {
        *seq += 1;
        put_unique(s, keys, client, addr, k, *seq);
        return;
    }
    if roll < 40 {
        if let Some(v) = get(s, client, addr, k) {
            seen[k as usize] = v;
        }
        return;
    }
    *seq += 1;
    let value = format!("c{client}-{seq}").into_bytes();
    let (query, op) = if roll < 70 {
        (
            String::new(),
            Op::Put {
                value: value.clone(),
            },
        )
    } else {
        let expected = if rng.gen_bool(0.8) {
            seen[k as usize]
        } else {
            0
        };
        (
            format!("?if_version={expected}"),
            Op::Cas {
                expected_version: expected,
                new: value.clone(),
            },
        )
    };
    let cas = matches!(op, Op::Cas { .. });
    let target = format!("{}{query}", path(k));
    if let Some(keys) = &s.scan_keys {
        keys.lock().unwrap().1.insert(path(k)[4..].to_string());
    }
    let p = s.history.invoke(client, k, op);
    let r = try_request_within(addr, "PUT", &target, &auth(), &value, CLIENT_TIMEOUT);
    let outcome = match r {
        // No answer (the node died, or took too long): the write may still commit.
        None => Outcome::Unknown,
        Some(r) => match (r.status, version(&r)) {
            (200, Some(v)) => {
                if let Some(keys) = &s.scan_keys {
                    keys.lock().unwrap().0.insert(path(k)[4..].to_string());
                }
                seen[k as usize] = v;
                if cas {
                    Outcome::CasApplied { version: v }
                } else {
                    Outcome::Written { version: v }
                }
            }
            (409, Some(_)) if cas => match r.json()["current_version"].as_u64() {
                Some(current) => {
                    seen[k as usize] = current;
                    Outcome::CasRejected {
                        current_version: current,
                    }
                }
                None => s.odd(format!("PUT {target} via {addr}: 409 {}", r.text())),
            },
            (503, _) => Outcome::Unknown,
            (st, _) => s.odd(format!("PUT {target} via {addr}: {st} {}", r.text())),
        },
    };
    let unknown = outcome == Outcome::Unknown;
    s.history.complete(p, outcome);
    back_off_if(unknown);
}

/// One full paginated scan through `addr`; `None` when a page got no answer (or a 503).
/// Checks as it goes that keys come in order, none twice.
fn scan_all(s: &Shared, addr: SocketAddr, reverse: bool) -> Option<Vec<String>> {
    let mut keys: Vec<String> = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q = format!("/kv?limit={SCAN_PAGE}&reverse={reverse}");
        if let Some(c) = &cursor {
            q.push_str(&format!("&cursor={c}"));
        }
        let r = try_request_within(addr, "GET", &q, &[], b"", CLIENT_TIMEOUT)?;
        if r.status == 503 {
            return None;
        }
        if r.status != 200 {
            s.odd(format!("GET {q} via {addr}: {} {}", r.status, r.text()));
            return None;
        }
        let page = r.json();
        for item in page["items"].as_array().into_iter().flatten() {
            let k = item["key"].as_str().unwrap_or_default().to_string();
            if let Some(last) = keys.last() {
                let ordered = if reverse { k < *last } else { k > *last };
                if !ordered {
                    s.odd(format!(
                        "scan via {addr} (reverse: {reverse}): {k:?} after {last:?}"
                    ));
                }
            }
            keys.push(k);
        }
        match page["cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => return Some(keys),
        }
    }
}

/// Checks a complete scan against the keys acknowledged before it began (all there) and the
/// keys ever tried (nothing else there).
fn check_scan(s: &Shared, what: &str, keys: &[String], acked_before: &BTreeSet<String>) {
    let Some(sk) = &s.scan_keys else { return };
    let tried = sk.lock().unwrap().1.clone();
    let got: BTreeSet<&String> = keys.iter().collect();
    if got.len() != keys.len() {
        s.odd(format!("{what}: a key came twice"));
    }
    if let Some(missing) = acked_before.iter().find(|k| !got.contains(k)) {
        s.odd(format!(
            "{what}: acknowledged key {missing:?} is missing ({} keys returned)",
            keys.len()
        ));
    }
    if let Some(extra) = got.iter().find(|k| !tried.contains(**k)) {
        s.odd(format!("{what}: key {extra:?} was never written"));
    }
}

/// Scans everything, alternating directions, through random live nodes until `end`.
fn scanner(s: &Shared, end: Instant, rng: &mut StdRng) {
    let mut reverse = false;
    while Instant::now() < end {
        let live: Vec<usize> = (0..NODES)
            .filter(|i| s.up[*i].load(Ordering::SeqCst))
            .collect();
        let addr = s.addrs[live[rng.gen_range(0..live.len())]];
        let Some(sk) = &s.scan_keys else { return };
        let before = sk.lock().unwrap().0.clone();
        match scan_all(s, addr, reverse) {
            Some(keys) => {
                check_scan(
                    s,
                    &format!("scan via {addr} (reverse: {reverse})"),
                    &keys,
                    &before,
                );
                s.scans[usize::from(reverse)].fetch_add(1, Ordering::SeqCst);
                reverse = !reverse;
            }
            None => {
                s.scans[2].fetch_add(1, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

/// The leader's index in `s.addrs`, as some live node reports it.
fn leader(s: &Shared) -> Option<usize> {
    (0..NODES)
        .filter(|i| s.up[*i].load(Ordering::SeqCst))
        .filter_map(|i| status(s.addrs[i])?["leader"].as_u64())
        .map(|id| id as usize - 1)
        .find(|i| *i < NODES)
}

/// Kills a node (every other time the leader) and restarts it 1–2 s later, until `end`; returns
/// (kills, kills of the leader). Every node is up when it returns.
fn nemesis(
    s: &Shared,
    nodes: &mut [Option<Node>],
    dirs: &[PathBuf],
    objects: &Path,
    end: Instant,
    rng: &mut StdRng,
) -> (usize, usize) {
    let (mut kills, mut leader_kills) = (0, 0);
    loop {
        std::thread::sleep(Duration::from_millis(rng.gen_range(500..1500)));
        if Instant::now() >= end {
            return (kills, leader_kills);
        }
        let the_leader = if kills % 2 == 0 { leader(s) } else { None };
        let victim = the_leader.unwrap_or_else(|| rng.gen_range(0..NODES));
        s.up[victim].store(false, Ordering::SeqCst);
        drop(nodes[victim].take()); // kill -9, and reap it
        kills += 1;
        leader_kills += usize::from(the_leader.is_some());
        std::thread::sleep(Duration::from_millis(rng.gen_range(1000..2000)));
        let id = victim as u64 + 1;
        nodes[victim] = Some(restart_member(id, &dirs[victim], objects, s.addrs[victim]));
        s.up[victim].store(true, Ordering::SeqCst);
    }
}

#[test]
fn concurrent_put_get_cas_on_crashing_processes_are_linearizable() {
    run(1, 4);
}

#[test]
fn sixty_four_ranges_on_crashing_processes_stay_linearizable_and_scan_every_key_once() {
    run(64, 64);
}

/// Splits the cluster at `r01`, `r02`, ... into `ranges` ranges through `addr`.
fn pre_split(addr: SocketAddr, ranges: u64) {
    for i in 1..ranges {
        let body = serde_json::json!({ "key": format!("r{i:02}") }).to_string();
        let r = request(addr, "POST", "/admin/split", &auth(), body.as_bytes());
        assert_eq!(r.status, 200, "split at r{i:02}: {}", r.text());
        assert_eq!(r.json()["split"], true, "{}", r.text());
    }
}

/// Waits until every node runs all `ranges` ranges with a leader each; returns how many each
/// node leads.
fn wait_for_ranges(addrs: &[SocketAddr], ranges: usize) -> Vec<usize> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let views: Vec<Option<serde_json::Value>> = addrs
            .iter()
            .map(|a| {
                let r = try_request(*a, "GET", "/admin/ranges", &auth(), b"")?;
                (r.status == 200).then(|| r.json())
            })
            .collect();
        let complete = views.iter().all(|v| {
            v.as_ref().is_some_and(|v| {
                let list = v["ranges"].as_array().map_or(&[][..], |a| a.as_slice());
                list.len() == ranges && list.iter().all(|r| r["leader"].as_u64().is_some())
            })
        });
        if complete {
            let first = views[0].as_ref().unwrap();
            let mut led = vec![0; addrs.len()];
            for r in first["ranges"].as_array().unwrap() {
                let l = r["leader"].as_u64().unwrap() as usize;
                led[l - 1] += 1;
            }
            return led;
        }
        assert!(
            Instant::now() < deadline,
            "the nodes do not all run {ranges} ranges with leaders"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn run(ranges: u64, keys: u64) {
    let secs = env_u64("STRATA_CRASH_SECS").unwrap_or(15);
    let seed = env_u64("STRATA_SEED").unwrap_or_else(rand::random);
    eprintln!("linearizable: STRATA_SEED={seed}");
    let began = Instant::now();
    let tmp = tempfile::tempdir().unwrap();
    let objects = tmp.path().join("objects");
    let dirs: Vec<PathBuf> = (1..=NODES)
        .map(|i| tmp.path().join(format!("n{i}")))
        .collect();
    let mut nodes: Vec<Option<Node>> = (0..NODES)
        .map(|i| {
            Some(start_member(
                i as u64 + 1,
                &dirs[i],
                &objects,
                "127.0.0.1:0",
            ))
        })
        .collect();
    let addrs: Vec<SocketAddr> = nodes.iter().flatten().map(|n| n.addr).collect();
    init_group(&addrs);
    wait_for_leader(&addrs, None);
    let splitting = Instant::now();
    pre_split(addrs[0], ranges);
    let led = wait_for_ranges(&addrs, ranges as usize);
    eprintln!(
        "linearizable: {ranges} ranges in {:.1} s; leaders per node {led:?}",
        splitting.elapsed().as_secs_f64()
    );
    if ranges >= 3 * NODES as u64 {
        assert!(
            led.iter().all(|n| *n > 0),
            "the leaders did not spread over the nodes: {led:?}"
        );
    }

    let s = Shared {
        keys,
        addrs: addrs.clone(),
        up: (0..NODES).map(|_| AtomicBool::new(true)).collect(),
        history: History::new(),
        odd: Mutex::new(Vec::new()),
        scan_keys: (ranges > 1).then(|| Mutex::new((BTreeSet::new(), BTreeSet::new()))),
        scans: Default::default(),
    };
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let (kills, leader_kills) = std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let s = &s;
            scope.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ client as u64);
                let mut seen = vec![0u64; keys as usize];
                let mut seq = 0;
                while Instant::now() < end {
                    one_op(s, client, &mut rng, &mut seen, &mut seq);
                }
            });
        }
        if s.scan_keys.is_some() {
            let s = &s;
            scope.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ 0x7363616e);
                scanner(s, end, &mut rng);
            });
        }
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6e656d65736973);
        nemesis(&s, &mut nodes, &dirs, &objects, end, &mut rng)
    });
    let ran = started.elapsed();

    // The group is whole again: every node reads every key.
    wait_for_leader(&addrs, None);
    for (i, addr) in addrs.iter().enumerate() {
        for k in 0..keys {
            get(&s, CLIENTS + i, *addr, k);
        }
    }
    // And scans everything both ways: every acknowledged key exactly once.
    if let Some(sk) = &s.scan_keys {
        let acked = sk.lock().unwrap().0.clone();
        for addr in &addrs {
            for reverse in [false, true] {
                let deadline = Instant::now() + Duration::from_secs(30);
                let keys = loop {
                    if let Some(k) = scan_all(&s, *addr, reverse) {
                        break k;
                    }
                    assert!(Instant::now() < deadline, "no complete scan via {addr}");
                    std::thread::sleep(Duration::from_millis(200));
                };
                check_scan(
                    &s,
                    &format!("final scan via {addr} (reverse: {reverse})"),
                    &keys,
                    &acked,
                );
            }
        }
        let [fwd, rev, aborted] = s.scans.each_ref().map(|a| a.load(Ordering::SeqCst));
        eprintln!(
            "linearizable: {} unique keys acknowledged; scans during the run: {fwd} forward, {rev} reverse complete, {aborted} cut by a kill",
            acked.len()
        );
        assert!(
            fwd + rev >= 2,
            "too few scans completed during the run: {fwd} + {rev}"
        );
    }

    let ops = s.history.len();
    let all: Vec<_> = s.history.by_key().into_values().flatten().collect();
    let count = |f: &dyn Fn(&Outcome) -> bool| all.iter().filter(|o| f(&o.outcome)).count();
    let known = count(&|o| *o != Outcome::Unknown);
    let reads = count(&|o| matches!(o, Outcome::Read(_)));
    let puts = count(&|o| matches!(o, Outcome::Written { .. }));
    let applied = count(&|o| matches!(o, Outcome::CasApplied { .. }));
    let rejected = count(&|o| matches!(o, Outcome::CasRejected { .. }));
    eprintln!(
        "linearizable: {ops} operations in {:.1} s on {keys} keys, {known} with known outcomes \
         ({reads} reads, {puts} puts, {applied} CAS applied, {rejected} CAS rejected); \
         {kills} kills ({leader_kills} of the leader)",
        ran.as_secs_f64()
    );
    let checking = Instant::now();
    if let Err((k, v)) = s.history.check() {
        panic!("key {}: history not linearizable: {v}", path(k));
    }
    eprintln!(
        "linearizable: checked in {:.1} s; {:.1} s in all",
        checking.elapsed().as_secs_f64(),
        began.elapsed().as_secs_f64()
    );
    let odd = s.odd.lock().unwrap();
    assert!(odd.is_empty(), "unexpected answers: {odd:#?}");
    assert!(known >= 100, "too few operations completed: {known}");
    assert!(
        applied > 0 && rejected > 0,
        "the compare-and-sets were not exercised: {applied} applied, {rejected} rejected"
    );
    assert!(
        kills >= 2 && leader_kills >= 1,
        "too few kills: {kills} ({leader_kills} of the leader)"
    );
}
