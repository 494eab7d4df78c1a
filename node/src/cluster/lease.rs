//! Leader leases: reads served by the leader without a round of heartbeats, only while no other
//! leader can exist.
//!
//! A follower that accepts an AppendEntries (a heartbeat included) from the leader of a term
//! refuses every vote request for openraft's `leader_lease` (`election_timeout_max`) after it
//! received it, and cannot start an election of its own before then either. So if a quorum
//! acknowledged AppendEntries the leader **sent** at time `t` or later, no quorum can elect
//! another leader before `t + election_timeout_max` on the followers' clocks. The leader counts
//! its lease from the send time (the receive time is later, never earlier), and only for
//! `election_timeout_min - max_clock_drift`: shorter than what the followers promise, by a margin
//! for clocks that run at different rates.
//!
//! The clock assumption: between two nodes, monotonic clocks advance at rates that differ by
//! less than `max_clock_drift` over one `election_timeout_min` (with the defaults, 100 ms over
//! 400 ms: a 25% rate error, far beyond real oscillators, which are off by parts per million).
//! Wall-clock jumps (NTP steps) do not matter: only monotonic clocks are read. A process paused
//! longer than its lease (a stop, swapping) is safe too: the lease is checked on the leader's
//! clock after the pause, when it has expired.
//!
//! The acknowledgements are recorded by the network layer ([`crate::transport::client`]), per peer, for
//! the newest term only. A restarted follower has forgotten when it last heard from the leader,
//! so a node refuses every vote for `election_timeout_max` after it starts ([`VoteGuard`]).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::Vote;

/// Per peer, the send time of the newest AppendEntries it acknowledged in the current term.
pub struct Leases {
    acks: Mutex<Acks>,
    /// The highest commit index this node ever sent to a follower (`leader_commit`): a
    /// follower may apply, and serve a read of, anything up to it, so a lease read must wait
    /// until this node has applied that far too. (openraft sends a new commit index to the
    /// followers before its own state machine applies it.)
    commit_sent: AtomicU64,
    /// How long past a quorum's acknowledged send time the lease lasts.
    duration: Duration,
}

#[derive(Default)]
struct Acks {
    /// The leader vote the times were acknowledged for.
    vote: Option<Vote<u64>>,
    by_peer: HashMap<u64, Instant>,
}

impl Leases {
    /// Leases lasting `duration` past the send time a quorum acknowledged.
    pub fn new(duration: Duration) -> Leases {
        Leases {
            acks: Mutex::default(),
            commit_sent: AtomicU64::new(0),
            duration,
        }
    }

    /// Records that an AppendEntries carrying the commit index `committed` is about to be sent.
    pub fn sending_commit(&self, committed: u64) {
        self.commit_sent.fetch_max(committed, Ordering::SeqCst);
    }

    /// The highest commit index ever sent to a follower.
    pub fn commit_sent(&self) -> u64 {
        self.commit_sent.load(Ordering::SeqCst)
    }

    /// Records that `peer` acknowledged an AppendEntries sent at `sent` by the leader of `vote`
    /// (it accepted that vote, whether or not its log matched). Acknowledgements of an older
    /// vote than one already seen are ignored; a newer vote forgets the old ones.
    pub fn acked(&self, peer: u64, vote: &Vote<u64>, sent: Instant) {
        let mut a = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        if a.vote.as_ref() != Some(vote) {
            let newer = a
                .vote
                .as_ref()
                .is_none_or(|v| vote.leader_id.term > v.leader_id.term);
            if !newer {
                return;
            }
            a.vote = Some(*vote);
            a.by_peer.clear();
        }
        let t = a.by_peer.entry(peer).or_insert(sent);
        if sent > *t {
            *t = sent;
        }
    }

    /// Until when `me`, leading with `vote`, holds its lease over the voter sets of its
    /// membership (two during a joint change, each needing its own quorum); `None` when no
    /// quorum has acknowledged anything of this vote. `me` counts as acknowledging now.
    pub fn expiry(&self, me: u64, vote: &Vote<u64>, configs: &[BTreeSet<u64>]) -> Option<Instant> {
        let now = Instant::now();
        let a = self.acks.lock().unwrap_or_else(|p| p.into_inner());
        let mine = a.vote.as_ref() == Some(vote);
        let mut until: Option<Instant> = None;
        for voters in configs {
            let mut times: Vec<Instant> = voters
                .iter()
                .filter_map(|id| {
                    if *id == me {
                        Some(now)
                    } else if mine {
                        a.by_peer.get(id).copied()
                    } else {
                        None
                    }
                })
                .collect();
            let quorum = voters.len() / 2 + 1;
            if times.len() < quorum {
                return None;
            }
            times.sort_unstable_by(|x, y| y.cmp(x));
            let t = times[quorum - 1] + self.duration;
            until = Some(until.map_or(t, |u| u.min(t)));
        }
        until
    }
}

