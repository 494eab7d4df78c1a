//! Raft storage for Strata.
//!
//! Strata replicates its key-value store with openraft (0.9, `storage-v2`): every replica appends
//! the same commands to a Raft log and applies them to its own state machine, which is the `lsm`
//! engine in replicated mode (no WAL: the Raft log takes its place). See "Replication" in
//! DESIGN.md. This crate holds:
//!
//! - [`Log`], a hand-built segmented log of opaque entries addressed by index, with the small
//!   durable values Raft needs beside it (vote, committed, purge point), and
//!   [`store::LogStore`], openraft's `RaftLogStorage` over it, with group commit: an append is
//!   acknowledged only after an `fdatasync` that covers it, and one sync covers every append
//!   written before it. Recovery keeps the longest valid prefix and stops at the first torn or
//!   corrupt record; truncate, purge and the vote are durable when they return.
//! - [`StateMachine`], openraft's `RaftStateMachine` and snapshot builder over the engine:
//!   deterministic apply at `seq = log index` (conditions and TTLs judged with the leader's clock
//!   carried in the entry), replies with versions, and snapshots that are the engine's manifest
//!   image (tables in the shared object store), never the data.
//! - [`Maintainer`], the leader's side of flushing and compaction (seal, build and upload a
//!   table, replicate the edit) and every replica's snapshot trigger; [`Replica`] assembles a
//!   node from a directory.
//! - [`inproc`], an in-process transport with message loss, delay and partitions, for tests and
//!   benchmarks.
#![warn(missing_docs)]

pub mod error;
#[doc(hidden)]
pub mod fuzzing;
pub mod inproc;
pub mod log;
pub mod maintain;
pub mod range;
mod replica;
pub mod sm;
pub mod store;

pub use error::{Error, Result};
pub use log::{
    Log, LogOptions, LogStats, MetaKind, RecoveryDamage, RecoveryInfo, SyncHandle, MAX_ENTRY_LEN,
    MAX_META_LEN,
};
pub use maintain::{Maintainer, MaintainerOptions};
pub use range::{RangeDescriptor, FIRST_RANGE, META_RANGE};
pub use replica::Replica;
pub use sm::{ApplyStall, StateMachine, Versioned};
