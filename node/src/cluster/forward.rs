//! Any node serves any request: a write reaching a follower is proposed through the leader, and
//! a linearizable read on a follower waits until it has applied up to the leader's read index.

use std::time::Duration;

use openraft::error::ForwardToLeader;
use openraft::{BasicNode, Raft};
use raftlog::store::{Command, Reply, TypeConfig};

use crate::api::error::ApiError;
use crate::transport::client::{Peers, To};

/// How long a write may take to commit before the client is told the outcome is unknown.
const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

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

/// Proposes `cmd` (a client write, or a split) on the leader of range `range`, here or through
/// the network, and returns its reply. A 503 means the outcome is unknown (the write may still
/// commit).
pub async fn propose_with(
    raft: &Raft<TypeConfig>,
    peers: &Peers,
    range: u64,
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
    let to = To {
        node: id,
        addr: &addr,
        range,
        epoch: None,
    };
    let call = peers.propose(to, &cmd, WRITE_TIMEOUT);
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
