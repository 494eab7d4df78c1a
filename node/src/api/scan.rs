//! `GET /kv`: range and prefix scans over the key-value space, in key order or in reverse, one
//! page at a time. Keys under the short-link prefix (`link/`) are never returned: the scanned
//! range is cut around them, so a scan neither shows nor walks over them.
//!
//! A page is `{"items": [{"key", "value", "version"}...], "cursor"}`. Values (and keys) that are
//! not UTF-8 are base64 (standard alphabet, padded) with `"encoding": "base64"` (for keys,
//! `"key_encoding": "base64"`). `cursor` is `null` on the last page; otherwise passing it back
//! as `?cursor=` (with the same range) resumes right after the page. A page holds at most
//! `limit` items and `--scan-page-bytes` of keys and values (but always one item): a page of
//! 1,000 values of 8 MiB would otherwise be built in memory whole.

use std::ops::Bound;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::Json;
use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use bytes::Bytes;
use serde::Deserialize;

use crate::api::cursor::{self, CursorError, FORWARD, REVERSE};
use crate::api::error::ApiError;
use crate::api::links::KEY_PREFIX;
use crate::server::AppState;

/// Items per page when the query names no `limit`.
pub const DEFAULT_LIMIT: usize = 100;
/// The largest `limit` accepted.
pub const MAX_LIMIT: usize = 1000;

/// Query of `GET /kv`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScanQuery {
    /// Only keys starting with this (not with `start` or `end`).
    prefix: Option<String>,
    /// Smallest key (inclusive).
    start: Option<String>,
    /// Key the range stops before (exclusive).
    end: Option<String>,
    /// Items per page: 1 to [`MAX_LIMIT`], [`DEFAULT_LIMIT`] by default.
    limit: Option<usize>,
    /// Largest key first.
    reverse: Option<bool>,
    /// `linearizable` (default), `lease` or `stale`, as for `GET /kv/{key}`.
    consistency: Option<String>,
    /// Where the previous page stopped.
    cursor: Option<String>,
}

/// A query bound naming a reserved key is refused outright rather than silently cut: the
/// caller asked for something the KV API does not serve. `end` may be the prefix itself
/// ("everything before the links").
fn check_bound(name: &str, key: &str) -> Result<(), ApiError> {
    if key.starts_with(KEY_PREFIX) && !(name == "end" && key == KEY_PREFIX) {
        return Err(ApiError::bad_request(format!(
            "{name}: keys starting with {KEY_PREFIX:?} are reserved for short links"
        )));
    }
    Ok(())
}

/// The tighter of two lower bounds.
fn max_lower(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    use Bound::*;
    match (a, b) {
        (Unbounded, x) | (x, Unbounded) => x,
        (Included(x), Included(y)) => Included(x.max(y)),
        (Excluded(x), Excluded(y)) => Excluded(x.max(y)),
        (Included(i), Excluded(e)) | (Excluded(e), Included(i)) => {
            if i > e {
                Included(i)
            } else {
                Excluded(e)
            }
        }
    }
}

/// The tighter of two upper bounds.
fn min_upper(a: Bound<Vec<u8>>, b: Bound<Vec<u8>>) -> Bound<Vec<u8>> {
    use Bound::*;
    match (a, b) {
        (Unbounded, x) | (x, Unbounded) => x,
        (Included(x), Included(y)) => Included(x.min(y)),
        (Excluded(x), Excluded(y)) => Excluded(x.min(y)),
        (Included(i), Excluded(e)) | (Excluded(e), Included(i)) => {
            if i < e {
                Included(i)
            } else {
                Excluded(e)
            }
        }
    }
}

/// A range of keys: lower and upper bound.
type KeyRange = (Bound<Vec<u8>>, Bound<Vec<u8>>);

