//! Raft storage for Strata.
//!
//! Strata replicates its key-value store with openraft: every replica appends the same commands to
//! a Raft log and applies them to its own state machine, which is the `lsm` engine with its WAL
//! turned off (the Raft log takes the WAL's place). This crate will hold both halves of openraft's
//! storage: the log store and the state machine over `lsm`.
//!
//! For now it holds the first half: [`Log`], a hand-built segmented log of opaque entries
//! addressed by index, with the small durable values Raft needs beside it (vote, committed, purge
//! point), and [`store::LogStore`], openraft's `RaftLogStorage` over it (the [`store`] module also
//! holds the [`store::TypeConfig`] and the [`store::Command`]s the log carries). [`Log`] knows
//! nothing of openraft's types; the store encodes entries and log ids and calls into it. Its
//! guarantees are the ones openraft relies on:
//!
//! - an [`append`](Log::append) returns only once its whole batch is durable (one `fdatasync`),
//!   so acknowledging it to openraft (`log_io_completed`) after the call is safe;
//! - [`save_meta`](Log::save_meta) (the vote) returns only once the value survives a crash;
//! - [`truncate`](Log::truncate) and [`purge`](Log::purge) are durable when they return: a
//!   truncated entry never reappears, and the purge point survives even though the entries are
//!   gone;
//! - recovery keeps the longest valid prefix and stops at the first torn or corrupt record, never
//!   skipping damage to read what follows.
#![warn(missing_docs)]

pub mod error;
pub mod inproc;
pub mod log;
pub mod maintain;
mod replica;
pub mod sm;
pub mod store;

pub use error::{Error, Result};
pub use log::{
    Log, LogOptions, LogStats, MetaKind, RecoveryDamage, RecoveryInfo, SyncHandle, MAX_ENTRY_LEN,
    MAX_META_LEN,
};
pub use maintain::{Maintainer, MaintainerOptions};
pub use replica::Replica;
pub use sm::{StateMachine, Versioned};
