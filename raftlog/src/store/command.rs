//! The commands replicated through the Raft log, and the replies applying them yields.
//!
//! See "Replication" in DESIGN.md: the state machine is the `lsm` engine with its WAL off, and
//! each command is applied by every replica at the same log index. Applying must be a pure
//! function of the log: a write carries the leader's clock (`now_ms`), so TTLs and the expiry
//! checks of conditional writes come out the same on every replica and on a replay.

use serde::{Deserialize, Serialize};

use crate::range::RangeDescriptor;

/// One key-value operation of a [`Command::Write`] batch. Every write of a key gives it a new
/// version: the log index of the entry that wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Sets `key` to `value` until `ttl_ms` milliseconds after the write's `now_ms`.
    PutWithTtl {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Time to live, in milliseconds.
        ttl_ms: u64,
    },
    /// Removes `key`.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// Sets `key` to `value` (with an optional time to live) only if `key` has no live value.
    PutIfAbsent {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
        /// Time to live, in milliseconds, if any.
        ttl_ms: Option<u64>,
    },
    /// Replaces `key`'s value with `new` (`None` deletes it) only if its current version is
    /// `expected_version` (`0`: only if the key is absent).
    CompareAndSet {
        /// The key.
        key: Vec<u8>,
        /// The version the key must have; `0` for "absent".
        expected_version: u64,
        /// The value to install, or `None` to delete.
        new: Option<Vec<u8>>,
        /// Time to live of the new value, in milliseconds, if any.
        ttl_ms: Option<u64>,
    },
}

impl Op {
    /// The key the operation writes.
    pub fn key(&self) -> &[u8] {
        match self {
            Op::Put { key, .. }
            | Op::PutWithTtl { key, .. }
            | Op::Delete { key }
            | Op::PutIfAbsent { key, .. }
            | Op::CompareAndSet { key, .. } => key,
        }
    }
}

/// The application payload of a Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A batch of operations, applied atomically to the active memtable at `seq = log index`.
    Write {
        /// The operations, applied in order (a later one sees the earlier ones).
        ops: Vec<Op>,
        /// The proposing leader's clock, in milliseconds since the Unix epoch: the time every
        /// replica uses for this entry's TTLs and expiry checks.
        now_ms: u64,
    },
    /// Every replica seals its active memtable at this index, so all replicas cut memtables at
    /// the same boundary.
    Seal,
    /// The leader built the memtable sealed at index `sealed_at` into a table and uploaded it;
    /// replicas drop that memtable and add the table. `edit` is an encoded [`lsm::TableEdit`].
    ChunkAdded {
        /// Log index of the [`Command::Seal`] that sealed the memtable.
        sealed_at: u64,
        /// The encoded [`lsm::TableEdit`] adding the table.
        edit: Vec<u8>,
    },
    /// The leader compacted tables in the object store; replicas apply the edit. `edit` is an
    /// encoded [`lsm::TableEdit`] naming the tables removed and the tables added.
    Compacted {
        /// The encoded [`lsm::TableEdit`].
        edit: Vec<u8>,
    },
    /// Splits the range at `key`: the keys from `key` on become the new range `child`, created
    /// on every replica as it applies this entry (see [`crate::range`]).
    Split {
        /// The first key of the new range.
        key: Vec<u8>,
        /// The new range's id (unique in the cluster).
        child: u64,
    },
}

/// The result of one [`Op`] of a write batch. Versions are log indexes; `0` means "absent".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// A `Put`, `PutWithTtl` or `Delete` was applied; the key's version is now `version`.
    Done {
        /// The key's new version.
        version: u64,
    },
    /// A `PutIfAbsent` or `CompareAndSet` was applied: its condition held.
    Applied {
        /// The key's new version.
        version: u64,
        /// The version it replaced (`0`: the key was absent).
        previous_version: u64,
    },
    /// A `PutIfAbsent` or `CompareAndSet` was not applied: its condition did not hold.
    Rejected {
        /// The key's live version (`0`: absent).
        current_version: u64,
        /// The key's live value.
        current: Option<Vec<u8>>,
    },
}

/// What applying a [`Command`] returns to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The results of a [`Command::Write`], one per op, in order.
    Write(Vec<OpResult>),
    /// A [`Command::ChunkAdded`] or [`Command::Compacted`] was applied (`true`) or recognised as
    /// a duplicate or a stale edit and ignored (`false`): the proposer then discards its tables.
    Tables {
        /// Whether the edit changed the tables.
        applied: bool,
    },
    /// A command with no result (`Seal`, Raft's own blank and membership entries).
    Done,
    /// The command could not be applied (an undecodable edit); nothing changed.
    Invalid(String),
    /// A write named a key outside the group's range (routed by an out-of-date table): nothing
    /// changed. Carries the range as it is (`None`: not known to this replica yet).
    WrongRange(Option<RangeDescriptor>),
    /// A [`Command::Split`] was applied: the range is now `parent`, and `child` exists.
    Split {
        /// This range, narrowed.
        parent: RangeDescriptor,
        /// The new range.
        child: RangeDescriptor,
    },
    /// A [`Command::Split`] was refused (the key is not inside the range, or the range holds
    /// data the child would need); nothing changed.
    SplitRefused(String),
}
