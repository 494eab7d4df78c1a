//! The group under test: three nodes in one process, each with its own Raft log and engine in
//! real files (log appends are synced by each node's group commit), talking through raftlog's in-process router, and
//! sharing one object store in a local directory as the replicas of a group share a bucket.
//!
//! Every node runs the [`Maintainer`], as a deployed node would: the leader seals full
//! memtables, builds them into tables and compacts, and every replica snapshots and purges its
//! log behind the flushed point, so the log I/O measured includes that background work.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use lsm::object::{LocalDirStore, ObjectStore};
use openraft::storage::RaftStateMachine;
use openraft::{BasicNode, Config, Raft, ServerState, SnapshotPolicy};
use raftlog::inproc::Router;
use raftlog::store::{Command, Reply, TypeConfig};
use raftlog::{LogStats, MaintainerOptions, Replica};

use super::args::RaftArgs;
use super::results::LogSummary;
use crate::measure::disk_usage;

/// Voters of the group.
pub const NODES: u64 = 3;
/// How long a leader may take to appear (first election, or after a leader change).
const ELECTION_WAIT: Duration = Duration::from_secs(20);
/// How long one write may keep failing over to new leaders before the run gives up.
const WRITE_DEADLINE: Duration = Duration::from_secs(20);
/// Entries a purge leaves behind the snapshot (openraft's default), so that a briefly lagging
/// follower catches up from the log rather than by installing a snapshot.
pub const KEEP_BEHIND_SNAPSHOT: u64 = 1000;

pub struct Cluster {
    /// By node id, `1..=NODES`.
    nodes: BTreeMap<u64, Replica>,
    root: PathBuf,
    /// Kept so the nodes stay reachable for as long as the cluster lives.
    _router: Arc<Router>,
}

/// Raft timings with room for a busy 2-core machine (an fsync stuck behind a build must not
/// look like a dead leader); snapshots only when the maintainer asks for one, after a flush.
fn raft_config() -> Result<Arc<Config>> {
    let c = Config {
        cluster_name: "strata-bench".into(),
        heartbeat_interval: 100,
        election_timeout_min: 400,
        election_timeout_max: 800,
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: KEEP_BEHIND_SNAPSHOT,
        ..Config::default()
    };
    Ok(Arc::new(
        c.validate().context("validating the Raft config")?,
    ))
}

impl Cluster {
    /// Starts nodes `1..=NODES` under `root`, makes them one group of voters and waits for a
    /// leader. Must run inside a tokio runtime (the maintainers are tasks).
    pub async fn start(root: &Path, args: &RaftArgs) -> Result<Cluster> {
        let objects_dir = root.join("objects");
        let objects: Arc<dyn ObjectStore> = Arc::new(
            LocalDirStore::open(&objects_dir)
                .with_context(|| format!("opening the object store {}", objects_dir.display()))?,
        );
        let config = raft_config()?;
        let router = Arc::new(Router::default());
        let mut nodes = BTreeMap::new();
        for id in 1..=NODES {
            let dir = root.join(format!("node-{id}"));
            let options = lsm::Options {
                write_buffer_size: args.memtable_bytes(),
                cold_tier: Some(lsm::ColdTier::new(objects.clone(), "group-1")),
                ..lsm::Options::default()
            };
            let maintainer = MaintainerOptions {
                seal_bytes: args.memtable_bytes(),
                ..MaintainerOptions::default()
            };
            let replica = Replica::start(
                id,
                &dir,
                options,
                config.clone(),
                router.factory(id),
                maintainer,
            )
            .await
            .with_context(|| format!("starting node {id}"))?;
            router.add(id, replica.raft.clone());
            nodes.insert(id, replica);
        }
        let cluster = Cluster {
            nodes,
            root: root.to_path_buf(),
            _router: router,
        };
        let members: BTreeMap<u64, BasicNode> = (1..=NODES)
            .map(|id| (id, BasicNode::new(format!("node-{id}"))))
            .collect();
        cluster
            .node(1)?
            .raft
            .initialize(members)
            .await
            .context("initializing the group")?;
        cluster.leader().await?;
        Ok(cluster)
    }

    pub fn node(&self, id: u64) -> Result<&Replica> {
        self.nodes
            .get(&id)
            .with_context(|| format!("no node {id} in the group"))
    }

    /// The leader of the highest term any node knows of, waiting for an election if needed.
    pub async fn leader(&self) -> Result<u64> {
        find_leader(self.nodes.values().map(|n| &n.raft)).await
    }

    /// A handle the clients write through.
    pub fn writer(&self, leader: u64) -> Writer {
        Writer {
            rafts: Arc::new(
                self.nodes
                    .iter()
                    .map(|(&id, n)| (id, n.raft.clone()))
                    .collect(),
            ),
            leader: Arc::new(AtomicU64::new(leader)),
        }
    }

