//! The admin API (bearer token required when one is configured): `GET /admin/status`, `POST
//! /admin/init`, `POST /admin/learners`, `POST /admin/membership` (of one range, the first
//! unless `range` says otherwise), `POST /admin/split`, `GET /admin/ranges`, `GET
//! /admin/nodes`. Membership changes must reach the range's leader: a follower answers 421
//! with the leader's address in `leader_addr`, which `strata admin` follows.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use axum::extract::rejection::JsonRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::Json;
use openraft::error::{ClientWriteError, RaftError};
use openraft::BasicNode;
use serde::Deserialize;
use serde_json::{json, Value};

use std::sync::Arc;

use raftlog::store::{Command, Reply};
use raftlog::{RangeDescriptor, FIRST_RANGE, META_RANGE};

use crate::api::error::{json_body, ApiError};
use crate::cluster::range::Range;
use crate::server::AppState;

/// How long adding a learner may wait for it to catch up.
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(120);

fn node_json(id: u64, n: &BasicNode) -> Value {
    json!({ "id": id, "addr": n.addr })
}

/// Bytes of the files directly under `dir` (the log's segments and metadata).
fn dir_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok()?.metadata().ok())
                .filter(|m| m.is_file())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// The leader's commit index as its replication progress implies it: the highest index a
/// majority of voters hold. `None` on a follower (openraft 0.9 reports no commit index).
fn commit_index(m: &openraft::RaftMetrics<u64, BasicNode>) -> Option<u64> {
    let repl = m.replication.as_ref()?;
    let voters: Vec<u64> = m.membership_config.membership().voter_ids().collect();
    let mut matched: Vec<u64> = voters
        .iter()
        .map(|id| {
            if *id == m.id {
                m.last_log_index.unwrap_or(0)
            } else {
                repl.get(id).and_then(|l| l.map(|l| l.index)).unwrap_or(0)
            }
        })
        .collect();
    matched.sort_unstable_by(|a, b| b.cmp(a));
    matched.get(voters.len() / 2).copied()
}

/// A range's descriptor as JSON: keys as text when they are UTF-8, else base64 (with
/// `start_encoding`/`end_encoding`), `end: null` for the last range.
pub fn range_json(d: &RangeDescriptor) -> Value {
    let mut o = serde_json::Map::new();
    o.insert("id".into(), d.id.into());
    crate::api::scan::put_bytes(&mut o, "start", "start_encoding", &d.start);
    match &d.end {
        Some(e) => crate::api::scan::put_bytes(&mut o, "end", "end_encoding", e),
        None => {
            o.insert("end".into(), Value::Null);
        }
    }
    o.insert("epoch".into(), d.epoch.into());
    Value::Object(o)
}

/// The replica of range `id` here, or 404.
fn range_here(state: &AppState, id: u64) -> Result<Arc<Range>, ApiError> {
    state.ranges.get(id).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("this node holds no replica of range {id}"),
        )
    })
}

/// One range as this node sees it: descriptor, replicas, leader, progress, size and rates.
fn range_figures(r: &Range) -> Value {
    let m = r.raft_metrics();
    let membership = m.membership_config.membership();
    let mut o = match r.descriptor() {
        Some(d) => range_json(&d),
        None => json!({ "id": r.id(), "start": null, "end": null, "epoch": null }),
    };
    let (sealed, mem_bytes) = r.backlog();
    let tables: u64 = r.engine_stats().levels.iter().map(|l| l.bytes).sum();
    let (writes, reads) = r.rates();
    o["replicas"] = membership.voter_ids().collect::<Vec<_>>().into();
    o["learners"] = membership.learner_ids().collect::<Vec<_>>().into();
    o["leader"] = m.current_leader.into();
    o["term"] = m.current_term.into();
    o["state"] = format!("{:?}", m.state).into();
    o["applied_index"] = m.last_applied.map(|l| l.index).into();
    o["bytes"] = (tables + mem_bytes as u64).into();
    o["sealed_memtables"] = sealed.into();
    o["writes_per_sec"] = ((writes * 10.0).round() / 10.0).into();
    o["reads_per_sec"] = ((reads * 10.0).round() / 10.0).into();
    o
}

