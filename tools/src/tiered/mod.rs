//! `strata-bench tiered`: point reads served by each tier of a database whose levels from L1
//! down live in an object store.
//!
//! The run fills `--num` keys and compacts them all into the cold tier, then reopens the
//! database with the disk cache deleted, so that no cache holds anything, and reads:
//!
//! 1. **absent**: keys never written; the locally kept filters should answer without a GET.
//!    Run first, while every cache is empty, so that a false positive is always a GET.
//! 2. **cold**: present keys; each should cost at most one ranged GET.
//! 3. **warm-memory**: the same keys again, from the memory block cache.
//! 4. **warm-disk**: after another reopen (memory cache empty), the same keys from the disk
//!    cache; skipped without one.
//! 5. **hot**: fresh keys written into the memtable and read back.

mod args;
mod bench;
mod plot;
mod report;
mod results;
mod store;
mod targets;

use std::io::{self, Write};

use anyhow::{Context, Result};
use lsm::Db;

pub use args::TieredArgs;
use bench::Bench;
use report::TieredReport;
use results::{FillResult, Tier, TierResult};
use store::Backend;

use crate::measure::{human_rate, Progress};
use crate::rundir::RunDir;
use crate::workload::Workload;

/// Runs the benchmark and prints to stdout.
pub fn run(args: &TieredArgs) -> Result<()> {
    // Results go to stdout through `out` so that a closed pipe ends the run with an error
    // instead of a panic.
    let mut out = io::stdout();
    execute(args, Progress::allowed(args.no_progress), &mut out).map(|_| ())
}

/// The whole run, printing to `out`; returns what the JSON file holds.
fn execute(args: &TieredArgs, progress: bool, out: &mut dyn Write) -> Result<TieredReport> {
    args.validate()?;
    // Sized for the hot keys too, which follow the filled ones.
    let workload = Workload::new(
        args.num + args.reads,
        args.key_size,
        args.value_size,
        args.seed,
    )?;
    let run_dir = RunDir::create(args.db_dir.as_deref(), "tiered")?;
    let backend = Backend::open(args, run_dir.path())?;
    report::print_header(out, args, &backend.description, run_dir.path())?;
    let bench = Bench {
        args,
        workload,
        db_dir: run_dir.path().join("db"),
        disk_cache_dir: run_dir.path().join("disk-cache"),
        backend,
        progress,
    };

    let measured = measure(&bench, out);
    // A bucket outlives the run: its objects go even when the run failed.
    let deleted = bench.backend.clean_up();
    let (fill, tiers) = measured?;
    let deleted = deleted?;
    drop(bench);

    let report = conclude(args, &fill, tiers, out)?;
    if let Some(path) = &args.json {
        report::write_json(path, &report)?;
        writeln!(out, "results written to {}", path.display())?;
    }
    if let Some(path) = &args.plot {
        let svg = plot::svg(&latency_plot(args, &report.tiers));
        std::fs::write(path, svg)
            .with_context(|| format!("writing the plot to {}", path.display()))?;
        writeln!(out, "latency plot written to {}", path.display())?;
    }
    if deleted > 0 {
        writeln!(out, "deleted the run's {deleted} objects from the bucket")?;
    }
    if let Some(kept) = run_dir.finish()? {
        writeln!(out, "database, store and caches kept in {}", kept.display())?;
    }
    Ok(report)
}

/// Fill, then every tier's reads; the results in the order they ran.
fn measure(bench: &Bench, out: &mut dyn Write) -> Result<(FillResult, Vec<TierResult>)> {
    let db = bench.open()?;
    let fill = bench.fill(&db)?;
    report::print_fill(out, &fill)?;
    if fill.files_per_level.first().is_some_and(|&l0| l0 > 0) {
        writeln!(
            out,
            "note: {} tables are still in L0 (local disk); their keys are not cold",
            fill.files_per_level[0]
        )?;
    }
    db.close().context("closing the database after the fill")?;
    remove_dir_if_present(&bench.disk_cache_dir)?;

    let mut tiers = Vec::new();
    let mut read = |db: &Db, tier: Tier, out: &mut dyn Write| -> Result<()> {
        let r = bench.read(db, tier)?;
        report::print_tier(out, &r)?;
        tiers.push(r);
        Ok(())
    };
    writeln!(out)?;
    let mut db = bench.open()?;
    let opening_gets = db.stats().cold_gets;
    if opening_gets > 0 {
        writeln!(out, "note: opening the database made {opening_gets} GETs")?;
    }
    read(&db, Tier::Absent, out)?;
    read(&db, Tier::Cold, out)?;
    read(&db, Tier::WarmMemory, out)?;
    if bench.args.disk_cache_mb > 0 {
        db.close()
            .context("closing the database before warm-disk")?;
        db = bench.open()?;
        read(&db, Tier::WarmDisk, out)?;
    }
    bench.write_hot(&db)?;
    read(&db, Tier::Hot, out)?;
    db.close().context("closing the database")?;
    Ok((fill, tiers))
}

