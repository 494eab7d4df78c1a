//! Runs the requested phases against each engine and turns measurements into results.
//!
//! Fills start from a fresh database. fillrandom's database is kept open for the read phases and
//! compact that follow it. After a fill the engine is settled (memtable flushed, background
//! compactions waited for) outside the timed loop: db_bench would just go on, but under
//! `--compare` one engine's leftover compactions would then run during another engine's phase.
//! The settle time is reported separately.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context, Result};

use crate::cli::{Benchmark, LsmArgs};
use crate::engines::{Engine, EngineConfig, EngineKind};
use crate::measure::{disk_usage, peak_rss_bytes, reset_peak_rss, DiskUsage, Progress};
use crate::phases::{self, FillOrder, Measured};
use crate::report::{self, PhaseResult};
use crate::rundir::RunDir;
use crate::workload::Workload;

/// Entries read after each seek (db_bench's `--seek_nexts`), making a seek a short range scan.
const SEEK_NEXTS: usize = 100;

pub fn run(args: &LsmArgs) -> Result<()> {
    let engines = if args.compare {
        let all = EngineKind::compiled_in();
        if all.len() == 1 {
            eprintln!(
                "note: --compare: only strata is compiled in (build with --features rocksdb,fjall \
                 to compare); running strata alone"
            );
        }
        all
    } else {
        args.engine.ensure_compiled_in()?;
        vec![args.engine]
    };
    let workload = Workload::new(args.num, args.key_size, args.value_size, args.seed)?;
    let root = RunDir::create(args.db_dir.as_deref(), "lsm")?;
    let rss_per_phase = reset_peak_rss();
    // Results go to stdout through `out` so that a closed pipe ends the run with an error
    // instead of a panic.
    let mut out = io::stdout();
    report::print_header(&mut out, args, &engines, root.path(), rss_per_phase)?;

    let mut bench = Bench {
        args,
        workload,
        config: EngineConfig {
            cache_bytes: args.cache_mb << 20,
        },
        progress: Progress::allowed(args.no_progress),
        keep_dbs: root.is_kept(),
        root: root.path().to_path_buf(),
        loaded: engines.iter().map(|_| None).collect(),
    };
    let mut results = Vec::new();
    for (phase, benchmark) in args.benchmarks.iter().enumerate() {
        // Rotating which engine goes first spreads first-mover effects (page cache, CPU
        // frequency) over all engines instead of always favouring one.
        for turn in 0..engines.len() {
            let e = (phase + turn) % engines.len();
            let result = bench.run_phase(engines[e], e, phase, *benchmark)?;
            report::print_phase(&mut out, &result)?;
            results.push(result);
        }
    }
    for db in bench.loaded.iter_mut().filter_map(Option::take) {
        db.db.close()?;
    }

    report::print_summary(&mut out, &results, &engines, &args.benchmarks)?;
    if let Some(path) = &args.json {
        report::write_json(path, args, &engines, rss_per_phase, &results)?;
        writeln!(out, "\nresults written to {}", path.display())?;
    }
    if let Some(kept) = root.finish()? {
        writeln!(out, "databases kept in {}", kept.display())?;
    }
    Ok(())
}

/// fillrandom's database, kept for the phases after it.
struct Loaded {
    db: Box<dyn Engine>,
    dir: PathBuf,
    /// Key and value bytes written into it: the denominator of write amplification.
    user_bytes: u64,
}

struct Bench<'a> {
    args: &'a LsmArgs,
    workload: Workload,
    config: EngineConfig,
    progress: bool,
    root: PathBuf,
    keep_dbs: bool,
    /// Per engine, in the order of the engine list.
    loaded: Vec<Option<Loaded>>,
}

