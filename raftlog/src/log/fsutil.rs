//! Filesystem helpers: durable directory entries, atomic file creation and replacement, the lock.

use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::{Error, IoContext, Result};

/// Suffix of files written by [`write_atomic`] before their rename; any left at open are the
/// remains of a crash and are deleted.
pub(crate) const TEMP_SUFFIX: &str = ".tmp";

/// Makes a directory's entries (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

fn temp_path(path: &Path) -> PathBuf {
    let mut s = OsString::from(path.as_os_str());
    s.push(TEMP_SUFFIX);
    PathBuf::from(s)
}

/// Creates or replaces `path` with `contents` atomically: write a temporary file, sync it, rename
/// it over the target, sync the directory. A crash leaves either the old file (or none) or the
/// complete new one, never a partial one under the final name.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = temp_path(path);
    let mut f = File::create(&tmp).ctx(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)
        .and_then(|_| f.sync_all())
        .ctx(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).ctx(|| format!("renaming {} into place", tmp.display()))?;
    sync_dir(dir)
}

/// Deletes the temporary files of interrupted [`write_atomic`] calls. Returns how many there were.
pub(crate) fn remove_temp_files(dir: &Path) -> Result<usize> {
    let mut removed = 0;
    for entry in std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let path = entry.ctx(|| format!("listing {}", dir.display()))?.path();
        if path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.ends_with(TEMP_SUFFIX))
        {
            std::fs::remove_file(&path).ctx(|| format!("removing {}", path.display()))?;
            removed += 1;
        }
    }
    if removed > 0 {
        sync_dir(dir)?;
    }
    Ok(removed)
}

/// An exclusive advisory lock on `<dir>/LOCK`, held while a log is open: two writers appending to
/// the same segment would interleave records. `flock` locks conflict between open file
/// descriptions, so a second open fails in another process and in this one alike.
#[derive(Debug)]
pub(crate) struct DirLock {
    _file: File,
}

impl DirLock {
    pub(crate) fn acquire(dir: &Path) -> Result<Self> {
        let path = dir.join("LOCK");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .ctx(|| format!("opening {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok(DirLock { _file: file }),
            Err(std::fs::TryLockError::WouldBlock) => Err(Error::Locked {
                dir: dir.to_path_buf(),
            }),
            Err(std::fs::TryLockError::Error(e)) => {
                Err(Error::io(format!("locking {}", path.display()), e))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_and_temp_files_are_swept() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("x.meta");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        std::fs::write(temp_path(&p), b"half").unwrap();
        assert_eq!(remove_temp_files(d.path()).unwrap(), 1);
        assert!(!temp_path(&p).exists());
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
    }

    #[test]
    fn lock_is_exclusive() {
        let d = tempfile::tempdir().unwrap();
        let held = DirLock::acquire(d.path()).unwrap();
        assert!(matches!(
            DirLock::acquire(d.path()),
            Err(Error::Locked { .. })
        ));
        drop(held);
        DirLock::acquire(d.path()).unwrap();
    }
}
