//! Replicated mode: the engine as one replica of a Raft group (see "Replication" in DESIGN.md).
//!
//! The replication log takes the WAL's place and decides everything a local database decides for
//! itself: the sequence number of each write (its log index), where memtables are cut (a `Seal`
//! entry), which tables exist (the leader builds a sealed memtable into a table in the shared
//! object store and replicates the [`TableEdit`]; it compacts and replicates that edit too). Every
//! replica applies the same entries in the same order and ends with the same tables. Applying an
//! entry a second time (a replay after a restart, a duplicate proposal from a deposed leader) is
//! recognised and changes nothing.
//!
//! What survives a restart is the version (tables per level), the flushed sequence number (every
//! write up to it is in the tables) and the owner's opaque state saved with it; the memtables
//! start empty and the owner replays its log from the flushed sequence number on.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{flush::build_table, lock, Db, Inner, SuperVersion};
use crate::compaction::leveled;
use crate::manifest::{ManifestWriter, VersionEdit};
use crate::memtable::Memtable;
use crate::version::Version;
use crate::{batch, fsutil, Error, Result, WriteBatch};

/// A change to the tables of a replicated database, made by the group's leader and applied by
/// every replica: the table built from a sealed memtable ([`Db::build_chunk`]) or a compaction's
/// inputs and outputs ([`Db::compact_step`]).
///
/// Its encoding ([`encode`](Self::encode)) is the engine's manifest edit record (see the manifest
/// module; format version 3): tables added with their level, number, object key, size, key and
/// sequence ranges; tables removed by level and number. Edits without object keys (format 2,
/// from an older leader) still decode: their objects are named by the database's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEdit {
    pub(crate) edit: VersionEdit,
}

impl TableEdit {
    /// The edit as bytes, to carry in a log entry.
    pub fn encode(&self) -> Vec<u8> {
        self.edit.encode()
    }

    /// Decodes [`encode`](Self::encode)'s output. Counters and owner state are not part of a
    /// table edit: bytes carrying them are refused along with anything undecodable.
    pub fn decode(bytes: &[u8]) -> Result<TableEdit> {
        let edit = VersionEdit::decode(bytes)
            .filter(|e| {
                e.log_number.is_none()
                    && e.next_file_number.is_none()
                    && e.last_seq.is_none()
                    && e.flushed_seq.is_none()
                    && e.app_state.is_none()
                    && e.added.iter().all(|(_, m)| m.cold)
            })
            .ok_or_else(|| Error::InvalidArgument("undecodable table edit".into()))?;
        Ok(TableEdit { edit })
    }

    /// Numbers of the tables the edit adds.
    pub fn added(&self) -> Vec<u64> {
        self.edit.added.iter().map(|(_, m)| m.number).collect()
    }

    /// Numbers of the tables the edit removes.
    pub fn removed(&self) -> Vec<u64> {
        self.edit.deleted.iter().map(|(_, n)| *n).collect()
    }

    /// Bytes of the tables the edit adds.
    pub fn added_bytes(&self) -> u64 {
        self.edit.added.iter().map(|(_, m)| m.size).sum()
    }
}

/// The whole table state of a replicated database as one value: tables per level, the flushed
/// sequence number, the owner's state. A Raft snapshot is this image: the data stays in the
/// object store, and a replica that installs it reads tables on demand.
///
/// Encoding, format version 1:
/// ```text
/// "LSMI" | u32 LE version = 1 | u32 LE crc32(body) | body = one manifest edit record
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManifestImage {
    pub(crate) edit: VersionEdit,
}

const IMAGE_MAGIC: &[u8; 4] = b"LSMI";
const IMAGE_VERSION: u32 = 1;

impl ManifestImage {
    /// The image as bytes.
    pub fn encode(&self) -> Vec<u8> {
        let body = self.edit.encode();
        let mut b = Vec::with_capacity(body.len() + 12);
        b.extend_from_slice(IMAGE_MAGIC);
        b.extend_from_slice(&IMAGE_VERSION.to_le_bytes());
        b.extend_from_slice(&crc32fast::hash(&body).to_le_bytes());
        b.extend_from_slice(&body);
        b
    }

