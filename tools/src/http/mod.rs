//! `strata-bench http`: load against a running Strata cluster (or an etcd cluster, for the
//! comparison `tools/scripts/etcd-compare.sh` runs) over real HTTP connections.
//!
//! Each phase runs once per `--connections` count: that many tasks, each with its own
//! keep-alive connection to one of the `--target` nodes in turn, send requests back to back for
//! `--seconds` after an untimed warm-up, and every latency goes into one histogram. Puts
//! overwrite random keys of a `--keys` key space; gets read random keys of it (filled first)
//! with linearizable consistency on both systems; creates make links with generated codes;
//! redirects follow codes made earlier, without following the `Location`.
//!
//! The load generator runs on the same machine as the servers and competes with them for the
//! cores: compare systems only within one run (the script does), not across machines.

mod args;
mod client;

use std::io::Write;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use tokio::sync::Barrier;

pub use args::HttpArgs;
use args::Phase;
use client::{Client, Outcome};

use crate::measure::{Latencies, LatencySummary};

/// One phase at one connection count.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseResult {
    pub phase: Phase,
    pub connections: usize,
    /// Requests answered as expected.
    pub ops: u64,
    /// Requests answered otherwise (or not at all).
    pub errors: u64,
    pub seconds: f64,
    pub ops_per_sec: f64,
    /// Of the successful requests, in microseconds.
    pub latency: Option<LatencySummary>,
    /// The first unexpected answer, to tell what went wrong.
    pub first_error: Option<String>,
    /// CPU-seconds the `--cpu-pids` processes spent per request answered, when measured.
    pub cpu_seconds_per_op: Option<f64>,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    args: &'a HttpArgs,
    results: &'a [PhaseResult],
}

/// What one connection's task brings back.
#[derive(Default)]
struct TaskResult {
    latencies: Option<Latencies>,
    errors: u64,
    first_error: Option<String>,
    codes: Vec<String>,
}

fn key(i: u64) -> String {
    format!("bench/{i:08}")
}

/// Runs the benchmark and prints to stdout.
pub fn run(args: &HttpArgs) -> Result<()> {
    args.validate()?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(execute(args))
}

async fn execute(args: &HttpArgs) -> Result<()> {
    let mut out = std::io::stdout();
    writeln!(
        out,
        "strata-bench http: {:?} at {} · {} s per run · {} keys · {} B values",
        args.system,
        args.target.join(","),
        args.seconds,
        args.keys,
        args.value_size
    )?;
    let args = Arc::new(args.clone());
    if args.split_ranges > 1 {
        let began = Instant::now();
        split(&args).await?;
        writeln!(
            out,
            "split the key space into {} ranges in {:.1} s",
            args.split_ranges,
            began.elapsed().as_secs_f64()
        )?;
    }
    let mut codes: Arc<Vec<String>> = Arc::new(Vec::new());
    let mut filled = false;
    let mut results = Vec::new();
    for &phase in &args.phases {
        client::check(args.system, phase)?;
        if phase == Phase::Get && !filled {
            fill(&args).await?;
            filled = true;
        }
        if phase == Phase::Redirect && codes.is_empty() {
            codes = Arc::new(make_links(&args).await?);
        }
        for &conns in &args.connections {
            let (r, new_codes) = run_phase(&args, phase, conns, &codes).await?;
            writeln!(out, "{}", row(&r))?;
            results.push(r);
            if phase == Phase::Create && !new_codes.is_empty() {
                let mut all = (*codes).clone();
                all.extend(new_codes);
                codes = Arc::new(all);
            }
        }
    }
    if let Some(path) = &args.json {
        let report = Report {
            args: &args,
            results: &results,
        };
        std::fs::write(path, serde_json::to_vec_pretty(&report)?)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(out, "results written to {}", path.display())?;
    }
    // Throughput that counts only the answers that came back right is no measurement when
    // others did not: say so with the exit status, so a script comparing runs stops here.
    let failed: Vec<String> = results
        .iter()
        .filter(|r| r.errors > 0)
        .map(|r| {
            format!(
                "{:?} at {} connections: {} failed, first: {}",
                r.phase,
                r.connections,
                r.errors,
                r.first_error.as_deref().unwrap_or("?")
            )
        })
        .collect();
    if !failed.is_empty() {
        anyhow::bail!("requests failed: {}", failed.join("; "));
    }
    Ok(())
}

