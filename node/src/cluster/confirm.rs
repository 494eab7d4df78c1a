//! Leadership confirmations of linearizable reads for every range this node leads, one call
//! per peer for all of them.
//!
//! A read index is safe once a quorum of the range's voters said, after the read arrived, that
//! they have not voted for anyone newer than this leader: an election of a newer leader needs a
//! quorum of such votes, and the two quorums meet, so no newer leader existed when the read
//! arrived. openraft confirms by a round of heartbeats per range (`ensure_linearizable`), two
//! HTTP calls per range per read batch; with dozens of ranges each read pays its own round.
//! Here the question is asked of each peer for every range at once: one call per peer per batch
//! (`POST /raft/confirm`, a list of (range, vote) pairs answered by a list of booleans; see
//! `transport::batch`), however many ranges' reads wait. A follower's requests for read indexes
//! go to their leader node the same way (`POST /raft/read-indexes`).
//!
//! The read index handed out is the larger of what the leader applied and every commit index it
//! sent (see [`crate::cluster::lease`]), taken after the reads arrived: every write a client saw
//! acknowledged (applied here first) or read anywhere (a follower applies no further than a
//! commit index it was sent) is at or below it. The leader must have applied its term's first
//! entry (so everything earlier leaders committed is applied too) and the log it restarted with;
//! until then, and whenever a peer says no, the caller falls back to openraft's confirmation,
//! which also names a newer leader.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use openraft::{LogId, Vote};

use crate::transport::batch::PeerBatcher;
use crate::transport::client::Peers;

/// How long a confirmation may take before the caller falls back.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a follower's read index may take from its leader.
const READ_INDEX_TIMEOUT: Duration = crate::cluster::reads::READ_TIMEOUT;
/// How long a leader gives each range of a batched read index request: less than the asker's
/// timeout, so that the answers of the ranges that could confirm arrive.
pub const READ_INDEX_BUDGET: Duration = Duration::from_secs(3);

/// A leader's read index for a follower (only its index matters), or why there is none.
pub type ReadIndexAnswer = Result<Option<LogId<u64>>, String>;

/// The per-peer batchers of this node's questions about many ranges. Cheap to share.
pub struct Confirmer {
    peers: Peers,
    /// As a leader: "has your replica of this range voted for anyone newer than me?"
    votes: Arc<PeerBatcher<(u64, Vote<u64>), bool>>,
    /// As a follower: "your read index for this range, please" (see `cluster::reads`).
    reads: Arc<PeerBatcher<u64, ReadIndexAnswer>>,
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
            peers: peers.clone(),
            votes: PeerBatcher::new(peers.clone(), "confirm", CONFIRM_TIMEOUT, |_| false),
            reads: PeerBatcher::new(peers, "read-indexes", READ_INDEX_TIMEOUT, |why| {
                Err(why.to_string())
            }),
        })
    }

    /// Asks the leader `id` at `addr` for its read index of `range`, in one call with every
    /// other range's question to that node.
    /// A leader that cannot take batches (an earlier version, without the route) or whose
    /// queue is full is asked for this range alone.
    pub async fn read_index(&self, id: u64, addr: &str, range: u64) -> ReadIndexAnswer {
        if let Some(rx) = self.reads.ask(id, addr, range) {
            let answer = rx
                .await
                .unwrap_or_else(|_| Err("the node is shutting down".to_string()));
            // The call that found the route missing answered no one: ask alone at once.
            if answer.is_ok() || !self.reads.unsupported(id, addr) {
                return answer;
            }
        }
        let to = crate::transport::client::To {
            node: id,
            addr,
            range,
            epoch: None,
        };
        self.peers
            .call::<_, ReadIndexAnswer>(to, "read-index", &(), READ_INDEX_TIMEOUT)
            .await
            .unwrap_or_else(|e| Err(format!("asking node {id}: {e}")))
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
        let mut pending = futures::stream::FuturesUnordered::new();
        for (&id, addr) in &leading.addrs {
            // No queue room: that peer stopped answering; the others may make a quorum.
            if let Some(rx) = self.votes.ask(id, addr, (range, leading.vote)) {
                pending.push(async move { (id, rx.await.unwrap_or(false)) });
            }
        }
        let mut yes: BTreeSet<u64> = BTreeSet::new();
        let mut no: BTreeSet<u64> = BTreeSet::new();
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

/// A peer's answer for one range: whether its replica's persisted vote is for the same leader
/// (term and node) as `vote`. Votes only grow, so such a replica has helped elect no newer
/// leader. Any other vote, older ones included, is a no: conservative, and an up-to-date
/// follower of this leader always holds its vote.
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

    /// A leader of an earlier version has `/raft/read-index` but not `/raft/read-indexes`: the
    /// first question finds out (404) and is asked alone at once, and so are the later ones,
    /// without another batched call.
    #[tokio::test]
    async fn a_leader_without_batches_is_asked_range_by_range() {
        use axum::routing::post;
        use std::sync::atomic::{AtomicUsize, Ordering};
        let batched = Arc::new(AtomicUsize::new(0));
        let single = Arc::new(AtomicUsize::new(0));
        let (b, s1) = (batched.clone(), single.clone());
        let app = axum::Router::new()
            .route(
                "/raft/read-indexes",
                post(move || {
                    b.fetch_add(1, Ordering::SeqCst);
                    async { axum::http::StatusCode::NOT_FOUND }
                }),
            )
            .route(
                "/raft/read-index",
                post(move || {
                    s1.fetch_add(1, Ordering::SeqCst);
                    let read: ReadIndexAnswer =
                        Ok(Some(LogId::new(openraft::CommittedLeaderId::new(2, 7), 41)));
                    async move { postcard::to_stdvec(&read).unwrap() }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let c = Confirmer::new(Peers::new("secret", None).unwrap());
        for _ in 0..3 {
            let read = c.read_index(7, &addr, 5).await.expect("a read index");
            assert_eq!(read.map(|l| l.index), Some(41));
        }
        assert_eq!(batched.load(Ordering::SeqCst), 1);
        assert_eq!(single.load(Ordering::SeqCst), 3);
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
