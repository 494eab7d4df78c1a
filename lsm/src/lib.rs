//! `lsm` — an embeddable, crash-safe, ordered key-value store built as a log-structured merge
//! tree.
//!
//! Writes go to a write-ahead log and a skip-list memtable; full memtables are flushed to sorted,
//! checksummed, LZ4-compressed tables (SSTs) that background compaction merges down a leveled
//! tree. Reads consult the memtables, then the tables, each guarded by a bloom filter and an
//! index, with data blocks cached in memory (and, for levels kept in an object store, optionally
//! on local disk). The API is synchronous and thread-safe and needs no async runtime.
//!
//! ```
//! use lsm::{Db, Options, WriteBatch};
//!
//! # fn main() -> lsm::Result<()> {
//! let dir = tempfile::tempdir().map_err(|e| lsm::Error::InvalidArgument(e.to_string()))?;
//! let db = Db::open(dir.path(), Options::default())?;
//! db.put("apple", "red")?;
//! let mut batch = WriteBatch::new();
//! batch.put("banana", "yellow");
//! batch.delete("apple");
//! db.write(batch)?;
//! assert_eq!(db.get("apple")?, None);
//! for item in db.range("a".."c") {
//!     let (key, value) = item?;
//!     println!("{key:?} = {value:?}");
//! }
//! db.close()?;
//! # Ok(())
//! # }
//! ```
//!
//! # Guarantees
//!
//! * A write acknowledged with [`WriteOptions::sync`] survives a crash of the process or the
//!   machine; other acknowledged writes survive a crash of the process. After a crash, the
//!   writes that survive are a prefix of the acknowledged ones: no holes, no reordering.
//! * A [`WriteBatch`] is atomic for readers and for recovery.
//! * Damaged files are detected by checksums; the engine returns an error or recovers up to
//!   the damage, and never returns data it did not write.
//! * A directory is open in at most one [`Db`] at a time, across processes (`LOCK`).
//!
//! # Limits
//!
//! Keys up to [`MAX_KEY_LEN`] bytes, values up to [`MAX_VALUE_LEN`] bytes, batches up to
//! [`MAX_BATCH_LEN`] encoded bytes; larger ones are rejected with a typed error and nothing is
//! written. Sequence numbers have 56 bits ([`MAX_SEQ`]).
#![warn(missing_docs)]

mod batch;
mod cache;
mod claim;
mod coding;
mod cold_gc;
mod compaction;
mod db;
mod diskcache;
mod error;
mod framing;
mod fsutil;
#[doc(hidden)]
pub mod fuzzing;
mod iter;
mod key;
mod manifest;
mod memfilter;
pub mod memtable;
pub mod object;
mod options;
pub mod sst;
mod stats;
mod version;
mod wal;

pub use batch::WriteBatch;
pub use cache::BlockCache;
pub use db::{
    prefix_upper_bound, Db, ManifestImage, RecoveryReport, ReplicaStatus, Snapshot, TableEdit,
};
pub use diskcache::{DiskCacheOptions, MIN_DISK_CACHE_BYTES};
pub use error::{Error, Result};
pub use iter::db_iter::Iter;
pub use key::{ValueKind, MAX_SEQ};
pub use options::{
    Clock, ColdTier, Compression, ManualClock, Options, SystemClock, WriteOptions, MAX_BATCH_LEN,
    MAX_KEY_LEN, MAX_VALUE_LEN,
};
pub use stats::{LevelStats, Stats, TableInfo};
#[doc(hidden)]
pub use wal::fail_next_syncs as fail_next_wal_syncs;

/// Builds an internal key (user key followed by the sequence/kind trailer), for tools and
/// benchmarks that drive [`memtable`] or [`sst`] directly.
pub fn internal_key(user_key: &[u8], seq: u64, kind: ValueKind) -> Vec<u8> {
    key::make_internal_key(user_key, seq, kind as u8)
}
