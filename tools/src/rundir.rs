//! The directory a benchmark run keeps its databases in: a temporary one removed at the end, or
//! one the user named with `--db-dir`, kept afterwards.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tempfile::TempDir;

/// Where the databases of one run live.
pub enum RunDir {
    Temp(TempDir),
    Kept(PathBuf),
}

impl RunDir {
    /// Uses `dir` when given (it must be new or empty: fills need fresh databases), else a new
    /// temporary directory named after `bench` under ./bench-results, or under $TMPDIR when
    /// ./bench-results cannot be created.
    pub fn create(dir: Option<&Path>, bench: &str) -> Result<Self> {
        if let Some(dir) = dir {
            let non_empty = match std::fs::read_dir(dir) {
                Ok(mut entries) => entries.next().is_some(),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
                Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
            };
            if non_empty {
                bail!(
                    "--db-dir {} is not empty; fills need fresh databases, so pick a new or \
                     empty directory",
                    dir.display()
                );
            }
            std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
            return Ok(RunDir::Kept(dir.to_path_buf()));
        }
        let local = Path::new("bench-results");
        let temp = std::fs::create_dir_all(local)
            .and_then(|()| {
                tempfile::Builder::new()
                    .prefix(&format!("{bench}-"))
                    .tempdir_in(local)
            })
            .or_else(|_| {
                tempfile::Builder::new()
                    .prefix(&format!("strata-bench-{bench}-"))
                    .tempdir()
            })
            .context("creating a temporary directory for the databases")?;
        Ok(RunDir::Temp(temp))
    }

    pub fn path(&self) -> &Path {
        match self {
            RunDir::Temp(t) => t.path(),
            RunDir::Kept(p) => p,
        }
    }

    pub fn is_kept(&self) -> bool {
        matches!(self, RunDir::Kept(_))
    }

    /// Removes a temporary directory; returns the path of a kept one.
    pub fn finish(self) -> Result<Option<PathBuf>> {
        match self {
            RunDir::Temp(t) => {
                let path = t.path().display().to_string();
                t.close().with_context(|| format!("removing {path}"))?;
                Ok(None)
            }
            RunDir::Kept(p) => Ok(Some(p)),
        }
    }
}
