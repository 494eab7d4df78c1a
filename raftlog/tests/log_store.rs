//! The openraft `RaftLogStorage` over the segmented log, driven through openraft's own traits on a
//! tokio runtime, with real files: appends, votes, purges and truncations read back after the store
//! is dropped and reopened from its directory, recovery from a torn tail, and damaged records
//! surfacing as `StorageError`s rather than panics.
//!
//! Appends go through `RaftLogStorageExt::blocking_append`, openraft's public helper that builds
//! a `LogFlushed` callback and waits for it, so an append that never acknowledged would fail here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt};
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, RaftLogReader, Vote,
};
use raftlog::store::log_store::FORMAT;
use raftlog::store::{Command, LogStore, Op, TypeConfig};
use raftlog::{Log, LogOptions, RecoveryInfo};

fn id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

/// A different payload for each index, cycling through every kind of entry and command.
fn entry(term: u64, index: u64) -> Entry<TypeConfig> {
    let key = format!("k{index}").into_bytes();
    let payload = match index % 8 {
        0 => EntryPayload::Blank,
        1 => {
            let nodes: BTreeMap<u64, BasicNode> = (1..=3)
                .map(|n| (n, BasicNode::new(format!("127.0.0.1:{}", 7000 + n))))
                .collect();
            let voters: BTreeSet<u64> = nodes.keys().copied().collect();
            EntryPayload::Membership(Membership::new(vec![voters], nodes))
        }
        2 => EntryPayload::Normal(Command::Write {
            now_ms: index,
            ops: vec![
                Op::Put {
                    key: key.clone(),
                    value: vec![index as u8; 100],
                },
                Op::PutWithTtl {
                    key: key.clone(),
                    value: b"v".to_vec(),
                    ttl_ms: index * 1000,
                },
                Op::Delete { key: key.clone() },
            ],
        }),
        3 => EntryPayload::Normal(Command::Write {
            now_ms: index,
            ops: vec![
                Op::PutIfAbsent {
                    key: key.clone(),
                    value: b"first".to_vec(),
                    ttl_ms: None,
                },
                Op::CompareAndSet {
                    key: key.clone(),
                    expected_version: 0,
                    new: Some(b"x".to_vec()),
                    ttl_ms: Some(5),
                },
                Op::CompareAndSet {
                    key,
                    expected_version: index,
                    new: None,
                    ttl_ms: None,
                },
            ],
        }),
        4 => EntryPayload::Normal(Command::Seal),
        5 => EntryPayload::Normal(Command::ChunkAdded {
            sealed_at: index - 1,
            edit: vec![0xAB; index as usize],
        }),
        6 => EntryPayload::Normal(Command::Compacted {
            edit: b"sst-meta".to_vec(),
        }),
        _ => EntryPayload::Normal(Command::Write {
            ops: Vec::new(),
            now_ms: 0,
        }),
    };
    Entry {
        log_id: id(term, index),
        payload,
    }
}

fn entries(term: u64, lo: u64, hi: u64) -> Vec<Entry<TypeConfig>> {
    (lo..hi).map(|i| entry(term, i)).collect()
}

fn open(dir: &Path) -> (LogStore, RecoveryInfo) {
    LogStore::open(dir).expect("open log store")
}

/// Small segments, so that the tests cross segment boundaries.
fn open_small(dir: &Path) -> LogStore {
    LogStore::open_with(dir, LogOptions { segment_size: 2048 })
        .expect("open log store")
        .0
}

/// Appends `lo..hi` in batches of `batch`, each acknowledged before the next.
async fn append(store: &mut LogStore, term: u64, lo: u64, hi: u64, batch: u64) {
    let mut i = lo;
    while i < hi {
        let end = (i + batch).min(hi);
        store
            .blocking_append(entries(term, i, end))
            .await
            .expect("append");
        i = end;
    }
}

