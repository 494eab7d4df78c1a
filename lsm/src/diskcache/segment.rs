//! The disk cache's files: segments of checksummed block records, appended and never rewritten.
//!
//! A segment `<id>.dcseg` (format version 1) is:
//! ```text
//! segment: magic u32 "SDC1" | version u32 | record*
//! record:  header crc u32 | data crc u32 | data len u32 | key len u16 | zero u16 |
//!          table fingerprint u64 | block offset u64 | object key | data
//! ```
//! The header crc covers the 28 header bytes after it and the object key; the data crc covers the
//! data (a data block exactly as stored in the table object, trailer included). Two checksums
//! rather than one so that opening checks only headers (reading back every cached byte would make
//! a large cache slow to open) while every read still checks the data it returns. The full object
//! key and the table's fingerprint are stored so that a read compares them: a collision of the
//! in-memory index's 64-bit hash, or an object key reused by another table, is then a miss, never
//! another table's block.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::coding::{u32_at, u64_at};

const MAGIC: u32 = u32::from_le_bytes(*b"SDC1");
const VERSION: u32 = 1;
/// Bytes of the segment header.
pub(super) const SEGMENT_HEADER: u64 = 8;
/// Bytes of a record header (before the key).
pub(super) const RECORD_HEADER: usize = 32;

/// The header every segment starts with.
pub(super) fn segment_header() -> [u8; SEGMENT_HEADER as usize] {
    let mut h = [0u8; SEGMENT_HEADER as usize];
    h[..4].copy_from_slice(&MAGIC.to_le_bytes());
    h[4..].copy_from_slice(&VERSION.to_le_bytes());
    h
}

pub(super) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:06}.dcseg"))
}

pub(super) fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".dcseg")?.parse().ok()
}

/// The 64-bit hash of a table the index is keyed by (with the block offset).
pub(super) fn table_hash(key: &str, fingerprint: u64) -> u64 {
    xxhash_rust::xxh3::xxh3_64_with_seed(key.as_bytes(), fingerprint)
}

fn header_crc(header: &[u8], key: &[u8]) -> u32 {
    let mut c = crc32fast::Hasher::new();
    c.update(&header[4..RECORD_HEADER]);
    c.update(key);
    c.finalize()
}

/// The record for block `offset` of the table stored as object `key` with `fingerprint`; `None`
/// when the key or the data is too long to describe (object keys are at most 1 KiB and blocks at
/// most 16 MiB, so never in practice).
pub(super) fn encode_record(
    key: &str,
    fingerprint: u64,
    offset: u64,
    data: &[u8],
) -> Option<Vec<u8>> {
    let key_len = u16::try_from(key.len()).ok()?;
    let data_len = u32::try_from(data.len()).ok()?;
    let mut r = Vec::with_capacity(RECORD_HEADER + key.len() + data.len());
    r.extend_from_slice(&[0; 4]);
    r.extend_from_slice(&crc32fast::hash(data).to_le_bytes());
    r.extend_from_slice(&data_len.to_le_bytes());
    r.extend_from_slice(&key_len.to_le_bytes());
    r.extend_from_slice(&[0; 2]);
    r.extend_from_slice(&fingerprint.to_le_bytes());
    r.extend_from_slice(&offset.to_le_bytes());
    r.extend_from_slice(key.as_bytes());
    let crc = header_crc(&r, key.as_bytes());
    r[..4].copy_from_slice(&crc.to_le_bytes());
    r.extend_from_slice(data);
    Some(r)
}

/// A record found by [`scan`], its data not yet checked.
pub(super) struct Scanned {
    pub table_hash: u64,
    pub offset: u64,
    /// Position of the record in the segment.
    pub pos: u64,
    pub data_len: u32,
}

/// What [`scan`] found in a segment.
pub(super) struct Scan {
    /// False when the file does not start with a version-1 segment header.
    pub valid_header: bool,
    pub records: Vec<Scanned>,
    /// End of the last record whose header checks out and whose data is all there.
    pub valid_end: u64,
    pub file_len: u64,
}

