//! Short links: `POST /api/links`, `GET /{code}` (the redirect), `GET` and `DELETE
//! /api/links/{code}`. A link is stored under `link/{code}` as JSON, written put-if-absent
//! through Raft, so two creations of one code cannot both win, and with the link's TTL as the
//! engine TTL, so an expired link reads as absent everywhere.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use raftlog::store::{Op, OpResult};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::error::ApiError;
use crate::kv::propose;
use crate::server::AppState;

/// Length of generated codes: 62^7 ≈ 3.5e12 codes.
pub const GENERATED_CODE_LEN: usize = 7;
const MAX_URL_LEN: usize = 2048;
const MIN_CODE_LEN: usize = 3;
const MAX_CODE_LEN: usize = 64;
/// First path segments the API uses: a custom code may not shadow them.
const RESERVED: &[&str] = &["api", "kv", "health", "ready", "metrics", "admin", "raft"];
const BASE62: &[u8] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateLink {
    url: String,
    code: Option<String>,
    ttl_seconds: Option<u64>,
}

/// The stored form of a link (format 1).
#[derive(Debug, Serialize, Deserialize)]
struct Stored {
    v: u8,
    target: String,
    created_ms: u64,
    expires_ms: Option<u64>,
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

fn describe(state: &AppState, code: &str, s: &Stored, version: u64) -> serde_json::Value {
    serde_json::json!({
        "code": code,
        "short_url": format!("{}/{code}", state.public_base()),
        "target": s.target,
        "created_ms": s.created_ms,
        "expires_ms": s.expires_ms,
        "version": version,
    })
}

pub async fn create(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Result<Json<CreateLink>, axum::extract::rejection::JsonRejection>,
) -> Result<Response, ApiError> {
    state.authorize(&headers)?;
    let req = crate::error::json_body(body)?;
    let target = check_target(&req.url)?;
    if let Some(c) = &req.code {
        check_code(c)?;
    }
    let ttl_ms = crate::kv::ttl_ms(req.ttl_seconds, "ttl_seconds")?;
    let now = crate::kv::now_ms();
    let stored = Stored {
        v: 1,
        target,
        created_ms: now,
        expires_ms: ttl_ms.map(|t| now.saturating_add(t)),
    };
    let value = serde_json::to_vec(&stored)
        .map_err(|e| ApiError::unavailable(format!("encoding the link: {e}")))?;
    // A generated code that collides is replaced; a custom one that is taken is a conflict.
    let attempts = if req.code.is_some() { 1 } else { 5 };
    for _ in 0..attempts {
        let code = req.code.clone().unwrap_or_else(generate_code);
        if check_code(&code).is_err() {
            // A generated code that spells a reserved path: draw again.
            continue;
        }
        let op = Op::PutIfAbsent {
            key: link_key(&code),
            value: value.clone(),
            ttl_ms,
        };
        match propose(&state, op).await? {
            OpResult::Applied { version, .. } => {
                let body = describe(&state, &code, &stored, version);
                let mut r = (StatusCode::CREATED, Json(body)).into_response();
                if let Ok(loc) = HeaderValue::from_str(&format!("/api/links/{code}")) {
                    r.headers_mut().insert(header::LOCATION, loc);
                }
                return Ok(r);
            }
            OpResult::Rejected { .. } if req.code.is_none() => continue,
            _ => {
                return Err(ApiError::new(
                    StatusCode::CONFLICT,
                    "conflict",
                    format!("the code {code:?} is taken"),
                ))
            }
        }
    }
    Err(ApiError::unavailable("no free code found; try again"))
}

/// Reads a link (a local read: links change only by creation and deletion).
fn load(state: &AppState, code: &str) -> Result<(Stored, u64), ApiError> {
    let not_found = || ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such link");
    // Every stored code passes the check (generated ones too), so nothing else can exist.
    if check_code(code).is_err() {
        return Err(not_found());
    }
    let v = state
        .replica
        .sm
        .get(&link_key(code))
        .map_err(|e| ApiError::unavailable(format!("read failed: {e}")))?
        .ok_or_else(not_found)?;
    let stored: Stored = serde_json::from_slice(&v.value)
        .map_err(|e| ApiError::unavailable(format!("stored link is damaged: {e}")))?;
    Ok((stored, v.version))
}

pub async fn redirect(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let (stored, _) = load(&state, &code)?;
    let location = HeaderValue::from_str(&stored.target)
        .map_err(|_| ApiError::unavailable("stored target is not a valid header value"))?;
    let mut r = state.redirect_status().into_response();
    r.headers_mut().insert(header::LOCATION, location);
    Ok(r)
}

pub async fn info(
    State(state): State<AppState>,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    let (stored, version) = load(&state, &code)?;
    Ok(Json(describe(&state, &code, &stored, version)).into_response())
}

pub async fn delete(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(code): Path<String>,
) -> Result<Response, ApiError> {
    state.authorize(&headers)?;
    load(&state, &code)?;
    propose(
        &state,
        Op::Delete {
            key: link_key(&code),
        },
    )
    .await?;
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
