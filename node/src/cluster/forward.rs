//! Any node serves any request: a write reaching a follower is proposed through the leader, and
//! a linearizable read on a follower waits until it has applied up to the leader's read index.

use std::time::Duration;

use openraft::error::ForwardToLeader;
use openraft::{BasicNode, Raft};
use raftlog::store::{Command, Reply, TypeConfig};

use crate::api::error::ApiError;
use crate::server::AppState;
use crate::transport::client::Peers;

/// How long a write may take to commit before the client is told the outcome is unknown.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
use crate::cluster::reads::READ_TIMEOUT;

fn leader(f: ForwardToLeader<u64, BasicNode>) -> Result<(u64, String), ApiError> {
    match (f.leader_id, f.leader_node) {
        (Some(id), Some(n)) => Ok((id, n.addr)),
        _ => Err(ApiError::unavailable(
            "the group has no leader right now; retry",
        )),
    }
}

/// The leader and its address, when this node knows one and it is another node.
pub(crate) fn other_leader(raft: &Raft<TypeConfig>) -> Option<(u64, String)> {
    let m = raft.metrics();
    let m = m.borrow();
    let id = m.current_leader.filter(|&l| l != m.id)?;
    let node = m.membership_config.membership().get_node(&id)?;
    Some((id, node.addr.clone()))
}

/// Resolves once `raft` knows that `target` no longer leads: another node leads, or a newer
/// term began without `target` leading it. A call to a leader that stopped answering (paused,
/// cut off) would otherwise hold its caller, and what the caller holds (a write batch's slot,
/// the read-index confirmations queued behind it), until its timeout, long after a new leader
/// could serve it.
pub(crate) async fn deposed(raft: &Raft<TypeConfig>, target: u64) {
    let mut rx = raft.metrics();
    let term = rx.borrow().current_term;
    loop {
        {
            let m = rx.borrow_and_update();
            if m.current_leader != Some(target)
                && (m.current_leader.is_some() || m.current_term > term)
            {
                return;
            }
        }
        if rx.changed().await.is_err() {
            // Raft stopped: the call's own timeout ends it.
            return std::future::pending().await;
        }
    }
}

/// Proposes `cmd` (a client write) on the leader, here or through the network, and returns its
/// reply. A 503 means the outcome is unknown (the write may still commit).
/// Refused (503) while the tables fall behind (see [`Shared::admit_write`](crate::server::Shared::admit_write)).
pub async fn propose(state: &AppState, cmd: Command) -> Result<Reply, ApiError> {
    state.admit_write()?;
    propose_with(&state.replica.raft, state.peers(), cmd).await
}

/// [`propose`] with the parts it needs (for tasks that hold no [`AppState`]).
pub async fn propose_with(
    raft: &Raft<TypeConfig>,
    peers: &Peers,
    cmd: Command,
) -> Result<Reply, ApiError> {
    let (id, addr) = match other_leader(raft) {
        // A follower that knows its leader sends the write there at once, rather than through
        // its own Raft core only to be told where to send it.
        Some(l) => l,
        None => {
            let local = tokio::time::timeout(WRITE_TIMEOUT, raft.client_write(cmd.clone()))
                .await
                .map_err(|_| ApiError::unavailable("the write was not committed within 10 s"))?;
            let e = match local {
                Ok(r) => return Ok(r.data),
                Err(e) => e,
            };
            let Some(f) = e.forward_to_leader::<BasicNode>().cloned() else {
                return Err(ApiError::unavailable(format!(
                    "the write was not committed: {e}"
                )));
            };
            leader(f)?
        }
    };
    let call = peers.propose(id, &addr, &cmd, WRITE_TIMEOUT);
    let answer = tokio::select! {
        a = call => a,
        _ = deposed(raft, id) => {
            return Err(ApiError::unavailable(format!(
                "node {id} stopped leading while the write was forwarded to it; the write's outcome is unknown"
            )))
        }
    };
    match answer {
        Ok(Ok(reply)) => Ok(reply),
        Ok(Err(m)) => Err(ApiError::unavailable(format!(
            "the leader did not commit the write: {m}"
        ))),
        Err(e) => Err(ApiError::unavailable(format!(
            "forwarding the write to the leader failed: {e}"
        ))),
    }
}

/// Returns once a read of this node's state machine is linearizable: after this node has
/// applied up to a read index confirmed after the call (see [`crate::cluster::reads`]).
pub async fn read_barrier(state: &AppState) -> Result<(), ApiError> {
    let index = state.reads().get().await?;
    applied_up_to(state, index).await
}

/// Returns once this node's state machine has applied up to `index`.
pub async fn applied_up_to(state: &AppState, index: Option<u64>) -> Result<(), ApiError> {
    // Usually applied already: skip openraft's waiter, which clones all of Raft's metrics.
    if state.replica.sm.last_applied().map(|l| l.index) >= index {
        return Ok(());
    }
    state
        .replica
        .raft
        .wait(Some(READ_TIMEOUT))
        .applied_index_at_least(index, "read index")
        .await
        .map_err(|e| ApiError::unavailable(format!("this node is behind the leader: {e}")))?;
    Ok(())
}
