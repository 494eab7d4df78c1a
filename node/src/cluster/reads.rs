//! Linearizable reads share leadership confirmations.
//!
//! A read is linearizable once the node has applied up to a *read index*: a point at or past
//! every write a client could have seen, given by a leader that confirmed, with a quorum, that
//! it still led at some moment after the read arrived. Each confirmation is a round trip to the
//! peers (one call per peer for all the ranges this node leads, see [`crate::cluster::confirm`];
//! openraft's heartbeat round when that cannot be had) and, on a follower, a call to the leader
//! (batched per leader node too), so one per read would cap reads at one round trip each. Here
//! every read that arrives while a confirmation is in flight waits for the next one, and that
//! next one serves all of them: it starts after each of them arrived, which is all
//! linearizability asks.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::ForwardToLeader;
use openraft::{BasicNode, LogId};
use raftlog::Replica;
use tokio::sync::{mpsc, oneshot};

use crate::api::error::ApiError;
use crate::cluster::confirm::{Confirmer, Leading};
use crate::cluster::lease::Leases;

/// How long a confirmation may take.
pub const READ_TIMEOUT: Duration = Duration::from_secs(5);
/// Reads waiting for a confirmation; beyond this, callers wait to enqueue.
const QUEUE: usize = 65536;

type Answer = Result<Option<LogId<u64>>, ApiError>;

struct Waiter {
    reply: oneshot::Sender<Answer>,
    /// Only this node's own confirmation will do: the read index is for a follower that asked
    /// this node as its leader (forwarding it on could bounce between two nodes that each
    /// believe the other leads).
    local_only: bool,
}

/// Hands out read indexes, one confirmation per batch of concurrent reads: this node's own
/// reads and, on the leader, the read indexes its followers ask for share one confirmation
/// round. Cheap to clone.
#[derive(Clone)]
pub struct ReadIndex {
    tx: mpsc::Sender<Waiter>,
    counts: Arc<Counts>,
}

/// Confirmations made here as the leader: shared with the other ranges (see
/// [`crate::cluster::confirm`]) or by openraft's own round.
#[derive(Default)]
struct Counts {
    shared: std::sync::atomic::AtomicU64,
    openraft: std::sync::atomic::AtomicU64,
}

impl ReadIndex {
    /// Starts the confirming task on the current runtime.
    pub fn spawn(
        replica: Arc<Replica>,
        range: u64,
        leases: Arc<Leases>,
        confirmer: Arc<Confirmer>,
    ) -> ReadIndex {
        let (tx, rx) = mpsc::channel(QUEUE);
        let counts = Arc::new(Counts::default());
        let here = Here {
            replica,
            range,
            leases,
            confirmer,
            counts: counts.clone(),
        };
        tokio::spawn(run(rx, here));
        ReadIndex { tx, counts }
    }

    /// Confirmations this node made as the leader: (shared with other ranges, by openraft).
    pub fn confirmations(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.counts.shared.load(Relaxed),
            self.counts.openraft.load(Relaxed),
        )
    }

    /// A read index from a confirmation that started after this call (`None`: nothing was
    /// ever committed), here or by the leader.
    pub async fn get(&self) -> Result<Option<u64>, ApiError> {
        Ok(self.ask(false).await?.map(|l| l.index))
    }

    /// A read index only this node, as the leader, can give (for `/raft/read-index`).
    pub async fn get_as_leader(&self) -> Answer {
        self.ask(true).await
    }

    async fn ask(&self, local_only: bool) -> Answer {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Waiter { reply, local_only })
            .await
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?;
        rx.await
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?
    }
}

/// What a confirmation on this node (as the range's leader) uses.
struct Here {
    replica: Arc<Replica>,
    range: u64,
    leases: Arc<Leases>,
    confirmer: Arc<Confirmer>,
    counts: Arc<Counts>,
}

