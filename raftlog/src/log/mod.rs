//! The segmented Raft log.
//!
//! A log directory holds:
//! ```text
//! LOCK                      advisory lock, held while open
//! {base:020}.seg            segments of consecutive entries, the first at index `base` (see `segment`)
//! vote.meta, committed.meta opaque values saved by `save_meta` (see `meta`)
//! purged.meta               the purge point and the caller's record of it (see `meta`)
//! *.tmp                     half-written replacements, deleted at open
//! ```
//! Invariants kept in memory and restored by recovery: segments are contiguous (each starts where
//! the previous one ends), none is empty, and none lies entirely at or below the purge point.
//! Every operation that changes files makes the change durable before it returns, and orders its
//! steps so that a crash in between leaves a state recovery accepts: removals go newest first, so
//! an interrupted truncation leaves a prefix of the log, never a hole.

mod claim;
pub(crate) mod framing;
mod fsutil;
pub(crate) mod meta;
pub(crate) mod segment;

use std::ops::{Bound, RangeBounds};
use std::path::{Path, PathBuf};

use bytes::Bytes;

use crate::error::{Error, IoContext, Result};
use meta::Purged;
pub use meta::{MetaKind, MAX_META_LEN};
use segment::Segment;
pub use segment::MAX_ENTRY_LEN;

/// Tuning of a [`Log`].
#[derive(Debug, Clone)]
pub struct LogOptions {
    /// An append that would take the current segment past this many bytes starts a new segment.
    /// A batch is never split, so a batch larger than this fills a segment of its own.
    /// Default: 64 MiB.
    pub segment_size: u64,
}

impl Default for LogOptions {
    fn default() -> Self {
        LogOptions {
            segment_size: 64 << 20,
        }
    }
}

/// What [`Log::open`] found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryInfo {
    /// Segments in use after recovery.
    pub segments: usize,
    /// The first readable entry, `None` when the log holds none.
    pub first_index: Option<u64>,
    /// The last entry, `None` when the log holds none.
    pub last_index: Option<u64>,
    /// The purge point: entries up to it are gone.
    pub purged: Option<u64>,
    /// Segments deleted because a purge had covered them (a crash interrupted the purge), or
    /// because they held no entry (a crash between creating a segment and writing to it).
    pub segments_removed: usize,
    /// Half-written temporary files deleted.
    pub temp_files_removed: usize,
    /// The torn tail cut from the last segment, if any (corruption fails the open instead).
    pub damage: Option<RecoveryDamage>,
}

/// A torn tail cut by recovery: the end of the last segment, from its first bad record on, held
/// nothing that proves an entry there had been synced (see [`Log::open_with`]), so none of it
/// was acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecoveryDamage {
    /// The segment holding the first bad record (always the last segment).
    pub segment: PathBuf,
    /// Its offset in that segment.
    pub offset: u64,
    /// The entry that belonged there: the log now continues at it.
    pub index: u64,
    /// Bytes discarded.
    pub bytes_dropped: u64,
}

/// Counters of the work a [`Log`] did since it was opened.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogStats {
    /// Successful non-empty [`Log::append`] calls.
    pub appends: u64,
    /// Entries they appended.
    pub entries_appended: u64,
    /// Bytes written to segments by them, framing included.
    pub bytes_appended: u64,
    /// Segments created.
    pub segments_created: u64,
}

/// A durable, segmented log of opaque entries addressed by consecutive `u64` indexes.
///
/// Writes take `&mut self`: openraft serializes its log I/O, and a single writer keeps the
/// durability order simple. Reads take `&self` and use positioned reads, so a shared reference
/// can serve them from several threads.
#[derive(Debug)]
pub struct Log {
    dir: PathBuf,
    opts: LogOptions,
    _lock: fsutil::DirLock,
    /// Contiguous, non-empty, in index order; the last one takes appends.
    segments: Vec<Segment>,
    purged: Option<Purged>,
    vote: Option<Bytes>,
    committed: Option<Bytes>,
    /// What records may claim durable (see `claim`).
    durable: claim::Watermark,
    /// Scratch space for framing a batch.
    buf: Vec<u8>,
    poisoned: bool,
    stats: LogStats,
}

impl Drop for Log {
    /// Leaves the last segment ending with its last record (see [`segment::PREALLOC`]).
    fn drop(&mut self) {
        if !self.poisoned {
            if let Some(tail) = self.segments.last_mut() {
                tail.trim();
            }
        }
    }
}

