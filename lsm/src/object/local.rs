//! Objects as files under a directory: `<root>/<key>`, with `/` in keys as subdirectories.
//!
//! A put writes `<root>/.tmp/<unique>`, syncs it, and renames it over the target (then syncs the
//! target's directory), so readers see whole objects only and a crash leaves either the old
//! object, the new one, or an orphan temporary file that the next `LocalDirStore::open` removes.
//! Create-if-absent links the temporary file to the target name, which fails atomically if the
//! target exists.

use std::fs::File;
use std::io::{ErrorKind, Read, Seek, SeekFrom, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use super::{validate_key, ObjectError, ObjectMeta, ObjectOp, ObjectStore};

const TMP_DIR: &str = ".tmp";

/// An object store in a local directory.
#[derive(Debug)]
pub struct LocalDirStore {
    root: PathBuf,
    /// This instance's own directory of temporary files, under [`TMP_DIR`]: several processes
    /// (the nodes of a group on one machine) may share the store, and none may touch another's
    /// files in flight.
    tmp: PathBuf,
    next_tmp: AtomicU64,
}

/// Removes what crashed writers left under `tmp` (entries named `<pid>-...` whose process is
/// gone), keeping what live processes write. Without `/proc`, nothing is removed.
fn sweep_stale_tmp(tmp: &Path) {
    let proc = Path::new("/proc");
    if !proc.is_dir() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(tmp) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let pid = name.split('-').next().and_then(|p| p.parse::<u32>().ok());
        let alive = pid.is_some_and(|p| proc.join(p.to_string()).exists());
        if !alive {
            let path = e.path();
            let _ = std::fs::remove_dir_all(&path).or_else(|_| std::fs::remove_file(&path));
        }
    }
}

fn unavailable(op: ObjectOp, key: &str, e: impl std::fmt::Display) -> ObjectError {
    ObjectError::Unavailable {
        op,
        key: key.to_string(),
        detail: e.to_string(),
    }
}

fn io_err(op: ObjectOp, key: &str, e: std::io::Error) -> ObjectError {
    if e.kind() == ErrorKind::NotFound {
        ObjectError::NotFound(key.to_string())
    } else {
        unavailable(op, key, e)
    }
}

impl LocalDirStore {
    /// Opens (creating if needed) a store rooted at `root`, removing temporary files left by
    /// interrupted puts.
    pub fn open(root: impl AsRef<Path>) -> Result<Self, ObjectError> {
        static INSTANCE: AtomicU64 = AtomicU64::new(0);
        let root = root.as_ref().to_path_buf();
        let shared = root.join(TMP_DIR);
        sweep_stale_tmp(&shared);
        let tmp = shared.join(format!(
            "{}-{}",
            std::process::id(),
            INSTANCE.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&tmp);
        std::fs::create_dir_all(&tmp).map_err(|e| unavailable(ObjectOp::Put, TMP_DIR, e))?;
        Ok(LocalDirStore {
            root,
            tmp,
            next_tmp: AtomicU64::new(0),
        })
    }

    /// The directory holding the objects.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &str) -> Result<PathBuf, ObjectError> {
        validate_key(key)?;
        Ok(self.root.join(key))
    }

    /// Writes `data` to a synced temporary file and returns its path.
    fn write_tmp(&self, op: ObjectOp, key: &str, data: &[u8]) -> Result<PathBuf, ObjectError> {
        let n = self.next_tmp.fetch_add(1, Ordering::Relaxed);
        let tmp = self.tmp.join(n.to_string());
        let mut f = File::create(&tmp).map_err(|e| unavailable(op, key, e))?;
        f.write_all(data)
            .and_then(|_| f.sync_all())
            .map_err(|e| unavailable(op, key, e))?;
        Ok(tmp)
    }

    fn prepare_parent(&self, op: ObjectOp, key: &str, path: &Path) -> Result<PathBuf, ObjectError> {
        let parent = path.parent().unwrap_or(&self.root).to_path_buf();
        std::fs::create_dir_all(&parent).map_err(|e| unavailable(op, key, e))?;
        Ok(parent)
    }

