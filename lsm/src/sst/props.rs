//! Table properties block.
//!
//! Layout, version 1: `varint` fields in this order: entries, deletions, data_blocks,
//! raw_key_bytes, raw_value_bytes, min_seq, max_seq, then length-prefixed smallest and largest
//! internal keys. Unknown trailing bytes are ignored, so later versions can append fields.

use crate::coding::{put_bytes, put_varint, Reader};

/// Summary of a table, stored in it and mirrored in the manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Properties {
    /// Entries (puts and tombstones).
    pub entries: u64,
    /// Tombstones.
    pub deletions: u64,
    /// Data blocks.
    pub data_blocks: u64,
    /// Sum of internal key lengths.
    pub raw_key_bytes: u64,
    /// Sum of value lengths.
    pub raw_value_bytes: u64,
    /// Smallest sequence number.
    pub min_seq: u64,
    /// Largest sequence number.
    pub max_seq: u64,
    /// Smallest internal key.
    pub smallest: Vec<u8>,
    /// Largest internal key.
    pub largest: Vec<u8>,
}

impl Properties {
    pub(crate) fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(64 + self.smallest.len() + self.largest.len());
        for v in [
            self.entries,
            self.deletions,
            self.data_blocks,
            self.raw_key_bytes,
            self.raw_value_bytes,
            self.min_seq,
            self.max_seq,
        ] {
            put_varint(&mut b, v);
        }
        put_bytes(&mut b, &self.smallest);
        put_bytes(&mut b, &self.largest);
        b
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Properties> {
        let mut r = Reader::new(b);
        let mut p = Properties {
            entries: r.varint()?,
            deletions: r.varint()?,
            data_blocks: r.varint()?,
            raw_key_bytes: r.varint()?,
            raw_value_bytes: r.varint()?,
            min_seq: r.varint()?,
            max_seq: r.varint()?,
            ..Default::default()
        };
        p.smallest = r.bytes()?.to_vec();
        p.largest = r.bytes()?.to_vec();
        if p.smallest.len() < crate::key::TRAILER_LEN || p.largest.len() < crate::key::TRAILER_LEN {
            return None;
        }
        Some(p)
    }
}