/// Refuses votes for a while after the process starts (see the module comment).
pub struct VoteGuard {
    until: Instant,
}

impl VoteGuard {
    /// Refusing votes until `refuse_for` after `started`.
    pub fn new(started: Instant, refuse_for: Duration) -> VoteGuard {
        VoteGuard {
            until: started + refuse_for,
        }
    }

    /// True while this node must not grant votes.
    pub fn refusing(&self) -> bool {
        Instant::now() < self.until
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::{LeaderId, Vote};

    fn vote(term: u64, node: u64) -> Vote<u64> {
        Vote {
            leader_id: LeaderId::new(term, node),
            committed: true,
        }
    }

    fn set(ids: &[u64]) -> BTreeSet<u64> {
        ids.iter().copied().collect()
    }

    #[test]
    fn a_quorum_of_acknowledgements_is_needed() {
        let l = Leases::new(Duration::from_millis(300));
        let v = vote(2, 1);
        let cfg = [set(&[1, 2, 3])];
        assert!(l.expiry(1, &v, &cfg).is_none(), "no acks: no lease");
        let sent = Instant::now();
        l.acked(2, &v, sent);
        let until = l
            .expiry(1, &v, &cfg)
            .expect("self and one peer are a quorum of 3");
        assert_eq!(until, sent + Duration::from_millis(300));
        // Five voters need two peers; the older of the two newest counts.
        let cfg5 = [set(&[1, 2, 3, 4, 5])];
        assert!(l.expiry(1, &v, &cfg5).is_none());
        let later = sent + Duration::from_millis(50);
        l.acked(3, &v, later);
        l.acked(4, &v, sent - Duration::from_millis(10));
        assert_eq!(
            l.expiry(1, &v, &cfg5),
            Some(sent + Duration::from_millis(300))
        );
    }

    #[test]
    fn the_send_time_is_kept_only_when_newer() {
        let l = Leases::new(Duration::from_millis(300));
        let v = vote(2, 1);
        let cfg = [set(&[1, 2, 3])];
        let t = Instant::now();
        l.acked(2, &v, t);
        // A reply to an older request arriving late must not shorten nor lengthen anything.
        l.acked(2, &v, t - Duration::from_millis(100));
        assert_eq!(l.expiry(1, &v, &cfg), Some(t + Duration::from_millis(300)));
    }

    #[test]
    fn another_term_has_no_lease_from_old_acknowledgements() {
        let l = Leases::new(Duration::from_millis(300));
        let cfg = [set(&[1, 2, 3])];
        l.acked(2, &vote(2, 1), Instant::now());
        // Leading again in a later term, acknowledgements of term 2 count for nothing.
        assert!(l.expiry(1, &vote(3, 1), &cfg).is_none());
        l.acked(3, &vote(3, 1), Instant::now());
        assert!(l.expiry(1, &vote(3, 1), &cfg).is_some());
        // A late acknowledgement of the old term does not bring the old acks back.
        l.acked(2, &vote(2, 1), Instant::now());
        assert!(l.expiry(1, &vote(2, 1), &cfg).is_none());
    }

    #[test]
    fn a_joint_membership_needs_a_quorum_of_each() {
        let l = Leases::new(Duration::from_millis(300));
        let v = vote(2, 1);
        let cfg = [set(&[1, 2, 3]), set(&[1, 4, 5])];
        l.acked(2, &v, Instant::now());
        assert!(
            l.expiry(1, &v, &cfg).is_none(),
            "the new config has no quorum"
        );
        l.acked(4, &v, Instant::now());
        assert!(l.expiry(1, &v, &cfg).is_some());
    }

    #[test]
    fn a_single_voter_always_holds_its_lease() {
        let l = Leases::new(Duration::from_millis(300));
        let until = l.expiry(1, &vote(1, 1), &[set(&[1])]).expect("alone");
        assert!(until > Instant::now());
    }

    #[test]
    fn votes_are_refused_only_at_first() {
        let started = Instant::now();
        assert!(VoteGuard::new(started, Duration::from_secs(60)).refusing());
        let g = VoteGuard::new(started - Duration::from_secs(2), Duration::from_secs(1));
        assert!(!g.refusing());
    }
}
