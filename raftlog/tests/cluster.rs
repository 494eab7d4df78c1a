//! In-process clusters of 3 and 5 nodes over a network that drops, delays and partitions:
//! replication into the engine, leader crashes, restarts from disk, a learner joining through a
//! manifest snapshot after the log was purged, and an isolated old leader that cannot commit.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::cluster::{put, Cluster};
use lsm::object::{FaultConfig, ObjectOp};
use openraft::BasicNode;
use raftlog::inproc::Faults;
use raftlog::store::{Command, Op, OpResult, Reply};

const T: Duration = Duration::from_secs(30);

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime")
}

fn key(i: u64) -> Vec<u8> {
    format!("key-{i:05}").into_bytes()
}

/// ~120 bytes that compress poorly, so table sizes are honest.
fn value(i: u64, round: u64) -> Vec<u8> {
    let mut x = i.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ round.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    let mut s = format!("value-{i}-{round}-");
    for _ in 0..6 {
        x ^= x >> 31;
        x = x.wrapping_mul(0x94D0_49BB_1331_11EB);
        s.push_str(&format!("{x:016x}"));
    }
    s.into_bytes()
}

/// Writes keys `range` (value round `round`) through the leader; returns the last index.
async fn write_keys(c: &Cluster, range: std::ops::Range<u64>, round: u64) -> u64 {
    let mut last = 0;
    for i in range {
        let (index, reply) = c.write(put(key(i), value(i, round)), T).await;
        assert_eq!(reply, Reply::Write(vec![OpResult::Done { version: index }]));
        last = index;
    }
    last
}

/// Checks on node `id` that keys `range` hold round `round`'s values.
fn check_keys(c: &Cluster, id: u64, range: std::ops::Range<u64>, round: u64) {
    for i in range {
        let got = c.node(id).sm.get(&key(i)).expect("read");
        assert_eq!(
            got.map(|v| v.value.to_vec()),
            Some(value(i, round)),
            "node {id}, key {i}"
        );
    }
}

async fn wait_all_applied(c: &Cluster, index: u64) {
    for id in c.running() {
        c.wait_applied(id, index, T).await;
    }
}

/// Every running replica holds what `reference` holds.
fn assert_replicas_match(c: &Cluster, reference: u64, context: &str) {
    let contents = c.contents(reference);
    for id in c.running() {
        assert_eq!(c.contents(id), contents, "replica {id} differs{context}");
    }
}

#[test]
fn three_nodes_replicate_seal_chunk_and_survive_a_leader_crash() {
    rt().block_on(async {
        let mut c = Cluster::new(3).await;
        let last = write_keys(&c, 0..400, 1).await;
        wait_all_applied(&c, last).await;
        for id in c.running() {
            check_keys(&c, id, 0..400, 1);
        }
        // 400 writes of ~130 bytes through 16 KiB memtables: sealed, built and added as chunks.
        let leader = c.leader(T).await;
        let st = c.node(leader).sm.db().replica_status();
        assert!(st.flushed_seq > 0, "no chunk was added: {st:?}");
        assert_replicas_match(&c, leader, "");

        // The leader crashes; the others elect a new one and go on.
        c.stop(leader).await;
        let new_leader = c.leader(T).await;
        assert_ne!(new_leader, leader);
        let last = write_keys(&c, 200..600, 2).await;
        wait_all_applied(&c, last).await;
        for id in c.running() {
            check_keys(&c, id, 0..200, 1);
            check_keys(&c, id, 200..600, 2);
        }

        // The old leader comes back from its directory and catches up.
        c.start(leader).await;
        c.wait_applied(leader, last, T).await;
        check_keys(&c, leader, 0..200, 1);
        check_keys(&c, leader, 200..600, 2);
        assert_replicas_match(&c, new_leader, " after catch-up");
    });
}

