//! An object store in an S3 bucket (or any S3-compatible server), over `aws-sdk-s3`.
//!
//! The engine's API is synchronous, so the store owns a small tokio runtime and each call runs
//! its request there and waits on a channel. Waiting on a channel rather than `block_on` means a
//! call from inside some other tokio runtime (a server handler) blocks that thread but does not
//! panic.
//!
//! The SDK's own retries are off: [`RetryingStore`](super::RetryingStore) retries every call
//! with backoff, and counting a request once per attempt keeps the engine's GET statistics
//! honest. Each HTTP request has a deadline ([`S3Config::request_timeout`], plus time for the
//! bytes of an upload at [`S3Config::min_upload_bytes_per_sec`]) covering the response body too,
//! which the SDK's operation timeout does not. Under a deadline
//! ([`with_deadline`](super::with_deadline)) a request's deadline is the sooner of the two, and a
//! request is not sent at all once the deadline has passed.
//!
//! Credentials are read once, when the store is made: temporary credentials that expire make
//! every request fail with `Rejected` until the store is made again. Parts of multipart uploads
//! interrupted by a crash stay in the bucket; give it a lifecycle rule
//! (`AbortIncompleteMultipartUpload`) as for any S3 writer.
//!
//! Objects of at least [`S3Config::multipart_threshold`] bytes go up as multipart uploads, parts
//! in parallel, aborted on failure so no parts linger. Create-if-absent is a conditional write
//! (`If-None-Match: *`), which S3 and s3s support.

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use bytes::Bytes;

use super::{deadline, validate_key, ObjectError, ObjectMeta, ObjectOp, ObjectStore};

/// Where the credentials of an [`S3Store`] come from.
#[derive(Clone, PartialEq, Eq)]
pub enum S3Credentials {
    /// Fixed keys.
    Static {
        /// Access key id.
        access_key_id: String,
        /// Secret access key.
        secret_access_key: String,
        /// Session token of temporary credentials.
        session_token: Option<String>,
    },
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` and optionally `AWS_SESSION_TOKEN`, read
    /// when the store is created.
    Environment,
}

impl std::fmt::Debug for S3Credentials {
    // Never print a secret into a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            S3Credentials::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
            S3Credentials::Environment => f.write_str("Environment"),
        }
    }
}

/// How to reach a bucket.
#[derive(Debug, Clone)]
pub struct S3Config {
    /// The bucket.
    pub bucket: String,
    /// Region; `None` reads `AWS_REGION` or `AWS_DEFAULT_REGION`, then falls back to
    /// `us-east-1`.
    pub region: Option<String>,
    /// A custom endpoint such as `http://127.0.0.1:9000` (MinIO, s3s, R2); `None` for AWS.
    pub endpoint: Option<String>,
    /// Address the bucket in the path (`endpoint/bucket/key`) instead of the host name, as most
    /// S3-compatible servers need (default `true` when an endpoint is set).
    pub force_path_style: bool,
    /// Credentials.
    pub credentials: S3Credentials,
    /// Deadline of one HTTP request, the response body included (default 30 s).
    pub request_timeout: Duration,
    /// Deadline for establishing a connection (default 5 s).
    pub connect_timeout: Duration,
    /// Slowest upload rate allowed for before a PUT (or part) times out: its deadline is
    /// `request_timeout` plus its size at this rate (default 1 MiB/s).
    pub min_upload_bytes_per_sec: u64,
    /// Objects of at least this many bytes are uploaded in parts (default 16 MiB).
    pub multipart_threshold: usize,
    /// Size of each part but the last (default 8 MiB; S3 requires at least 5 MiB).
    pub part_size: usize,
    /// Parts of one object uploaded at once (default 4).
    pub upload_concurrency: usize,
}

impl S3Config {
    /// A bucket on AWS, credentials from the environment, default timeouts and part sizes.
    pub fn new(bucket: impl Into<String>) -> Self {
        S3Config {
            bucket: bucket.into(),
            region: None,
            endpoint: None,
            force_path_style: false,
            credentials: S3Credentials::Environment,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(5),
            min_upload_bytes_per_sec: 1 << 20,
            multipart_threshold: 16 << 20,
            part_size: 8 << 20,
            upload_concurrency: 4,
        }
    }

