//! Short links: `POST /api/links`, `POST /api/links/batch`, `GET /{code}` (the redirect),
//! `GET` and `DELETE /api/links/{code}`. A link is stored under `link/{code}` as JSON, written
//! put-if-absent through Raft, so two creations of one code cannot both win, and with the
//! link's TTL as the engine TTL, so an expired link reads as absent everywhere.
//!
//! Redirects are counted without a Raft write each (see [`crate::api::visits`]). A link with
//! `max_visits` answers `410 Gone` once its visits reached the limit (the link still exists:
//! `GET /api/links/{code}` shows it, `DELETE` removes it). Link creation is rate limited per
//! client (see [`crate::ops::ratelimit`]): one token per link asked for.

use std::collections::HashSet;
use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raftlog::store::{Op, OpResult};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::api::error::ApiError;
use crate::api::visits::{read_counter, Counter};
use crate::ops::ratelimit::Grant;
use crate::server::AppState;

/// Length of generated codes: 62^7 ≈ 3.5e12 codes.
pub const GENERATED_CODE_LEN: usize = 7;
const MAX_URL_LEN: usize = 2048;
const MIN_CODE_LEN: usize = 3;
const MAX_CODE_LEN: usize = 64;
/// First path segments the API uses: a custom code may not shadow them.
const RESERVED: &[&str] = &["api", "kv", "health", "ready", "metrics", "admin", "raft"];
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
/// Most links one batch may create.
pub const MAX_BATCH: usize = 1000;
/// Rounds of drawing generated codes again after collisions.
const CODE_ROUNDS: usize = 5;

/// Body of `POST /api/links`, and one item of a batch.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    url: String,
    code: Option<String>,
    ttl_seconds: Option<u64>,
    /// Redirects allowed; afterwards the link answers 410 Gone.
    max_visits: Option<u64>,
}

/// Body of `POST /api/links/batch`. Items are parsed one by one, so a malformed item fails
/// alone.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateBatch {
    links: Vec<serde_json::Value>,
}

/// The stored form of a link (format 1; `max_visits` is absent from links made before it).
#[derive(Debug, Serialize, Deserialize)]
pub(crate) struct Stored {
    v: u8,
    target: String,
    created_ms: u64,
    pub(crate) expires_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_visits: Option<u64>,
}

/// Links live under this key prefix, which the KV API refuses.
pub const KEY_PREFIX: &str = "link/";

fn link_key(code: &str) -> Vec<u8> {
    format!("{KEY_PREFIX}{code}").into_bytes()
}

/// Only absolute http(s) URLs with a host: a shortener must not hand out `javascript:` or
/// `file:` targets.
fn check_target(raw: &str) -> Result<String, ApiError> {
    if raw.len() > MAX_URL_LEN {
        return Err(ApiError::bad_request(format!(
            "the url is {} bytes; the limit is {MAX_URL_LEN}",
            raw.len()
        )));
    }
    let u = url::Url::parse(raw).map_err(|e| ApiError::bad_request(format!("invalid url: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(ApiError::bad_request(
            "only http and https urls can be shortened",
        ));
    }
    if u.host_str().is_none_or(str::is_empty) {
        return Err(ApiError::bad_request("the url has no host"));
    }
    Ok(u.to_string())
}

fn check_code(code: &str) -> Result<(), ApiError> {
    let ok_chars = code
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if !(MIN_CODE_LEN..=MAX_CODE_LEN).contains(&code.len()) || !ok_chars {
        return Err(ApiError::bad_request(format!(
            "a code has {MIN_CODE_LEN} to {MAX_CODE_LEN} characters from A-Z a-z 0-9 - _"
        )));
    }
    if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(code)) {
        return Err(ApiError::bad_request(format!("{code:?} is reserved")));
    }
    Ok(())
}

fn generate_code() -> String {
    let mut rng = rand::thread_rng();
    (0..GENERATED_CODE_LEN)
        .map(|_| BASE62[rng.gen_range(0..BASE62.len())] as char)
        .collect()
}

fn describe(
    state: &AppState,
    code: &str,
    s: &Stored,
    version: u64,
    visits: u64,
) -> serde_json::Value {
    serde_json::json!({
        "code": code,
        "short_url": format!("{}/{code}", state.public_base()),
        "target": s.target,
        "created_ms": s.created_ms,
        "expires_ms": s.expires_ms,
        "max_visits": s.max_visits,
        "visits": visits,
        "version": version,
    })
}

