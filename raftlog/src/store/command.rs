//! The commands replicated through the Raft log, and the replies applying them yields.
//!
//! See "Replication" in DESIGN.md: the state machine is the `lsm` engine with its WAL off, and
//! each command is applied by every replica at the same log index. The state machine is not built
//! yet, so the SST metadata carried by [`Command::ChunkAdded`] and [`Command::Compacted`] is an
//! opaque byte payload for now; its encoding will be fixed by the state machine.

use serde::{Deserialize, Serialize};

/// One key-value operation of a [`Command::Write`] batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Sets `key` to `value`.
    Put {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Sets `key` to `value`, expiring `ttl_ms` milliseconds after the write is applied.
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
    /// Sets `key` to `value` only if `key` has no live value.
    PutIfAbsent {
        /// The key.
        key: Vec<u8>,
        /// The value.
        value: Vec<u8>,
    },
    /// Replaces the value of `key` with `new` only if it currently is `expected`. `None` stands
    /// for "absent" on both sides: `expected: None` requires the key to be absent, `new: None`
    /// deletes it.
    CompareAndSet {
        /// The key.
        key: Vec<u8>,
        /// The value the key must hold for the swap to happen.
        expected: Option<Vec<u8>>,
        /// The value to install.
        new: Option<Vec<u8>>,
    },
}

/// The application payload of a Raft log entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// A batch of operations, applied atomically to the active memtable at `seq = log index`.
    Write(Vec<Op>),
    /// Every replica seals its active memtable at this index, so all replicas cut memtables at
    /// the same boundary.
    Seal,
    /// The leader built the memtable sealed at index `sealed_at` into an SST and uploaded it;
    /// replicas drop that memtable and add the SST. `meta` is the SST's metadata, an opaque
    /// payload until the state machine defines its encoding.
    ChunkAdded {
        /// Log index of the [`Command::Seal`] that sealed the memtable.
        sealed_at: u64,
        /// Opaque SST metadata.
        meta: Vec<u8>,
    },
    /// The leader compacted chunks in the object store; replicas apply the edit. `added` is an
    /// opaque payload (the new SSTs' metadata) until the state machine defines its encoding.
    Compacted {
        /// Ids of the chunks the compaction replaced.
        removed: Vec<u64>,
        /// Opaque metadata of the chunks it produced.
        added: Vec<u8>,
    },
}

/// The result of one [`Op`] of a write batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum OpResult {
    /// A `Put`, `PutWithTtl` or `Delete` was applied.
    Done,
    /// A `PutIfAbsent` or `CompareAndSet` was applied: its condition held.
    Applied,
    /// A `PutIfAbsent` or `CompareAndSet` was not applied; `current` is the key's live value
    /// (`None` when absent), so the client can retry or report the conflict.
    Rejected {
        /// The value the key held.
        current: Option<Vec<u8>>,
    },
}

/// What applying a [`Command`] returns to the client that proposed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    /// The results of a [`Command::Write`], one per op, in order.
    Write(Vec<OpResult>),
    /// A command with no per-op result (`Seal`, `ChunkAdded`, `Compacted`, and Raft's own
    /// blank and membership entries) was applied.
    Done,
}
