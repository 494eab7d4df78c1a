//! Typed errors of the engine.

use std::path::PathBuf;
use std::sync::Arc;

/// The result type of every fallible engine operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the engine.
///
/// `Error` is `Clone` so that one failed group commit can report the same error to every writer of
/// the group; I/O errors are shared behind an `Arc` for that reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    /// An operating-system I/O error, with what the engine was doing when it happened.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the engine was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// A file's contents are not what the engine wrote: bad checksum, bad magic, truncated, or a
    /// reference to a file that is missing. The engine never returns data from a corrupt region.
    #[error("corruption in {}: {detail}", path.display())]
    Corruption {
        /// The damaged file (or the database directory when no single file is to blame).
        path: PathBuf,
        /// What was found to be wrong.
        detail: String,
    },
    /// The caller passed something the engine cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A key is longer than [`MAX_KEY_LEN`](crate::MAX_KEY_LEN).
    #[error("key of {len} bytes exceeds the limit of {max} bytes")]
    KeyTooLarge {
        /// Length of the rejected key.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A value is longer than [`MAX_VALUE_LEN`](crate::MAX_VALUE_LEN).
    #[error("value of {len} bytes exceeds the limit of {max} bytes")]
    ValueTooLarge {
        /// Length of the rejected value.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// A write batch is larger than [`MAX_BATCH_LEN`](crate::MAX_BATCH_LEN).
    #[error("write batch of {len} bytes exceeds the limit of {max} bytes")]
    BatchTooLarge {
        /// Encoded size of the rejected batch.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// Another handle (in this process or another one) holds the database directory open.
    #[error("database at {} is already open (lock held on {})", dir.display(), dir.join("LOCK").display())]
    Locked {
        /// The database directory.
        dir: PathBuf,
    },
    /// A background flush or compaction failed; the database refuses writes until it is reopened,
    /// so that nothing is acknowledged that recovery could not replay.
    #[error("background error, database is read-only until reopened: {0}")]
    Background(Box<Error>),
    /// The object store holding a cold table could not serve a read (after the store's own
    /// retries). Nothing wrong was returned; the read can be retried later.
    #[error("object store unavailable: {0}")]
    Unavailable(String),
    /// The object store refused a table read (403, expired or wrong credentials, a missing
    /// bucket): a configuration error an operator must fix. Nothing wrong was returned, and the
    /// read may succeed once fixed, but retrying as such will not help.
    #[error("object store refused the request (check credentials and bucket): {0}")]
    Rejected(String),
    /// The database is closing or closed.
    #[error("database is closed")]
    Closed,
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    pub(crate) fn corruption(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Corruption {
            path: path.into(),
            detail: detail.into(),
        }
    }

    /// True when the error says the object store could not serve a read (down, or refusing
    /// this node): no data is wrong, and the same read may succeed later.
    pub fn is_object_store_outage(&self) -> bool {
        matches!(self, Error::Unavailable(_) | Error::Rejected(_))
    }

    /// True when the error reports damaged on-disk data.
    pub fn is_corruption(&self) -> bool {
        match self {
            Error::Corruption { .. } => true,
            Error::Background(inner) => inner.is_corruption(),
            _ => false,
        }
    }
}

/// Attaches a context string to `std::io::Result`s.
pub(crate) trait IoContext<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn ctx(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::io(context(), e))
    }
}