fn row(r: &PhaseResult) -> String {
    let ms = |f: fn(&LatencySummary) -> f64| r.latency.as_ref().map_or(0.0, |l| f(l) / 1000.0);
    let mut s = format!(
        "{:>9} {:>4} conns {:>10.0} ops/s   p50 {:>8.3}  p99 {:>8.3}  p99.9 {:>8.3} ms   errors {}",
        format!("{:?}", r.phase).to_lowercase(),
        r.connections,
        r.ops_per_sec,
        ms(|l| l.p50_us),
        ms(|l| l.p99_us),
        ms(|l| l.p999_us),
        r.errors
    );
    if let Some(c) = r.cpu_seconds_per_op {
        s.push_str(&format!("   {:.1} CPU-µs/op", c * 1e6));
    }
    if let Some(e) = &r.first_error {
        s.push_str(&format!(" (first: {e})"));
    }
    s
}

/// Splits the key space of puts and gets into `--split-ranges` ranges of equal key counts.
async fn split(args: &Arc<HttpArgs>) -> Result<()> {
    let mut c = Client::new(&args.target[0], args.system, args.token.clone())?;
    for i in 1..args.split_ranges {
        let at = key(i * args.keys / args.split_ranges);
        if let Outcome::Failed(e) = c.split(&at).await? {
            anyhow::bail!("splitting at {at}: {e}");
        }
    }
    Ok(())
}

/// User plus system CPU time of `pids` so far, in seconds (Linux `/proc/PID/stat`).
fn cpu_seconds(pids: &[u32]) -> Result<f64> {
    // USER_HZ, the unit of these fields: 100 on Linux whatever the kernel tick.
    const TICKS: f64 = 100.0;
    let mut total = 0u64;
    for pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .with_context(|| format!("reading /proc/{pid}/stat"))?;
        // Fields after the command name (which may hold spaces) in parentheses.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .context("unexpected /proc stat format")?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the line: indexes 11 and 12 after the name.
        for i in [11, 12] {
            total += fields
                .get(i)
                .and_then(|f| f.parse::<u64>().ok())
                .context("unexpected /proc stat format")?;
        }
    }
    Ok(total as f64 / TICKS)
}

/// Writes every key once (untimed), so gets find them.
async fn fill(args: &Arc<HttpArgs>) -> Result<()> {
    let conns = 32u64;
    let value = Arc::new(vec![b'v'; args.value_size]);
    let mut tasks = Vec::new();
    for t in 0..conns {
        let args = args.clone();
        let value = value.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = Client::new(
                &args.target[t as usize % args.target.len()],
                args.system,
                args.token.clone(),
            )?;
            let mut i = t;
            while i < args.keys {
                if let Outcome::Failed(e) = c.put(&key(i), &value).await? {
                    anyhow::bail!("filling {}: {e}", key(i));
                }
                i += conns;
            }
            Ok(())
        }));
    }
    for t in tasks {
        t.await.context("fill task")??;
    }
    Ok(())
}

/// Creates `--links` links (untimed) for a redirect phase with no create phase before it.
async fn make_links(args: &Arc<HttpArgs>) -> Result<Vec<String>> {
    let mut c = Client::new(&args.target[0], args.system, args.token.clone())?;
    let mut codes = Vec::new();
    for i in 0..args.links {
        match c.create(&format!("https://example.com/bench/{i}")).await? {
            (Outcome::Ok, Some(code)) => codes.push(code),
            (Outcome::Failed(e), _) => anyhow::bail!("creating links: {e}"),
            (Outcome::Ok, None) => anyhow::bail!("creating links: no code in the answer"),
        }
    }
    Ok(codes)
}

