//! Histories of concurrent operations on a 3-node cluster, checked for linearizability per key
//! (Wing–Gong–Lowe, `testkit::linearizability`). Eight clients put, read (linearizable reads:
//! the node confirms its leadership, then reads its state machine) and compare-and-set on four
//! keys, each time through some node that believes it leads, while the network drops and delays
//! messages, the leader is cut off (it goes on believing it leads for a while, and clients keep
//! using it), then stopped and restarted. Timed-out writes are recorded with unknown outcomes
//! (they may still commit); failed reads observed nothing and are dropped.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{now_ms, Cluster};
use raftlog::inproc::Faults;
use raftlog::store::{Command, Op, OpResult, Reply};
use rand::{Rng, SeedableRng};
use testkit::linearizability::{History, Op as LOp, Outcome};
use tokio::sync::RwLock;

const KEYS: u64 = 4;
const CLIENTS: usize = 8;

fn key(k: u64) -> Vec<u8> {
    format!("reg-{k}").into_bytes()
}

/// One client's operation; `seen` is the last version this client saw of `k` (a CAS mostly
/// expects it, so some succeed).
async fn one_op(
    c: &Cluster,
    h: &History<u64>,
    client: usize,
    rng: &mut rand::rngs::StdRng,
    seen: &mut [u64],
) {
    let k = rng.gen_range(0..KEYS);
    let Ok(leader) =
        tokio::time::timeout(Duration::from_secs(5), c.leader(Duration::from_secs(5))).await
    else {
        return;
    };
    let Some(node) = c.nodes.get(&leader) else {
        return;
    };
    let roll = rng.gen_range(0..100);
    if roll < 40 {
        let p = h.invoke(client, k, LOp::Get);
        let read =
            tokio::time::timeout(Duration::from_secs(2), node.raft.ensure_linearizable()).await;
        let outcome = match read {
            Ok(Ok(_)) => match node.sm.get(&key(k)) {
                Ok(v) => {
                    let v = v.map(|v| (v.version, v.value.to_vec()));
                    if let Some((ver, _)) = &v {
                        seen[k as usize] = *ver;
                    }
                    Outcome::Read(v)
                }
                Err(_) => Outcome::Unknown,
            },
            _ => Outcome::Unknown,
        };
        h.complete(p, outcome);
        return;
    }
    let value = format!("c{client}-{}", rng.gen::<u32>()).into_bytes();
    let (op, lop) = if roll < 70 {
        (
            Op::Put {
                key: key(k),
                value: value.clone(),
            },
            LOp::Put { value },
        )
    } else {
        let expected = if rng.gen_bool(0.8) {
            seen[k as usize]
        } else {
            0
        };
        (
            Op::CompareAndSet {
                key: key(k),
                expected_version: expected,
                new: Some(value.clone()),
                ttl_ms: None,
            },
            LOp::Cas {
                expected_version: expected,
                new: value,
            },
        )
    };
    let p = h.invoke(client, k, lop);
    let cmd = Command::Write {
        ops: vec![op],
        now_ms: now_ms(),
    };
    let r = tokio::time::timeout(Duration::from_secs(2), node.raft.client_write(cmd)).await;
    let outcome = match r {
        Ok(Ok(resp)) => match resp.data {
            Reply::Write(results) => match results.first() {
                Some(OpResult::Done { version }) => Outcome::Written { version: *version },
                Some(OpResult::Applied { version, .. }) => {
                    seen[k as usize] = *version;
                    Outcome::CasApplied { version: *version }
                }
                Some(OpResult::Rejected {
                    current_version, ..
                }) => {
                    seen[k as usize] = *current_version;
                    Outcome::CasRejected {
                        current_version: *current_version,
                    }
                }
                None => Outcome::Unknown,
            },
            _ => Outcome::Unknown,
        },
        // A timeout or an error: the entry may still commit.
        _ => Outcome::Unknown,
    };
    h.complete(p, outcome);
}

#[test]
fn concurrent_put_get_cas_histories_are_linearizable() {
    let secs = std::env::var("STRATA_STRESS_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(8u64);
    let seed: u64 = std::env::var("STRATA_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    eprintln!("linearizable: STRATA_SEED={seed}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let c = Arc::new(RwLock::new(Cluster::new(3).await));
        c.read().await.router.set_faults(Faults {
            drop_rate: 0.02,
            max_delay: Duration::from_millis(10),
            ..Faults::default()
        });
        let h = Arc::new(History::<u64>::new());
        let end = Instant::now() + Duration::from_secs(secs);
        let mut clients = Vec::new();
        for client in 0..CLIENTS {
            let (c, h) = (c.clone(), h.clone());
            clients.push(tokio::spawn(async move {
                let mut rng = rand::rngs::StdRng::seed_from_u64(seed ^ client as u64);
                let mut seen = vec![0u64; KEYS as usize];
                while Instant::now() < end {
                    let guard = c.read().await;
                    one_op(&guard, &h, client, &mut rng, &mut seen).await;
                }
            }));
        }
        // A quarter of the way in, cut the leader off (it keeps believing it leads for a while);
        // at half, heal and crash the leader; at three quarters, bring it back.
        let quarter = Duration::from_secs(secs) / 4;
        tokio::time::sleep(quarter).await;
        {
            let g = c.read().await;
            let old = g.leader(Duration::from_secs(10)).await;
            g.router.isolate(old, &g.ids);
        }
        tokio::time::sleep(quarter).await;
        c.read().await.router.heal();
        let victim = c.read().await.leader(Duration::from_secs(10)).await;
        c.write().await.stop(victim).await;
        tokio::time::sleep(quarter).await;
        c.write().await.start(victim).await;
        for t in clients {
            t.await.expect("client");
        }
        let ops = h.len();
        let by_key = h.by_key();
        let known = by_key
            .values()
            .flatten()
            .filter(|o| o.outcome != Outcome::Unknown)
            .count();
        eprintln!("linearizable: {ops} operations ({known} with known outcomes) on {KEYS} keys");
        assert!(known > 100, "too few operations completed: {known}");
        if let Err((k, v)) = h.check() {
            panic!("key {k}: history not linearizable: {v}");
        }
    });
}