/// Reads the record headers of the segment at `path`, stopping at the first one that is torn or
/// damaged: what follows it cannot be located reliably.
pub(super) fn scan(path: &Path) -> std::io::Result<Scan> {
    let f = File::open(path)?;
    let file_len = f.metadata()?.len();
    let mut s = Scan {
        valid_header: false,
        records: Vec::new(),
        valid_end: 0,
        file_len,
    };
    // Records are small (a block each), so a large buffer turns the skips over their data into
    // sequential reads instead of a seek and a read per record.
    let mut r = BufReader::with_capacity(1 << 20, f);
    let mut seg = [0u8; SEGMENT_HEADER as usize];
    if r.read_exact(&mut seg).is_err() || seg != segment_header() {
        return Ok(s);
    }
    s.valid_header = true;
    let mut pos = SEGMENT_HEADER;
    s.valid_end = pos;
    let mut h = [0u8; RECORD_HEADER];
    let mut key = Vec::new();
    loop {
        if r.read_exact(&mut h).is_err() {
            return Ok(s);
        }
        let (data_len, key_len) = (
            u32_at(&h, 8).unwrap_or(0),
            u16::from_le_bytes([h[12], h[13]]),
        );
        key.resize(usize::from(key_len), 0);
        if r.read_exact(&mut key).is_err() || u32_at(&h, 0) != Some(header_crc(&h, &key)) {
            return Ok(s);
        }
        let end = pos + (RECORD_HEADER + key.len()) as u64 + u64::from(data_len);
        if end > file_len {
            return Ok(s);
        }
        let Ok(key) = std::str::from_utf8(&key) else {
            return Ok(s);
        };
        s.records.push(Scanned {
            table_hash: table_hash(key, u64_at(&h, 16).unwrap_or(0)),
            offset: u64_at(&h, 24).unwrap_or(0),
            pos,
            data_len,
        });
        r.seek_relative(i64::from(data_len))?;
        pos = end;
        s.valid_end = end;
    }
}

/// The data of the record at `pos`, if it is block `offset` of the table (`key`, `fingerprint`),
/// `len` bytes long, and both its checksums match; `Ok(None)` otherwise.
pub(super) fn read_record(
    f: &File,
    pos: u64,
    (key, fingerprint): (&str, u64),
    offset: u64,
    len: usize,
) -> std::io::Result<Option<Bytes>> {
    let start = RECORD_HEADER + key.len();
    let mut buf = vec![0u8; start + len];
    f.read_exact_at(&mut buf, pos)?;
    let h = &buf[..RECORD_HEADER];
    let ok = u32_at(h, 8) == u32::try_from(len).ok()
        && usize::from(u16::from_le_bytes([h[12], h[13]])) == key.len()
        && u64_at(h, 16) == Some(fingerprint)
        && u64_at(h, 24) == Some(offset)
        && &buf[RECORD_HEADER..start] == key.as_bytes()
        && u32_at(h, 0) == Some(header_crc(h, key.as_bytes()))
        && u32_at(h, 4) == Some(crc32fast::hash(&buf[start..]));
    Ok(ok.then(|| Bytes::from(buf).slice(start..)))
}

/// Opens segment `id` found at open: its file, its size, and every record up to the first torn or
/// damaged one. A segment of another format version or without a single record is deleted: it is
/// a cache, nothing in it is needed.
pub(super) fn open_segment(dir: &Path, id: u64) -> Option<(File, u64, Vec<Scanned>)> {
    let path = segment_path(dir, id);
    let scan = match scan(&path) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(segment = %path.display(), error = %e, "disk cache segment unreadable; dropped");
            let _ = std::fs::remove_file(&path);
            return None;
        }
    };
    if !scan.valid_header || scan.records.is_empty() {
        let _ = std::fs::remove_file(&path);
        return None;
    }
    let mut bytes = scan.file_len;
    if scan.valid_end < scan.file_len {
        // A crash during an append, or damage: keep the records before it, and cut the rest so
        // that the capacity counts only what can be used.
        tracing::warn!(segment = %path.display(), dropped_bytes = scan.file_len - scan.valid_end,
            "disk cache segment ends in a torn or damaged record; cut there");
        if OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|f| f.set_len(scan.valid_end))
            .is_ok()
        {
            bytes = scan.valid_end;
        }
    }
    Some((File::open(&path).ok()?, bytes, scan.records))
}
