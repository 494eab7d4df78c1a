//! Iteration: positioned sources (memtables, tables, levels), their k-way merge, and the
//! user-facing iterator that resolves versions, tombstones, expiry and bounds.
//!
//! Each source is built for one direction; a double-ended user iterator keeps one merge per
//! direction and stops when the two ends meet, which avoids the direction-switching logic of a
//! single bidirectional cursor.

pub(crate) mod db_iter;
pub(crate) mod merge;
pub(crate) mod sources;

use bytes::Bytes;

use crate::Result;

/// A sorted stream of internal entries in one direction.
pub(crate) trait Source: Send {
    fn valid(&self) -> bool;
    /// Current internal key; only called when `valid()`.
    fn key(&self) -> &[u8];
    fn key_bytes(&self) -> Bytes;
    fn value_bytes(&self) -> Bytes;
    fn advance(&mut self) -> Result<()>;
}
