//! Object stores: where levels below L0 live (cold tiers).
//!
//! The engine talks to an object store through [`ObjectStore`], a small synchronous interface
//! that maps onto S3's operations: whole-object put, create-if-absent, whole and ranged get,
//! list by prefix, delete. Keys are flat names made of `[A-Za-z0-9._-]` segments joined by `/`
//! (for example `db1/sst/000123.sst`); no key is a "directory" of another, which S3-compatible
//! servers backed by a filesystem require.
//!
//! [`LocalDirStore`] keeps objects as files under a directory (the default: nothing to install).
//! [`FaultyStore`] wraps any store and injects latency, errors, timeouts and failure after N
//! calls, per operation, for tests. `S3Store` (cargo feature `s3`) keeps them in an S3 bucket
//! or any S3-compatible server.
//!
//! [`with_deadline`] bounds every request a thread makes while it runs a closure: a server runs
//! an engine read inside it, and a hanging store costs that read its deadline, not the store's
//! request timeout times the retry attempts.

mod counting;
pub(crate) mod deadline;
mod faulty;
mod local;
mod retry;
#[cfg(feature = "s3")]
mod s3;

use std::ops::Range;

use bytes::Bytes;

pub use counting::{CountingStore, ObjectCounters};
pub use deadline::with_deadline;
pub use faulty::{FaultConfig, FaultyStore, ObjectOp};
pub use local::LocalDirStore;
pub use retry::{RetryPolicy, RetryingStore};
#[cfg(feature = "s3")]
pub use s3::{S3Config, S3Credentials, S3Store};

/// Longest accepted object key, in bytes (S3's limit).
pub const MAX_OBJECT_KEY_LEN: usize = 1024;

/// What went wrong with an object-store request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ObjectError {
    /// The object does not exist.
    #[error("object {0} not found")]
    NotFound(String),
    /// The key is not a valid flat object name.
    #[error("invalid object key {key:?}: {reason}")]
    InvalidKey {
        /// The rejected key.
        key: String,
        /// Why it was rejected.
        reason: &'static str,
    },
    /// The requested byte range starts beyond the end of the object.
    #[error("range {start}..{end} outside object {key} of {size} bytes")]
    InvalidRange {
        /// The object.
        key: String,
        /// Requested start.
        start: u64,
        /// Requested end.
        end: u64,
        /// Size of the object.
        size: u64,
    },
    /// The request did not complete in time: the store's own request timeout, or the deadline
    /// the calling thread set with [`with_deadline`].
    #[error("{op} {key} timed out")]
    Timeout {
        /// The operation.
        op: ObjectOp,
        /// The object key or prefix.
        key: String,
    },
    /// The store refused the request and will refuse it again (access denied, a missing
    /// bucket, a bad configuration): retrying does not help, an operator must.
    #[error("{op} {key} refused: {detail}")]
    Rejected {
        /// The operation.
        op: ObjectOp,
        /// The object key or prefix.
        key: String,
        /// What the store said.
        detail: String,
    },
    /// The store could not serve the request (I/O error, network error, server error). Callers
    /// may retry.
    #[error("{op} {key} failed: {detail}")]
    Unavailable {
        /// The operation.
        op: ObjectOp,
        /// The object key or prefix.
        key: String,
        /// What failed.
        detail: String,
    },
}

impl ObjectError {
    /// True for failures worth retrying (timeouts and unavailability), false for answers.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            ObjectError::Timeout { .. } | ObjectError::Unavailable { .. }
        )
    }
}

/// An object's key and size, as listed.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectMeta {
    /// The full key.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
}

/// A store of immutable objects addressed by flat keys. Implementations are thread-safe and
/// synchronous; a network-backed store owns whatever runtime it needs.
pub trait ObjectStore: Send + Sync + std::fmt::Debug {
    /// Stores `data` under `key`, replacing any existing object atomically: a reader sees the
    /// old object or the new one, never a part.
    fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectError>;

    /// Stores `data` under `key` only if no object exists there. Returns `Ok(false)` (and
    /// changes nothing) when one does. Stores that cannot do this atomically return
    /// `Ok(true)` after a plain put only if [`supports_put_if_absent`](Self::supports_put_if_absent)
    /// says so; callers check that first.
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, ObjectError>;

    /// Whether `put_if_absent` is atomic on this store.
    fn supports_put_if_absent(&self) -> bool;

    /// The whole object.
    fn get(&self, key: &str) -> Result<Bytes, ObjectError>;

    /// Bytes `range` of the object; a range running past the end returns the bytes up to the
    /// end, a range starting past the end is an error.
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError>;

    /// The last `len` bytes of the object (all of it when shorter) and the object's size, in one
    /// request (S3's `Range: bytes=-len`).
    fn get_suffix(&self, key: &str, len: u64) -> Result<(Bytes, u64), ObjectError>;

    /// Size of the object.
    fn size(&self, key: &str) -> Result<u64, ObjectError>;

    /// Every object whose key starts with `prefix`, sorted by key.
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError>;

    /// Deletes the object; deleting an absent object succeeds (as in S3).
    fn delete(&self, key: &str) -> Result<(), ObjectError>;
}

impl<T: ObjectStore + ?Sized> ObjectStore for std::sync::Arc<T> {
    fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectError> {
        (**self).put(key, data)
    }
    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, ObjectError> {
        (**self).put_if_absent(key, data)
    }
    fn supports_put_if_absent(&self) -> bool {
        (**self).supports_put_if_absent()
    }
    fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        (**self).get(key)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        (**self).get_range(key, range)
    }
    fn get_suffix(&self, key: &str, len: u64) -> Result<(Bytes, u64), ObjectError> {
        (**self).get_suffix(key, len)
    }
    fn size(&self, key: &str) -> Result<u64, ObjectError> {
        (**self).size(key)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        (**self).list(prefix)
    }
    fn delete(&self, key: &str) -> Result<(), ObjectError> {
        (**self).delete(key)
    }
}

/// Checks that `key` is a flat object name: non-empty segments of `[A-Za-z0-9._-]` joined by
/// `/`, no `.` or `..` segment, at most [`MAX_OBJECT_KEY_LEN`] bytes.
pub fn validate_key(key: &str) -> Result<(), ObjectError> {
    let bad = |reason| {
        Err(ObjectError::InvalidKey {
            key: key.to_string(),
            reason,
        })
    };
    if key.is_empty() || key.len() > MAX_OBJECT_KEY_LEN {
        return bad("must be 1 to 1024 bytes");
    }
    for seg in key.split('/') {
        if seg.is_empty() || seg == "." || seg == ".." {
            return bad("empty, '.' or '..' segment");
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        {
            return bad("characters outside [A-Za-z0-9._-/]");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_flat_names() {
        assert!(validate_key("db/sst/000001.sst").is_ok());
        for bad in ["", "/a", "a/", "a//b", "../a", "a/./b", "a b", "ä"] {
            assert!(validate_key(bad).is_err(), "{bad:?} accepted");
        }
        assert!(validate_key(&"a".repeat(1025)).is_err());
    }
}
