//! The node: one replica started from the data directory, and the HTTP API in front of it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode};
use axum::middleware;
use axum::routing::{delete, get, post, put, MethodRouter};
use axum::{Json, Router};
use openraft::{BasicNode, Config, SnapshotPolicy};
use raftlog::{MaintainerOptions, Replica};

use crate::api::error::ApiError;
use crate::api::visits::Visits;
use crate::api::{admin, kv, links};
use crate::cluster::batcher::Batcher;
use crate::cluster::identity::{ClusterState, Identity};
use crate::cluster::lease::{Leases, VoteGuard};
use crate::cluster::reads::ReadIndex;
use crate::ops::config::ServeArgs;
use crate::ops::guard;
use crate::ops::metrics::Metrics;
use crate::ops::ratelimit::RateLimiter;
use crate::ops::read_pool::ReadPool;
use crate::transport::client::{Network, Peers, MAX_RPC_BODY};
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
    pub replica: Arc<Replica>,
    token: Option<Arc<str>>,
    cluster_secret: Option<Arc<str>>,
    peers: Peers,
    batcher: Batcher,
    reads: ReadIndex,
    /// Bytes in memtables beyond which writes are refused (see [`Shared::admit_write`]).
    backlog_limit: usize,
    redirect: StatusCode,
    public_base: Arc<str>,
    /// Redirects counted here and not yet written.
    pub visits: Arc<Visits>,
    link_limiter: Arc<RateLimiter>,
    /// Acknowledged heartbeats, for lease reads.
    leases: Arc<Leases>,
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

    /// Client for calls to other nodes (forwarded writes and reads).
    pub fn peers(&self) -> &Peers {
        &self.peers
    }

    /// Group commit of client writes.
    pub fn batcher(&self) -> &Batcher {
        &self.batcher
    }

    /// Shared leadership confirmations of linearizable reads.
    pub fn reads(&self) -> &ReadIndex {
        &self.reads
    }

    /// Refuses a write (503, retry later) while the tables fall behind: sealed memtables wait to
    /// be built and uploaded (say, the object store is slow or down) and the memtables hold more
    /// than the limit. Without this, memory grows with every write until the process dies.
    pub fn admit_write(&self) -> Result<(), ApiError> {
        let (sealed, bytes) = self.replica.sm.backlog();
        if sealed >= MAX_SEALED && bytes >= self.backlog_limit {
            let mut e = ApiError::unavailable(format!(
                "overloaded: {sealed} memtables ({} MiB) wait to be written to the object store; retry later",
                bytes >> 20
            ));
            e.retry_after = Some(1);
            return Err(e);
        }
        Ok(())
    }

    /// Refuses votes for `election_timeout_max` after the process started (see [`crate::cluster::lease`]).
    pub fn vote_guard(&self) -> &VoteGuard {
        &self.vote_guard
    }

    /// Whether this node may serve a read from its state machine right now without asking
    /// anyone: it leads, holds a lease (a quorum acknowledged heartbeats recent enough that no
    /// other leader can have been elected), and has applied the first entry of its term (so
    /// every write committed before its term is in its state machine) and all of the log it
    /// restarted with (see [`raftlog::Replica::read_log_id`]). `Ok` is the index the state
    /// machine must have applied before the read (every commit index sent to a follower);
    /// `Err` says why no lease read may be served.
    pub fn lease_read(&self) -> Result<u64, &'static str> {
        let (me, vote, configs) = {
            let m = self.replica.raft.metrics();
            let m = m.borrow();
            if m.state != openraft::ServerState::Leader || !m.vote.committed {
                return Err("this node does not lead");
            }
            let configs = m.membership_config.membership().get_joint_config().clone();
            (m.id, m.vote, configs)
        };
        match self.leases.expiry(me, &vote, &configs) {
            Some(until) if until > std::time::Instant::now() => {}
            _ => return Err("no quorum acknowledged a recent heartbeat"),
        }
        let applied = self.replica.sm.last_applied();
        let term = applied.map(|l| l.leader_id.term);
        if term != Some(vote.leader_id.term)
            || applied.map_or(0, |l| l.index) < self.replica.start_log_index()
        {
            return Err("the leader has not applied its term's first entry yet");
        }
        Ok(self.leases.commit_sent())
    }

    /// Key and value bytes in one scan page, at most (a page holds at least one item).
    pub fn scan_page_bytes(&self) -> usize {
        self.scan_page_bytes
    }

    /// Where engine reads that may touch disk or the object store run (see [`crate::ops::read_pool`]).
    pub fn read_pool(&self) -> &ReadPool {
        &self.read_pool
    }

    /// Reads `key` from this node's state machine: on the async worker when memory answers
    /// (memtables, filters, cached blocks), else on the read pool under the request deadline.
    pub async fn read(&self, key: Vec<u8>) -> Result<Option<raftlog::sm::Versioned>, ApiError> {
        let failed = |e: raftlog::Error| ApiError::unavailable(format!("read failed: {e}"));
        if let Some(r) = self.replica.sm.get_without_io(&key) {
            return r.map_err(failed);
        }
        let replica = self.replica.clone();
        self.read_pool
            .run(move || replica.sm.get(&key).map_err(failed))
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

fn raft_config(args: &ServeArgs) -> Result<Arc<Config>> {
    let c = Config {
        cluster_name: "strata".into(),
        heartbeat_interval: args.heartbeat_ms,
        election_timeout_min: args.election_timeout_min_ms,
        election_timeout_max: args.election_timeout_max_ms,
        // The maintainer asks for a snapshot whenever the flushed point moves.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: args.raft_keep_entries,
        ..Config::default()
    };
    Ok(Arc::new(c.validate().context("raft configuration")?))
}

/// Sealed memtables waiting for upload before the leader stops sealing (and writes are refused
/// once the memtables also exceed their budget).
const MAX_SEALED: usize = 4;

/// How the node joins its group on first start.
enum Bootstrap {
    /// Form a group of these voters (this node has the smallest id among them).
    Form(BTreeMap<u64, BasicNode>),
    /// Another node forms it, or an admin adds this one.
    Wait,
}

fn bootstrap(args: &ServeArgs, advertise: &str) -> Result<Bootstrap> {
    if args.join || args.initial_cluster_state == ClusterState::Existing {
        return Ok(Bootstrap::Wait);
    }
    if args.peers.is_empty() {
        return Ok(Bootstrap::Form(BTreeMap::from([(
            args.node_id,
            BasicNode::new(advertise),
        )])));
    }
    let members: BTreeMap<u64, BasicNode> = args
        .peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
        .collect();
    anyhow::ensure!(
        members.len() == args.peers.len(),
        "--peers names a node id twice"
    );
    anyhow::ensure!(
        members.contains_key(&args.node_id),
        "--peers does not name this node (--node-id {}); a node joining later starts with --join",
        args.node_id
    );
    let first = members.keys().next().copied();
    Ok(if first == Some(args.node_id) {
        Bootstrap::Form(members)
    } else {
        Bootstrap::Wait
    })
}

/// The group's shared object store: an S3 bucket, or a local directory.
fn object_store(args: &ServeArgs) -> Result<Arc<dyn lsm::object::ObjectStore>> {
    if let Some(bucket) = &args.s3_bucket {
        let mut cfg = lsm::object::S3Config::new(bucket.clone());
        if let Some(e) = &args.s3_endpoint {
            cfg = cfg.with_endpoint(e.clone());
        }
        if let Some(r) = &args.s3_region {
            cfg = cfg.with_region(r.clone());
        }
        if let (Some(id), Some(secret)) = (&args.s3_access_key_id, &args.s3_secret_access_key) {
            cfg = cfg.with_static_credentials(id.clone(), secret.clone());
        }
        let store = lsm::object::S3Store::new(cfg)
            .with_context(|| format!("configuring S3 bucket {bucket}"))?;
        if args.s3_create_bucket {
            store
                .create_bucket_if_missing()
                .with_context(|| format!("creating S3 bucket {bucket}"))?;
        }
        return Ok(Arc::new(store));
    }
    let dir = args
        .object_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("objects"));
    let store = lsm::object::LocalDirStore::open(&dir)
        .with_context(|| format!("opening the object store in {}", dir.display()))?;
    Ok(Arc::new(store))
}

