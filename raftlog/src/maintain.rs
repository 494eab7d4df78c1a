//! The leader's side of flushing and compaction (DESIGN.md, "Replication"), and the snapshot
//! trigger every replica runs.
//!
//! On the leader, each pass: propose `Seal` when the active memtable is full; build the oldest
//! sealed memtable into a table in the object store and propose `ChunkAdded`; run one compaction
//! and propose `Compacted`. A new leader finds any sealed-but-unchunked memtable in its own state
//! (every replica sealed it) and builds it the same way. An edit the state machine refuses (a
//! duplicate, a stale compaction) has its tables discarded; an edit whose proposal failed keeps
//! them (it may still commit under the next leader; if it never does, the tables are orphans that
//! a later open finds).
//!
//! On every replica: a snapshot is requested whenever the flushed point moves, so openraft purges
//! the log behind it; only the leader deletes garbage objects.

use std::time::Duration;

use openraft::{Raft, ServerState};
use tokio::task::JoinHandle;

use crate::store::{Command, Reply, TypeConfig};
use crate::StateMachine;

/// The longest wait between failed passes.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The shortest time between two passes. Raft's metrics change with every applied entry and
/// every round of heartbeats (each linearizable read confirms leadership with one), thousands of
/// times a second under load: a pass for each would cost more than the work it serves.
const MIN_GAP: Duration = Duration::from_millis(5);

/// When the leader seals and how often the maintainer looks.
#[derive(Debug, Clone)]
pub struct MaintainerOptions {
    /// Time between passes (a pass also follows every change of Raft's metrics).
    pub interval: Duration,
    /// Seal the active memtable once it holds this many bytes (normally the engine's
    /// `write_buffer_size`).
    pub seal_bytes: usize,
    /// Do not seal while this many sealed memtables wait to be built: writes then accumulate in
    /// the active memtable (the caller applies backpressure from [`StateMachine::backlog`]).
    pub max_sealed: usize,
}

impl Default for MaintainerOptions {
    fn default() -> Self {
        MaintainerOptions {
            interval: Duration::from_millis(50),
            seal_bytes: 64 << 20,
            max_sealed: 4,
        }
    }
}

/// The maintenance task of one replica; stops when Raft shuts down or when dropped.
pub struct Maintainer {
    task: JoinHandle<()>,
}

impl Drop for Maintainer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Maintainer {
    /// Stops the task and waits until it is gone (with it, its handle on the state machine; a
    /// table build it started on the blocking pool still finishes on its own).
    pub async fn stop(&mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }

    /// Starts the task on the current tokio runtime.
    pub fn spawn(raft: Raft<TypeConfig>, sm: StateMachine, opts: MaintainerOptions) -> Maintainer {
        Maintainer {
            task: tokio::spawn(run(raft, sm, opts)),
        }
    }
}

/// On the leader, the log index every other replica of the membership (voters and learners)
/// has replicated up to, or installed a snapshot of: none of them can need an object removed at
/// or before it once it has applied that far, which the grace period covers. `None` off the
/// leader. A replica without progress (down since the leader's term began) holds it at 0.
fn replicated_floor(m: &openraft::RaftMetrics<u64, openraft::BasicNode>) -> Option<u64> {
    let repl = m.replication.as_ref()?;
    let membership = m.membership_config.membership();
    Some(
        membership
            .nodes()
            .map(|(id, _)| *id)
            .filter(|id| *id != m.id)
            .map(|id| repl.get(&id).copied().flatten().map_or(0, |l| l.index))
            .min()
            .unwrap_or(u64::MAX),
    )
}