    /// Talks to an S3-compatible server at `endpoint` with path-style addressing.
    pub fn with_endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self.force_path_style = true;
        self
    }

    /// Uses fixed credentials.
    pub fn with_static_credentials(
        mut self,
        access_key_id: impl Into<String>,
        secret_access_key: impl Into<String>,
    ) -> Self {
        self.credentials = S3Credentials::Static {
            access_key_id: access_key_id.into(),
            secret_access_key: secret_access_key.into(),
            session_token: None,
        };
        self
    }

    /// Sets the region.
    pub fn with_region(mut self, region: impl Into<String>) -> Self {
        self.region = Some(region.into());
        self
    }
}

/// An [`ObjectStore`] in an S3 bucket.
pub struct S3Store {
    client: Client,
    bucket: String,
    cfg: S3Config,
    // Always `Some` until dropped.
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for S3Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Store")
            .field("bucket", &self.bucket)
            .field("endpoint", &self.cfg.endpoint)
            .finish_non_exhaustive()
    }
}

fn config_error(detail: impl Into<String>) -> ObjectError {
    ObjectError::Rejected {
        op: ObjectOp::Size,
        key: String::new(),
        detail: detail.into(),
    }
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl S3Store {
    /// Creates the client and its runtime. Fails on a configuration that cannot work (no
    /// credentials, a part size S3 would refuse); does not contact the server.
    pub fn new(cfg: S3Config) -> Result<Self, ObjectError> {
        if cfg.bucket.is_empty() {
            return Err(config_error("S3 bucket name is empty"));
        }
        if cfg.part_size < 5 << 20 {
            return Err(config_error("S3 part size must be at least 5 MiB"));
        }
        let creds = match &cfg.credentials {
            S3Credentials::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => Credentials::new(
                access_key_id,
                secret_access_key,
                session_token.clone(),
                None,
                "strata-static",
            ),
            S3Credentials::Environment => {
                let (Some(id), Some(secret)) =
                    (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
                else {
                    return Err(config_error(
                        "S3 credentials: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are not set",
                    ));
                };
                Credentials::new(id, secret, env("AWS_SESSION_TOKEN"), None, "strata-env")
            }
        };
        let region = cfg
            .region
            .clone()
            .or_else(|| env("AWS_REGION"))
            .or_else(|| env("AWS_DEFAULT_REGION"))
            .unwrap_or_else(|| "us-east-1".to_string());
        let mut b = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(creds)
            .force_path_style(cfg.force_path_style)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                // Request deadlines are ours (`run`), sized to the bytes sent.
                TimeoutConfig::builder()
                    .connect_timeout(cfg.connect_timeout)
                    .build(),
            );
        if let Some(ep) = &cfg.endpoint {
            b = b.endpoint_url(ep);
        }
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-s3")
            .enable_all()
            .build()
            .map_err(|e| config_error(format!("cannot start the S3 runtime: {e}")))?;
        Ok(S3Store {
            client: Client::from_conf(b.build()),
            bucket: cfg.bucket.clone(),
            cfg,
            rt: Some(rt),
        })
    }

    /// The configuration the store was made with.
    pub fn config(&self) -> &S3Config {
        &self.cfg
    }

    /// Creates the bucket unless it exists (for test servers and first runs; production
    /// buckets are usually made by whoever owns the account).
    pub fn create_bucket_if_missing(&self) -> Result<(), ObjectError> {
        let (client, bucket) = (self.client.clone(), self.bucket.clone());
        self.run(ObjectOp::Put, "", async move {
            match client.head_bucket().bucket(&bucket).send().await {
                Ok(_) => return Ok(()),
                Err(e) if status(&e) != Some(404) => {
                    return Err(map_err(ObjectOp::Put, &bucket, e))
                }
                Err(_) => {}
            }
            match client.create_bucket().bucket(&bucket).send().await {
                Ok(_) => Ok(()),
                Err(e)
                    if matches!(
                        e.code(),
                        Some("BucketAlreadyOwnedByYou") | Some("BucketAlreadyExists")
                    ) =>
                {
                    Ok(())
                }
                Err(e) => Err(map_err(ObjectOp::Put, &bucket, e)),
            }
        })
    }

    fn spawn(&self, fut: impl Future<Output = ()> + Send + 'static) {
        if let Some(rt) = &self.rt {
            rt.spawn(fut);
        }
    }

    /// Runs `fut` on the store's runtime under the request deadline and waits for it.
    fn run<T: Send + 'static>(
        &self,
        op: ObjectOp,
        key: &str,
        fut: impl Future<Output = Result<T, ObjectError>> + Send + 'static,
    ) -> Result<T, ObjectError> {
        self.run_for(0, op, key, fut)
    }

    /// The deadline of a request sending `bytes`.
    fn deadline(&self, bytes: usize) -> Duration {
        let rate = self.cfg.min_upload_bytes_per_sec.max(1);
        self.cfg.request_timeout + Duration::from_secs_f64(bytes as f64 / rate as f64)
    }

    /// `run` for a request that sends `bytes`.
    fn run_for<T: Send + 'static>(
        &self,
        bytes: usize,
        op: ObjectOp,
        key: &str,
        fut: impl Future<Output = Result<T, ObjectError>> + Send + 'static,
    ) -> Result<T, ObjectError> {
        let timeout = deadline::bound(self.deadline(bytes), op, key)?;
        let (tx, rx) = std::sync::mpsc::sync_channel(1);
        self.spawn(async move {
            let _ = tx.send(tokio::time::timeout(timeout, fut).await);
        });
        match rx.recv() {
            Ok(Ok(r)) => r,
            Ok(Err(_elapsed)) => Err(ObjectError::Timeout {
                op,
                key: key.to_string(),
            }),
            Err(_) => Err(ObjectError::Unavailable {
                op,
                key: key.to_string(),
                detail: "the S3 runtime stopped".to_string(),
            }),
        }
    }

    /// One GET with an optional `Range` header; returns the body and the `Content-Range`
    /// header, if the server sent one.
    fn get_object(
        &self,
        op: ObjectOp,
        key: &str,
        range: Option<String>,
    ) -> Result<(Bytes, Option<String>), ObjectError> {
        validate_key(key)?;
        let (client, bucket, k) = (self.client.clone(), self.bucket.clone(), key.to_string());
        self.run(op, key, async move {
            let out = client
                .get_object()
                .bucket(bucket)
                .key(&k)
                .set_range(range)
                .send()
                .await
                .map_err(|e| map_err(op, &k, e))?;
            let content_range = out.content_range().map(str::to_string);
            let body = out
                .body
                .collect()
                .await
                .map_err(|e| ObjectError::Unavailable {
                    op,
                    key: k.clone(),
                    detail: format!("reading the response body: {e}"),
                })?;
            Ok((body.into_bytes(), content_range))
        })
    }

    fn put_impl(&self, op: ObjectOp, key: &str, data: Bytes) -> Result<bool, ObjectError> {
        validate_key(key)?;
        let if_absent = op == ObjectOp::PutIfAbsent;
        if data.len() >= self.cfg.multipart_threshold {
            return self.put_multipart(op, key, data, if_absent);
        }
        let (client, bucket, k) = (self.client.clone(), self.bucket.clone(), key.to_string());
        self.run_for(data.len(), op, key, async move {
            let sent = client
                .put_object()
                .bucket(bucket)
                .key(&k)
                .content_length(data.len() as i64)
                .body(ByteStream::from(data))
                .set_if_none_match(if_none_match(if_absent))
                .send()
                .await;
            write_outcome(sent, if_absent, op, &k)
        })
    }

    /// Uploads `data` in parts. Each part is its own request with its own deadline, so a large
    /// object is not held to a deadline meant for one block; the upload is aborted on failure.
    fn put_multipart(
        &self,
        op: ObjectOp,
        key: &str,
        data: Bytes,
        if_absent: bool,
    ) -> Result<bool, ObjectError> {
        let (client, bucket, k) = (self.client.clone(), self.bucket.clone(), key.to_string());
        let upload_id = self.run(op, key, {
            let (client, bucket, k) = (client.clone(), bucket.clone(), k.clone());
            async move {
                let out = client
                    .create_multipart_upload()
                    .bucket(bucket)
                    .key(&k)
                    .send()
                    .await
                    .map_err(|e| map_err(op, &k, e))?;
                out.upload_id()
                    .map(str::to_string)
                    .ok_or_else(|| ObjectError::Unavailable {
                        op,
                        key: k.clone(),
                        detail: "CreateMultipartUpload returned no upload id".to_string(),
                    })
            }
        })?;
        let result = self
            .upload_parts(op, key, &data, &upload_id)
            .and_then(|parts| {
                let (client, bucket, k, id) =
                    (client.clone(), bucket.clone(), k.clone(), upload_id.clone());
                self.run(op, key, async move {
                    let sent = client
                        .complete_multipart_upload()
                        .bucket(bucket)
                        .key(&k)
                        .upload_id(id)
                        .multipart_upload(
                            CompletedMultipartUpload::builder()
                                .set_parts(Some(parts))
                                .build(),
                        )
                        .set_if_none_match(if_none_match(if_absent))
                        .send()
                        .await;
                    write_outcome(sent, if_absent, op, &k)
                })
            });
        if !matches!(result, Ok(true)) {
            let (client, bucket, k) = (client.clone(), bucket.clone(), k.clone());
            let abort = async move {
                client
                    .abort_multipart_upload()
                    .bucket(bucket)
                    .key(&k)
                    .upload_id(upload_id)
                    .send()
                    .await
                    .map(|_| ())
                    .map_err(|e| map_err(op, &k, e))
            };
            if deadline::current().is_some() {
                // The failure may be the deadline itself, which would refuse the abort too, and
                // the caller is not to wait past it: the abort goes on in the background under
                // the store's own timeout (the lifecycle rule covers it if it fails).
                let (timeout, key) = (self.cfg.request_timeout, key.to_string());
                self.spawn(async move {
                    let outcome = match tokio::time::timeout(timeout, abort).await {
                        Ok(r) => r,
                        Err(_) => Err(ObjectError::Timeout {
                            op,
                            key: key.clone(),
                        }),
                    };
                    if let Err(e) = outcome {
                        tracing::warn!(key, error = %e, "could not abort a failed multipart upload");
                    }
                });
            } else if let Err(e) = self.run(op, key, abort) {
                tracing::warn!(key, error = %e, "could not abort a failed multipart upload");
            }
        }
        result
    }

    fn upload_parts(
        &self,
        op: ObjectOp,
        key: &str,
        data: &Bytes,
        upload_id: &str,
    ) -> Result<Vec<CompletedPart>, ObjectError> {
        let part_size = self.cfg.part_size;
        let chunks: Vec<(i32, Bytes)> = (0..data.len())
            .step_by(part_size)
            .enumerate()
            .map(|(i, start)| {
                let end = (start + part_size).min(data.len());
                (i as i32 + 1, data.slice(start..end))
            })
            .collect();
        let mut parts = Vec::with_capacity(chunks.len());
        for wave in chunks.chunks(self.cfg.upload_concurrency.max(1)) {
            let receivers: Vec<_> = wave
                .iter()
                .map(|(n, body)| {
                    let (client, bucket, k) =
                        (self.client.clone(), self.bucket.clone(), key.to_string());
                    let (n, body, id) = (*n, body.clone(), upload_id.to_string());
                    let (tx, rx) = std::sync::mpsc::sync_channel(1);
                    let timeout = match deadline::bound(self.deadline(body.len()), op, key) {
                        Ok(t) => t,
                        Err(e) => {
                            let _ = tx.send(Err(e));
                            return rx;
                        }
                    };
                    self.spawn(async move {
                        let fut = client
                            .upload_part()
                            .bucket(bucket)
                            .key(&k)
                            .upload_id(id)
                            .part_number(n)
                            .content_length(body.len() as i64)
                            .body(ByteStream::from(body))
                            .send();
                        let r = match tokio::time::timeout(timeout, fut).await {
                            Ok(Ok(out)) => Ok(CompletedPart::builder()
                                .set_e_tag(out.e_tag().map(str::to_string))
                                .part_number(n)
                                .build()),
                            Ok(Err(e)) => Err(map_err(op, &k, e)),
                            Err(_) => Err(ObjectError::Timeout { op, key: k }),
                        };
                        let _ = tx.send(r);
                    });
                    rx
                })
                .collect();
            // Every part of the wave finishes before an error returns: an abort racing parts
            // still in flight may leave them behind.
            let mut failed = None;
            for rx in receivers {
                match rx.recv() {
                    Ok(Ok(part)) => parts.push(part),
                    Ok(Err(e)) => failed = failed.or(Some(e)),
                    Err(_) => {
                        failed = failed.or(Some(ObjectError::Unavailable {
                            op,
                            key: key.to_string(),
                            detail: "the S3 runtime stopped".to_string(),
                        }))
                    }
                }
            }
            if let Some(e) = failed {
                return Err(e);
            }
        }
        Ok(parts)
    }
}

