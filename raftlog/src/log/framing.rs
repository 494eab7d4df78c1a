//! Record framing of segment and meta files (format version 1).
//!
//! ```text
//! record := len u32 LE | crc u32 LE | payload[len]
//! crc    := crc32(len bytes ++ payload)      -- covers the length, so a flipped length is caught
//! ```
//! `len` is never zero: a zero length is how a zero-filled tail (space allocated, data never
//! written) reads, and it must end the stream rather than look like an empty record. Readers stop
//! at the first record that is short, over the caller's size cap, or fails its checksum, and never
//! look past it.

use std::io::{self, Read};
use std::path::Path;

use crate::error::{Error, Result};

/// Bytes before each payload.
pub(crate) const HEADER_LEN: usize = 8;

/// Bytes of the prefix that starts every file: `magic [8] | version u32 LE`.
pub(crate) const PREFIX_LEN: usize = 12;

/// Appends a file prefix.
pub(crate) fn put_prefix(out: &mut Vec<u8>, magic: &[u8; 8], version: u32) {
    out.extend_from_slice(magic);
    out.extend_from_slice(&version.to_le_bytes());
}

/// Checks a file prefix and returns its version: a wrong magic is corruption (or a foreign
/// file); a version outside `oldest..=version` is [`Error::UnsupportedVersion`], so that a newer
/// format is refused rather than misread.
pub(crate) fn check_prefix(
    path: &Path,
    prefix: &[u8; PREFIX_LEN],
    magic: &[u8; 8],
    oldest: u32,
    version: u32,
) -> Result<u32> {
    let (found_magic, found_version) = prefix.split_at(magic.len());
    if found_magic != magic {
        return Err(Error::corruption(
            path,
            format!("bad magic, not a {} file", String::from_utf8_lossy(magic)),
        ));
    }
    let mut v = [0u8; 4];
    v.copy_from_slice(found_version);
    let found = u32::from_le_bytes(v);
    if !(oldest..=version).contains(&found) {
        return Err(Error::UnsupportedVersion {
            path: path.to_path_buf(),
            found,
            supported: version,
        });
    }
    Ok(found)
}

