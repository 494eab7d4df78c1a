//! A concurrent whole-key filter for a memtable: a blocked bloom filter over atomic words.
//!
//! Point lookups hash the key once (`sst::filter_hash`) and probe this filter before searching
//! the skip list; for keys that live in tables (most keys, once the data outgrows a memtable),
//! the skip-list search is skipped. All probes of a key fall in one 512-bit block, so a probe
//! costs one cache miss. Inserts set bits with `fetch_or`; a reader that races with an insert of
//! the same key may miss it, which is harmless because the insert is not yet visible (its
//! sequence number is published only after the insert returns).

use std::sync::atomic::{AtomicU64, Ordering};

const BLOCK_WORDS: usize = 8;
const PROBES: u32 = 6;

pub(crate) struct MemFilter {
    words: Box<[AtomicU64]>,
    blocks: u64,
}

impl MemFilter {
    /// A filter of about `bits` bits (rounded up to whole blocks).
    pub fn new(bits: usize) -> Self {
        let blocks = bits.div_ceil(64 * BLOCK_WORDS).max(1);
        let words = (0..blocks * BLOCK_WORDS)
            .map(|_| AtomicU64::new(0))
            .collect();
        MemFilter {
            words,
            blocks: blocks as u64,
        }
    }

    #[inline]
    fn probes(&self, hash: u64) -> (usize, impl Iterator<Item = (usize, u64)>) {
        let block = ((hash >> 32).wrapping_mul(self.blocks) >> 32) as usize * BLOCK_WORDS;
        let mut h = hash as u32;
        let delta = (hash >> 17) as u32 | 1;
        let it = (0..PROBES).map(move |_| {
            let bit = h & 511;
            h = h.wrapping_add(delta);
            ((bit / 64) as usize, 1u64 << (bit % 64))
        });
        (block, it)
    }

    pub fn insert(&self, hash: u64) {
        let (block, probes) = self.probes(hash);
        for (w, mask) in probes {
            self.words[block + w].fetch_or(mask, Ordering::Relaxed);
        }
    }

    #[inline]
    pub fn may_contain(&self, hash: u64) -> bool {
        let (block, mut probes) = self.probes(hash);
        probes.all(|(w, mask)| self.words[block + w].load(Ordering::Relaxed) & mask != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_false_negatives_and_few_false_positives() {
        let f = MemFilter::new(1 << 20);
        for i in 0..50_000u32 {
            f.insert(crate::sst::filter_hash(&i.to_le_bytes()));
        }
        for i in 0..50_000u32 {
            assert!(f.may_contain(crate::sst::filter_hash(&i.to_le_bytes())));
        }
        let fp = (50_000..150_000u32)
            .filter(|i| f.may_contain(crate::sst::filter_hash(&i.to_le_bytes())))
            .count();
        assert!(fp < 2_000, "false positives: {fp}");
    }
}
