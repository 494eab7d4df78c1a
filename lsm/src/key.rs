//! Internal keys: a user key followed by an 8-byte trailer `(seq << 8) | kind`, little-endian.
//!
//! Internal keys order by user key ascending, then by sequence number descending, so that a seek to
//! `(key, snapshot_seq)` lands on the newest version visible to the snapshot.

use std::cmp::Ordering;

/// Bytes of the trailer appended to every user key.
pub(crate) const TRAILER_LEN: usize = 8;
/// Largest sequence number (56 bits; the low byte of the trailer holds the kind).
pub const MAX_SEQ: u64 = (1 << 56) - 1;

/// What an entry records for its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum ValueKind {
    /// The key was deleted.
    Delete = 0,
    /// The key holds a value.
    Put = 1,
    /// The key holds a value that expires: the stored value starts with the expiry time as
    /// milliseconds since the Unix epoch (u64, little-endian).
    PutTtl = 2,
}

impl ValueKind {
    pub(crate) fn from_u8(b: u8) -> Option<ValueKind> {
        match b {
            0 => Some(ValueKind::Delete),
            1 => Some(ValueKind::Put),
            2 => Some(ValueKind::PutTtl),
            _ => None,
        }
    }
}

/// The kind byte of seek keys. The order ignores kinds, so `(k, seq, SEEK_KIND)` sorts with the
/// entry of `k` at `seq` and before every older one; the value only marks the key as a probe.
pub(crate) const SEEK_KIND: u8 = 0xff;

#[inline]
pub(crate) fn pack_trailer(seq: u64, kind: u8) -> u64 {
    (seq << 8) | u64::from(kind)
}

pub(crate) fn make_internal_key(user_key: &[u8], seq: u64, kind: u8) -> Vec<u8> {
    let mut k = Vec::with_capacity(user_key.len() + TRAILER_LEN);
    append_internal_key(&mut k, user_key, seq, kind);
    k
}

pub(crate) fn append_internal_key(buf: &mut Vec<u8>, user_key: &[u8], seq: u64, kind: u8) {
    buf.extend_from_slice(user_key);
    buf.extend_from_slice(&pack_trailer(seq, kind).to_le_bytes());
}

/// Splits an internal key; callers guarantee `ikey.len() >= TRAILER_LEN` (checked when decoding
/// blocks, enforced by construction elsewhere).
#[inline]
pub(crate) fn split(ikey: &[u8]) -> (&[u8], u64) {
    let n = ikey.len() - TRAILER_LEN;
    let mut t = [0u8; 8];
    t.copy_from_slice(&ikey[n..]);
    (&ikey[..n], u64::from_le_bytes(t))
}

#[inline]
pub(crate) fn user_key(ikey: &[u8]) -> &[u8] {
    &ikey[..ikey.len() - TRAILER_LEN]
}

#[inline]
pub(crate) fn seq_of(trailer: u64) -> u64 {
    trailer >> 8
}

#[inline]
pub(crate) fn kind_byte(trailer: u64) -> u8 {
    trailer as u8
}

/// Total order on internal keys: user key ascending, sequence descending. The kind byte is not
/// part of the order: two entries with the same key and sequence are the same entry (the later
/// operation of a batch replaces the earlier one in the memtable).
#[inline]
pub(crate) fn cmp_internal(a: &[u8], b: &[u8]) -> Ordering {
    let (ua, ta) = split(a);
    let (ub, tb) = split(b);
    match ua.cmp(ub) {
        Ordering::Equal => (tb >> 8).cmp(&(ta >> 8)),
        o => o,
    }
}

/// What a reader sees for an entry of `kind` whose stored payload is `payload`, at `now_ms`:
/// the user value, or `None` for a tombstone or an expired (or malformed) TTL value.
pub(crate) fn live_value(
    kind: ValueKind,
    payload: bytes::Bytes,
    now_ms: u64,
) -> Option<bytes::Bytes> {
    match kind {
        ValueKind::Put => Some(payload),
        ValueKind::Delete => None,
        ValueKind::PutTtl => {
            let (exp, _) = split_ttl(&payload)?;
            (exp > now_ms).then(|| payload.slice(8..))
        }
    }
}

/// Returns the expiry (ms since epoch) of a `PutTtl` payload and the user value behind it.
#[inline]
pub(crate) fn split_ttl(payload: &[u8]) -> Option<(u64, &[u8])> {
    let exp = crate::coding::u64_at(payload, 0)?;
    Some((exp, &payload[8..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ordering_is_user_asc_seq_desc() {
        let a1 = make_internal_key(b"a", 1, 1);
        let a2 = make_internal_key(b"a", 2, 1);
        let ab = make_internal_key(b"ab", 9, 1);
        assert_eq!(cmp_internal(&a2, &a1), Ordering::Less);
        assert_eq!(cmp_internal(&a1, &ab), Ordering::Less);
        assert_eq!(cmp_internal(&a2, &ab), Ordering::Less);
        let seek = make_internal_key(b"a", 1, SEEK_KIND);
        assert_eq!(cmp_internal(&seek, &a1), Ordering::Equal);
        assert_eq!(cmp_internal(&seek, &a2), Ordering::Greater);
        let del = make_internal_key(b"a", 1, 0);
        assert_eq!(cmp_internal(&del, &a1), Ordering::Equal);
    }
}
