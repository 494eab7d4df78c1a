//! Crash safety of a whole replica (log, state machine, leader maintenance) with a real process
//! kill. The test re-executes its own binary as a child that runs a one-node group from a
//! directory and writes through Raft, one write at a time, printing `will N` before proposing
//! write N and `ack N` once `client_write` returned (the entry is committed and applied). Small
//! memtables make the child seal, build chunks, compact, snapshot and purge its log all the
//! time, so kills land in the middle of each.
//!
//! The parent SIGKILLs the child at a random moment, restarts the replica from the directory
//! in-process, waits for a linearizable read point, and checks every key: it holds the value of
//! the last acknowledged write to it, or that of the one write in flight. Then the next child
//! continues. `STRATA_CRASH_SECS` sets the loop's duration (default 10), `STRATA_SEED` replays.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::BasicNode;
use raftlog::inproc::Router;
use raftlog::store::{self, Op};
use raftlog::{MaintainerOptions, Replica};

const CHILD_DIR: &str = "RAFTLOG_NODE_CRASH_DIR";
const CHILD_START: &str = "RAFTLOG_NODE_CRASH_START";
const MARK: &str = "@@ ";
const KEYS: u64 = 300;

fn key(i: u64) -> Vec<u8> {
    format!("key-{:04}", i % KEYS).into_bytes()
}

fn value(i: u64) -> Vec<u8> {
    format!("write-{i}-{}", "x".repeat((i % 97) as usize)).into_bytes()
}

/// Opens the one-node group in `dir` and waits until it leads.
async fn open_node(dir: &Path) -> Replica {
    let objects = common::object_store(&dir.join("objects"));
    let router = Arc::new(Router::default());
    let maintainer = MaintainerOptions {
        interval: Duration::from_millis(10),
        seal_bytes: 16 << 10,
        max_sealed: 4,
    };
    let config = common::cluster::test_config();
    let engine = common::engine_options(objects);
    // The previous opener of `dir` (this process's verifier, before a new child) may still be
    // letting go of the engine's lock: a table build it began finishes on the blocking pool.
    let deadline = Instant::now() + Duration::from_secs(10);
    let node = loop {
        match Replica::start(
            1,
            dir,
            engine.clone(),
            config.clone(),
            router.factory(1),
            maintainer.clone(),
        )
        .await
        {
            Err(raftlog::Error::Engine(lsm::Error::Locked { .. })) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => break r.expect("start replica"),
        }
    };
    router.add(1, node.raft.clone());
    // A fresh directory needs the membership; a used one refuses it (already initialized).
    let _ = node
        .raft
        .initialize(BTreeMap::from([(1, BasicNode::new("node-1"))]))
        .await;
    node.raft
        .wait(Some(Duration::from_secs(30)))
        .current_leader(1, "leads")
        .await
        .expect("one node elects itself");
    node
}

/// The child's body; does nothing in a normal test run (the variable is absent).
#[test]
fn node_crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let start: u64 = std::env::var(CHILD_START).unwrap().parse().unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let node = open_node(Path::new(&dir)).await;
        let mut out = std::io::stdout().lock();
        let mut say = |line: String| {
            writeln!(out, "{MARK}{line}").unwrap();
            out.flush().unwrap();
        };
        // Only a guard against a parent that died without killing us.
        let deadline = Instant::now() + Duration::from_secs(120);
        let mut i = start;
        while Instant::now() < deadline {
            say(format!("will {i}"));
            let cmd = store::Command::Write {
                ops: vec![Op::Put {
                    key: key(i),
                    value: value(i),
                }],
                now_ms: common::cluster::now_ms(),
            };
            node.raft.client_write(cmd).await.expect("child: write");
            say(format!("ack {i}"));
            i += 1;
        }
    });
    panic!("child: not killed within its deadline");
}

/// What the child said: the last write acknowledged, and the last one proposed.
#[derive(Default)]
struct Run {
    acked: Option<u64>,
    will: Option<u64>,
}

fn run_child(dir: &Path, start: u64, kill_after: Duration) -> Run {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "node_crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_START, start.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn child");
    let stdout = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut run = Run::default();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let Some(pos) = line.find(MARK) else { continue };
            let mut parts = line[pos + MARK.len()..].split(' ');
            let (what, n) = (parts.next(), parts.next().and_then(|n| n.parse().ok()));
            match (what, n) {
                (Some("will"), Some(n)) => run.will = Some(n),
                (Some("ack"), Some(n)) => run.acked = Some(n),
                _ => {}
            }
        }
        run
    });
    std::thread::sleep(kill_after);
    if let Some(status) = child.try_wait().unwrap() {
        panic!("child exited on its own: {status:?}");
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.signal(), Some(9), "child not killed by SIGKILL");
    reader.join().expect("stdout reader")
}

/// Restarts the replica and checks every key: it holds the value of the last write to it known
/// to have been applied (`model`: key -> write), or that of the write in flight. Returns whether
/// the write in flight landed. (Anything the killed child had in its log is committed by the
/// restarted node before the read point, so what is not found now is gone for good.)
async fn verify(dir: &Path, model: &BTreeMap<u64, u64>, in_flight: Option<u64>) -> bool {
    let node = open_node(dir).await;
    node.raft.ensure_linearizable().await.expect("read point");
    let mut landed = false;
    for k in 0..KEYS {
        let got = node
            .sm
            .get(&key(k))
            .expect("read")
            .map(|v| v.value.to_vec());
        let want = model.get(&k).copied();
        let flight = in_flight.filter(|w| w % KEYS == k);
        match (&got, want, flight) {
            (Some(g), _, Some(w)) if *g == value(w) => landed = true,
            (Some(g), Some(a), _) if *g == value(a) => {}
            (None, None, _) => {}
            _ => panic!(
                "key {k}: found {:?}, last applied write {want:?}, in flight {flight:?}",
                got.map(|g| String::from_utf8_lossy(&g[..20.min(g.len())]).into_owned())
            ),
        }
    }
    node.shutdown().await;
    landed
}

#[test]
fn a_killed_replica_loses_no_committed_write() {
    let env = |n: &str| std::env::var(n).ok().and_then(|s| s.parse::<u64>().ok());
    let secs = env("STRATA_CRASH_SECS").unwrap_or(10);
    let seed = env("STRATA_SEED").unwrap_or_else(rand::random::<u64>);
    eprintln!("node_crash: STRATA_SEED={seed}");
    let mut rng = <rand::rngs::StdRng as rand::SeedableRng>::seed_from_u64(seed);
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut model = BTreeMap::new();
    let (mut next, mut kills, mut acked_total) = (0u64, 0u64, 0u64);
    while Instant::now() < deadline || kills < 3 {
        let kill_after = Duration::from_millis(rand::Rng::gen_range(&mut rng, 700..2500));
        let run = run_child(dir, next, kill_after);
        kills += 1;
        if let Some(a) = run.acked {
            for i in next..=a {
                model.insert(i % KEYS, i);
            }
            acked_total += a + 1 - next;
        }
        let in_flight = run.will.filter(|&w| Some(w) != run.acked);
        if rt.block_on(verify(dir, &model, in_flight)) {
            let w = in_flight.expect("landed implies in flight");
            model.insert(w % KEYS, w);
        }
        // Never reuse the index of the write in flight, landed or not.
        next = run.will.map_or(next, |w| w + 1);
    }
    eprintln!("node_crash: {kills} kills, {acked_total} acknowledged writes, none lost");
    assert!(acked_total > 0, "the children acknowledged nothing");
}