    /// Decodes [`encode`](Self::encode)'s output, checking its checksum.
    pub fn decode(bytes: &[u8]) -> Result<ManifestImage> {
        let bad = |m: &str| Error::InvalidArgument(format!("manifest image: {m}"));
        if bytes.len() < 12 || &bytes[..4] != IMAGE_MAGIC {
            return Err(bad("bad magic"));
        }
        let word =
            |i: usize| u32::from_le_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
        if word(4) != IMAGE_VERSION {
            return Err(bad(&format!("unsupported format version {}", word(4))));
        }
        let body = &bytes[12..];
        if crc32fast::hash(body) != word(8) {
            return Err(bad("checksum mismatch"));
        }
        let edit = VersionEdit::decode(body)
            .filter(|e| e.deleted.is_empty() && e.added.iter().all(|(_, m)| m.cold))
            .ok_or_else(|| bad("undecodable"))?;
        Ok(ManifestImage { edit })
    }

    /// Every write up to this sequence number is in the image's tables.
    pub fn flushed_seq(&self) -> u64 {
        self.edit.flushed_seq.unwrap_or(0)
    }

    /// The owner's state saved with the tables.
    pub fn app_state(&self) -> &[u8] {
        self.edit.app_state.as_deref().unwrap_or(&[])
    }

    /// Number of tables.
    pub fn tables(&self) -> usize {
        self.edit.added.len()
    }

    /// Total bytes of the tables (in the object store, not in the image).
    pub fn table_bytes(&self) -> u64 {
        self.edit.added.iter().map(|(_, m)| m.size).sum()
    }
}

/// Where a replicated database stands.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplicaStatus {
    /// Sequence number of the last entry applied.
    pub last_seq: u64,
    /// Every write up to this sequence number is in the tables.
    pub flushed_seq: u64,
    /// Seal points of the memtables sealed and not yet turned into tables, oldest first.
    pub sealed: Vec<u64>,
    /// Approximate bytes in the active memtable.
    pub active_bytes: usize,
    /// Approximate bytes in the sealed memtables.
    pub sealed_bytes: usize,
    /// True when no memtable holds any write: everything applied is in the tables.
    pub memtables_empty: bool,
}

impl Db {
    /// Applies `batch` at sequence number `seq` (the log index of its entry). Returns `false`,
    /// changing nothing, when `seq` is not above the last applied sequence number (a replay).
    /// Relative TTLs would make replicas disagree: use [`WriteBatch::put_with_expiry`].
    pub fn apply_at(&self, seq: u64, batch: &WriteBatch) -> Result<bool> {
        self.inner.apply_at(seq, batch)
    }

    /// Seals the active memtable at `seq`. Returns `false`, changing nothing, when `seq` is not
    /// above the last applied sequence number. An empty memtable is not sealed (nothing to
    /// build), but `seq` still counts as applied.
    pub fn apply_seal(&self, seq: u64) -> Result<bool> {
        let i = &self.inner;
        i.require_replicated()?;
        let mut ws = i.queue.write_state();
        if seq <= ws.last_seq {
            return Ok(false);
        }
        i.seal(&mut ws, Some(seq))?;
        Ok(true)
    }

    /// Reads `key` judging expiry at `now_ms` instead of by the clock: replicas evaluating a
    /// conditional write with the time carried in its log entry all see the same thing.
    pub fn get_as_of(&self, key: impl AsRef<[u8]>, now_ms: u64) -> Result<Option<bytes::Bytes>> {
        self.inner.get_as_of(key.as_ref(), None, now_ms)
    }

