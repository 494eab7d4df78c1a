//! Per-table bloom filter over 64-bit hashes of user keys (the `bloomfilter` crate).
//!
//! Hashing the key once (`filter_hash`) and probing each table with the 8-byte hash keeps the
//! cost of a lookup that misses many tables to one pass over the key. The filter seed is fixed so
//! that the same input always produces the same file.

use bloomfilter::Bloom;

const SEED: [u8; 32] = *b"strata-sst-bloom-filter-seed-v1!";

/// A table's filter.
pub struct Filter(Bloom<u64>);

impl Filter {
    /// Builds a filter over `hashes` with false-positive rate `fp`.
    pub fn build(hashes: &[u64], fp: f64) -> Vec<u8> {
        let mut b = match Bloom::new_for_fp_rate_with_seed(hashes.len().max(1), fp, &SEED) {
            Ok(b) => b,
            // Only reachable with an fp rate outside (0, 1), which options validation rejects.
            Err(_) => return Vec::new(),
        };
        for h in hashes {
            b.set(h);
        }
        b.into_bytes()
    }

    /// Parses a stored filter; `None` for malformed bytes. The crate accepts an empty bitmap
    /// (probing it divides by zero) and any probe count, so both are checked here.
    pub fn parse(bytes: &[u8]) -> Option<Filter> {
        let b = Bloom::from_slice(bytes).ok()?;
        // Not `!b.is_empty()`: in this crate that means "no bit set", not "no bits".
        #[allow(clippy::len_zero)]
        let sane = b.len() > 0 && (1..=64).contains(&b.number_of_hash_functions());
        sane.then_some(Filter(b))
    }

    /// False means the key is certainly absent.
    #[inline]
    pub fn may_contain(&self, hash: u64) -> bool {
        self.0.check(&hash)
    }
}

impl std::fmt::Debug for Filter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Filter")
            .field("hash_functions", &self.0.number_of_hash_functions())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malformed_filters_are_rejected() {
        assert!(Filter::parse(&[]).is_none());
        assert!(Filter::parse(&[0xff; 7]).is_none());
        let f = Filter::parse(&Filter::build(&[1, 2, 3], 0.01)).expect("valid");
        assert!(f.may_contain(1) && f.may_contain(3));
    }
}
