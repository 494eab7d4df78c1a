//! Atomic write batches.
//!
//! Encoded representation (also the body of a WAL record after the sequence number):
//! ```text
//! op* where op := kind u8 | varint key_len | key | [varint value_len | value]   (no value for deletes)
//! kind 0 = delete, 1 = put, 2 = put with absolute expiry (value = expiry_ms u64 LE ++ user value),
//! kind 3 = put with relative TTL (value = ttl_ms u64 LE ++ user value; only in memory, turned into
//!          kind 2 when the batch is committed, so the log holds absolute times)
//! ```

use std::time::Duration;

use crate::coding::{put_bytes, Reader};
use crate::key::ValueKind;
use crate::{Error, MAX_BATCH_LEN, MAX_KEY_LEN, MAX_VALUE_LEN};

const OP_DELETE: u8 = 0;
const OP_PUT: u8 = 1;
const OP_PUT_EXPIRY: u8 = 2;
const OP_PUT_TTL: u8 = 3;

/// A group of puts and deletes applied atomically: after a crash either all of it is present or
/// none of it, and readers never see part of it.
///
/// Operations on the same key apply in order (the last one wins).
#[derive(Debug, Clone, Default)]
pub struct WriteBatch {
    rep: Vec<u8>,
    count: u32,
    has_relative_ttl: bool,
    invalid: Option<Error>,
}

/// One decoded operation of a batch.
pub(crate) struct Op<'a> {
    pub kind: ValueKind,
    pub key: &'a [u8],
    /// For `PutTtl`, the expiry prefix followed by the user value.
    pub value: &'a [u8],
}

impl WriteBatch {
    /// An empty batch.
    pub fn new() -> Self {
        Self::default()
    }

    fn check(&mut self, key: &[u8], value: Option<&[u8]>) -> bool {
        if self.invalid.is_some() {
            return false;
        }
        if key.len() > MAX_KEY_LEN {
            self.invalid = Some(Error::KeyTooLarge {
                len: key.len(),
                max: MAX_KEY_LEN,
            });
            return false;
        }
        if let Some(v) = value {
            if v.len() > MAX_VALUE_LEN {
                self.invalid = Some(Error::ValueTooLarge {
                    len: v.len(),
                    max: MAX_VALUE_LEN,
                });
                return false;
            }
        }
        true
    }

    fn push(&mut self, op: u8, key: &[u8], prefix: Option<u64>, value: Option<&[u8]>) {
        if !self.check(key, value) {
            return;
        }
        self.rep
            .reserve(1 + 2 * 10 + 8 + key.len() + value.map_or(0, <[u8]>::len));
        self.rep.push(op);
        put_bytes(&mut self.rep, key);
        if let Some(v) = value {
            match prefix {
                Some(p) => {
                    crate::coding::put_varint(&mut self.rep, v.len() as u64 + 8);
                    self.rep.extend_from_slice(&p.to_le_bytes());
                    self.rep.extend_from_slice(v);
                }
                None => put_bytes(&mut self.rep, v),
            }
        }
        self.count += 1;
        if self.rep.len() > MAX_BATCH_LEN {
            self.invalid = Some(Error::BatchTooLarge {
                len: self.rep.len(),
                max: MAX_BATCH_LEN,
            });
        }
    }

    /// Sets `key` to `value`.
    pub fn put(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>) {
        self.push(OP_PUT, key.as_ref(), None, Some(value.as_ref()));
    }

    /// Sets `key` to `value` until `ttl` after the batch is committed; afterwards the key reads as
    /// absent and compaction eventually drops it.
    pub fn put_with_ttl(&mut self, key: impl AsRef<[u8]>, value: impl AsRef<[u8]>, ttl: Duration) {
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        self.has_relative_ttl = true;
        self.push(OP_PUT_TTL, key.as_ref(), Some(ms), Some(value.as_ref()));
    }

    /// Sets `key` to `value` until the absolute time `expires_at_ms` (milliseconds since the Unix
    /// epoch). Deterministic, unlike [`put_with_ttl`](Self::put_with_ttl): replicas applying the
    /// same batch agree on the expiry.
    pub fn put_with_expiry(
        &mut self,
        key: impl AsRef<[u8]>,
        value: impl AsRef<[u8]>,
        expires_at_ms: u64,
    ) {
        self.push(
            OP_PUT_EXPIRY,
            key.as_ref(),
            Some(expires_at_ms),
            Some(value.as_ref()),
        );
    }

