//! Durability claims: what tells a torn tail of the WAL or the manifest from corruption.
//!
//! In format version 2 of both, every record after the first carries, before its body,
//! ```text
//! claim := index u64 LE | durable_next u64 LE
//! ```
//! `index` is the record's position in its file (the first, a format header, is 0) and
//! `durable_next` says that every record below it was durable (fsynced) when this one was
//! written; it never exceeds `index`. Damage where record `i` belongs is corruption only if a
//! later valid record claims `durable_next > i`: synced data does not vanish in a crash. Any
//! other damage is a torn tail (an interrupted append, or unsynced pages of a group commit that
//! a power cut left as a hole before records that were never acknowledged) and is cut.

use crate::framing::{Records, HEADER_LEN};

/// Bytes of a claim.
pub(crate) const CLAIM_LEN: usize = 16;

/// Appends a claim (the start of a record's payload).
pub(crate) fn put(out: &mut Vec<u8>, index: u64, durable_next: u64) {
    debug_assert!(
        durable_next <= index,
        "no record is durable before it is written"
    );
    out.extend_from_slice(&index.to_le_bytes());
    out.extend_from_slice(&durable_next.to_le_bytes());
}

/// Splits a payload into its claim `(index, durable_next)` and body. `None` when it is too
/// short or claims itself durable, which no writer does.
pub(crate) fn split(payload: &[u8]) -> Option<(u64, u64, &[u8])> {
    let index = crate::coding::u64_at(payload, 0)?;
    let durable_next = crate::coding::u64_at(payload, 8)?;
    (durable_next <= index).then(|| (index, durable_next, &payload[CLAIM_LEN..]))
}

/// Looks in `buf` from `from` (where record `damaged` should have started) for a valid record
/// claiming that record durable; returns its offset in `buf` and its claim.
///
/// Record boundaries after damage are unknown (the damaged length may be the damage), so every
/// byte offset is tried. A cheap test comes before the checksum: the index must lie between the
/// damaged one and the most records the bytes could hold; random bytes almost never pass it.
pub(crate) fn find(buf: &[u8], from: usize, damaged: u64) -> Option<(usize, u64)> {
    let tail = buf.get(from..)?;
    let most = damaged.saturating_add((tail.len() / (HEADER_LEN + CLAIM_LEN)) as u64);
    (0..tail.len()).find_map(|at| {
        let head = tail.get(at + HEADER_LEN..at + HEADER_LEN + CLAIM_LEN)?;
        let (index, claim, _) = split(head)?;
        if !(damaged < claim && index <= most) {
            return None;
        }
        let payload = Records::new(&tail[at..]).next()?;
        split(payload).map(|_| (from + at, claim))
    })
}

/// The error detail for damage at `offset`, where record `damaged` belongs, that a record at
/// `proof` claiming `durable_next` proves to be corruption.
pub(crate) fn corruption_detail(offset: usize, damaged: u64, proof: (usize, u64)) -> String {
    format!(
        "damaged record {damaged} at byte offset {offset}, but the record at byte offset {} \
         claims every record below {} was synced before it was written",
        proof.0, proof.1
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::frame_parts;

    fn record(out: &mut Vec<u8>, index: u64, durable_next: u64) {
        let mut c = Vec::new();
        put(&mut c, index, durable_next);
        frame_parts(out, &[&c, b"body"]);
    }

    #[test]
    fn finds_only_claims_above_the_damage() {
        let mut b = vec![0x5A; 9];
        record(&mut b, 4, 2);
        assert_eq!(find(&b, 3, 3), None, "claim 2 does not cover record 3");
        let at = b.len();
        record(&mut b, 5, 4);
        assert_eq!(find(&b, 3, 3), Some((at, 4)));
        assert_eq!(find(&b, at + 1, 3), None);
        // Too far for the bytes that follow the damage.
        let mut far = Vec::new();
        record(&mut far, 500, 400);
        assert_eq!(find(&far, 0, 3), None);
    }
}
