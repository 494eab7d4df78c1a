//! The meta group: a Raft group like the ranges (id [`META_RANGE`], on up to
//! [`META_VOTERS`] nodes) whose keys are the cluster's routing index and registry. It is never
//! the truth about a range (a range's own group holds its descriptor; two groups cannot change
//! atomically together): after each change the changed descriptors are written here by an
//! epoch-compare write, which an older picture never overwrites.
//!
//! Keys (values JSON):
//! - `range/<id, 20 digits>`: a range's descriptor as last recorded;
//! - `next-range-id`: the next id a split may give a new range (ids are never reused);
//! - `node/<id, 20 digits>`: a node's address and when it last said it was alive.

use std::sync::Arc;
use std::time::Duration;

use raftlog::store::{Op, OpResult};
use raftlog::{RangeDescriptor, FIRST_RANGE, META_RANGE};
use serde::{Deserialize, Serialize};

use crate::api::error::ApiError;
use crate::cluster::range::Range;
use crate::cluster::ranges::Ranges;

/// Voters of the meta group, at most.
pub const META_VOTERS: usize = 5;
const NEXT_ID: &[u8] = b"next-range-id";
/// Attempts of a compare-and-set that keeps meeting concurrent ones.
const CAS_ATTEMPTS: usize = 32;

fn range_key(id: u64) -> Vec<u8> {
    format!("range/{id:020}").into_bytes()
}

fn node_key(id: u64) -> Vec<u8> {
    format!("node/{id:020}").into_bytes()
}

/// A node as the registry holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NodeRecord {
    pub id: u64,
    pub addr: String,
    /// When the node last wrote its record, ms since the Unix epoch (its clock).
    pub seen_ms: u64,
    pub started_ms: u64,
}

/// The meta group's replica on this node, or a clear refusal.
fn meta(ranges: &Ranges) -> Result<Arc<Range>, ApiError> {
    ranges.get(META_RANGE).ok_or_else(|| {
        ApiError::unavailable(
            "this node holds no replica of the meta group (it lives on the first nodes of the cluster); ask one of them",
        )
    })
}

/// How long a meta operation waits out a meta group without a leader (just formed, or
/// electing after a crash).
const META_PATIENCE: Duration = Duration::from_secs(10);

/// Runs `f` again while it fails with a 503 (no leader, a leader that just stepped down) until
/// [`META_PATIENCE`] is spent.
async fn patiently<T, Fut: std::future::Future<Output = Result<T, ApiError>>>(
    mut f: impl FnMut() -> Fut,
) -> Result<T, ApiError> {
    let deadline = tokio::time::Instant::now() + META_PATIENCE;
    loop {
        match f().await {
            Err(e)
                if e.status == axum::http::StatusCode::SERVICE_UNAVAILABLE
                    && tokio::time::Instant::now() < deadline =>
            {
                tracing::debug!(error = %e.message, "meta group not available yet; retrying");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            r => return r,
        }
    }
}

/// A linearizable read of `key` in the meta group.
async fn read(m: &Range, key: &[u8]) -> Result<Option<raftlog::Versioned>, ApiError> {
    patiently(|| m.read_barrier()).await?;
    m.replica
        .sm
        .get(key)
        .map_err(|e| ApiError::unavailable(format!("reading the meta group: {e}")))
}

/// Sets `key` to `make(current)` if nothing changed it meanwhile; `make` returning `None`
/// leaves it as it is.
async fn update(
    m: &Range,
    key: &[u8],
    make: impl Fn(Option<&[u8]>) -> Option<Vec<u8>>,
) -> Result<Option<Vec<u8>>, ApiError> {
    for _ in 0..CAS_ATTEMPTS {
        let cur = read(m, key).await?;
        let Some(new) = make(cur.as_ref().map(|v| &v.value[..])) else {
            return Ok(None);
        };
        let op = Op::CompareAndSet {
            key: key.to_vec(),
            expected_version: cur.map_or(0, |v| v.version),
            new: Some(new.clone()),
            ttl_ms: None,
        };
        match patiently(|| m.write(vec![op.clone()])).await?.pop() {
            Some(OpResult::Applied { .. }) => return Ok(Some(new)),
            Some(OpResult::Rejected { .. }) => continue,
            other => {
                return Err(ApiError::unavailable(format!(
                    "unexpected answer of the meta group: {other:?}"
                )))
            }
        }
    }
    Err(ApiError::unavailable(
        "the meta group is too busy with concurrent changes; retry",
    ))
}

/// A new range id, never handed out before.
pub async fn allocate_range_id(ranges: &Ranges) -> Result<u64, ApiError> {
    let m = meta(ranges)?;
    let local_max = ranges
        .all()
        .iter()
        .map(|r| r.id())
        .max()
        .unwrap_or(FIRST_RANGE);
    let next = |cur: Option<&[u8]>| -> u64 {
        let stored = cur
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
        stored.max(local_max + 1).max(FIRST_RANGE + 1)
    };
    let written = update(&m, NEXT_ID, |cur| {
        Some((next(cur) + 1).to_string().into_bytes())
    })
    .await?
    .ok_or_else(|| ApiError::unavailable("no range id allocated"))?;
    let after: u64 = std::str::from_utf8(&written)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| ApiError::unavailable("undecodable range id"))?;
    Ok(after - 1)
}

