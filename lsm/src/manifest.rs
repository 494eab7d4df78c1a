//! The manifest: an append-only log of version edits, and `CURRENT`, which names it.
//!
//! Format version 3. `MANIFEST-NNNNNN` is a sequence of framed records (see `framing`); the first
//! holds the format version, each later one a claim (see `claim`) and a version edit:
//! ```text
//! record 0  := edit holding only field 6
//! record k  := claim(index k, durable_next) | edit          -- k >= 1
//! edit  := field*
//! field := 1 varint log_number | 2 varint next_file_number | 3 varint last_seq
//!        | 4 varint level varint number                                   (file deleted)
//!        | 5 varint level varint number varint size bytes smallest bytes largest
//!          varint min_seq varint max_seq varint entries varint deletions  (file added)
//!        | 6 varint format_version
//!        | 7 (as 5, for a table stored in the object store)
//!        | 8 varint flushed_seq       (every write up to it is in the tables; replicated mode)
//!        | 9 bytes app_state          (opaque to the engine, latest wins; replicated mode)
//!        | 10 (as 7) bytes object     (a cold table and its object key; since version 3)
//! bytes := varint len | len bytes
//! ```
//! `CURRENT` holds `MANIFEST-NNNNNN\n` and is replaced atomically (write, sync, rename). Every
//! append is synced before the next, so each record claims all before it durable (the first two
//! are written together and synced before `CURRENT` names the file). Replay applies edits in
//! order; damage is a torn tail (an edit whose append was not acknowledged), dropped, unless a
//! later record claims it synced: then it is corruption and the open fails. A new manifest (the
//! whole version as one edit) is started at every open and when the log grows large, so the log
//! never grows without bound.
//!
//! Version 2 (cold tables only as field 7, their object keys derived from the database's prefix
//! and number) is still read. So is version 1 (no claims), by the conservative rule: damage is a
//! torn tail only when the bad record reaches the end of the file or only zeros follow it. The
//! next open replaces either with a version-3 manifest naming every cold table's object.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::claim;
use crate::coding::{put_bytes, put_varint, Reader};
use crate::error::IoContext;
use crate::framing::{self, Records};
use crate::version::FileMeta;
use crate::{Error, Result};

pub(crate) const MANIFEST_FORMAT_VERSION: u64 = 3;
/// The version before claims, still read.
const MANIFEST_VERSION_1: u64 = 1;

/// A change to the set of live tables and the counters that go with it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct VersionEdit {
    /// WAL segments below this number are no longer needed.
    pub log_number: Option<u64>,
    /// Every file number below this may have been used.
    pub next_file_number: Option<u64>,
    pub last_seq: Option<u64>,
    pub deleted: Vec<(usize, u64)>,
    pub added: Vec<(usize, FileMeta)>,
    pub flushed_seq: Option<u64>,
    pub app_state: Option<Vec<u8>>,
}