impl Bench<'_> {
    fn run_phase(
        &mut self,
        kind: EngineKind,
        e: usize,
        phase: usize,
        b: Benchmark,
    ) -> Result<PhaseResult> {
        let label = format!("{} {}", b.name(), kind.name());
        if b.needs_loaded_db() && self.loaded[e].is_none() {
            eprintln!(
                "note: {} {}: no fillrandom database yet; loading one first (untimed)",
                b.name(),
                kind.name()
            );
            let dir = self.phase_dir(kind, phase, "preload");
            let (_, loaded) = self.fill_fresh(kind, &dir, FillOrder::Shuffled, &label)?;
            self.loaded[e] = Some(loaded);
        }
        reset_peak_rss();
        let w = &self.workload;
        let bar = |total| Progress::bar(&label, total, self.progress);
        let (measured, after) = match b {
            Benchmark::Fillseq | Benchmark::Fillsync | Benchmark::Fillrandom => {
                let order = match b {
                    Benchmark::Fillseq => FillOrder::Sequential,
                    Benchmark::Fillrandom => FillOrder::Shuffled,
                    _ => FillOrder::RandomSynced {
                        count: self.args.sync_writes(),
                    },
                };
                let dir = self.phase_dir(kind, phase, b.name());
                let (result, loaded) = self.fill_fresh(kind, &dir, order, &label)?;
                if b == Benchmark::Fillrandom {
                    if let Some(old) = self.loaded[e].replace(loaded) {
                        self.discard(old)?;
                    }
                } else {
                    self.discard(loaded)?;
                }
                return Ok(result);
            }
            Benchmark::Readrandom | Benchmark::Readrandom2 | Benchmark::Readmissing => {
                let threads = if b == Benchmark::Readrandom2 { 2 } else { 1 };
                let reads = self.args.point_reads();
                let db = self.loaded_db(e)?;
                let p = bar(reads);
                let m = phases::read_random(db, w, reads, threads, b == Benchmark::Readmissing, &p);
                p.finish();
                (m?, None)
            }
            Benchmark::Seekrandom => {
                let seeks = self.args.seeks();
                let p = bar(seeks);
                let m = phases::seek_random(self.loaded_db(e)?, w, seeks, SEEK_NEXTS, &p);
                p.finish();
                (m?, None)
            }
            Benchmark::Scanforward | Benchmark::Scanreverse => {
                let p = bar(w.num);
                let m = phases::scan(self.loaded_db(e)?, b == Benchmark::Scanreverse, &p);
                p.finish();
                (m?, None)
            }
            Benchmark::Compact => {
                let p = Progress::spinner(&format!("{label}: compacting"), self.progress);
                let m = phases::compact(self.loaded_db(e)?);
                p.finish();
                let m = m?;
                let loaded = self.loaded[e].as_ref().context("no loaded database")?;
                let after = after_write(loaded, &label, self.progress)?;
                (m, Some(after))
            }
        };
        Ok(to_result(b, kind, measured, after))
    }

    /// Fills a new database in `dir` and settles it.
    fn fill_fresh(
        &self,
        kind: EngineKind,
        dir: &Path,
        order: FillOrder,
        label: &str,
    ) -> Result<(PhaseResult, Loaded)> {
        let db = kind.open(dir, &self.config)?;
        let total = match order {
            FillOrder::RandomSynced { count } => count,
            _ => self.workload.num,
        };
        let p = Progress::bar(label, total, self.progress);
        let m = phases::fill(db.as_ref(), &self.workload, order, &p);
        p.finish();
        let m = m?;
        let loaded = Loaded {
            db,
            dir: dir.to_path_buf(),
            user_bytes: m.bytes,
        };
        let after = after_write(&loaded, label, self.progress)?;
        let b = match order {
            FillOrder::Sequential => Benchmark::Fillseq,
            FillOrder::Shuffled => Benchmark::Fillrandom,
            FillOrder::RandomSynced { .. } => Benchmark::Fillsync,
        };
        Ok((to_result(b, kind, m, Some(after)), loaded))
    }

    fn loaded_db(&self, e: usize) -> Result<&dyn Engine> {
        match &self.loaded[e] {
            Some(l) => Ok(l.db.as_ref()),
            None => bail!("internal error: no fillrandom database to read"),
        }
    }

    /// Closes a database that no later phase reads, and frees its disk space unless the user
    /// asked to keep the databases.
    fn discard(&self, loaded: Loaded) -> Result<()> {
        loaded.db.close()?;
        if !self.keep_dbs {
            std::fs::remove_dir_all(&loaded.dir)
                .with_context(|| format!("removing {}", loaded.dir.display()))?;
        }
        Ok(())
    }

    fn phase_dir(&self, kind: EngineKind, phase: usize, name: &str) -> PathBuf {
        self.root
            .join(kind.name())
            .join(format!("{:02}-{name}", phase + 1))
    }
}

/// What is measured once writing has finished: settle time, then size and amplification.
struct AfterWrite {
    settle_seconds: f64,
    disk: DiskUsage,
    write_amplification: Option<f64>,
    engine_stats: String,
}

fn after_write(l: &Loaded, label: &str, progress: bool) -> Result<AfterWrite> {
    let p = Progress::spinner(&format!("{label}: settling"), progress);
    let start = Instant::now();
    let settled = l.db.settle();
    p.finish();
    settled?;
    let written = l.db.bytes_written();
    Ok(AfterWrite {
        settle_seconds: start.elapsed().as_secs_f64(),
        disk: disk_usage(&l.dir)?,
        write_amplification: written
            .filter(|_| l.user_bytes > 0)
            .map(|w| w as f64 / l.user_bytes as f64),
        engine_stats: l.db.stats_text(),
    })
}

fn to_result(
    b: Benchmark,
    kind: EngineKind,
    m: Measured,
    after: Option<AfterWrite>,
) -> PhaseResult {
    let seconds = m.elapsed.as_secs_f64().max(1e-9);
    let (settle_seconds, disk, write_amplification, engine_stats) = match after {
        Some(a) => (
            Some(a.settle_seconds),
            Some(a.disk),
            a.write_amplification,
            Some(a.engine_stats),
        ),
        None => (None, None, None, None),
    };
    PhaseResult {
        benchmark: b,
        engine: kind,
        ops: m.ops,
        seconds,
        ops_per_sec: m.ops as f64 / seconds,
        mb_per_sec: (m.bytes > 0).then(|| m.bytes as f64 / 1e6 / seconds),
        latency: m.latencies.summary(),
        settle_seconds,
        disk,
        peak_rss_bytes: peak_rss_bytes(),
        write_amplification,
        engine_stats,
    }
}