async fn run_phase(
    args: &Arc<HttpArgs>,
    phase: Phase,
    conns: usize,
    codes: &Arc<Vec<String>>,
) -> Result<(PhaseResult, Vec<String>)> {
    let start_line = Arc::new(Barrier::new(conns + 1));
    let value = Arc::new(vec![b'v'; args.value_size]);
    let mut tasks = Vec::new();
    for t in 0..conns {
        let args = args.clone();
        let codes = codes.clone();
        let value = value.clone();
        let start_line = start_line.clone();
        tasks.push(tokio::spawn(async move {
            let mut client = Client::new(
                &args.target[t % args.target.len()],
                args.system,
                args.token.clone(),
            )?;
            let mut rng = ChaCha8Rng::seed_from_u64(args.seed ^ (t as u64).wrapping_mul(0x9E37));
            let mut n = 0u64;
            let one = |rng: &mut ChaCha8Rng, n: u64| {
                let k = key(rng.gen_range(0..args.keys));
                let code =
                    (!codes.is_empty()).then(|| codes[rng.gen_range(0..codes.len())].clone());
                let url = format!("https://example.com/bench/{t}/{n}");
                (k, code, url)
            };
            for _ in 0..args.warmup {
                let (k, code, url) = one(&mut rng, n);
                n += 1;
                request(&mut client, phase, &k, &value, code.as_deref(), &url).await?;
            }
            start_line.wait().await;
            let deadline = Instant::now() + Duration::from_secs_f64(args.seconds);
            let mut res = TaskResult {
                latencies: Some(Latencies::new()),
                ..TaskResult::default()
            };
            while Instant::now() < deadline {
                let (k, code, url) = one(&mut rng, n);
                n += 1;
                let began = Instant::now();
                let (outcome, new_code) =
                    request(&mut client, phase, &k, &value, code.as_deref(), &url).await?;
                match outcome {
                    Outcome::Ok => {
                        if let Some(l) = res.latencies.as_mut() {
                            l.record(began.elapsed());
                        }
                        res.codes.extend(new_code);
                    }
                    Outcome::Failed(e) => {
                        res.errors += 1;
                        res.first_error.get_or_insert(e);
                    }
                }
            }
            anyhow::Ok(res)
        }));
    }
    start_line.wait().await;
    let began = Instant::now();
    let cpu_before = if args.cpu_pids.is_empty() {
        None
    } else {
        Some(cpu_seconds(&args.cpu_pids)?)
    };
    let mut all = Latencies::new();
    let mut errors = 0;
    let mut first_error = None;
    let mut new_codes = Vec::new();
    for t in tasks {
        let r = t.await.context("load task")??;
        if let Some(l) = &r.latencies {
            all.merge(l);
        }
        errors += r.errors;
        if first_error.is_none() {
            first_error = r.first_error;
        }
        new_codes.extend(r.codes);
    }
    let seconds = began.elapsed().as_secs_f64();
    let ops = all.count();
    let cpu_seconds_per_op = match cpu_before {
        Some(before) => Some((cpu_seconds(&args.cpu_pids)? - before) / (ops.max(1) as f64)),
        None => None,
    };
    Ok((
        PhaseResult {
            phase,
            connections: conns,
            ops,
            errors,
            seconds,
            ops_per_sec: ops as f64 / seconds.max(1e-9),
            latency: all.summary(),
            first_error,
            cpu_seconds_per_op,
        },
        new_codes,
    ))
}

/// One request of `phase`; a create also returns the new code.
async fn request(
    c: &mut Client,
    phase: Phase,
    key: &str,
    value: &[u8],
    code: Option<&str>,
    url: &str,
) -> Result<(Outcome, Option<String>)> {
    Ok(match phase {
        Phase::Put => (c.put(key, value).await?, None),
        Phase::Get => (c.get(key).await?, None),
        Phase::Create => c.create(url).await?,
        Phase::Ping => (c.ping().await?, None),
        Phase::Redirect => match code {
            Some(code) => (c.redirect(code).await?, None),
            None => (Outcome::Failed("no links to follow".into()), None),
        },
    })
}