    /// Iterates the pairs with keys in `range` live at `now_ms` (the entries' clock of a
    /// replicated log, as [`get_as_of`](Self::get_as_of) judges them), so that every replica
    /// sees the same ones whatever its own clock says.
    pub fn range_as_of<K: AsRef<[u8]>, R: std::ops::RangeBounds<K>>(
        &self,
        range: R,
        now_ms: u64,
    ) -> crate::Iter {
        let (lo, hi) = super::to_bounds(&range);
        self.inner.iter_as_of(None, lo, hi, Some(now_ms))
    }

    /// Memtables, sequence numbers and what is sealed.
    pub fn replica_status(&self) -> ReplicaStatus {
        let sv = self.inner.sv.load();
        let flushed_seq = lock(&self.inner.versions).flushed_seq;
        ReplicaStatus {
            last_seq: self.inner.visible_seq.load(Ordering::Acquire),
            flushed_seq,
            sealed: sv.imms.iter().rev().map(|m| m.max_seq()).collect(),
            active_bytes: sv.mem.approximate_bytes(),
            sealed_bytes: sv.imms.iter().map(|m| m.approximate_bytes()).sum(),
            memtables_empty: sv.mem.is_empty() && sv.imms.is_empty(),
        }
    }

    /// The owner's state saved by the last [`apply_chunk`](Self::apply_chunk), [`apply_compaction`](Self::apply_compaction),
    /// [`save_app_state`](Self::save_app_state) or [`install_image`](Self::install_image).
    pub fn app_state(&self) -> Vec<u8> {
        lock(&self.inner.versions).app_state.clone()
    }

    /// Leader: builds the memtable sealed at `sealed_at` into a table, uploads it and returns
    /// the edit adding it, for every replica to apply with [`apply_chunk`](Self::apply_chunk).
    /// Nothing changes locally until then.
    pub fn build_chunk(&self, sealed_at: u64) -> Result<TableEdit> {
        let i = &self.inner;
        i.require_replicated()?;
        let sv = i.sv.load_full();
        let imm = sv
            .imms
            .iter()
            .find(|m| m.max_seq() == sealed_at)
            .cloned()
            .ok_or_else(|| Error::InvalidArgument(format!("no memtable sealed at {sealed_at}")))?;
        let (number, builder) = {
            let mut vs = lock(&i.versions);
            i.new_table(&mut vs)?
        };
        // Versions a later write in the same memtable overwrote are dropped: every replica
        // reads at or above the seal point once the chunk replaces the memtable.
        let mut meta = build_table(&imm, sealed_at, number, builder)?;
        if let Err(e) = i.upload(&mut meta) {
            let _ = std::fs::remove_file(fsutil::sst_path(&i.dir, number));
            return Err(e);
        }
        i.stats.flushes.fetch_add(1, Ordering::Relaxed);
        i.stats
            .bytes_flushed
            .fetch_add(meta.size, Ordering::Relaxed);
        let mut edit = VersionEdit::default();
        edit.added.push((0, meta));
        Ok(TableEdit { edit })
    }

    /// Replaces the memtable sealed at `sealed_at` with the table of `edit`, and saves
    /// `app_state` with the new version, atomically. Returns `false`, changing nothing, when that
    /// memtable is already in the tables or is not the oldest sealed one (chunks are added in
    /// seal order).
    pub fn apply_chunk(&self, sealed_at: u64, edit: &TableEdit, app_state: &[u8]) -> Result<bool> {
        let i = &self.inner;
        i.require_replicated()?;
        let mut vs = lock(&i.versions);
        let cur = i.sv.load_full();
        let Some(oldest) = cur.imms.last().cloned() else {
            return Ok(false);
        };
        if sealed_at <= vs.flushed_seq || oldest.max_seq() != sealed_at {
            return Ok(false);
        }
        if !edit.edit.deleted.is_empty() || edit.edit.added.iter().any(|(l, _)| *l != 0) {
            return Err(Error::InvalidArgument(
                "a chunk edit only adds tables to level 0".into(),
            ));
        }
        let mut e = edit.edit.clone();
        e.flushed_seq = Some(sealed_at);
        e.app_state = Some(app_state.to_vec());
        i.reserve_numbers_of(&mut vs, &mut e);
        i.install(&mut vs, e, Some(&oldest))?;
        Ok(true)
    }

