//! The node: its ranges started from the data directory, and the HTTP API in front of them.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};

use crate::api::error::ApiError;
use crate::api::visits::Visits;
use crate::api::{admin, kv, links};
use crate::cluster::identity::Identity;
use crate::cluster::lease::VoteGuard;
use crate::cluster::range::Range;
use crate::cluster::ranges::Ranges;
use crate::ops::config::ServeArgs;
use crate::ops::guard;
use crate::ops::metrics::Metrics;
use crate::ops::ratelimit::RateLimiter;
use crate::ops::read_pool::ReadPool;
use crate::transport::client::{Peers, MAX_RPC_BODY};
use crate::transport::server as rpc;
use tokio::sync::Semaphore;

/// What every handler sees: one `Arc`, since axum clones the state for every extractor of every
/// request (a struct of a dozen `Arc`s was ~2% of a loaded node's CPU in reference counting).
#[derive(Clone)]
pub struct AppState(Arc<Shared>);

impl std::ops::Deref for AppState {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.0
    }
}

/// The node's parts, behind [`AppState`].
pub struct Shared {
    /// The ranges this node holds replicas of: handlers reach them through
    /// [`crate::cluster::router`].
    pub ranges: Arc<Ranges>,
    token: Option<Arc<str>>,
    cluster_secret: Option<Arc<str>>,
    redirect: StatusCode,
    public_base: Arc<str>,
    /// Redirects counted here and not yet written.
    pub visits: Arc<Visits>,
    link_limiter: Arc<RateLimiter>,
    /// Refuses votes for a while after the start.
    vote_guard: VoteGuard,
    /// The cluster this node belongs to.
    pub identity: Arc<Identity>,
    /// Key and value bytes in one scan page, at most.
    scan_page_bytes: usize,
    /// Where reads that may block run.
    read_pool: ReadPool,
}

/// `a == b`, in time that depends only on their lengths.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Shared {
    /// The status short-link redirects answer with.
    pub fn redirect_status(&self) -> StatusCode {
        self.redirect
    }

    /// The cluster secret node-to-node calls must carry (none: they are all refused).
    pub fn cluster_secret(&self) -> Option<&str> {
        self.cluster_secret.as_deref()
    }

    /// Refuses votes for `election_timeout_max` after the process started (see [`crate::cluster::lease`]).
    pub fn vote_guard(&self) -> &VoteGuard {
        &self.vote_guard
    }

    /// Key and value bytes in one scan page, at most (a page holds at least one item).
    pub fn scan_page_bytes(&self) -> usize {
        self.scan_page_bytes
    }

    /// Where engine reads that may touch disk or the object store run (see [`crate::ops::read_pool`]).
    pub fn read_pool(&self) -> &ReadPool {
        &self.read_pool
    }

    /// Reads `key` from `range`'s state machine on this node: on the async worker when memory
    /// answers (memtables, filters, cached blocks), else on the read pool under the request
    /// deadline. Refused ([`crate::cluster::range::WRONG_RANGE`]) when the range no longer
    /// holds the key, judged after the read: a split applied before it moved the key.
    pub async fn read(
        &self,
        range: &Arc<Range>,
        key: Vec<u8>,
    ) -> Result<Option<raftlog::sm::Versioned>, ApiError> {
        range.get(key, &self.read_pool).await
    }

    /// Reads `key` from this node's replica of the range holding it, as applied so far (a
    /// stale read; see [`read`](Self::read)).
    pub async fn read_stale(
        &self,
        key: Vec<u8>,
    ) -> Result<Option<raftlog::sm::Versioned>, ApiError> {
        crate::cluster::router::on_key(&self.ranges, &key.clone(), |r| {
            let key = key.clone();
            async move { self.read(&r, key).await }
        })
        .await
    }

    /// The per-client limit on link creation.
    pub fn link_limiter(&self) -> &RateLimiter {
        &self.link_limiter
    }

    /// What short URLs start with (no trailing slash).
    pub fn public_base(&self) -> &str {
        &self.public_base
    }

    /// Writes and admin calls need `Authorization: Bearer <token>` when a token is configured.
    pub fn authorize(&self, headers: &HeaderMap) -> Result<(), ApiError> {
        let Some(token) = &self.token else {
            return Ok(());
        };
        let given = headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        // Compared in full whatever the input, so the time taken says nothing of the token.
        let ok = given.is_some_and(|g| same_secret(g.as_bytes(), token.as_bytes()));
        if ok {
            Ok(())
        } else {
            Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            ))
        }
    }
}

