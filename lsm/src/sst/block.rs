//! Data and index blocks: prefix-compressed entries with restart points (layout in `sst/mod.rs`).

use std::cmp::Ordering;

use bytes::Bytes;

use crate::coding::{get_varint, put_varint, u32_at};
use crate::key::{cmp_internal, TRAILER_LEN};

/// Builds one block in memory.
#[derive(Debug)]
pub struct BlockBuilder {
    buf: Vec<u8>,
    restarts: Vec<u32>,
    counter: usize,
    interval: usize,
    last_key: Vec<u8>,
}

impl BlockBuilder {
    /// A builder placing a restart point every `interval` entries.
    pub fn new(interval: usize) -> Self {
        BlockBuilder {
            buf: Vec::with_capacity(8192),
            restarts: vec![0],
            counter: 0,
            interval: interval.max(1),
            last_key: Vec::new(),
        }
    }

    /// Appends an entry; keys must arrive in increasing internal-key order.
    pub fn add(&mut self, key: &[u8], value: &[u8]) {
        let shared = if self.counter < self.interval {
            self.last_key
                .iter()
                .zip(key)
                .take_while(|(a, b)| a == b)
                .count()
        } else {
            self.restarts.push(self.buf.len() as u32);
            self.counter = 0;
            0
        };
        put_varint(&mut self.buf, shared as u64);
        put_varint(&mut self.buf, (key.len() - shared) as u64);
        put_varint(&mut self.buf, value.len() as u64);
        self.buf.extend_from_slice(&key[shared..]);
        self.buf.extend_from_slice(value);
        self.last_key.clear();
        self.last_key.extend_from_slice(key);
        self.counter += 1;
    }

    /// Bytes the finished block would take.
    pub fn estimated_size(&self) -> usize {
        self.buf.len() + 4 * self.restarts.len() + 4
    }

    /// True when no entry was added.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The last key added.
    pub fn last_key(&self) -> &[u8] {
        &self.last_key
    }

    /// Appends the restart array and returns the finished block; then the builder is reset.
    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.buf);
        for r in &self.restarts {
            out.extend_from_slice(&r.to_le_bytes());
        }
        out.extend_from_slice(&(self.restarts.len() as u32).to_le_bytes());
        self.restarts.clear();
        self.restarts.push(0);
        self.counter = 0;
        self.last_key.clear();
        self.buf = Vec::with_capacity(out.capacity());
        out
    }
}

/// Parses an entry header at `pos`: (shared, unshared, value_len, header length).
#[inline]
fn entry_header(data: &[u8], pos: usize) -> Option<(usize, usize, usize, usize)> {
    let rest = data.get(pos..)?;
    let (s, a) = get_varint(rest)?;
    let (u, b) = get_varint(&rest[a..])?;
    let (v, c) = get_varint(&rest[a + b..])?;
    Some((s as usize, u as usize, v as usize, a + b + c))
}

/// Splits a block into its entry area length and restart array, validating the trailer.
fn restarts(data: &[u8]) -> Option<(usize, u32)> {
    let n = u32_at(data, data.len().checked_sub(4)?)?;
    let area = data.len().checked_sub(4 + 4 * n as usize)?;
    if n == 0 {
        return None;
    }
    Some((area, n))
}