/// A checked request to create one link.
struct Planned {
    /// The custom code, if one was asked for (else one is generated).
    code: Option<String>,
    stored: Stored,
    value: Vec<u8>,
    ttl_ms: Option<u64>,
}

fn plan(req: CreateLink, now: u64) -> Result<Planned, ApiError> {
    let target = check_target(&req.url)?;
    if let Some(c) = &req.code {
        check_code(c)?;
    }
    if req.max_visits == Some(0) {
        return Err(ApiError::bad_request("max_visits must be at least 1"));
    }
    let ttl_ms = crate::api::kv::ttl_ms(req.ttl_seconds, "ttl_seconds")?;
    let stored = Stored {
        v: 1,
        target,
        created_ms: now,
        expires_ms: ttl_ms.map(|t| now.saturating_add(t)),
        max_visits: req.max_visits,
    };
    let value = serde_json::to_vec(&stored)
        .map_err(|e| ApiError::unavailable(format!("encoding the link: {e}")))?;
    Ok(Planned {
        code: req.code,
        stored,
        value,
        ttl_ms,
    })
}

fn taken(code: &str) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "conflict",
        format!("the code {code:?} is taken"),
    )
}

/// A generated code that passes the code check (one that spells a reserved path is drawn
/// again) and is not in `used`.
fn fresh_code(used: &HashSet<String>) -> String {
    loop {
        let c = generate_code();
        if check_code(&c).is_ok() && !used.contains(&c) {
            return c;
        }
    }
}

/// Creates the links: every one in a single Raft write (put-if-absent each, in order), then
/// one more write per round for the generated codes that collided, drawn again. A custom code
/// that is taken (or asked for twice in one batch) is a conflict. Returns each link's code and
/// version, or why it was not created.
async fn create_all(state: &AppState, items: &[Planned]) -> Vec<Result<(String, u64), ApiError>> {
    let mut out: Vec<Option<Result<(String, u64), ApiError>>> =
        items.iter().map(|_| None).collect();
    for _ in 0..CODE_ROUNDS {
        let todo: Vec<usize> = (0..items.len()).filter(|&i| out[i].is_none()).collect();
        if todo.is_empty() {
            break;
        }
        let mut used: HashSet<String> = items.iter().filter_map(|p| p.code.clone()).collect();
        let mut codes = Vec::with_capacity(todo.len());
        let mut ops = Vec::with_capacity(todo.len());
        for &i in &todo {
            let p = &items[i];
            let code = match &p.code {
                Some(c) => c.clone(),
                None => {
                    let c = fresh_code(&used);
                    used.insert(c.clone());
                    c
                }
            };
            ops.push(Op::PutIfAbsent {
                key: link_key(&code),
                value: p.value.clone(),
                ttl_ms: p.ttl_ms,
            });
            codes.push(code);
        }
        // Through the batcher: concurrent creations share entries (one unit each).
        let written = crate::cluster::router::write(&state.ranges, ops).await;
        let results = match written {
            Ok(r) if r.len() == todo.len() => r,
            Ok(r) => {
                let m = format!("{} results for {} operations", r.len(), todo.len());
                for &i in &todo {
                    out[i] = Some(Err(ApiError::unavailable(m.clone())));
                }
                break;
            }
            // Refused (400) or of unknown outcome (503: the write may still commit).
            Err(e) => {
                // The outcome is unknown (the write may still commit): say so for each.
                for &i in &todo {
                    out[i] = Some(Err(ApiError::new(e.status, e.error, e.message.clone())));
                }
                break;
            }
        };
        for ((&i, code), r) in todo.iter().zip(codes).zip(results) {
            match r {
                OpResult::Applied { version, .. } => out[i] = Some(Ok((code, version))),
                _ if items[i].code.is_some() => out[i] = Some(Err(taken(&code))),
                // A generated code that collided: drawn again next round.
                _ => {}
            }
        }
    }
    out.into_iter()
        .map(|r| r.unwrap_or_else(|| Err(ApiError::unavailable("no free code found; try again"))))
        .collect()
}

/// A refusal by the link-creation rate limit: the seconds after which to retry.
struct RateLimited(u64);

