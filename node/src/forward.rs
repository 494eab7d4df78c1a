//! Any node serves any request: a write reaching a follower is proposed through the leader, and
//! a linearizable read on a follower waits until it has applied up to the leader's read index.

use std::time::Duration;

use openraft::error::ForwardToLeader;
use openraft::{BasicNode, Raft};
use raftlog::store::{Command, Reply, TypeConfig};

use crate::error::ApiError;
use crate::network::Peers;
use crate::server::AppState;

/// How long a write may take to commit before the client is told the outcome is unknown.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);
use crate::reads::READ_TIMEOUT;

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
    match peers.propose(id, &addr, &cmd, WRITE_TIMEOUT).await {
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
/// applied up to a read index confirmed after the call (see [`crate::reads`]).
pub async fn read_barrier(state: &AppState) -> Result<(), ApiError> {
    let index = state.reads().get().await?;
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
