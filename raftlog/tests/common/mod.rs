//! Helpers shared by raftlog's integration suites. Each suite uses a subset.
#![allow(dead_code)]

pub mod cluster;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use lsm::object::{LocalDirStore, ObjectStore};

/// Logs to the test's output when `RUST_LOG` is set (e.g. `RUST_LOG=raftlog=debug`): a failure
/// on a busy CI machine can then be read after the fact.
pub fn trace() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

/// A group's shared object store, in a local directory.
pub fn object_store(dir: &Path) -> Arc<dyn ObjectStore> {
    Arc::new(LocalDirStore::open(dir).expect("open object store"))
}

/// Engine options of a replica: small memtables and tables so seals, chunks and compactions
/// happen within a test's few thousand writes; garbage objects wait a few seconds (a lagging
/// replica may still read them).
pub fn engine_options(store: Arc<dyn ObjectStore>) -> lsm::Options {
    let mut cold = lsm::ColdTier::new(store, "group-1");
    cold.gc_grace = Some(Duration::from_secs(5));
    lsm::Options {
        write_buffer_size: 16 << 10,
        target_file_size: 16 << 10,
        max_bytes_for_level_base: 64 << 10,
        l0_compaction_trigger: 2,
        block_size: 1024,
        block_cache_bytes: 1 << 20,
        cold_tier: Some(cold),
        ..lsm::Options::default()
    }
}
