//! Retries with exponential backoff and jitter, and a bound on requests in flight, around any
//! object store. The engine wraps the configured store in this.
//!
//! Only failures that `ObjectError::is_retryable` (timeouts, unavailability) are retried, and
//! every operation of the trait is safe to repeat: puts replace whole objects and deletes are
//! idempotent. The one exception is `put_if_absent` after a lost response, which may report
//! `false` for an object this very call created; callers must treat `false` as "exists".
//!
//! Under a deadline ([`with_deadline`](super::with_deadline)) a call fails with `Timeout` at
//! once when the deadline has passed, waits for an in-flight slot only until the deadline, and
//! gives up with the last failure instead of starting a backoff that would end past it.

use std::ops::Range;
use std::sync::{Condvar, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::{deadline, ObjectError, ObjectMeta, ObjectOp, ObjectStore};

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

    fn call<T>(
        &self,
        op: ObjectOp,
        key: &str,
        mut f: impl FnMut() -> Result<T, ObjectError>,
    ) -> Result<T, ObjectError> {
        let mut attempt = 0;
        loop {
            let r = {
                let _permit = self.permit(op, key)?;
                f()
            };
            match r {
                Err(e) if e.is_retryable() && attempt + 1 < self.policy.max_attempts.max(1) => {
                    let delay = self.delay(attempt);
                    // The failure itself says more than a timeout would about why the call
                    // failed, and a retry that cannot start in time is only a wait.
                    if deadline::remaining().is_some_and(|left| delay >= left) {
                        return Err(e);
                    }
                    std::thread::sleep(delay);
                    attempt += 1;
                }
                r => return r,
            }
        }
    }

    /// A slot among the requests in flight, waited for until the thread's deadline, if any.
    fn permit(&self, op: ObjectOp, key: &str) -> Result<Permit<'_, S>, ObjectError> {
        let until = deadline::current();
        let mut waited = false;
        let mut n = self.in_flight.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            let left = until.map(|d| d.saturating_duration_since(Instant::now()));
            if left.is_some_and(|l| l.is_zero()) {
                if waited {
                    // The wakeup this waiter may have taken is passed on, so that a slot freed
                    // just as the deadline passed is not left unused while others wait.
                    drop(n);
                    self.freed.notify_one();
                }
                return Err(deadline::timeout(op, key));
            }
            if *n < self.policy.max_in_flight.max(1) {
                *n += 1;
                return Ok(Permit(self));
            }
            waited = true;
            n = match left {
                None => self.freed.wait(n).unwrap_or_else(|p| p.into_inner()),
                Some(l) => {
                    self.freed
                        .wait_timeout(n, l)
                        .unwrap_or_else(|p| p.into_inner())
                        .0
                }
            };
        }
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
        self.call(ObjectOp::Put, key, || self.inner.put(key, data.clone()))
    }
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, ObjectError> {
        self.call(ObjectOp::PutIfAbsent, key, || {
            self.inner.put_if_absent(key, data.clone())
        })
    }
    fn supports_put_if_absent(&self) -> bool {
        self.inner.supports_put_if_absent()
    }
    fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        self.call(ObjectOp::Get, key, || self.inner.get(key))
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        self.call(ObjectOp::GetRange, key, || {
            self.inner.get_range(key, range.clone())
        })
    }
    fn get_suffix(&self, key: &str, len: u64) -> Result<(Bytes, u64), ObjectError> {
        self.call(ObjectOp::GetRange, key, || self.inner.get_suffix(key, len))
    }
    fn size(&self, key: &str) -> Result<u64, ObjectError> {
        self.call(ObjectOp::Size, key, || self.inner.size(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        self.call(ObjectOp::List, prefix, || self.inner.list(prefix))
    }
    fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.call(ObjectOp::Delete, key, || self.inner.delete(key))
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

    fn faulty_store() -> (tempfile::TempDir, FaultyStore<LocalDirStore>) {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FaultyStore::new(LocalDirStore::open(dir.path()).expect("open"), 5);
        s.put("k", Bytes::from_static(b"v")).expect("put");
        (dir, s)
    }

    #[test]
    fn a_call_after_the_deadline_fails_at_once() {
        let (_dir, faulty) = faulty_store();
        let s = RetryingStore::new(faulty, quick(4, 4));
        let r = crate::object::with_deadline(Instant::now(), || s.get("k"));
        assert!(matches!(r, Err(ObjectError::Timeout { .. })), "{r:?}");
        assert_eq!(s.inner().calls(ObjectOp::Get), 0, "a request was sent");
        assert_eq!(&s.get("k").expect("no deadline, no timeout")[..], b"v");
    }

    #[test]
    fn no_retry_whose_backoff_ends_past_the_deadline() {
        let (_dir, faulty) = faulty_store();
        faulty.set(
            ObjectOp::Get,
            FaultConfig {
                error_rate: 1.0,
                ..Default::default()
            },
        );
        // Backoffs long enough to fit a deadline only by a freak of the (fixed-seed) jitter.
        let policy = RetryPolicy {
            max_attempts: 4,
            base_delay: Duration::from_secs(3600),
            max_delay: Duration::from_secs(3600),
            max_in_flight: 4,
        };
        let s = Arc::new(RetryingStore::new(faulty, policy));
        let (tx, rx) = std::sync::mpsc::channel();
        {
            let s = s.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let r = crate::object::with_deadline(t + Duration::from_millis(300), || s.get("k"));
                let _ = tx.send((r, t.elapsed()));
            });
        }
        let (r, took) = rx
            .recv_timeout(Duration::from_secs(10))
            .expect("the retry outlived the deadline");
        // The store's own failure, not a timeout: it says why the call failed.
        assert!(matches!(r, Err(ObjectError::Unavailable { .. })), "{r:?}");
        assert!(took < Duration::from_millis(300), "took {took:?}");
        assert_eq!(s.inner().calls(ObjectOp::Get), 1);

        // Backoffs that fit are still taken.
        let (_dir, faulty) = faulty_store();
        faulty.set(
            ObjectOp::Get,
            FaultConfig {
                error_rate: 1.0,
                ..Default::default()
            },
        );
        let s = RetryingStore::new(faulty, quick(4, 4));
        let far = Instant::now() + Duration::from_secs(60);
        assert!(crate::object::with_deadline(far, || s.get("k")).is_err());
        assert_eq!(s.inner().calls(ObjectOp::Get), 4);
    }

    #[test]
    fn the_wait_for_a_slot_ends_at_the_deadline() {
        let (_dir, faulty) = faulty_store();
        faulty.set(
            ObjectOp::Get,
            FaultConfig {
                latency: Duration::from_millis(1500),
                ..Default::default()
            },
        );
        let s = Arc::new(RetryingStore::new(faulty, quick(1, 1)));
        let holder = {
            let s = s.clone();
            std::thread::spawn(move || s.get("k").map(|_| ()))
        };
        // The holder has the only slot once its call reached the store.
        while s.inner().calls(ObjectOp::Get) == 0 {
            std::thread::sleep(Duration::from_millis(1));
        }
        let t = Instant::now();
        let budget = Duration::from_millis(200);
        let r = crate::object::with_deadline(t + budget, || s.size("k"));
        let took = t.elapsed();
        assert!(matches!(r, Err(ObjectError::Timeout { .. })), "{r:?}");
        assert!(
            took >= budget && took < Duration::from_millis(1000),
            "took {took:?}"
        );
        assert_eq!(s.inner().calls(ObjectOp::Size), 0, "sent without a slot");
        holder.join().expect("holder").expect("holder's get");
        // The slot is free again, and nothing leaked from the timed-out wait.
        assert_eq!(s.size("k").expect("size"), 1);
        assert_eq!(*s.in_flight.lock().expect("lock"), 0);
    }
}
