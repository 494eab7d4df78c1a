//! One range's replica on this node, with what drives it: the batcher of its writes, the read
//! indexes of its linearizable reads, its leader lease, and its per-range figures.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::http::StatusCode;
use raftlog::store::{Command, Op, OpResult, Reply};
use raftlog::{RangeDescriptor, Replica};

use crate::api::error::ApiError;
use crate::cluster::batcher::Batcher;
use crate::cluster::lease::Leases;
use crate::cluster::reads::ReadIndex;
use crate::transport::client::Peers;

/// Sealed memtables waiting for upload before the leader stops sealing (and writes are refused
/// once the memtables also exceed their budget).
pub const MAX_SEALED: usize = 4;

/// The `error` of an answer saying the request met a range that no longer holds its key (or
/// another epoch): the router tries again with a fresh picture.
pub const WRONG_RANGE: &str = "wrong_range";

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
    pub replica: Arc<Replica>,
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
        backlog_limit: usize,
    ) -> Range {
        Range {
            id,
            batcher: Batcher::spawn(replica.raft.clone(), peers.clone(), id),
            reads: ReadIndex::spawn(replica.clone(), peers.clone(), id),
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
        }
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