/// `If-None-Match: *` for a create-if-absent write: the server refuses it when the key exists.
fn if_none_match(if_absent: bool) -> Option<String> {
    if_absent.then(|| "*".to_string())
}

/// The result of a write that was conditional when `if_absent`: a refused condition (412) means
/// the object exists and nothing was written.
fn write_outcome<O, E, R>(
    sent: Result<O, SdkError<E, R>>,
    if_absent: bool,
    op: ObjectOp,
    key: &str,
) -> Result<bool, ObjectError>
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: HasStatus + std::fmt::Debug,
{
    match sent {
        Ok(_) => Ok(true),
        Err(e) if if_absent && status(&e) == Some(412) => Ok(false),
        Err(e) => Err(map_err(op, key, e)),
    }
}

/// The HTTP status of a failed request, when there was a response.
fn status<E, R: HasStatus>(e: &SdkError<E, R>) -> Option<u16> {
    e.raw_response().map(HasStatus::status_code)
}

trait HasStatus {
    fn status_code(&self) -> u16;
}

impl HasStatus for aws_sdk_s3::config::http::HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

/// Sorts an SDK failure into the store's errors: absent objects, answers that retrying will not
/// change (access denied, a missing bucket), and everything worth retrying (timeouts, network
/// errors, throttling, server errors).
fn map_err<E, R>(op: ObjectOp, key: &str, e: SdkError<E, R>) -> ObjectError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: HasStatus + std::fmt::Debug,
{
    let key = key.to_string();
    let code = e.code().map(str::to_string);
    match &e {
        SdkError::TimeoutError(_) => return ObjectError::Timeout { op, key },
        SdkError::DispatchFailure(d) if d.is_timeout() => return ObjectError::Timeout { op, key },
        SdkError::ConstructionFailure(_) => {
            return ObjectError::Rejected {
                op,
                key,
                detail: format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)),
            }
        }
        // The response (often a 2xx) could not be read: a reset connection, a truncated body.
        SdkError::ResponseError(_) => {
            return ObjectError::Unavailable {
                op,
                key,
                detail: format!("{}", aws_sdk_s3::error::DisplayErrorContext(&e)),
            }
        }
        _ => {}
    }
    let status = status(&e);
    let detail = format!(
        "{} (HTTP {}): {}",
        code.as_deref().unwrap_or("error"),
        status.map_or("-".to_string(), |s| s.to_string()),
        e.message().unwrap_or_default()
    );
    match (status, code.as_deref()) {
        // The caller knows the range and fills it in.
        (Some(416), _) => ObjectError::InvalidRange {
            key,
            start: 0,
            end: 0,
            size: 0,
        },
        // Only a body naming the key counts as absent: a bare 404 may be a missing bucket or a
        // misrouted endpoint, which must not read as a missing table (that is corruption).
        (_, Some("NoSuchKey")) => ObjectError::NotFound(key),
        (Some(408 | 409 | 429), _) | (Some(500..=599), _) | (Some(0..=399), _) | (None, _) => {
            ObjectError::Unavailable { op, key, detail }
        }
        (_, Some("RequestTimeout" | "SlowDown" | "InternalError")) => {
            ObjectError::Unavailable { op, key, detail }
        }
        _ => ObjectError::Rejected { op, key, detail },
    }
}

