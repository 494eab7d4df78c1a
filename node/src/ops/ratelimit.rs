//! Per-client token buckets limiting link creation: each client (an IPv4 address, or the /64
//! network of an IPv6 one, since a single IPv6 host commonly holds a whole /64) may create
//! `rate` links per minute, in bursts of up to `rate`.
//!
//! The table of buckets is bounded: a bucket that has refilled completely is indistinguishable
//! from a new one and is dropped, and when the table is full of partly used buckets the fullest
//! ones (closest to a fresh bucket, so the least lost by forgetting them) go first.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets kept at most; beyond, some are forgotten (their clients start afresh).
pub const MAX_BUCKETS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// A token bucket per client, refilled continuously.
#[derive(Debug)]
pub struct RateLimiter {
    /// Tokens per minute, and the bucket size; 0: unlimited.
    per_minute: u32,
    max_buckets: usize,
    buckets: Mutex<HashMap<IpAddr, Bucket>>,
}

/// Whether a request may go ahead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Grant {
    /// This many of the tokens asked for were taken (at least 1, at most the number asked).
    Granted(u64),
    /// None: the client may retry after this long.
    Refused(Duration),
}

/// The key of a client: IPv6 addresses by their /64.
fn client_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
        v4 => v4,
    }
}

impl RateLimiter {
    /// A limiter allowing `per_minute` tokens per minute per client (0: no limit).
    pub fn new(per_minute: u32) -> RateLimiter {
        Self::with_capacity(per_minute, MAX_BUCKETS)
    }

    fn with_capacity(per_minute: u32, max_buckets: usize) -> RateLimiter {
        RateLimiter {
            per_minute,
            max_buckets: max_buckets.max(1),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn burst(&self) -> f64 {
        f64::from(self.per_minute)
    }

    fn per_ms(&self) -> f64 {
        f64::from(self.per_minute) / 60_000.0
    }

    fn refilled(&self, b: Bucket, now: Instant) -> f64 {
        let ms = now.saturating_duration_since(b.at).as_secs_f64() * 1000.0;
        (b.tokens + ms * self.per_ms()).min(self.burst())
    }

    /// Takes up to `wanted` tokens for `ip` (at least 1 or none): partial grants let a batch
    /// create what the client's budget allows instead of failing whole.
    pub fn take(&self, ip: IpAddr, wanted: u64) -> Grant {
        self.take_at(ip, wanted, Instant::now())
    }

    fn take_at(&self, ip: IpAddr, wanted: u64, now: Instant) -> Grant {
        if self.per_minute == 0 || wanted == 0 {
            return Grant::Granted(wanted);
        }
        let key = client_key(ip);
        // Plain arithmetic under the lock: a panic cannot leave it half-updated.
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if !map.contains_key(&key) && map.len() >= self.max_buckets {
            self.evict(&mut map, now);
        }
        let burst = self.burst();
        let b = map.entry(key).or_insert(Bucket {
            tokens: burst,
            at: now,
        });
        let tokens = self.refilled(*b, now);
        let whole = tokens.floor();
        if whole < 1.0 {
            *b = Bucket { tokens, at: now };
            let wait_ms = ((1.0 - tokens) / self.per_ms()).ceil();
            // Retry-After is in whole seconds: round up, so a retry then succeeds.
            let secs = (wait_ms / 1000.0).ceil().max(1.0);
            return Grant::Refused(Duration::from_secs(secs as u64));
        }
        let granted = (wanted as f64).min(whole);
        *b = Bucket {
            tokens: tokens - granted,
            at: now,
        };
        Grant::Granted(granted as u64)
    }

    /// Drops the buckets that refilled completely; if the table is still full, forgets the
    /// fullest tenth of it.
    fn evict(&self, map: &mut HashMap<IpAddr, Bucket>, now: Instant) {
        let burst = self.burst();
        map.retain(|_, b| self.refilled(*b, now) < burst);
        if map.len() < self.max_buckets {
            return;
        }
        let mut levels: Vec<(f64, IpAddr)> = map
            .iter()
            .map(|(k, b)| (self.refilled(*b, now), *k))
            .collect();
        levels.sort_by(|a, b| b.0.total_cmp(&a.0));
        let drop = (self.max_buckets / 10).max(1);
        for (_, k) in levels.into_iter().take(drop) {
            map.remove(&k);
        }
    }

    /// Drops the buckets that refilled completely (called now and then, so idle clients do
    /// not hold memory until the table fills).
    pub fn sweep(&self) {
        let now = Instant::now();
        let burst = self.burst();
        let mut map = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        map.retain(|_, b| self.refilled(*b, now) < burst);
    }

    /// Buckets held (for tests and status).
    pub fn clients(&self) -> usize {
        self.buckets.lock().unwrap_or_else(|p| p.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn bursts_refill_and_partial_grants() {
        let l = RateLimiter::new(60); // one per second, bursts of 60
        let t0 = Instant::now();
        let a = ip("10.0.0.1");
        assert_eq!(l.take_at(a, 50, t0), Grant::Granted(50));
        assert_eq!(l.take_at(a, 50, t0), Grant::Granted(10), "partial");
        assert_eq!(l.take_at(a, 1, t0), Grant::Refused(Duration::from_secs(1)));
        assert_eq!(
            l.take_at(ip("10.0.0.2"), 1, t0),
            Grant::Granted(1),
            "per client"
        );
        let t1 = t0 + Duration::from_millis(2500);
        assert_eq!(l.take_at(a, 5, t1), Grant::Granted(2));
        assert!(matches!(l.take_at(a, 1, t1), Grant::Refused(_)));
        assert_eq!(RateLimiter::new(0).take(a, 1000), Grant::Granted(1000));
        // A slow rate asks for a longer wait.
        let slow = RateLimiter::new(2);
        assert_eq!(slow.take_at(a, 3, t0), Grant::Granted(2));
        assert_eq!(
            slow.take_at(a, 1, t0),
            Grant::Refused(Duration::from_secs(30))
        );
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let l = RateLimiter::new(1);
        let t0 = Instant::now();
        assert_eq!(l.take_at(ip("2001:db8::1"), 1, t0), Grant::Granted(1));
        assert!(matches!(
            l.take_at(ip("2001:db8::2"), 1, t0),
            Grant::Refused(_)
        ));
        assert_eq!(l.take_at(ip("2001:db8:0:1::1"), 1, t0), Grant::Granted(1));
        assert_eq!(client_key(ip("::ffff:10.0.0.1")), ip("10.0.0.1"));
    }

    #[test]
    fn the_table_stays_bounded() {
        let l = RateLimiter::with_capacity(10, 100);
        let t0 = Instant::now();
        for i in 0..1000u32 {
            let a = IpAddr::V4(i.into());
            assert_eq!(l.take_at(a, 1, t0), Grant::Granted(1));
        }
        assert!(l.clients() <= 100, "{}", l.clients());
        // Once refilled, every bucket can go.
        let l2 = RateLimiter::with_capacity(60_000, 100);
        for i in 0..50u32 {
            l2.take_at(IpAddr::V4(i.into()), 1, t0);
        }
        std::thread::sleep(Duration::from_millis(5));
        l2.sweep();
        assert_eq!(l2.clients(), 0);
    }
}