/// The key range `[lo, hi)` minus the reserved link keys, as up to two ranges in key order.
fn segments(lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> [KeyRange; 2] {
    let reserved_lo = KEY_PREFIX.as_bytes().to_vec();
    let reserved_hi = lsm::prefix_upper_bound(KEY_PREFIX.as_bytes());
    let below = (
        lo.clone(),
        min_upper(hi.clone(), Bound::Excluded(reserved_lo)),
    );
    let above = match reserved_hi {
        Bound::Excluded(k) => (max_lower(lo, Bound::Included(k)), hi),
        // Not reachable for a prefix that does not end in 0xff bytes; nothing lies above then.
        _ => (Bound::Excluded(Vec::new()), Bound::Excluded(Vec::new())),
    };
    [below, above]
}

/// An opaque cursor: the direction tag and the key (see [`cursor`]).
fn encode_cursor(tag: u8, key: &[u8]) -> String {
    cursor::encode(tag, key)
}

fn decode_cursor(c: &str, tag: u8) -> Result<Vec<u8>, ApiError> {
    cursor::decode(c, tag).map_err(|e| match e {
        CursorError::Malformed => {
            ApiError::bad_request("the cursor is not one this API handed out")
        }
        CursorError::OtherDirection => {
            ApiError::bad_request("the cursor was handed out for a scan in the other direction")
        }
    })
}

/// A string field, or its base64 and a marker field when it is not UTF-8.
pub(crate) fn put_bytes(
    item: &mut serde_json::Map<String, serde_json::Value>,
    name: &str,
    marker: &str,
    b: &[u8],
) {
    match std::str::from_utf8(b) {
        Ok(s) => {
            item.insert(name.into(), s.into());
        }
        Err(_) => {
            item.insert(name.into(), STANDARD.encode(b).into());
            item.insert(marker.into(), "base64".into());
        }
    }
}

/// `GET /kv?prefix=P` or `GET /kv?start=S&end=E` (either bound optional): one page of the live
/// pairs in the range, with `limit`, `reverse`, `consistency` and `cursor` as described in the
/// module documentation.
pub async fn scan(
    State(state): State<AppState>,
    q: Result<Query<ScanQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = q.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let limit = q.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::bad_request(format!(
            "limit must be 1 to {MAX_LIMIT}"
        )));
    }
    let reverse = q.reverse.unwrap_or(false);
    let (mut lo, mut hi) = match (&q.prefix, &q.start, &q.end) {
        (Some(_), Some(_), _) | (Some(_), _, Some(_)) => {
            return Err(ApiError::bad_request(
                "prefix cannot be combined with start or end",
            ))
        }
        (Some(p), None, None) => {
            check_bound("prefix", p)?;
            (
                Bound::Included(p.as_bytes().to_vec()),
                lsm::prefix_upper_bound(p.as_bytes()),
            )
        }
        (None, start, end) => {
            let lo = match start {
                Some(s) => {
                    check_bound("start", s)?;
                    Bound::Included(s.as_bytes().to_vec())
                }
                None => Bound::Unbounded,
            };
            let hi = match end {
                Some(e) => {
                    check_bound("end", e)?;
                    Bound::Excluded(e.as_bytes().to_vec())
                }
                None => Bound::Unbounded,
            };
            (lo, hi)
        }
    };
    // The cursor narrows the range (never widens it: a cursor from elsewhere reads nothing
    // outside what the query names).
    if let Some(c) = &q.cursor {
        if reverse {
            hi = min_upper(hi, Bound::Excluded(decode_cursor(c, REVERSE)?));
        } else {
            lo = max_lower(lo, Bound::Included(decode_cursor(c, FORWARD)?));
        }
    }
    crate::api::kv::check_consistency(q.consistency.as_deref())?;
    let page = Page {
        limit,
        max_bytes: state.scan_page_bytes(),
        reverse,
        found: Vec::new(),
        bytes: 0,
    };
    let (page, next, mode) = walk(&state, page, lo, hi, q.consistency.as_deref()).await?;
    let mut r = Json(page.into_json(next)?).into_response();
    if let Some(mode) = mode {
        r.headers_mut()
            .insert(crate::api::kv::READ_HEADER, mode.header());
    }
    Ok(r)
}

/// What a scan page holds so far.
struct Page {
    limit: usize,
    max_bytes: usize,
    reverse: bool,
    found: Vec<(Bytes, Bytes)>,
    bytes: usize,
}

/// Where the next page resumes: a key in the scan's direction (forward: the first key not
/// returned, inclusive; reverse: the last key returned, exclusive).
type Next = Option<Vec<u8>>;

