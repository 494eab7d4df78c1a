//! Sorted string tables: immutable files of sorted internal keys.
//!
//! Layout, format version 1 (all integers little-endian):
//! ```text
//! file    := data_block* filter_block index_block props_block footer
//! block   := payload | compression u8 (0 = none, 1 = lz4) | crc32 u32 of (payload ++ compression)
//!            an lz4 payload is `uncompressed_len u32 | lz4 block`
//! data    := entry* restart_offset u32 * n | n u32          (after decompression)
//! entry   := varint shared | varint unshared | varint value_len | key[shared..] | value
//!            keys are internal keys (user key ++ trailer); shared = 0 at every restart point
//! index   := a data-format block with restart interval 1; one entry per data block:
//!            key = last internal key of the block, value = varint offset | varint payload size
//! filter  := bloom filter (`bloomfilter` crate bytes) over xxh3-64 of every user key
//! props   := see `props.rs`
//! footer  := (offset u64, size u64) for filter, index, props | version u32 | crc32 u32 of the
//!            preceding 52 bytes | magic u64                                      = 64 bytes
//! ```
//! Every block's checksum is verified before it is decompressed or decoded, and the footer is
//! checked before anything else is trusted; a mismatch is a corruption error, never a panic.

pub mod block;
pub mod builder;
pub mod filter;
pub mod props;
pub mod reader;
mod source;

pub use builder::TableBuilder;
pub use props::Properties;
pub(crate) use reader::save_meta;
pub use reader::Table;
pub(crate) use source::object_error as source_error;

/// Format version written in every footer.
pub const FORMAT_VERSION: u32 = 1;
/// Last eight bytes of every table.
pub const MAGIC: u64 = 0x5354_5241_5441_5353; // "STRATASS"
/// Size of the fixed footer.
pub const FOOTER_LEN: usize = 64;
/// Compression byte + crc32 after every block payload.
pub const BLOCK_TRAILER_LEN: usize = 5;
/// Largest uncompressed block the reader accepts (guards decompression of damaged input).
pub(crate) const MAX_BLOCK_LEN: usize = crate::MAX_VALUE_LEN + crate::MAX_KEY_LEN + 4096;

pub(crate) const COMPRESSION_NONE: u8 = 0;
pub(crate) const COMPRESSION_LZ4: u8 = 1;

/// Where a block lives in its file: offset and payload size (without trailer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BlockHandle {
    /// Byte offset of the payload.
    pub offset: u64,
    /// Payload size in bytes, excluding the 5-byte trailer.
    pub size: u64,
}

/// Hash of a user key as stored in the filter; computed once per lookup and probed in every table.
#[inline]
pub fn filter_hash(user_key: &[u8]) -> u64 {
    xxhash_rust::xxh3::xxh3_64(user_key)
}