impl VersionEdit {
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::new();
        for (tag, v) in [
            (1u64, self.log_number),
            (2, self.next_file_number),
            (3, self.last_seq),
            (8, self.flushed_seq),
        ] {
            if let Some(v) = v {
                put_varint(&mut b, tag);
                put_varint(&mut b, v);
            }
        }
        for (level, number) in &self.deleted {
            put_varint(&mut b, 4);
            put_varint(&mut b, *level as u64);
            put_varint(&mut b, *number);
        }
        for (level, m) in &self.added {
            let tag = match (m.cold, &m.object) {
                (true, Some(_)) => 10,
                (true, None) => 7,
                (false, _) => 5,
            };
            put_varint(&mut b, tag);
            put_varint(&mut b, *level as u64);
            put_varint(&mut b, m.number);
            put_varint(&mut b, m.size);
            put_bytes(&mut b, &m.smallest);
            put_bytes(&mut b, &m.largest);
            for v in [m.min_seq, m.max_seq, m.entries, m.deletions] {
                put_varint(&mut b, v);
            }
            if let (true, Some(object)) = (m.cold, &m.object) {
                put_bytes(&mut b, object.as_bytes());
            }
        }
        if let Some(a) = &self.app_state {
            put_varint(&mut b, 9);
            put_bytes(&mut b, a);
        }
        b
    }

    pub fn decode(buf: &[u8]) -> Option<VersionEdit> {
        let mut r = Reader::new(buf);
        let mut e = VersionEdit::default();
        while !r.is_empty() {
            match r.varint()? {
                1 => e.log_number = Some(r.varint()?),
                2 => e.next_file_number = Some(r.varint()?),
                3 => e.last_seq = Some(r.varint()?),
                8 => e.flushed_seq = Some(r.varint()?),
                9 => e.app_state = Some(r.bytes()?.to_vec()),
                4 => e
                    .deleted
                    .push((usize::try_from(r.varint()?).ok()?, r.varint()?)),
                tag @ (5 | 7 | 10) => {
                    let level = usize::try_from(r.varint()?).ok()?;
                    let number = r.varint()?;
                    let size = r.varint()?;
                    let smallest = r.bytes()?.to_vec();
                    let largest = r.bytes()?.to_vec();
                    if smallest.len() < crate::key::TRAILER_LEN
                        || largest.len() < crate::key::TRAILER_LEN
                    {
                        return None;
                    }
                    let meta = FileMeta {
                        number,
                        size,
                        smallest,
                        largest,
                        min_seq: r.varint()?,
                        max_seq: r.varint()?,
                        entries: r.varint()?,
                        deletions: r.varint()?,
                        cold: tag != 5,
                        object: None,
                    };
                    let meta = if tag == 10 {
                        let object = std::str::from_utf8(r.bytes()?).ok()?;
                        crate::object::validate_key(object).ok()?;
                        FileMeta {
                            object: Some(object.to_string()),
                            ..meta
                        }
                    } else {
                        meta
                    };
                    e.added.push((level, meta));
                }
                6 => {
                    let v = r.varint()?;
                    if !(MANIFEST_VERSION_1..=MANIFEST_FORMAT_VERSION).contains(&v) {
                        return None;
                    }
                }
                _ => return None,
            }
        }
        Some(e)
    }
}

pub(crate) fn manifest_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("MANIFEST-{number:06}"))
}

pub(crate) fn parse_manifest_name(name: &str) -> Option<u64> {
    name.strip_prefix("MANIFEST-")?.parse().ok()
}

/// The manifest being appended to.
pub(crate) struct ManifestWriter {
    file: File,
    number: u64,
    path: PathBuf,
    size: u64,
    /// Index of the next record.
    next_index: u64,
    /// Records below this index are durable: what the next record may claim.
    synced: u64,
}

impl ManifestWriter {
    /// Starts manifest `number` holding `base` (the whole version) and points `CURRENT` at it.
    pub fn create(dir: &Path, number: u64, base: &VersionEdit) -> Result<Self> {
        let path = manifest_path(dir, number);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .ctx(|| format!("creating {}", path.display()))?;
        let mut w = ManifestWriter {
            file,
            number,
            path,
            size: 0,
            next_index: 1,
            synced: 0,
        };
        let mut header = Vec::new();
        put_varint(&mut header, 6);
        put_varint(&mut header, MANIFEST_FORMAT_VERSION);
        let mut buf = Vec::new();
        framing::frame(&mut buf, &header);
        w.frame_edit(&mut buf, base);
        w.write_synced(&buf)?;
        crate::fsutil::write_atomic(
            &dir.join("CURRENT"),
            format!("MANIFEST-{number:06}\n").as_bytes(),
        )?;
        Ok(w)
    }

