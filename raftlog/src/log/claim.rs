//! Durability claims: what tells a torn tail from corruption.
//!
//! Every record of a version-2 segment carries `durable_next`: every entry below it was durable
//! (fsynced) when the record was written. Recovery that finds damage where entry `i` belongs
//! looks past it for a valid record claiming `durable_next > i`. Found: entry `i` had been
//! synced, and a crash cannot take back synced data, so the disk lost or altered it: the log is
//! corrupt and must not open. Not found: the damage is a torn tail (unsynced pages of a group
//! commit that a power cut left as a hole, or an interrupted append) and is cut.
//!
//! A claim must never be above the truth: it is raised only after an `fdatasync` that started
//! after the claimed entries were written, and lowered by a truncation *before* the next record
//! is written, so that no record claims a removed entry's replacement durable before it is.

use std::sync::{Arc, Mutex};

use super::framing::{self, HEADER_LEN};

/// Bytes of a version-2 record payload before the entry: `index u64 | durable_next u64`.
pub(crate) const CLAIM_LEN: usize = 16;

/// The log's durable watermark, shared with the handles of deferred appends.
#[derive(Debug, Clone, Default)]
pub(crate) struct Watermark(Arc<Mutex<State>>);

#[derive(Debug, Default)]
struct State {
    /// Every entry below this is durable.
    next: u64,
    /// Bumped by each truncation, so a sync that began before it cannot raise the watermark
    /// over entries the truncation removed.
    epoch: u64,
}

impl Watermark {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is two integers always left consistent: a panic elsewhere cannot tear it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What a record written now may claim.
    pub(crate) fn claim(&self) -> u64 {
        self.state().next
    }

    pub(crate) fn epoch(&self) -> u64 {
        self.state().epoch
    }

    /// Records that a sync made every entry below `next` durable; ignored when a truncation
    /// happened since `epoch` was read (before the entries were written).
    pub(crate) fn synced(&self, epoch: u64, next: u64) {
        let mut s = self.state();
        if s.epoch == epoch {
            s.next = s.next.max(next);
        }
    }

    /// Entries from `from` on are gone (or about to be replaced): nothing written from now on
    /// may claim them, and syncs in flight may not either.
    pub(crate) fn truncated(&self, from: u64) {
        let mut s = self.state();
        s.epoch += 1;
        s.next = s.next.min(from);
    }
}

/// Looks in `tail` (the bytes of a segment from where entry `damaged` should have started) for a
/// valid record claiming that entry durable. Returns its offset in `tail` and its claim.
///
/// Record boundaries after damage are unknown (the damaged length may be the damage), so every
/// byte offset is tried. A cheap test comes before the checksum: the record's index must lie
/// between the damaged one and the most records `tail` could hold, and its claim at or below its
/// own index (no record is durable when it is written); random bytes almost never pass it.
pub(crate) fn find(tail: &[u8], damaged: u64, max_payload: u32) -> Option<(usize, u64)> {
    let min_record = (HEADER_LEN + CLAIM_LEN) as u64;
    let most = damaged.saturating_add(tail.len() as u64 / min_record);
    (0..tail.len()).find_map(|at| {
        let head = tail.get(at..at + HEADER_LEN + CLAIM_LEN)?;
        let index = u64_at(head, HEADER_LEN)?;
        let claim = u64_at(head, HEADER_LEN + 8)?;
        if !(damaged < claim && claim <= index && index <= most) {
            return None;
        }
        let (payload, _) = framing::decode(&tail[at..], max_payload)?;
        (payload.len() >= CLAIM_LEN).then_some((at, claim))
    })
}

fn u64_at(b: &[u8], at: usize) -> Option<u64> {
    b.get(at..at + 8)?.try_into().ok().map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(out: &mut Vec<u8>, index: u64, claim: u64) {
        framing::frame(out, &[&index.to_le_bytes(), &claim.to_le_bytes(), b"data"]);
    }

    #[test]
    fn finds_only_claims_above_the_damage() {
        let mut tail = vec![0xAB; 13];
        record(&mut tail, 11, 5);
        assert_eq!(
            find(&tail, 10, 100),
            None,
            "claim 5 does not cover entry 10"
        );
        let at = tail.len();
        record(&mut tail, 12, 11);
        assert_eq!(find(&tail, 10, 100), Some((at, 11)));
        // A record claiming itself durable is not one this log wrote.
        let mut bogus = Vec::new();
        record(&mut bogus, 12, 13);
        assert_eq!(find(&bogus, 10, 100), None);
        // Nor is one whose index is further than the bytes allow.
        let mut far = Vec::new();
        record(&mut far, 1000, 999);
        assert_eq!(find(&far, 10, 100), None);
    }

    #[test]
    fn a_truncation_lowers_the_watermark_and_voids_syncs_in_flight() {
        let w = Watermark::default();
        let e = w.epoch();
        w.synced(e, 100);
        assert_eq!(w.claim(), 100);
        let in_flight = w.epoch();
        w.truncated(50);
        assert_eq!(w.claim(), 50);
        w.synced(in_flight, 100);
        assert_eq!(w.claim(), 50);
        w.synced(w.epoch(), 60);
        assert_eq!(w.claim(), 60);
    }
}
