//! Middleware that bounds what a request may cost before a handler runs: credentials checked
//! from the headers before any body byte is read, a bound on client requests in flight, the
//! request deadline, and every error answered in the API's JSON shape.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use tokio::sync::Semaphore;

use crate::api::error::ApiError;
use crate::server::AppState;

/// Bytes of a non-JSON error body kept as the JSON error's message.
const MAX_MESSAGE: usize = 4096;

/// Writes and admin calls: the bearer token, checked before the handler (and so before its body
/// extractor reads a byte).
pub async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match state.authorize(req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => refuse(e),
    }
}

/// Node-to-node calls: the cluster secret, checked before the body is read.
pub async fn require_secret(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match check_secret(&state, req.headers()) {
        Ok(()) => next.run(req).await,
        Err(e) => refuse(e),
    }
}

/// An unauthenticated request's body is never read: the connection closes after the answer
/// rather than keep a client that may still be sending megabytes.
fn refuse(e: ApiError) -> Response {
    let mut r = e.into_response();
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The cluster secret of a node-to-node call, compared in constant time.
pub fn check_secret(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(secret) = state.cluster_secret() else {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            "this node has no cluster secret: node-to-node calls are disabled",
        ));
    };
    let given = headers
        .get(crate::transport::client::SECRET_HEADER)
        .map(|v| v.as_bytes());
    if given.is_some_and(|g| crate::server::same_secret(g, secret.as_bytes())) {
        Ok(())
    } else {
        Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "missing or wrong cluster secret",
        ))
    }
}

/// Client requests served at once. Beyond the bound a request is answered at once (503, retry
/// later) rather than queued: queued requests would hold their connection, buffers and memory
/// while the node is already behind.
pub async fn bound_in_flight(
    State(slots): State<Arc<Semaphore>>,
    req: Request,
    next: Next,
) -> Response {
    let Ok(_slot) = slots.try_acquire() else {
        let mut e = ApiError::unavailable("overloaded: too many requests in flight; retry later");
        e.error = "overloaded";
        e.retry_after = Some(1);
        return e.into_response();
    };
    next.run(req).await
}

/// The request deadline: a handler (its body read included) still running then is dropped, and
/// with it every wait it was in (the write queue, a read index, the blocking pool).
pub async fn deadline(State(limit): State<Duration>, req: Request, next: Next) -> Response {
    let write = !matches!(
        *req.method(),
        axum::http::Method::GET | axum::http::Method::HEAD
    );
    match tokio::time::timeout(limit, next.run(req)).await {
        Ok(r) => r,
        Err(_) => {
            let mut e = ApiError::unavailable(if write {
                format!(
                    "the request did not finish within {} ms; a write may still be applied",
                    limit.as_millis()
                )
            } else {
                format!("the request did not finish within {} ms", limit.as_millis())
            });
            e.error = "timeout";
            e.into_response()
        }
    }
}

/// Every error in the `{error, message}` JSON shape, including the ones axum and its extractors
/// answer in plain text (unknown routes, wrong methods, a body over its limit, an undecodable
/// path or query).
pub async fn json_errors(req: Request, next: Next) -> Response {
    let resp = next.run(req).await;
    let status = resp.status();
    if !(status.is_client_error() || status.is_server_error()) || is_json(resp.headers()) {
        return resp;
    }
    let (parts, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, MAX_MESSAGE)
        .await
        .unwrap_or_default();
    let message = match std::str::from_utf8(&text) {
        Ok(t) if !t.trim().is_empty() => t.trim().to_string(),
        _ => status.canonical_reason().unwrap_or("error").to_string(),
    };
    let mut r = ApiError::new(status, kind(status), message).into_response();
    for (name, value) in &parts.headers {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            r.headers_mut().insert(name.clone(), value.clone());
        }
    }
    r
}

fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"))
}

/// The error kind of a status answered by the framework rather than a handler.
fn kind(status: StatusCode) -> &'static str {
    match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "payload_too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "bad_request",
        StatusCode::TOO_MANY_REQUESTS => "rate_limited",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        s if s.is_server_error() => "internal",
        _ => "bad_request",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::{get, put};

    fn text(status: StatusCode, body: &'static str) -> Response {
        (status, Body::from(body)).into_response()
    }
    use axum::Router;
    use tower::ServiceExt;

    async fn call(app: Router, method: &str, uri: &str, body: Body) -> (StatusCode, String) {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .body(body)
            .expect("request");
        let r = app.oneshot(req).await.expect("infallible");
        let s = r.status();
        let b = axum::body::to_bytes(r.into_body(), 1 << 20)
            .await
            .expect("body");
        (s, String::from_utf8_lossy(&b).into_owned())
    }

    fn app() -> Router {
        Router::new()
            .route(
                "/t",
                get(|| async { text(StatusCode::IM_A_TEAPOT, "short and stout") }),
            )
            .route(
                "/kv/{k}",
                put(|_b: axum::body::Bytes| async { "ok" })
                    .layer(axum::extract::DefaultBodyLimit::max(4)),
            )
            .layer(axum::middleware::from_fn(json_errors))
    }

    #[tokio::test]
    async fn framework_errors_become_json() {
        let (s, b) = call(app(), "GET", "/nope", Body::empty()).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        let v: serde_json::Value = serde_json::from_str(&b).expect("json");
        assert_eq!(v["error"], "not_found");
        let (s, b) = call(app(), "PUT", "/kv/a", Body::from("too long")).await;
        assert_eq!(s, StatusCode::PAYLOAD_TOO_LARGE);
        let v: serde_json::Value = serde_json::from_str(&b).expect("json");
        assert_eq!(v["error"], "payload_too_large");
        let (s, b) = call(app(), "DELETE", "/kv/a", Body::empty()).await;
        assert_eq!(s, StatusCode::METHOD_NOT_ALLOWED);
        assert!(b.contains("method_not_allowed"), "{b}");
        let (s, b) = call(app(), "GET", "/t", Body::empty()).await;
        assert_eq!(s, StatusCode::IM_A_TEAPOT);
        let v: serde_json::Value = serde_json::from_str(&b).expect("json");
        assert_eq!(v["message"], "short and stout");
    }

    #[tokio::test]
    async fn deadline_and_in_flight_bound() {
        let slow = Router::new()
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_secs(5)).await;
                    "late"
                }),
            )
            .route_layer(axum::middleware::from_fn_with_state(
                Duration::from_millis(50),
                deadline,
            ));
        let (s, b) = call(slow, "GET", "/slow", Body::empty()).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(b.contains("\"timeout\""), "{b}");

        let slots = Arc::new(Semaphore::new(1));
        let held = slots.clone().try_acquire_owned().expect("a slot");
        let bounded = Router::new()
            .route("/x", get(|| async { "ok" }))
            .route_layer(axum::middleware::from_fn_with_state(
                slots.clone(),
                bound_in_flight,
            ));
        let (s, b) = call(bounded.clone(), "GET", "/x", Body::empty()).await;
        assert_eq!(s, StatusCode::SERVICE_UNAVAILABLE);
        assert!(b.contains("overloaded"), "{b}");
        drop(held);
        let (s, _) = call(bounded, "GET", "/x", Body::empty()).await;
        assert_eq!(s, StatusCode::OK);
    }
}
