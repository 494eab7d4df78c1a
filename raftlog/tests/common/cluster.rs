//! In-process Raft clusters over a test network that can drop, delay and partition messages.
//!
//! Every node has its own directory (log + engine) under one temporary root and shares one
//! object store, as the replicas of a group share a bucket. Stopping a node shuts its Raft down
//! and drops everything it held; starting it again reopens its directory, as a restarted process
//! would.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lsm::object::{FaultyStore, ObjectStore};
use openraft::{BasicNode, Config, ServerState, SnapshotPolicy};
use raftlog::inproc::Router;

use raftlog::store::{Command, Op, Reply};
use raftlog::{MaintainerOptions, Replica};

pub struct Cluster {
    pub router: Arc<Router>,
    pub root: tempfile::TempDir,
    pub objects: Arc<dyn ObjectStore>,
    pub config: Arc<Config>,
    pub nodes: BTreeMap<u64, Replica>,
    pub ids: Vec<u64>,
    /// Each node's view of the shared object store, through which a test can make one node's
    /// requests fail (kept across restarts). Injects nothing unless told to.
    pub faults: BTreeMap<u64, Arc<FaultyStore<Arc<dyn ObjectStore>>>>,
}

/// Raft timings for tests on a busy 2-core machine, snapshots driven by the maintainer, and the
/// log purged right up to each snapshot (so lagging nodes and learners go through snapshots).
pub fn test_config() -> Arc<Config> {
    let c = Config {
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: 0,
        ..Config::default()
    };
    Arc::new(c.validate().expect("valid raft config"))
}

impl Cluster {
    /// Starts nodes `1..=n` and makes them one group with every node a voter.
    pub async fn new(n: u64) -> Cluster {
        super::trace();
        let root = tempfile::tempdir().expect("temporary directory");
        let objects = super::object_store(&root.path().join("objects"));
        let mut c = Cluster {
            router: Arc::new(Router::default()),
            root,
            objects,
            config: test_config(),
            nodes: BTreeMap::new(),
            ids: (1..=n).collect(),
            faults: BTreeMap::new(),
        };
        for id in 1..=n {
            c.start(id).await;
        }
        let members: BTreeMap<u64, BasicNode> = (1..=n)
            .map(|id| (id, BasicNode::new(format!("node-{id}"))))
            .collect();
        c.node(1)
            .raft
            .initialize(members)
            .await
            .expect("initialize");
        c.leader(Duration::from_secs(20)).await;
        c
    }

    pub fn dir(&self, id: u64) -> PathBuf {
        self.root.path().join(format!("node-{id}"))
    }

    pub fn node(&self, id: u64) -> &Replica {
        self.nodes.get(&id).expect("node is running")
    }

    /// Opens node `id` from its directory (creating it on first start) and connects it.
    pub async fn start(&mut self, id: u64) {
        let dir = self.dir(id);
        let maintainer = MaintainerOptions {
            interval: Duration::from_millis(20),
            seal_bytes: 16 << 10,
            max_sealed: 4,
        };
        // A restarted node may find its files still locked for a moment while the stopped
        // instance's tasks let go of them.
        let deadline = Instant::now() + Duration::from_secs(10);
        let objects = self.objects.clone();
        let store = self
            .faults
            .entry(id)
            .or_insert_with(|| Arc::new(FaultyStore::new(objects, id)))
            .clone();
        let replica = loop {
            let engine = super::engine_options(store.clone());
            let net = self.router.factory(id);
            match Replica::start(
                id,
                &dir,
                engine,
                self.config.clone(),
                net,
                maintainer.clone(),
            )
            .await
            {
                Ok(r) => break r,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("node {id} did not start: {e}"),
            }
        };
        self.router.add(id, replica.raft.clone());
        self.nodes.insert(id, replica);
    }

    /// Stops node `id` as a crash would: its Raft stops, its in-memory state is dropped.
    pub async fn stop(&mut self, id: u64) {
        self.router.remove(id);
        if let Some(n) = self.nodes.remove(&id) {
            n.shutdown().await;
        }
    }

    pub fn running(&self) -> Vec<u64> {
        self.nodes.keys().copied().collect()
    }

    /// The leader the running nodes agree on, waiting up to `timeout`.
    pub async fn leader(&self, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let mut leaders = BTreeSet::new();
            for n in self.nodes.values() {
                let m = n.raft.metrics().borrow().clone();
                if m.state == ServerState::Leader {
                    leaders.insert((m.current_term, m.id));
                }
            }
            if let Some(&(_, id)) = leaders.iter().next_back() {
                return id;
            }
            assert!(Instant::now() < deadline, "no leader within {timeout:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Proposes `cmd` through whichever node leads, retrying until `timeout`.
    pub async fn write(&self, cmd: Command, timeout: Duration) -> (u64, Reply) {
        let deadline = Instant::now() + timeout;
        loop {
            let id = self
                .leader(deadline.saturating_duration_since(Instant::now()))
                .await;
            let r = tokio::time::timeout(
                Duration::from_secs(3),
                self.node(id).raft.client_write(cmd.clone()),
            )
            .await;
            if let Ok(Ok(resp)) = r {
                return (resp.log_id.index, resp.data);
            }
            assert!(
                Instant::now() < deadline,
                "write not committed within {timeout:?}: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until node `id` has applied `index`.
    pub async fn wait_applied(&self, id: u64, index: u64, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.node(id).sm.last_applied().map_or(0, |l| l.index) < index {
            assert!(
                Instant::now() < deadline,
                "node {id} did not apply {index} within {timeout:?} (applied {:?})",
                self.node(id).sm.last_applied()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Every live pair of node `id`'s engine.
    pub fn contents(&self, id: u64) -> Vec<(Vec<u8>, Vec<u8>)> {
        self.node(id)
            .sm
            .db()
            .iter()
            .map(|r| r.map(|(k, v)| (k.to_vec(), v.to_vec())))
            .collect::<Result<_, _>>()
            .expect("scan")
    }
}

pub fn put(key: impl Into<Vec<u8>>, value: impl Into<Vec<u8>>) -> Command {
    Command::Write {
        ops: vec![Op::Put {
            key: key.into(),
            value: value.into(),
        }],
        now_ms: now_ms(),
    }
}

pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
