//! The server side of node-to-node calls (wire format in [`crate::transport::client`]): Raft's own RPCs,
//! and the proposals and read indexes followers forward to their leader. Every call must carry
//! the cluster secret; a body that does not decode is a 400 and changes nothing.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use openraft::error::RaftError;
use openraft::raft::{VoteRequest, VoteResponse};
use raftlog::store::{Command, Reply};
use serde::de::DeserializeOwned;
use serde::Serialize;

use std::sync::Arc;

use crate::api::error::ApiError;
use crate::cluster::range::Range;
use crate::server::AppState;
use crate::transport::client::{
    EPOCH_HEADER, RANGE_HEADER, TARGET_HEADER, VERSION_HEADER, WIRE_VERSION,
};

/// The cluster secret (in constant time) and the wire version of a node-to-node call.
fn check_caller(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    // Checked before the body was read too (`guard::require_secret`); again here, so no route
    // can act without it.
    crate::ops::guard::check_secret(state, headers)?;
    let version = headers.get(VERSION_HEADER).map(|v| v.as_bytes());
    if version != Some(WIRE_VERSION.as_bytes()) {
        return Err(ApiError::bad_request(format!(
            "unsupported raft wire version (this node speaks {WIRE_VERSION})"
        )));
    }
    Ok(())
}

/// Checks the caller ([`check_caller`]) and that the call is for this node, then decodes the body.
fn admit<T: DeserializeOwned>(
    state: &AppState,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<T, ApiError> {
    check_caller(state, headers)?;
    let me = state.ranges.node_id();
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

fn header_u64(headers: &HeaderMap, name: &str) -> Result<Option<u64>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|v| v.parse::<u64>().ok())
                .ok_or_else(|| ApiError::bad_request(format!("{name} is not a number")))
        })
        .transpose()
}

/// The replica of the range the call is for. Raft's own calls (`create`) start a replica of a
/// range this node lacks, empty, to be caught up by a snapshot: the message may come from a
/// split this node has not applied yet, or from a group it was added to.
async fn range_of(
    state: &AppState,
    headers: &HeaderMap,
    create: bool,
) -> Result<Arc<Range>, ApiError> {
    let id = header_u64(headers, RANGE_HEADER)?.unwrap_or(raftlog::FIRST_RANGE);
    if let Some(r) = state.ranges.get(id) {
        return Ok(r);
    }
    if !create {
        return Err(crate::cluster::range::wrong_range(None));
    }
    state
        .ranges
        .start(id, true)
        .await
        .map_err(|e| ApiError::unavailable(format!("starting a replica of range {id}: {e:#}")))
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
    let range = range_of(&state, &headers, true).await?;
    Ok(reply(&range.append_entries(req).await))
}

pub async fn vote(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req: VoteRequest<u64> = admit(&state, &headers, &body)?;
    let range = range_of(&state, &headers, true).await?;
    if state.vote_guard().refusing() || range.rejoining() {
        // Rejoining after losing its data: it may have voted in this very term before (see
        // `crate::cluster::identity`). Or just restarted: this node may have acknowledged a leader's heartbeat a moment before
        // it stopped, and that leader may be counting on it for its lease (see
        // `crate::cluster::lease`). openraft forgot when it last heard from a leader, so the refusal is
        // made here, with the node's own vote and log, as openraft refuses within a lease.
        tracing::debug!(candidate = %req.vote, "vote refused: this node started less than an election timeout ago");
        let resp: Result<VoteResponse<u64>, RaftError<u64>> = Ok(range.refusal().await?);
        return Ok(reply(&resp));
    }
    Ok(reply(&range.vote(req).await))
}

pub async fn snapshot(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let req = admit(&state, &headers, &body)?;
    let range = range_of(&state, &headers, true).await?;
    Ok(reply(&range.install_snapshot(req).await))
}

