//! Retries with exponential backoff and jitter, and a bound on requests in flight, around any
//! object store. The engine wraps the configured store in this.
//!
//! Only failures that `ObjectError::is_retryable` (timeouts, unavailability) are retried, and
//! every operation of the trait is safe to repeat: puts replace whole objects and deletes are
//! idempotent. The one exception is `put_if_absent` after a lost response, which may report
//! `false` for an object this very call created; callers must treat `false` as "exists".

use std::ops::Range;
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use bytes::Bytes;

use super::{ObjectError, ObjectMeta, ObjectStore};

/// How failed requests are retried and how many may be in flight.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts per request, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles with each further one.
    pub base_delay: Duration,
    /// Upper bound of a single delay.
    pub max_delay: Duration,
    /// Requests allowed in flight at once (at least 1).
    pub max_in_flight: usize,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_secs(2),
            max_in_flight: 32,
        }
    }
}

/// A store whose requests are retried per a [`RetryPolicy`] and limited in concurrency.
#[derive(Debug)]
pub struct RetryingStore<S> {
    inner: S,
    policy: RetryPolicy,
    in_flight: Mutex<usize>,
    freed: Condvar,
    jitter: Mutex<u64>,
}

impl<S: ObjectStore> RetryingStore<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        RetryingStore {
            inner,
            policy,
            in_flight: Mutex::new(0),
            freed: Condvar::new(),
            jitter: Mutex::new(0x9e37_79b9_7f4a_7c15),
        }
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// Full jitter: a random delay in `[0, min(max, base * 2^retry))`, so clients that failed
    /// together do not retry together.
    fn delay(&self, retry: u32) -> Duration {
        let cap = self
            .policy
            .base_delay
            .saturating_mul(1u32 << retry.min(20))
            .min(self.policy.max_delay);
        let mut x = self.jitter.lock().unwrap_or_else(|p| p.into_inner());
        *x ^= *x << 13;
        *x ^= *x >> 7;
        *x ^= *x << 17;
        let nanos = cap.as_nanos() as u64;
        Duration::from_nanos(if nanos == 0 { 0 } else { *x % nanos })
    }

    fn call<T>(&self, mut f: impl FnMut() -> Result<T, ObjectError>) -> Result<T, ObjectError> {
        let mut attempt = 0;
        loop {
            let r = {
                let _permit = self.permit();
                f()
            };
            match r {
                Err(e) if e.is_retryable() && attempt + 1 < self.policy.max_attempts.max(1) => {
                    std::thread::sleep(self.delay(attempt));
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    fn permit(&self) -> Permit<'_, S> {
        let mut n = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        while *n >= self.policy.max_in_flight.max(1) {
            n = self.freed.wait(n).unwrap_or_else(|p| p.into_inner());
        }
        *n += 1;
        Permit(self)
    }
}

struct Permit<'a, S>(&'a RetryingStore<S>);

impl<S> Drop for Permit<'_, S> {
    fn drop(&mut self) {
        let mut n = self.0.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        *n -= 1;
        self.0.freed.notify_one();
    }
}

impl<S: ObjectStore> ObjectStore for RetryingStore<S> {
    fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectError> {
        self.call(|| self.inner.put(key, data.clone()))
    }
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, ObjectError> {
        self.call(|| self.inner.put_if_absent(key, data.clone()))
    }
    fn supports_put_if_absent(&self) -> bool {
        self.inner.supports_put_if_absent()
    }
    fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        self.call(|| self.inner.get(key))
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        self.call(|| self.inner.get_range(key, range.clone()))
    }
    fn get_suffix(&self, key: &str, len: u64) -> Result<(Bytes, u64), ObjectError> {
        self.call(|| self.inner.get_suffix(key, len))
    }
    fn size(&self, key: &str) -> Result<u64, ObjectError> {
        self.call(|| self.inner.size(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        self.call(|| self.inner.list(prefix))
    }
    fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.call(|| self.inner.delete(key))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::object::{FaultConfig, FaultyStore, LocalDirStore, ObjectOp};

    fn quick(max_attempts: u32, max_in_flight: usize) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            base_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(4),
            max_in_flight,
        }
    }

    #[test]
    fn retries_transient_failures_only() {
        let dir = tempfile::tempdir().expect("tempdir");
        let faulty = FaultyStore::new(LocalDirStore::open(dir.path()).expect("open"), 9);
        let s = RetryingStore::new(faulty, quick(12, 4));
        s.put("k", Bytes::from_static(b"v")).expect("put");
        s.inner().set(
            ObjectOp::Get,
            FaultConfig {
                error_rate: 0.25,
                ..Default::default()
            },
        );
        for _ in 0..200 {
            assert_eq!(&s.get("k").expect("retried until it worked")[..], b"v");
        }
        assert!(s.inner().injected(ObjectOp::Get) > 30);
        // A permanent outage fails after exactly max_attempts tries.
        s.inner().set(
            ObjectOp::Size,
            FaultConfig {
                error_rate: 1.0,
                ..Default::default()
            },
        );
        assert!(s.size("k").expect_err("down").is_retryable());
        assert_eq!(s.inner().calls(ObjectOp::Size), 12);
        // An answer (not found) is not retried.
        s.inner().clear();
        let before = s.inner().calls(ObjectOp::Get);
        assert!(matches!(s.get("nope"), Err(ObjectError::NotFound(_))));
        assert_eq!(s.inner().calls(ObjectOp::Get), before + 1);
    }

    /// Counts concurrent calls of a slow store.
    #[derive(Debug, Default)]
    struct Slow {
        now: AtomicUsize,
        peak: AtomicUsize,
    }

    impl ObjectStore for Slow {
        fn put(&self, _: &str, _: Bytes) -> Result<(), ObjectError> {
            Ok(())
        }
        fn put_if_absent(&self, _: &str, _: Bytes) -> Result<bool, ObjectError> {
            Ok(true)
        }
        fn supports_put_if_absent(&self) -> bool {
            true
        }
        fn get(&self, _: &str) -> Result<Bytes, ObjectError> {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.peak.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(5));
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(Bytes::new())
        }
        fn get_range(&self, k: &str, _: Range<u64>) -> Result<Bytes, ObjectError> {
            self.get(k)
        }
        fn get_suffix(&self, k: &str, _: u64) -> Result<(Bytes, u64), ObjectError> {
            self.get(k).map(|b| (b, 0))
        }
        fn size(&self, _: &str) -> Result<u64, ObjectError> {
            Ok(0)
        }
        fn list(&self, _: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
            Ok(Vec::new())
        }
        fn delete(&self, _: &str) -> Result<(), ObjectError> {
            Ok(())
        }
    }

    #[test]
    fn bounds_requests_in_flight() {
        let s = Arc::new(RetryingStore::new(Slow::default(), quick(1, 3)));
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let s = s.clone();
                std::thread::spawn(move || {
                    for _ in 0..5 {
                        s.get("k").expect("get");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        let peak = s.inner().peak.load(Ordering::SeqCst);
        assert!((2..=3).contains(&peak), "peak in flight {peak}");
    }
}
