//! The timed phases: `n` clients, each proposing one put at a time through the leader and
//! waiting for its commit before the next, as a synchronous client would. With one client every
//! commit pays a full round (leader append, replication, follower appends, apply); with many,
//! openraft can put several entries into one append and one replication message.

use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use raftlog::store::{Command, Op};
use rand::Rng;
use tokio::task::JoinSet;

use super::args::RaftArgs;
use super::cluster::{Cluster, Writer};
use super::results::{BaselineResult, LeaderLog, PhaseResult};
use crate::measure::{Latencies, Progress};
use crate::workload::{Stream, Workload};

/// What every phase shares.
pub struct Bench<'a> {
    pub args: &'a RaftArgs,
    pub cluster: &'a Cluster,
    pub workload: Arc<Workload>,
    pub baseline: &'a BaselineResult,
    pub progress: bool,
}

impl Bench<'_> {
    /// Phase number `phase` of the run: `--warmup` untimed writes, then `--writes` timed ones,
    /// both spread over `clients` concurrent clients.
    pub async fn phase(&self, phase: u64, clients: u64) -> Result<PhaseResult> {
        let writer = self.cluster.writer(self.cluster.leader().await?);
        self.drive(
            &writer,
            Lanes::new(phase, true),
            clients,
            self.args.warmup,
            None,
        )
        .await
        .with_context(|| format!("warm-up of the {clients}-client phase"))?;

        // Leadership does not move on a healthy group; if it did, the leader's counters from
        // before and after belong to different nodes and are not reported.
        let leader = self.cluster.leader().await?;
        let before = self.cluster.log_stats(leader)?;
        let syncs_before = self.cluster.log_syncs(leader)?;
        let label = format!("{clients} client{}", if clients == 1 { "" } else { "s" });
        let bar = Arc::new(Progress::bar(&label, self.args.writes, self.progress));
        let start = Instant::now();
        let (latencies, redirects) = self
            .drive(
                &writer,
                Lanes::new(phase, false),
                clients,
                self.args.writes,
                Some(bar.clone()),
            )
            .await
            .with_context(|| format!("the {clients}-client phase"))?;
        let seconds = start.elapsed().as_secs_f64();
        bar.finish();
        let leader_log = if self.cluster.leader().await? == leader {
            let after = self.cluster.log_stats(leader)?;
            Some(LeaderLog {
                appends: after.appends - before.appends,
                syncs: self.cluster.log_syncs(leader)? - syncs_before,
                entries: after.entries_appended - before.entries_appended,
                bytes: after.bytes_appended - before.bytes_appended,
            })
        } else {
            None
        };
        PhaseResult::new(
            clients,
            seconds,
            &latencies,
            leader_log,
            redirects,
            self.baseline,
        )
    }

    /// Runs `total` writes on `clients` concurrent tasks (the first ones take the remainder);
    /// returns their merged latencies and redirects. The first client error ends the phase.
    async fn drive(
        &self,
        writer: &Writer,
        lanes: Lanes,
        clients: u64,
        total: u64,
        bar: Option<Arc<Progress>>,
    ) -> Result<(Latencies, u64)> {
        let mut tasks = JoinSet::new();
        for c in 0..clients {
            let ops = total / clients + u64::from(c < total % clients);
            let client = Client {
                writer: writer.clone(),
                workload: self.workload.clone(),
                keys: self.args.keys,
                lane: lanes.lane(c),
                bar: bar.clone(),
            };
            tasks.spawn(client.run(ops));
        }
        let mut all = Latencies::new();
        let mut redirects = 0;
        while let Some(joined) = tasks.join_next().await {
            let (latencies, r) = joined.context("a client task panicked")??;
            all.merge(&latencies);
            redirects += r;
        }
        Ok((all, redirects))
    }
}

/// Random-stream lanes of one phase: every client of every phase, warm-up or timed, draws its
/// own keys.
#[derive(Clone, Copy)]
struct Lanes(u64);

impl Lanes {
    fn new(phase: u64, warmup: bool) -> Self {
        // Lanes are 32 bits wide (see `Workload::rng`); clients are at most 4096 (12 bits).
        Lanes((phase << 16) | (u64::from(warmup) << 15))
    }

    fn lane(self, client: u64) -> u64 {
        self.0 | client
    }
}

struct Client {
    writer: Writer,
    workload: Arc<Workload>,
    keys: u64,
    lane: u64,
    bar: Option<Arc<Progress>>,
}

impl Client {
    /// Writes `ops` random keys one after the other, timing each from proposal to reply.
    async fn run(self, ops: u64) -> Result<(Latencies, u64)> {
        let w = &self.workload;
        let mut rng = w.rng(Stream::RaftKeys, self.lane);
        let mut key = w.key_buf();
        let mut latencies = Latencies::new();
        let mut redirects = 0;
        for _ in 0..ops {
            let i = rng.gen_range(0..self.keys);
            let cmd = Command::Write {
                ops: vec![Op::Put {
                    key: w.key(i, &mut key).to_vec(),
                    value: w.value(i).to_vec(),
                }],
                now_ms: now_ms(),
            };
            let start = Instant::now();
            redirects += self.writer.write(cmd).await?;
            latencies.record(start.elapsed());
            if let Some(bar) = &self.bar {
                bar.advance(1);
            }
        }
        Ok((latencies, redirects))
    }
}

/// The proposer's clock, which every replica uses for the entry's TTLs and expiry checks.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
