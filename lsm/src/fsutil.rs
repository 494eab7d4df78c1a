//! Small filesystem helpers: durable directory entries, atomic file replacement, the lock file.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::IoContext;
use crate::{Error, Result};

/// Makes a directory's entries (created, renamed or removed files) durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .ctx(|| format!("syncing directory {}", dir.display()))
}

/// Replaces `path` with `contents` atomically: write a temporary file, sync it, rename it over
/// the target, sync the directory. A crash leaves either the old or the new file.
///
/// Two threads may write the same file at once (two readers opening one cold table both save
/// its metadata): each writes its own temporary file, named `<name>.<n>.tmp`, so neither
/// renames the other's away. Leftovers of a crash end in `.tmp` and are swept at open.
pub(crate) fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    static TEMP_NUMBER: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(
        ".{}.tmp",
        TEMP_NUMBER.fetch_add(1, Ordering::Relaxed)
    ));
    let tmp = path.with_file_name(name);
    let written = File::create(&tmp)
        .ctx(|| format!("creating {}", tmp.display()))
        .and_then(|mut f| {
            f.write_all(contents)
                .and_then(|_| f.sync_all())
                .ctx(|| format!("writing {}", tmp.display()))
        })
        .and_then(|_| {
            std::fs::rename(&tmp, path).ctx(|| format!("renaming {} into place", tmp.display()))
        });
    if let Err(e) = written {
        // Each attempt has its own name: a failing caller (a full disk) would leave one per try.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    sync_dir(dir)
}

/// An exclusive advisory lock on `<dir>/LOCK`, held for the life of an open database. `flock`
/// locks conflict between open file descriptions, so a second open fails both in another
/// process and in this one.
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

pub(crate) fn sst_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.sst"))
}

pub(crate) fn parse_sst_name(name: &str) -> Option<u64> {
    name.strip_suffix(".sst")?.parse().ok()
}

/// The table number in a cold table's object name (the part of its key after `<prefix>/sst/`):
/// `NNNNNN-<16 hex digits>.sst` since manifest format 3, `NNNNNN.sst` before. Anything else is
/// not a table of this database.
pub(crate) fn parse_object_name(name: &str) -> Option<u64> {
    let stem = name.strip_suffix(".sst")?;
    let (number, nonce) = match stem.split_once('-') {
        Some((n, nonce)) => (n, Some(nonce)),
        None => (stem, None),
    };
    if let Some(nonce) = nonce {
        if nonce.len() != 16 || !nonce.bytes().all(|b| b.is_ascii_hexdigit()) {
            return None;
        }
    }
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    number.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_of_both_formats_parse_and_others_do_not() {
        assert_eq!(parse_object_name("000042.sst"), Some(42));
        assert_eq!(parse_object_name("000042-00c0ffee00c0ffee.sst"), Some(42));
        for bad in [
            "000042-00c0ffee.sst",
            "000042-00c0ffee00c0ffzz.sst",
            "-00c0ffee00c0ffee.sst",
            "+42.sst",
            "000042.meta",
            "x.sst",
        ] {
            assert_eq!(parse_object_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn concurrent_atomic_writes_of_one_file_all_succeed() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("7.meta");
        std::thread::scope(|s| {
            for t in 0..4u8 {
                let p = &p;
                s.spawn(move || {
                    for _ in 0..50 {
                        write_atomic(p, &[t; 64]).unwrap();
                    }
                });
            }
        });
        let b = std::fs::read(&p).unwrap();
        assert_eq!(b.len(), 64);
        assert!(b.iter().all(|&x| x == b[0]), "one writer's whole contents");
        let left: Vec<_> = std::fs::read_dir(d.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            vec![std::ffi::OsString::from("7.meta")],
            "no temporaries left"
        );
    }
}