/// A write or a split a follower forwards. Seals and table edits come from the leader's own
/// maintainer, never from the network.
pub async fn propose(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let cmd: Command = admit(&state, &headers, &body)?;
    let Ok(range) = range_of(&state, &headers, false).await else {
        return Ok(reply(&Ok::<_, String>(Reply::WrongRange(None))));
    };
    // Routed with another epoch of the range: answered at once with the range as it is, so
    // the caller routes again (the apply would refuse a key outside the range anyway).
    if let Some(epoch) = header_u64(&headers, EPOCH_HEADER)? {
        let desc = range.descriptor();
        if desc.as_ref().map(|d| d.epoch) != Some(epoch) {
            return Ok(reply(&Ok::<_, String>(Reply::WrongRange(desc))));
        }
    }
    let ops = match cmd {
        Command::Write { ops, .. } => ops,
        split @ Command::Split { .. } => {
            let r: Result<Reply, String> = range.propose(split).await.map_err(|e| e.message);
            return Ok(reply(&r));
        }
        _ => {
            return Err(ApiError::bad_request(
                "only writes and splits may be forwarded",
            ))
        }
    };
    // Through this node's batcher: forwarded batches from every follower and local writes share
    // entries (one fsync and one replication round for all of them). The batch stays one unit:
    // its ops are applied together, in order, in one entry, with the leader's clock.
    let r: Result<Reply, String> = match range.batcher().write(ops).await {
        Ok(results) => Ok(Reply::Write(results)),
        // Refused as such (e.g. an oversized value): the follower splits its batch on this.
        Err(e) if e.status == StatusCode::BAD_REQUEST => Ok(Reply::Invalid(e.message)),
        Err(e) if e.error == crate::cluster::range::WRONG_RANGE => {
            Ok(Reply::WrongRange(range.descriptor()))
        }
        Err(e) => Err(e.message),
    };
    Ok(reply(&r))
}

/// The leader's read index for a follower's linearizable read (one range: what a node of an
/// earlier version asks; this version asks `/raft/read-indexes`).
pub async fn read_index(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    admit::<()>(&state, &headers, &body)?;
    let range = range_of(&state, &headers, false).await?;
    // Shares a confirmation with this node's own reads and the other followers' requests.
    let r: Result<_, String> = range.reads().get_as_leader().await.map_err(|e| e.message);
    Ok(reply(&r))
}

/// A leader's confirmation of its leadership of many ranges at once (see
/// [`crate::cluster::confirm`]): for each (range, vote), whether this node's replica has
/// persisted a vote for that same leader. A range this node does not hold, or holds while it
/// rejoins after losing its data, answers no.
pub async fn confirm(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let pairs: Vec<(u64, openraft::Vote<u64>)> = admit(&state, &headers, &body)?;
    at_most_a_batch(pairs.len())?;
    let mut answers = Vec::with_capacity(pairs.len());
    for (id, vote) in &pairs {
        let yes = match state.ranges.get(*id) {
            // A replica that lost its data may have forgotten a vote it gave a newer leader: it
            // vouches for no one.
            Some(r) if !r.rejoining() => {
                crate::cluster::confirm::answer(r.persisted_vote().await, vote)
            }
            _ => false,
        };
        answers.push(yes);
    }
    Ok(reply(&answers))
}

/// A follower's read indexes of many ranges at once (see `transport::batch`): each as
/// `/raft/read-index` answers it, all at the same time.
pub async fn read_indexes(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let ranges: Vec<u64> = admit(&state, &headers, &body)?;
    at_most_a_batch(ranges.len())?;
    let state = &state;
    // Each range within its own budget, shorter than the asker's timeout: one range that cannot
    // confirm (its quorum unreachable, a restarted leader still applying) must not hold back the
    // answers of the others in the same call.
    let budget = crate::cluster::confirm::READ_INDEX_BUDGET;
    let answers = futures::future::join_all(ranges.iter().map(|&id| async move {
        match state.ranges.get(id) {
            Some(r) => tokio::time::timeout(budget, r.reads().get_as_leader())
                .await
                .map_err(|_| format!("range {id}: no read index within {budget:?}"))?
                .map_err(|e| e.message),
            None => Err(format!(
                "node {} holds no replica of range {id}",
                state.ranges.node_id()
            )),
        }
    }))
    .await;
    Ok(reply(&answers))
}

fn at_most_a_batch(n: usize) -> Result<(), ApiError> {
    let max = crate::transport::batch::MAX_BATCH;
    if n > max {
        return Err(ApiError::bad_request(format!(
            "{n} ranges in one call; at most {max}"
        )));
    }
    Ok(())
}

/// This node's id, for a node that knows only an address (`strata serve --join ADDR`).
pub async fn node_id(
    State(state): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    check_caller(&state, &headers)?;
    Ok(reply(&state.ranges.node_id()))
}
