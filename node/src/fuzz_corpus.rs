//! Replays the node's fuzz corpora and every crash its fuzzers found (`fuzz/corpus/<t>/` and
//! `fuzz/regressions/<t>/` at the repository root) through the entry points the targets call,
//! on stable (see "Fuzzing" in the README). `valid-*` files must be accepted, `reject-*` files
//! refused, and nothing may panic.
//!
//! `cargo test -p node fuzz_corpus -- --ignored` rewrites the generated seeds.

use std::collections::{BTreeMap, BTreeSet};

use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, VoteRequest,
};
use openraft::{
    BasicNode, CommittedLeaderId, LogId, Membership, SnapshotMeta, StoredMembership, Vote,
};
use raftlog::store::{Command, Op, Reply, TypeConfig};

use crate::api::cursor::{self, FORWARD, REVERSE};
use crate::transport::wire::fuzzing::{node_rpc, Outcome};

type Target = (&'static str, fn(&[u8]) -> Outcome);

const TARGETS: &[Target] = &[
    ("node_rpc", node_rpc),
    ("node_scan_cursor", cursor::fuzz_cursor),
];

#[test]
fn corpora_and_regressions_replay_without_panics() {
    for (target, f) in TARGETS {
        testkit::fuzz_corpus::replay(target, *f);
    }
}

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn encode<T: serde::Serialize>(v: &T) -> Vec<u8> {
    postcard::to_stdvec(v).expect("encoding a seed")
}

/// Bodies as `network.rs` and `rpc.rs` encode them.
fn seeds() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let nodes: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|n| (n, BasicNode::new(format!("127.0.0.1:{}", 8080 + n))))
        .collect();
    let voters: BTreeSet<u64> = nodes.keys().copied().collect();
    let membership = Membership::new(vec![voters], nodes);
    let append = AppendEntriesRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        prev_log_id: None,
        entries: raftlog::fuzzing::sample_entries(),
        leader_commit: Some(log_id(1, 3)),
    };
    let snapshot = InstallSnapshotRequest::<TypeConfig> {
        vote: Vote::new_committed(1, 1),
        meta: SnapshotMeta {
            last_log_id: Some(log_id(1, 70)),
            last_membership: StoredMembership::new(Some(log_id(1, 2)), membership),
            snapshot_id: "1-70-3".to_string(),
        },
        offset: 0,
        data: lsm::fuzzing::manifest_image(70, b"saved state"),
        done: true,
    };
    let write = Command::Write {
        now_ms: 1_700_000_000_000,
        ops: vec![
            Op::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            Op::Delete { key: b"d".to_vec() },
        ],
    };
    let vote = VoteRequest::new(Vote::new(2, 2), Some(log_id(1, 6)));
    let appended: Result<AppendEntriesResponse<u64>, openraft::error::RaftError<u64>> =
        Ok(AppendEntriesResponse::Success);
    let proposed: Result<Reply, String> = Ok(Reply::Tables { applied: true });
    let mut trailing = encode(&vote);
    trailing.push(0);
    vec![
        ("node_rpc", "valid-append", encode(&append)),
        ("node_rpc", "valid-vote", encode(&vote)),
        ("node_rpc", "valid-snapshot", encode(&snapshot)),
        ("node_rpc", "valid-propose", encode(&write)),
        ("node_rpc", "valid-read-index", encode(&())),
        ("node_rpc", "valid-append-reply", encode(&appended)),
        ("node_rpc", "valid-propose-reply", encode(&proposed)),
        ("node_rpc", "edge-vote-trailing-byte", trailing),
        (
            "node_scan_cursor",
            "valid-forward",
            cursor::encode(FORWARD, b"k/\xff1").into_bytes(),
        ),
        (
            "node_scan_cursor",
            "valid-reverse",
            cursor::encode(REVERSE, b"").into_bytes(),
        ),
        ("node_scan_cursor", "reject-not-base64", b"!!".to_vec()),
        ("node_scan_cursor", "reject-empty", Vec::new()),
        ("node_scan_cursor", "reject-unknown-tag", b"eA".to_vec()),
    ]
}

#[test]
fn committed_seeds_match_the_encoders() {
    testkit::fuzz_corpus::check_seeds(seeds());
}

#[test]
#[ignore = "writes the seed corpora into the source tree"]
fn write_seed_corpora() {
    testkit::fuzz_corpus::write_seeds(seeds());
}
