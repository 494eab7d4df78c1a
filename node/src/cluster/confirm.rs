//! Leadership confirmations of linearizable reads for every range this node leads, one call
//! per peer for all of them.
//!
//! A read index is safe once a quorum of the range's voters said, after the read arrived, that
//! they have not voted for anyone newer than this leader: an election of a newer leader needs a
//! quorum of such votes, and the two quorums meet, so no newer leader existed when the read
//! arrived. openraft confirms by a round of heartbeats per range (`ensure_linearizable`), two
//! HTTP calls per range per read batch; with dozens of ranges each read pays its own round.
//! Here the question is asked of each peer for every range at once: one call per peer per batch
//! (`POST /raft/confirm`, a list of (range, vote) pairs answered by a list of booleans), however
//! many ranges' reads wait.
//!
//! The read index handed out is the larger of what the leader applied and every commit index it
//! sent (see [`crate::cluster::lease`]), taken after the reads arrived: every write a client saw
//! acknowledged (applied here first) or read anywhere (a follower applies no further than a
//! commit index it was sent) is at or below it. The leader must have applied its term's first
//! entry (so everything earlier leaders committed is applied too) and the log it restarted with;
//! until then, and whenever a peer says no, the caller falls back to openraft's confirmation,
//! which also names a newer leader.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openraft::{LogId, Vote};
use tokio::sync::{mpsc, oneshot};

use crate::transport::client::{Peers, To};

/// How long a confirmation may take before the caller falls back.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);
/// Questions waiting for one peer; beyond this, askers wait to enqueue.
const QUEUE: usize = 65536;
/// Pairs in one call, at most (a peer refuses longer lists): one per range, and a node holds
/// at most 4,096 (see `cluster::ranges`).
pub const MAX_PAIRS: usize = 4096;

/// One range's question to a peer: does it still hold no vote newer than `vote`?
struct Ask {
    range: u64,
    vote: Vote<u64>,
    reply: oneshot::Sender<bool>,
}

/// The per-peer batchers. Cheap to share.
pub struct Confirmer {
    peers: Peers,
    /// By peer id and address (a peer that moved gets a new queue).
    queues: Mutex<HashMap<(u64, String), mpsc::Sender<Ask>>>,
}

/// What the leader knows when a confirmation starts.
pub struct Leading {
    pub me: u64,
    pub vote: Vote<u64>,
    /// Voters of each configuration (two during a joint change): a quorum of each must agree.
    pub configs: Vec<BTreeSet<u64>>,
    /// Addresses of the voters other than this node.
    pub addrs: HashMap<u64, String>,
    /// The read index: see the module comment.
    pub read: LogId<u64>,
}

impl Confirmer {
    pub fn new(peers: Peers) -> Arc<Confirmer> {
        Arc::new(Confirmer {
            peers,
            queues: Mutex::new(HashMap::new()),
        })
    }

    /// Asks every other voter of `range` whether it still holds no vote newer than
    /// `leading.vote`; `true` once a quorum of every configuration agreed and then `still_mine`
    /// (this node's own vote, looked at last) says yes too; `false` when that became impossible
    /// or took too long.
    pub async fn confirm(
        &self,
        range: u64,
        leading: &Leading,
        still_mine: impl std::future::Future<Output = bool>,
    ) -> bool {
        let mut answers = Vec::new();
        for (&id, addr) in &leading.addrs {
            let (reply, rx) = oneshot::channel();
            let queue = self.queue(id, addr);
            let ask = Ask {
                range,
                vote: leading.vote,
                reply,
            };
            // A full queue is a peer that stopped answering (each call waits out its timeout
            // while questions pile up): no answer from it, rather than a wait that would hold
            // every range's reads; the others may still make a quorum.
            if queue.try_send(ask).is_err() {
                continue;
            }
            answers.push((id, rx));
        }
        let mut yes: BTreeSet<u64> = BTreeSet::new();
        let mut no: BTreeSet<u64> = BTreeSet::new();
        let mut pending = futures::stream::FuturesUnordered::new();
        for (id, rx) in answers {
            pending.push(async move { (id, rx.await.unwrap_or(false)) });
        }
        let decided = async {
            use futures::StreamExt;
            loop {
                match quorum(&leading.configs, leading.me, &yes, &no) {
                    Some(answer) => return answer,
                    None => match pending.next().await {
                        Some((id, true)) => {
                            yes.insert(id);
                        }
                        Some((id, false)) => {
                            no.insert(id);
                        }
                        None => return false,
                    },
                }
            }
        };
        let agreed = tokio::time::timeout(CONFIRM_TIMEOUT, decided)
            .await
            .unwrap_or(false);
        // This node's own vote is counted as of now, after the peers answered.
        agreed && still_mine.await
    }