/// Appends one framed record whose payload is the concatenation of `parts`.
pub(crate) fn frame(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(n)
        .expect("callers cap payloads far below 4 GiB")
        .to_le_bytes();
    let mut h = crc32fast::Hasher::new();
    h.update(&len);
    for p in parts {
        h.update(p);
    }
    out.reserve(HEADER_LEN + n);
    out.extend_from_slice(&len);
    out.extend_from_slice(&h.finalize().to_le_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// The `(len, crc)` of a record header.
fn split_header(h: &[u8; HEADER_LEN]) -> (u32, u32) {
    let [a, b, c, d, e, f, g, i] = *h;
    (
        u32::from_le_bytes([a, b, c, d]),
        u32::from_le_bytes([e, f, g, i]),
    )
}

fn crc_ok(len: u32, crc: u32, payload: &[u8]) -> bool {
    let mut h = crc32fast::Hasher::new();
    h.update(&len.to_le_bytes());
    h.update(payload);
    h.finalize() == crc
}

/// What [`read_record`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Next {
    /// A valid record; its payload is in the caller's buffer.
    Record,
    /// The stream ended exactly at a record boundary.
    End,
    /// The stream ended inside a record, or the record is invalid. `declared_len` is the length
    /// its header claims, when the header was complete: it tells a record cut off by the end of
    /// the file (an interrupted append) from damage with data after it.
    Damaged {
        /// The header's length field, if the header could be read.
        declared_len: Option<u32>,
    },
}

/// Reads the next record of `r` into `payload`. Lengths above `max_len` are damage, so a corrupt
/// length never turns into a huge allocation.
pub(crate) fn read_record(
    r: &mut impl Read,
    max_len: u32,
    payload: &mut Vec<u8>,
) -> io::Result<Next> {
    let mut header = [0u8; HEADER_LEN];
    match read_full(r, &mut header)? {
        0 => return Ok(Next::End),
        HEADER_LEN => {}
        _ => return Ok(Next::Damaged { declared_len: None }),
    }
    let (len, crc) = split_header(&header);
    let damaged = Next::Damaged {
        declared_len: Some(len),
    };
    if len == 0 || len > max_len {
        return Ok(damaged);
    }
    payload.clear();
    payload.resize(len as usize, 0);
    if read_full(r, payload)? < payload.len() || !crc_ok(len, crc, payload) {
        return Ok(damaged);
    }
    Ok(Next::Record)
}

/// Decodes the record at the start of `buf`, returning its payload and the bytes it occupies.
/// `None` when the record is short, too long, or fails its checksum.
pub(crate) fn decode(buf: &[u8], max_len: u32) -> Option<(&[u8], usize)> {
    let header: &[u8; HEADER_LEN] = buf.get(..HEADER_LEN)?.try_into().ok()?;
    let (len, crc) = split_header(header);
    if len == 0 || len > max_len {
        return None;
    }
    let end = HEADER_LEN + len as usize;
    let payload = buf.get(HEADER_LEN..end)?;
    crc_ok(len, crc, payload).then_some((payload, end))
}

/// Fills `buf` from `r` as far as the stream allows; returns how many bytes were read.
pub(crate) fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read_all(mut buf: &[u8], max: u32) -> (Vec<Vec<u8>>, Next) {
        let mut out = Vec::new();
        let mut p = Vec::new();
        loop {
            match read_record(&mut buf, max, &mut p).unwrap() {
                Next::Record => out.push(p.clone()),
                end => return (out, end),
            }
        }
    }

    #[test]
    fn round_trip_and_decode() {
        let mut b = Vec::new();
        frame(&mut b, &[b"one"]);
        frame(&mut b, &[b"tw", b"o"]);
        let (recs, end) = read_all(&b, 100);
        assert_eq!(recs, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(end, Next::End);
        let (p, n) = decode(&b, 100).unwrap();
        assert_eq!((p, n), (&b"one"[..], HEADER_LEN + 3));
        assert_eq!(decode(&b[n..], 100).unwrap().0, b"two");
    }

    #[test]
    fn stops_at_first_damage() {
        let mut b = Vec::new();
        frame(&mut b, &[b"one"]);
        let first = b.len();
        frame(&mut b, &[b"two"]);
        frame(&mut b, &[b"three"]);
        // A flipped payload byte: the stream ends after "one" even though "three" is intact.
        let mut flipped = b.clone();
        flipped[first + HEADER_LEN] ^= 1;
        let (recs, end) = read_all(&flipped, 100);
        assert_eq!(recs.len(), 1);
        assert_eq!(
            end,
            Next::Damaged {
                declared_len: Some(3)
            }
        );
        assert!(decode(&flipped[first..], 100).is_none());
        // A flipped length byte is caught by the checksum too.
        let mut flipped = b.clone();
        flipped[first] ^= 4;
        assert_eq!(read_all(&flipped, 100).0.len(), 1);
        // Truncated inside the payload, and inside the header.
        assert_eq!(read_all(&b[..b.len() - 1], 100).0.len(), 2);
        let (recs, end) = read_all(&b[..first + 3], 100);
        assert_eq!(recs.len(), 1);
        assert_eq!(end, Next::Damaged { declared_len: None });
    }

    #[test]
    fn zero_and_oversized_lengths_are_damage() {
        let zeros = [0u8; 32];
        assert_eq!(
            read_all(&zeros, 100).1,
            Next::Damaged {
                declared_len: Some(0)
            }
        );
        let mut b = Vec::new();
        frame(&mut b, &[&[7u8; 200]]);
        assert_eq!(
            read_all(&b, 100).1,
            Next::Damaged {
                declared_len: Some(200)
            }
        );
        assert!(decode(&b, 100).is_none());
        // A huge declared length must not be allocated: it is rejected before reading.
        let mut huge = u32::MAX.to_le_bytes().to_vec();
        huge.extend_from_slice(&[0; 4]);
        assert_eq!(
            read_all(&huge, 100).1,
            Next::Damaged {
                declared_len: Some(u32::MAX)
            }
        );
    }
}