impl IntoResponse for RateLimited {
    /// 429 with `Retry-After` and the JSON error `rate_limited`.
    fn into_response(self) -> Response {
        let secs = self.0;
        let mut e = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("too many links created from this address; retry in {secs} s"),
        );
        e.extra = Some(serde_json::json!({ "retry_after_seconds": secs }));
        let mut r = e.into_response();
        r.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
        r
    }
}

/// Takes `wanted` link-creation tokens for the client (fewer when it has fewer, at least 1).
fn rate_limit(state: &AppState, peer: SocketAddr, wanted: u64) -> Result<u64, RateLimited> {
    match state.link_limiter().take(peer.ip(), wanted) {
        Grant::Granted(n) => Ok(n),
        Grant::Refused(wait) => Err(RateLimited(wait.as_secs())),
    }
}

fn error_item(e: &ApiError) -> serde_json::Value {
    serde_json::json!({ "status": e.status.as_u16(), "error": e.error, "message": e.message })
}

/// `POST /api/links`: creates one link (201 with the link, `Location` naming it; 409 when the
/// custom code is taken; 429 when the client created too many links lately).
pub async fn create(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<CreateLink>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    state.authorize(&headers)?;
    let req = crate::api::error::json_body(body)?;
    let planned = plan(req, crate::api::kv::now_ms())?;
    if let Err(r) = rate_limit(&state, peer, 1) {
        return Ok(r.into_response());
    }
    let mut results = create_all(&state, std::slice::from_ref(&planned)).await;
    let (code, version) = results
        .pop()
        .unwrap_or_else(|| Err(ApiError::unavailable("no result")))?;
    let body = describe(&state, &code, &planned.stored, version, 0);
    let mut r = (StatusCode::CREATED, Json(body)).into_response();
    if let Ok(loc) = HeaderValue::from_str(&format!("/api/links/{code}")) {
        r.headers_mut().insert(header::LOCATION, loc);
    }
    Ok(r)
}

/// `POST /api/links/batch` with `{"links": [item...]}` (1 to [`MAX_BATCH`] items shaped like
/// the body of `POST /api/links`): creates them in as few Raft writes as it can. Answers 201
/// when every link was created, else 207; `results` holds, in order, each created link (with
/// `"status": 201`) or an error object `{status, error, message}` (400 invalid, 409 code taken,
/// 429 over the client's rate, 503 not written). 429 for the whole request when the client
/// may create no link at all now.
pub async fn create_batch(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    headers: HeaderMap,
    body: Result<Json<CreateBatch>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    state.authorize(&headers)?;
    let req = crate::api::error::json_body(body)?;
    if !(1..=MAX_BATCH).contains(&req.links.len()) {
        return Err(ApiError::bad_request(format!(
            "a batch has 1 to {MAX_BATCH} links, not {}",
            req.links.len()
        )));
    }
    let now = crate::api::kv::now_ms();
    let checked: Vec<Result<Planned, ApiError>> = req
        .links
        .into_iter()
        .map(|v| {
            serde_json::from_value::<CreateLink>(v)
                .map_err(|e| ApiError::bad_request(format!("invalid link: {e}")))
                .and_then(|c| plan(c, now))
        })
        .collect();
    // Invalid items cost no token: they never reach the log.
    let valid = checked.iter().filter(|c| c.is_ok()).count() as u64;
    let granted = if valid == 0 {
        0
    } else {
        match rate_limit(&state, peer, valid) {
            Ok(n) => n,
            Err(r) => return Ok(r.into_response()),
        }
    };
    let mut slots: Vec<Result<usize, ApiError>> = Vec::with_capacity(checked.len());
    let mut todo = Vec::new();
    for c in checked {
        slots.push(match c {
            Ok(p) if (todo.len() as u64) < granted => {
                todo.push(p);
                Ok(todo.len() - 1)
            }
            Ok(_) => Err(ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "over this address's link creation rate; retry later",
            )),
            Err(e) => Err(e),
        });
    }
    let created = create_all(&state, &todo).await;
    let mut all_ok = true;
    let mut results = Vec::with_capacity(slots.len());
    for slot in slots {
        let item = match slot.and_then(|i| match &created[i] {
            Ok((code, version)) => Ok((i, code.clone(), *version)),
            Err(e) => Err(ApiError::new(e.status, e.error, e.message.clone())),
        }) {
            Ok((i, code, version)) => {
                let mut d = describe(&state, &code, &todo[i].stored, version, 0);
                if let Some(m) = d.as_object_mut() {
                    m.insert("status".into(), 201.into());
                }
                d
            }
            Err(e) => {
                all_ok = false;
                error_item(&e)
            }
        };
        results.push(item);
    }
    let n_created = created.iter().filter(|c| c.is_ok()).count();
    let status = if all_ok {
        StatusCode::CREATED
    } else {
        StatusCode::MULTI_STATUS
    };
    let body = serde_json::json!({
        "results": results,
        "created": n_created,
        "failed": results.len() - n_created,
    });
    Ok((status, Json(body)).into_response())
}