    pub fn number(&self) -> u64 {
        self.number
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends an edit and syncs it; the edit is in effect once this returns.
    pub fn append(&mut self, edit: &VersionEdit) -> Result<()> {
        let mut buf = Vec::new();
        self.frame_edit(&mut buf, edit);
        self.write_synced(&buf)
    }

    fn frame_edit(&mut self, buf: &mut Vec<u8>, edit: &VersionEdit) {
        let mut head = Vec::with_capacity(claim::CLAIM_LEN);
        claim::put(&mut head, self.next_index, self.synced);
        framing::frame_parts(buf, &[&head, &edit.encode()]);
        self.next_index += 1;
    }

    fn write_synced(&mut self, buf: &[u8]) -> Result<()> {
        self.file
            .write_all(buf)
            .and_then(|_| self.file.sync_data())
            .ctx(|| format!("appending to {}", self.path.display()))?;
        self.size += buf.len() as u64;
        self.synced = self.next_index;
        Ok(())
    }
}

/// The format version a manifest's first record declares, `None` if it declares none.
fn header_version(payload: &[u8]) -> Option<u64> {
    let mut r = Reader::new(payload);
    let v = (r.varint()? == 6).then(|| r.varint())??;
    r.is_empty().then_some(v)
}

/// The state a manifest replays to.
pub(crate) struct Replayed {
    pub manifest_number: u64,
    pub edits: Vec<VersionEdit>,
    pub dropped_bytes: u64,
}

/// Reads `CURRENT` and the manifest it names. `Ok(None)` when there is no `CURRENT`.
pub(crate) fn replay(dir: &Path) -> Result<Option<Replayed>> {
    let current = dir.join("CURRENT");
    let name = match std::fs::read(&current) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("reading {}", current.display()), e)),
    };
    let number = std::str::from_utf8(&name)
        .ok()
        .and_then(|s| s.strip_suffix('\n'))
        .and_then(parse_manifest_name)
        .ok_or_else(|| Error::corruption(&current, "does not name a manifest"))?;
    let path = manifest_path(dir, number);
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(Error::corruption(
                &path,
                "manifest named by CURRENT is missing",
            ))
        }
        Err(e) => return Err(Error::io(format!("reading {}", path.display()), e)),
    };
    replay_bytes(&path, number, &data).map(Some)
}