    /// Saves `app_state` with the version, and records every entry up to `flushed_seq` as
    /// applied and in the tables (entries that wrote nothing, such as Raft's own, count as
    /// applied). Only valid while the memtables are empty (nothing to flush).
    pub fn save_app_state(&self, flushed_seq: u64, app_state: &[u8]) -> Result<()> {
        let i = &self.inner;
        i.require_replicated()?;
        let mut ws = i.queue.write_state();
        let mut vs = lock(&i.versions);
        let sv = i.sv.load();
        if !(sv.mem.is_empty() && sv.imms.is_empty()) {
            return Err(Error::InvalidArgument(format!(
                "cannot record {flushed_seq} as flushed: the memtables hold writes"
            )));
        }
        if flushed_seq > ws.last_seq {
            ws.last_seq = flushed_seq;
            sv.mem.note_seq(flushed_seq);
            i.visible_seq.store(flushed_seq, Ordering::Release);
        }
        let e = VersionEdit {
            flushed_seq: Some(flushed_seq.max(vs.flushed_seq)),
            app_state: Some(app_state.to_vec()),
            ..Default::default()
        };
        i.install(&mut vs, e, None)
    }

    /// Leader: runs one compaction if any level is over its target, uploading its output, and
    /// returns the edit for every replica to apply with [`apply_compaction`](Self::apply_compaction).
    /// Nothing changes locally until then. `None` when nothing needs compacting.
    ///
    /// Values are dropped as expired only if they expired by `expired_by_ms`, not by the clock.
    /// A replica that restarts replays its log from its flushed point over tables that already
    /// hold later compactions: the owner passes a time no replayed entry can judge earlier than
    /// (the time of the flushed point, with time made monotonic along the log), so a value a
    /// compaction dropped is expired for every entry that can see the result.
    pub fn compact_step(&self, expired_by_ms: u64) -> Result<Option<TableEdit>> {
        let i = &self.inner;
        i.require_replicated()?;
        let _g = lock(&i.compaction_lock);
        let picked = {
            let vs = lock(&i.versions);
            leveled::pick(&i.sv.load().version, &i.opts, &vs.pointers)
        };
        let Some(c) = picked else { return Ok(None) };
        let out = i.compaction_output(&c, expired_by_ms)?;
        if let Some(p) = out.pointer {
            lock(&i.versions).pointers[c.level] = p;
        }
        i.count_compaction(&out.counts);
        Ok(Some(TableEdit { edit: out.edit }))
    }

    /// Applies a compaction's edit and saves `app_state` with it, atomically (so the owner can
    /// tell after a restart which compactions its tables already hold). Returns `false`, changing
    /// nothing, when it no longer fits the version: an input is gone (applied already, or another
    /// compaction took it) or the result would overlap within a level.
    pub fn apply_compaction(&self, edit: &TableEdit, app_state: &[u8]) -> Result<bool> {
        let i = &self.inner;
        i.require_replicated()?;
        let mut vs = lock(&i.versions);
        let cur = i.sv.load_full();
        let v = &cur.version;
        let live = |level: usize, n: u64| {
            v.levels
                .get(level)
                .is_some_and(|l| l.iter().any(|f| f.meta.number == n))
        };
        if edit.edit.added.iter().any(|(l, _)| *l >= v.levels.len()) {
            return Err(Error::InvalidArgument(
                "table edit beyond num_levels".into(),
            ));
        }
        if !edit.edit.deleted.iter().all(|&(l, n)| live(l, n)) {
            return Ok(false);
        }
        let moved = |n: u64| edit.edit.deleted.iter().any(|&(_, d)| d == n);
        let exists = |n: u64| v.levels.iter().flatten().any(|f| f.meta.number == n);
        if edit.added().into_iter().any(|n| exists(n) && !moved(n)) {
            return Ok(false);
        }
        let (next, _) = v.apply(&edit.edit, |m| i.table_file(m.clone()));
        if next.check_disjoint().is_err() {
            return Ok(false);
        }
        drop(next);
        let mut e = edit.edit.clone();
        e.app_state = Some(app_state.to_vec());
        i.reserve_numbers_of(&mut vs, &mut e);
        i.install(&mut vs, e, None)?;
        Ok(true)
    }