async fn read_all(store: &mut LogStore) -> Vec<Entry<TypeConfig>> {
    store.try_get_log_entries(..).await.expect("read log")
}

#[tokio::test]
async fn appended_entries_read_back_after_reopen() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut s = open_small(d.path());
        let st = s.get_log_state().await.unwrap();
        assert_eq!((st.last_purged_log_id, st.last_log_id), (None, None));
        append(&mut s, 1, 0, 40, 7).await;
        append(&mut s, 2, 40, 100, 13).await;
        // One `Log::append` (one fdatasync) per acknowledged batch: 6 + 5 batches.
        let stats = s.with_log(|l| l.stats()).unwrap();
        assert_eq!((stats.appends, stats.entries_appended), (11, 100));
        assert!(stats.segments_created > 1, "crossed segments: {stats:?}");
        // Readable as soon as the append returned, before any reopen.
        assert_eq!(
            s.try_get_log_entries(95..).await.unwrap(),
            entries(2, 95, 100)
        );
    }
    let (mut s, info) = open(d.path());
    assert_eq!(info.damage, None);
    let mut want = entries(1, 0, 40);
    want.extend(entries(2, 40, 100));
    assert_eq!(read_all(&mut s).await, want);
    assert_eq!(
        s.try_get_log_entries(37..43).await.unwrap(),
        want[37..43].to_vec()
    );
    // Past the end is cut, not an error ("entry that is not found is allowed").
    assert_eq!(
        s.try_get_log_entries(98..200).await.unwrap(),
        want[98..].to_vec()
    );
    assert_eq!(
        s.limited_get_log_entries(10, 12).await.unwrap(),
        want[10..12]
    );
    let st = s.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, None);
    assert_eq!(st.last_log_id, Some(id(2, 99)));

    // The reopened store continues the log; a gap is refused and changes nothing.
    append(&mut s, 3, 100, 101, 1).await;
    let err = s
        .blocking_append(entries(3, 102, 103))
        .await
        .expect_err("a gap must be refused");
    // The error is the append's own (the log refused the gap), not a dropped callback.
    assert!(err.to_string().contains("expected"), "{err}");
    drop(s);
    let (mut s, _) = open(d.path());
    assert_eq!(
        s.get_log_state().await.unwrap().last_log_id,
        Some(id(3, 100))
    );
    assert_eq!(read_all(&mut s).await.len(), 101);
}

#[tokio::test]
async fn the_log_reader_shares_the_log() {
    let d = tempfile::tempdir().unwrap();
    let (mut s, _) = open(d.path());
    let mut reader = s.get_log_reader().await;
    assert_eq!(reader.try_get_log_entries(..).await.unwrap(), vec![]);
    append(&mut s, 1, 1, 6, 5).await;
    assert_eq!(
        reader.try_get_log_entries(..).await.unwrap(),
        entries(1, 1, 6)
    );
    s.truncate(id(1, 3)).await.unwrap();
    assert_eq!(
        reader.try_get_log_entries(..).await.unwrap(),
        entries(1, 1, 3)
    );
}

#[tokio::test]
async fn vote_and_committed_survive_reopen() {
    let d = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = open(d.path());
        assert_eq!(s.read_vote().await.unwrap(), None);
        assert_eq!(s.read_committed().await.unwrap(), None);
        s.save_vote(&Vote::new(3, 2)).await.unwrap();
        s.save_vote(&Vote::new_committed(4, 1)).await.unwrap();
        s.save_committed(Some(id(4, 17))).await.unwrap();
        assert_eq!(
            s.read_vote().await.unwrap(),
            Some(Vote::new_committed(4, 1))
        );
    }
    {
        let (mut s, _) = open(d.path());
        assert_eq!(
            s.read_vote().await.unwrap(),
            Some(Vote::new_committed(4, 1))
        );
        assert_eq!(s.read_committed().await.unwrap(), Some(id(4, 17)));
        s.save_vote(&Vote::new(5, 3)).await.unwrap();
        s.save_committed(None).await.unwrap();
    }
    let (mut s, _) = open(d.path());
    assert_eq!(s.read_vote().await.unwrap(), Some(Vote::new(5, 3)));
    assert_eq!(s.read_committed().await.unwrap(), None);
    // Within the save interval only the first value reaches the disk: a restart may find an
    // older committed id, never a newer one.
    s.save_committed(Some(id(6, 20))).await.unwrap();
    s.save_committed(Some(id(6, 30))).await.unwrap();
    assert_eq!(s.read_committed().await.unwrap(), Some(id(6, 30)));
    drop(s);
    let (mut s, _) = open(d.path());
    assert_eq!(s.read_committed().await.unwrap(), Some(id(6, 20)));
}