    /// Counters of node `id`'s log since it was opened.
    pub fn log_stats(&self, id: u64) -> Result<LogStats> {
        self.node(id)?
            .log
            .with_log(|l| l.stats())
            .map_err(|e| anyhow!("reading the log stats of node {id}: {e}"))
    }

    /// `fdatasync`s node `id`'s log group commit made so far.
    pub fn log_syncs(&self, id: u64) -> Result<u64> {
        Ok(self.node(id)?.log.syncs())
    }

    /// What node `id` keeps of its log, its last snapshot, and the files of the run.
    pub async fn log_summary(&self, id: u64) -> Result<LogSummary> {
        let node = self.node(id)?;
        let m = node.raft.metrics().borrow().clone();
        let (first_index, last_index) = node
            .log
            .with_log(|l| (l.first_index(), l.last_index()))
            .map_err(|e| anyhow!("reading the log bounds of node {id}: {e}"))?;
        let snapshot = node
            .sm
            .clone()
            .get_current_snapshot()
            .await
            .map_err(|e| anyhow!("reading node {id}'s current snapshot: {e}"))?;
        let status = node.sm.db().replica_status();
        let dir = self.root.join(format!("node-{id}"));
        Ok(LogSummary {
            node: id,
            last_log_index: m.last_log_index,
            purged_index: m.purged.map(|p| p.index),
            first_index_kept: first_index,
            entries_kept: match (first_index, last_index) {
                (Some(f), Some(l)) => l + 1 - f,
                _ => 0,
            },
            log_bytes: disk_usage(&dir.join("log"))?.apparent_bytes,
            flushed_index: node.sm.flushed().map(|l| l.index),
            memtable_bytes: status.active_bytes + status.sealed_bytes,
            snapshot_index: snapshot
                .as_ref()
                .and_then(|s| s.meta.last_log_id.map(|l| l.index)),
            snapshot_bytes: snapshot.map(|s| s.snapshot.get_ref().len() as u64),
            object_store_bytes: disk_usage(&self.root.join("objects"))?.apparent_bytes,
        })
    }

    /// Shuts every node's Raft down (the maintainers stop with it); every node is tried even
    /// when one fails.
    pub async fn shutdown(self) -> Result<()> {
        let mut first_error = None;
        for (id, node) in self.nodes {
            if let Err(e) = node.raft.shutdown().await {
                first_error.get_or_insert(anyhow!("shutting down node {id}: {e}"));
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

async fn find_leader<'a>(rafts: impl Iterator<Item = &'a Raft<TypeConfig>> + Clone) -> Result<u64> {
    let deadline = Instant::now() + ELECTION_WAIT;
    loop {
        let best = rafts
            .clone()
            .map(|r| r.metrics().borrow().clone())
            .filter(|m| m.state == ServerState::Leader)
            .max_by_key(|m| m.current_term);
        if let Some(m) = best {
            return Ok(m.id);
        }
        if Instant::now() >= deadline {
            bail!("no leader elected within {ELECTION_WAIT:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Proposes writes through the leader: the one found last, until a node answers that another
/// leads (ForwardToLeader), then the one it names or, without a name, the next one elected.
#[derive(Clone)]
pub struct Writer {
    rafts: Arc<BTreeMap<u64, Raft<TypeConfig>>>,
    leader: Arc<AtomicU64>,
}

impl Writer {
    /// Proposes `cmd` and returns once it is committed and applied on the leader, with the
    /// number of times it had to be sent again to another node.
    pub async fn write(&self, cmd: Command) -> Result<u64> {
        let deadline = Instant::now() + WRITE_DEADLINE;
        let mut redirects = 0;
        loop {
            let id = self.leader.load(Ordering::Relaxed);
            let raft = self
                .rafts
                .get(&id)
                .with_context(|| format!("no node {id} to write to"))?;
            let written = tokio::time::timeout(WRITE_DEADLINE, raft.client_write(cmd.clone()))
                .await
                .with_context(|| {
                    format!("a write through node {id} was not committed within {WRITE_DEADLINE:?}")
                })?;
            let err = match written {
                Ok(resp) => match resp.data {
                    Reply::Write(_) => return Ok(redirects),
                    other => bail!("a put was not applied as a write: {other:?}"),
                },
                Err(e) => e,
            };
            let Some(forward) = err.forward_to_leader::<BasicNode>() else {
                return Err(anyhow::Error::new(err)).context(format!("writing through node {id}"));
            };
            if Instant::now() >= deadline {
                bail!("a write found no leader within {WRITE_DEADLINE:?} (last: {forward})");
            }
            let next = match forward.leader_id {
                Some(next) if next != id => next,
                // No leader known yet: give the election a moment, then ask the metrics.
                _ => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    find_leader(self.rafts.values()).await?
                }
            };
            // Another client may already have moved it on; either answer is a leader's.
            self.leader.store(next, Ordering::Relaxed);
            redirects += 1;
        }
    }
}
