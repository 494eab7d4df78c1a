//! Linearizable reads share leadership confirmations.
//!
//! A read is linearizable once the node has applied up to a *read index*: the commit index of a
//! leader that confirmed, with a quorum, that it still led at some moment after the read
//! arrived. Each confirmation is a round of heartbeats (and, on a follower, a call to the
//! leader), so one per read would cap reads at one round trip each. Here every read that arrives
//! while a confirmation is in flight waits for the next one, and that next one serves all of
//! them: it starts after each of them arrived, which is all linearizability asks.

use std::time::Duration;

use openraft::error::ForwardToLeader;
use std::sync::Arc;

use openraft::BasicNode;
use raftlog::Replica;
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::network::Peers;

/// How long a confirmation may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads waiting for a confirmation; beyond this, callers wait to enqueue.
const QUEUE: usize = 65536;

type Answer = Result<Option<u64>, ApiError>;

/// Hands out read indexes, one confirmation per batch of concurrent reads. Cheap to clone.
#[derive(Clone)]
pub struct ReadIndex {
    tx: mpsc::Sender<oneshot::Sender<Answer>>,
}

impl ReadIndex {
    /// Starts the confirming task on the current runtime.
    pub fn spawn(replica: Arc<Replica>, peers: Peers) -> ReadIndex {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, replica, peers));
        ReadIndex { tx }
    }

    /// A read index from a confirmation that started after this call (`None`: nothing was
    /// ever committed).
    pub async fn get(&self) -> Answer {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(tx)
            .await
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?;
        rx.await
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?
    }
}

async fn run(mut rx: mpsc::Receiver<oneshot::Sender<Answer>>, replica: Arc<Replica>, peers: Peers) {
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiting.push(w);
        }
        let answer = confirm(&replica, &peers).await;
        for w in waiting {
            let _ = w.send(answer.clone());
        }
    }
}

/// One confirmation: here when this node leads (through [`Replica::read_log_id`], which
/// never hands out a point below the log a restored leader started with), else by asking the
/// leader.
async fn confirm(replica: &Replica, peers: &Peers) -> Answer {
    let local = tokio::time::timeout(READ_TIMEOUT, replica.read_log_id())
        .await
        .map_err(|_| ApiError::unavailable("no read point within 5 s"))?;
    let e = match local {
        Ok(read) => return Ok(read.map(|l| l.index)),
        Err(e) => e,
    };
    let Some(ForwardToLeader {
        leader_id: Some(id),
        leader_node: Some(node),
    }) = e.forward_to_leader::<BasicNode>().cloned()
    else {
        return Err(ApiError::unavailable(format!("no linearizable read: {e}")));
    };
    match peers.read_index(id, &node.addr, READ_TIMEOUT).await {
        Ok(Ok(read)) => Ok(read.map(|l| l.index)),
        Ok(Err(m)) => Err(ApiError::unavailable(format!(
            "the leader gave no read index: {m}"
        ))),
        Err(e) => Err(ApiError::unavailable(format!(
            "asking the leader for a read index failed: {e}"
        ))),
    }
}
