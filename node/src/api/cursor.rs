//! The cursor of a scan page (`GET /kv`, see [`crate::api::scan`]): a direction tag and a key,
//! base64url without padding. Opaque to clients, but it comes back from them, so decoding it
//! must refuse anything this node did not hand out.
//!
//! This file uses nothing else of the node, so the fuzz targets (`fuzz/` at the repository root)
//! compile it by path, without the node's HTTP and S3 dependencies.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;

/// Tag of a forward scan's cursor: an inclusive start. A cursor resumes a scan in the
/// direction it was handed out for only.
pub const FORWARD: u8 = b'f';
/// Tag of a reverse scan's cursor: an exclusive end.
pub const REVERSE: u8 = b'r';

/// Why a cursor was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CursorError {
    /// Not base64url, or no known tag.
    Malformed,
    /// A cursor of a scan in the other direction.
    OtherDirection,
}

/// The cursor resuming a scan tagged `tag` at `key`.
pub fn encode(tag: u8, key: &[u8]) -> String {
    let mut raw = Vec::with_capacity(key.len() + 1);
    raw.push(tag);
    raw.extend_from_slice(key);
    URL_SAFE_NO_PAD.encode(raw)
}

/// The key of a cursor handed out for a scan tagged `tag`.
pub fn decode(cursor: &str, tag: u8) -> Result<Vec<u8>, CursorError> {
    let mut raw = URL_SAFE_NO_PAD
        .decode(cursor)
        .map_err(|_| CursorError::Malformed)?;
    match raw.first() {
        Some(&t) if t == tag => Ok(raw.split_off(1)),
        Some(&(FORWARD | REVERSE)) => Err(CursorError::OtherDirection),
        _ => Err(CursorError::Malformed),
    }
}

/// The entry point of the `node_scan_cursor` fuzz target and of the corpus replay test: the
/// input as a query parameter's value, decoded for both directions. `Ok` when either accepts
/// it; an accepted key must come back from its own cursor.
#[cfg(any(test, fuzzing))]
pub fn fuzz_cursor(data: &[u8]) -> Result<(), String> {
    let cursor = String::from_utf8_lossy(data);
    let mut refused = Vec::new();
    for tag in [FORWARD, REVERSE] {
        match decode(&cursor, tag) {
            Ok(key) => {
                assert_eq!(decode(&encode(tag, &key), tag).as_ref(), Ok(&key));
                return Ok(());
            }
            Err(e) => refused.push(format!("{e:?}")),
        }
    }
    Err(refused.join("; "))
}