/// Starts the node's replica; a node that forms its group on first start does so here.
async fn start_replica(
    args: &ServeArgs,
    advertise: &str,
    peers: Peers,
    leases: Arc<Leases>,
) -> Result<(Replica, Arc<Identity>)> {
    let plan = bootstrap(args, advertise)?;
    let multi = args.join || !args.peers.is_empty();
    anyhow::ensure!(
        !multi || args.cluster_secret.is_some(),
        "--peers and --join need --cluster-secret (STRATA_CLUSTER_SECRET): nodes authenticate each other with it"
    );
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let store = object_store(args)?;
    let identity = {
        let (dir, store, prefix) = (
            args.data_dir.clone(),
            store.clone(),
            args.object_prefix.clone(),
        );
        let (id, forming) = (args.node_id, matches!(plan, Bootstrap::Form(_)));
        // The object store's calls block (S3's client runs its own runtime).
        tokio::task::spawn_blocking(move || Identity::establish(&dir, store, &prefix, id, forming))
            .await
            .context("checking the cluster identity")??
    };
    let identity = Arc::new(identity);
    let memtable = args.memtable_mb << 20;
    let engine = lsm::Options {
        write_buffer_size: memtable,
        block_cache_bytes: args.block_cache_mb << 20,
        cold_tier: Some(lsm::ColdTier::new(store, args.object_prefix.clone())),
        ..lsm::Options::default()
    };
    let maintainer = MaintainerOptions {
        seal_bytes: memtable,
        max_sealed: MAX_SEALED,
        ..MaintainerOptions::default()
    };
    let id = args.node_id;
    let replica = Replica::start(
        id,
        &args.data_dir,
        engine,
        raft_config(args)?,
        Network::new(peers, leases),
        maintainer,
    )
    .await
    .context("starting the replica")?;
    if identity.rejoining() {
        // Neither campaign nor vote (votes are refused in `rpc::vote`) until re-added.
        replica.raft.runtime_config().elect(false);
    }
    if let Bootstrap::Form(members) = plan {
        let named = identity.clone();
        let cluster = tokio::task::spawn_blocking(move || named.create())
            .await
            .context("naming the cluster")??;
        // An initialized node refuses, which is fine: the group exists.
        match replica.raft.initialize(members).await {
            Ok(()) => tracing::info!(cluster = %cluster, "formed a new group"),
            Err(e) => tracing::debug!(error = %e, "not initializing: the group exists"),
        }
    }
    if !multi {
        replica
            .raft
            .wait(Some(Duration::from_secs(30)))
            .current_leader(id, "this node leads its group")
            .await
            .context("waiting for the node to lead its group")?;
    }
    Ok((replica, identity))
}

