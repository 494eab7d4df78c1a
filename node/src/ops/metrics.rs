//! Prometheus metrics at `GET /metrics` (OpenMetrics text): requests and their latencies per
//! route, counted by a middleware; Raft, log, engine, cache and object-store figures read at
//! scrape time from the replicas, so they cost nothing between scrapes. Figures are per node:
//! summed over its ranges (no label per range: a node may hold thousands), the `raft_*` index
//! gauges of the first range, and `raft_ranges` / `raft_ranges_led`.

use std::sync::Arc;
use std::time::Instant;

use crate::cluster::ranges::Ranges;
use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

type Labels = Vec<(String, String)>;

fn latency_histogram() -> Histogram {
    // 50 µs to ~26 s.
    Histogram::new(exponential_buckets(0.00005, 2.0, 20))
}

/// The node's metrics registry and its request instruments.
pub struct Metrics {
    registry: Registry,
    requests: Family<Labels, Counter>,
    latency: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Metrics {
    /// A registry with the request instruments and a collector over the node's ranges.
    pub fn new(ranges: Arc<Ranges>) -> Metrics {
        let mut registry = Registry::with_prefix("strata");
        let requests = Family::<Labels, Counter>::default();
        let latency =
            Family::<Labels, Histogram, fn() -> Histogram>::new_with_constructor(latency_histogram);
        registry.register(
            "http_requests",
            "HTTP requests answered, by route, method and status",
            requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "Time to answer an HTTP request, by route and method",
            latency.clone(),
        );
        registry.register_collector(Box::new(ReplicaCollector { ranges }));
        Metrics {
            registry,
            requests,
            latency,
        }
    }

    /// The OpenMetrics text of every metric.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)?;
        Ok(out)
    }
}

/// Middleware: counts and times every request that matched a route (the route pattern is the
/// label, so the label set stays small whatever paths clients send).
pub async fn track(State(m): State<Arc<Metrics>>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    // Methods are a client's free text: any other than HTTP's own are one label value, or
    // each invented method would add a series.
    let method = match req.method().as_str() {
        m @ ("GET" | "HEAD" | "POST" | "PUT" | "DELETE" | "PATCH" | "OPTIONS") => m,
        _ => "other",
    }
    .to_string();
    let began = Instant::now();
    let resp = next.run(req).await;
    let labels = vec![("route".to_string(), route), ("method".to_string(), method)];
    m.latency
        .get_or_create(&labels)
        .observe(began.elapsed().as_secs_f64());
    let mut with_status = labels;
    with_status.push(("status".to_string(), resp.status().as_u16().to_string()));
    m.requests.get_or_create(&with_status).inc();
    resp
}

/// `GET /metrics`.
pub async fn handler(State(m): State<Arc<Metrics>>) -> Response {
    match m.render() {
        Ok(body) => (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            body,
        )
            .into_response(),
        Err(_) => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
    }
}

/// Reads Raft's metrics, the log stores' and the engines' statistics at each scrape.
struct ReplicaCollector {
    ranges: Arc<Ranges>,
}

impl std::fmt::Debug for ReplicaCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReplicaCollector")
    }
}

fn gauge(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: i64,
) -> Result<(), std::fmt::Error> {
    let g = ConstGauge::new(v);
    g.encode(e.encode_descriptor(name, help, None, g.metric_type())?)
}

fn counter(
    e: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    let c = ConstCounter::new(v);
    c.encode(e.encode_descriptor(name, help, None, c.metric_type())?)
}

