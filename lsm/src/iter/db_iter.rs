//! The user-facing iterator: turns merged internal entries into the visible key/value pairs of
//! a snapshot, within bounds, in both directions.

use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::merge::MergeIter;
use crate::db::{Inner, SuperVersion};
use crate::key::{self, ValueKind, SEEK_KIND};
use crate::Result;

/// An iterator over the live key/value pairs of a range, as of one sequence number.
///
/// Items are `Result`s because reading a table can fail (I/O error, corruption); after an error
/// the iterator ends. `next` and `next_back` may be mixed; they meet in the middle without
/// yielding any pair twice. The iterator holds the files it reads: compaction never deletes them
/// under it.
pub struct Iter {
    inner: Arc<Inner>,
    sv: Arc<SuperVersion>,
    seq: u64,
    now: u64,
    lower: Bound<Vec<u8>>,
    upper: Bound<Vec<u8>>,
    fwd: Option<MergeIter>,
    bwd: Option<MergeIter>,
    /// Last user key yielded from the back.
    back_key: Option<Bytes>,
    /// Last user key the forward merge resolved (yielded, or found deleted): its older versions
    /// are skipped, and the backward direction stops before it.
    fwd_skip: Option<Bytes>,
    done: bool,
}

impl Iter {
    pub(crate) fn new(
        inner: Arc<Inner>,
        sv: Arc<SuperVersion>,
        seq: u64,
        lower: Bound<Vec<u8>>,
        upper: Bound<Vec<u8>>,
        now_ms: Option<u64>,
    ) -> Iter {
        let now = now_ms.unwrap_or_else(|| inner.opts.clock.now_millis());
        let empty = match (&lower, &upper) {
            (Bound::Included(l) | Bound::Excluded(l), Bound::Included(u) | Bound::Excluded(u)) => {
                l > u
                    || (l == u
                        && !(matches!(lower, Bound::Included(_))
                            && matches!(upper, Bound::Included(_))))
            }
            _ => false,
        };
        Iter {
            inner,
            sv,
            seq,
            now,
            lower,
            upper,
            fwd: None,
            bwd: None,
            back_key: None,
            fwd_skip: None,
            done: empty,
        }
    }

    /// The live value of an entry, or `None` for a tombstone or an expired value.
    fn live(&self, kind: u8, value: Bytes) -> Option<Bytes> {
        key::live_value(ValueKind::from_u8(kind)?, value, self.now)
    }

    fn next_front(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        if self.fwd.is_none() {
            let start = match &self.lower {
                Bound::Included(k) | Bound::Excluded(k) => {
                    Some(key::make_internal_key(k, key::MAX_SEQ, SEEK_KIND))
                }
                Bound::Unbounded => None,
            };
            self.fwd = Some(
                self.inner
                    .merge_iter(&self.sv, start.as_deref(), false, true)?,
            );
        }
        loop {
            let m = self.fwd.as_mut().expect("created above");
            if !m.valid() {
                return Ok(None);
            }
            let (uk, trailer) = key::split(m.key());
            if key::seq_of(trailer) > self.seq
                || self.fwd_skip.as_deref() == Some(uk)
                || below(&self.lower, uk)
            {
                m.advance()?;
                continue;
            }
            if above(&self.upper, uk) {
                return Ok(None);
            }
            // The first visible entry of a user key is its newest version at this snapshot.
            let mut ukb = m.key_bytes();
            ukb.truncate(ukb.len() - key::TRAILER_LEN);
            let value = m.value_bytes();
            m.advance()?;
            self.fwd_skip = Some(ukb.clone());
            if let Some(v) = self.live(key::kind_byte(trailer), value) {
                return Ok(Some((ukb, v)));
            }
        }
    }

    fn next_back_inner(&mut self) -> Result<Option<(Bytes, Bytes)>> {
        if self.bwd.is_none() {
            let start = match &self.upper {
                Bound::Included(k) | Bound::Excluded(k) => Some(key::make_internal_key(k, 0, 0)),
                Bound::Unbounded => None,
            };
            self.bwd = Some(
                self.inner
                    .merge_iter(&self.sv, start.as_deref(), true, true)?,
            );
        }
        // Walking backwards, a user key's versions arrive oldest first: remember the newest one
        // visible at the snapshot and decide when the key changes.
        let mut pending: Option<(Bytes, u8, Bytes)> = None;
        loop {
            let m = self.bwd.as_mut().expect("created above");
            let cur = m.valid().then(|| key::split(m.key()));
            let key_changed = match (&pending, &cur) {
                (Some((pk, _, _)), Some((uk, _))) => pk.as_ref() != *uk,
                (Some(_), None) => true,
                _ => false,
            };
            if key_changed {
                let (pk, kind, v) = pending.take().expect("checked");
                if let Some(v) = self.live(kind, v) {
                    return Ok(Some((pk, v)));
                }
            }
            let m = self.bwd.as_mut().expect("created above");
            if !m.valid() {
                return Ok(None);
            }
            let (uk, trailer) = key::split(m.key());
            if above(&self.upper, uk) || key::seq_of(trailer) > self.seq {
                m.advance()?;
                continue;
            }
            if below(&self.lower, uk) {
                return Ok(None);
            }
            let mut kb = m.key_bytes();
            kb.truncate(kb.len() - key::TRAILER_LEN);
            pending = Some((kb, key::kind_byte(trailer), m.value_bytes()));
            m.advance()?;
        }
    }
}

fn below(lower: &Bound<Vec<u8>>, uk: &[u8]) -> bool {
    match lower {
        Bound::Included(l) => uk < l.as_slice(),
        Bound::Excluded(l) => uk <= l.as_slice(),
        Bound::Unbounded => false,
    }
}

fn above(upper: &Bound<Vec<u8>>, uk: &[u8]) -> bool {
    match upper {
        Bound::Included(u) => uk > u.as_slice(),
        Bound::Excluded(u) => uk >= u.as_slice(),
        Bound::Unbounded => false,
    }
}

impl Iterator for Iter {
    type Item = Result<(Bytes, Bytes)>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_front() {
            Ok(Some((k, v))) => {
                if self.back_key.as_ref().is_some_and(|b| k >= *b) {
                    self.done = true;
                    return None;
                }
                Some(Ok((k, v)))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl DoubleEndedIterator for Iter {
    fn next_back(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        match self.next_back_inner() {
            Ok(Some((k, v))) => {
                if self.fwd_skip.as_ref().is_some_and(|f| k <= *f) {
                    self.done = true;
                    return None;
                }
                self.back_key = Some(k.clone());
                Some(Ok((k, v)))
            }
            Ok(None) => {
                self.done = true;
                None
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}
