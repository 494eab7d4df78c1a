//! One range's replica on this node, with what drives it: the batcher of its writes, the read
//! indexes of its linearizable reads, its leader lease, and its per-range figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use std::collections::{BTreeMap, BTreeSet};

use axum::http::StatusCode;
use openraft::error::{InitializeError, InstallSnapshotError, RaftError};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, ClientWriteResponse, InstallSnapshotRequest,
    InstallSnapshotResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftMetrics};
use raftlog::store::{Command, Op, OpResult, Reply};
use raftlog::{RangeDescriptor, Replica};

use crate::api::error::ApiError;
use crate::cluster::batcher::Batcher;
use crate::cluster::lease::Leases;
use crate::cluster::reads::ReadIndex;
use crate::ops::read_pool::ReadPool;
use crate::transport::client::Peers;

/// Sealed memtables waiting for upload before the leader stops sealing (and writes are refused
/// once the memtables also exceed their budget).
pub const MAX_SEALED: usize = 4;

/// The `error` of an answer saying the request met a range that no longer holds its key (or
/// another epoch): the router tries again with a fresh picture.
pub const WRONG_RANGE: &str = "wrong_range";

/// Why a membership change failed.
type MembershipError = RaftError<u64, openraft::error::ClientWriteError<u64, BasicNode>>;

/// A retryable refusal carrying the range as the replica knows it.
pub fn wrong_range(desc: Option<&RangeDescriptor>) -> ApiError {
    let mut e = ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        WRONG_RANGE,
        "the key's range changed while the request was routed; retry",
    );
    e.extra = Some(serde_json::json!({ "range": desc.map(crate::api::admin::range_json) }));
    e.retry_after = Some(1);
    e
}

/// A replica of one range on this node.
pub struct Range {
    id: u64,
    /// Only the cluster layer touches the replica; the API and operations layers use the
    /// methods below.
    pub(in crate::cluster) replica: Arc<Replica>,
    peers: Peers,
    batcher: Batcher,
    reads: ReadIndex,
    leases: Arc<Leases>,
    /// Bytes in memtables beyond which writes are refused (see [`Range::admit_write`]).
    backlog_limit: usize,
    /// Client writes and reads served through this node, for per-range rates.
    pub writes: AtomicU64,
    pub reads_served: AtomicU64,
    /// Writes and reads per second over the last sampling interval.
    rates: std::sync::Mutex<Rates>,
    /// The node lost its data and this replica has not been a learner since: it must neither
    /// vote nor campaign (see [`crate::cluster::identity`]).
    rejoining: std::sync::atomic::AtomicBool,
}

#[derive(Clone, Copy)]
struct Rates {
    at: std::time::Instant,
    writes: u64,
    reads: u64,
    writes_per_sec: f64,
    reads_per_sec: f64,
}

