//! Versions: the set of live tables per level, immutable once built.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering as AtOrd};
use std::sync::Arc;

use crate::cache::TableCache;
use crate::key;
use crate::manifest::VersionEdit;

/// What the manifest records about a table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileMeta {
    pub number: u64,
    pub size: u64,
    /// Smallest and largest internal keys.
    pub smallest: Vec<u8>,
    pub largest: Vec<u8>,
    pub min_seq: u64,
    pub max_seq: u64,
    pub entries: u64,
    pub deletions: u64,
    /// Stored in the object store rather than as a local file.
    pub cold: bool,
    /// The cold table's object key, unique across every database sharing the store (see
    /// `TableCache::new_object_key`). `None` for local tables, and for cold tables recorded
    /// before objects were named in the manifest (manifest format 2 and older): their key is
    /// derived from the database's prefix and the number (`TableCache::object_key`).
    pub object: Option<String>,
}

impl FileMeta {
    pub fn from_props(number: u64, size: u64, p: crate::sst::Properties) -> Self {
        FileMeta {
            number,
            size,
            smallest: p.smallest,
            largest: p.largest,
            min_seq: p.min_seq,
            max_seq: p.max_seq,
            entries: p.entries,
            deletions: p.deletions,
            cold: false,
            object: None,
        }
    }
    pub fn smallest_user(&self) -> &[u8] {
        key::user_key(&self.smallest)
    }
    pub fn largest_user(&self) -> &[u8] {
        key::user_key(&self.largest)
    }
    /// True when the file's user-key range intersects `[lo, hi]`.
    pub fn overlaps(&self, lo: &[u8], hi: &[u8]) -> bool {
        self.largest_user() >= lo && self.smallest_user() <= hi
    }
}

/// A live table file. When the last version referencing a file that compaction made obsolete
/// goes away, the file is deleted: iterators and snapshots hold versions, so no reader ever
/// loses a file under it.
pub(crate) struct TableFile {
    pub meta: FileMeta,
    obsolete: AtomicBool,
    path: PathBuf,
    tables: Arc<TableCache>,
}

impl TableFile {
    pub fn new(meta: FileMeta, path: PathBuf, tables: Arc<TableCache>) -> Self {
        TableFile {
            meta,
            obsolete: AtomicBool::new(false),
            path,
            tables,
        }
    }
    pub fn mark_obsolete(&self) {
        self.obsolete.store(true, AtOrd::Release);
    }
}

impl Drop for TableFile {
    fn drop(&mut self) {
        if self.obsolete.load(AtOrd::Acquire) {
            self.tables.evict(self.meta.number);
            if self.meta.cold {
                self.tables.delete_cold(&self.meta);
            } else if let Err(e) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %e, "could not delete obsolete table");
            }
        }
    }
}

/// Tables per level. L0 is ordered newest first and its files may overlap; every deeper level is
/// sorted by key and its files are disjoint.
#[derive(Clone, Default)]
pub(crate) struct Version {
    pub levels: Vec<Vec<Arc<TableFile>>>,
}

impl Version {
    pub fn new(num_levels: usize) -> Self {
        Version {
            levels: vec![Vec::new(); num_levels],
        }
    }

    /// Applies an edit. Files removed and not re-added elsewhere (a trivial move re-adds) are
    /// returned so the caller can mark them obsolete once the edit is durable.
    pub fn apply(
        &self,
        edit: &VersionEdit,
        mut open: impl FnMut(&FileMeta) -> Arc<TableFile>,
    ) -> (Version, Vec<Arc<TableFile>>) {
        let mut v = self.clone();
        let deleted: HashSet<(usize, u64)> = edit.deleted.iter().copied().collect();
        let mut removed = Vec::new();
        for (level, files) in v.levels.iter_mut().enumerate() {
            files.retain(|f| {
                let gone = deleted.contains(&(level, f.meta.number));
                if gone {
                    removed.push(f.clone());
                }
                !gone
            });
        }
        for (level, meta) in &edit.added {
            let file = removed
                .iter()
                .find(|f| f.meta.number == meta.number)
                .cloned()
                .unwrap_or_else(|| open(meta));
            if let Some(files) = v.levels.get_mut(*level) {
                files.push(file);
            }
        }
        removed.retain(|f| !edit.added.iter().any(|(_, m)| m.number == f.meta.number));
        v.sort();
        (v, removed)
    }

    fn sort(&mut self) {
        // Newer L0 files have larger sequence numbers (flushes happen in order).
        self.levels[0].sort_by(|a, b| {
            b.meta
                .max_seq
                .cmp(&a.meta.max_seq)
                .then(b.meta.number.cmp(&a.meta.number))
        });
        for files in self.levels.iter_mut().skip(1) {
            files.sort_by(|a, b| key::cmp_internal(&a.meta.smallest, &b.meta.smallest));
        }
    }

    /// Index of the file of sorted level `level` that may hold `user_key`.
    pub fn find_file(&self, level: usize, user_key: &[u8]) -> Option<&Arc<TableFile>> {
        let files = &self.levels[level];
        let i = files.partition_point(|f| f.meta.largest_user() < user_key);
        files.get(i).filter(|f| f.meta.smallest_user() <= user_key)
    }

    /// Files of `level` whose user-key range intersects `[lo, hi]`.
    pub fn overlapping(&self, level: usize, lo: &[u8], hi: &[u8]) -> Vec<Arc<TableFile>> {
        self.levels[level]
            .iter()
            .filter(|f| f.meta.overlaps(lo, hi))
            .cloned()
            .collect()
    }

    pub fn level_bytes(&self, level: usize) -> u64 {
        self.levels[level].iter().map(|f| f.meta.size).sum()
    }

    /// Full edit describing this version, written at the head of a new manifest.
    pub fn snapshot_edit(&self) -> VersionEdit {
        let mut e = VersionEdit::default();
        for (level, files) in self.levels.iter().enumerate() {
            for f in files {
                e.added.push((level, f.meta.clone()));
            }
        }
        e
    }

    /// True when no level deeper than `level` holds `user_key`'s range: a tombstone or expired
    /// value compacted into `level` then hides nothing and can be dropped.
    pub fn is_bottom_for(&self, level: usize, user_key: &[u8]) -> bool {
        (level + 1..self.levels.len()).all(|l| self.find_file(l, user_key).is_none())
    }

    /// Sanity check used after replay: deeper levels must be sorted and disjoint.
    pub fn check_disjoint(&self) -> Result<(), String> {
        for (level, files) in self.levels.iter().enumerate().skip(1) {
            for w in files.windows(2) {
                if key::cmp_internal(&w[0].meta.largest, &w[1].meta.smallest) != Ordering::Less
                    || w[0].meta.largest_user() >= w[1].meta.smallest_user()
                {
                    return Err(format!(
                        "level {level} files {} and {} overlap",
                        w[0].meta.number, w[1].meta.number
                    ));
                }
            }
        }
        Ok(())
    }
}