/// Records `desc` in the range table unless it holds a newer epoch of the range already.
pub async fn record_range(ranges: &Ranges, desc: &RangeDescriptor) -> Result<(), ApiError> {
    let m = meta(ranges)?;
    let encoded = serde_json::to_vec(desc).map_err(|e| ApiError::unavailable(e.to_string()))?;
    update(&m, &range_key(desc.id), |cur| {
        let stored: Option<RangeDescriptor> = cur.and_then(|v| serde_json::from_slice(v).ok());
        match stored {
            Some(s) if s.epoch >= desc.epoch => None,
            _ => Some(encoded.clone()),
        }
    })
    .await?;
    Ok(())
}

/// The range table as the meta group holds it (linearizable), in id order.
pub async fn range_table(ranges: &Ranges) -> Result<Vec<RangeDescriptor>, ApiError> {
    let m = meta(ranges)?;
    patiently(|| m.read_barrier()).await?;
    scan_json(&m, b"range/")
}

/// The node registry (linearizable), in id order.
pub async fn nodes(ranges: &Ranges) -> Result<Vec<NodeRecord>, ApiError> {
    let m = meta(ranges)?;
    patiently(|| m.read_barrier()).await?;
    scan_json(&m, b"node/")
}

fn scan_json<T: serde::de::DeserializeOwned>(m: &Range, prefix: &[u8]) -> Result<Vec<T>, ApiError> {
    let mut out = Vec::new();
    for item in m.replica.sm.db().prefix(prefix) {
        let (key, stored) =
            item.map_err(|e| ApiError::unavailable(format!("reading the meta group: {e}")))?;
        let v = raftlog::sm::value::decode(stored)
            .ok_or_else(|| ApiError::unavailable(format!("damaged meta record {key:?}")))?;
        match serde_json::from_slice(&v.value) {
            Ok(t) => out.push(t),
            Err(e) => {
                tracing::warn!(key = %String::from_utf8_lossy(&key), error = %e, "skipping an undecodable meta record")
            }
        }
    }
    Ok(out)
}

/// Writes this node's record (address, liveness) to the registry: through its own replica of
/// the meta group, or, on a node outside it, through a node of the first range or the member
/// it joined through (`via`), which forwards it to the meta group's leader.
pub async fn register(
    ranges: &Ranges,
    record: &NodeRecord,
    via: Option<&str>,
) -> Result<(), ApiError> {
    let value = serde_json::to_vec(record).map_err(|e| ApiError::unavailable(e.to_string()))?;
    let op = Op::Put {
        key: node_key(record.id),
        value,
    };
    if let Some(m) = ranges.get(META_RANGE) {
        m.write(vec![op]).await?;
        return Ok(());
    }
    let mut members: Vec<(u64, String)> = match ranges.get(FIRST_RANGE) {
        Some(first) => {
            let m = first.replica.raft.metrics().borrow().clone();
            let mem = m.membership_config.membership();
            mem.voter_ids()
                .filter(|id| *id != ranges.node_id())
                .filter_map(|id| mem.get_node(&id).map(|n| (id, n.addr.clone())))
                .collect()
        }
        None => Vec::new(),
    };
    if let Some(addr) = via {
        match ranges.peers().node_id(addr, REGISTER_EVERY).await {
            Ok(id) => members.push((id, addr.to_string())),
            Err(e) => {
                tracing::debug!(%addr, error = %e, "asking the member joined through for its id")
            }
        }
    }
    let cmd = raftlog::store::Command::Write {
        ops: vec![op],
        now_ms: crate::api::kv::now_ms(),
    };
    let mut last = ApiError::unavailable("no member of the first range to ask");
    for (id, addr) in members {
        let to = crate::transport::client::To {
            node: id,
            addr: &addr,
            range: META_RANGE,
            epoch: None,
        };
        match ranges.peers().propose(to, &cmd, REGISTER_EVERY).await {
            Ok(Ok(raftlog::store::Reply::Write(_))) => return Ok(()),
            Ok(Ok(other)) => last = ApiError::unavailable(format!("node {id} answered {other:?}")),
            Ok(Err(m)) => last = ApiError::unavailable(format!("node {id}: {m}")),
            Err(e) => last = ApiError::unavailable(format!("node {id}: {e}")),
        }
    }
    Err(last)
}

/// How often a node rewrites its registry record; a record older than
/// [`NODE_DEAD_AFTER`] marks the node dead.
pub const REGISTER_EVERY: Duration = Duration::from_secs(5);
pub const NODE_DEAD_AFTER: Duration = Duration::from_secs(20);