/// Parses `Content-Range: bytes first-last/size` (both ends inclusive).
fn parse_content_range(content_range: &str) -> Option<(u64, u64, u64)> {
    let rest = content_range.trim().strip_prefix("bytes ")?;
    let (span, size) = rest.split_once('/')?;
    let (first, last) = span.split_once('-')?;
    let (first, last, size): (u64, u64, u64) = (
        first.trim().parse().ok()?,
        last.trim().parse().ok()?,
        size.trim().parse().ok()?,
    );
    (first <= last && last < size).then_some((first, last, size))
}

fn invalid_range(key: &str, range: &Range<u64>, size: u64) -> ObjectError {
    ObjectError::InvalidRange {
        key: key.to_string(),
        start: range.start,
        end: range.end,
        size,
    }
}

fn bad_response(key: &str, content_range: &str, got: usize) -> ObjectError {
    ObjectError::Unavailable {
        op: ObjectOp::GetRange,
        key: key.to_string(),
        detail: format!("response does not match the range asked for: Content-Range {content_range:?}, {got} bytes"),
    }
}

impl ObjectStore for S3Store {
    fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectError> {
        self.put_impl(ObjectOp::Put, key, data).map(|_| ())
    }

    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, ObjectError> {
        self.put_impl(ObjectOp::PutIfAbsent, key, data)
    }