/// Alive: the process answers and every Raft group member here still runs. After a fatal
/// Raft error (a log write failed, say) the node serves nothing useful and says so, so that a
/// supervisor restarts it.
async fn health(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    for r in state.ranges.all() {
        if let Some(fatal) = r.fatal() {
            return Err(ApiError::unavailable(format!(
                "raft of range {} has stopped: {fatal}",
                r.id()
            )));
        }
    }
    Ok(Json(serde_json::json!({ "status": "ok" })))
}

/// Whether one range is ready here: it has a leader and this replica applied everything
/// committed (as of a read index confirmed now).
async fn range_ready(r: &Range) -> Result<serde_json::Value, ApiError> {
    if let Some(s) = r.apply_stall() {
        let mut e = ApiError::unavailable(if s.rejected {
            format!(
                "the object store refuses this node (fix its credentials or bucket): {}",
                s.error
            )
        } else {
            format!("applying waits for the object store: {}", s.error)
        });
        e.extra = Some(serde_json::json!({
            "range": r.id(),
            "stalled_entry": s.log_id.index,
            "stalled_seconds": s.since.elapsed().as_secs(),
            "object_store_rejected": s.rejected,
        }));
        return Err(e);
    }
    let m = r.raft_metrics();
    let Some(leader) = m.current_leader else {
        return Err(ApiError::unavailable(format!(
            "range {} has no leader",
            r.id()
        )));
    };
    let commit = tokio::time::timeout(Duration::from_secs(2), r.reads().get())
        .await
        .map_err(|_| {
            ApiError::unavailable(format!(
                "no commit index of range {} from its leader within 2 s",
                r.id()
            ))
        })??;
    let applied = r.last_applied_index();
    if applied < commit {
        let mut e = ApiError::unavailable(format!("range {} is catching up", r.id()));
        e.extra =
            Some(serde_json::json!({ "range": r.id(), "applied": applied, "commit": commit }));
        return Err(e);
    }
    Ok(serde_json::json!({
        "leader": leader,
        "term": m.current_term,
        "applied": applied,
        "commit": commit,
    }))
}

/// Ready when every range of user keys here has a leader and this node has applied
/// everything committed in it: a node still catching up after a restart answers 503. The meta
/// group is not waited for (it serves splits and the registry, not requests). The first
/// range's figures are in the answer.
async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let ranges: Vec<Arc<Range>> = state
        .ranges
        .all()
        .into_iter()
        .filter(|r| r.id() != raftlog::META_RANGE)
        .collect();
    let checks = futures::future::join_all(ranges.iter().map(|r| range_ready(r))).await;
    let mut first = None;
    for (r, c) in ranges.iter().zip(checks) {
        let c = c?;
        if r.id() == raftlog::FIRST_RANGE {
            first = Some(c);
        }
    }
    let mut body = first.unwrap_or_else(|| serde_json::json!({}));
    body["status"] = "ready".into();
    body["ranges"] = ranges.len().into();
    Ok(Json(body))
}

/// Body limits of the routes that read a body (the `PUT /kv` one is `--max-body-bytes`).
const SMALL_BODY: usize = 64 << 10;
/// One link: a URL of at most 2 KiB and a code, as JSON.
const LINK_BODY: usize = 16 << 10;
/// A batch of up to [`crate::api::links::MAX_BATCH`] links.
const LINK_BATCH_BODY: usize = 4 << 20;

/// A method router's routes so far behind the token (checked before the body is read) and a
/// body limit.
fn authed(
    routes: MethodRouter<AppState>,
    state: &AppState,
    body_limit: usize,
) -> MethodRouter<AppState> {
    routes
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard::require_token,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
}

/// A node-to-node route with its body limit.
fn rpc_route(routes: MethodRouter<AppState>, body_limit: usize) -> MethodRouter<AppState> {
    routes.layer(DefaultBodyLimit::max(body_limit))
}

/// The bounds the router applies to each request.
pub struct RouterLimits {
    pub max_body: usize,
    pub max_in_flight: usize,
    pub request_timeout: Duration,
}