impl Collector for ReplicaCollector {
    fn encode(&self, mut e: DescriptorEncoder<'_>) -> Result<(), std::fmt::Error> {
        let all = self.ranges.all();
        let Some(first) = self.ranges.get(raftlog::FIRST_RANGE) else {
            return Ok(());
        };
        let m = first.raft_metrics();
        let led = all.iter().filter(|r| r.leads()).count();
        gauge(
            &mut e,
            "raft_ranges",
            "Ranges (Raft groups, the meta group included) with a replica on this node",
            all.len() as i64,
        )?;
        gauge(
            &mut e,
            "raft_ranges_led",
            "Ranges whose leader is this node",
            led as i64,
        )?;
        let (shared, openraft) = all
            .iter()
            .map(|r| r.reads().confirmations())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        counter(
            &mut e,
            "read_confirmations_shared",
            "Leadership confirmations of linearizable reads asked of each peer for all ranges at once",
            shared,
        )?;
        counter(
            &mut e,
            "read_confirmations_openraft",
            "Leadership confirmations made by a round of openraft heartbeats (a new leader, or a peer that said no)",
            openraft,
        )?;
        let idx = |l: Option<openraft::LogId<u64>>| l.map_or(-1, |l| l.index as i64);
        gauge(
            &mut e,
            "raft_term",
            "Current Raft term",
            m.current_term as i64,
        )?;
        gauge(
            &mut e,
            "raft_leader",
            "Id of the leader this node knows (-1: none)",
            m.current_leader.map_or(-1, |l| l as i64),
        )?;
        gauge(
            &mut e,
            "raft_is_leader",
            "1 when this node leads the first range",
            i64::from(m.state == openraft::ServerState::Leader),
        )?;
        gauge(
            &mut e,
            "raft_last_log_index",
            "Index of the last entry in this node's log",
            m.last_log_index.map_or(-1, |i| i as i64),
        )?;
        gauge(
            &mut e,
            "raft_applied_index",
            "Index of the last entry applied to the state machine",
            idx(m.last_applied),
        )?;
        gauge(
            &mut e,
            "raft_snapshot_index",
            "Index the last snapshot covers",
            idx(m.snapshot),
        )?;
        gauge(
            &mut e,
            "raft_purged_index",
            "Index up to which the log is purged",
            idx(m.purged),
        )?;
        gauge(
            &mut e,
            "raft_flushed_index",
            "Index up to which every write is in the tables",
            first.flushed_index().map_or(-1, |i| i as i64),
        )?;
        counter(
            &mut e,
            "raft_log_syncs",
            "fdatasync calls of the Raft log's group commit",
            all.iter().map(|r| r.log_syncs()).sum(),
        )?;
        let stall = all
            .iter()
            .filter_map(|r| r.apply_stall())
            .min_by_key(|s| s.since);
        gauge(
            &mut e,
            "apply_stalled_seconds",
            "How long apply has waited for the object store to serve a table (0: not waiting)",
            stall
                .as_ref()
                .map_or(0, |s| s.since.elapsed().as_secs() as i64),
        )?;
        gauge(
            &mut e,
            "object_store_rejected",
            "1 while the object store refuses this node (credentials, bucket): an operator must act",
            i64::from(stall.as_ref().is_some_and(|s| s.rejected)),
        )?;
        counter(
            &mut e,
            "apply_stalled_entries",
            "Entries whose apply had to wait for the object store",
            all.iter().map(|r| r.stalled_entries()).sum(),
        )?;
        let (sealed, mem_bytes) = all
            .iter()
            .map(|r| r.backlog())
            .fold((0, 0), |(a, b), (c, d)| (a + c, b + d));
        gauge(
            &mut e,
            "engine_sealed_memtables",
            "Sealed memtables waiting to be written to the object store",
            sealed as i64,
        )?;
        gauge(
            &mut e,
            "engine_memtable_bytes",
            "Bytes in all memtables",
            mem_bytes as i64,
        )?;
        let stats: Vec<lsm::Stats> = all.iter().map(|r| r.engine_stats()).collect();
        let sum = |f: fn(&lsm::Stats) -> u64| stats.iter().map(f).sum::<u64>();
        let tables: usize = stats
            .iter()
            .map(|s| s.levels.iter().map(|l| l.files).sum::<usize>())
            .sum();
        let table_bytes: u64 = stats
            .iter()
            .map(|s| s.levels.iter().map(|l| l.bytes).sum::<u64>())
            .sum();
        gauge(
            &mut e,
            "engine_tables",
            "Tables in the engine's version",
            tables as i64,
        )?;
        gauge(
            &mut e,
            "engine_table_bytes",
            "Bytes of the engine's tables",
            table_bytes as i64,
        )?;
        let counters: [(&str, &str, u64); 16] = [
            ("engine_writes", "Write batches applied", sum(|s| s.writes)),
            (
                "engine_flushes",
                "Memtables written as tables",
                sum(|s| s.flushes),
            ),
            (
                "engine_compactions",
                "Compactions run",
                sum(|s| s.compactions),
            ),
            (
                "engine_compaction_read_bytes",
                "Bytes read by compactions",
                sum(|s| s.bytes_compacted_read),
            ),
            (
                "engine_compaction_written_bytes",
                "Bytes written by compactions",
                sum(|s| s.bytes_compacted_written),
            ),
            (
                "block_cache_hits",
                "Block cache hits",
                sum(|s| s.block_cache_hits),
            ),
            (
                "block_cache_misses",
                "Block cache misses",
                sum(|s| s.block_cache_misses),
            ),
            (
                "disk_cache_hits",
                "Local disk cache hits",
                sum(|s| s.disk_cache_hits),
            ),
            (
                "disk_cache_misses",
                "Local disk cache misses",
                sum(|s| s.disk_cache_misses),
            ),
            (
                "object_store_gets",
                "Object store GET requests",
                sum(|s| s.cold_gets),
            ),
            (
                "object_store_get_bytes",
                "Bytes read from the object store",
                sum(|s| s.cold_get_bytes),
            ),
            (
                "object_store_puts",
                "Object store PUT requests",
                sum(|s| s.cold_puts),
            ),
            (
                "object_store_put_bytes",
                "Bytes written to the object store",
                sum(|s| s.cold_put_bytes),
            ),
            (
                "object_store_failures",
                "Object store requests that failed",
                sum(|s| s.cold_failures),
            ),
            (
                "object_store_deletes",
                "Objects deleted from the object store",
                sum(|s| s.cold_objects_deleted),
            ),
            (
                "object_store_lookups",
                "Point lookups that needed the object store",
                sum(|s| s.cold_lookups),
            ),
        ];
        for (name, help, v) in counters {
            counter(&mut e, name, help, v)?;
        }
        gauge(
            &mut e,
            "block_cache_usage_bytes",
            "Bytes held by the block cache",
            // One cache shared by every range: each reports its usage.
            stats.first().map_or(0, |s| s.block_cache_usage) as i64,
        )?;
        Ok(())
    }
}
