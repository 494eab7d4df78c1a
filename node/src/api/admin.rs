//! The admin API (bearer token required when one is configured): `GET /admin/status`, `POST
//! /admin/init`, `POST /admin/learners`, `POST /admin/membership`. Membership changes must reach
//! the leader: a follower answers 421 with the leader's address in `leader_addr`, which
//! `strata admin` follows.

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

use crate::api::error::{json_body, ApiError};
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

/// The node's view of the group, for `strata admin status` and for scripts.
pub fn status_json(state: &AppState) -> Value {
    let m = state.replica.raft.metrics().borrow().clone();
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
    let sm = &state.replica.sm;
    let log_dir = state.replica.log.with_log(|l| l.dir().to_path_buf()).ok();
    let engine = sm.db().stats();
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
        "flushed_index": sm.flushed().map(|l| l.index),
        "snapshot_index": m.snapshot.map(|l| l.index),
        "purged_index": m.purged.map(|l| l.index),
        "log_bytes": log_dir.as_deref().map(dir_bytes),
        "snapshot_bytes": sm.db().export_image().encode().len(),
        "tables": engine.levels.iter().map(|l| l.files).sum::<usize>(),
        "millis_since_quorum_ack": m.millis_since_quorum_ack,
        // Links with visits counted here and not yet written (see crate::api::visits).
        "links_with_unwritten_visits": state.visits.pending_links(),
        "rate_limited_clients": state.link_limiter().clients(),
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
    state
        .replica
        .raft
        .initialize(members)
        .await
        .map_err(|e| ApiError::new(StatusCode::CONFLICT, "conflict", e.to_string()))?;
    Ok(Json(json!({ "initialized": true })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearnerRequest {
    id: u64,
    addr: String,
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
    let r = tokio::time::timeout(
        CATCH_UP_TIMEOUT,
        state
            .replica
            .raft
            .add_learner(req.id, BasicNode::new(req.addr), true),
    )
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
    let r = tokio::time::timeout(
        CATCH_UP_TIMEOUT,
        state
            .replica
            .raft
            .change_membership(req.voters, !req.remove),
    )
    .await
    .map_err(|_| ApiError::unavailable("the change did not commit within 120 s"))?
    .map_err(membership_error)?;
    Ok(Json(json!({ "log_index": r.log_id.index })))
}
