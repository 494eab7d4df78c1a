//! API errors: a status code and a JSON body `{error, message}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// An error answered to a client.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    /// A stable, machine-readable kind (`bad_request`, `not_found`, `conflict`, ...).
    pub error: &'static str,
    pub message: String,
    /// Extra fields of the body (e.g. the current version of a conflict).
    pub extra: Option<serde_json::Value>,
    /// Seconds for a `Retry-After` header.
    pub retry_after: Option<u64>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> Self {
        ApiError {
            status,
            error,
            message: message.into(),
            extra: None,
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn unavailable(message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = serde_json::json!({ "error": self.error, "message": self.message });
        if let (Some(serde_json::Value::Object(extra)), Some(map)) =
            (self.extra, body.as_object_mut())
        {
            map.extend(extra);
        }
        let mut r = (self.status, Json(body)).into_response();
        if let Some(s) = self.retry_after {
            r.headers_mut()
                .insert(axum::http::header::RETRY_AFTER, s.into());
        }
        r
    }
}

/// A JSON request body, or the 400 (415 without a JSON content type, 413 over the route's
/// limit) saying why not.
pub fn json_body<T>(
    body: Result<Json<T>, axum::extract::rejection::JsonRejection>,
) -> Result<T, ApiError> {
    body.map(|Json(t)| t).map_err(|e| match e.status() {
        StatusCode::UNSUPPORTED_MEDIA_TYPE => {
            ApiError::new(e.status(), "unsupported_media_type", e.body_text())
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            ApiError::new(e.status(), "payload_too_large", e.body_text())
        }
        _ => ApiError::bad_request(e.body_text()),
    })
}
