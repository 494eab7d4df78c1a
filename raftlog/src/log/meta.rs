//! Small durable state beside the segments: the vote, the committed marker and the purge point.
//!
//! Format version 1, one file per kind (`vote.meta`, `committed.meta`, `purged.meta`):
//! ```text
//! file    := magic "SLOGMETA" | version u32 LE | record        -- record: see `framing`
//! purged  := upto u64 LE | caller's record                     -- payload of purged.meta
//! ```
//! Vote and committed payloads are opaque to this layer (openraft's serialized types). Files are
//! replaced atomically (temp file, fsync, rename, fsync directory), so a crash leaves the old or
//! the new value; damage under a final name is therefore corruption, not a crash artifact, and
//! is reported instead of ignored — a forgotten vote could let this node vote twice in a term.

use std::io::Read;
use std::path::Path;

use bytes::Bytes;

use super::framing::{self, PREFIX_LEN};
use super::fsutil;
use crate::error::{Error, IoContext, Result};

const MAGIC: &[u8; 8] = b"SLOGMETA";
/// Format version of meta files.
const VERSION: u32 = 1;

/// Largest meta payload: these values are a few dozen bytes; the cap keeps a corrupt or foreign
/// file from being read into memory whole.
pub const MAX_META_LEN: usize = 1 << 20;

/// Which small durable value [`Log::save_meta`](super::Log::save_meta) writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MetaKind {
    /// The Raft vote (term and candidate), which must never be forgotten once acknowledged.
    Vote,
    /// The last known committed log id (openraft's optional `save_committed`).
    Committed,
}

impl MetaKind {
    pub(crate) fn file_name(self) -> &'static str {
        match self {
            MetaKind::Vote => "vote.meta",
            MetaKind::Committed => "committed.meta",
        }
    }
}

/// File holding the purge point.
pub(crate) const PURGED_FILE: &str = "purged.meta";

/// The durable purge point: entries `..=upto` are gone, and the caller's `record` (openraft's
/// `last_purged_log_id`) describes the last of them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Purged {
    pub upto: u64,
    pub record: Bytes,
}

impl Purged {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(8 + self.record.len());
        v.extend_from_slice(&self.upto.to_le_bytes());
        v.extend_from_slice(&self.record);
        v
    }

    pub(crate) fn decode(path: &Path, payload: &[u8]) -> Result<Self> {
        let (upto, record) = payload
            .split_first_chunk::<8>()
            .ok_or_else(|| Error::corruption(path, "purge record shorter than its index"))?;
        let upto = u64::from_le_bytes(*upto);
        if upto == u64::MAX {
            // The log never writes it (nothing could follow), and `upto + 1` must not overflow.
            return Err(Error::corruption(path, "purge point u64::MAX"));
        }
        Ok(Purged {
            upto,
            record: Bytes::copy_from_slice(record),
        })
    }
}

/// Refuses a payload of `len` bytes over [`MAX_META_LEN`]. Callers check before they start
/// writing, so that a caller's mistake is not taken for a failed write.
pub(crate) fn check_len(len: usize) -> Result<()> {
    if len > MAX_META_LEN {
        return Err(Error::InvalidArgument(format!(
            "meta value of {len} bytes exceeds the limit of {MAX_META_LEN}"
        )));
    }
    Ok(())
}

/// Durably replaces `dir/name` with `payload`; returns once the new value survives a crash.
pub(crate) fn write(dir: &Path, name: &str, payload: &[u8]) -> Result<()> {
    check_len(payload.len())?;
    let mut buf = Vec::with_capacity(PREFIX_LEN + framing::HEADER_LEN + payload.len());
    framing::put_prefix(&mut buf, MAGIC, VERSION);
    framing::frame(&mut buf, &[payload]);
    fsutil::write_atomic(&dir.join(name), &buf)
}

/// Reads `dir/name`; `None` when it was never written.
pub(crate) fn read(dir: &Path, name: &str) -> Result<Option<Bytes>> {
    let path = dir.join(name);
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(Error::io(format!("opening {}", path.display()), e)),
    };
    let max = (PREFIX_LEN + framing::HEADER_LEN + MAX_META_LEN) as u64;
    let mut buf = Vec::new();
    // One byte past the cap is enough to tell an oversized file without reading it all.
    file.take(max + 1)
        .read_to_end(&mut buf)
        .ctx(|| format!("reading {}", path.display()))?;
    decode_file(&path, &buf).map(Some)
}

pub(crate) fn decode_file(path: &Path, buf: &[u8]) -> Result<Bytes> {
    let bad = |detail: &str| Error::corruption(path, detail);
    let (prefix, rest) = buf
        .split_first_chunk::<PREFIX_LEN>()
        .ok_or_else(|| bad("shorter than the meta file header"))?;
    framing::check_prefix(path, prefix, MAGIC, VERSION, VERSION)?;
    match framing::decode(rest, MAX_META_LEN as u32) {
        Some((payload, used)) if used == rest.len() => Ok(Bytes::copy_from_slice(payload)),
        Some(_) => Err(bad("trailing bytes after the meta record")),
        None => Err(bad("meta record is truncated or fails its checksum")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_replace() {
        let d = tempfile::tempdir().unwrap();
        assert_eq!(read(d.path(), "vote.meta").unwrap(), None);
        write(d.path(), "vote.meta", b"term 1").unwrap();
        write(d.path(), "vote.meta", b"term 2").unwrap();
        assert_eq!(
            read(d.path(), "vote.meta").unwrap().as_deref(),
            Some(&b"term 2"[..])
        );
        let p = Purged {
            upto: 42,
            record: Bytes::from_static(b"log id"),
        };
        assert_eq!(Purged::decode(Path::new("x"), &p.encode()).unwrap(), p);
        assert!(Purged::decode(Path::new("x"), b"short").is_err());
    }

    #[test]
    fn damage_is_reported_not_ignored() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "vote.meta", b"term 7").unwrap();
        let path = d.path().join("vote.meta");
        let good = std::fs::read(&path).unwrap();
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x10;
            std::fs::write(&path, &bad).unwrap();
            let err = read(d.path(), "vote.meta").unwrap_err();
            let is_version = (MAGIC.len()..PREFIX_LEN).contains(&i);
            assert_eq!(
                matches!(err, Error::UnsupportedVersion { .. }),
                is_version,
                "byte {i}: {err}"
            );
            assert_eq!(err.is_corruption(), !is_version, "byte {i}: {err}");
        }
        for len in 0..good.len() {
            std::fs::write(&path, &good[..len]).unwrap();
            assert!(read(d.path(), "vote.meta").unwrap_err().is_corruption());
        }
        let mut long = good.clone();
        long.push(0);
        std::fs::write(&path, &long).unwrap();
        assert!(read(d.path(), "vote.meta").unwrap_err().is_corruption());
    }

    #[test]
    fn oversized_values_are_refused_and_huge_files_not_read() {
        let d = tempfile::tempdir().unwrap();
        let big = vec![0u8; MAX_META_LEN + 1];
        assert!(matches!(
            write(d.path(), "vote.meta", &big),
            Err(Error::InvalidArgument(_))
        ));
        write(d.path(), "vote.meta", &big[..MAX_META_LEN]).unwrap();
        assert_eq!(
            read(d.path(), "vote.meta").unwrap().unwrap().len(),
            MAX_META_LEN
        );
        // A file far larger than any meta value is rejected after reading only the cap.
        let f = std::fs::File::create(d.path().join("vote.meta")).unwrap();
        f.set_len(1 << 30).unwrap();
        assert!(read(d.path(), "vote.meta").unwrap_err().is_corruption());
    }
}
