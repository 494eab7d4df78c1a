//! Where a table's bytes come from: a memory-mapped local file, or an object in an object store
//! whose metadata tail (filter, index and properties blocks, and the footer) is kept locally.
//!
//! A cold table is opened with one suffix GET (or none, when its metadata was saved locally
//! before); after that a data block costs one ranged GET, and a lookup the filter rejects costs
//! none. The saved metadata ("meta file", format version 1) is:
//! ```text
//! magic u32 "SMT1" | version u32 | object size u64 | tail start u64 | crc32 of tail u32 | tail
//! ```
//! A damaged or stale meta file is ignored and fetched again.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;

use crate::coding::{u32_at, u64_at};
use crate::object::{ObjectError, ObjectStore};
use crate::{Error, Result};

const META_MAGIC: u32 = u32::from_le_bytes(*b"SMT1");
const META_VERSION: u32 = 1;
const META_HEADER: usize = 28;

/// A cold table's object and the locally held tail of it.
pub(crate) struct Remote {
    pub store: Arc<dyn ObjectStore>,
    pub key: String,
    pub size: u64,
    pub tail_start: u64,
    pub tail: Bytes,
}

pub(crate) enum Source {
    Local(Bytes),
    Remote(Remote),
}

/// Maps an object-store failure on a table read to the engine's error: a missing object the
/// manifest names, or a short or invalid range, is corruption; a failure worth retrying is
/// `Unavailable`; a refusal an operator must fix (credentials, bucket) is `Rejected`.
pub(crate) fn object_error(label: &Path, e: ObjectError) -> Error {
    if matches!(e, ObjectError::Timeout { .. })
        && crate::object::deadline::remaining().is_some_and(|left| left.is_zero())
    {
        // Whoever reads the error should know the store may be fine and the read simply ran
        // out of its caller's time, not the store's.
        Error::Unavailable(format!("{e} (the read's deadline passed)"))
    } else if e.is_retryable() {
        Error::Unavailable(e.to_string())
    } else if matches!(e, ObjectError::Rejected { .. }) {
        Error::Rejected(e.to_string())
    } else {
        Error::corruption(label, e.to_string())
    }
}

impl Source {
    pub fn len(&self) -> u64 {
        match self {
            Source::Local(b) => b.len() as u64,
            Source::Remote(r) => r.size,
        }
    }

    /// Bytes `[start, end)` of the table; the caller has checked `end <= len()`.
    pub fn read(&self, start: u64, end: u64, label: &Path) -> Result<Bytes> {
        match self {
            Source::Local(b) => Ok(b.slice(start as usize..end as usize)),
            Source::Remote(r) if start >= r.tail_start => {
                let (s, e) = (
                    (start - r.tail_start) as usize,
                    (end - r.tail_start) as usize,
                );
                Ok(r.tail.slice(s..e))
            }
            Source::Remote(r) => {
                let got = r
                    .store
                    .get_range(&r.key, start..end)
                    .map_err(|e| object_error(label, e))?;
                if got.len() as u64 != end - start {
                    return Err(Error::corruption(
                        label,
                        format!(
                            "object returned {} of {} bytes at {start}",
                            got.len(),
                            end - start
                        ),
                    ));
                }
                Ok(got)
            }
        }
    }
}

/// Fetches the tail of `key` from the start of its metadata on, with one suffix GET of
/// `tail_hint` bytes (and a second ranged GET only when the hint was too small).
/// `meta_start` reads the footer at the end of the bytes it is given and returns where the
/// metadata begins.
pub(crate) fn fetch(
    store: Arc<dyn ObjectStore>,
    key: &str,
    tail_hint: u64,
    label: &Path,
    meta_start: impl Fn(&[u8]) -> Result<u64>,
) -> Result<Remote> {
    let (mut tail, size) = store
        .get_suffix(key, tail_hint.max(super::FOOTER_LEN as u64))
        .map_err(|e| object_error(label, e))?;
    let start = meta_start(&tail)?;
    let mut tail_start = size.checked_sub(tail.len() as u64).ok_or_else(|| {
        Error::corruption(
            label,
            "object store returned more bytes than the object holds",
        )
    })?;
    if start > size {
        return Err(Error::corruption(
            label,
            "metadata starts past the end of the object",
        ));
    }
    if start < tail_start {
        let head = store
            .get_range(key, start..tail_start)
            .map_err(|e| object_error(label, e))?;
        let mut joined = Vec::with_capacity(head.len() + tail.len());
        joined.extend_from_slice(&head);
        joined.extend_from_slice(&tail);
        tail = Bytes::from(joined);
    } else {
        tail = tail.slice((start - tail_start) as usize..);
    }
    tail_start = start;
    Ok(Remote {
        store,
        key: key.to_string(),
        size,
        tail_start,
        tail,
    })
}

