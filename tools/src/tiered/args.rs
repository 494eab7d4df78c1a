//! Options of `strata-bench tiered`.

use std::path::PathBuf;

use anyhow::{bail, ensure, Result};
use clap::{Args, ValueEnum};
use serde::Serialize;

/// Where the cold levels live.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StoreKind {
    /// A directory of files in the run directory (no server, no network).
    Local,
    /// An s3s-fs server started in-process on 127.0.0.1: real HTTP and SigV4, loopback network.
    S3s,
    /// An S3 bucket or S3-compatible server (--s3-bucket, --s3-endpoint, --s3-region);
    /// credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN.
    S3,
}

impl StoreKind {
    pub fn name(self) -> &'static str {
        match self {
            StoreKind::Local => "local",
            StoreKind::S3s => "s3s",
            StoreKind::S3 => "s3",
        }
    }

    /// Whether this store needs the tools crate's `s3` feature.
    pub fn needs_s3_feature(self) -> bool {
        self != StoreKind::Local
    }
}

#[derive(Debug, Clone, Args, Serialize)]
pub struct TieredArgs {
    /// Keys filled and compacted into the cold tier.
    #[arg(long, default_value_t = 1_000_000)]
    pub num: u64,

    /// Key length in bytes; keys are the key index in zero-padded decimal.
    #[arg(long, default_value_t = 16)]
    pub key_size: usize,

    /// Value length in bytes; values compress to about half their size.
    #[arg(long, default_value_t = 100)]
    pub value_size: usize,

    /// Point reads of every tier.
    #[arg(long, default_value_t = 2000)]
    pub reads: u64,

    /// Reader threads; cold reads wait on the store, so several keep it busy.
    #[arg(long, default_value_t = 4)]
    pub threads: u64,

    /// Latency added to every GET (whole or ranged) of the object store, in milliseconds, to
    /// emulate S3 over a network.
    #[arg(long, default_value_t = 0.0)]
    pub get_latency_ms: f64,

    /// Object store of the cold levels (s3s and s3 need the `s3` Cargo feature).
    #[arg(long, value_enum, default_value_t = StoreKind::Local)]
    pub store: StoreKind,

    /// Endpoint of an S3-compatible server, such as http://127.0.0.1:9000 (--store s3; default:
    /// AWS).
    #[arg(long)]
    pub s3_endpoint: Option<String>,

    /// Bucket (--store s3); created if missing. The run writes under a fresh prefix and
    /// deletes its objects at the end.
    #[arg(long)]
    pub s3_bucket: Option<String>,

    /// Region (--store s3; default: AWS_REGION, AWS_DEFAULT_REGION, then us-east-1).
    #[arg(long)]
    pub s3_region: Option<String>,

    /// Memory block cache, in MiB.
    #[arg(long, default_value_t = 64)]
    pub cache_mb: usize,

    /// Local disk cache of cold data blocks, in MiB; 0 turns it off (and skips warm-disk).
    #[arg(long, default_value_t = 256)]
    pub disk_cache_mb: u64,

    /// Also write the results to this file as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,

    /// Also draw the latency percentiles of every tier into this SVG file.
    #[arg(long)]
    pub plot: Option<PathBuf>,

    /// Never draw progress bars (they are also off when stdout is not a terminal).
    #[arg(long)]
    pub no_progress: bool,

    /// Seed of every random stream (fill order, keys read, values).
    #[arg(long, default_value_t = 42)]
    pub seed: u64,

    /// Directory for the database, the local store and the disk cache, kept afterwards; it must
    /// be new or empty. Default: a temporary directory under ./bench-results, removed at exit.
    #[arg(long)]
    pub db_dir: Option<PathBuf>,
}