/// Orders the tiers for the table, judges the targets and prints the closing part.
fn conclude(
    args: &TieredArgs,
    fill: &FillResult,
    mut tiers: Vec<TierResult>,
    out: &mut dyn Write,
) -> Result<TieredReport> {
    let order = [
        Tier::Hot,
        Tier::WarmMemory,
        Tier::WarmDisk,
        Tier::Cold,
        Tier::Absent,
    ];
    tiers.sort_by_key(|r| order.iter().position(|t| *t == r.tier));
    let find = |tier: Tier| tiers.iter().find(|r| r.tier == tier);
    let need = |tier: Tier| find(tier).with_context(|| format!("no {} result", tier.name()));
    let (cold, absent, warm) = (
        need(Tier::Cold)?,
        need(Tier::Absent)?,
        need(Tier::WarmMemory)?,
    );
    let verdicts = targets::evaluate(&targets::Measurements {
        injected_ms: args.get_latency_ms,
        cold_gets_per_read: cold.gets_per_read,
        absent_gets_per_read: absent.gets_per_read,
        cold_p50_ms: cold.latency.p50_us / 1000.0,
        cold_p99_ms: cold.latency.p99_us / 1000.0,
        warm_memory_p99_ms: warm.latency.p99_us / 1000.0,
        warm_disk_p99_ms: find(Tier::WarmDisk).map(|r| r.latency.p99_us / 1000.0),
    });

    report::print_table(out, &tiers)?;
    report::print_targets(out, &verdicts)?;
    let command = args.command_line();
    writeln!(out)?;
    writeln!(out, "reproduce with:\n  {command}")?;
    Ok(TieredReport {
        tool: concat!("strata-bench ", env!("CARGO_PKG_VERSION"), " tiered"),
        args: args.clone(),
        command,
        store: store_summary(args),
        fill: fill.clone(),
        all_targets_met: verdicts.iter().all(|v| v.met),
        targets: verdicts,
        tiers,
        reference: targets::REFERENCE,
    })
}

/// The store in a few words, without the run's paths.
fn store_summary(args: &TieredArgs) -> String {
    let latency = if args.get_latency_ms > 0.0 {
        format!(", +{} ms per GET", args.get_latency_ms)
    } else {
        String::new()
    };
    format!("{}{latency}", args.store.name())
}

fn latency_plot(args: &TieredArgs, tiers: &[TierResult]) -> plot::Plot {
    let mut marks = Vec::new();
    if args.get_latency_ms > 0.0 {
        marks.push(plot::Mark {
            label: format!("injected GET latency {} ms", args.get_latency_ms),
            ms: args.get_latency_ms,
        });
    }
    marks.push(plot::Mark {
        label: "SlateDB S3 cold p50 25.5 ms".into(),
        ms: 25.5,
    });
    marks.push(plot::Mark {
        label: "SlateDB S3 cold p99 66 ms".into(),
        ms: 66.0,
    });
    plot::Plot {
        title: format!(
            "Strata point reads by tier: {} keys, store {}",
            human_rate(args.num as f64),
            store_summary(args)
        ),
        series: tiers
            .iter()
            .map(|r| plot::Series {
                name: r.tier.name().to_string(),
                points: r.percentiles.clone(),
            })
            .collect(),
        marks,
    }
}

fn remove_dir_if_present(dir: &std::path::Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => {
            Err(e).with_context(|| format!("removing {}", dir.display()))
        }
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The whole flow on a tiny database; `flags` pick the store.
    fn tiny_run(flags: &[&str]) -> (TieredReport, String, String) {
        let dir = tempfile::tempdir().expect("tempdir");
        let base = ["--num", "20000", "--reads", "200", "--no-progress"];
        let mut args = args::tests::parse(&[&base[..], flags].concat());
        args.db_dir = Some(dir.path().join("run"));
        args.json = Some(dir.path().join("results.json"));
        args.plot = Some(dir.path().join("latency.svg"));
        let mut out = Vec::new();
        let report = execute(&args, false, &mut out).expect("tiered run");
        let json = std::fs::read_to_string(dir.path().join("results.json")).expect("json");
        let svg = std::fs::read_to_string(dir.path().join("latency.svg")).expect("svg");
        let text = String::from_utf8(out).expect("utf-8 output");
        eprintln!("{text}");
        (report, json, svg + "\n" + &text)
    }

    fn tier(r: &TieredReport, t: Tier) -> &TierResult {
        r.tiers.iter().find(|x| x.tier == t).expect("tier result")
    }

    fn check(report: &TieredReport, json: &str) {
        let cold = tier(report, Tier::Cold);
        assert!(cold.gets > 0, "cold reads made no GET: {cold:?}");
        assert!(cold.gets_per_read <= 1.0, "{cold:?}");
        assert_eq!(tier(report, Tier::WarmDisk).gets, 0);
        assert_eq!(tier(report, Tier::WarmMemory).gets, 0);
        assert_eq!(tier(report, Tier::Hot).gets, 0);
        assert_eq!(tier(report, Tier::Hot).cold_lookups, 0);
        assert_eq!(cold.cold_lookups, cold.reads);
        assert_eq!(
            tier(report, Tier::WarmDisk).disk_cache_hit_rate,
            Some(1.0),
            "warm-disk reads missed the disk cache"
        );
        assert!(report.fill.objects > 0 && report.fill.puts > 0);
        let v: serde_json::Value = serde_json::from_str(json).expect("valid JSON");
        assert_eq!(v["tiers"].as_array().map(Vec::len), Some(5));
        assert_eq!(v["args"]["reads"], 200);
        assert!(v["targets"].as_array().is_some_and(|t| t.len() == 6));
    }

    #[test]
    fn tiny_run_on_the_local_store() {
        let start = std::time::Instant::now();
        let (report, json, rest) = tiny_run(&["--get-latency-ms", "1"]);
        check(&report, &json);
        // The injected millisecond shows in cold reads and nowhere else.
        assert!(tier(&report, Tier::Cold).latency.p50_us >= 1000.0);
        assert!(rest.starts_with("<svg"));
        assert_eq!(rest.matches("<polyline").count(), 5);
        assert!(rest.contains("targets") && rest.contains("reproduce with:"));
        eprintln!("tiny tiered run took {:?}", start.elapsed());
    }

    #[cfg(feature = "s3")]
    #[test]
    fn tiny_run_on_an_in_process_s3s_server() {
        let (report, json, _) = tiny_run(&["--store", "s3s"]);
        check(&report, &json);
    }
}