/// Walks the ranges holding `[lo, hi)` in the page's direction, filling the page from each
/// in turn. Each range is read after its own read barrier, and its piece is read again if
/// the range changed meanwhile (a split moved part of it away): the page never misses a key
/// a range boundary moved. Returns the page, where the next one resumes, and how the first
/// range's read was made safe.
async fn walk(
    state: &AppState,
    mut page: Page,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    consistency: Option<&str>,
) -> Result<(Page, Next, Option<crate::api::kv::ReadMode>), ApiError> {
    let mut mode = None;
    // The part of [lo, hi) not walked yet.
    let (mut lo, mut hi) = (lo, hi);
    loop {
        if is_empty(&lo, &hi) {
            return Ok((page, None, mode));
        }
        // The range holding the next key in the scan's direction.
        let probe: Vec<u8> = match (&lo, page.reverse) {
            (Bound::Included(k), false) => k.clone(),
            (Bound::Excluded(k), false) => {
                let mut k = k.clone();
                k.push(0);
                k
            }
            (Bound::Unbounded, false) => Vec::new(),
            (_, true) => Vec::new(),
        };
        let upper: Option<Vec<u8>> = match &hi {
            Bound::Excluded(k) => Some(k.clone()),
            Bound::Included(k) => {
                let mut k = k.clone();
                k.push(0);
                Some(k)
            }
            Bound::Unbounded => None,
        };
        let (desc, range) = if page.reverse {
            route(state, |r| r.route_below(upper.as_deref())).await?
        } else {
            route(state, |r| r.route(&probe)).await?
        };
        let m = crate::api::kv::read_point(&range, consistency).await?;
        mode.get_or_insert(m);
        // This range's piece of what is left.
        let piece_lo = max_lower(lo.clone(), Bound::Included(desc.start.clone()));
        let piece_hi = match &desc.end {
            Some(e) => min_upper(hi.clone(), Bound::Excluded(e.clone())),
            None => hi.clone(),
        };
        let (room_items, room_bytes) = (
            page.limit - page.found.len(),
            page.max_bytes.saturating_sub(page.bytes),
        );
        let (first_item, reverse) = (page.found.is_empty(), page.reverse);
        let (items, left) = range
            .read_engine(state.read_pool(), move |db| {
                read_piece(
                    db, piece_lo, piece_hi, room_items, room_bytes, first_item, reverse,
                )
            })
            .await?;
        // Read after the range changed: its piece may have moved (a split). Route again.
        if range.descriptor_arc().as_deref() != Some(&*desc) {
            continue;
        }
        range
            .reads_served
            .fetch_add(items.len() as u64, std::sync::atomic::Ordering::Relaxed);
        for (k, v) in items {
            page.bytes += k.len() + v.len();
            page.found.push((k, v));
        }
        if let Some(first_left) = left {
            let next = if page.reverse {
                page.found.last().map(|(k, _)| k.to_vec())
            } else {
                Some(first_left.to_vec())
            };
            return Ok((page, next, mode));
        }
        // The piece is done: what is left lies beyond this range, if anything.
        if page.reverse {
            let lo_inside = match &lo {
                Bound::Included(k) => *k > desc.start,
                Bound::Excluded(k) => *k >= desc.start,
                Bound::Unbounded => false,
            };
            if desc.start.is_empty() || lo_inside {
                return Ok((page, None, mode));
            }
            hi = Bound::Excluded(desc.start.clone());
        } else {
            let Some(end) = desc.end.clone() else {
                return Ok((page, None, mode));
            };
            let hi_inside = match &hi {
                Bound::Excluded(k) => *k <= end,
                Bound::Included(k) => *k < end,
                Bound::Unbounded => false,
            };
            if hi_inside {
                return Ok((page, None, mode));
            }
            lo = Bound::Included(end);
        }
        if page.found.len() == page.limit || page.bytes >= page.max_bytes {
            // Full at a range boundary: the next page starts at the next range.
            let next = if page.reverse {
                page.found.last().map(|(k, _)| k.to_vec())
            } else {
                match &lo {
                    Bound::Included(k) => Some(k.clone()),
                    _ => None,
                }
            };
            return Ok((page, next, mode));
        }
    }
}

/// A range and its descriptor as the router found them.
type Routed = (
    std::sync::Arc<raftlog::RangeDescriptor>,
    std::sync::Arc<crate::cluster::range::Range>,
);

