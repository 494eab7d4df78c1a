//! From keys to ranges. Handlers hand the router a key and what to do with the range holding
//! it; a range that answers it no longer holds the key (a split moved it, or this node's
//! picture of the ranges was old) is looked up again, invisible to the client, until the
//! request's routing budget is spent.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftlog::store::{Op, OpResult};

use crate::api::error::ApiError;
use crate::cluster::range::{Range, WRONG_RANGE};
use crate::cluster::ranges::Ranges;

/// How long a request may keep meeting ranges that moved before it is answered 503.
const ROUTE_BUDGET: Duration = Duration::from_secs(10);
const FIRST_PAUSE: Duration = Duration::from_millis(5);
const LONGEST_PAUSE: Duration = Duration::from_millis(200);

fn no_range(key: &[u8]) -> ApiError {
    let mut e = crate::cluster::range::wrong_range(None);
    e.message = format!(
        "no range on this node holds key {:?} yet; retry",
        String::from_utf8_lossy(&key[..key.len().min(64)])
    );
    e
}

/// Runs `f` on the range holding `key`, again on the range holding it then whenever `f`
/// answers [`WRONG_RANGE`] (which must mean that nothing was done).
pub async fn on_key<T, F, Fut>(ranges: &Ranges, key: &[u8], mut f: F) -> Result<T, ApiError>
where
    F: FnMut(Arc<Range>) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let deadline = Instant::now() + ROUTE_BUDGET;
    let mut pause = FIRST_PAUSE;
    loop {
        let e = match ranges.route(key) {
            Some((_, range)) => match f(range).await {
                Err(e) if e.error == WRONG_RANGE => e,
                done => return done,
            },
            None => no_range(key),
        };
        if Instant::now() + pause > deadline {
            return Err(e);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
    }
}

/// A range and the ops (with their positions in the request) it is asked to write.
type Share = (Arc<Range>, Vec<(usize, Op)>);

/// Writes `ops`: each range's share as one unit through its batcher (in one entry, in
/// order), the ranges concurrently. Ops on keys of different ranges are not atomic together.
/// Returns one result per op, in order; the first error fails the call (other ranges' shares
/// may have been applied: the caller reports the outcome as unknown, as for any 503).
pub async fn write(ranges: &Ranges, ops: Vec<Op>) -> Result<Vec<OpResult>, ApiError> {
    // The common case, every op in one range that still holds them all: straight to it. The
    // general loop, a larger future, is boxed so this path's stays small.
    if let Some((_, range)) = ops.first().and_then(|o| ranges.route(o.key())) {
        if ops.iter().skip(1).all(|o| range.holds(o.key()).is_ok()) {
            match range.write(ops.clone()).await {
                Err(e) if e.error == WRONG_RANGE => {}
                done => return done,
            }
        }
    }
    Box::pin(write_routed(ranges, ops)).await
}

/// [`write`], regrouping by range and routing again until every op found its range.
async fn write_routed(ranges: &Ranges, ops: Vec<Op>) -> Result<Vec<OpResult>, ApiError> {
    let deadline = Instant::now() + ROUTE_BUDGET;
    let mut pause = FIRST_PAUSE;
    let mut out: Vec<Option<OpResult>> = vec![None; ops.len()];
    let mut todo: Vec<(usize, Op)> = ops.into_iter().enumerate().collect();
    loop {
        // Shares by range, as this node sees the ranges now.
        let mut shares: BTreeMap<u64, Share> = BTreeMap::new();
        let mut last_error = None;
        let mut again = Vec::new();
        for (i, op) in todo {
            match ranges.route(op.key()) {
                Some((d, r)) => shares
                    .entry(d.id)
                    .or_insert_with(|| (r, Vec::new()))
                    .1
                    .push((i, op)),
                None => {
                    last_error = Some(no_range(op.key()));
                    again.push((i, op));
                }
            }
        }
        let calls = shares.into_values().map(|(range, share)| async move {
            let ops: Vec<Op> = share.iter().map(|(_, o)| o.clone()).collect();
            (share, range.write(ops).await)
        });
        for (share, answer) in futures::future::join_all(calls).await {
            match answer {
                Ok(results) if results.len() == share.len() => {
                    for ((i, _), r) in share.into_iter().zip(results) {
                        out[i] = Some(r);
                    }
                }
                Ok(_) => return Err(ApiError::unavailable("unexpected number of results")),
                // Nothing of this share was applied: routed again below.
                Err(e) if e.error == WRONG_RANGE => {
                    last_error = Some(e);
                    again.extend(share);
                }
                Err(e) => return Err(e),
            }
        }
        let Some(e) = last_error else { break };
        if Instant::now() + pause > deadline {
            return Err(e);
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(LONGEST_PAUSE);
        todo = again;
    }
    out.into_iter()
        .map(|r| r.ok_or_else(|| ApiError::unavailable("a write's share was not answered")))
        .collect()
}
