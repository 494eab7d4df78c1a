//! The manifest: an append-only log of version edits, and `CURRENT`, which names it.
//!
//! Format version 1. `MANIFEST-NNNNNN` is a sequence of framed records (see `framing`); the first
//! holds the format version, each later one a version edit:
//! ```text
//! edit  := field*
//! field := 1 varint log_number | 2 varint next_file_number | 3 varint last_seq
//!        | 4 varint level varint number                                   (file deleted)
//!        | 5 varint level varint number varint size bytes smallest bytes largest
//!          varint min_seq varint max_seq varint entries varint deletions  (file added)
//!        | 6 varint format_version
//!        | 7 (as 5, for a table stored in the object store)
//!        | 8 varint flushed_seq       (every write up to it is in the tables; replicated mode)
//!        | 9 bytes app_state          (opaque to the engine, latest wins; replicated mode)
//! bytes := varint len | len bytes
//! ```
//! `CURRENT` holds `MANIFEST-NNNNNN\n` and is replaced atomically (write, sync, rename). Replay
//! applies edits in order and stops at a torn or corrupt tail, which can only be an edit whose
//! append was not acknowledged. A new manifest (the whole version as one edit) is started at
//! every open and when the log grows large, so the log never grows without bound.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::coding::{put_bytes, put_varint, Reader};
use crate::error::IoContext;
use crate::framing::{self, Records};
use crate::version::FileMeta;
use crate::{Error, Result};

pub(crate) const MANIFEST_FORMAT_VERSION: u64 = 1;

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
            put_varint(&mut b, if m.cold { 7 } else { 5 });
            put_varint(&mut b, *level as u64);
            put_varint(&mut b, m.number);
            put_varint(&mut b, m.size);
            put_bytes(&mut b, &m.smallest);
            put_bytes(&mut b, &m.largest);
            for v in [m.min_seq, m.max_seq, m.entries, m.deletions] {
                put_varint(&mut b, v);
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
                tag @ (5 | 7) => {
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
                        cold: tag == 7,
                    };
                    e.added.push((level, meta));
                }
                6 => {
                    if r.varint()? != MANIFEST_FORMAT_VERSION {
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
        };
        let mut header = Vec::new();
        put_varint(&mut header, 6);
        put_varint(&mut header, MANIFEST_FORMAT_VERSION);
        let mut buf = Vec::new();
        framing::frame(&mut buf, &header);
        framing::frame(&mut buf, &base.encode());
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
        framing::frame(&mut buf, &edit.encode());
        self.write_synced(&buf)
    }

    fn write_synced(&mut self, buf: &[u8]) -> Result<()> {
        self.file
            .write_all(buf)
            .and_then(|_| self.file.sync_data())
            .ctx(|| format!("appending to {}", self.path.display()))?;
        self.size += buf.len() as u64;
        Ok(())
    }
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
    for (i, payload) in recs.by_ref().enumerate() {
        let Some(edit) = VersionEdit::decode(payload) else {
            // The checksum matched, so this is not a torn write: refuse rather than guess.
            return Err(Error::corruption(
                path,
                format!("undecodable manifest record {i}"),
            ));
        };
        if i > 0 {
            edits.push(edit);
        }
        valid += framing::HEADER_LEN + payload.len();
    }
    if let Some(framing::End::Damaged { offset }) = recs.end() {
        if !framing::is_torn_tail(data, offset) {
            return Err(Error::corruption(
                path,
                format!("damaged record at offset {offset} with data after it"),
            ));
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
                },
            )],
        };
        assert_eq!(VersionEdit::decode(&e.encode()), Some(e.clone()));
        let enc = e.encode();
        assert_eq!(VersionEdit::decode(&enc[..enc.len() - 1]), None);
    }
}