    /// Leader: gives up the tables of an edit that will not be applied (its proposal lost, or
    /// applying it returned `false`); their objects go after the grace period.
    pub fn discard(&self, edit: &TableEdit) {
        let v = self.inner.sv.load().version.clone();
        for (_, m) in &edit.edit.added {
            if !v.levels.iter().flatten().any(|f| f.meta.number == m.number) {
                self.inner.tables.delete_cold(m);
            }
        }
    }

    /// The whole table state, for a snapshot of the group.
    pub fn export_image(&self) -> ManifestImage {
        let vs = lock(&self.inner.versions);
        let mut edit = self.inner.sv.load().version.snapshot_edit();
        edit.flushed_seq = Some(vs.flushed_seq);
        edit.app_state = Some(vs.app_state.clone());
        ManifestImage { edit }
    }

    /// Replaces this replica's whole state with `image`: its tables, its flushed sequence number
    /// (which becomes the last applied one) and its owner state; the memtables are emptied.
    /// Tables this replica had and the image lacks are garbage.
    pub fn install_image(&self, image: &ManifestImage) -> Result<()> {
        let i = &self.inner;
        i.require_replicated()?;
        let _g = lock(&i.compaction_lock);
        let mut ws = i.queue.write_state();
        let mut vs = lock(&i.versions);
        let cur = i.sv.load_full();
        let existing: HashMap<u64, _> = cur
            .version
            .levels
            .iter()
            .flatten()
            .map(|f| (f.meta.number, f.clone()))
            .collect();
        if image
            .edit
            .added
            .iter()
            .any(|(l, _)| *l >= i.opts.num_levels)
        {
            return Err(Error::InvalidArgument(
                "image has a level beyond num_levels".into(),
            ));
        }
        let (version, _) = Version::new(i.opts.num_levels).apply(&image.edit, |m| {
            existing
                .get(&m.number)
                .cloned()
                .unwrap_or_else(|| i.table_file(m.clone()))
        });
        version
            .check_disjoint()
            .map_err(|d| Error::InvalidArgument(format!("manifest image: {d}")))?;
        let flushed = image.flushed_seq();
        let mut base = image.edit.clone();
        i.reserve_numbers_of(&mut vs, &mut base);
        // A new manifest holds the image alone; the old one goes.
        let old = vs.manifest.number();
        let number = i.alloc_file(&mut vs)?;
        base.log_number = Some(0);
        base.next_file_number = Some(vs.reserved);
        base.last_seq = Some(flushed);
        vs.manifest = ManifestWriter::create(&i.dir, number, &base)
            .inspect_err(|e| i.set_bg_error(e.clone()))?;
        let _ = std::fs::remove_file(crate::manifest::manifest_path(&i.dir, old));
        vs.flushed_seq = flushed;
        vs.app_state = image.app_state().to_vec();
        let keep: std::collections::HashSet<u64> =
            image.edit.added.iter().map(|(_, m)| m.number).collect();
        for (n, f) in &existing {
            if !keep.contains(n) {
                f.mark_obsolete();
            }
        }
        i.sv.store(Arc::new(SuperVersion {
            mem: Arc::new(Memtable::new(0, i.opts.write_buffer_size)),
            imms: Vec::new(),
            version: Arc::new(version),
        }));
        ws.last_seq = flushed;
        i.visible_seq.store(flushed, Ordering::Release);
        Ok(())
    }

