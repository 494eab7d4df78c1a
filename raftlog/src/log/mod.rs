//! The segmented Raft log.

// Wired into the `Log` type in a following commit.
#![allow(dead_code)]

mod framing;
mod fsutil;
mod meta;
mod segment;

pub use meta::{MetaKind, MAX_META_LEN};
pub use segment::MAX_ENTRY_LEN;
