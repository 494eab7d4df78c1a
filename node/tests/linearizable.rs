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
//! `STRATA_CRASH_SECS` sets how long the clients run (default 15), `STRATA_SEED` replays the
//! clients' and the nemesis's choices (not their timing).

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use common::{
    auth, init_group, restart_member, start_member, status, try_request_within, wait_for_leader,
    Node, Resp,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use testkit::linearizability::{History, Op, Outcome};

const NODES: usize = 3;
const KEYS: u64 = 4;
const CLIENTS: usize = 8;
/// How long a client waits for an answer: a node killed under a request must not stall it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(5);

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|s| s.parse().ok())
}

fn path(k: u64) -> String {
    format!("/kv/reg-{k}")
}

/// What the clients and the nemesis share.
struct Shared {
    /// Node `i + 1` listens on `addrs[i]`, before and after its restarts.
    addrs: Vec<SocketAddr>,
    /// Cleared just before the nemesis kills a node, set once it listens again.
    up: Vec<AtomicBool>,
    history: History<u64>,
    /// Answers a correct node never gives (anything but 200, 404, 409 and 503, or a 200 or 409
    /// without its version).
    odd: Mutex<Vec<String>>,
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
            (st, _) => s.odd(format!("GET reg-{k} via {addr}: {st} {}", r.text())),
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

/// One random operation of `client`; `seen` is the last version it saw of each key (a CAS
/// mostly expects it, so that some succeed).
fn one_op(s: &Shared, client: usize, rng: &mut StdRng, seen: &mut [u64], seq: &mut u64) {
    let k = rng.gen_range(0..KEYS);
    let live: Vec<usize> = (0..NODES)
        .filter(|i| s.up[*i].load(Ordering::SeqCst))
        .collect();
    let addr = s.addrs[live[rng.gen_range(0..live.len())]];
    let roll = rng.gen_range(0..100);
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
    let p = s.history.invoke(client, k, op);
    let r = try_request_within(addr, "PUT", &target, &auth(), &value, CLIENT_TIMEOUT);
    let outcome = match r {
        // No answer (the node died, or took too long): the write may still commit.
        None => Outcome::Unknown,
        Some(r) => match (r.status, version(&r)) {
            (200, Some(v)) => {
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

    let s = Shared {
        addrs: addrs.clone(),
        up: (0..NODES).map(|_| AtomicBool::new(true)).collect(),
        history: History::new(),
        odd: Mutex::new(Vec::new()),
    };
    let started = Instant::now();
    let end = started + Duration::from_secs(secs);
    let (kills, leader_kills) = std::thread::scope(|scope| {
        for client in 0..CLIENTS {
            let s = &s;
            scope.spawn(move || {
                let mut rng = StdRng::seed_from_u64(seed ^ client as u64);
                let mut seen = vec![0u64; KEYS as usize];
                let mut seq = 0;
                while Instant::now() < end {
                    one_op(s, client, &mut rng, &mut seen, &mut seq);
                }
            });
        }
        let mut rng = StdRng::seed_from_u64(seed ^ 0x6e656d65736973);
        nemesis(&s, &mut nodes, &dirs, &objects, end, &mut rng)
    });
    let ran = started.elapsed();

    // The group is whole again: every node reads every key.
    wait_for_leader(&addrs, None);
    for (i, addr) in addrs.iter().enumerate() {
        for k in 0..KEYS {
            get(&s, CLIENTS + i, *addr, k);
        }
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
        "linearizable: {ops} operations in {:.1} s on {KEYS} keys, {known} with known outcomes \
         ({reads} reads, {puts} puts, {applied} CAS applied, {rejected} CAS rejected); \
         {kills} kills ({leader_kills} of the leader)",
        ran.as_secs_f64()
    );
    let checking = Instant::now();
    if let Err((k, v)) = s.history.check() {
        panic!("key reg-{k}: history not linearizable: {v}");
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