/// The node's view of the cluster, for `strata admin status` and for scripts: the first
/// range's group in the fields a single-group node had, and a summary of all ranges here.
pub fn status_json(state: &AppState) -> Value {
    let Some(first) = state.ranges.get(FIRST_RANGE) else {
        return json!({ "id": state.ranges.node_id(), "ranges": 0 });
    };
    let all = state.ranges.all();
    let led = all.iter().filter(|r| r.leads()).count();
    let m = first.raft_metrics();
    let membership = m.membership_config.membership();
    let voters: Vec<Value> = membership
        .nodes()
        .filter(|(id, _)| membership.voter_ids().any(|v| v == **id))
        .map(|(id, n)| node_json(*id, n))
        .collect();
    let learners: Vec<Value> = membership
        .learner_ids()
        .filter_map(|id| membership.get_node(&id).map(|n| node_json(id, n)))
        .collect();
    let leader_addr = m
        .current_leader
        .and_then(|l| membership.get_node(&l))
        .map(|n| n.addr.clone());
    let log_dir = first.log_dir();
    let engine = first.engine_stats();
    json!({
        "id": m.id,
        "cluster_id": state.identity.cluster_id(),
        "rejoining": state.identity.rejoining(),
        "state": format!("{:?}", m.state),
        "leader": m.current_leader,
        "leader_addr": leader_addr,
        "term": m.current_term,
        "voters": voters,
        "learners": learners,
        "last_log_index": m.last_log_index,
        "commit_index": commit_index(&m),
        "applied_index": m.last_applied.map(|l| l.index),
        "flushed_index": first.flushed_index(),
        "snapshot_index": m.snapshot.map(|l| l.index),
        "purged_index": m.purged.map(|l| l.index),
        "log_bytes": log_dir.as_deref().map(dir_bytes),
        "snapshot_bytes": first.snapshot_bytes(),
        "tables": engine.levels.iter().map(|l| l.files).sum::<usize>(),
        "millis_since_quorum_ack": m.millis_since_quorum_ack,
        // Links with visits counted here and not yet written (see crate::api::visits).
        "links_with_unwritten_visits": state.visits.pending_links(),
        "rate_limited_clients": state.link_limiter().clients(),
        "ranges": all.iter().filter(|r| r.id() != META_RANGE).count(),
        "ranges_led": all.iter().filter(|r| r.id() != META_RANGE).count().min(led),
        "meta_group_here": state.ranges.get(META_RANGE).is_some(),
    })
}

pub async fn status(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers)?;
    Ok(Json(status_json(&state)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InitRequest {
    /// Node id (as a string: JSON object keys) to advertised address.
    members: BTreeMap<String, String>,
}

/// The range a membership call is for (the first range when not named).
fn default_range() -> u64 {
    FIRST_RANGE
}

pub async fn init(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<InitRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers)?;
    let req = json_body(body)?;
    let mut members = BTreeMap::new();
    for (id, addr) in req.members {
        let id = id
            .parse::<u64>()
            .map_err(|_| ApiError::bad_request(format!("{id:?} is not a node id")))?;
        members.insert(id, BasicNode::new(addr));
    }
    if members.is_empty() {
        return Err(ApiError::bad_request("members is empty"));
    }
    let identity = state.identity.clone();
    tokio::task::spawn_blocking(move || identity.create())
        .await
        .map_err(|e| ApiError::unavailable(e.to_string()))?
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "conflict", format!("{e:#}")))?;
    let first = range_here(&state, FIRST_RANGE)?;
    first
        .initialize(members.clone())
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()))?;
    // The meta group on the first members, as a node forming a cluster at start does.
    crate::cluster::bootstrap::form_meta(&state.ranges, &members)
        .await
        .map_err(|e| ApiError::unavailable(format!("starting the meta group: {e:#}")))?;
    Ok(Json(json!({ "initialized": true })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnerRequest {
    id: u64,
    addr: String,
    #[serde(default = "default_range")]
    range: u64,
}

/// A membership change refused because this node does not lead: 421 naming the leader.
fn membership_error(e: RaftError<u64, ClientWriteError<u64, BasicNode>>) -> ApiError {
    if let Some(f) = e.forward_to_leader::<BasicNode>() {
        let mut err = ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "not_leader",
            "membership changes go to the leader",
        );
        err.extra = Some(json!({
            "leader": f.leader_id,
            "leader_addr": f.leader_node.as_ref().map(|n| n.addr.clone()),
        }));
        return err;
    }
    match e {
        RaftError::APIError(e) => ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()),
        RaftError::Fatal(e) => ApiError::unavailable(e.to_string()),
    }
}