async fn run(raft: Raft<TypeConfig>, sm: StateMachine, opts: MaintainerOptions) {
    let mut metrics = raft.metrics();
    let mut floor_term = 0;
    let mut term_usable = false;
    let mut snapshot_at = sm.flushed();
    // After a failed pass (an object-store outage, a lost proposal) the next waits, doubling up
    // to a limit: a pass follows every metrics change, i.e. every applied entry, and each retry
    // would rebuild and upload a table.
    let mut backoff = opts.interval;
    let mut retry_at = tokio::time::Instant::now();
    let mut was_leader = None;
    let mut compaction = Compaction::default();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(opts.interval) => {}
            changed = metrics.changed() => if changed.is_err() { return },
        }
        let (state, term, replicated_to) = {
            let m = metrics.borrow_and_update();
            (m.state, m.current_term, replicated_floor(&m))
        };
        if state == ServerState::Shutdown {
            return;
        }
        let leader = state == ServerState::Leader;
        if was_leader != Some(leader) {
            // It wakes the engine's background thread: only when leadership changes.
            sm.db().set_object_gc(leader);
            was_leader = Some(leader);
        }
        let flushed = sm.flushed();
        if flushed > snapshot_at {
            snapshot_at = flushed;
            if raft.trigger().snapshot().await.is_err() {
                return;
            }
        }
        if leader {
            // Objects a compaction removed go only once every replica is past the removal.
            let own = sm.last_applied().map_or(0, |l| l.index);
            sm.db()
                .set_gc_floor(replicated_to.map_or(0, |r| r.min(own)));
            if term != floor_term {
                // Tables of this term are numbered `term << 32 ..`: no two leaders (one per
                // term) ever upload the same object name. A node that restarts believing it
                // still leads an old term may already know a newer leader's numbers: it must
                // not upload under them (it would replace that leader's tables).
                term_usable = match sm.db().number_tables_within(term << 32..(term + 1) << 32) {
                    Ok(()) => true,
                    Err(e) => {
                        tracing::warn!(term, error = %e, "no maintenance in a superseded term");
                        false
                    }
                };
                floor_term = term;
                compaction = Compaction::default();
            }
            if term_usable && tokio::time::Instant::now() >= retry_at {
                match pass(&raft, &sm, &opts, &mut compaction).await {
                    Ok(()) => backoff = opts.interval,
                    Err(e) => {
                        tracing::warn!(error = %e, retry_in = ?backoff, "leader maintenance pass failed");
                        retry_at = tokio::time::Instant::now() + backoff;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        }
        tokio::time::sleep(MIN_GAP).await;
    }
}

/// Whether a compaction is worth looking for: picking one runs on the blocking pool, so once
/// none was found the leader waits for the tables to change before it looks again.
#[derive(Default)]
struct Compaction {
    /// [`StateMachine::tables_epoch`] when a look found nothing.
    idle_at: Option<(Option<openraft::LogId<u64>>, u64)>,
}

/// One leader pass: seal, chunk, compact.
async fn pass(
    raft: &Raft<TypeConfig>,
    sm: &StateMachine,
    opts: &MaintainerOptions,
    compaction: &mut Compaction,
) -> Result<(), String> {
    let status = sm.db().replica_status();
    if status.active_bytes >= opts.seal_bytes && status.sealed.len() < opts.max_sealed {
        propose(raft, Command::Seal).await?;
    }
    if let Some(&sealed_at) = sm.db().replica_status().sealed.first() {
        let db = sm.clone();
        let edit = tokio::task::spawn_blocking(move || db.db().build_chunk(sealed_at))
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.to_string())?;
        let cmd = Command::ChunkAdded {
            sealed_at,
            edit: edit.encode(),
        };
        if propose(raft, cmd).await? != (Reply::Tables { applied: true }) {
            sm.db().discard(&edit);
        }
    }
    let epoch = sm.tables_epoch();
    if compaction.idle_at == Some(epoch) {
        return Ok(());
    }
    let db = sm.clone();
    let expired_by = sm.flushed_clock();
    let compacted = tokio::task::spawn_blocking(move || db.db().compact_step(expired_by))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())?;
    compaction.idle_at = compacted.is_none().then_some(epoch);
    if let Some(edit) = compacted {
        let cmd = Command::Compacted {
            edit: edit.encode(),
        };
        if propose(raft, cmd).await? != (Reply::Tables { applied: true }) {
            sm.db().discard(&edit);
        }
    }
    Ok(())
}

async fn propose(raft: &Raft<TypeConfig>, cmd: Command) -> Result<Reply, String> {
    raft.client_write(cmd)
        .await
        .map(|r| r.data)
        .map_err(|e| e.to_string())
}