/// Saves a cold table's tail (`tail` starts at `tail_start` of an object of `size` bytes) so a
/// restart does not download it again.
pub(crate) fn save(path: &Path, size: u64, tail_start: u64, tail: &[u8]) -> Result<()> {
    let mut b = Vec::with_capacity(META_HEADER + tail.len());
    b.extend_from_slice(&META_MAGIC.to_le_bytes());
    b.extend_from_slice(&META_VERSION.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b.extend_from_slice(&tail_start.to_le_bytes());
    b.extend_from_slice(&crc32fast::hash(tail).to_le_bytes());
    b.extend_from_slice(tail);
    crate::fsutil::write_atomic(path, &b)
}

/// Loads a saved tail; `None` when there is none or it does not check out.
pub(crate) fn load(path: &Path, store: Arc<dyn ObjectStore>, key: &str) -> Option<Remote> {
    let b = std::fs::read(path).ok()?;
    if u32_at(&b, 0)? != META_MAGIC || u32_at(&b, 4)? != META_VERSION {
        return None;
    }
    let (size, tail_start, crc) = (u64_at(&b, 8)?, u64_at(&b, 16)?, u32_at(&b, 24)?);
    let tail = b.get(META_HEADER..)?;
    if crc32fast::hash(tail) != crc || tail_start.checked_add(tail.len() as u64)? != size {
        return None;
    }
    Some(Remote {
        store,
        key: key.to_string(),
        size,
        tail_start,
        tail: Bytes::copy_from_slice(tail),
    })
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use crate::object::{FaultConfig, FaultyStore, LocalDirStore, ObjectOp, ObjectStore};
    use crate::sst::{filter_hash, Table, TableBuilder};
    use crate::{internal_key, BlockCache, Compression, Error, ValueKind, MAX_SEQ};

    const N: u32 = 20_000;

    fn key(i: u32) -> Vec<u8> {
        format!("key{i:08}").into_bytes()
    }

    /// Builds a table of N keys and uploads it; returns the store and a temp dir.
    fn setup() -> (Arc<FaultyStore<LocalDirStore>>, tempfile::TempDir) {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("000001.sst");
        let mut b = TableBuilder::create(&path, 4096, 16, Compression::Lz4, 0.01).expect("create");
        for i in 0..N {
            let v = format!("value-{i}-{}", "x".repeat((i % 50) as usize));
            b.add(&internal_key(&key(i), 1, ValueKind::Put), v.as_bytes())
                .expect("add");
        }
        b.finish().expect("finish");
        let store = LocalDirStore::open(dir.path().join("objects")).expect("store");
        let bytes = std::fs::read(&path).expect("read table");
        store
            .put("db/sst/000001.sst", bytes.into())
            .expect("upload");
        (Arc::new(FaultyStore::new(store, 3)), dir)
    }

    fn open(
        s: &Arc<FaultyStore<LocalDirStore>>,
        meta: &std::path::Path,
        hint: u64,
    ) -> crate::Result<Table> {
        let store: Arc<dyn ObjectStore> = s.clone();
        Table::open_remote(
            store,
            "db/sst/000001.sst",
            1,
            BlockCache::new(8 << 20),
            1,
            Some(meta),
            hint,
        )
    }

    /// A lookup as the engine does it: filter first, then one block.
    fn lookup(t: &Table, i: u32) -> crate::Result<Option<Vec<u8>>> {
        let k = key(i);
        if !t.may_contain(filter_hash(&k)) {
            return Ok(None);
        }
        let seek = internal_key(&k, MAX_SEQ, ValueKind::Put);
        Ok(t.get(&k, &seek)?.map(|(_, v)| v.to_vec()))
    }

    #[test]
    fn cold_lookups_cost_at_most_one_get() {
        let (s, dir) = setup();
        let meta = dir.path().join("000001.meta");
        let gets = || s.calls(ObjectOp::GetRange) + s.calls(ObjectOp::Get);
        let t = open(&s, &meta, 256 << 10).expect("open");
        assert_eq!(gets(), 1, "open: one suffix GET");
        for i in (0..N).step_by(997) {
            let before = gets();
            let v = lookup(&t, i).expect("lookup").expect("present");
            assert!(v.starts_with(format!("value-{i}-").as_bytes()));
            assert!(
                gets() - before <= 1,
                "present key {i} took {} GETs",
                gets() - before
            );
            let before = gets();
            lookup(&t, i).expect("again");
            assert_eq!(gets(), before, "a cached block costs no GET");
        }
        // Absent keys: the local filter answers; only its false positives reach the store.
        let before = gets();
        for i in N..N + 2_000 {
            assert_eq!(lookup(&t, i).expect("absent"), None);
        }
        assert!(
            gets() - before <= 60,
            "{} GETs for 2000 absent keys",
            gets() - before
        );
        // Reopening uses the saved metadata: no request at all.
        drop(t);
        let before = gets();
        let t = open(&s, &meta, 256 << 10).expect("reopen");
        assert_eq!(gets(), before);
        assert!(lookup(&t, 5).expect("lookup").is_some());
    }

    #[test]
    fn small_hints_damaged_metadata_and_outages() {
        let (s, dir) = setup();
        let meta = dir.path().join("000001.meta");
        // A hint smaller than the metadata costs a second ranged GET, and still works.
        let t = open(&s, &meta, 1024).expect("open");
        assert_eq!(s.calls(ObjectOp::GetRange), 2);
        assert!(lookup(&t, 12_345).expect("lookup").is_some());
        // A damaged saved copy is ignored and fetched again.
        let mut m = std::fs::read(&meta).expect("meta");
        let n = m.len();
        m[n - 10] ^= 0xff;
        std::fs::write(&meta, &m).expect("damage meta");
        let before = s.calls(ObjectOp::GetRange);
        let t = open(&s, &meta, 256 << 10).expect("reopen");
        assert_eq!(s.calls(ObjectOp::GetRange), before + 1);
        // The store goes down: cold reads fail with Unavailable, never with wrong data ...
        s.set(
            ObjectOp::GetRange,
            FaultConfig {
                error_rate: 1.0,
                ..Default::default()
            },
        );
        match lookup(&t, 777) {
            Err(Error::Unavailable(_)) => {}
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // ... and recover when it comes back.
        s.clear();
        let v = lookup(&t, 777).expect("lookup").expect("present");
        assert!(v.starts_with(b"value-777-"));
        // A missing object is corruption, not unavailability.
        s.inner().delete("db/sst/000001.sst").expect("delete");
        assert!(lookup(&t, 15_000)
            .expect_err("missing object")
            .is_corruption());
    }
}