/// The range `find` picks from this node's ranges, looked up again while ranges move (a
/// child not started here yet).
async fn route(
    state: &AppState,
    find: impl Fn(&crate::cluster::ranges::Ranges) -> Option<Routed>,
) -> Result<Routed, ApiError> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(found) = find(&state.ranges) {
            return Ok(found);
        }
        if std::time::Instant::now() > deadline {
            return Err(crate::cluster::range::wrong_range(None));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Whether no key lies in `[lo, hi)`.
fn is_empty(lo: &Bound<Vec<u8>>, hi: &Bound<Vec<u8>>) -> bool {
    match (lo, hi) {
        (Bound::Included(l), Bound::Excluded(h)) => l >= h,
        (Bound::Included(l), Bound::Included(h)) => l > h,
        (Bound::Excluded(l), Bound::Excluded(h) | Bound::Included(h)) => l >= h,
        _ => false,
    }
}

/// Pairs read from a range, and the first key left after them in the piece, if any.
type Piece = (Vec<(Bytes, Bytes)>, Option<Bytes>);

/// Reads up to `room_items` pairs holding at most `room_bytes` of keys and values (at least
/// one pair when `first_item`, whatever its size) from `[lo, hi)` of one range's engine, and
/// the key after them, which says whether this piece has more.
fn read_piece(
    db: &lsm::Db,
    lo: Bound<Vec<u8>>,
    hi: Bound<Vec<u8>>,
    room_items: usize,
    room_bytes: usize,
    first_item: bool,
    reverse: bool,
) -> Result<Piece, ApiError> {
    let mut segs = segments(lo, hi);
    if reverse {
        segs.reverse();
    }
    let mut found: Vec<(Bytes, Bytes)> = Vec::with_capacity(room_items.min(64));
    let mut bytes = 0usize;
    for seg in segs {
        if is_empty(&seg.0, &seg.1) {
            continue;
        }
        let it = db.range(seg);
        let it: Box<dyn Iterator<Item = lsm::Result<(Bytes, Bytes)>>> = if reverse {
            Box::new(it.rev())
        } else {
            Box::new(it)
        };
        for r in it {
            let (key, value) =
                r.map_err(|e| ApiError::unavailable(format!("the scan failed: {e}")))?;
            let size = key.len() + value.len();
            let may_exceed = first_item && found.is_empty();
            if found.len() == room_items || (!may_exceed && bytes + size > room_bytes) {
                return Ok((found, Some(key)));
            }
            bytes += size;
            found.push((key, value));
        }
    }
    Ok((found, None))
}

impl Page {
    fn into_json(self, next: Next) -> Result<serde_json::Value, ApiError> {
        let tag = if self.reverse { REVERSE } else { FORWARD };
        let cursor = next.map(|k| encode_cursor(tag, &k));
        let mut items = Vec::with_capacity(self.found.len());
        for (key, stored) in self.found {
            let v = raftlog::sm::value::decode(stored).ok_or_else(|| {
                ApiError::unavailable(format!(
                    "the stored value of {:?} is damaged",
                    String::from_utf8_lossy(&key)
                ))
            })?;
            let mut item = serde_json::Map::new();
            put_bytes(&mut item, "key", "key_encoding", &key);
            put_bytes(&mut item, "value", "encoding", &v.value);
            item.insert("version".into(), v.version.into());
            items.push(serde_json::Value::Object(item));
        }
        Ok(serde_json::json!({ "items": items, "cursor": cursor }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inc(k: &str) -> Bound<Vec<u8>> {
        Bound::Included(k.as_bytes().to_vec())
    }
    fn exc(k: &str) -> Bound<Vec<u8>> {
        Bound::Excluded(k.as_bytes().to_vec())
    }

    #[test]
    fn ranges_are_cut_around_the_link_keys() {
        let [a, b] = segments(Bound::Unbounded, Bound::Unbounded);
        assert_eq!(a, (Bound::Unbounded, exc("link/")));
        assert_eq!(b, (inc("link0"), Bound::Unbounded));
        let [a, b] = segments(inc("a"), exc("c"));
        assert_eq!(a, (inc("a"), exc("c")));
        assert_eq!(b, (inc("link0"), exc("c")), "empty: lo > hi");
        let [a, b] = segments(inc("link/x"), exc("m"));
        assert_eq!(a, (inc("link/x"), exc("link/")), "empty: lo > hi");
        assert_eq!(b, (inc("link0"), exc("m")));
    }

    #[test]
    fn bounds_and_cursors() {
        assert_eq!(max_lower(inc("b"), exc("b")), exc("b"));
        assert_eq!(max_lower(inc("c"), exc("b")), inc("c"));
        assert_eq!(min_upper(inc("b"), exc("b")), exc("b"));
        assert_eq!(min_upper(Bound::Unbounded, inc("a")), inc("a"));
        assert_eq!(lsm::prefix_upper_bound(b"ab"), exc("ac"));
        assert_eq!(lsm::prefix_upper_bound(&[0xff]), Bound::Unbounded);
        let c = encode_cursor(FORWARD, b"k/\xff1");
        assert_eq!(decode_cursor(&c, FORWARD).unwrap(), b"k/\xff1");
        assert!(decode_cursor(&c, REVERSE).is_err());
        assert!(decode_cursor("!!", FORWARD).is_err());
        assert!(decode_cursor("", FORWARD).is_err());
        assert!(check_bound("start", "link/a").is_err());
        assert!(check_bound("end", "link/").is_ok());
        assert!(check_bound("end", "link/a").is_err());
        assert!(check_bound("prefix", "lin").is_ok());
    }
}