/// Offset of the last restart point whose key is `< target` (the first one if none is).
fn restart_before(data: &[u8], area: usize, n: u32, target: &[u8]) -> Result<usize, ()> {
    let restart_at = |i: u32| -> Result<usize, ()> {
        let off = u32_at(data, area + 4 * i as usize).ok_or(())? as usize;
        if off >= area {
            return Err(());
        }
        Ok(off)
    };
    let (mut lo, mut hi) = (0u32, n - 1);
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let off = restart_at(mid)?;
        let (shared, unshared, _, h) = entry_header(data, off).ok_or(())?;
        let end = off
            .checked_add(h)
            .and_then(|x| x.checked_add(unshared))
            .ok_or(())?;
        let key = data.get(off + h..end).ok_or(())?;
        if shared != 0 || key.len() < TRAILER_LEN {
            return Err(());
        }
        if cmp_internal(key, target) == Ordering::Less {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    restart_at(lo)
}

/// Finds the first entry whose internal key is `>= target`, for point lookups; returns its key
/// and value. `None` when every key is smaller. `Err(())` when the block is malformed.
#[allow(clippy::result_unit_err)]
pub fn seek(data: &Bytes, target: &[u8]) -> Result<Option<(Vec<u8>, Bytes)>, ()> {
    let (area, n) = restarts(data).ok_or(())?;
    let mut pos = restart_before(data, area, n, target)?;
    let mut key: Vec<u8> = Vec::with_capacity(target.len() + 16);
    while pos < area {
        let (shared, unshared, vlen, h) = entry_header(data, pos).ok_or(())?;
        if shared > key.len() {
            return Err(());
        }
        let kstart = pos + h;
        let vstart = kstart.checked_add(unshared).ok_or(())?;
        let end = vstart.checked_add(vlen).ok_or(())?;
        if end > area {
            return Err(());
        }
        key.truncate(shared);
        key.extend_from_slice(&data[kstart..vstart]);
        if key.len() < TRAILER_LEN {
            return Err(());
        }
        if cmp_internal(&key, target) != Ordering::Less {
            return Ok(Some((key, data.slice(vstart..end))));
        }
        pos = end;
    }
    Ok(None)
}

/// A block decoded for iteration: every key rebuilt into one buffer, so keys and values can be
/// handed out as cheap `Bytes` slices and the position can move both ways.
#[derive(Debug, Clone)]
pub struct DecodedBlock {
    keys: Bytes,
    data: Bytes,
    /// Per entry: key start, key end (in `keys`), value start, value end (in `data`).
    entries: Vec<[u32; 4]>,
}

impl DecodedBlock {
    /// Decodes every entry; `None` when the block is malformed.
    pub fn decode(data: Bytes) -> Option<DecodedBlock> {
        Self::decode_at(data, 0)
    }

    /// Decodes only the entries from the restart point before `target` on: enough for forward
    /// iteration from `target`, at a fraction of the cost of a whole block after a seek.
    pub fn decode_from(data: Bytes, target: &[u8]) -> Option<DecodedBlock> {
        let (area, n) = restarts(&data)?;
        let start = restart_before(&data, area, n, target).ok()?;
        Self::decode_at(data, start)
    }

    fn decode_at(data: Bytes, start: usize) -> Option<DecodedBlock> {
        let (area, _) = restarts(&data)?;
        let mut keys: Vec<u8> = Vec::with_capacity(area - start);
        let mut entries = Vec::with_capacity(64);
        let mut pos = start;
        let mut prev: (usize, usize) = (0, 0);
        while pos < area {
            let (shared, unshared, vlen, h) = entry_header(&data, pos)?;
            let kstart = pos + h;
            let vstart = kstart.checked_add(unshared)?;
            let end = vstart.checked_add(vlen)?;
            if end > area || shared > prev.1 - prev.0 {
                return None;
            }
            let start = keys.len();
            keys.extend_from_within(prev.0..prev.0 + shared);
            keys.extend_from_slice(&data[kstart..vstart]);
            if keys.len() - start < TRAILER_LEN {
                return None;
            }
            prev = (start, keys.len());
            entries.push([start as u32, keys.len() as u32, vstart as u32, end as u32]);
            pos = end;
        }
        Some(DecodedBlock {
            keys: Bytes::from(keys),
            data,
            entries,
        })
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when the block has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Internal key of entry `i`.
    #[inline]
    pub fn key(&self, i: usize) -> &[u8] {
        let e = self.entries[i];
        &self.keys[e[0] as usize..e[1] as usize]
    }

    /// Internal key of entry `i` as shared bytes.
    #[inline]
    pub fn key_bytes(&self, i: usize) -> Bytes {
        let e = self.entries[i];
        self.keys.slice(e[0] as usize..e[1] as usize)
    }

    /// Value of entry `i`.
    #[inline]
    pub fn value(&self, i: usize) -> &[u8] {
        let e = self.entries[i];
        &self.data[e[2] as usize..e[3] as usize]
    }

    /// Value of entry `i` as shared bytes.
    #[inline]
    pub fn value_bytes(&self, i: usize) -> Bytes {
        let e = self.entries[i];
        self.data.slice(e[2] as usize..e[3] as usize)
    }

    /// Index of the first entry with key `>= target` (`len()` when none).
    pub fn lower_bound(&self, target: &[u8]) -> usize {
        self.entries.partition_point(|e| {
            cmp_internal(&self.keys[e[0] as usize..e[1] as usize], target) == Ordering::Less
        })
    }

    /// Index of the first entry with key `> target` (`len()` when none).
    pub fn upper_bound(&self, target: &[u8]) -> usize {
        self.entries.partition_point(|e| {
            cmp_internal(&self.keys[e[0] as usize..e[1] as usize], target) != Ordering::Greater
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::make_internal_key;

    #[test]
    fn build_seek_and_decode() {
        let mut b = BlockBuilder::new(4);
        let keys: Vec<Vec<u8>> = (0..50u32)
            .map(|i| make_internal_key(format!("key{i:04}").as_bytes(), 7, 1))
            .collect();
        for (i, k) in keys.iter().enumerate() {
            b.add(k, format!("v{i}").as_bytes());
        }
        let data = Bytes::from(b.finish());
        let d = DecodedBlock::decode(data.clone()).unwrap();
        assert_eq!(d.len(), 50);
        for (i, k) in keys.iter().enumerate() {
            assert_eq!(d.key(i), &k[..]);
            let (fk, v) = seek(&data, k).unwrap().unwrap();
            assert_eq!(fk, *k);
            assert_eq!(&v[..], format!("v{i}").as_bytes());
        }
        let from = DecodedBlock::decode_from(data.clone(), &keys[30]).unwrap();
        assert!(from.len() < 50 && from.len() >= 20);
        assert_eq!(from.key(from.lower_bound(&keys[30])), &keys[30][..]);
        let past = make_internal_key(b"key9999", 7, 1);
        assert_eq!(seek(&data, &past).unwrap(), None);
        assert_eq!(d.lower_bound(&past), 50);
        // Damaged blocks are reported, not panicked on.
        let mut bad = data.to_vec();
        let n = bad.len();
        bad[n - 1] = 0xff;
        assert!(seek(&Bytes::from(bad.clone()), &past).is_err());
        assert!(DecodedBlock::decode(Bytes::from(bad)).is_none());
    }

    #[test]
    fn huge_lengths_are_errors_not_panics() {
        // One entry claiming an unshared key length near usize::MAX, then a valid restart array.
        let mut b = Vec::new();
        put_varint(&mut b, 0);
        put_varint(&mut b, u64::MAX - 3);
        put_varint(&mut b, 1);
        b.extend_from_slice(&[0u8; 16]);
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&1u32.to_le_bytes());
        let data = Bytes::from(b);
        let target = make_internal_key(b"k", 1, 1);
        assert!(seek(&data, &target).is_err());
        assert!(DecodedBlock::decode(data.clone()).is_none());
        assert!(DecodedBlock::decode_from(data, &target).is_none());
    }
}
