//! A fault-injecting wrapper around any object store, for tests: added latency, error rate,
//! timeouts, failures whose effect still happened (the response was lost), and failure of every
//! call after the first N — each set per operation.
//!
//! Injected latency and timeouts end at the calling thread's deadline
//! ([`with_deadline`](super::with_deadline)) with `Timeout`, as a real store's request would:
//! a latency of an hour models a store that hangs.

use std::ops::Range;
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;

use super::{deadline, ObjectError, ObjectMeta, ObjectStore};

/// The operations of [`ObjectStore`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ObjectOp {
    /// `put`.
    Put,
    /// `put_if_absent`.
    PutIfAbsent,
    /// `get`.
    Get,
    /// `get_range`.
    GetRange,
    /// `size`.
    Size,
    /// `list`.
    List,
    /// `delete`.
    Delete,
}

impl ObjectOp {
    /// Every operation.
    pub const ALL: [ObjectOp; 7] = [
        ObjectOp::Put,
        ObjectOp::PutIfAbsent,
        ObjectOp::Get,
        ObjectOp::GetRange,
        ObjectOp::Size,
        ObjectOp::List,
        ObjectOp::Delete,
    ];

    fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for ObjectOp {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = match self {
            ObjectOp::Put => "PUT",
            ObjectOp::PutIfAbsent => "PUT (if absent)",
            ObjectOp::Get => "GET",
            ObjectOp::GetRange => "GET (range)",
            ObjectOp::Size => "HEAD",
            ObjectOp::List => "LIST",
            ObjectOp::Delete => "DELETE",
        };
        f.write_str(s)
    }
}

/// Faults injected into one operation. The default injects nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct FaultConfig {
    /// Added to every call. A call whose thread has a deadline sooner than that waits until the
    /// deadline and fails with `Timeout` (counted as an injected fault).
    pub latency: Duration,
    /// Probability that a call fails with `Unavailable` without reaching the store.
    pub error_rate: f64,
    /// Probability that a call reaches the store, takes effect, and then reports
    /// `Unavailable` anyway (a lost response: the caller cannot know the outcome).
    pub lost_response_rate: f64,
    /// Probability that a call waits `timeout` and then fails with `Timeout`.
    pub timeout_rate: f64,
    /// How long a timed-out call waits before failing (at most until the thread's deadline).
    pub timeout: Duration,
    /// When set, every call after the first N fails with `Unavailable`.
    pub fail_after: Option<u64>,
    /// When set, every call is refused (`Rejected`), as a store refuses expired credentials.
    pub reject: bool,
}

#[derive(Debug)]
struct State {
    faults: [FaultConfig; 7],
    calls: [u64; 7],
    injected: [u64; 7],
    rng: u64,
}

/// Wraps a store and injects the configured faults.
#[derive(Debug)]
pub struct FaultyStore<S> {
    inner: S,
    state: Mutex<State>,
}

enum Verdict {
    Pass,
    Fail(ObjectError),
    LoseResponse,
}

impl<S: ObjectStore> FaultyStore<S> {
    /// Wraps `inner`; `seed` makes the injected faults reproducible.
    pub fn new(inner: S, seed: u64) -> Self {
        FaultyStore {
            inner,
            state: Mutex::new(State {
                faults: [FaultConfig::default(); 7],
                calls: [0; 7],
                injected: [0; 7],
                rng: seed | 1,
            }),
        }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sets the faults of one operation.
    pub fn set(&self, op: ObjectOp, cfg: FaultConfig) {
        self.state().faults[op.index()] = cfg;
    }

    /// Sets the same faults for every operation.
    pub fn set_all(&self, cfg: FaultConfig) {
        self.state().faults = [cfg; 7];
    }

    /// Stops injecting faults.
    pub fn clear(&self) {
        self.set_all(FaultConfig::default());
    }

    /// Calls of `op` so far.
    pub fn calls(&self, op: ObjectOp) -> u64 {
        self.state().calls[op.index()]
    }

    /// Faults injected into `op` so far.
    pub fn injected(&self, op: ObjectOp) -> u64 {
        self.state().injected[op.index()]
    }

    /// The wrapped store.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn decide(&self, op: ObjectOp, key: &str) -> Verdict {
        let (cfg, roll, calls) = {
            let mut st = self.state();
            let i = op.index();
            st.calls[i] += 1;
            // xorshift64: reproducible and good enough to pick faults.
            st.rng ^= st.rng << 13;
            st.rng ^= st.rng >> 7;
            st.rng ^= st.rng << 17;
            let roll = (st.rng >> 11) as f64 / (1u64 << 53) as f64;
            (st.faults[i], roll, st.calls[i])
        };
        let timed_out = || ObjectError::Timeout {
            op,
            key: key.to_string(),
        };
        if !cfg.latency.is_zero() && !deadline::sleep(cfg.latency) {
            self.state().injected[op.index()] += 1;
            return Verdict::Fail(timed_out());
        }
        let unavailable = |detail: &str| ObjectError::Unavailable {
            op,
            key: key.to_string(),
            detail: detail.to_string(),
        };
        let verdict = if cfg.reject {
            Verdict::Fail(ObjectError::Rejected {
                op,
                key: key.to_string(),
                detail: "injected: access denied".to_string(),
            })
        } else if cfg.fail_after.is_some_and(|n| calls > n) {
            Verdict::Fail(unavailable("injected: failing after N calls"))
        } else if roll < cfg.error_rate {
            Verdict::Fail(unavailable("injected error"))
        } else if roll < cfg.error_rate + cfg.timeout_rate {
            deadline::sleep(cfg.timeout);
            Verdict::Fail(timed_out())
        } else if roll < cfg.error_rate + cfg.timeout_rate + cfg.lost_response_rate {
            Verdict::LoseResponse
        } else {
            Verdict::Pass
        };
        if !matches!(verdict, Verdict::Pass) {
            self.state().injected[op.index()] += 1;
        }
        verdict
    }