#[test]
fn a_new_leader_builds_the_memtable_its_predecessor_sealed_but_could_not_upload() {
    rt().block_on(async {
        let mut c = Cluster::new(3).await;
        let old = c.leader(T).await;
        // The leader can no longer upload: it seals (every replica seals at that entry) but its
        // table builds fail, so no ChunkAdded follows.
        let no_puts = FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        };
        c.faults[&old].set(ObjectOp::Put, no_puts);
        c.faults[&old].set(ObjectOp::PutIfAbsent, no_puts);
        // ~130 bytes a write through 16 KiB memtables: a seal within the first 130 or so.
        let last = write_keys(&c, 0..300, 1).await;
        wait_all_applied(&c, last).await;
        let sealed_at = {
            let st = c.node(old).sm.db().replica_status();
            assert_eq!(
                st.flushed_seq, 0,
                "a chunk was added despite the failing uploads"
            );
            *st.sealed.first().expect("the leader sealed a memtable")
        };
        for id in c.running() {
            let st = c.node(id).sm.db().replica_status();
            assert!(
                st.sealed.contains(&sealed_at),
                "node {id} did not seal: {st:?}"
            );
        }
        assert!(
            c.faults[&old].injected(ObjectOp::Put) > 0,
            "no upload was tried"
        );

        // It crashes. Its successor finds the sealed memtable in its own state and builds it.
        c.stop(old).await;
        let new = c.leader(T).await;
        let deadline = std::time::Instant::now() + T;
        loop {
            let flushed: Vec<u64> = c
                .running()
                .iter()
                .map(|&id| c.node(id).sm.db().replica_status().flushed_seq)
                .collect();
            if flushed.iter().all(|&f| f >= sealed_at) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "new leader {new} did not chunk the memtable sealed at {sealed_at}: {flushed:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for id in c.running() {
            check_keys(&c, id, 0..300, 1);
        }

        // The old leader comes back (its uploads work again) and drops its sealed memtable when
        // it applies its successor's ChunkAdded.
        c.faults[&old].clear();
        c.start(old).await;
        let last = write_keys(&c, 300..320, 1).await;
        wait_all_applied(&c, last).await;
        let st = c.node(old).sm.db().replica_status();
        assert!(
            st.flushed_seq >= sealed_at,
            "the old leader kept its memtable: {st:?}"
        );
        check_keys(&c, old, 0..320, 1);
        assert_replicas_match(&c, new, "");
    });
}