impl Log {
    /// Opens (creating if needed) the log in `dir` with default options.
    pub fn open(dir: impl AsRef<Path>) -> Result<(Log, RecoveryInfo)> {
        Self::open_with(dir, LogOptions::default())
    }

    /// Opens (creating if needed) the log in `dir`, recovering its entries.
    ///
    /// Damage is told apart by an exact rule: every record carries the index below which every
    /// entry was synced when it was written, and damage where entry `i` belongs is corruption
    /// only if a later valid record (or a later segment, created only after this one was
    /// synced) claims `i` durable. A torn tail (damage with no such claim after it: an
    /// interrupted append, or unsynced pages a power cut left as a hole before records that
    /// were never acknowledged) is cut and reported in the returned [`RecoveryInfo`].
    /// Corruption is [`Error::CorruptRecord`], naming the file and offset: dropping synced
    /// entries could lose acknowledged writes, so the log does not open. So is damage that a
    /// crash cannot explain outside the records (a hole between segments, a bad header, an
    /// unreadable meta file: [`Error::Corruption`]).
    pub fn open_with(dir: impl AsRef<Path>, opts: LogOptions) -> Result<(Log, RecoveryInfo)> {
        let dir = dir.as_ref().to_path_buf();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir).ctx(|| format!("creating {}", dir.display()))?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                fsutil::sync_dir(parent)?;
            }
        }
        let lock = fsutil::DirLock::acquire(&dir)?;
        let mut info = RecoveryInfo {
            temp_files_removed: fsutil::remove_temp_files(&dir)?,
            ..RecoveryInfo::default()
        };
        let vote = meta::read(&dir, MetaKind::Vote.file_name())?;
        let committed = meta::read(&dir, MetaKind::Committed.file_name())?;
        let purged = match meta::read(&dir, meta::PURGED_FILE)? {
            Some(p) => Some(Purged::decode(&dir.join(meta::PURGED_FILE), &p)?),
            None => None,
        };
        let (segments, damage, removed) = recover_segments(&dir, first_unpurged(&purged))?;
        info.damage = damage;
        info.segments_removed = removed;
        let durable = claim::Watermark::default();
        if let Some(tail) = segments.last() {
            // What was read may still sit only in the page cache (the last run crashed before
            // its sync): sync it before any record claims it durable. Earlier segments were
            // synced before their successors were created.
            tail.sync()?;
            durable.synced(durable.epoch(), tail.next_index());
        }
        let log = Log {
            dir,
            opts,
            _lock: lock,
            segments,
            purged,
            vote,
            committed,
            durable,
            buf: Vec::new(),
            poisoned: false,
            stats: LogStats::default(),
        };
        info.segments = log.segments.len();
        info.first_index = log.first_index();
        info.last_index = log.last_index();
        info.purged = log.purged.as_ref().map(|p| p.upto);
        tracing::info!(
            dir = %log.dir.display(),
            segments = info.segments,
            first = ?info.first_index,
            last = ?info.last_index,
            purged = ?info.purged,
            "raft log opened"
        );
        Ok((log, info))
    }

    /// The log's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The first readable entry, `None` when the log holds no entry.
    pub fn first_index(&self) -> Option<u64> {
        let first = self.segments.first()?.base();
        Some(first.max(self.first_unpurged()))
    }

    /// The last entry, `None` when the log holds no entry.
    pub fn last_index(&self) -> Option<u64> {
        Some(self.segments.last()?.next_index() - 1)
    }

    /// The index the next [`append`](Self::append) must start at: after the last entry, else
    /// after the purge point; `None` when the log holds nothing and was never purged, in which
    /// case it may start anywhere.
    pub fn next_index(&self) -> Option<u64> {
        match self.segments.last() {
            Some(s) => Some(s.next_index()),
            None => self.purged.as_ref().map(|p| p.upto + 1),
        }
    }

    /// The purge point and the record saved with it by [`purge`](Self::purge).
    pub fn last_purged(&self) -> Option<(u64, Bytes)> {
        self.purged.as_ref().map(|p| (p.upto, p.record.clone()))
    }

    /// What this handle did since it was opened.
    pub fn stats(&self) -> LogStats {
        self.stats
    }

    fn first_unpurged(&self) -> u64 {
        first_unpurged(&self.purged)
    }

    fn check_writable(&self) -> Result<()> {
        if self.poisoned {
            Err(Error::Poisoned)
        } else {
            Ok(())
        }
    }

    /// Runs a write step; if it fails, the files are in an unknown state (a failed `fsync` may
    /// have dropped data the page cache held), so the log takes no more writes.
    fn guard<T>(&mut self, f: impl FnOnce(&mut Self) -> Result<T>) -> Result<T> {
        let r = f(self);
        if let Err(e) = &r {
            tracing::error!(dir = %self.dir.display(), error = %e, "raft log write failed");
            self.poisoned = true;
        }
        r
    }

    /// Appends `entries`, whose indexes must be consecutive and continue the log (see
    /// [`next_index`](Self::next_index)). The whole batch goes to one segment with one write and
    /// one `fdatasync`; when this returns `Ok`, every entry of it survives a crash.
    pub fn append(&mut self, entries: &[(u64, &[u8])]) -> Result<()> {
        self.append_inner(entries, true).map(|_| ())
    }

    /// Like [`append`](Self::append) without the `fdatasync`: the entries are written (readable
    /// at once) and become durable when the returned handle is [synced](SyncHandle::sync) —
    /// which may happen outside this log's lock, so that one sync covers appends that arrived
    /// meanwhile (group commit). A segment is synced before the next one is started, so a crash
    /// can lose only a suffix of the log, never a middle.
    pub fn append_deferred(&mut self, entries: &[(u64, &[u8])]) -> Result<Option<SyncHandle>> {
        self.append_inner(entries, false)
    }

    /// Whether appending `entries` starts a new segment (which syncs the old one and the
    /// directory): callers on an async runtime run such an append on a blocking thread.
    pub fn append_rolls_over(&self, entries: &[(u64, &[u8])]) -> bool {
        let bytes = entries
            .iter()
            .map(|(_, d)| (framing::HEADER_LEN + claim::CLAIM_LEN + d.len()) as u64)
            .sum();
        self.rolls_over(bytes)
    }

    fn rolls_over(&self, bytes: u64) -> bool {
        // A tail of an older format takes no appends: the log continues in a new segment.
        self.segments.last().is_none_or(|s| {
            s.size() + bytes > self.opts.segment_size || s.version() != segment::VERSION
        })
    }

    /// True once a write step failed: the log takes no more writes.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned
    }

    /// Marks the log failed after a deferred sync failed: the kernel may have dropped the data,
    /// so no further write is accepted.
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    fn append_inner(&mut self, entries: &[(u64, &[u8])], sync: bool) -> Result<Option<SyncHandle>> {
        self.check_writable()?;
        let Some(&(first, _)) = entries.first() else {
            return Ok(None);
        };
        let mut expected = self.next_index().unwrap_or(first);
        let mut bytes = 0u64;
        for &(index, data) in entries {
            if index != expected {
                return Err(Error::NotContiguous {
                    expected,
                    got: index,
                });
            }
            if data.len() > MAX_ENTRY_LEN {
                return Err(Error::EntryTooLarge {
                    len: data.len(),
                    max: MAX_ENTRY_LEN,
                });
            }
            // `next_index` of the segment is one past its last entry, so that must fit too.
            expected = index.checked_add(1).ok_or_else(|| {
                Error::InvalidArgument(format!("index {index} leaves no next index"))
            })?;
            bytes += (framing::HEADER_LEN + claim::CLAIM_LEN + data.len()) as u64;
        }
        let rollover = self.rolls_over(bytes);
        let after = expected;
        self.guard(|log| {
            let mut buf = std::mem::take(&mut log.buf);
            let r = if rollover {
                // Deferred appends may have left the old tail unsynced: sync it before a later
                // segment exists, or a crash could keep the new one and lose the old one's end.
                // Sealing also cuts its zeros written ahead, so only the last segment has any.
                if let Some(tail) = log.segments.last_mut() {
                    tail.seal()?;
                    log.durable.synced(log.durable.epoch(), tail.next_index());
                }
                let mut seg = Segment::create(&log.dir, first)?;
                log.stats.segments_created += 1;
                let claim = log.durable.claim();
                let r = seg
                    .append(entries, claim, &mut buf, sync)
                    .map(|_| seg.handle());
                // An empty segment is not kept in memory; recovery deletes its file.
                if r.is_ok() {
                    log.segments.push(seg);
                }
                r
            } else {
                let tail = log.segments.last_mut().expect("not a rollover");
                let claim = log.durable.claim();
                tail.append(entries, claim, &mut buf, sync)
                    .map(|_| tail.handle())
            };
            // Read before the caller can sync: a truncation after this voids the handle's claim.
            let epoch = log.durable.epoch();
            if r.is_ok() {
                log.stats.appends += 1;
                log.stats.entries_appended += entries.len() as u64;
                log.stats.bytes_appended += buf.len() as u64;
                if sync {
                    log.durable.synced(epoch, after);
                }
            }
            log.buf = buf;
            r.map(|file| {
                Some(SyncHandle {
                    file,
                    durable: log.durable.clone(),
                    epoch,
                    next: after,
                })
            })
        })
    }

    /// The entry at `index`; `None` when it is purged, past the end, or before the log's start.
    pub fn get(&self, index: u64) -> Result<Option<Bytes>> {
        let Some(seg) = self.segment_of(index) else {
            return Ok(None);
        };
        let mut out = Vec::with_capacity(1);
        seg.read(index, index + 1, &mut out)?;
        Ok(out.pop().map(|(_, b)| b))
    }

    /// The segment holding entry `index`, if the log has it.
    fn segment_of(&self, index: u64) -> Option<&Segment> {
        if index < self.first_unpurged() {
            return None;
        }
        let i = self.segments.partition_point(|s| s.base() <= index);
        let seg = self.segments.get(i.checked_sub(1)?)?;
        (index < seg.next_index()).then_some(seg)
    }

    /// The entries with indexes in `range`, in order. The range is cut to the entries the log
    /// holds; asking for a purged index is an [`Error::Purged`].
    pub fn range(&self, range: impl RangeBounds<u64>) -> Result<Vec<(u64, Bytes)>> {
        let lo = match range.start_bound() {
            Bound::Included(&i) => i,
            Bound::Excluded(&i) => i.saturating_add(1),
            Bound::Unbounded => self.first_unpurged(),
        };
        let hi = match range.end_bound() {
            Bound::Included(&i) => i.saturating_add(1),
            Bound::Excluded(&i) => i,
            Bound::Unbounded => u64::MAX,
        };
        if lo >= hi {
            return Ok(Vec::new());
        }
        if let Some(p) = self.purged.as_ref().filter(|p| lo <= p.upto) {
            return Err(Error::Purged {
                index: lo,
                purged: p.upto,
            });
        }
        let hi = hi.min(self.next_index().unwrap_or(lo));
        let mut out = Vec::with_capacity(hi.saturating_sub(lo).min(4096) as usize);
        let start = self.segments.partition_point(|s| s.next_index() <= lo);
        for seg in self.segments[start..].iter().take_while(|s| s.base() < hi) {
            seg.read(lo.max(seg.base()), hi.min(seg.next_index()), &mut out)?;
        }
        Ok(out)
    }

    /// Removes every entry from `from` on, durably: once this returns, no crash brings any of
    /// them back. Later segments are deleted newest first and the directory synced before the
    /// segment holding `from` is cut, so a crash part-way leaves a prefix of the old log.
    pub fn truncate(&mut self, from: u64) -> Result<()> {
        self.check_writable()?;
        if let Some(p) = &self.purged {
            if from <= p.upto {
                return Err(Error::Purged {
                    index: from,
                    purged: p.upto,
                });
            }
        }
        if self.last_index().is_none_or(|last| from > last) {
            return Ok(());
        }
        // Before any file changes: a sync in flight must not raise the claim over what goes.
        self.durable.truncated(from);
        self.guard(|log| {
            // The segments kept whole, then the one cut in the middle (if any), then those that
            // go. Cutting at the purge point would leave a segment of purged entries only, so
            // there every segment goes.
            let keep_whole = log.segments.partition_point(|s| s.next_index() <= from);
            let drop_from = if from == log.first_unpurged() {
                0
            } else {
                log.segments.partition_point(|s| s.base() < from)
            };
            let removed = log.remove_segments_newest_first(drop_from)?;
            if removed > 0 {
                fsutil::sync_dir(&log.dir)?;
            }
            if keep_whole < drop_from {
                log.segments[keep_whole].truncate_from(from)?;
            }
            Ok(())
        })
    }

    /// Deletes the files of segments `from..`, newest first, and forgets them.
    fn remove_segments_newest_first(&mut self, from: usize) -> Result<usize> {
        let mut removed = 0;
        while self.segments.len() > from {
            let seg = self.segments.last().expect("len > from");
            remove_file(seg.path())?;
            self.segments.pop();
            removed += 1;
        }
        Ok(removed)
    }

    /// Removes every entry up to `upto`, durably, and records `record` (openraft's
    /// `last_purged_log_id`) with the purge point. The record is synced before any segment is
    /// deleted, so after a crash the purge point is known even if the entries are gone. Segments
    /// are deleted once every entry in them is purged; a partly purged one stays on disk, its
    /// purged entries unreadable. `upto` may lie past the last entry (after a snapshot install):
    /// the log is then empty and continues at `upto + 1`. A purge point at or below the current
    /// one changes nothing.
    pub fn purge(&mut self, upto: u64, record: &[u8]) -> Result<()> {
        self.check_writable()?;
        if self.purged.as_ref().is_some_and(|p| p.upto >= upto) {
            return Ok(());
        }
        if upto == u64::MAX {
            return Err(Error::InvalidArgument(
                "purge up to u64::MAX leaves no next index".into(),
            ));
        }
        if let Some(first) = self.segments.first().map(|s| s.base()) {
            if upto + 1 < first {
                return Err(Error::InvalidArgument(format!(
                    "purge up to {upto} is below the log's first entry {first}: the purge point \
                     would not adjoin the entries"
                )));
            }
        }
        let purged = Purged {
            upto,
            record: Bytes::copy_from_slice(record),
        };
        let encoded = purged.encode();
        meta::check_len(encoded.len())?;
        self.guard(|log| {
            meta::write(&log.dir, meta::PURGED_FILE, &encoded)?;
            log.purged = Some(purged);
            let gone = log.segments.partition_point(|s| s.next_index() <= upto + 1);
            for seg in log.segments.drain(..gone) {
                remove_file(seg.path())?;
            }
            if gone > 0 {
                fsutil::sync_dir(&log.dir)?;
            }
            Ok(())
        })
    }

    /// Durably replaces the value of `kind`; returns once it survives a crash.
    pub fn save_meta(&mut self, kind: MetaKind, value: &[u8]) -> Result<()> {
        self.check_writable()?;
        meta::check_len(value.len())?;
        self.guard(|log| {
            meta::write(&log.dir, kind.file_name(), value)?;
            let v = Some(Bytes::copy_from_slice(value));
            match kind {
                MetaKind::Vote => log.vote = v,
                MetaKind::Committed => log.committed = v,
            }
            Ok(())
        })
    }

    /// The last value saved for `kind`, if any.
    pub fn meta(&self, kind: MetaKind) -> Option<Bytes> {
        match kind {
            MetaKind::Vote => self.vote.clone(),
            MetaKind::Committed => self.committed.clone(),
        }
    }
}