pub async fn add_learner(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<LearnerRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers)?;
    let req = json_body(body)?;
    if crate::ops::config::peer(&format!("{}={}", req.id, req.addr)).is_err() {
        return Err(ApiError::bad_request(format!(
            "{:?} is not HOST:PORT",
            req.addr
        )));
    }
    let range = range_here(&state, req.range)?;
    let r = tokio::time::timeout(CATCH_UP_TIMEOUT, range.add_learner(req.id, req.addr))
        .await
        .map_err(|_| ApiError::unavailable("the learner did not catch up within 120 s"))?
        .map_err(membership_error)?;
    Ok(Json(json!({ "log_index": r.log_id.index })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MembershipRequest {
    voters: BTreeSet<u64>,
    #[serde(default)]
    remove: bool,
    #[serde(default = "default_range")]
    range: u64,
}

pub async fn change_membership(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<MembershipRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers)?;
    let req = json_body(body)?;
    if req.voters.is_empty() {
        return Err(ApiError::bad_request("voters is empty"));
    }
    let range = range_here(&state, req.range)?;
    let r = tokio::time::timeout(
        CATCH_UP_TIMEOUT,
        range.change_membership(req.voters, !req.remove),
    )
    .await
    .map_err(|_| ApiError::unavailable("the change did not commit within 120 s"))?
    .map_err(membership_error)?;
    Ok(Json(json!({ "log_index": r.log_id.index })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SplitRequest {
    /// The first key of the new range.
    key: String,
}

/// How long a split waits for its child to run here with a leader before answering.
const CHILD_READY: Duration = Duration::from_secs(10);

/// `POST /admin/split {"key"}`: splits the range holding `key` at `key` (409 when the range
/// holds data at or after `key`, which this version cannot move). A key that starts a range
/// already is answered 200 with `"split": false`: splitting twice changes nothing.
pub async fn split(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<SplitRequest>, JsonRejection>,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers)?;
    let req = json_body(body)?;
    let key = req.key.into_bytes();
    if key.is_empty() || key.len() > lsm::MAX_KEY_LEN {
        return Err(ApiError::bad_request(format!(
            "the split key must be 1 to {} bytes",
            lsm::MAX_KEY_LEN
        )));
    }
    let ranges = &state.ranges;
    let boundary = |key: &[u8]| {
        ranges
            .route(key)
            .filter(|(d, _)| d.start == key)
            .map(|(d, _)| d)
    };
    if let Some(d) = boundary(&key) {
        return Ok(Json(json!({ "split": false, "range": range_json(&d) })));
    }
    let child = crate::cluster::meta::allocate_range_id(ranges).await?;
    let reply = crate::cluster::router::on_key(ranges, &key, |range| {
        let key = key.clone();
        async move {
            if range.descriptor().is_some_and(|d| d.start == key) {
                return Ok(None);
            }
            match range.propose(Command::Split { key, child }).await? {
                Reply::WrongRange(d) => Err(crate::cluster::range::wrong_range(d.as_ref())),
                r => Ok(Some(r)),
            }
        }
    })
    .await?;
    let (parent, child) = match reply {
        None => {
            let d = boundary(&key).ok_or_else(|| ApiError::unavailable("no range"))?;
            return Ok(Json(json!({ "split": false, "range": range_json(&d) })));
        }
        Some(Reply::Split { parent, child }) => (parent, child),
        Some(Reply::SplitRefused(m)) => {
            return Err(ApiError::new(StatusCode::CONFLICT, "conflict", m));
        }
        Some(other) => {
            return Err(ApiError::unavailable(format!("unexpected reply {other:?}")));
        }
    };
    // The routing index; the ranges' own groups are the truth, so a failure here is repaired
    // by the next record of either range.
    for d in [&parent, &child] {
        if let Err(e) = crate::cluster::meta::record_range(ranges, d).await {
            tracing::warn!(range = d.id, error = %e.message, "recording the range in the meta group");
        }
    }
    // Answer once the child runs here with a leader, so the next request finds it.
    let started = tokio::time::timeout(CHILD_READY, async {
        loop {
            if let Some(r) = ranges.get(child.id) {
                if r.raft_metrics().current_leader.is_some() {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .is_ok();
    Ok(Json(json!({
        "split": true,
        "parent": range_json(&parent),
        "child": range_json(&child),
        "child_has_leader": started,
    })))
}

/// `GET /admin/ranges`: the ranges this node holds replicas of, in key order, with their
/// figures (the meta group last, as `meta`).
pub async fn ranges(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers)?;
    let list: Vec<Value> = state
        .ranges
        .descriptors()
        .iter()
        .map(|(_, r)| range_figures(r))
        .collect();
    let meta = state.ranges.get(META_RANGE).map(|r| range_figures(&r));
    // The routing index's epoch of each range, where the meta group answers quickly: behind
    // the range's own epoch until the change is recorded.
    let recorded: BTreeMap<u64, u64> = tokio::time::timeout(
        Duration::from_secs(1),
        crate::cluster::meta::range_table(&state.ranges),
    )
    .await
    .ok()
    .and_then(Result::ok)
    .map(|t| t.into_iter().map(|d| (d.id, d.epoch)).collect())
    .unwrap_or_default();
    let list: Vec<Value> = list
        .into_iter()
        .map(|mut r| {
            if let Some(e) = r["id"].as_u64().and_then(|id| recorded.get(&id)) {
                r["recorded_epoch"] = (*e).into();
            }
            r
        })
        .collect();
    Ok(Json(json!({
        "node": state.ranges.node_id(),
        "ranges": list,
        "meta": meta,
    })))
}

/// `GET /admin/nodes`: the nodes in the meta group's registry, with liveness and, from this
/// node's ranges, the replicas and leaderships each holds.
pub async fn nodes(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers)?;
    let records = crate::cluster::meta::nodes(&state.ranges).await?;
    let now = crate::api::kv::now_ms();
    let mut replicas: BTreeMap<u64, (u64, u64)> = BTreeMap::new();
    for r in state.ranges.all() {
        let m = r.raft_metrics();
        for v in m.membership_config.membership().voter_ids() {
            replicas.entry(v).or_default().0 += 1;
        }
        if let Some(l) = m.current_leader {
            replicas.entry(l).or_default().1 += 1;
        }
    }
    let dead_after = crate::cluster::meta::NODE_DEAD_AFTER.as_millis() as u64;
    let list: Vec<Value> = records
        .iter()
        .map(|n| {
            let (held, led) = replicas.get(&n.id).copied().unwrap_or_default();
            json!({
                "id": n.id,
                "addr": n.addr,
                "live": now.saturating_sub(n.seen_ms) < dead_after,
                "seen_ms_ago": now.saturating_sub(n.seen_ms),
                "started_ms": n.started_ms,
                "replicas": held,
                "leaders": led,
            })
        })
        .collect();
    Ok(Json(json!({ "nodes": list })))
}