#[tokio::test]
async fn purge_point_survives_reopen_and_hides_what_it_covers() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut s = open_small(d.path());
        append(&mut s, 1, 1, 101, 10).await;
        s.purge(id(1, 50)).await.unwrap();
        let st = s.get_log_state().await.unwrap();
        assert_eq!(st.last_purged_log_id, Some(id(1, 50)));
        assert_eq!(st.last_log_id, Some(id(1, 100)));
    }
    let mut s = open_small(d.path());
    let st = s.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(id(1, 50)));
    assert_eq!(st.last_log_id, Some(id(1, 100)));
    assert_eq!(read_all(&mut s).await, entries(1, 51, 101));
    // Purged entries are absent from a read (openraft's reader contract), never returned.
    assert_eq!(
        s.try_get_log_entries(40..60).await.unwrap(),
        entries(1, 51, 60)
    );
    for range in [50..51, 1..2] {
        assert!(
            s.try_get_log_entries(range.clone())
                .await
                .unwrap()
                .is_empty(),
            "read of purged {range:?} must return nothing"
        );
    }
    let mut reader = s.get_log_reader().await;
    assert_eq!(
        reader.try_get_log_entries(45..55).await.unwrap(),
        entries(1, 51, 55)
    );

    // A purge past the last entry (as after installing a snapshot) empties the log; its log id
    // is then also the last log id, and the log continues after it.
    s.purge(id(2, 150)).await.unwrap();
    drop(reader);
    drop(s);
    let mut s = open_small(d.path());
    let st = s.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(id(2, 150)));
    assert_eq!(st.last_log_id, Some(id(2, 150)));
    assert_eq!(read_all(&mut s).await, vec![]);
    assert!(s.blocking_append(entries(2, 152, 153)).await.is_err());
    append(&mut s, 2, 151, 160, 3).await;
    drop(s);
    let mut s = open_small(d.path());
    assert_eq!(read_all(&mut s).await, entries(2, 151, 160));
    let st = s.get_log_state().await.unwrap();
    assert_eq!(st.last_purged_log_id, Some(id(2, 150)));
    assert_eq!(st.last_log_id, Some(id(2, 159)));
}

