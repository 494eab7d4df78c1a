//! Typed errors of the Raft storage layer.

use std::path::PathBuf;

/// The result type of every fallible operation of this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in the log store.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Raft could not start.
    #[error("raft: {0}")]
    Raft(String),
    /// The state machine's engine failed.
    #[error("engine: {0}")]
    Engine(#[from] lsm::Error),
    /// An operating-system I/O error, with what the log was doing when it happened.
    #[error("I/O error while {context}: {source}")]
    Io {
        /// What the log was doing.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A file's contents are not what the log wrote (bad magic or checksum where a crash cannot
    /// explain it, a hole between segments, a file name that disagrees with its header). The log
    /// refuses to open rather than guess.
    #[error("corruption in {}: {detail}", path.display())]
    Corruption {
        /// The damaged file, or the log directory when no single file is to blame.
        path: PathBuf,
        /// What was found to be wrong.
        detail: String,
    },
    /// A record of the Raft log is damaged where a crash cannot explain it: a later record (or
    /// segment) proves the damaged entry had been synced. Recovery refuses to open the log
    /// rather than drop acknowledged entries; the replica must be rebuilt (see the README).
    #[error("corrupt raft log: {} at byte offset {offset}: {detail}", path.display())]
    CorruptRecord {
        /// The damaged segment file.
        path: PathBuf,
        /// Byte offset in it of the first damaged record.
        offset: u64,
        /// Which entry was lost and what proves it had been durable.
        detail: String,
    },
    /// A file was written by a newer (or unknown) version of the format.
    #[error("{} has format version {found}, this build reads version {supported}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The version this build reads and writes.
        supported: u32,
    },
    /// An append did not continue the log: its first index is not the one after the last entry
    /// (or after the purge point), or its indexes are not consecutive.
    #[error("append of index {got} where index {expected} was expected")]
    NotContiguous {
        /// The index the log expected.
        expected: u64,
        /// The index it was given.
        got: u64,
    },
    /// A read asked for entries at or below the purge point.
    #[error("index {index} is purged (entries up to {purged} are gone)")]
    Purged {
        /// The first index asked for.
        index: u64,
        /// The last purged index.
        purged: u64,
    },
    /// An entry is larger than [`MAX_ENTRY_LEN`](crate::log::MAX_ENTRY_LEN).
    #[error("log entry of {len} bytes exceeds the limit of {max} bytes")]
    EntryTooLarge {
        /// Length of the rejected entry.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The caller passed something the log cannot accept.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Another handle (in this process or another one) holds the log directory open.
    #[error("log at {} is already open", dir.display())]
    Locked {
        /// The log directory.
        dir: PathBuf,
    },
    /// An earlier write or sync failed. After a failed `fsync` the kernel may have dropped the
    /// dirty pages, so what is on disk is unknown: the log refuses writes until it is reopened
    /// and recovery has established what survived.
    #[error("an earlier write failed; the log is read-only until reopened")]
    Poisoned,
}

impl Error {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub(crate) fn corruption(path: impl Into<PathBuf>, detail: impl Into<String>) -> Self {
        Error::Corruption {
            path: path.into(),
            detail: detail.into(),
        }
    }

    /// True when the error reports damaged on-disk data.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corruption { .. } | Error::CorruptRecord { .. })
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