impl Range {
    /// Wraps a started replica of range `id`, spawning its batcher and read-index tasks.
    pub fn new(
        id: u64,
        replica: Arc<Replica>,
        peers: Peers,
        leases: Arc<Leases>,
        confirmer: Arc<crate::cluster::confirm::Confirmer>,
        backlog_limit: usize,
    ) -> Range {
        Range {
            id,
            batcher: Batcher::spawn(replica.raft.clone(), peers.clone(), id),
            reads: ReadIndex::spawn(replica.clone(), id, leases.clone(), confirmer),
            replica,
            peers,
            leases,
            backlog_limit,
            writes: AtomicU64::new(0),
            reads_served: AtomicU64::new(0),
            rates: std::sync::Mutex::new(Rates {
                at: std::time::Instant::now(),
                writes: 0,
                reads: 0,
                writes_per_sec: 0.0,
                reads_per_sec: 0.0,
            }),
            rejoining: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// Whether this replica rejoins after the node lost its data (no vote, no campaign).
    pub fn rejoining(&self) -> bool {
        self.rejoining.load(Ordering::SeqCst)
    }

    pub(in crate::cluster) fn set_rejoining(&self, on: bool) {
        self.rejoining.store(on, Ordering::SeqCst);
    }

    /// Takes a sample of the write and read counters (called about once a second).
    pub fn sample_rates(&self) {
        let mut r = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        let secs = r.at.elapsed().as_secs_f64();
        if secs < 0.5 {
            return;
        }
        let (w, rd) = (
            self.writes.load(Ordering::Relaxed),
            self.reads_served.load(Ordering::Relaxed),
        );
        r.writes_per_sec = w.saturating_sub(r.writes) as f64 / secs;
        r.reads_per_sec = rd.saturating_sub(r.reads) as f64 / secs;
        r.writes = w;
        r.reads = rd;
        r.at = std::time::Instant::now();
    }

    /// Writes and reads per second through this node, as last sampled.
    pub fn rates(&self) -> (f64, f64) {
        let r = self.rates.lock().unwrap_or_else(|p| p.into_inner());
        (r.writes_per_sec, r.reads_per_sec)
    }

    /// Raft's figures for this replica, as of now (a copy).
    pub fn raft_metrics(&self) -> RaftMetrics<u64, BasicNode> {
        self.replica.raft.metrics().borrow().clone()
    }

    /// Whether this replica leads its range now.
    pub fn leads(&self) -> bool {
        self.replica.raft.metrics().borrow().state == openraft::ServerState::Leader
    }

    /// Why this replica's Raft stopped, if it did (a log write failed, say): fatal to the node.
    pub fn fatal(&self) -> Option<String> {
        let m = self.replica.raft.metrics();
        let running = m.borrow().running_state.clone();
        running.err().map(|e| e.to_string())
    }

    /// The range as this replica applied it, shared (see [`Range::descriptor`]).
    pub fn descriptor_arc(&self) -> Option<Arc<RangeDescriptor>> {
        self.replica.sm.range_arc()
    }

    /// The last entry applied here.
    pub fn last_applied_index(&self) -> Option<u64> {
        self.replica.sm.last_applied().map(|l| l.index)
    }

    /// Up to where every write is in the tables.
    pub fn flushed_index(&self) -> Option<u64> {
        self.replica.sm.flushed().map(|l| l.index)
    }

    /// Sealed memtables waiting for their tables, and bytes in all memtables.
    pub fn backlog(&self) -> (usize, usize) {
        self.replica.sm.backlog()
    }

    /// Whether apply waits for the object store now, and since when.
    pub fn apply_stall(&self) -> Option<raftlog::ApplyStall> {
        self.replica.sm.apply_stall()
    }

    /// Entries whose apply had to wait for the object store.
    pub fn stalled_entries(&self) -> u64 {
        self.replica.sm.stalled_entries()
    }

    /// fdatasync calls of this replica's log.
    pub fn log_syncs(&self) -> u64 {
        self.replica.log.syncs()
    }

    /// Where this replica's log lives.
    pub fn log_dir(&self) -> Option<std::path::PathBuf> {
        self.replica.log.with_log(|l| l.dir().to_path_buf()).ok()
    }

    /// Bytes of this replica's snapshot (the manifest image: tables, not their data).
    pub fn snapshot_bytes(&self) -> usize {
        self.replica.sm.db().export_image().encode().len()
    }

    /// The engine's counters and shape.
    pub fn engine_stats(&self) -> lsm::Stats {
        self.replica.sm.db().stats()
    }

    /// Reads `key` as this replica applied it: at once when memory answers (memtables,
    /// filters, cached blocks), else on the read pool under its deadline. Refused
    /// ([`WRONG_RANGE`]) when the range no longer holds the key, judged after the read: a split
    /// applied before it moved the key.
    pub async fn get(
        &self,
        key: Vec<u8>,
        pool: &ReadPool,
    ) -> Result<Option<raftlog::Versioned>, ApiError> {
        let failed = |e: raftlog::Error| ApiError::unavailable(format!("read failed: {e}"));
        self.reads_served.fetch_add(1, Ordering::Relaxed);
        let v = match self.replica.sm.get_without_io(&key) {
            Some(r) => r.map_err(failed)?,
            None => {
                let replica = self.replica.clone();
                let k = key.clone();
                pool.run(move || replica.sm.get(&k).map_err(failed)).await?
            }
        };
        self.holds(&key)?;
        Ok(v)
    }

    /// Runs `read` over this replica's engine on the read pool (scans: iterators may fetch
    /// blocks from the object store).
    pub async fn read_engine<T: Send + 'static>(
        &self,
        pool: &ReadPool,
        read: impl FnOnce(&lsm::Db) -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let replica = self.replica.clone();
        pool.run(move || read(replica.sm.db())).await
    }

    /// Forms the range's group with `members` (openraft's `initialize`; `/admin/init`).
    pub async fn initialize(
        &self,
        members: BTreeMap<u64, BasicNode>,
    ) -> Result<(), RaftError<u64, InitializeError<u64, BasicNode>>> {
        self.replica.raft.initialize(members).await
    }

    /// Adds `id` at `addr` as a learner, returning once it caught up.
    pub async fn add_learner(
        &self,
        id: u64,
        addr: String,
    ) -> Result<ClientWriteResponse<raftlog::store::TypeConfig>, MembershipError> {
        self.replica
            .raft
            .add_learner(id, BasicNode::new(addr), true)
            .await
    }

    /// Makes `voters` the voters (keeping the others as learners when `retain`).
    pub async fn change_membership(
        &self,
        voters: BTreeSet<u64>,
        retain: bool,
    ) -> Result<ClientWriteResponse<raftlog::store::TypeConfig>, MembershipError> {
        self.replica.raft.change_membership(voters, retain).await
    }

    /// Waits up to `timeout` for this replica to apply up to `index`; false if it did not.
    pub async fn wait_applied(&self, index: u64, timeout: std::time::Duration) -> bool {
        self.replica
            .raft
            .wait(Some(timeout))
            .applied_index_at_least(Some(index), "applied")
            .await
            .is_ok()
    }

    /// Hands a Raft message from a peer to this replica's Raft.
    pub async fn append_entries(
        &self,
        req: AppendEntriesRequest<raftlog::store::TypeConfig>,
    ) -> Result<AppendEntriesResponse<u64>, RaftError<u64>> {
        self.replica.raft.append_entries(req).await
    }

    /// A refusal of a vote request, made with this replica's own vote and last log id (as
    /// openraft refuses within a leader's lease).
    pub async fn refusal(&self) -> Result<VoteResponse<u64>, ApiError> {
        use openraft::storage::RaftLogStorage;
        let vote = self.replica.raft.metrics().borrow().vote;
        let last = self
            .replica
            .log
            .clone()
            .get_log_state()
            .await
            .map_err(|e| ApiError::unavailable(format!("reading the log state: {e}")))?
            .last_log_id;
        Ok(VoteResponse::new(vote, last, false))
    }

    /// The vote this replica has persisted (what it answers a leader's confirmation with: see
    /// [`crate::cluster::confirm`]).
    pub async fn persisted_vote(&self) -> Option<openraft::Vote<u64>> {
        self.replica.log.saved_vote().await.ok().flatten()
    }

    /// See [`Range::append_entries`].
    pub async fn vote(&self, req: VoteRequest<u64>) -> Result<VoteResponse<u64>, RaftError<u64>> {
        self.replica.raft.vote(req).await
    }

    /// See [`Range::append_entries`].
    pub async fn install_snapshot(
        &self,
        req: InstallSnapshotRequest<raftlog::store::TypeConfig>,
    ) -> Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>> {
        self.replica.raft.install_snapshot(req).await
    }

    /// The range's id.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The range as this replica applied it (`None`: created empty, no snapshot yet).
    pub fn descriptor(&self) -> Option<RangeDescriptor> {
        self.replica.sm.range()
    }

    /// Shared leadership confirmations of linearizable reads.
    pub fn reads(&self) -> &ReadIndex {
        &self.reads
    }

    /// Group commit of client writes.
    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    /// Refuses a write (503, retry later) while the tables fall behind: sealed memtables wait to
    /// be built and uploaded (say, the object store is slow or down) and the memtables hold more
    /// than the limit. Without this, memory grows with every write until the process dies.
    pub fn admit_write(&self) -> Result<(), ApiError> {
        let (sealed, bytes) = self.replica.sm.backlog();
        if sealed >= MAX_SEALED && bytes >= self.backlog_limit {
            let mut e = ApiError::unavailable(format!(
                "overloaded: {sealed} memtables ({} MiB) of range {} wait to be written to the object store; retry later",
                bytes >> 20,
                self.id
            ));
            e.retry_after = Some(1);
            return Err(e);
        }
        Ok(())
    }

    /// Proposes `ops` through the batcher (one unit, in one entry, applied in order).
    pub async fn write(&self, ops: Vec<Op>) -> Result<Vec<OpResult>, ApiError> {
        self.admit_write()?;
        self.writes.fetch_add(ops.len() as u64, Ordering::Relaxed);
        self.batcher.write(ops).await
    }

    /// Proposes `cmd` on the range's leader, here or through the network, and returns its
    /// reply. A 503 means the outcome is unknown (the write may still commit).
    pub async fn propose(&self, cmd: Command) -> Result<Reply, ApiError> {
        self.admit_write()?;
        crate::cluster::forward::propose_with(&self.replica.raft, &self.peers, self.id, cmd).await
    }

    /// Whether this node may serve a read of this range from its state machine right now
    /// without asking anyone: it leads, holds a lease (a quorum acknowledged heartbeats recent
    /// enough that no other leader can have been elected), and has applied the first entry of
    /// its term (so every write committed before its term is in its state machine) and all of
    /// the log it restarted with (see [`raftlog::Replica::read_log_id`]). `Ok` is the index the
    /// state machine must have applied before the read (every commit index sent to a
    /// follower); `Err` says why no lease read may be served.
    pub fn lease_read(&self) -> Result<u64, &'static str> {
        let (me, vote, configs) = {
            let m = self.replica.raft.metrics();
            let m = m.borrow();
            if m.state != openraft::ServerState::Leader || !m.vote.committed {
                return Err("this node does not lead");
            }
            let configs = m.membership_config.membership().get_joint_config().clone();
            (m.id, m.vote, configs)
        };
        match self.leases.expiry(me, &vote, &configs) {
            Some(until) if until > std::time::Instant::now() => {}
            _ => return Err("no quorum acknowledged a recent heartbeat"),
        }
        let applied = self.replica.sm.last_applied();
        let term = applied.map(|l| l.leader_id.term);
        if term != Some(vote.leader_id.term)
            || applied.map_or(0, |l| l.index) < self.replica.start_log_index()
        {
            return Err("the leader has not applied its term's first entry yet");
        }
        Ok(self.leases.commit_sent())
    }

    /// Returns once a read of this replica is linearizable: after it applied up to a read
    /// index confirmed after the call (see [`crate::cluster::reads`]).
    pub async fn read_barrier(&self) -> Result<(), ApiError> {
        let index = self.reads.get().await?;
        self.applied_up_to(index).await
    }

    /// Returns once this replica has applied up to `index`.
    pub async fn applied_up_to(&self, index: Option<u64>) -> Result<(), ApiError> {
        // Usually applied already: skip openraft's waiter, which clones all of Raft's metrics.
        if self.replica.sm.last_applied().map(|l| l.index) >= index {
            return Ok(());
        }
        self.replica
            .raft
            .wait(Some(crate::cluster::reads::READ_TIMEOUT))
            .applied_index_at_least(index, "read index")
            .await
            .map_err(|e| ApiError::unavailable(format!("this node is behind the leader: {e}")))?;
        Ok(())
    }

    /// Whether this replica's range holds `key` now (after a read barrier, the answer covers
    /// every split committed before the read).
    pub fn holds(&self, key: &[u8]) -> Result<(), ApiError> {
        if self.replica.sm.range_holds(key) {
            return Ok(());
        }
        Err(wrong_range(self.replica.sm.range_arc().as_deref()))
    }
}