/// Makes a deferred append durable; see [`Log::append_deferred`].
#[derive(Debug, Clone)]
pub struct SyncHandle {
    file: std::sync::Arc<std::fs::File>,
    /// The log's watermark, raised to `next` once the append is synced (unless a truncation
    /// since `epoch` voided it), so that later records may claim the append durable.
    durable: claim::Watermark,
    epoch: u64,
    next: u64,
}

impl SyncHandle {
    /// `fdatasync` of the segment the append went to (covering every write to it so far).
    pub fn sync(&self) -> std::io::Result<()> {
        self.file.sync_data()?;
        self.covered();
        Ok(())
    }

    /// Tells the log that a successful [`sync`](Self::sync) of [the same
    /// file](Self::same_file), begun after this append was written, covered it.
    pub fn covered(&self) {
        self.durable.synced(self.epoch, self.next);
    }

    /// True when both handles sync the same segment (one sync serves both).
    pub fn same_file(&self, other: &SyncHandle) -> bool {
        std::sync::Arc::ptr_eq(&self.file, &other.file)
    }
}

/// The lowest index a purge left readable.
fn first_unpurged(purged: &Option<Purged>) -> u64 {
    purged.as_ref().map_or(0, |p| p.upto + 1)
}

fn remove_file(path: &Path) -> Result<()> {
    std::fs::remove_file(path).ctx(|| format!("removing {}", path.display()))
}

