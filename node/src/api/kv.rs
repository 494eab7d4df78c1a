//! The key-value API: `PUT`, `GET` and `DELETE /kv/{key}`. Every response carries the key's
//! version (the Raft log index of its last write) in the `x-strata-version` header, and JSON
//! answers carry it in the body too.

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raftlog::store::{Op, OpResult};
use serde::Deserialize;

use crate::api::error::ApiError;
use crate::cluster::range::Range;
use crate::server::AppState;

/// Response header carrying a key's version.
pub const VERSION_HEADER: &str = "x-strata-version";

/// Query of `PUT` and `DELETE /kv/{key}`.
#[derive(Debug, Default, Deserialize)]
pub struct PutQuery {
    /// Time to live in seconds.
    ttl: Option<u64>,
    /// Present (any value): write only if the key is absent.
    if_absent: Option<String>,
    /// Write only if the key's version is this (0: only if absent).
    if_version: Option<u64>,
}

/// Query of `GET /kv/{key}`.
#[derive(Debug, Default, Deserialize)]
pub struct GetQuery {
    /// `linearizable` (default), `lease` or `stale`.
    consistency: Option<String>,
}

pub use crate::api::scan::scan;

fn check_key(key: &str) -> Result<Vec<u8>, ApiError> {
    if key.is_empty() {
        return Err(ApiError::bad_request("the key is empty"));
    }
    if key.len() > lsm::MAX_KEY_LEN {
        return Err(ApiError::bad_request(format!(
            "the key is {} bytes; the limit is {}",
            key.len(),
            lsm::MAX_KEY_LEN
        )));
    }
    if key.starts_with(crate::api::links::KEY_PREFIX) {
        // Links are validated on creation (http/https targets only): the KV API must not write
        // around that, nor read them as raw records.
        return Err(ApiError::bad_request(format!(
            "keys starting with {:?} are reserved for short links",
            crate::api::links::KEY_PREFIX
        )));
    }
    Ok(key.as_bytes().to_vec())
}

/// The longest time to live: 100 years. Expiry times then stay below 2^53 ms, which every JSON
/// client (JavaScript's numbers included) holds exactly.
pub(crate) const MAX_TTL_SECS: u64 = 100 * 365 * 24 * 3600;

/// A time to live given in seconds (`name` is the parameter), in milliseconds: 1 s to
/// [`MAX_TTL_SECS`].
pub(crate) fn ttl_ms(seconds: Option<u64>, name: &str) -> Result<Option<u64>, ApiError> {
    match seconds {
        None => Ok(None),
        Some(s) if (1..=MAX_TTL_SECS).contains(&s) => Ok(Some(s * 1000)),
        Some(_) => Err(ApiError::bad_request(format!(
            "{name} must be 1 to {MAX_TTL_SECS} seconds"
        ))),
    }
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn versioned(status: StatusCode, version: u64, body: serde_json::Value) -> Response {
    let mut r = (status, Json(body)).into_response();
    r.headers_mut()
        .insert(VERSION_HEADER, HeaderValue::from(version));
    r
}

/// Proposes one write (through the leader of its key's range, in a shared entry) and waits
/// for its result.
pub(crate) async fn propose(state: &AppState, op: Op) -> Result<OpResult, ApiError> {
    let mut results = crate::cluster::router::write(&state.ranges, vec![op]).await?;
    match results.pop() {
        Some(r) if results.is_empty() => Ok(r),
        _ => Err(ApiError::unavailable("unexpected number of results")),
    }
}

/// `PUT /kv/{key}`: sets the key (conditionally with `if_absent` or `if_version`).
pub async fn put(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<PutQuery>,
    body: Bytes,
) -> Result<Response, ApiError> {
    state.authorize(&headers)?;
    let key = check_key(&key)?;
    let value = body.to_vec();
    let ttl_ms = ttl_ms(q.ttl, "ttl")?;
    let op = match (q.if_absent.is_some(), q.if_version) {
        (true, Some(_)) => {
            return Err(ApiError::bad_request(
                "if_absent and if_version cannot be combined",
            ))
        }
        (true, None) => Op::PutIfAbsent { key, value, ttl_ms },
        (false, Some(v)) => Op::CompareAndSet {
            key,
            expected_version: v,
            new: Some(value),
            ttl_ms,
        },
        (false, None) => match ttl_ms {
            Some(t) => Op::PutWithTtl {
                key,
                value,
                ttl_ms: t,
            },
            None => Op::Put { key, value },
        },
    };
    written(propose(&state, op).await?)
}

/// `DELETE /kv/{key}`: removes the key (conditionally with `if_version`).
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(key): Path<String>,
    Query(q): Query<PutQuery>,
) -> Result<Response, ApiError> {
    state.authorize(&headers)?;
    let key = check_key(&key)?;
    let op = match q.if_version {
        Some(v) => Op::CompareAndSet {
            key,
            expected_version: v,
            new: None,
            ttl_ms: None,
        },
        None => Op::Delete { key },
    };
    written(propose(&state, op).await?)
}