    fn call<T>(
        &self,
        op: ObjectOp,
        key: &str,
        f: impl FnOnce() -> Result<T, ObjectError>,
    ) -> Result<T, ObjectError> {
        match self.decide(op, key) {
            Verdict::Pass => f(),
            Verdict::Fail(e) => Err(e),
            Verdict::LoseResponse => {
                let _ = f();
                Err(ObjectError::Unavailable {
                    op,
                    key: key.to_string(),
                    detail: "injected: response lost after the request took effect".into(),
                })
            }
        }
    }
}

impl<S: ObjectStore> ObjectStore for FaultyStore<S> {
    fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectError> {
        self.call(ObjectOp::Put, key, || self.inner.put(key, data))
    }
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, ObjectError> {
        self.call(ObjectOp::PutIfAbsent, key, || {
            self.inner.put_if_absent(key, data)
        })
    }
    fn supports_put_if_absent(&self) -> bool {
        self.inner.supports_put_if_absent()
    }
    fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        self.call(ObjectOp::Get, key, || self.inner.get(key))
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        self.call(ObjectOp::GetRange, key, || self.inner.get_range(key, range))
    }
    fn get_suffix(&self, key: &str, len: u64) -> Result<(Bytes, u64), ObjectError> {
        // A suffix read is a ranged GET in S3 terms, and is counted as one.
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
    use super::*;
    use crate::object::LocalDirStore;

    #[test]
    fn injects_what_it_is_told() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = FaultyStore::new(LocalDirStore::open(dir.path()).expect("open"), 7);
        s.set(
            ObjectOp::Put,
            FaultConfig {
                fail_after: Some(2),
                ..Default::default()
            },
        );
        assert!(s.put("a", Bytes::from_static(b"1")).is_ok());
        assert!(s.put("b", Bytes::from_static(b"2")).is_ok());
        let e = s
            .put("c", Bytes::from_static(b"3"))
            .expect_err("third put fails");
        assert!(e.is_retryable());
        assert!(matches!(s.get("c"), Err(ObjectError::NotFound(_))));
        // A lost response: the error is reported, but the object was written.
        s.set(
            ObjectOp::Put,
            FaultConfig {
                lost_response_rate: 1.0,
                ..Default::default()
            },
        );
        assert!(s.put("d", Bytes::from_static(b"4")).is_err());
        assert_eq!(&s.get("d").expect("written anyway")[..], b"4");
        // About the configured share of calls fail.
        s.clear();
        s.set(
            ObjectOp::Get,
            FaultConfig {
                error_rate: 0.3,
                ..Default::default()
            },
        );
        let calls_before = s.calls(ObjectOp::Get);
        let failed = (0..1000).filter(|_| s.get("a").is_err()).count();
        assert!((200..400).contains(&failed), "{failed} of 1000 failed");
        assert_eq!(s.injected(ObjectOp::Get), failed as u64);
        assert_eq!(s.calls(ObjectOp::Get) - calls_before, 1000);
        // Timeouts wait, then fail as timeouts.
        s.set(
            ObjectOp::Size,
            FaultConfig {
                timeout_rate: 1.0,
                timeout: Duration::from_millis(20),
                ..Default::default()
            },
        );
        let t = std::time::Instant::now();
        assert!(matches!(s.size("a"), Err(ObjectError::Timeout { .. })));
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    /// Runs `f` on its own thread and waits at most `limit` for it, so that a call the deadline
    /// fails to cut short fails the test instead of hanging it.
    fn within<T: Send + 'static>(
        limit: Duration,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> (T, Duration) {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let t = std::time::Instant::now();
            let r = f();
            let _ = tx.send((r, t.elapsed()));
        });
        rx.recv_timeout(limit)
            .expect("the call ignored its deadline")
    }

    #[test]
    fn injected_latency_and_timeouts_end_at_the_deadline() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = std::sync::Arc::new(FaultyStore::new(
            LocalDirStore::open(dir.path()).expect("open"),
            7,
        ));
        s.put("a", Bytes::from_static(b"1")).expect("put");
        let hour = Duration::from_secs(3600);
        s.set(
            ObjectOp::Get,
            FaultConfig {
                latency: hour,
                ..Default::default()
            },
        );
        s.set(
            ObjectOp::Size,
            FaultConfig {
                timeout_rate: 1.0,
                timeout: hour,
                ..Default::default()
            },
        );
        let budget = Duration::from_millis(200);
        for op in [ObjectOp::Get, ObjectOp::Size] {
            let s2 = s.clone();
            let (r, took) = within(Duration::from_secs(10), move || {
                let deadline = std::time::Instant::now() + budget;
                crate::object::with_deadline(deadline, || match op {
                    ObjectOp::Get => s2.get("a").map(|_| ()),
                    _ => s2.size("a").map(|_| ()),
                })
            });
            assert!(matches!(r, Err(ObjectError::Timeout { .. })), "{op}: {r:?}");
            assert!(
                took >= budget && took < Duration::from_secs(2),
                "{op} took {took:?}"
            );
        }
        assert_eq!(s.injected(ObjectOp::Get), 1);
        // Latency shorter than what is left of the deadline is only latency.
        s.set(
            ObjectOp::Get,
            FaultConfig {
                latency: Duration::from_millis(5),
                ..Default::default()
            },
        );
        let far = std::time::Instant::now() + Duration::from_secs(60);
        let got = crate::object::with_deadline(far, || s.get("a")).expect("in time");
        assert_eq!(&got[..], b"1");
    }
}