    fn queue(&self, id: u64, addr: &str) -> mpsc::Sender<Ask> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        let key = (id, addr.to_string());
        if let Some(q) = queues.get(&key).filter(|q| !q.is_closed()) {
            return q.clone();
        }
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(ask_peer(self.peers.clone(), id, addr.to_string(), rx));
        queues.insert(key, tx.clone());
        tx
    }
}

/// Whether the answers so far decide: `Some(true)` when a quorum of every configuration said
/// yes (`me` counts as yes), `Some(false)` when some configuration can no longer reach one.
fn quorum(
    configs: &[BTreeSet<u64>],
    me: u64,
    yes: &BTreeSet<u64>,
    no: &BTreeSet<u64>,
) -> Option<bool> {
    let mut all = true;
    for voters in configs {
        let need = voters.len() / 2 + 1;
        let ayes = voters
            .iter()
            .filter(|v| **v == me || yes.contains(v))
            .count();
        let nays = voters.iter().filter(|v| no.contains(v)).count();
        if voters.len() - nays < need {
            return Some(false);
        }
        all &= ayes >= need;
    }
    all.then_some(true)
}

/// Sends one peer's questions, a batch per call: everything that arrived while the previous
/// call was out goes in the next.
async fn ask_peer(peers: Peers, id: u64, addr: String, mut rx: mpsc::Receiver<Ask>) {
    while let Some(first) = rx.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_PAIRS {
            match rx.try_recv() {
                Ok(a) => batch.push(a),
                Err(_) => break,
            }
        }
        // Questions whose asker already decided (a quorum without this peer, or a timeout).
        batch.retain(|a| !a.reply.is_closed());
        if batch.is_empty() {
            continue;
        }
        let pairs: Vec<(u64, Vote<u64>)> = batch.iter().map(|a| (a.range, a.vote)).collect();
        let to = To {
            node: id,
            addr: &addr,
            range: raftlog::FIRST_RANGE,
            epoch: None,
        };
        let answers: Vec<bool> = match peers
            .call::<_, Vec<bool>>(to, "confirm", &pairs, CONFIRM_TIMEOUT)
            .await
        {
            Ok(a) if a.len() == batch.len() => a,
            Ok(_) | Err(_) => vec![false; batch.len()],
        };
        for (ask, yes) in batch.into_iter().zip(answers) {
            let _ = ask.reply.send(yes);
        }
    }
}

/// A peer's answer for one range: whether its replica holds no vote newer than the leader's
/// `vote` (the same leader, or an older one it has not moved on from, is no obstacle: it has
/// not helped elect anyone newer).
pub fn answer(local: Option<Vote<u64>>, vote: &Vote<u64>) -> bool {
    local.is_some_and(|v| v.leader_id == vote.leader_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_quorum_of_every_configuration_is_needed() {
        let one = vec![set(&[1, 2, 3])];
        assert_eq!(quorum(&one, 1, &set(&[]), &set(&[])), None);
        assert_eq!(quorum(&one, 1, &set(&[3]), &set(&[])), Some(true));
        assert_eq!(quorum(&one, 1, &set(&[]), &set(&[2])), None);
        assert_eq!(quorum(&one, 1, &set(&[]), &set(&[2, 3])), Some(false));
        // Joint: {1,2,3} and {3,4,5}; this node (1) is only in the first.
        let joint = vec![set(&[1, 2, 3]), set(&[3, 4, 5])];
        assert_eq!(quorum(&joint, 1, &set(&[2]), &set(&[])), None);
        assert_eq!(quorum(&joint, 1, &set(&[2, 4]), &set(&[])), None);
        assert_eq!(quorum(&joint, 1, &set(&[2, 4, 5]), &set(&[])), Some(true));
        assert_eq!(quorum(&joint, 1, &set(&[2]), &set(&[4, 5])), Some(false));
        // Alone.
        assert_eq!(quorum(&[set(&[7])], 7, &set(&[]), &set(&[])), Some(true));
    }

    #[test]
    fn a_peer_that_voted_for_a_newer_leader_says_no() {
        let v = |term, node| Vote::new_committed(term, node);
        assert!(answer(Some(v(3, 1)), &v(3, 1)));
        // Granted but not yet committed: still this leader's vote.
        assert!(answer(Some(Vote::new(3, 1)), &v(3, 1)));
        assert!(!answer(Some(v(4, 2)), &v(3, 1)));
        assert!(!answer(Some(Vote::new(4, 2)), &v(3, 1)));
        // Behind (has not heard of this term): conservatively no.
        assert!(!answer(Some(v(2, 1)), &v(3, 1)));
        assert!(!answer(None, &v(3, 1)));
    }
}
