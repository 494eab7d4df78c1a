//! A restarted replica replays its log from the flushed point over tables that already hold
//! later compactions; every entry must come out as it did the first time.

mod common;

use std::path::Path;
use std::sync::Arc;

use lsm::object::ObjectStore;
use openraft::storage::RaftStateMachine;
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};
use raftlog::sm::value;
use raftlog::store::{Command, Op, OpResult, Reply, TypeConfig};
use raftlog::{StateMachine, Versioned};

fn entry(index: u64, cmd: Command) -> Entry<TypeConfig> {
    Entry {
        log_id: LogId::new(CommittedLeaderId::new(1, 1), index),
        payload: EntryPayload::Normal(cmd),
    }
}

fn write(now_ms: u64, ops: Vec<Op>) -> Command {
    Command::Write { ops, now_ms }
}

fn open(dir: &Path, store: &Arc<dyn ObjectStore>) -> StateMachine {
    StateMachine::open(dir, common::engine_options(store.clone())).expect("open state machine")
}

async fn apply(sm: &mut StateMachine, index: u64, cmd: Command) -> Reply {
    let mut r = sm.apply([entry(index, cmd)]).await.expect("apply");
    r.pop().expect("one reply")
}

fn as_of(sm: &StateMachine, key: &str, now_ms: u64) -> Option<Versioned> {
    sm.db()
        .get_as_of(key, now_ms)
        .expect("read")
        .map(|b| value::decode(b).expect("state machine value"))
}

/// The leader's part: seal and build the sealed memtable into a chunk.
async fn seal_and_chunk(sm: &mut StateMachine, seal_index: u64) {
    assert_eq!(apply(sm, seal_index, Command::Seal).await, Reply::Done);
    let edit = sm.db().build_chunk(seal_index).expect("build chunk");
    let chunk = Command::ChunkAdded {
        sealed_at: seal_index,
        edit: edit.encode(),
    };
    assert_eq!(
        apply(sm, seal_index + 1, chunk).await,
        Reply::Tables { applied: true }
    );
}

/// A value that expired by the leader's clock when it compacted, but was live for a conditional
/// write logged between the flushed point and that compaction: the compaction may not drop it,
/// or the write would be rejected the first time and applied on replay.
#[tokio::test]
async fn replay_over_a_later_compaction_judges_conditions_as_the_first_time() {
    let tmp = tempfile::tempdir().unwrap();
    let store = common::object_store(&tmp.path().join("objects"));
    let dir = tmp.path().join("sm");
    let mut sm = open(&dir, &store);

    let t = |v: &str| Op::PutWithTtl {
        key: b"t".to_vec(),
        value: v.as_bytes().to_vec(),
        ttl_ms: 1_000,
    };
    // t expires at 2,000 (clock of the entry 1,000 + TTL).
    assert!(matches!(
        apply(&mut sm, 1, write(1_000, vec![t("first")])).await,
        Reply::Write(_)
    ));
    seal_and_chunk(&mut sm, 2).await;
    let filler = Op::Put {
        key: b"f".to_vec(),
        value: b"x".to_vec(),
    };
    apply(&mut sm, 4, write(1_000, vec![filler])).await;
    seal_and_chunk(&mut sm, 5).await; // flushed point: index 5, clock 1,000
    assert_eq!(sm.flushed().map(|l| l.index), Some(5));
    assert_eq!(sm.flushed_clock(), 1_000);

    let if_absent = || {
        write(
            1_500,
            vec![Op::PutIfAbsent {
                key: b"t".to_vec(),
                value: b"second".to_vec(),
                ttl_ms: None,
            }],
        )
    };
    let first = apply(&mut sm, 7, if_absent()).await;
    assert_eq!(
        first,
        Reply::Write(vec![OpResult::Rejected {
            current_version: 1,
            current: Some(b"first".to_vec()),
        }])
    );

    // The leader compacts the two chunks (its wall clock is long past 2,000) with the bound the
    // maintainer uses.
    let edit = sm
        .db()
        .compact_step(sm.flushed_clock())
        .expect("compact")
        .expect("two L0 tables reach the trigger");
    let compacted = Command::Compacted {
        edit: edit.encode(),
    };
    assert_eq!(
        apply(&mut sm, 8, compacted.clone()).await,
        Reply::Tables { applied: true }
    );
    let before = as_of(&sm, "t", 1_500);
    assert_eq!(before.as_ref().map(|v| v.version), Some(1));

    // Restart: the replica resumes at the flushed point and openraft replays 6..=8.
    drop(sm);
    let mut sm = open(&dir, &store);
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied.map(|l| l.index), Some(5));
    assert_eq!(sm.flushed_clock(), 1_000);
    assert_eq!(
        apply(&mut sm, 7, if_absent()).await,
        first,
        "the replayed conditional write must see what it saw the first time"
    );
    assert_eq!(
        apply(&mut sm, 8, compacted).await,
        Reply::Tables { applied: false },
        "the tables already hold this compaction"
    );
    assert_eq!(as_of(&sm, "t", 1_500), before);

    // The entries' clock never goes back: a leader whose clock is behind (500) still writes at
    // 1,500, so a TTL of 100 ms ends at 1,600, not 600.
    let short = Op::PutWithTtl {
        key: b"k".to_vec(),
        value: b"v".to_vec(),
        ttl_ms: 100,
    };
    apply(&mut sm, 9, write(500, vec![short])).await;
    assert!(as_of(&sm, "k", 1_000).is_some());
    assert!(as_of(&sm, "k", 1_600).is_none());
}
