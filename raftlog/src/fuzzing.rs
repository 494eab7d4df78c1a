//! Entry points for the fuzz targets (`fuzz/` at the repository root) and for the tests that
//! replay their corpora on stable (`tests/fuzz_corpus.rs`). Not part of the crate's API.
//!
//! As in `lsm::fuzzing`: each takes bytes as they could be found on disk or received from a
//! peer, runs this crate's own decoders over them, and returns `Ok` when they were accepted and
//! `Err` (the reason) when they were refused; no input may panic, except that an accepted value
//! must encode and decode back to the same encoding, which is asserted. Checksummed files are
//! decoded a second time with their checksums recomputed, so mutations get past them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use openraft::{
    BasicNode, CommittedLeaderId, Entry, EntryPayload, LogId, Membership, StoredMembership, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::log::framing::{self, PREFIX_LEN};
use crate::log::meta::{self, Purged};
use crate::log::segment;
use crate::log::{Log, MetaKind};
use crate::sm::{decode_saved, encode_saved, value, Point, Saved};
use crate::store::log_store::{decode, decode_entry, encode};
use crate::store::{Command, Op, TypeConfig};

/// What an entry point returns: `Err` holds the reason the input was refused.
pub type Outcome = std::result::Result<(), String>;

/// A target's name and entry point.
pub type Target = (&'static str, fn(&[u8]) -> Outcome);

/// Every target of this crate: its name (the fuzz target's, and its corpus directory's under
/// `fuzz/corpus/` and `fuzz/regressions/`) and its entry point.
pub const TARGETS: &[Target] = &[
    ("raft_segment", raft_segment),
    ("raft_meta", raft_meta),
    ("raft_entry", raft_entry),
    ("raft_snapshot", raft_snapshot),
];

/// A segment file as recovery finds it: the log is opened on a directory holding it (named
/// after the first index its header records, so recovery reads on), every recovered entry is
/// read back and decoded as the log store does. `Err` when recovery cut the log short or an
/// entry does not decode. Resealed too.
pub fn raft_segment(data: &[u8]) -> Outcome {
    let as_stored = open_segment(data);
    let resealed = reseal(data, PREFIX_LEN);
    if resealed != data {
        let _ = open_segment(&resealed);
    }
    as_stored
}

fn open_segment(data: &[u8]) -> Outcome {
    let dir = ScratchDir::new().map_err(|e| e.to_string())?;
    let at = PREFIX_LEN + framing::HEADER_LEN;
    let base = data
        .get(at..at + 8)
        .and_then(|b| b.try_into().ok())
        .map_or(1, u64::from_le_bytes);
    std::fs::write(segment::path_for(&dir.0, base), data).map_err(|e| e.to_string())?;
    let (log, info) = Log::open(&dir.0).map_err(|e| e.to_string())?;
    for (index, bytes) in log.range(..).map_err(|e| e.to_string())? {
        let entry = decode_entry(index, &bytes).map_err(|e| e.to_string())?;
        check_entry(&entry)?;
    }
    match info.damage {
        Some(d) => Err(format!("recovery stopped at {d:?}")),
        None => Ok(()),
    }
}

/// A meta file (vote, committed log id or purge point) as the log reads it, then its payload
/// decoded as each of the values the log store keeps there. Resealed too.
pub fn raft_meta(data: &[u8]) -> Outcome {
    let as_stored = read_meta(data);
    let resealed = reseal(data, PREFIX_LEN);
    if resealed != data {
        let _ = read_meta(&resealed);
    }
    as_stored
}

fn read_meta(data: &[u8]) -> Outcome {
    let path = Path::new("fuzz.meta");
    let payload = meta::decode_file(path, data).map_err(|e| e.to_string())?;
    let vote = round_trip::<Vote<u64>>(&payload);
    let committed = round_trip::<Option<LogId<u64>>>(&payload);
    let purged = Purged::decode(path, &payload)
        .map_err(|e| e.to_string())
        .and_then(|p| {
            assert_eq!(Purged::decode(path, &p.encode()).ok().as_ref(), Some(&p));
            round_trip::<LogId<u64>>(&p.record)
        });
    match (vote, committed, purged) {
        (Err(a), Err(b), Err(c)) => Err(format!("{a}; {b}; {c}")),
        _ => Ok(()),
    }
}

/// A log entry's bytes (as stored in a segment, or carried by an append request): the entry,
/// and the table edit inside a `ChunkAdded` or `Compacted` command, decoded as applying it does.
pub fn raft_entry(data: &[u8]) -> Outcome {
    let entry: Entry<TypeConfig> = decode(data).map_err(|e| e.to_string())?;
    check_entry(&entry)?;
    let again = encode(&entry).map_err(|e| e.to_string())?;
    let back: Entry<TypeConfig> = decode(&again).expect("an encoded entry decodes");
    assert_eq!(encode(&back).ok().as_ref(), Some(&again));
    Ok(())
}

fn check_entry(entry: &Entry<TypeConfig>) -> Outcome {
    match &entry.payload {
        EntryPayload::Normal(Command::ChunkAdded { edit, .. } | Command::Compacted { edit }) => {
            lsm::TableEdit::decode(edit)
                .map(|_| ())
                .map_err(|e| e.to_string())
        }
        _ => Ok(()),
    }
}

/// State machine data from outside the log: a snapshot (a manifest image whose owner state is
/// the saved state machine point), that saved state alone, or a stored value (version + user
/// value, as read from the engine's tables). `Ok` when any of them accepts the bytes. The
/// image is resealed too.
pub fn raft_snapshot(data: &[u8]) -> Outcome {
    let snapshot = |d: &[u8]| {
        let image = lsm::ManifestImage::decode(d).map_err(|e| e.to_string())?;
        saved_round_trip(image.app_state())
    };
    let as_stored = snapshot(data);
    if data.len() >= 12 {
        let mut resealed = data.to_vec();
        let crc = crc32fast::hash(&data[12..]);
        resealed[8..12].copy_from_slice(&crc.to_le_bytes());
        let _ = snapshot(&resealed);
    }
    let saved = saved_round_trip(data);
    let value = value::decode(Bytes::copy_from_slice(data))
        .map(|v| {
            let again = value::encode(v.version, &v.value);
            assert_eq!(value::decode(Bytes::from(again)), Some(v));
        })
        .ok_or_else(|| "not a stored value".to_string());
    match (as_stored, saved, value) {
        (Err(a), Err(b), Err(c)) => Err(format!("{a}; {b}; {c}")),
        _ => Ok(()),
    }
}

/// [`round_trip`] for the state saved with the tables, which has its own format tag.
fn saved_round_trip(bytes: &[u8]) -> Outcome {
    let v = decode_saved(bytes).map_err(|e| e.to_string())?;
    let again = encode_saved(&v).map_err(|e| e.to_string())?;
    let back = decode_saved(&again).expect("an encoded saved state decodes");
    assert_eq!(encode_saved(&back).ok().as_ref(), Some(&again));
    Ok(())
}

/// Decodes a value the log store wrote; an accepted one must re-encode to an encoding that
/// decodes to the same encoding again.
fn round_trip<T: Serialize + DeserializeOwned>(bytes: &[u8]) -> Outcome {
    let v: T = decode(bytes).map_err(|e| e.to_string())?;
    let again = encode(&v).map_err(|e| e.to_string())?;
    let back: T = decode(&again).expect("an encoded value decodes");
    assert_eq!(encode(&back).ok().as_ref(), Some(&again));
    Ok(())
}

/// `data` with the checksum of every whole record from `from` on recomputed (the log's framing:
/// length, crc32 of length and payload, payload), up to the first short or empty record.
pub fn reseal(data: &[u8], from: usize) -> Vec<u8> {
    let mut b = data.to_vec();
    let mut pos = from;
    while let Some(len) = b.get(pos..pos + 4).and_then(|l| l.try_into().ok()) {
        let len = u32::from_le_bytes(len) as usize;
        let end = pos + framing::HEADER_LEN + len;
        if len == 0 || end > b.len() {
            break;
        }
        let mut h = crc32fast::Hasher::new();
        h.update(&b[pos..pos + 4]);
        h.update(&b[pos + framing::HEADER_LEN..end]);
        b[pos + 4..pos + 8].copy_from_slice(&h.finalize().to_le_bytes());
        pos = end;
    }
    b
}

/// A seed input: target name, file name, bytes.
pub type Seed = (&'static str, String, Vec<u8>);

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn membership() -> Membership<u64, BasicNode> {
    let nodes: BTreeMap<u64, BasicNode> = (1..=3)
        .map(|n| (n, BasicNode::new(format!("127.0.0.1:{}", 7000 + n))))
        .collect();
    let voters: BTreeSet<u64> = nodes.keys().copied().collect();
    Membership::new(vec![voters], nodes)
}

/// One entry of each kind, as a group's log holds them, for indexes `1..`.
pub fn sample_entries() -> Vec<Entry<TypeConfig>> {
    let table_edit = lsm::fuzzing::seeds()
        .ok()
        .and_then(|s| {
            s.into_iter()
                .find(|(t, n, _)| *t == "lsm_replica_edit" && n == "valid-table-edit")
        })
        .map(|(_, _, b)| b)
        .unwrap_or_default();
    let payloads = vec![
        EntryPayload::Blank,
        EntryPayload::Membership(membership()),
        EntryPayload::Normal(Command::Write {
            now_ms: 1_700_000_000_000,
            ops: vec![
                Op::Put {
                    key: b"k1".to_vec(),
                    value: b"v1".to_vec(),
                },
                Op::PutWithTtl {
                    key: b"k2".to_vec(),
                    value: b"v2".to_vec(),
                    ttl_ms: 60_000,
                },
                Op::Delete {
                    key: b"k3".to_vec(),
                },
                Op::PutIfAbsent {
                    key: b"k4".to_vec(),
                    value: b"v4".to_vec(),
                    ttl_ms: Some(5),
                },
                Op::CompareAndSet {
                    key: b"k5".to_vec(),
                    expected_version: 3,
                    new: None,
                    ttl_ms: None,
                },
            ],
        }),
        EntryPayload::Normal(Command::Seal),
        EntryPayload::Normal(Command::ChunkAdded {
            sealed_at: 4,
            edit: table_edit.clone(),
        }),
        EntryPayload::Normal(Command::Compacted { edit: table_edit }),
    ];
    payloads
        .into_iter()
        .zip(1u64..)
        .map(|(payload, index)| Entry {
            log_id: log_id(1, index),
            payload,
        })
        .collect()
}

/// Seed corpora made by this crate's encoders (`valid-*`, which must be accepted) and a few
/// hand-made edge cases (`reject-*`, which must be refused). Deterministic, so the committed
/// files can be checked against it.
pub fn seeds() -> crate::Result<Vec<Seed>> {
    let mut out: Vec<Seed> = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push((target, name.to_string(), bytes));
    };
    let io = |e: std::io::Error| crate::Error::Io {
        context: "writing fuzz seeds".into(),
        source: e,
    };
    let entries = sample_entries();
    let encoded: Vec<Vec<u8>> = entries
        .iter()
        .map(|e| encode(e).map_err(|e| crate::Error::InvalidArgument(e.to_string())))
        .collect::<crate::Result<_>>()?;
    for (e, bytes) in entries.iter().zip(&encoded) {
        let kind = match &e.payload {
            EntryPayload::Blank => "blank",
            EntryPayload::Membership(_) => "membership",
            EntryPayload::Normal(Command::Write { .. }) => "write",
            EntryPayload::Normal(Command::Seal) => "seal",
            EntryPayload::Normal(Command::ChunkAdded { .. }) => "chunk-added",
            EntryPayload::Normal(Command::Compacted { .. }) => "compacted",
            EntryPayload::Normal(Command::Split { .. }) => "split",
        };
        add("raft_entry", &format!("valid-{kind}"), bytes.clone());
    }
    add("raft_entry", "reject-empty", Vec::new());
    add("raft_entry", "reject-unknown-format", vec![1, 0, 0]);

    let dir = ScratchDir::new()?;
    {
        let (mut log, _) = Log::open(&dir.0)?;
        let refs: Vec<(u64, &[u8])> = encoded
            .iter()
            .zip(1u64..)
            .map(|(b, i)| (i, &b[..]))
            .collect();
        log.append(&refs)?;
        let vote = encode(&Vote::new_committed(1, 1))
            .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
        log.save_meta(MetaKind::Vote, &vote)?;
        let committed = encode(&Some(log_id(1, 5)))
            .map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
        log.save_meta(MetaKind::Committed, &committed)?;
        let purged =
            encode(&log_id(1, 2)).map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
        log.purge(2, &purged)?;
    }
    let seg = std::fs::read(segment::path_for(&dir.0, 1)).map_err(io)?;
    add(
        "raft_segment",
        "reject-torn-tail",
        seg[..seg.len() - 2].to_vec(),
    );
    let mut zero_tail = seg.clone();
    zero_tail.extend_from_slice(&[0; 64]);
    add("raft_segment", "valid-zeros-ahead", zero_tail);
    add("raft_segment", "valid-six-entries", seg);
    for (name, file) in [
        ("vote", MetaKind::Vote.file_name()),
        ("committed", MetaKind::Committed.file_name()),
        ("purged", meta::PURGED_FILE),
    ] {
        add(
            "raft_meta",
            &format!("valid-{name}"),
            std::fs::read(dir.0.join(file)).map_err(io)?,
        );
    }
    add("raft_meta", "reject-short", b"SLOGMETA".to_vec());

    let saved = Saved {
        flushed: Point {
            last_log_id: Some(log_id(1, 70)),
            membership: StoredMembership::new(Some(log_id(1, 2)), membership()),
            now_ms: 1_700_000_000_000,
        },
        compacted_at: 60,
        range: Some(crate::RangeDescriptor {
            id: 7,
            start: b"m".to_vec(),
            end: None,
            epoch: 3,
        }),
    };
    let saved = encode_saved(&saved).map_err(|e| crate::Error::InvalidArgument(e.to_string()))?;
    add(
        "raft_snapshot",
        "valid-image",
        lsm::fuzzing::manifest_image(70, &saved),
    );
    add("raft_snapshot", "valid-saved-state", saved);
    add(
        "raft_snapshot",
        "valid-stored-value",
        value::encode(42, b"hello"),
    );
    add("raft_snapshot", "reject-empty", Vec::new());
    Ok(out)
}

/// A directory removed on drop (the crate depends on `tempfile` only in its tests). Under
/// `TMPDIR`, which the fuzz runner points at memory.
struct ScratchDir(PathBuf);

impl ScratchDir {
    fn new() -> crate::Result<ScratchDir> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("raftlog-fuzz-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| crate::Error::Io {
            context: format!("creating {}", dir.display()),
            source: e,
        })?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_accepted_and_edge_cases_refused() {
        for (target, name, bytes) in seeds().expect("seeds") {
            let f = TARGETS
                .iter()
                .find(|(t, _)| *t == target)
                .map(|(_, f)| f)
                .expect("known target");
            let r = f(&bytes);
            if name.starts_with("valid-") {
                assert_eq!(r, Ok(()), "{target}/{name}");
            } else {
                assert!(r.is_err(), "{target}/{name}");
            }
        }
    }
}