#[tokio::test]
async fn truncated_entries_are_gone_after_reopen() {
    let d = tempfile::tempdir().unwrap();
    {
        let mut s = open_small(d.path());
        append(&mut s, 1, 1, 51, 5).await;
        s.truncate(id(1, 30)).await.unwrap();
        assert_eq!(
            s.get_log_state().await.unwrap().last_log_id,
            Some(id(1, 29))
        );
    }
    let mut s = open_small(d.path());
    assert_eq!(read_all(&mut s).await, entries(1, 1, 30));
    assert_eq!(
        s.try_get_log_entries(25..40).await.unwrap(),
        entries(1, 25, 30)
    );
    // A new leader's entries replace the truncated ones.
    append(&mut s, 2, 30, 36, 6).await;
    drop(s);
    let mut s = open_small(d.path());
    let mut want = entries(1, 1, 30);
    want.extend(entries(2, 30, 36));
    assert_eq!(read_all(&mut s).await, want);
    assert_eq!(
        s.get_log_state().await.unwrap().last_log_id,
        Some(id(2, 35))
    );
    // Truncating everything leaves an empty log with no last log id.
    s.truncate(id(1, 1)).await.unwrap();
    drop(s);
    let mut s = open_small(d.path());
    assert_eq!(read_all(&mut s).await, vec![]);
    let st = s.get_log_state().await.unwrap();
    assert_eq!((st.last_purged_log_id, st.last_log_id), (None, None));
}

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_torn_tail_loses_only_the_torn_entry() {
    let d = tempfile::tempdir().unwrap();
    {
        let (mut s, _) = open(d.path());
        append(&mut s, 1, 1, 21, 1).await;
    }
    // Cut the last entry short, as a crash during its write would.
    let last = segments(d.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 5)
        .unwrap();
    let (mut s, info) = open(d.path());
    let damage = info.damage.expect("recovery reports the torn record");
    assert_eq!(damage.index, 20, "{damage:?}");
    assert_eq!(read_all(&mut s).await, entries(1, 1, 20));
    assert_eq!(
        s.get_log_state().await.unwrap().last_log_id,
        Some(id(1, 19))
    );
    // The log continues at the torn entry's index.
    append(&mut s, 2, 20, 22, 2).await;
    drop(s);
    let (mut s, info) = open(d.path());
    assert_eq!(info.damage, None);
    let mut want = entries(1, 1, 20);
    want.extend(entries(2, 20, 22));
    assert_eq!(read_all(&mut s).await, want);
}

/// Bytes the store would have written for `value`: the format tag, then postcard.
fn tagged<T: serde::Serialize>(value: &T) -> Vec<u8> {
    let mut v = vec![FORMAT];
    v.extend(postcard::to_allocvec(value).unwrap());
    v
}

#[tokio::test]
async fn undecodable_records_are_storage_errors() {
    // Records the `Log` holds intact (its checksums pass) but that are not what the store wrote.
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("garbage", vec![FORMAT, 0xFF, 0xFF, 0xFF]),
        ("unknown tag", {
            let mut v = tagged(&entry(1, 3));
            v[0] = FORMAT + 1;
            v
        }),
        ("empty", vec![]),
        ("trailing bytes", {
            let mut v = tagged(&entry(1, 3));
            v.push(0);
            v
        }),
        ("another index's entry", tagged(&entry(1, 4))),
    ];
    for (what, bad) in cases {
        let d = tempfile::tempdir().unwrap();
        {
            let (mut log, _) = Log::open(d.path()).unwrap();
            let good = [tagged(&entry(1, 1)), tagged(&entry(1, 2))];
            log.append(&[(1, &good[0]), (2, &good[1]), (3, &bad)])
                .unwrap();
        }
        let (mut s, _) = open(d.path());
        assert!(s.try_get_log_entries(..).await.is_err(), "{what}: read all");
        assert!(
            s.try_get_log_entries(3..4).await.is_err(),
            "{what}: read it"
        );
        assert!(s.get_log_state().await.is_err(), "{what}: log state");
        // The entries before it are still readable.
        assert_eq!(
            s.try_get_log_entries(1..3).await.unwrap(),
            entries(1, 1, 3),
            "{what}"
        );
    }

    // A vote or committed value that does not decode.
    let d = tempfile::tempdir().unwrap();
    {
        let (mut log, _) = Log::open(d.path()).unwrap();
        log.save_meta(raftlog::MetaKind::Vote, &[FORMAT, 0xFF])
            .unwrap();
        log.save_meta(raftlog::MetaKind::Committed, &[FORMAT + 1, 0])
            .unwrap();
        // A purge record that names another index than the purge point.
        log.purge(10, &tagged(&id(1, 11))).unwrap();
    }
    let (mut s, _) = open(d.path());
    assert!(s.read_vote().await.is_err());
    assert!(s.read_committed().await.is_err());
    assert!(s.get_log_state().await.is_err());
}
