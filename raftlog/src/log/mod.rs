//! The segmented Raft log.

// Wired into the `Log` type in a following commit.
#![allow(dead_code)]

mod framing;
mod fsutil;
mod meta;

pub use meta::{MetaKind, MAX_META_LEN};
