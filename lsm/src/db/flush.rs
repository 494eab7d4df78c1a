//! Flushing sealed memtables to L0 tables, and installing version edits.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{lock, Inner, SuperVersion, VersionSet};
use crate::compaction::{leveled, Gc};
use crate::manifest::{ManifestWriter, VersionEdit};
use crate::memtable::Memtable;
use crate::sst::TableBuilder;
use crate::version::{FileMeta, TableFile};
use crate::{fsutil, Error, Result};

/// Manifest size at which a fresh one (holding just the current version) replaces it.
const MANIFEST_ROTATE_BYTES: u64 = 16 << 20;

impl Inner {
    pub(crate) fn alloc_file(&self, vs: &mut VersionSet) -> Result<u64> {
        if vs.next_file >= vs.reserved {
            let reserved = vs.next_file + super::FILE_NUMBER_RESERVATION;
            self.append_manifest(
                vs,
                &VersionEdit {
                    next_file_number: Some(reserved),
                    ..Default::default()
                },
            )?;
            vs.reserved = reserved;
        }
        let n = vs.next_file;
        vs.next_file += 1;
        Ok(n)
    }

    /// Appends an edit. A failed append may have left part of a record behind, and anything
    /// appended after it would be unreadable at replay, so the failure stops every writer of
    /// the manifest (writes, flushes, compactions) until the database is reopened.
    fn append_manifest(&self, vs: &mut VersionSet, edit: &VersionEdit) -> Result<()> {
        vs.manifest
            .append(edit)
            .inspect_err(|e| self.set_bg_error(e.clone()))
    }

    pub(crate) fn new_table(&self, vs: &mut VersionSet) -> Result<(u64, TableBuilder)> {
        // Table numbers name objects in a store other replicas share; local files (manifests)
        // may use any number.
        if vs.next_file >= vs.file_limit {
            return Err(Error::InvalidArgument(format!(
                "table number {} is outside this replica's range (below {}): a newer leader numbers from there",
                vs.next_file, vs.file_limit
            )));
        }
        let n = self.alloc_file(vs)?;
        let o = &self.opts;
        let b = TableBuilder::create(
            &fsutil::sst_path(&self.dir, n),
            o.block_size,
            o.block_restart_interval,
            o.compression,
            o.bloom_fp_rate,
        )?;
        Ok((n, b))
    }

    /// Logs `edit` durably, then publishes the new version (dropping `flushed` from the sealed
    /// memtables). Tables the edit removes become obsolete and are deleted when unreferenced.
    /// The edit's `flushed_seq` and `app_state`, when set, are recorded in `vs` too.
    pub(crate) fn install(
        &self,
        vs: &mut VersionSet,
        mut edit: VersionEdit,
        flushed: Option<&Arc<Memtable>>,
    ) -> Result<()> {
        let cur = self.sv.load_full();
        let (version, removed) = cur.version.apply(&edit, |m| self.table_file(m.clone()));
        edit.last_seq = Some(self.visible_seq.load(Ordering::Acquire));
        if !edit.added.is_empty() {
            // The new tables' directory entries must be durable before the manifest names them.
            fsutil::sync_dir(&self.dir)?;
        }
        self.append_manifest(vs, &edit)?;
        if let Some(l) = edit.log_number {
            vs.log_number = l;
        }
        if let Some(f) = edit.flushed_seq {
            vs.flushed_seq = f;
        }
        if let Some(a) = edit.app_state {
            vs.app_state = a;
        }
        for f in &removed {
            f.mark_obsolete();
        }
        let imms = cur
            .imms
            .iter()
            .filter(|m| !flushed.is_some_and(|d| Arc::ptr_eq(m, d)))
            .cloned()
            .collect();
        self.stats.pending_compaction_bytes.store(
            leveled::pending_bytes(&version, &self.opts),
            Ordering::Relaxed,
        );
        let version = Arc::new(version);
        self.sv.store(Arc::new(SuperVersion {
            mem: cur.mem.clone(),
            imms,
            version: version.clone(),
        }));
        if vs.manifest.size() > MANIFEST_ROTATE_BYTES {
            // The edit is durable and published: a failed rotation must not make the caller
            // undo it. Where CURRENT points after a failure is unknown, so stop writers.
            if let Err(e) = self.rotate_manifest(vs, &version) {
                self.set_bg_error(e);
            }
        }
        Ok(())
    }

    pub(crate) fn table_file(&self, meta: FileMeta) -> Arc<TableFile> {
        let path = fsutil::sst_path(&self.dir, meta.number);
        Arc::new(TableFile::new(meta, path, self.tables.clone()))
    }

    /// Starts a new manifest holding the whole version, then deletes the old one.
    pub(crate) fn rotate_manifest(
        &self,
        vs: &mut VersionSet,
        version: &crate::version::Version,
    ) -> Result<()> {
        let old = vs.manifest.number();
        let number = self.alloc_file(vs)?;
        let mut base = version.snapshot_edit();
        base.log_number = Some(vs.log_number);
        base.next_file_number = Some(vs.reserved);
        base.last_seq = Some(self.visible_seq.load(Ordering::Acquire));
        base.flushed_seq = Some(vs.flushed_seq);
        base.app_state = Some(vs.app_state.clone());
        vs.manifest = ManifestWriter::create(&self.dir, number, &base)?;
        let _ = std::fs::remove_file(crate::manifest::manifest_path(&self.dir, old));
        Ok(())
    }

