//! The storage engines the benchmark can drive, behind one object-safe trait so that every phase
//! runs the exact same loop against each of them.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};

#[cfg(feature = "fjall")]
mod fjall;
#[cfg(feature = "rocksdb")]
mod rocksdb;
mod strata;

/// Settings shared by every engine, so that they are configured alike.
#[derive(Debug, Clone, Copy)]
pub struct EngineConfig {
    pub cache_bytes: usize,
}

/// One open database of some engine.
///
/// Methods take `&self` and the trait requires `Sync` because `readrandom2` reads from one
/// handle on several threads at once.
pub trait Engine: Send + Sync {
    /// Buffered write: logged, but not synced to stable storage.
    fn put(&self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Durable write: returns only once the write is on stable storage.
    fn put_sync(&self, key: &[u8], value: &[u8]) -> Result<()>;
    /// Point lookup; returns the value's length after the value's bytes have been touched, so
    /// that no engine can skip materialising the value.
    fn get(&self, key: &[u8]) -> Result<Option<usize>>;
    /// Positions at the first key `>= key` and reads up to `n` entries; returns how many.
    fn seek_next(&self, key: &[u8], n: usize) -> Result<usize>;
    /// Visits every entry in ascending key order; returns how many.
    fn scan_forward(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<u64>;
    /// Visits every entry in descending key order; returns how many.
    fn scan_reverse(&self, visit: &mut dyn FnMut(&[u8], &[u8])) -> Result<u64>;
    /// Writes the memtable out to a table file and waits for that to finish.
    fn flush(&self) -> Result<()>;
    /// Compacts the whole key space, blocking until done.
    fn compact(&self) -> Result<()>;
    /// Flushes, then waits (bounded) until background flushes and compactions have stopped, so
    /// that leftover work of one phase does not run during the next one (possibly of another
    /// engine, under `--compare`).
    fn settle(&self) -> Result<()>;
    /// Bytes written since open to the write-ahead log and, by flushes and compactions, to table
    /// files; `None` when the engine does not count them. The runner divides this by the key
    /// and value bytes it wrote, so that every engine's write amplification has the same
    /// denominator (the engines' own "user bytes" differ in how they count batch framing).
    fn bytes_written(&self) -> Option<u64>;
    /// A short, engine-specific line of internal counters for the report.
    fn stats_text(&self) -> String;
    /// Closes the database, surfacing errors that a plain drop would swallow.
    fn close(self: Box<Self>) -> Result<()>;
}

/// The engines this binary knows about, whether or not they were compiled in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum EngineKind {
    Strata,
    Rocksdb,
    Fjall,
}

impl EngineKind {
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Strata => "strata",
            EngineKind::Rocksdb => "rocksdb",
            EngineKind::Fjall => "fjall",
        }
    }

    /// Engines built into this binary, strata first (it is the numerator of every ratio).
    pub fn compiled_in() -> Vec<EngineKind> {
        let mut kinds = vec![EngineKind::Strata];
        if cfg!(feature = "rocksdb") {
            kinds.push(EngineKind::Rocksdb);
        }
        if cfg!(feature = "fjall") {
            kinds.push(EngineKind::Fjall);
        }
        kinds
    }

    /// Fails with a rebuild hint when the engine's Cargo feature was left out.
    pub fn ensure_compiled_in(self) -> Result<()> {
        if Self::compiled_in().contains(&self) {
            return Ok(());
        }
        let feature = self.name();
        bail!(
            "engine `{feature}` is not compiled into this binary; rebuild with \
             `cargo build --release -p tools --features {feature}`"
        )
    }

    /// Opens (creating) a database of this engine in `dir`, which must be new or empty.
    pub fn open(self, dir: &Path, config: &EngineConfig) -> Result<Box<dyn Engine>> {
        self.ensure_compiled_in()?;
        match self {
            EngineKind::Strata => Ok(Box::new(strata::StrataEngine::open(dir, config)?)),
            #[cfg(feature = "rocksdb")]
            EngineKind::Rocksdb => Ok(Box::new(rocksdb::RocksEngine::open(dir, config)?)),
            #[cfg(feature = "fjall")]
            EngineKind::Fjall => Ok(Box::new(fjall::FjallEngine::open(dir, config)?)),
            #[allow(unreachable_patterns)]
            _ => unreachable!("ensure_compiled_in rejected {self:?}"),
        }
    }
}

/// Upper bound on waiting for background work in [`Engine::settle`]; an engine that is still
/// busy after this is reported as is rather than hanging the run.
pub const SETTLE_TIMEOUT: Duration = Duration::from_secs(120);

/// Polls `busy` until it has answered `false` several times in a row (a compaction may be
/// scheduled just after a flush completes, so one idle sample proves little), or the timeout.
pub fn wait_until_idle(mut busy: impl FnMut() -> Result<bool>) -> Result<()> {
    const QUIET_SAMPLES: u32 = 5;
    let deadline = Instant::now() + SETTLE_TIMEOUT;
    let mut quiet = 0;
    while quiet < QUIET_SAMPLES && Instant::now() < deadline {
        if busy()? {
            quiet = 0;
        } else {
            quiet += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}

/// Hands the bytes to the optimizer as used and returns their length, so that a lookup whose
/// result is otherwise ignored cannot be optimised into doing less work.
pub fn consume(bytes: &[u8]) -> usize {
    std::hint::black_box(bytes).len()
}