/// The answer to a write: 200 with the new version, or 409 with the current one.
fn written(r: OpResult) -> Result<Response, ApiError> {
    Ok(match r {
        OpResult::Done { version } => versioned(
            StatusCode::OK,
            version,
            serde_json::json!({ "version": version }),
        ),
        OpResult::Applied {
            version,
            previous_version,
        } => versioned(
            StatusCode::OK,
            version,
            serde_json::json!({ "version": version, "previous_version": previous_version }),
        ),
        OpResult::Rejected {
            current_version, ..
        } => {
            let mut e = ApiError::new(
                StatusCode::CONFLICT,
                "conflict",
                format!("the key's version is {current_version}"),
            );
            e.extra = Some(serde_json::json!({ "current_version": current_version }));
            let mut r = e.into_response();
            r.headers_mut()
                .insert(VERSION_HEADER, HeaderValue::from(current_version));
            r
        }
    })
}

/// Response header of reads naming how this node made the read safe: `lease` (the leader
/// held a lease), `read-index` (confirmed with a quorum, here or through the leader) or `stale`.
pub const READ_HEADER: &str = "x-strata-read";

/// How a read was served (see [`READ_HEADER`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ReadMode {
    Lease,
    ReadIndex,
    Stale,
}

impl ReadMode {
    pub(crate) fn header(self) -> HeaderValue {
        HeaderValue::from_static(match self {
            ReadMode::Lease => "lease",
            ReadMode::ReadIndex => "read-index",
            ReadMode::Stale => "stale",
        })
    }
}

/// Waits until a local read gives the asked `consistency` (`linearizable` when not given) and
/// says how. A lease read is served by the leader while it holds its lease (see
/// [`crate::cluster::lease`]); anywhere else, or without the lease, it is a read-index read like a
/// linearizable one: never weaker than asked.
pub(crate) async fn read_point(
    range: &Range,
    consistency: Option<&str>,
) -> Result<ReadMode, ApiError> {
    match consistency.unwrap_or("linearizable") {
        "linearizable" => {}
        "lease" => {
            if let Ok(upto) = range.lease_read() {
                range.applied_up_to(Some(upto)).await?;
                return Ok(ReadMode::Lease);
            }
        }
        "stale" => return Ok(ReadMode::Stale),
        other => {
            return Err(ApiError::bad_request(format!(
                "consistency must be linearizable, lease or stale, not {other:?}"
            )))
        }
    }
    range.read_barrier().await?;
    Ok(ReadMode::ReadIndex)
}

/// Checks `consistency` before any range is asked (a bad value is a 400 wherever the key is).
pub(crate) fn check_consistency(consistency: Option<&str>) -> Result<(), ApiError> {
    match consistency.unwrap_or("linearizable") {
        "linearizable" | "lease" | "stale" => Ok(()),
        other => Err(ApiError::bad_request(format!(
            "consistency must be linearizable, lease or stale, not {other:?}"
        ))),
    }
}

/// Reads `key` at the asked consistency from the range holding it (routed again if a split
/// moved it meanwhile).
pub(crate) async fn read_key(
    state: &AppState,
    key: &[u8],
    consistency: Option<&str>,
) -> Result<(ReadMode, Option<raftlog::sm::Versioned>), ApiError> {
    check_consistency(consistency)?;
    // Straight to the range holding the key; routed again (a larger future, boxed) only if a
    // split moved it meanwhile.
    if let Some((_, range)) = state.ranges.route(key) {
        match read_on(state, &range, key, consistency).await {
            Err(e) if e.error == crate::cluster::range::WRONG_RANGE => {}
            done => return done,
        }
    }
    Box::pin(crate::cluster::router::on_key(
        &state.ranges,
        key,
        |range| async move { read_on(state, &range, key, consistency).await },
    ))
    .await
}

async fn read_on(
    state: &AppState,
    range: &std::sync::Arc<Range>,
    key: &[u8],
    consistency: Option<&str>,
) -> Result<(ReadMode, Option<raftlog::sm::Versioned>), ApiError> {
    let mode = read_point(range, consistency).await?;
    let v = state.read(range, key.to_vec()).await?;
    Ok((mode, v))
}

/// `GET /kv/{key}`: the value as the body, its version in the version header.
pub async fn get(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<GetQuery>,
) -> Result<Response, ApiError> {
    let key = check_key(&key)?;
    let (mode, v) = read_key(&state, &key, q.consistency.as_deref()).await?;
    match v {
        Some(v) => {
            let mut r = (StatusCode::OK, v.value).into_response();
            r.headers_mut()
                .insert(VERSION_HEADER, HeaderValue::from(v.version));
            r.headers_mut().insert(READ_HEADER, mode.header());
            Ok(r)
        }
        None => {
            let mut r =
                ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such key").into_response();
            r.headers_mut().insert(READ_HEADER, mode.header());
            Ok(r)
        }
    }
}