    fn supports_put_if_absent(&self) -> bool {
        true
    }

    fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        Ok(self.get_object(ObjectOp::Get, key, None)?.0)
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        // HTTP cannot ask for zero bytes; an empty range only needs the size check.
        if range.start >= range.end {
            let size = self.size(key)?;
            return if range.start <= size {
                Ok(Bytes::new())
            } else {
                Err(invalid_range(key, &range, size))
            };
        }
        let header = format!("bytes={}-{}", range.start, range.end - 1);
        match self.get_object(ObjectOp::GetRange, key, Some(header)) {
            Ok((body, Some(cr))) => {
                // The engine slices what it gets by offset: a response that is not exactly
                // the bytes asked for (a misbehaving proxy) is a failure, never data.
                let ok = parse_content_range(&cr).is_some_and(|(first, last, size)| {
                    first == range.start
                        && last + 1 == range.end.min(size)
                        && body.len() as u64 == last + 1 - first
                });
                if ok {
                    Ok(body)
                } else {
                    Err(bad_response(key, &cr, body.len()))
                }
            }
            // A server that ignores Range sends the whole object with 200.
            Ok((body, None)) => {
                let len = body.len() as u64;
                if range.start > len {
                    return Err(invalid_range(key, &range, len));
                }
                Ok(body.slice(range.start as usize..range.end.min(len) as usize))
            }
            Err(ObjectError::InvalidRange { .. }) => {
                let size = self.size(key)?;
                if range.start == size {
                    return Ok(Bytes::new());
                }
                Err(invalid_range(key, &range, size))
            }
            Err(e) => Err(e),
        }
    }

    fn get_suffix(&self, key: &str, len: u64) -> Result<(Bytes, u64), ObjectError> {
        if len == 0 {
            return Ok((Bytes::new(), self.size(key)?));
        }
        match self.get_object(ObjectOp::GetRange, key, Some(format!("bytes=-{len}"))) {
            Ok((body, Some(cr))) => match parse_content_range(&cr) {
                Some((first, last, size))
                    if last + 1 == size
                        && body.len() as u64 == last + 1 - first
                        && body.len() as u64 == len.min(size) =>
                {
                    Ok((body, size))
                }
                _ => Err(bad_response(key, &cr, body.len())),
            },
            Ok((body, None)) => {
                let size = body.len() as u64;
                let keep = len.min(size) as usize;
                Ok((body.slice(body.len() - keep..), size))
            }
            // An empty object has no last byte to range over.
            Err(ObjectError::InvalidRange { .. }) => Ok((Bytes::new(), self.size(key)?)),
            // Some servers (s3s-fs 0.14 among them) fail a suffix longer than the object with a
            // 500 instead of returning all of it. Only when the object really is shorter is the
            // whole of it fetched instead; otherwise the failure stands (and is retried).
            Err(e @ ObjectError::Unavailable { .. }) => {
                let size = self.size(key)?;
                if size >= len {
                    return Err(e);
                }
                Ok((self.get_range(key, 0..size)?, size))
            }
            Err(e) => Err(e),
        }
    }

    fn size(&self, key: &str) -> Result<u64, ObjectError> {
        // A one-byte GET rather than HEAD: a HEAD error has no body, so a missing bucket and a
        // missing key would both be a bare 404.
        match self.get_object(ObjectOp::Size, key, Some("bytes=0-0".to_string())) {
            Ok((_, Some(cr))) => parse_content_range(&cr)
                .map(|(_, _, size)| size)
                .ok_or_else(|| bad_response(key, &cr, 1)),
            Ok((body, None)) => Ok(body.len() as u64),
            // No first byte: the object is empty.
            Err(ObjectError::InvalidRange { .. }) => Ok(0),
            Err(e) => Err(e),
        }
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        let mut all = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let (client, bucket, p) =
                (self.client.clone(), self.bucket.clone(), prefix.to_string());
            let t = token.take();
            let (page, next) = self.run(ObjectOp::List, prefix, async move {
                let out = client
                    .list_objects_v2()
                    .bucket(bucket)
                    .prefix(&p)
                    .set_continuation_token(t)
                    .send()
                    .await
                    .map_err(|e| map_err(ObjectOp::List, &p, e))?;
                let page: Vec<ObjectMeta> = out
                    .contents()
                    .iter()
                    .filter_map(|o| {
                        Some(ObjectMeta {
                            key: o.key()?.to_string(),
                            size: o.size().unwrap_or(0).max(0) as u64,
                        })
                    })
                    .collect();
                let next = if out.is_truncated() == Some(true) {
                    out.next_continuation_token().map(str::to_string)
                } else {
                    None
                };
                Ok((page, next))
            })?;
            all.extend(page);
            match next {
                Some(t) => token = Some(t),
                None => break,
            }
        }
        all.sort();
        Ok(all)
    }

    fn delete(&self, key: &str) -> Result<(), ObjectError> {
        validate_key(key)?;
        let (client, bucket, k) = (self.client.clone(), self.bucket.clone(), key.to_string());
        self.run(ObjectOp::Delete, key, async move {
            match client.delete_object().bucket(bucket).key(&k).send().await {
                Ok(_) => Ok(()),
                Err(e) => match map_err(ObjectOp::Delete, &k, e) {
                    ObjectError::NotFound(_) => Ok(()),
                    e => Err(e),
                },
            }
        })
    }
}