#[test]
fn a_leader_whose_log_cannot_sync_stops_and_no_acknowledged_write_is_lost() {
    rt().block_on(async {
        let mut c = Cluster::new(3).await;
        let last = write_keys(&c, 0..50, 1).await;
        wait_all_applied(&c, last).await;
        // The leader's disk fails: its fdatasync returns EIO from now on.
        let old = c.leader(T).await;
        c.node(old).log.fail_syncs(true);
        // Writes go on: the first ones reach the failing leader and are not acknowledged by
        // it; the group elects another leader, which takes them.
        let last = write_keys(&c, 50..120, 1).await;
        let new = c.leader(T).await;
        assert_ne!(new, old, "the leader kept leading without a durable log");
        let poisoned = c.node(old).log.with_log(|l| l.is_poisoned()).expect("log");
        assert!(poisoned, "the failed sync did not poison the log");
        let deadline = std::time::Instant::now() + T;
        while c.node(old).raft.metrics().borrow().state != openraft::ServerState::Shutdown {
            assert!(
                std::time::Instant::now() < deadline,
                "the replica whose log failed kept running"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        for id in c.running().into_iter().filter(|&id| id != old) {
            c.wait_applied(id, last, T).await;
            check_keys(&c, id, 0..120, 1);
        }
        // The disk is replaced (the same files, syncs work): the node reopens its log, rejoins
        // and converges.
        c.stop(old).await;
        c.start(old).await;
        let last = write_keys(&c, 120..130, 1).await;
        wait_all_applied(&c, last).await;
        check_keys(&c, old, 0..130, 1);
        assert_replicas_match(&c, new, "");
    });
}

#[test]
fn every_node_restarts_from_disk() {
    rt().block_on(async {
        let mut c = Cluster::new(3).await;
        let last = write_keys(&c, 0..300, 1).await;
        wait_all_applied(&c, last).await;
        for id in c.ids.clone() {
            c.stop(id).await;
        }
        for id in c.ids.clone() {
            c.start(id).await;
        }
        c.leader(T).await;
        // The restarted replicas resumed at their flushed points and re-applied the rest.
        wait_all_applied(&c, last).await;
        for id in c.running() {
            check_keys(&c, id, 0..300, 1);
        }
        let last = write_keys(&c, 300..350, 1).await;
        wait_all_applied(&c, last).await;
        for id in c.running() {
            check_keys(&c, id, 0..350, 1);
        }
    });
}

#[test]
fn five_nodes_over_a_lossy_slow_network_converge() {
    rt().block_on(async {
        let c = Cluster::new(5).await;
        c.router.set_faults(Faults {
            drop_rate: 0.05,
            max_delay: Duration::from_millis(15),
            ..Faults::default()
        });
        let mut tasks = Vec::new();
        let c = std::sync::Arc::new(c);
        for w in 0..4u64 {
            let c = c.clone();
            tasks.push(tokio::spawn(async move {
                write_keys(&c, w * 100..w * 100 + 100, 1).await
            }));
        }
        let mut last = 0;
        for t in tasks {
            last = last.max(t.await.expect("writer"));
        }
        c.router.set_faults(Faults::default());
        wait_all_applied(&c, last).await;
        let leader = c.leader(T).await;
        let contents = c.contents(leader);
        assert_eq!(contents.len(), 400);
        for id in c.running() {
            check_keys(&c, id, 0..400, 1);
            assert_eq!(c.contents(id), contents, "replica {id} differs");
        }
    });
}

#[test]
fn a_learner_joins_through_a_manifest_snapshot_after_the_log_is_purged() {
    rt().block_on(async {
        let mut c = Cluster::new(3).await;
        // Ten memtables' worth of writes (16 KiB each): chunks, snapshots, purges.
        let mut last = 0;
        for round in 0..4 {
            last = write_keys(&c, 0..400, round).await;
        }
        wait_all_applied(&c, last).await;
        let leader = c.leader(T).await;
        let data_bytes: u64 = 4 * 400 * value(0, 0).len() as u64;
        let deadline = std::time::Instant::now() + T;
        let purged = loop {
            let m = c.node(leader).raft.metrics().borrow().clone();
            if let Some(p) = m.purged.filter(|p| p.index > 0) {
                break p.index;
            }
            assert!(std::time::Instant::now() < deadline, "leader never purged its log: {m:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let log_entries = c.node(leader).log.with_log(|l| l.stats()).expect("log stats");
        let snapshot = {
            let mut sm = c.node(leader).sm.clone();
            use openraft::storage::RaftStateMachine;
            sm.get_current_snapshot().await.expect("snapshot").expect("a snapshot exists")
        };
        let snapshot_bytes = snapshot.snapshot.get_ref().len() as u64;
        eprintln!(
            "after {data_bytes} bytes of writes ({}x the memtable): log purged to {purged} of {last}, \
             snapshot {snapshot_bytes} bytes, log {log_entries:?}",
            data_bytes / (16 << 10)
        );
        assert!(purged + 1000 > last, "log not purged near the end");
        assert!(snapshot_bytes * 10 < data_bytes, "the snapshot must not carry the data");

        // A new node joins as a learner: the entries it needs are gone, so it installs the
        // manifest snapshot and reads tables from the shared store.
        c.start(4).await;
        c.ids.push(4);
        c.node(leader)
            .raft
            .add_learner(4, BasicNode::new("node-4"), true)
            .await
            .expect("add learner");
        c.wait_applied(4, last, T).await;
        let m = c.node(4).raft.metrics().borrow().clone();
        assert!(m.snapshot.is_some(), "the learner did not install a snapshot: {m:?}");
        check_keys(&c, 4, 0..400, 3);
        assert_eq!(c.contents(4), c.contents(leader));
    });
}

#[test]
fn an_isolated_old_leader_cannot_commit() {
    rt().block_on(async {
        let c = Cluster::new(3).await;
        let last = write_keys(&c, 0..50, 1).await;
        wait_all_applied(&c, last).await;
        let old = c.leader(T).await;
        c.router.isolate(old, &c.ids);
        // A write to the cut-off leader cannot reach a majority.
        let stuck = tokio::time::timeout(
            Duration::from_secs(3),
            c.node(old)
                .raft
                .client_write(put(b"lost".to_vec(), b"never".to_vec())),
        )
        .await;
        assert!(
            !matches!(stuck, Ok(Ok(_))),
            "an isolated leader committed: {stuck:?}"
        );
        // The majority elects a new leader and commits.
        let deadline = std::time::Instant::now() + T;
        let new = loop {
            let l = c.leader(T).await;
            if l != old {
                break l;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "majority elected no new leader"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let (index, _) = c
            .write(
                Command::Write {
                    ops: vec![Op::CompareAndSet {
                        key: key(1),
                        expected_version: 0,
                        new: Some(b"x".to_vec()),
                        ttl_ms: None,
                    }],
                    now_ms: common::cluster::now_ms(),
                },
                T,
            )
            .await
            .clone();
        assert!(index > last);
        let _ = new;
        c.router.heal();
        wait_all_applied(&c, index).await;
        for id in c.running() {
            assert_eq!(c.node(id).sm.get(b"lost").expect("read"), None, "node {id}");
        }
        // The old leader's entry was replaced on every node.
        let all: BTreeMap<u64, usize> = c
            .running()
            .into_iter()
            .map(|id| (id, c.contents(id).len()))
            .collect();
        assert!(all.values().all(|&n| n == 50), "{all:?}");
    });
}

#[test]
fn objects_wait_for_a_lagging_replica_past_the_grace_period() {
    rt().block_on(async {
        let c = Cluster::new(3).await;
        let last = write_keys(&c, 0..100, 0).await;
        wait_all_applied(&c, last).await;
        let leader = c.leader(T).await;
        let lagging = c.running().into_iter().find(|&id| id != leader).unwrap();
        c.router.isolate(lagging, &c.ids);
        // The others write on: chunks and compactions remove the tables the lagging replica's
        // version still names, and their grace period (5 s here) passes.
        let began = std::time::Instant::now();
        let mut round = 1;
        let mut last = 0;
        while began.elapsed() < Duration::from_secs(7) || round < 4 {
            last = write_keys(&c, 0..400, round).await;
            round += 1;
        }
        // The lagging replica still reads everything it has, from its own (old) tables.
        for i in 0..100 {
            let v = c.node(lagging).sm.get(&key(i));
            assert!(
                matches!(v, Ok(Some(_))),
                "lagging replica reading key {i}: {v:?}"
            );
        }
        let stats = c.node(leader).sm.db().stats();
        assert!(
            stats.cold_objects_pending_deletion > 0,
            "no object became garbage: {stats:?}"
        );
        assert_eq!(
            stats.cold_objects_deleted, 0,
            "objects were deleted while a replica lags"
        );
        // Back in the group, it catches up, and then the garbage goes (deleted by whichever
        // node leads: the returning replica's higher term may cause an election).
        c.router.heal();
        wait_all_applied(&c, last).await;
        check_keys(&c, lagging, 0..400, round - 1);
        let deleted = |c: &Cluster| -> u64 {
            c.running()
                .iter()
                .map(|&id| c.node(id).sm.db().stats().cold_objects_deleted)
                .sum()
        };
        let deadline = std::time::Instant::now() + T;
        while deleted(&c) == 0 {
            assert!(
                std::time::Instant::now() < deadline,
                "garbage never deleted once every replica caught up"
            );
            // Compactions run (and collect garbage) as writes come.
            write_keys(&c, 0..50, round).await;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
}

/// File offsets of the records of a segment (after its 28-byte header), up to the zeros ahead.
fn record_offsets(seg: &[u8]) -> Vec<usize> {
    let mut out = Vec::new();
    let mut at = 28;
    while at + 8 <= seg.len() {
        let len = u32::from_le_bytes(seg[at..at + 4].try_into().expect("4 bytes")) as usize;
        if len == 0 {
            break;
        }
        out.push(at);
        at += 8 + len;
    }
    out
}

#[test]
fn a_replica_whose_log_lost_synced_entries_refuses_to_start_and_is_rebuilt() {
    rt().block_on(async {
        let mut c = Cluster::new(3).await;
        let last = write_keys(&c, 0..60, 0).await;
        wait_all_applied(&c, last).await;
        let leader = c.leader(T).await;
        let victim = (1..=3).find(|&id| id != leader).expect("a follower");
        c.stop(victim).await;

        // One flipped length bit in an acknowledged entry that later appends claim synced.
        let log_dir = c.dir(victim).join("log");
        let mut segs: Vec<_> = std::fs::read_dir(&log_dir)
            .expect("log dir")
            .map(|e| e.expect("entry").path())
            .filter(|p| p.extension().is_some_and(|e| e == "seg"))
            .collect();
        segs.sort();
        let seg = segs.pop().expect("a segment");
        let mut bytes = std::fs::read(&seg).expect("read segment");
        let offs = record_offsets(&bytes);
        assert!(offs.len() > 20, "{} records", offs.len());
        let at = offs[offs.len() / 2];
        bytes[at] ^= 0x10;
        std::fs::write(&seg, &bytes).expect("write segment");

        let err = raftlog::Replica::start(
            victim,
            &c.dir(victim),
            common::engine_options(c.objects.clone()),
            c.config.clone(),
            c.router.factory(victim),
            raftlog::MaintainerOptions::default(),
        )
        .await
        .err()
        .expect("a replica with a corrupt log must not start");
        match &err {
            raftlog::Error::CorruptRecord { path, offset, .. } => {
                assert_eq!((path, *offset), (&seg, at as u64), "{err}");
            }
            e => panic!("not refused as a corrupt record: {e}"),
        }

        // The README's way out: out of the voters, wiped, back as a learner, promoted.
        c.node(leader)
            .raft
            .change_membership(
                (1..=3).filter(|&id| id != victim).collect::<Vec<_>>(),
                false,
            )
            .await
            .expect("remove the victim");
        let last = write_keys(&c, 60..80, 0).await;
        std::fs::remove_dir_all(c.dir(victim)).expect("wipe");
        c.start(victim).await;
        c.node(leader)
            .raft
            .add_learner(victim, BasicNode::new(format!("node-{victim}")), true)
            .await
            .expect("add learner");
        c.node(leader)
            .raft
            .change_membership(vec![1, 2, 3], false)
            .await
            .expect("promote");
        c.wait_applied(victim, last, T).await;
        check_keys(&c, victim, 0..80, 0);
    });
}

/// Applies an entry that needs a table the store refuses to serve (as with expired
/// credentials): the follower waits without holding the runtime's one worker (the whole
/// in-process group shares it here), says why, and resumes once the store serves again; the
/// others go on committing meanwhile.
#[test]
fn a_follower_waits_out_a_refusing_object_store_without_blocking_the_runtime() {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("runtime")
        .block_on(async {
            let c = Cluster::new(3).await;
            // Enough writes that the keys live in tables in the store.
            let mut last = 0;
            for round in 0..3 {
                last = write_keys(&c, 0..400, round).await;
            }
            wait_all_applied(&c, last).await;
            let leader = c.leader(T).await;
            let stuck = c.running().into_iter().find(|&id| id != leader).unwrap();
            let term = c.node(leader).raft.metrics().borrow().current_term;
            c.faults[&stuck].set_all(FaultConfig {
                reject: true,
                ..FaultConfig::default()
            });
            // A compare-and-set must read the key's version from a table on every replica.
            let cas = Command::Write {
                ops: vec![Op::CompareAndSet {
                    key: key(7),
                    expected_version: 1,
                    new: Some(b"cas".to_vec()),
                    ttl_ms: None,
                }],
                now_ms: common::cluster::now_ms(),
            };
            let (cas_index, _) = c.write(cas, T).await;
            let deadline = std::time::Instant::now() + T;
            let stall = loop {
                if let Some(s) = c.node(stuck).sm.apply_stall() {
                    break s;
                }
                assert!(std::time::Instant::now() < deadline, "apply never stalled");
                tokio::time::sleep(Duration::from_millis(20)).await;
            };
            assert!(stall.rejected, "a refusal reported as an outage: {stall:?}");
            assert_eq!(stall.log_id.index, cas_index);
            // Meanwhile the group commits, with no election: heartbeats and votes go on.
            let more = write_keys(&c, 400..450, 0).await;
            for id in c.running().into_iter().filter(|&id| id != stuck) {
                c.wait_applied(id, more, T).await;
            }
            assert_eq!(c.node(leader).raft.metrics().borrow().current_term, term);
            assert!(c.node(stuck).sm.apply_stall().is_some());
            // The store serves again: the entry is applied as it was on the others.
            c.faults[&stuck].clear();
            c.wait_applied(stuck, more, T).await;
            assert!(c.node(stuck).sm.apply_stall().is_none());
            assert!(c.node(stuck).sm.stalled_entries() >= 1);
            assert_replicas_match(&c, leader, " after the store came back");
        });
}
