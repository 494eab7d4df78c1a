//! How the state machine stores a value in the engine: with the version (the log index of the
//! write) in front, so reads and conditional writes see it without another lookup.
//!
//! Layout, format version 1: `1u8 | version: u64 LE | user value`.

use bytes::Bytes;

/// The format byte in front of every stored value.
pub const VALUE_FORMAT: u8 = 1;
const HEADER: usize = 9;

/// A live value and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Versioned {
    /// The log index of the write that set it.
    pub version: u64,
    /// The user's value.
    pub value: Bytes,
}

/// The stored form of `value` written at `version`.
pub fn encode(version: u64, value: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(HEADER + value.len());
    b.push(VALUE_FORMAT);
    b.extend_from_slice(&version.to_le_bytes());
    b.extend_from_slice(value);
    b
}

/// Decodes a stored value; `None` when it is not in this format.
pub fn decode(stored: Bytes) -> Option<Versioned> {
    if stored.len() < HEADER || stored[0] != VALUE_FORMAT {
        return None;
    }
    let mut v = [0u8; 8];
    v.copy_from_slice(&stored[1..HEADER]);
    Some(Versioned {
        version: u64::from_le_bytes(v),
        value: stored.slice(HEADER..),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_refusals() {
        let e = encode(42, b"hello");
        let d = decode(Bytes::from(e.clone())).unwrap();
        assert_eq!((d.version, &d.value[..]), (42, &b"hello"[..]));
        assert_eq!(decode(Bytes::from(encode(7, b""))).unwrap().value.len(), 0);
        assert!(decode(Bytes::from(e[..8].to_vec())).is_none());
        let mut bad = e;
        bad[0] = 2;
        assert!(decode(Bytes::from(bad)).is_none());
    }
}