fn router(state: AppState, limits: RouterLimits, metrics: Arc<Metrics>) -> Router {
    let s = &state;
    // Probes are not counted against the in-flight bound: an overloaded node is still alive,
    // and a load balancer must hear that from /health rather than a 503.
    let probes = Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready));
    let client = Router::new()
        .route("/kv", get(kv::scan))
        .route(
            "/kv/{*key}",
            authed(put(kv::put).delete(kv::delete), s, limits.max_body).get(kv::get),
        )
        .route("/api/links", authed(post(links::create), s, LINK_BODY))
        .route(
            "/api/links/batch",
            authed(post(links::create_batch), s, LINK_BATCH_BODY),
        )
        .route(
            "/api/links/{code}",
            authed(delete(links::delete), s, SMALL_BODY).get(links::info),
        )
        .route("/{code}", get(links::redirect))
        .route("/admin/status", authed(get(admin::status), s, SMALL_BODY))
        .route("/admin/init", authed(post(admin::init), s, SMALL_BODY))
        .route(
            "/admin/learners",
            authed(post(admin::add_learner), s, SMALL_BODY),
        )
        .route(
            "/admin/membership",
            authed(post(admin::change_membership), s, SMALL_BODY),
        )
        .route("/admin/split", authed(post(admin::split), s, SMALL_BODY))
        .route("/admin/ranges", authed(get(admin::ranges), s, SMALL_BODY))
        .route("/admin/nodes", authed(get(admin::nodes), s, SMALL_BODY))
        .route("/openapi.json", get(crate::api::openapi::handler))
        .route_layer(middleware::from_fn_with_state(
            Arc::new(Semaphore::new(limits.max_in_flight.max(1))),
            guard::bound_in_flight,
        ));
    // Node-to-node calls are not counted against clients' in-flight bound: clients crowding
    // the node must not starve its heartbeats.
    let raft = Router::new()
        .route("/raft/append", rpc_route(post(rpc::append), MAX_RPC_BODY))
        .route("/raft/vote", rpc_route(post(rpc::vote), SMALL_BODY))
        .route(
            "/raft/snapshot",
            rpc_route(post(rpc::snapshot), MAX_RPC_BODY),
        )
        .route("/raft/propose", rpc_route(post(rpc::propose), MAX_RPC_BODY))
        .route(
            "/raft/read-index",
            rpc_route(post(rpc::read_index), SMALL_BODY),
        )
        // At most 4,096 pairs of about 30 bytes, or 4,096 range ids.
        .route(
            "/raft/confirm",
            rpc_route(post(rpc::confirm), 4 * SMALL_BODY),
        )
        .route(
            "/raft/read-indexes",
            rpc_route(post(rpc::read_indexes), 4 * SMALL_BODY),
        )
        .route("/raft/node-id", rpc_route(post(rpc::node_id), SMALL_BODY))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            guard::require_secret,
        ));
    client
        .merge(probes)
        .merge(raft)
        .route_layer(middleware::from_fn_with_state(
            limits.request_timeout,
            guard::deadline,
        ))
        .with_state(state)
        .merge(
            Router::new()
                .route("/metrics", get(crate::ops::metrics::handler))
                .with_state(metrics.clone()),
        )
        .route_layer(middleware::from_fn_with_state(
            metrics,
            crate::ops::metrics::track,
        ))
        .layer(middleware::from_fn(guard::json_errors))
}

/// How long shutdown waits for the last visit flush.
const CHORES_STOP: Duration = Duration::from_secs(5);
/// Rate-limit buckets are swept of idle clients every this many flushes.
const SWEEP_EVERY: u32 = 60;

/// Periodic work: flushes visit counts every [`crate::api::visits::FLUSH_INTERVAL`], sweeps idle
/// rate-limit buckets now and then; on `stop`, flushes one last time and returns.
async fn background(state: AppState, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(crate::api::visits::FLUSH_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks = 0u32;
    loop {
        // Only the wait is cancelled on stop, never a flush half done.
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => break,
        }
        if let Err(e) = state.visits.flush(&state).await {
            tracing::warn!(error = %e.message, "writing visit counts failed; retrying later");
        }
        for r in state.ranges.all() {
            r.sample_rates();
        }
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(SWEEP_EVERY) {
            state.link_limiter().sweep();
        }
    }
    if let Err(e) = state.visits.flush(&state).await {
        tracing::warn!(error = %e.message, "writing the last visit counts failed");
    }
}

