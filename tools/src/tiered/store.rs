//! The object store the cold levels go to: a local directory, an in-process s3s server or a
//! real S3 endpoint, optionally behind injected GET latency.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use lsm::object::{FaultConfig, FaultyStore, LocalDirStore, ObjectOp, ObjectStore};

use super::args::{StoreKind, TieredArgs};

/// The store of one run and what is needed to describe and clean it up.
pub struct Backend {
    /// What the engine talks to: the store, behind the injected latency if any.
    pub store: Arc<dyn ObjectStore>,
    /// The store itself, for listing and cleanup without paying the injected latency.
    pub raw: Arc<dyn ObjectStore>,
    /// Object key prefix of the database.
    pub prefix: String,
    /// One line for the report.
    pub description: String,
    /// Delete the run's objects at the end: a bucket outlives the run, unlike the directories.
    delete_at_end: bool,
    /// Keeps the in-process server up while the store is used; dropped after it.
    #[cfg(feature = "s3")]
    _server: Option<testkit::S3Server>,
}

impl Backend {
    /// Sets up the store of `args` (local directories go under `run_dir`).
    pub fn open(args: &TieredArgs, run_dir: &Path) -> Result<Backend> {
        let mut backend = match args.store {
            StoreKind::Local => {
                let dir = run_dir.join("objects");
                let store = LocalDirStore::open(&dir)
                    .with_context(|| format!("opening the object directory {}", dir.display()))?;
                Backend::new(
                    Arc::new(store),
                    "tiered",
                    format!("local directory {}", dir.display()),
                )
            }
            StoreKind::S3s | StoreKind::S3 => open_s3(args, run_dir)?,
        };
        if args.get_latency_ms > 0.0 {
            let faulty = FaultyStore::new(backend.raw.clone(), args.seed);
            let slow = FaultConfig {
                latency: args.get_latency(),
                ..FaultConfig::default()
            };
            // Only reads are slowed: the cold phases measure GETs, and slower uploads would
            // only stretch the fill. A suffix GET counts as a ranged GET and is slowed too.
            faulty.set(ObjectOp::Get, slow);
            faulty.set(ObjectOp::GetRange, slow);
            backend.store = Arc::new(faulty);
            backend.description += &format!(", +{} ms per GET", args.get_latency_ms);
        }
        Ok(backend)
    }

    fn new(store: Arc<dyn ObjectStore>, prefix: &str, description: String) -> Backend {
        Backend {
            store: store.clone(),
            raw: store,
            prefix: prefix.to_string(),
            description,
            delete_at_end: false,
            #[cfg(feature = "s3")]
            _server: None,
        }
    }

    /// Objects under the database's prefix and their total size.
    pub fn objects(&self) -> Result<(u64, u64)> {
        let listed = self
            .raw
            .list(&format!("{}/", self.prefix))
            .context("listing the object store")?;
        Ok((listed.len() as u64, listed.iter().map(|o| o.size).sum()))
    }

    /// Deletes the run's objects from a bucket that outlives the run; returns how many.
    pub fn clean_up(&self) -> Result<u64> {
        if !self.delete_at_end {
            return Ok(0);
        }
        let listed = self
            .raw
            .list(&format!("{}/", self.prefix))
            .context("listing the run's objects for deletion")?;
        for o in &listed {
            self.raw
                .delete(&o.key)
                .with_context(|| format!("deleting {}", o.key))?;
        }
        Ok(listed.len() as u64)
    }
}

#[cfg(feature = "s3")]
fn open_s3(args: &TieredArgs, run_dir: &Path) -> Result<Backend> {
    use lsm::object::{S3Config, S3Store};

    if args.store == StoreKind::S3s {
        let root = run_dir.join("s3s");
        std::fs::create_dir_all(&root)
            .with_context(|| format!("creating the s3s-fs root {}", root.display()))?;
        let server = testkit::S3Server::serve(&root, ([127, 0, 0, 1], 0).into())
            .with_context(|| format!("serving {} with s3s-fs on loopback", root.display()))?;
        let store = server
            .store("strata-bench")
            .with_context(|| format!("creating the bucket on {}", server.endpoint()))?;
        let mut b = Backend::new(
            Arc::new(store),
            "tiered",
            format!("s3s-fs at {} (HTTP on loopback)", server.endpoint()),
        );
        b._server = Some(server);
        return Ok(b);
    }

    let bucket = args
        .s3_bucket
        .clone()
        .context("--store s3 needs --s3-bucket")?;
    let mut cfg = S3Config::new(&bucket);
    if let Some(ep) = &args.s3_endpoint {
        cfg = cfg.with_endpoint(ep);
    }
    if let Some(region) = &args.s3_region {
        cfg = cfg.with_region(region);
    }
    let endpoint = args.s3_endpoint.as_deref().unwrap_or("AWS").to_string();
    let store = S3Store::new(cfg).context("configuring the S3 client")?;
    store
        .create_bucket_if_missing()
        .with_context(|| format!("checking or creating bucket {bucket} at {endpoint}"))?;
    // A fresh prefix per run: earlier runs' objects (or another user's) cannot mix in.
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis());
    let prefix = format!("strata-bench/tiered-{stamp}-{}", std::process::id());
    let mut b = Backend::new(
        Arc::new(store),
        &prefix,
        format!("S3 bucket {bucket} at {endpoint}, prefix {prefix}"),
    );
    b.delete_at_end = true;
    Ok(b)
}

#[cfg(not(feature = "s3"))]
fn open_s3(args: &TieredArgs, _run_dir: &Path) -> Result<Backend> {
    anyhow::bail!(
        "--store {} needs the S3 client, which this binary was built without; rebuild with \
         `cargo run --release -p tools --features s3 -- tiered ...`",
        args.store.name()
    )
}
