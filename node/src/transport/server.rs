//! The server side of node-to-node calls (wire format in [`crate::transport::client`]): Raft's own RPCs,
//! and the proposals and read indexes followers forward to their leader. Every call must carry
//! the cluster secret; a body that does not decode is a 400 and changes nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use openraft::error::RaftError;
use openraft::raft::{VoteRequest, VoteResponse};
use openraft::storage::RaftLogStorage;
use raftlog::store::{Command, Reply};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::api::error::ApiError;
use crate::server::AppState;
use crate::transport::client::{TARGET_HEADER, VERSION_HEADER, WIRE_VERSION};

/// Checks the secret (in constant time) and the wire version, then decodes the body.
fn admit<T: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    // Checked before the body was read too (`guard::require_secret`); again here, so no route
    // can decode a body without it.
    crate::ops::guard::check_secret(state, headers)?;
    let version = headers.get(VERSION_HEADER).map(|v| v.as_bytes());
    if version != Some(WIRE_VERSION.as_bytes()) {
        return Err(ApiError::bad_request(format!(
            "unsupported raft wire version (this node speaks {WIRE_VERSION})"
        )));
    }
    let me = state.replica.raft.metrics().borrow().id;
    let target = headers
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if target != Some(me) {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            "wrong_node",
            format!("this is node {me}, not {target:?}: check the group's node ids and addresses"),
        ));
    }
    crate::transport::wire::decode(body)
        .map_err(|e| ApiError::bad_request(format!("undecodable body: {e}")))
}

fn reply<T: Serialize>(value: &T) -> Response {
    match postcard::to_stdvec(value) {
        Ok(b) => (StatusCode::OK, b).into_response(),
        Err(e) => ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("encoding the reply: {e}"),
        )
        .into_response(),
    }
}

pub async fn append(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req = admit(&state, &headers, &body)?;
    Ok(reply(&state.replica.raft.append_entries(req).await))
}

pub async fn vote(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: VoteRequest<u64> = admit(&state, &headers, &body)?;
    if state.vote_guard().refusing() || state.identity.rejoining() {
        // Rejoining after losing its data: it may have voted in this very term before (see
        // `crate::cluster::identity`). Or just restarted: this node may have acknowledged a leader's heartbeat a moment before
        // it stopped, and that leader may be counting on it for its lease (see
        // `crate::cluster::lease`). openraft forgot when it last heard from a leader, so the refusal is
        // made here, with the node's own vote and log, as openraft refuses within a lease.
        let vote = state.replica.raft.metrics().borrow().vote;
        let last = state
            .replica
            .log
            .clone()
            .get_log_state()
            .await
            .map_err(|e| ApiError::unavailable(format!("reading the log state: {e}")))?
            .last_log_id;
        tracing::debug!(candidate = %req.vote, "vote refused: this node started less than an election timeout ago");
        let resp: Result<VoteResponse<u64>, RaftError<u64>> =
            Ok(VoteResponse::new(vote, last, false));
        return Ok(reply(&resp));
    }
    Ok(reply(&state.replica.raft.vote(req).await))
}

pub async fn snapshot(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req = admit(&state, &headers, &body)?;
    Ok(reply(&state.replica.raft.install_snapshot(req).await))
}

/// A write a follower forwards. Only client writes: seals and table edits come from the
/// leader's own maintainer, never from the network.
pub async fn propose(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cmd: Command = admit(&state, &headers, &body)?;
    let Command::Write { ops, .. } = cmd else {
        return Err(ApiError::bad_request("only writes may be forwarded"));
    };
    // Through this node's batcher: forwarded batches from every follower and local writes share
    // entries (one fsync and one replication round for all of them). The batch stays one unit:
    // its ops are applied together, in order, in one entry, with the leader's clock.
    let r: Result<Reply, String> = match state.batcher().write(ops).await {
        Ok(results) => Ok(Reply::Write(results)),
        // Refused as such (e.g. an oversized value): the follower splits its batch on this.
        Err(e) if e.status == StatusCode::BAD_REQUEST => Ok(Reply::Invalid(e.message)),
        Err(e) => Err(e.message),
    };
    Ok(reply(&r))
}

/// The leader's read index for a follower's linearizable read.
pub async fn read_index(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admit::<()>(&state, &headers, &body)?;
    // Shares a confirmation with this node's own reads and the other followers' requests.
    let r: Result<_, String> = state.reads().get_as_leader().await.map_err(|e| e.message);
    Ok(reply(&r))
}
