//! Power cuts of files, for the randomized crash suites of the engine's WAL and the Raft log.
//!
//! A suite records, after every sync it completed, the bytes of the files the sync covered: what
//! a power cut cannot take back. [`power_cut`] then builds what the cut leaves of one file:
//! bytes the last sync covered stay; every 4 KiB page written after it is, at random, kept,
//! reverted (to its synced bytes, zeros past the synced size), or lost together with the rest of
//! the file (the file ends at the page, but never below its synced size). Holes (a reverted page
//! before kept ones) come out of this naturally. [`run_cases`] runs a suite's cases with the
//! seeds `PROPTEST_CASES` and `POWER_CUT_SEED` ask for.

/// The page size of the write-back the cut tears.
pub const PAGE: usize = 4096;

/// SplitMix64: small, seedable, and good enough to pick workloads.
pub struct Rng(pub u64);

impl Rng {
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (`n > 0`).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// True `percent` times in 100.
    pub fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// What a power cut leaves of a file whose last sync covered `durable` and which now holds
/// `current`: each page that changed since the sync is kept (`keep_percent` times in 100),
/// else reverted or lost with the rest of the file (see the module doc).
pub fn power_cut(durable: &[u8], current: &[u8], rng: &mut Rng, keep_percent: u64) -> Vec<u8> {
    let mut out = current.to_vec();
    let len = current.len().max(durable.len());
    let revert = |out: &mut Vec<u8>, lo: usize, hi: usize| {
        for (at, b) in out.iter_mut().enumerate().take(hi).skip(lo) {
            *b = durable.get(at).copied().unwrap_or(0);
        }
    };
    for lo in (0..len).step_by(PAGE) {
        let hi = (lo + PAGE).min(len);
        let now = current.get(lo..hi.min(current.len())).unwrap_or(&[]);
        let then = durable.get(lo..hi.min(durable.len())).unwrap_or(&[]);
        if now == then {
            continue; // not written since the sync: on disk as it was
        }
        if rng.chance(keep_percent) {
            continue;
        }
        if rng.chance(50) {
            // Not written back; the size may still have grown (zeros past the synced size).
            revert(&mut out, lo, hi);
        } else {
            // The file ends here: the write-back of this page and all after it never happened.
            // The synced size is durable, so the file cannot end below it.
            let end = lo.max(durable.len()).min(out.len());
            revert(&mut out, lo, end);
            out.truncate(end);
            break;
        }
    }
    out
}

/// Runs `case` once per seed: `POWER_CUT_SEED` alone when set, else `PROPTEST_CASES` (48 by
/// default) seeds from a fixed base, so CI runs are reproducible. A failing case prints the
/// seed that reruns it.
pub fn run_cases(case: impl Fn(u64) + std::panic::RefUnwindSafe) {
    let seeds: Vec<u64> = match std::env::var("POWER_CUT_SEED") {
        Ok(s) => vec![s.parse().expect("POWER_CUT_SEED is a u64")],
        Err(_) => {
            let cases = std::env::var("PROPTEST_CASES")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(48);
            let mut r = Rng(0x5EED_0013);
            (0..cases).map(|_| r.next_u64()).collect()
        }
    };
    for seed in seeds {
        if let Err(e) = std::panic::catch_unwind(|| case(seed)) {
            eprintln!("power-cut case failed; rerun with POWER_CUT_SEED={seed}");
            std::panic::resume_unwind(e);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synced_bytes_survive_every_cut() {
        let durable = vec![7u8; PAGE + 100];
        let mut current = durable.clone();
        current.extend(vec![9u8; 3 * PAGE]);
        current[10] = 1;
        for seed in 0..200 {
            let out = power_cut(&durable, &current, &mut Rng(seed), 30);
            assert!(
                out.len() >= durable.len(),
                "{seed}: cut below the synced size"
            );
            // The first page changed since the sync: kept or reverted, never anything else.
            assert!(out[10] == 1 || out[10] == 7, "{seed}");
            assert_eq!(&out[11..durable.len()], &durable[11..], "{seed}");
            // Past the synced size: written bytes or zeros.
            assert!(
                out[durable.len()..].iter().all(|b| *b == 9 || *b == 0),
                "{seed}"
            );
        }
        assert_eq!(power_cut(&durable, &durable, &mut Rng(1), 0), durable);
    }
}