impl TieredArgs {
    /// Rejects combinations that cannot run, before anything is created.
    pub fn validate(&self) -> Result<()> {
        ensure!(self.num > 0, "--num must be positive");
        ensure!(self.reads > 0, "--reads must be positive");
        ensure!(self.threads > 0, "--threads must be positive");
        ensure!(
            self.get_latency_ms.is_finite() && (0.0..=60_000.0).contains(&self.get_latency_ms),
            "--get-latency-ms must be between 0 and 60000"
        );
        if self.store.needs_s3_feature() && !cfg!(feature = "s3") {
            bail!(
                "--store {} needs the S3 client, which this binary was built without; rebuild \
                 with `cargo run --release -p tools --features s3 -- tiered ...`",
                self.store.name()
            );
        }
        if self.store != StoreKind::S3 {
            let given = [
                ("--s3-endpoint", self.s3_endpoint.is_some()),
                ("--s3-bucket", self.s3_bucket.is_some()),
                ("--s3-region", self.s3_region.is_some()),
            ];
            if let Some((flag, _)) = given.iter().find(|(_, set)| *set) {
                bail!("{flag} only applies to --store s3");
            }
        } else if self.s3_bucket.is_none() {
            bail!("--store s3 needs --s3-bucket");
        }
        if let Some(plot) = &self.plot {
            let svg = plot
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("svg"));
            ensure!(
                svg,
                "--plot {}: only SVG is written; name the file *.svg (convert it to PNG with \
                 rsvg-convert or ImageMagick if needed)",
                plot.display()
            );
        }
        Ok(())
    }

    /// The injected GET latency as a duration.
    pub fn get_latency(&self) -> std::time::Duration {
        std::time::Duration::from_secs_f64(self.get_latency_ms / 1000.0)
    }

    /// A command that repeats this run, every setting spelled out so that changed defaults do
    /// not change what it measures.
    pub fn command_line(&self) -> String {
        let features = if self.store.needs_s3_feature() {
            " --features s3"
        } else {
            ""
        };
        let mut c = format!(
            "cargo run --release -p tools{features} -- tiered --num {} --key-size {} \
             --value-size {} --reads {} --threads {} --get-latency-ms {} --store {} \
             --cache-mb {} --disk-cache-mb {} --seed {}",
            self.num,
            self.key_size,
            self.value_size,
            self.reads,
            self.threads,
            self.get_latency_ms,
            self.store.name(),
            self.cache_mb,
            self.disk_cache_mb,
            self.seed
        );
        let optional = [
            ("--s3-endpoint", self.s3_endpoint.clone()),
            ("--s3-bucket", self.s3_bucket.clone()),
            ("--s3-region", self.s3_region.clone()),
            (
                "--json",
                self.json.as_ref().map(|p| p.display().to_string()),
            ),
            (
                "--plot",
                self.plot.as_ref().map(|p| p.display().to_string()),
            ),
        ];
        for (flag, value) in optional {
            if let Some(v) = value {
                c += &format!(" {flag} {v}");
            }
        }
        c
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: TieredArgs,
    }

    /// Arguments as parsed from `flags`, defaults for the rest.
    pub fn parse(flags: &[&str]) -> TieredArgs {
        let argv = std::iter::once("tiered").chain(flags.iter().copied());
        Wrapper::try_parse_from(argv).expect("valid flags").args
    }

    #[test]
    fn validates_store_flags_and_plot_format() {
        assert!(parse(&[]).validate().is_ok());
        assert!(parse(&["--s3-bucket", "b"]).validate().is_err());
        assert!(parse(&["--store", "s3"]).validate().is_err());
        let s3 = parse(&["--store", "s3", "--s3-bucket", "b"]).validate();
        if cfg!(feature = "s3") {
            assert!(s3.is_ok());
        } else {
            let e = s3.expect_err("no S3 client compiled in").to_string();
            assert!(e.contains("--features s3"), "{e}");
        }
        assert!(parse(&["--plot", "x.png"]).validate().is_err());
        assert!(parse(&["--plot", "x.SVG"]).validate().is_ok());
        assert!(parse(&["--get-latency-ms=-1"]).validate().is_err());
    }

    #[test]
    fn command_line_round_trips() {
        let a = parse(&["--num", "500", "--get-latency-ms", "2.5", "--store", "s3s"]);
        let c = a.command_line();
        assert!(c.starts_with("cargo run --release -p tools --features s3 -- tiered "));
        let flags: Vec<&str> = c.split(" -- tiered ").nth(1).unwrap().split(' ').collect();
        let b = parse(&flags);
        assert_eq!(
            (b.num, b.get_latency_ms, b.store),
            (500, 2.5, StoreKind::S3s)
        );
    }
}