/// Opens the segments of `dir` and restores the log's invariants (see the module doc), given that
/// entries below `first_unpurged` are purged. Returns the segments, the torn tail cut from the
/// last one, and how many segments were deleted for lying entirely in the purged range or being
/// empty. Damage anywhere else is corruption (see [`Log::open_with`]).
fn recover_segments(
    dir: &Path,
    first_unpurged: u64,
) -> Result<(Vec<Segment>, Option<RecoveryDamage>, usize)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
        let entry = entry.ctx(|| format!("listing {}", dir.display()))?;
        if let Some(base) = entry.file_name().to_str().and_then(segment::parse_name) {
            found.push((base, entry.path()));
        }
    }
    found.sort_unstable_by_key(|(base, _)| *base);

    // A segment whose successor starts at or below the first unpurged index holds only purged
    // entries (a crash interrupted their purge). Delete it unread: damage in entries nobody will
    // read again must not cut the live ones after it.
    let purged_away = found
        .windows(2)
        .take_while(|w| w[1].0 <= first_unpurged)
        .count();
    let mut removed = 0;
    for (_, path) in found.drain(..purged_away) {
        remove_file(&path)?;
        removed += 1;
    }
    if let Some((base, path)) = found.first() {
        if first_unpurged > 0 && *base > first_unpurged {
            return Err(Error::corruption(
                path,
                format!("entries {first_unpurged}..{base} are missing after the purge point"),
            ));
        }
    }

    let mut segments: Vec<Segment> = Vec::with_capacity(found.len());
    let mut damage = None;
    for (i, (base, path)) in found.iter().enumerate() {
        if let Some(prev) = segments.last() {
            if *base != prev.next_index() {
                return Err(Error::corruption(
                    path,
                    format!(
                        "segment starts at index {base} but the previous one ends before {}: \
                         entries are missing or duplicated",
                        prev.next_index()
                    ),
                ));
            }
        }
        let (mut seg, dmg) = Segment::open(path.clone(), *base)?;
        let Some(dmg) = dmg else {
            segments.push(seg);
            continue;
        };
        if let Some((later_base, later)) = found.get(i + 1) {
            // A segment is created only after the one before it is synced: the later one's
            // existence claims every entry below its base durable, the damaged one included.
            return Err(Error::CorruptRecord {
                path: path.clone(),
                offset: dmg.offset,
                detail: format!(
                    "entry {} is damaged, but segment {} (from entry {later_base}) was created \
                     after this one was synced",
                    dmg.index,
                    later.display()
                ),
            });
        }
        seg.truncate_from(seg.next_index())?;
        tracing::info!(
            segment = %path.display(),
            offset = dmg.offset,
            index = dmg.index,
            bytes = dmg.bytes,
            "raft log: cut a torn tail (no later record claims it was synced)"
        );
        damage = Some(RecoveryDamage {
            segment: path.clone(),
            offset: dmg.offset,
            index: dmg.index,
            bytes_dropped: dmg.bytes,
        });
        segments.push(seg);
    }

    // What is left may end in an empty segment (a crash between creating it and writing to it,
    // or damage at its first record), and the one segment left may hold only purged entries.
    let mut stale = Vec::new();
    if segments.last().is_some_and(|s| s.is_empty()) {
        stale.extend(segments.pop());
    }
    let gone = segments.partition_point(|s| s.next_index() <= first_unpurged);
    stale.extend(segments.drain(..gone));
    for seg in &stale {
        remove_file(seg.path())?;
    }
    removed += stale.len();
    if removed > 0 {
        fsutil::sync_dir(dir)?;
    }
    Ok((segments, damage, removed))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u64) -> Vec<u8> {
        format!("entry-{i}").into_bytes()
    }

    fn append(log: &mut Log, range: std::ops::Range<u64>) {
        let data: Vec<(u64, Vec<u8>)> = range.map(|i| (i, entry(i))).collect();
        let refs: Vec<(u64, &[u8])> = data.iter().map(|(i, d)| (*i, &d[..])).collect();
        log.append(&refs).unwrap();
    }

    fn small() -> LogOptions {
        LogOptions { segment_size: 200 }
    }

    #[test]
    fn appends_must_be_contiguous() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open_with(d.path(), small()).unwrap();
        assert_eq!(log.next_index(), None);
        append(&mut log, 7..10);
        assert_eq!((log.first_index(), log.last_index()), (Some(7), Some(9)));
        let e = log.append(&[(11, b"x")]).unwrap_err();
        assert!(matches!(
            e,
            Error::NotContiguous {
                expected: 10,
                got: 11
            }
        ));
        let e = log.append(&[(10, b"x"), (12, b"y")]).unwrap_err();
        assert!(matches!(
            e,
            Error::NotContiguous {
                expected: 11,
                got: 12
            }
        ));
        // A rejected batch writes nothing, and does not poison the log.
        assert_eq!(log.last_index(), Some(9));
        append(&mut log, 10..11);
        assert_eq!(log.get(10).unwrap().unwrap(), entry(10));
        assert!(log.append(&[(u64::MAX, b"x")]).is_err());
        assert!(log.append(&[]).is_ok());
    }

    #[test]
    fn batches_are_never_split_across_segments() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open_with(d.path(), small()).unwrap();
        for i in 0..50 {
            append(&mut log, i * 3..i * 3 + 3);
        }
        let s = log.stats();
        assert_eq!((s.appends, s.entries_appended), (50, 150));
        assert!(s.segments_created > 10, "{s:?}");
        assert_eq!(log.segments.len() as u64, s.segments_created);
        // Each batch lies in one segment.
        for seg in &log.segments {
            assert_eq!(seg.base() % 3, 0);
            assert_eq!(seg.next_index() % 3, 0);
        }
    }

    #[test]
    fn truncate_and_purge_bounds() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open_with(d.path(), small()).unwrap();
        append(&mut log, 0..40);
        log.purge(9, b"p9").unwrap();
        assert!(matches!(log.truncate(9), Err(Error::Purged { .. })));
        log.truncate(100).unwrap();
        assert_eq!(log.last_index(), Some(39));
        log.truncate(25).unwrap();
        assert_eq!(log.last_index(), Some(24));
        assert_eq!(log.get(25).unwrap(), None);
        // Purging past the end empties the log; it continues after the purge point.
        log.purge(30, b"p30").unwrap();
        assert_eq!((log.first_index(), log.last_index()), (None, None));
        assert_eq!(log.next_index(), Some(31));
        assert!(log.segments.is_empty());
        assert!(log.append(&[(25, b"x")]).is_err());
        append(&mut log, 31..33);
        assert_eq!(log.first_index(), Some(31));
        // An older purge point changes nothing.
        log.purge(5, b"p5").unwrap();
        assert_eq!(log.last_purged().unwrap().0, 30);
    }

    #[test]
    fn truncating_at_the_purge_point_keeps_no_segment_of_purged_entries() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(d.path()).unwrap();
        append(&mut log, 0..4);
        log.purge(0, b"p0").unwrap();
        assert_eq!(log.segments.len(), 1);
        log.truncate(1).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (None, None));
        assert!(log.segments.is_empty());
        assert_eq!(log.next_index(), Some(1));
        append(&mut log, 1..3);
        drop(log);
        let (log, _) = Log::open(d.path()).unwrap();
        assert_eq!((log.first_index(), log.last_index()), (Some(1), Some(2)));
    }

    #[test]
    fn oversized_meta_values_are_refused_without_poisoning() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(d.path()).unwrap();
        append(&mut log, 0..4);
        let big = vec![0u8; MAX_META_LEN + 1];
        assert!(matches!(
            log.save_meta(MetaKind::Vote, &big),
            Err(Error::InvalidArgument(_))
        ));
        // The purge record shares its file with the 8-byte purge point.
        assert!(matches!(
            log.purge(1, &big[..MAX_META_LEN - 7]),
            Err(Error::InvalidArgument(_))
        ));
        assert_eq!(log.last_purged(), None);
        log.purge(1, &big[..MAX_META_LEN - 8]).unwrap();
        log.save_meta(MetaKind::Vote, b"v").unwrap();
        append(&mut log, 4..5);
    }

    #[test]
    fn purge_below_a_late_start_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open_with(d.path(), small()).unwrap();
        append(&mut log, 100..110);
        assert!(matches!(log.purge(50, b""), Err(Error::InvalidArgument(_))));
        log.purge(99, b"").unwrap();
        assert_eq!(log.first_index(), Some(100));
    }
}