/// Keeps this node's record in the meta group's registry fresh: its address, and that it is
/// alive (see [`crate::cluster::meta::NODE_DEAD_AFTER`]).
async fn register(ranges: Arc<Ranges>, id: u64, addr: String, via: Option<String>) {
    let started_ms = crate::api::kv::now_ms();
    let mut tick = tokio::time::interval(crate::cluster::meta::REGISTER_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let record = crate::cluster::meta::NodeRecord {
            id,
            addr: addr.clone(),
            seen_ms: crate::api::kv::now_ms(),
            started_ms,
        };
        if let Err(e) = crate::cluster::meta::register(&ranges, &record, via.as_deref()).await {
            tracing::debug!(error = %e.message, "registering in the meta group");
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutting down: finishing requests in flight");
}

/// Runs the node until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> Result<()> {
    // Before anything: votes are refused counting from here (see `crate::cluster::lease`).
    let started = std::time::Instant::now();
    args.validate()?;
    if args.token.is_none() {
        tracing::warn!(
            "NO TOKEN CONFIGURED: anyone who can reach {} can write; set --token or STRATA_TOKEN",
            args.listen
        );
    }
    // Bound first: with port 0 the advertised address is the one the OS picked.
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listening on {}", args.listen))?;
    let addr = listener.local_addr().context("local address")?;
    let advertise = args.advertise.clone().unwrap_or_else(|| addr.to_string());
    let peers = Peers::new(
        args.cluster_secret.as_deref().unwrap_or(""),
        args.peer_source_ip,
    )?;
    let (ranges, identity, born) =
        crate::cluster::bootstrap::start(&args, &advertise, peers).await?;
    tokio::spawn(born);
    tokio::spawn(crate::cluster::bootstrap::ensure_meta(ranges.clone()));
    tokio::spawn(register(
        ranges.clone(),
        args.node_id,
        advertise.clone(),
        args.join_via().map(str::to_string),
    ));
    if identity.cluster_id().is_none() {
        tokio::spawn(crate::cluster::bootstrap::learn_cluster_id(
            identity.clone(),
        ));
    }
    let public_base = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let state = AppState(Arc::new(Shared {
        ranges: ranges.clone(),
        token: args.token.as_deref().map(Arc::from),
        cluster_secret: args.cluster_secret.as_deref().map(Arc::from),
        redirect: StatusCode::from_u16(args.redirect_status).unwrap_or(StatusCode::FOUND),
        public_base: Arc::from(public_base.trim_end_matches('/')),
        visits: Arc::new(Visits::default()),
        link_limiter: Arc::new(RateLimiter::new(args.link_rate_per_minute)),
        identity,
        vote_guard: VoteGuard::new(started, Duration::from_millis(args.election_timeout_max_ms)),
        scan_page_bytes: usize::try_from(args.scan_page_bytes).unwrap_or(usize::MAX),
        read_pool: ReadPool::new(
            args.read_threads,
            Duration::from_millis(args.request_timeout_ms),
        ),
    }));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let chores = tokio::spawn(background(state.clone(), stopped));
    tracing::info!(%addr, data_dir = %args.data_dir.display(), "strata node ready");
    // On stdout, for scripts and tests that start the node on port 0.
    println!("strata: listening on http://{addr}");
    let metrics = Arc::new(Metrics::new(ranges.clone()));
    let limits = RouterLimits {
        max_body: args.max_body_bytes,
        max_in_flight: usize::try_from(args.max_in_flight).unwrap_or(usize::MAX),
        request_timeout: Duration::from_millis(args.request_timeout_ms),
    };
    let app = router(state, limits, metrics);
    crate::ops::http::serve(
        listener,
        app,
        crate::ops::http::Limits {
            header_timeout: Duration::from_millis(args.header_timeout_ms),
            idle_timeout: Duration::from_millis(args.idle_timeout_ms),
            max_connections: usize::try_from(args.max_connections).unwrap_or(usize::MAX),
            shutdown_timeout: Duration::from_millis(args.shutdown_timeout_ms),
        },
        shutdown_signal(),
    )
    .await;
    // Best effort: write the visits counted since the last flush before Raft stops.
    let _ = stop.send(true);
    if tokio::time::timeout(CHORES_STOP, chores).await.is_err() {
        tracing::warn!("the last visit counts were not written in time");
    }
    // Requests are done; stop Raft (the memtables' writes are in the Raft log).
    ranges.shutdown().await;
    Ok(())
}