/// Replays the bytes of manifest `number` (read from `path`, which labels errors).
pub(crate) fn replay_bytes(path: &Path, number: u64, data: &[u8]) -> Result<Replayed> {
    let mut recs = Records::new(data);
    let mut edits = Vec::new();
    let mut valid = 0usize;
    let mut version = None;
    for (i, payload) in recs.by_ref().enumerate() {
        let body = match version {
            None => payload,
            Some(MANIFEST_VERSION_1) => payload,
            Some(_) => match claim::split(payload) {
                Some((index, _, body)) if index == i as u64 => body,
                // Framed right, claim wrong: damage, judged below like any other.
                _ => break,
            },
        };
        let Some(edit) = VersionEdit::decode(body) else {
            // The checksum matched, so this is not a torn write: refuse rather than guess.
            return Err(Error::corruption(
                path,
                format!("undecodable manifest record {i} at byte offset {valid}"),
            ));
        };
        if version.is_none() {
            version = Some(header_version(body).ok_or_else(|| {
                Error::corruption(path, "the first record does not hold the format version")
            })?);
        } else {
            edits.push(edit);
        }
        valid += framing::HEADER_LEN + payload.len();
    }
    if valid < data.len() {
        let damaged = edits.len() as u64 + u64::from(version.is_some());
        let proof = match version {
            Some(MANIFEST_VERSION_1) | None if !framing::is_torn_tail(data, valid) => {
                Some(format!(
                    "damaged record at byte offset {valid} with data after it; a version-1 \
                     manifest carries no durability claims"
                ))
            }
            Some(MANIFEST_VERSION_1) | None => None,
            Some(_) => claim::find(data, valid, damaged)
                .map(|p| claim::corruption_detail(valid, damaged, p)),
        };
        if let Some(detail) = proof {
            return Err(Error::corruption(path, detail));
        }
    }
    if edits.is_empty() {
        // The base edit is written and synced before CURRENT points here, so a manifest without
        // it is damage, not a torn append.
        return Err(Error::corruption(path, "manifest has no base version"));
    }
    Ok(Replayed {
        manifest_number: number,
        edits,
        dropped_bytes: (data.len() - valid) as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edit_roundtrip() {
        let e = VersionEdit {
            log_number: Some(4),
            next_file_number: Some(1000),
            last_seq: Some(77),
            flushed_seq: Some(70),
            app_state: Some(b"raft".to_vec()),
            deleted: vec![(0, 3), (1, 9)],
            added: vec![(
                2,
                FileMeta {
                    number: 12,
                    size: 4096,
                    smallest: crate::key::make_internal_key(b"a", 1, 1),
                    largest: crate::key::make_internal_key(b"z", 2, 1),
                    min_seq: 1,
                    max_seq: 2,
                    entries: 10,
                    deletions: 1,
                    cold: true,
                    object: Some("db.r7/sst/000012-00c0ffee00c0ffee.sst".into()),
                },
            )],
        };
        assert_eq!(VersionEdit::decode(&e.encode()), Some(e.clone()));
        let enc = e.encode();
        assert_eq!(VersionEdit::decode(&enc[..enc.len() - 1]), None);
    }
}

#[cfg(test)]
mod damage_tests {
    use super::*;
    use crate::framing::test_files::{edit_file, offsets};

    fn edit(n: u64) -> VersionEdit {
        VersionEdit {
            last_seq: Some(n),
            app_state: Some(vec![n as u8; 40]),
            ..Default::default()
        }
    }

    /// A manifest of a base and `n` appended edits; returns its path and record start offsets.
    fn manifest(dir: &Path, n: u64) -> (PathBuf, Vec<usize>) {
        let mut w = ManifestWriter::create(dir, 7, &edit(0)).unwrap();
        for i in 1..=n {
            w.append(&edit(i)).unwrap();
        }
        let path = manifest_path(dir, 7);
        (path.clone(), offsets(&std::fs::read(path).unwrap()))
    }

    fn refused_at(dir: &Path, path: &Path, offset: usize) {
        match replay(dir) {
            Err(Error::Corruption { path: p, detail }) => {
                assert_eq!(p, path);
                assert!(
                    detail.contains(&format!("byte offset {offset}")),
                    "{detail}"
                );
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("damage before synced edits was not refused"),
        }
    }

    #[test]
    fn a_flipped_length_before_synced_edits_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (path, offs) = manifest(d.path(), 6);
        edit_file(&path, |b| b[offs[3]] ^= 0x02);
        refused_at(d.path(), &path, offs[3]);
        // The same with a flipped byte in an edit's body.
        let d = tempfile::tempdir().unwrap();
        let (path, offs) = manifest(d.path(), 6);
        edit_file(&path, |b| b[offs[5] + 30] ^= 0x40);
        refused_at(d.path(), &path, offs[5]);
    }

    #[test]
    fn a_torn_last_edit_is_dropped() {
        let d = tempfile::tempdir().unwrap();
        let (path, offs) = manifest(d.path(), 6);
        let last = *offs.last().unwrap();
        // A power cut in the middle of the last append: a hole of zeros inside its record,
        // its end written.
        edit_file(&path, |b| b[last + 12..last + 30].fill(0));
        let r = replay(d.path()).unwrap().unwrap();
        assert_eq!(r.edits.len(), 6, "base and five edits");
        assert_eq!(r.edits.last().unwrap().last_seq, Some(5));
        assert!(r.dropped_bytes > 0);
        // A power cut that lost the start of the last append (its header among it) and kept
        // its end: nothing after the damage claims it synced.
        let d = tempfile::tempdir().unwrap();
        let (path, offs) = manifest(d.path(), 6);
        let last = *offs.last().unwrap();
        edit_file(&path, |b| b[last..last + 20].fill(0));
        assert_eq!(replay(d.path()).unwrap().unwrap().edits.len(), 6);
        // And an append cut short.
        let d = tempfile::tempdir().unwrap();
        let (path, offs) = manifest(d.path(), 6);
        edit_file(&path, |b| b.truncate(*offs.last().unwrap() + 5));
        assert_eq!(replay(d.path()).unwrap().unwrap().edits.len(), 6);
    }

    #[test]
    fn version_1_manifests_are_read_by_the_conservative_rule() {
        let write_v1 = |dir: &Path| {
            let mut b = Vec::new();
            let mut header = Vec::new();
            put_varint(&mut header, 6);
            put_varint(&mut header, 1);
            framing::frame(&mut b, &header);
            for i in 0..5 {
                framing::frame(&mut b, &edit(i).encode());
            }
            let path = manifest_path(dir, 3);
            std::fs::write(&path, &b).unwrap();
            std::fs::write(dir.join("CURRENT"), "MANIFEST-000003\n").unwrap();
            (path, offsets(&b))
        };
        let d = tempfile::tempdir().unwrap();
        let (path, offs) = write_v1(d.path());
        assert_eq!(replay(d.path()).unwrap().unwrap().edits.len(), 5);
        // A bad final record is a torn append.
        edit_file(&path, |b| b[offs[5] + 9] ^= 1);
        assert_eq!(replay(d.path()).unwrap().unwrap().edits.len(), 4);
        // Damage with data after it is refused.
        let (path, offs) = write_v1(d.path());
        edit_file(&path, |b| b[offs[2] + 9] ^= 1);
        refused_at(d.path(), &path, offs[2]);
    }
}