    fn sync_dir(op: ObjectOp, key: &str, dir: &Path) -> Result<(), ObjectError> {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| unavailable(op, key, e))
    }

    /// Reads the byte range `pick(size)` of an object; returns it and the object's size.
    fn read(
        &self,
        key: &str,
        pick: impl FnOnce(u64) -> Result<Range<u64>, ObjectError>,
    ) -> Result<(Bytes, u64), ObjectError> {
        let op = ObjectOp::GetRange;
        let path = self.path(key)?;
        let mut f = File::open(&path).map_err(|e| io_err(op, key, e))?;
        let size = f.metadata().map_err(|e| unavailable(op, key, e))?.len();
        let r = pick(size)?;
        let len = usize::try_from(r.end - r.start).map_err(|e| unavailable(op, key, e))?;
        let mut buf = vec![0u8; len];
        f.seek(SeekFrom::Start(r.start))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| unavailable(op, key, e))?;
        Ok((Bytes::from(buf), size))
    }

    fn walk(
        &self,
        dir: &Path,
        rel: &str,
        prefix: &str,
        out: &mut Vec<ObjectMeta>,
    ) -> Result<(), ObjectError> {
        let rd = match std::fs::read_dir(dir) {
            Ok(rd) => rd,
            Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(unavailable(ObjectOp::List, prefix, e)),
        };
        for entry in rd {
            let entry = entry.map_err(|e| unavailable(ObjectOp::List, prefix, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if rel.is_empty() && name == TMP_DIR {
                continue;
            }
            let key = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            // Skip subtrees that cannot contain a match.
            if !(key.starts_with(prefix) || prefix.starts_with(&key)) {
                continue;
            }
            // An object deleted while the listing runs (say, by garbage collection after a
            // compaction) is simply not listed, as in S3; only other errors fail the listing.
            let md = match entry.metadata() {
                Ok(md) => md,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(unavailable(ObjectOp::List, prefix, e)),
            };
            if md.is_dir() {
                self.walk(&entry.path(), &key, prefix, out)?;
            } else if key.starts_with(prefix) {
                out.push(ObjectMeta {
                    key,
                    size: md.len(),
                });
            }
        }
        Ok(())
    }
}

impl ObjectStore for LocalDirStore {
    fn put(&self, key: &str, data: Bytes) -> Result<(), ObjectError> {
        let op = ObjectOp::Put;
        let path = self.path(key)?;
        let tmp = self.write_tmp(op, key, &data)?;
        let parent = self.prepare_parent(op, key, &path)?;
        let r = std::fs::rename(&tmp, &path).map_err(|e| unavailable(op, key, e));
        if r.is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
        r?;
        Self::sync_dir(op, key, &parent)
    }

    fn put_if_absent(&self, key: &str, data: Bytes) -> Result<bool, ObjectError> {
        let op = ObjectOp::PutIfAbsent;
        let path = self.path(key)?;
        let tmp = self.write_tmp(op, key, &data)?;
        let parent = self.prepare_parent(op, key, &path)?;
        let linked = std::fs::hard_link(&tmp, &path);
        let _ = std::fs::remove_file(&tmp);
        match linked {
            Ok(()) => Self::sync_dir(op, key, &parent).map(|_| true),
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(unavailable(op, key, e)),
        }
    }

    fn supports_put_if_absent(&self) -> bool {
        true
    }

    fn get(&self, key: &str) -> Result<Bytes, ObjectError> {
        let path = self.path(key)?;
        std::fs::read(&path)
            .map(Bytes::from)
            .map_err(|e| io_err(ObjectOp::Get, key, e))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        self.read(key, |size| {
            if range.start > range.end || range.start > size {
                return Err(ObjectError::InvalidRange {
                    key: key.to_string(),
                    start: range.start,
                    end: range.end,
                    size,
                });
            }
            Ok(range.start..range.end.min(size))
        })
        .map(|(b, _)| b)
    }

    fn get_suffix(&self, key: &str, len: u64) -> Result<(Bytes, u64), ObjectError> {
        self.read(key, |size| Ok(size.saturating_sub(len)..size))
    }

    fn size(&self, key: &str) -> Result<u64, ObjectError> {
        let path = self.path(key)?;
        std::fs::metadata(&path)
            .map(|m| m.len())
            .map_err(|e| io_err(ObjectOp::Size, key, e))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectMeta>, ObjectError> {
        let mut out = Vec::new();
        self.walk(&self.root, "", prefix, &mut out)?;
        out.sort();
        Ok(out)
    }

    fn delete(&self, key: &str) -> Result<(), ObjectError> {
        let path = self.path(key)?;
        match std::fs::remove_file(&path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(unavailable(ObjectOp::Delete, key, e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn listing_while_objects_are_deleted_never_fails() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = Arc::new(LocalDirStore::open(dir.path()).expect("open"));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let churn = {
            let (s, stop) = (s.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut i = 0u64;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let key = format!("db/sst/{:06}.sst", i % 64);
                    s.put(&key, Bytes::from_static(b"x")).expect("put");
                    s.delete(&key).expect("delete");
                    i += 1;
                }
            })
        };
        for _ in 0..300 {
            for _ in 0..16 {
                let _ = s.put("db/sst/keep.sst", Bytes::from_static(b"k"));
            }
            let listed = s.list("db/sst/").expect("a listing during deletions");
            assert!(listed.iter().any(|m| m.key == "db/sst/keep.sst"));
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        churn.join().expect("churn thread");
    }

    #[test]
    fn put_get_range_list_delete() {
        let dir = tempfile::tempdir().expect("tempdir");
        let s = LocalDirStore::open(dir.path()).expect("open");
        s.put("db/sst/000001.sst", Bytes::from_static(b"hello world"))
            .expect("put");
        s.put("db/sst/000002.sst", Bytes::from_static(b"x"))
            .expect("put");
        s.put("other/a", Bytes::from_static(b"y")).expect("put");
        assert_eq!(
            &s.get("db/sst/000001.sst").expect("get")[..],
            b"hello world"
        );
        assert_eq!(
            &s.get_range("db/sst/000001.sst", 6..11).expect("range")[..],
            b"world"
        );
        assert_eq!(
            &s.get_range("db/sst/000001.sst", 6..100).expect("range")[..],
            b"world"
        );
        assert!(matches!(
            s.get_range("db/sst/000001.sst", 12..20),
            Err(ObjectError::InvalidRange { .. })
        ));
        assert_eq!(s.size("db/sst/000001.sst").expect("size"), 11);
        let (tail, size) = s.get_suffix("db/sst/000001.sst", 5).expect("suffix");
        assert_eq!((&tail[..], size), (&b"world"[..], 11));
        assert_eq!(
            s.get_suffix("db/sst/000001.sst", 99)
                .expect("suffix")
                .0
                .len(),
            11
        );
        let keys: Vec<String> = s
            .list("db/")
            .expect("list")
            .into_iter()
            .map(|m| m.key)
            .collect();
        assert_eq!(keys, ["db/sst/000001.sst", "db/sst/000002.sst"]);
        assert_eq!(s.list("").expect("list").len(), 3);
        assert!(!s
            .put_if_absent("db/sst/000002.sst", Bytes::from_static(b"z"))
            .expect("pia"));
        assert_eq!(&s.get("db/sst/000002.sst").expect("get")[..], b"x");
        assert!(s
            .put_if_absent("db/sst/000003.sst", Bytes::from_static(b"z"))
            .expect("pia"));
        s.delete("db/sst/000002.sst").expect("delete");
        s.delete("db/sst/000002.sst").expect("delete absent");
        assert!(matches!(
            s.get("db/sst/000002.sst"),
            Err(ObjectError::NotFound(_))
        ));
        assert!(matches!(
            s.get("../etc/passwd"),
            Err(ObjectError::InvalidKey { .. })
        ));
        // Replacing is atomic and leaves no temporary files behind.
        s.put("db/sst/000001.sst", Bytes::from_static(b"new"))
            .expect("put");
        assert_eq!(&s.get("db/sst/000001.sst").expect("get")[..], b"new");
        assert_eq!(std::fs::read_dir(&s.tmp).expect("tmp").count(), 0);
    }

    #[test]
    fn stores_sharing_a_directory_leave_each_others_temporary_files_alone() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = LocalDirStore::open(dir.path()).expect("open");
        // What a crashed process left behind.
        let stale = dir.path().join(TMP_DIR).join(format!("{}-0", u32::MAX - 1));
        std::fs::create_dir_all(&stale).expect("stale dir");
        std::fs::write(stale.join("0"), b"partial").expect("stale file");
        // Another process (here, another instance) opens the store meanwhile.
        let b = LocalDirStore::open(dir.path()).expect("open again");
        a.put("g/node-1", Bytes::from_static(b"a"))
            .expect("first store still writes");
        b.put("g/node-2", Bytes::from_static(b"b"))
            .expect("second store writes");
        assert!(a.tmp.exists() && b.tmp.exists());
        if Path::new("/proc").is_dir() {
            assert!(!stale.exists(), "a dead process's leftovers are swept");
        }
    }
}