    /// Leader: tables built from now on are numbered within `range`, the numbers its term owns
    /// (e.g. `term << 32 .. (term + 1) << 32`), so two leaders never upload the same name.
    /// Fails, and hands out no number until called again, when numbers at or above the range's
    /// end are known here (a newer leader's tables applied, or its objects listed at open): this
    /// replica's term is over, and an upload could replace that leader's object.
    pub fn number_tables_within(&self, range: std::ops::Range<u64>) -> Result<()> {
        let mut vs = lock(&self.inner.versions);
        vs.next_file = vs.next_file.max(range.start);
        vs.file_limit = range.end;
        if vs.next_file >= range.end {
            return Err(Error::InvalidArgument(format!(
                "table numbers up to {} are in use: a newer leader uploaded tables",
                vs.next_file
            )));
        }
        Ok(())
    }

    /// This replica has applied the log up to `index`: objects that become garbage from now on
    /// wait until every replica is past it (see [`set_gc_floor`](Self::set_gc_floor)).
    pub fn note_applied(&self, index: u64) {
        self.inner.tables.gc().note_progress(index);
    }

    /// Every replica of the group has applied, or installed a snapshot, up to `index`: obsolete
    /// objects removed at or before it may be deleted once their grace period is over. Until
    /// first called, a replicated database deletes nothing; `u64::MAX` means no floor (the grace
    /// period alone, for a group of one).
    pub fn set_gc_floor(&self, index: u64) {
        self.inner.tables.gc().set_floor(index);
    }

    /// Objects found obsolete at open were removed at or before `index` (the log's last index
    /// when the replica started): they wait for every replica to pass it.
    pub fn stamp_obsolete_objects(&self, index: u64) {
        self.inner.tables.gc().stamp_unticketed(index);
    }

    /// Allows (the leader) or forbids (a follower) deleting obsolete objects. Every replica
    /// queues the same garbage; only the one allowed to deletes it, after the grace period.
    pub fn set_object_gc(&self, active: bool) {
        self.inner.object_gc.store(active, Ordering::Release);
        let _bg = lock(&self.inner.bg);
        self.inner.bg_cv.notify_all();
    }
}

impl Inner {
    pub(crate) fn require_replicated(&self) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        if !self.opts.replicated {
            return Err(Error::InvalidArgument(
                "the replica API needs Options::replicated".into(),
            ));
        }
        if let Some(e) = self.bg_error() {
            return Err(e);
        }
        Ok(())
    }

    fn apply_at(&self, seq: u64, b: &WriteBatch) -> Result<bool> {
        self.require_replicated()?;
        if let Some(e) = b.validation_error() {
            return Err(e.clone());
        }
        let mut ws = self.queue.write_state();
        if seq <= ws.last_seq {
            return Ok(false);
        }
        let rep = b.resolved_rep(|| self.opts.clock.now_millis());
        let mem = self.sv.load().mem.clone();
        // The representation was built and validated by `WriteBatch`, so it decodes.
        for op in batch::ops(&rep).map_while(|o| o) {
            mem.insert(op.key, seq, op.kind, op.value);
        }
        mem.note_seq(seq);
        ws.last_seq = seq;
        self.visible_seq.store(seq, Ordering::Release);
        self.stats
            .user_bytes
            .fetch_add(b.size_in_bytes() as u64, Ordering::Relaxed);
        self.stats.writes.fetch_add(1, Ordering::Relaxed);
        Ok(true)
    }

    /// Numbers the leader handed out are used here from now on: hand out only larger ones
    /// (reserving them in the manifest along with `edit`).
    fn reserve_numbers_of(&self, vs: &mut super::VersionSet, edit: &mut VersionEdit) {
        if let Some(max) = edit.added.iter().map(|(_, m)| m.number).max() {
            vs.next_file = vs.next_file.max(max + 1);
            if vs.next_file >= vs.reserved {
                vs.reserved = vs.next_file + super::FILE_NUMBER_RESERVATION;
                edit.next_file_number = Some(vs.reserved);
            }
        }
    }
}
