//! Counts the requests that actually reach a store (retries included) and the bytes moved.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use bytes::Bytes;

use super::{ObjectError, ObjectMeta, ObjectStore};

/// Request and byte counters of one store.
#[derive(Debug, Default)]
pub struct ObjectCounters {
    /// GET requests (whole, ranged and suffix).
    pub gets: AtomicU64,
    /// Bytes returned by GETs.
    pub get_bytes: AtomicU64,
    /// PUT requests (plain and create-if-absent).
    pub puts: AtomicU64,
    /// Bytes sent by PUTs.
    pub put_bytes: AtomicU64,
    /// LIST, HEAD and DELETE requests.
    pub other: AtomicU64,
    /// Requests that failed.
    pub failures: AtomicU64,
}

/// A store that counts what passes through it.
#[derive(Debug)]
pub struct CountingStore<S> {
    inner: S,
    counters: Arc<ObjectCounters>,
}

impl<S: ObjectStore> CountingStore<S> {
    /// Wraps `inner`, counting into `counters`.
    pub fn new(inner: S, counters: Arc<ObjectCounters>) -> Self {
        CountingStore { inner, counters }
    }

    /// Counts one request on `req`, and a failure if it failed.
    fn count<T>(&self, req: &AtomicU64, r: Result<T, ObjectError>) -> Result<T, ObjectError> {
        req.fetch_add(1, Ordering::Relaxed);
        if r.is_err() {
            self.counters.failures.fetch_add(1, Ordering::Relaxed);
        }
        r
    }

    fn got(&self, n: usize) {
        self.counters
            .get_bytes
            .fetch_add(n as u64, Ordering::Relaxed);
    }
}

impl<S: ObjectStore> ObjectStore for CountingStore<S> {
    fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectError> {
        let c = &self.counters;
        c.put_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.count(&c.puts, self.inner.put(key, data))
    }
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, ObjectError> {
        let c = &self.counters;
        c.put_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
        self.count(&c.puts, self.inner.put_if_absent(key, data))
    }
    fn supports_put_if_absent(&self) -> bool {
        self.inner.supports_put_if_absent()
    }
    fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        let r = self.inner.get(key).inspect(|b| self.got(b.len()));
        self.count(&self.counters.gets, r)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        let r = self
            .inner
            .get_range(key, range)
            .inspect(|b| self.got(b.len()));
        self.count(&self.counters.gets, r)
    }
    fn get_suffix(&self, key: &str, len: u64) -> Result<(Bytes, u64), ObjectError> {
        let r = self
            .inner
            .get_suffix(key, len)
            .inspect(|b| self.got(b.0.len()));
        self.count(&self.counters.gets, r)
    }
    fn size(&self, key: &str) -> Result<u64, ObjectError> {
        self.count(&self.counters.other, self.inner.size(key))
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        self.count(&self.counters.other, self.inner.list(prefix))
    }
    fn delete(&self, key: &str) -> Result<(), ObjectError> {
        self.count(&self.counters.other, self.inner.delete(key))
    }
}