    pub(crate) fn smallest_snapshot(&self) -> u64 {
        let snaps = lock(&self.snapshots);
        snaps
            .keys()
            .next()
            .copied()
            .unwrap_or_else(|| self.visible_seq.load(Ordering::Acquire))
    }

    /// Writes the oldest sealed memtable to an L0 table and installs it.
    pub(crate) fn flush_oldest(&self) -> Result<()> {
        let sv = self.sv.load_full();
        let Some(imm) = sv.imms.last().cloned() else {
            return Ok(());
        };
        let meta = if imm.is_empty() {
            None
        } else {
            Some(self.write_memtable(&imm)?)
        };
        let mut vs = lock(&self.versions);
        let cur = self.sv.load();
        // The oldest memtable left unflushed decides which WAL segments are still needed.
        let oldest_left = cur
            .imms
            .iter()
            .rev()
            .find(|m| !Arc::ptr_eq(m, &imm))
            .unwrap_or(&cur.mem);
        let mut edit = VersionEdit::default();
        if self.opts.wal {
            edit.log_number = Some(oldest_left.wal_number());
        }
        let bytes = meta.as_ref().map_or(0, |m| m.size);
        if let Some(m) = meta {
            edit.added.push((0, m));
        }
        // On failure the table stays: the manifest may name it. If it does not, the next open
        // deletes it as an orphan.
        self.install(&mut vs, edit, Some(&imm))?;
        drop(vs);
        if self.opts.wal && imm.wal_number() != 0 {
            let _ = std::fs::remove_file(crate::wal::segment_path(&self.dir, imm.wal_number()));
        }
        self.stats.flushes.fetch_add(1, Ordering::Relaxed);
        self.stats.bytes_flushed.fetch_add(bytes, Ordering::Relaxed);
        self.request_compaction();
        Ok(())
    }

    /// Builds an L0 table from a memtable, dropping versions no snapshot can see.
    fn write_memtable(&self, mem: &Arc<Memtable>) -> Result<FileMeta> {
        let (number, builder) = {
            let mut vs = lock(&self.versions);
            self.new_table(&mut vs)?
        };
        build_table(mem, self.smallest_snapshot(), number, builder)
    }

    pub(crate) fn request_compaction(&self) {
        let mut bg = lock(&self.bg);
        bg.compaction_requested = true;
        self.bg_cv.notify_all();
    }

    /// Seals the active memtable and waits until every sealed memtable is flushed.
    pub(crate) fn flush(&self) -> Result<()> {
        self.submit(super::write::Op::Seal { at: None })?;
        self.wait_flushed()
    }

    pub(crate) fn flush_for_close(&self) -> Result<()> {
        self.submit_unchecked(super::write::Op::Seal { at: None })?;
        self.wait_flushed()
    }

    fn wait_flushed(&self) -> Result<()> {
        let mut bg = lock(&self.bg);
        loop {
            if let Some(e) = &bg.error {
                return Err(e.clone());
            }
            if self.sv.load().imms.is_empty() {
                return Ok(());
            }
            if bg.shutdown {
                return Err(Error::Closed);
            }
            bg = self
                .bg_cv
                .wait_timeout(bg, std::time::Duration::from_millis(10))
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
    }
}

/// Writes a memtable into `builder` (file `number`); deletes the file if anything fails.
pub(crate) fn build_table(
    mem: &Arc<Memtable>,
    smallest_snapshot: u64,
    number: u64,
    mut builder: TableBuilder,
) -> Result<FileMeta> {
    let path = builder.path().to_path_buf();
    let mut gc = Gc::new(smallest_snapshot, 0, false);
    let r = mem
        .try_for_each(|k, v| {
            if gc.keep(k, v, |_| false) {
                builder.add(k, v)?;
            }
            Ok(())
        })
        .and_then(|_| builder.finish());
    match r {
        Ok((props, size)) => Ok(FileMeta::from_props(number, size, props)),
        Err(e) => {
            let _ = std::fs::remove_file(path);
            Err(e)
        }
    }
}

/// The flush thread: flushes sealed memtables oldest first until shutdown.
pub(crate) fn flush_loop(inner: Arc<Inner>) {
    loop {
        {
            let mut bg = lock(&inner.bg);
            loop {
                // With a WAL, sealed memtables are replayed at the next open; without one, close
                // flushes before it shuts the threads down.
                if bg.shutdown {
                    return;
                }
                if bg.error.is_none() && !inner.sv.load().imms.is_empty() {
                    break;
                }
                bg = inner.bg_cv.wait(bg).unwrap_or_else(|p| p.into_inner());
            }
        }
        let r = inner.flush_oldest();
        let _bg = lock(&inner.bg);
        inner.bg_cv.notify_all();
        drop(_bg);
        if let Err(e) = r {
            inner.set_bg_error(e);
        }
    }
}