async fn run(mut rx: mpsc::Receiver<Waiter>, here: Here) {
    let (replica, range) = (&here.replica, here.range);
    while let Some(first) = rx.recv().await {
        let mut waiting = vec![first];
        while let Ok(w) = rx.try_recv() {
            waiting.push(w);
        }
        // A follower that knows its leader asks it at once, rather than through its own Raft
        // core only to be told where to ask (the leader's answer is what makes the read safe
        // either way; the local one is needed only for `local_only` waiters).
        let known = crate::cluster::forward::other_leader(&replica.raft)
            .filter(|_| waiting.iter().any(|w| !w.local_only));
        let local = match known {
            Some(leader) => Err(NotHere {
                leader: Some(leader),
                why: "this node does not lead".into(),
            }),
            None => match confirm_shared(&here).await {
                Shared::Confirmed(read) => {
                    here.counts.shared.fetch_add(1, Ordering::Relaxed);
                    Ok(Some(read))
                }
                Shared::Failed => {
                    here.counts.openraft.fetch_add(1, Ordering::Relaxed);
                    confirm_here(replica).await
                }
                Shared::NotLeading => confirm_here(replica).await,
            },
        };
        let forwarded = match &local {
            Err(NotHere {
                leader: Some(leader),
                ..
            }) if waiting.iter().any(|w| !w.local_only) => {
                Some(ask_leader(replica, &here.confirmer, range, leader).await)
            }
            _ => None,
        };
        let local = local.map_err(|e| ApiError::unavailable(e.why));
        for w in waiting {
            let answer = match (&forwarded, w.local_only) {
                (Some(a), false) => a.clone(),
                _ => local.clone(),
            };
            let _ = w.reply.send(answer);
        }
    }
}

/// Why this node gave no read index itself.
struct NotHere {
    /// The leader it knows of, if any.
    leader: Option<(u64, String)>,
    why: String,
}

/// What a shared confirmation came to.
enum Shared {
    Confirmed(LogId<u64>),
    /// This node does not lead (as far as it knows), or not yet in a way that allows it.
    NotLeading,
    /// It leads, but a peer said no or did not answer in time.
    Failed,
}

/// A confirmation shared with every other range this node leads (see
/// [`crate::cluster::confirm`]). When it cannot be had that way (not the leader, its term's
/// first entry not applied yet, a peer that says no or does not answer) the caller asks
/// openraft, which also names a newer leader.
async fn confirm_shared(h: &Here) -> Shared {
    let leading = {
        let m = h.replica.raft.metrics();
        let m = m.borrow();
        if m.state != openraft::ServerState::Leader || !m.vote.committed {
            return Shared::NotLeading;
        }
        let Some(applied) = h.replica.sm.last_applied() else {
            return Shared::NotLeading;
        };
        if applied.leader_id.term != m.vote.leader_id.term
            || applied.index < h.replica.start_log_index()
        {
            return Shared::NotLeading;
        }
        let mem = m.membership_config.membership();
        let configs = mem.get_joint_config().clone();
        let addrs = configs
            .iter()
            .flatten()
            .filter(|id| **id != m.id)
            .filter_map(|id| mem.get_node(id).map(|n| (*id, n.addr.clone())))
            .collect();
        // Taken after every waiting read arrived (see the module comment of `confirm`).
        let index = applied.index.max(h.leases.commit_sent());
        Leading {
            me: m.id,
            vote: m.vote,
            configs,
            addrs,
            read: LogId::new(applied.leader_id, index),
        }
    };
    let still_mine = async {
        let persisted = h.replica.log.saved_vote().await.ok().flatten();
        crate::cluster::confirm::answer(persisted, &leading.vote)
    };
    if h.confirmer.confirm(h.range, &leading, still_mine).await {
        Shared::Confirmed(leading.read)
    } else {
        Shared::Failed
    }
}

/// A confirmation here, when this node leads (through [`Replica::read_log_id`], which never
/// hands out a point below the log a restored leader started with).
async fn confirm_here(replica: &Replica) -> Result<Option<LogId<u64>>, NotHere> {
    let e = match tokio::time::timeout(READ_TIMEOUT, replica.read_log_id()).await {
        Ok(Ok(read)) => return Ok(read),
        Ok(Err(e)) => e,
        Err(_) => {
            return Err(NotHere {
                leader: None,
                why: "no read point within 5 s".into(),
            })
        }
    };
    let leader = match e.forward_to_leader::<BasicNode>() {
        Some(ForwardToLeader {
            leader_id: Some(id),
            leader_node: Some(node),
        }) => Some((*id, node.addr.clone())),
        _ => None,
    };
    Err(NotHere {
        leader,
        why: format!("no linearizable read here: {e}"),
    })
}

/// A confirmation by the leader, over the network; given up as soon as another leader is known.
/// The question travels with every other range's to that node (see `transport::batch`).
async fn ask_leader(
    replica: &Replica,
    confirmer: &Confirmer,
    range: u64,
    (id, addr): &(u64, String),
) -> Answer {
    let answer = tokio::select! {
        a = confirmer.read_index(*id, addr, range) => a,
        _ = crate::cluster::forward::deposed(&replica.raft, *id) => {
            return Err(ApiError::unavailable(format!(
                "node {id} stopped leading while asked for a read index; retry"
            )))
        }
    };
    answer.map_err(|m| ApiError::unavailable(format!("the leader gave no read index: {m}")))
}
