//! Record framing shared by the WAL and the manifest (unchanged since version 1 of both; their
//! version 2 puts a durability claim at the start of the payload, see `claim`).
//!
//! ```text
//! record := len u32 LE | crc u32 LE | payload[len]
//! crc    := crc32(len bytes ++ payload)      -- covers the length, so a flipped length is caught
//! ```
//! A reader stops at the first record that is truncated, has a bad checksum, or has length zero
//! (a zero-filled tail). It never skips a bad record to replay what follows: a write
//! acknowledged after a lost one must not reappear without it. What follows is only searched
//! for a claim that tells the damage is corruption (see `claim`).

pub(crate) const HEADER_LEN: usize = 8;

/// Appends one framed record to `out`.
pub(crate) fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    frame_parts(out, &[payload]);
}

/// Appends one framed record whose payload is the concatenation of `parts`.
pub(crate) fn frame_parts(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let n: usize = parts.iter().map(|p| p.len()).sum();
    let len = (n as u32).to_le_bytes();
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

/// Iterates the valid records of `buf` in order.
pub(crate) struct Records<'a> {
    buf: &'a [u8],
    pos: usize,
    done: bool,
}

impl<'a> Records<'a> {
    pub(crate) fn new(buf: &'a [u8]) -> Self {
        Records {
            buf,
            pos: 0,
            done: false,
        }
    }

    /// Bytes after the last valid record.
    #[cfg(test)]
    pub(crate) fn dropped_bytes(&self) -> usize {
        self.buf.len() - self.pos
    }
}

impl<'a> Iterator for Records<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        if self.done {
            return None;
        }
        // Set until a whole record is found: the stream ends at its end or at the first damage.
        self.done = true;
        let rest = &self.buf[self.pos..];
        let (Some(len), Some(crc)) = (
            crate::coding::u32_at(rest, 0),
            crate::coding::u32_at(rest, 4),
        ) else {
            return None;
        };
        let len = len as usize;
        if len == 0 || rest.len() - HEADER_LEN < len {
            return None;
        }
        let payload = &rest[HEADER_LEN..HEADER_LEN + len];
        let mut h = crc32fast::Hasher::new();
        h.update(&rest[0..4]);
        h.update(payload);
        if h.finalize() != crc {
            return None;
        }
        self.done = false;
        self.pos += HEADER_LEN + len;
        Some(payload)
    }
}

/// The rule for version-1 files, which carry no claims: true when damage found at `offset` can
/// only be an interrupted final append (the record there runs past the end of the file, or
/// everything from there on is zero). Anything else is treated as corruption of acknowledged
/// data, since nothing tells it from a power cut's hole.
pub(crate) fn is_torn_tail(buf: &[u8], offset: usize) -> bool {
    let rest = &buf[offset..];
    if rest.iter().all(|&b| b == 0) {
        return true;
    }
    match crate::coding::u32_at(rest, 0) {
        None => true,
        Some(len) => HEADER_LEN + len as usize >= rest.len(),
    }
}

/// Helpers of the tests that damage framed files (WAL, manifest).
#[cfg(test)]
pub(crate) mod test_files {
    use std::path::Path;

    /// Byte offsets of the records of `data`, up to the first that cannot be a record.
    pub(crate) fn offsets(data: &[u8]) -> Vec<usize> {
        let mut out = Vec::new();
        let mut at = 0;
        while let Some(len) = crate::coding::u32_at(data, at) {
            out.push(at);
            at += super::HEADER_LEN + len as usize;
        }
        out
    }

    /// Rewrites the file at `path` through `f`.
    pub(crate) fn edit_file(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
        let mut b = std::fs::read(path).unwrap();
        f(&mut b);
        std::fs::write(path, b).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stops_at_first_damage() {
        let mut b = Vec::new();
        frame(&mut b, b"one");
        frame(&mut b, b"two");
        let first = HEADER_LEN + 3;
        frame(&mut b, b"three");
        let mut flipped = b.clone();
        flipped[first + HEADER_LEN] ^= 1;
        let mut r = Records::new(&flipped);
        assert_eq!(r.next(), Some(&b"one"[..]));
        assert_eq!(r.next(), None);
        assert_eq!(r.dropped_bytes(), b.len() - first);
        // A truncated tail ends the stream at the last whole record.
        let mut r = Records::new(&b[..b.len() - 1]);
        assert_eq!(r.by_ref().count(), 2);
        assert_eq!(r.dropped_bytes(), HEADER_LEN + 4);
    }
}
