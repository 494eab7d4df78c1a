//! Keys, values and random streams, all derived from the seed so that every engine sees the
//! same operations in the same order.

use anyhow::{ensure, Result};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Size of the value pool, as in db_bench: large enough that values do not visibly repeat within
/// a block, small enough to stay in the CPU caches' neighbourhood.
const VALUE_POOL_BYTES: usize = 1 << 20;
/// Values are built from fragments of this many bytes...
const FRAGMENT: usize = 100;
/// ...whose first half is random and second half repeats it, so that block compression gets
/// about a 0.5 ratio, like db_bench's default `--compression_ratio=0.5`.
const RANDOM_PART: usize = FRAGMENT / 2;

/// Independent random streams, one per use, so that adding a phase never shifts another's keys.
#[derive(Debug, Clone, Copy)]
pub enum Stream {
    ValuePool = 1,
    FillOrder = 2,
    SyncKeys = 3,
    ReadKeys = 4,
    MissingKeys = 5,
    SeekKeys = 6,
    /// Keys `strata-bench tiered` writes into the memtable and reads back.
    HotKeys = 7,
    /// Keys the clients of `strata-bench raft` write; one lane per client of each phase.
    RaftKeys = 8,
}

pub struct Workload {
    pub num: u64,
    pub key_size: usize,
    pub value_size: usize,
    seed: u64,
    pool: Vec<u8>,
}

impl Workload {
    pub fn new(num: u64, key_size: usize, value_size: usize, seed: u64) -> Result<Self> {
        ensure!(num > 0, "--num must be positive");
        ensure!(value_size > 0, "--value-size must be positive");
        let digits = decimal_digits(num - 1);
        ensure!(
            key_size >= digits,
            "--key-size {key_size} cannot hold the decimal key index {} ({digits} digits)",
            num - 1
        );
        ensure!(key_size <= 1024, "--key-size above 1024 is not supported");

        let mut w = Workload {
            num,
            key_size,
            value_size,
            seed,
            pool: Vec::new(),
        };
        let mut rng = w.rng(Stream::ValuePool, 0);
        let len = VALUE_POOL_BYTES.max(value_size * 2);
        let mut pool = Vec::with_capacity(len + FRAGMENT);
        while pool.len() < len {
            let random: Vec<u8> = (0..RANDOM_PART)
                .map(|_| rng.gen_range(b' '..=b'~'))
                .collect();
            pool.extend(random.iter().cycle().take(FRAGMENT));
        }
        w.pool = pool;
        Ok(w)
    }

    /// A generator for `stream`; `lane` separates the threads of one phase.
    pub fn rng(&self, stream: Stream, lane: u64) -> ChaCha8Rng {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        rng.set_stream(((stream as u64) << 32) | lane);
        rng
    }

    /// A zeroed key buffer of the right length for [`Workload::key`].
    pub fn key_buf(&self) -> Vec<u8> {
        vec![b'0'; self.key_size]
    }

    /// Writes key `i` into `buf` (from [`Workload::key_buf`]): `i` in decimal, zero-padded to
    /// the key size, so that key order is index order.
    pub fn key<'a>(&self, i: u64, buf: &'a mut [u8]) -> &'a [u8] {
        let mut rest = i;
        for byte in buf.iter_mut().rev() {
            *byte = b'0' + (rest % 10) as u8;
            rest /= 10;
        }
        buf
    }

    /// A key buffer for [`Workload::missing_key`], one byte longer than a key.
    pub fn missing_key_buf(&self) -> Vec<u8> {
        let mut buf = self.key_buf();
        // Sorts right after key `i` and before key `i + 1`, so a lookup lands in the same table
        // and block as a real key would and has to be rejected by the filter or the block, as
        // in db_bench's readmissing.
        buf.push(b'.');
        buf
    }

    pub fn missing_key<'a>(&self, i: u64, buf: &'a mut [u8]) -> &'a [u8] {
        let (key, _suffix) = buf.split_at_mut(self.key_size);
        self.key(i, key);
        buf
    }

    /// The value stored under key `i`; the same for every engine and every fill.
    pub fn value(&self, i: u64) -> &[u8] {
        let slots = (self.pool.len() - self.value_size + 1) as u64;
        let start = ((i * self.value_size as u64) % slots) as usize;
        &self.pool[start..start + self.value_size]
    }

    /// Every key index once, in a seeded random order.
    pub fn shuffled_indices(&self) -> Vec<u64> {
        let mut order: Vec<u64> = (0..self.num).collect();
        order.shuffle(&mut self.rng(Stream::FillOrder, 0));
        order
    }

    /// Bytes of keys and values that `ops` writes hand to an engine, for MB/s.
    pub fn user_bytes(&self, ops: u64) -> u64 {
        ops * (self.key_size + self.value_size) as u64
    }
}

fn decimal_digits(mut n: u64) -> usize {
    let mut digits = 1;
    while n >= 10 {
        n /= 10;
        digits += 1;
    }
    digits
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_zero_padded_decimal_in_index_order() {
        let w = Workload::new(1000, 16, 100, 1).unwrap();
        let mut a = w.key_buf();
        let mut b = w.key_buf();
        assert_eq!(w.key(42, &mut a), b"0000000000000042");
        assert!(w.key(41, &mut b) < w.key(42, &mut a));
        let mut m = w.missing_key_buf();
        assert_eq!(w.missing_key(41, &mut m), b"0000000000000041.");
        assert!(w.key(41, &mut b) < &m[..] && &m[..] < w.key(42, &mut a));
    }

    #[test]
    fn rejects_keys_too_short_for_num() {
        assert!(Workload::new(1000, 2, 100, 1).is_err());
        assert!(Workload::new(1000, 3, 100, 1).is_ok());
    }

    #[test]
    fn values_are_deterministic_and_about_half_random() {
        let a = Workload::new(10, 16, 100, 7).unwrap();
        let b = Workload::new(10, 16, 100, 7).unwrap();
        assert_eq!(a.value(3), b.value(3));
        assert_eq!(a.value(3).len(), 100);
        assert_eq!(a.pool[..50], a.pool[50..100]);
        assert_eq!(a.shuffled_indices(), b.shuffled_indices());
    }
}