/// Until the cluster id is known (another node forms the group), looks for it in the object
/// store now and then and records it in the data directory.
async fn learn_cluster_id(identity: Arc<Identity>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let id = identity.clone();
        match tokio::task::spawn_blocking(move || id.learn()).await {
            Ok(Ok(true)) => return,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "reading the cluster id"),
            Err(_) => return,
        }
    }
}

/// A rejoining node (see [`crate::cluster::identity`]) waits to find itself a learner of the group: from
/// then on its log and vote are its own, and it may vote and campaign once promoted.
async fn end_rejoin(replica: Arc<Replica>, identity: Arc<Identity>) {
    let mut rx = replica.raft.metrics();
    loop {
        let learner = {
            let m = rx.borrow_and_update();
            let mem = m.membership_config.membership();
            mem.get_node(&m.id).is_some() && !mem.voter_ids().any(|v| v == m.id)
        };
        if learner {
            let id = identity.clone();
            match tokio::task::spawn_blocking(move || id.rejoined()).await {
                Ok(Ok(())) => {
                    replica.raft.runtime_config().elect(true);
                    tracing::info!("rejoined as a learner: this node votes again once promoted");
                    return;
                }
                Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "ending the rejoin"),
                Err(_) => return,
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Alive: the process answers and its Raft group member still runs. After a fatal Raft error
/// (a log write failed, say) the node serves nothing useful and says so, so that a supervisor
/// restarts it.
async fn health(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    let m = state.replica.raft.metrics();
    let running = m.borrow().running_state.clone();
    running.map_err(|fatal| ApiError::unavailable(format!("raft has stopped: {fatal}")))?;
    Ok(Json(serde_json::json!({ "status": "ok" })))
}

/// Ready when the group has a leader and this node has applied everything committed (as of a
/// read index confirmed now): a node still catching up after a restart answers 503.
async fn ready(State(state): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    if let Some(s) = state.replica.sm.apply_stall() {
        let mut e = ApiError::unavailable(if s.rejected {
            format!(
                "the object store refuses this node (fix its credentials or bucket): {}",
                s.error
            )
        } else {
            format!("applying waits for the object store: {}", s.error)
        });
        e.extra = Some(serde_json::json!({
            "stalled_entry": s.log_id.index,
            "stalled_seconds": s.since.elapsed().as_secs(),
            "object_store_rejected": s.rejected,
        }));
        return Err(e);
    }
    let m = state.replica.raft.metrics().borrow().clone();
    let Some(leader) = m.current_leader else {
        return Err(ApiError::unavailable("no leader"));
    };
    let commit = tokio::time::timeout(Duration::from_secs(2), state.reads().get())
        .await
        .map_err(|_| ApiError::unavailable("no commit index from the leader within 2 s"))??;
    let applied = state
        .replica
        .raft
        .metrics()
        .borrow()
        .last_applied
        .map(|l| l.index);
    if applied < commit {
        let mut e = ApiError::unavailable("catching up with the group");
        e.extra = Some(serde_json::json!({ "applied": applied, "commit": commit }));
        return Err(e);
    }
    Ok(Json(serde_json::json!({
        "status": "ready",
        "leader": leader,
        "term": m.current_term,
        "applied": applied,
        "commit": commit,
    })))
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
        ticks = ticks.wrapping_add(1);
        if ticks.is_multiple_of(SWEEP_EVERY) {
            state.link_limiter().sweep();
        }
    }
    if let Err(e) = state.visits.flush(&state).await {
        tracing::warn!(error = %e.message, "writing the last visit counts failed");
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
    let leases = Arc::new(Leases::new(args.lease_duration()));
    let (replica, identity) =
        start_replica(&args, &advertise, peers.clone(), leases.clone()).await?;
    let replica = Arc::new(replica);
    if identity.cluster_id().is_none() {
        tokio::spawn(learn_cluster_id(identity.clone()));
    }
    if identity.rejoining() {
        tokio::spawn(end_rejoin(replica.clone(), identity.clone()));
    }
    let public_base = args
        .public_url
        .clone()
        .unwrap_or_else(|| format!("http://{addr}"));
    let state = AppState(Arc::new(Shared {
        replica: replica.clone(),
        token: args.token.as_deref().map(Arc::from),
        cluster_secret: args.cluster_secret.as_deref().map(Arc::from),
        batcher: Batcher::spawn(replica.raft.clone(), peers.clone()),
        reads: ReadIndex::spawn(replica.clone(), peers.clone()),
        backlog_limit: (args.memtable_mb << 20) * (MAX_SEALED + 2),
        peers,
        redirect: StatusCode::from_u16(args.redirect_status).unwrap_or(StatusCode::FOUND),
        public_base: Arc::from(public_base.trim_end_matches('/')),
        visits: Arc::new(Visits::default()),
        link_limiter: Arc::new(RateLimiter::new(args.link_rate_per_minute)),
        leases,
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
    let metrics = Arc::new(Metrics::new(replica.clone()));
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
    let _ = replica.raft.shutdown().await;
    Ok(())
}