    /// Deletes `key`.
    pub fn delete(&mut self, key: impl AsRef<[u8]>) {
        self.push(OP_DELETE, key.as_ref(), None, None);
    }

    /// Number of operations in the batch.
    pub fn len(&self) -> usize {
        self.count as usize
    }

    /// True when the batch holds no operation.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Encoded size in bytes.
    pub fn size_in_bytes(&self) -> usize {
        self.rep.len()
    }

    /// Removes every operation.
    pub fn clear(&mut self) {
        *self = Self::default();
    }

    /// `Err` with the error a write of this batch would fail with (an oversized key, value or
    /// batch), so a caller can refuse it before doing anything else.
    pub fn validate(&self) -> crate::Result<()> {
        match &self.invalid {
            Some(e) => Err(e.clone()),
            None => Ok(()),
        }
    }

    /// The error of the first rejected operation, if any (the write of this batch fails with it).
    pub(crate) fn validation_error(&self) -> Option<&Error> {
        self.invalid.as_ref()
    }

    /// The representation to log and apply, with relative TTLs turned into absolute expiries
    /// (the clock is read only when the batch has one).
    pub(crate) fn resolved_rep(&self, now_ms: impl FnOnce() -> u64) -> std::borrow::Cow<'_, [u8]> {
        if !self.has_relative_ttl {
            return std::borrow::Cow::Borrowed(&self.rep);
        }
        let now_ms = now_ms();
        let mut out = Vec::with_capacity(self.rep.len());
        // The rep was produced by `push`, so it always decodes; a relative TTL op always carries
        // its 8-byte prefix.
        for (op, key, value) in RawOps(Reader::new(&self.rep)).map_while(|o| o) {
            match (op, value) {
                (OP_PUT_TTL, Some(v)) if v.len() >= 8 => {
                    let ttl = crate::coding::u64_at(v, 0).unwrap_or(0);
                    out.push(OP_PUT_EXPIRY);
                    put_bytes(&mut out, key);
                    crate::coding::put_varint(&mut out, v.len() as u64);
                    out.extend_from_slice(&now_ms.saturating_add(ttl).to_le_bytes());
                    out.extend_from_slice(&v[8..]);
                }
                _ => {
                    out.push(op);
                    put_bytes(&mut out, key);
                    if let Some(v) = value {
                        put_bytes(&mut out, v);
                    }
                }
            }
        }
        std::borrow::Cow::Owned(out)
    }
}

/// An encoded operation: op byte, key, value (none for deletes).
type RawOp<'a> = (u8, &'a [u8], Option<&'a [u8]>);

struct RawOps<'a>(Reader<'a>);

impl<'a> Iterator for RawOps<'a> {
    type Item = Option<RawOp<'a>>;
    fn next(&mut self) -> Option<Self::Item> {
        if self.0.is_empty() {
            return None;
        }
        Some(decode_raw(&mut self.0))
    }
}

fn decode_raw<'a>(r: &mut Reader<'a>) -> Option<RawOp<'a>> {
    let op = r.u8()?;
    let key = r.bytes()?;
    let value = if op == OP_DELETE {
        None
    } else {
        Some(r.bytes()?)
    };
    Some((op, key, value))
}

/// Decodes a resolved representation (from a WAL record or `resolved_rep`). Returns `None` on
/// malformed input so that a damaged log record is rejected as a whole.
pub(crate) fn decode_ops(rep: &[u8]) -> Option<Vec<Op<'_>>> {
    ops(rep).collect()
}

/// Iterates the operations of a resolved representation; an item is `None` where the input is
/// malformed (callers applying untrusted input collect first, see `decode_ops`).
pub(crate) fn ops(rep: &[u8]) -> impl Iterator<Item = Option<Op<'_>>> {
    let mut r = Reader::new(rep);
    std::iter::from_fn(move || {
        if r.is_empty() {
            return None;
        }
        let decoded = decode_raw(&mut r).and_then(|(op, key, value)| {
            let kind = match op {
                OP_DELETE => ValueKind::Delete,
                OP_PUT => ValueKind::Put,
                OP_PUT_EXPIRY if value.is_some_and(|v| v.len() >= 8) => ValueKind::PutTtl,
                _ => return None,
            };
            (key.len() <= MAX_KEY_LEN).then_some(Op {
                kind,
                key,
                value: value.unwrap_or(&[]),
            })
        });
        if decoded.is_none() {
            r = Reader::new(&[]);
        }
        Some(decoded)
    })
}