fn not_found() -> ApiError {
    ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such link")
}

/// Reads a link and its version from this node (a local read: links change only by creation
/// and deletion); `None` when there is none (or `code` cannot name one).
pub(crate) async fn lookup(
    state: &AppState,
    code: &str,
) -> Result<Option<(Stored, u64)>, ApiError> {
    // Every stored code passes the check (generated ones too), so nothing else can exist.
    if check_code(code).is_err() {
        return Ok(None);
    }
    let Some(v) = state.read_stale(link_key(code)).await? else {
        return Ok(None);
    };
    let stored: Stored = serde_json::from_slice(&v.value)
        .map_err(|e| ApiError::unavailable(format!("stored link is damaged: {e}")))?;
    Ok(Some((stored, v.version)))
}

async fn load(state: &AppState, code: &str) -> Result<(Stored, u64), ApiError> {
    lookup(state, code).await?.ok_or_else(not_found)
}

/// `GET /{code}`: redirects to the link's target (302 unless configured otherwise) and counts
/// the visit; 404 for no such link, 410 once the link's visits reached its `max_visits`.
pub async fn redirect(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let (stored, version) = load(&state, &code).await?;
    let location = HeaderValue::from_str(&stored.target)
        .map_err(|_| ApiError::unavailable("stored target is not a valid header value"))?;
    // The stored count matters only for a limit: unlimited links skip that read.
    let counter = match stored.max_visits {
        Some(_) => read_counter(&state, &code, version).await?,
        None => Counter::default(),
    };
    if !state
        .visits
        .try_visit(&code, version, counter, stored.max_visits)
    {
        return Err(ApiError::new(
            StatusCode::GONE,
            "gone",
            "the link reached its maximum number of visits",
        ));
    }
    let mut r = state.redirect_status().into_response();
    r.headers_mut().insert(header::LOCATION, location);
    Ok(r)
}

/// `GET /api/links/{code}`: the link, with `visits` (stored plus this node's unflushed ones).
pub async fn info(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let (stored, version) = load(&state, &code).await?;
    let counter = read_counter(&state, &code, version).await?;
    let visits = state.visits.total(&code, version, counter);
    Ok(Json(describe(&state, &code, &stored, version, visits)).into_response())
}

/// `DELETE /api/links/{code}`: removes the link and its visit counter in one write (204).
pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    state.authorize(&headers)?;
    load(&state, &code).await?;
    // The link and its counter, each in its range's entry (the counter first: a link left
    // without one counts from zero, a counter left without its link would never be removed).
    let ops = |key: Vec<u8>| vec![Op::Delete { key }];
    crate::cluster::router::write(&state.ranges, ops(crate::api::visits::counter_key(&code)))
        .await?;
    crate::cluster::router::write(&state.ranges, ops(link_key(&code))).await?;
    state.visits.forget(&code);
    Ok(StatusCode::NO_CONTENT.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_and_codes_are_validated() {
        assert!(check_target("https://example.com/a?b=c").is_ok());
        assert!(check_target("http://example.com").is_ok());
        for bad in [
            "javascript:alert(1)",
            "file:///etc/passwd",
            "ftp://x.org",
            "not a url",
            "http://",
        ] {
            assert!(check_target(bad).is_err(), "{bad}");
        }
        assert!(check_target(&format!("https://e.com/{}", "a".repeat(MAX_URL_LEN))).is_err());
        assert!(check_code("my-link_1").is_ok());
        for bad in ["ab", "api", "KV", "has space", "slash/x", &"x".repeat(65)] {
            assert!(check_code(bad).is_err(), "{bad}");
        }
        let c = generate_code();
        assert_eq!(c.len(), GENERATED_CODE_LEN);
        assert!(c.bytes().all(|b| b.is_ascii_alphanumeric()));
        assert!(check_code("metrics").is_err(), "7 letters, but reserved");
    }
}