impl Drop for S3Store {
    fn drop(&mut self) {
        // A plain drop of a runtime inside another runtime's context panics; a store dropped
        // from an async handler must not take the process down.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_range_parsing() {
        assert_eq!(parse_content_range("bytes 0-9/100"), Some((0, 9, 100)));
        assert_eq!(parse_content_range("bytes 99-99/100"), Some((99, 99, 100)));
        for bad in [
            "bytes */42",
            "garbage",
            "bytes 5-4/10",
            "bytes 0-10/10",
            "bytes 0-x/1",
        ] {
            assert_eq!(parse_content_range(bad), None, "{bad}");
        }
    }

    #[test]
    fn debug_hides_secrets() {
        let c = S3Config::new("b").with_static_credentials("AKID", "very-secret");
        assert!(!format!("{c:?}").contains("very-secret"));
    }

    #[test]
    fn refuses_unworkable_configs() {
        let mut c = S3Config::new("b").with_static_credentials("a", "b");
        c.part_size = 1 << 20;
        assert!(S3Store::new(c).is_err());
        assert!(S3Store::new(S3Config::new("").with_static_credentials("a", "b")).is_err());
    }

    /// A store whose endpoint accepts connections (the kernel's backlog does) but never
    /// answers: every request hangs until its deadline.
    fn silent_endpoint(request_timeout: Duration) -> (std::net::TcpListener, S3Store) {
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = l.local_addr().expect("addr");
        let mut c = S3Config::new("b")
            .with_endpoint(format!("http://{addr}"))
            .with_static_credentials("a", "b")
            .with_region("us-east-1");
        c.request_timeout = request_timeout;
        (l, S3Store::new(c).expect("store"))
    }

    #[test]
    fn a_request_gives_up_at_the_deadline() {
        let (_l, s) = silent_endpoint(Duration::from_secs(30));
        let t = std::time::Instant::now();
        let budget = Duration::from_millis(300);
        let r = crate::object::with_deadline(t + budget, || s.get("k"));
        let took = t.elapsed();
        assert!(matches!(r, Err(ObjectError::Timeout { .. })), "{r:?}");
        assert!(
            took >= budget && took < Duration::from_secs(2),
            "took {took:?}"
        );
    }

    #[test]
    fn nothing_is_sent_once_the_deadline_has_passed() {
        let (l, s) = silent_endpoint(Duration::from_secs(2));
        l.set_nonblocking(true).expect("nonblocking");
        let r = crate::object::with_deadline(std::time::Instant::now(), || {
            s.put("k", Bytes::from_static(b"v"))
        });
        assert!(matches!(r, Err(ObjectError::Timeout { .. })), "{r:?}");
        match l.accept() {
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            other => panic!("the store connected: {other:?}"),
        }
    }
}
