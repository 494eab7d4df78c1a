//! Opening a database: lock, manifest replay, WAL replay, cleanup, background threads.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use arc_swap::ArcSwap;

use super::write::{Queue, WriteState};
use super::{BgState, Inner, RecoveryReport, SuperVersion, VersionSet};
use crate::batch;
use crate::cache::{BlockCache, TableCache};
use crate::error::IoContext;
use crate::fsutil::{self, DirLock};
use crate::manifest::{self, ManifestWriter, VersionEdit};
use crate::memtable::Memtable;
use crate::sst::TableBuilder;
use crate::stats::Counters;
use crate::version::{FileMeta, Version};
use crate::wal::{self, WalWriter};
use crate::{Error, Options, Result};

/// Distinguishes databases that share a block cache.
static NEXT_CACHE_ID: AtomicU64 = AtomicU64::new(1);

struct Recovered {
    levels: Vec<BTreeMap<u64, FileMeta>>,
    next_file: u64,
    log_number: u64,
    last_seq: u64,
    flushed_seq: u64,
    app_state: Vec<u8>,
    manifest_number: Option<u64>,
}

fn replay_manifest(dir: &Path, opts: &Options, report: &mut RecoveryReport) -> Result<Recovered> {
    let mut r = Recovered {
        levels: vec![BTreeMap::new(); opts.num_levels],
        next_file: 1,
        log_number: 0,
        last_seq: 0,
        flushed_seq: 0,
        app_state: Vec::new(),
        manifest_number: None,
    };
    let Some(rep) = manifest::replay(dir)? else {
        // Without CURRENT, a table or a non-empty WAL segment means data was acknowledged and
        // CURRENT was lost: refuse rather than start empty. An empty segment or a manifest alone
        // is what a crash during the very first open leaves behind (CURRENT is written last);
        // nothing was acknowledged then, so the directory is a new database.
        let mut holds_data = false;
        for e in std::fs::read_dir(dir).ctx(|| format!("listing {}", dir.display()))? {
            let e = e.ctx(|| format!("listing {}", dir.display()))?;
            let n = e.file_name().to_string_lossy().into_owned();
            holds_data |= fsutil::parse_sst_name(&n).is_some()
                || (wal::parse_segment_name(&n).is_some() && wal::holds_writes(&e.path())?);
        }
        if holds_data {
            return Err(Error::corruption(
                dir.join("CURRENT"),
                "missing, but tables or logged writes exist",
            ));
        }
        if !opts.create_if_missing {
            return Err(Error::InvalidArgument(format!(
                "no database at {}",
                dir.display()
            )));
        }
        return Ok(r);
    };
    if opts.error_if_exists {
        return Err(Error::InvalidArgument(format!(
            "database exists at {}",
            dir.display()
        )));
    }
    let mpath = manifest::manifest_path(dir, rep.manifest_number);
    report.manifest_bytes_dropped = rep.dropped_bytes;
    for e in &rep.edits {
        r.log_number = r.log_number.max(e.log_number.unwrap_or(0));
        r.next_file = r.next_file.max(e.next_file_number.unwrap_or(0));
        r.last_seq = r.last_seq.max(e.last_seq.unwrap_or(0));
        r.flushed_seq = r.flushed_seq.max(e.flushed_seq.unwrap_or(0));
        if let Some(a) = &e.app_state {
            r.app_state = a.clone();
        }
        for (level, number) in &e.deleted {
            if let Some(l) = r.levels.get_mut(*level) {
                l.remove(number);
            }
        }
        for (level, m) in &e.added {
            let l = r.levels.get_mut(*level).ok_or_else(|| {
                Error::corruption(
                    &mpath,
                    format!("table {} at level {level} beyond num_levels", m.number),
                )
            })?;
            l.insert(m.number, m.clone());
        }
    }
    r.manifest_number = Some(rep.manifest_number);
    Ok(r)
}

/// Replays WAL segments from `log_number` on into `mem`. A torn tail (see `wal`) ends the
/// replay and is cut; a later segment that exists whole then proves the damage was not a torn
/// tail (a segment is synced before the next one is created), and so does a record claiming it
/// synced: both are [`Error::Corruption`], naming the damaged file and offset.
fn replay_wal(
    dir: &Path,
    log_number: u64,
    mem: &Memtable,
    last_seq: &mut u64,
    report: &mut RecoveryReport,
) -> Result<()> {
    let mut segments: Vec<u64> = std::fs::read_dir(dir)
        .ctx(|| format!("listing {}", dir.display()))?
        .filter_map(|e| wal::parse_segment_name(&e.ok()?.file_name().to_string_lossy()))
        .filter(|&n| n >= log_number)
        .collect();
    segments.sort_unstable();
    for (i, &n) in segments.iter().enumerate() {
        let path = wal::segment_path(dir, n);
        let r = wal::replay_segment(&path, |seq, rep| {
            let ops = batch::decode_ops(rep)?;
            for op in ops {
                mem.insert(op.key, seq, op.kind, op.value);
            }
            *last_seq = (*last_seq).max(seq);
            Some(())
        })?;
        report.wal_segments += 1;
        report.wal_records_replayed += r.records;
        let Some(at) = r.torn_at else {
            continue;
        };
        for &later in &segments[i + 1..] {
            let later = wal::segment_path(dir, later);
            if wal::has_first_record(&later)? {
                return Err(Error::corruption(
                    &path,
                    format!(
                        "damaged record at byte offset {at}, but {} was created after this \
                         segment was synced",
                        later.display()
                    ),
                ));
            }
        }
        report.wal_bytes_dropped += r.dropped;
        tracing::info!(segment = %path.display(), offset = at, dropped_bytes = r.dropped, "WAL: cut a torn tail of unacknowledged writes");
        wal::cut(&path, at)?;
        // Later segments are empty (or torn before their header): the sweep below deletes
        // them once the new manifest is durable.
        break;
    }
    Ok(())
}

/// Largest file number of any table, WAL segment or manifest in `dir` (0 if none).
fn max_file_number(dir: &Path) -> Result<u64> {
    Ok(std::fs::read_dir(dir)
        .ctx(|| format!("listing {}", dir.display()))?
        .filter_map(|e| {
            let name = e.ok()?.file_name().to_string_lossy().into_owned();
            let name = name.strip_suffix(".corrupt").unwrap_or(&name);
            fsutil::parse_sst_name(name)
                .or_else(|| wal::parse_segment_name(name))
                .or_else(|| manifest::parse_manifest_name(name))
        })
        .max()
        .unwrap_or(0))
}

/// The tables under this database's prefix in the object store, as (number, object key), or
/// `None` when the store cannot be listed now (the sweep then waits for a later open; opening
/// does not depend on it). Keys of another shape are not this database's tables.
fn list_cold_tables(cold: &crate::ColdTier) -> Option<Vec<(u64, String)>> {
    let prefix = format!("{}/sst/", cold.prefix);
    let objects = match cold.store.list(&prefix) {
        Ok(o) => o,
        Err(e) => {
            tracing::warn!(error = %e, "object store not listed; orphan objects stay until a later open");
            return None;
        }
    };
    Some(
        objects
            .iter()
            .filter_map(|o| {
                let n = fsutil::parse_object_name(o.key.strip_prefix(&prefix)?)?;
                Some((n, o.key.clone()))
            })
            .collect(),
    )
}

/// Queues for deletion (after the grace period) the listed tables the version does not name
/// and this database could have written (numbered below the manifest's bound): uploads whose
/// manifest edit never happened, deletions that failed or were pending when the process
/// stopped. Numbers above the bound belong to no version this database ever had (another
/// database under the same prefix, or a newer copy of this one): they are left alone. Returns
/// how many were queued.
fn sweep_objects(
    listed: &[(u64, String)],
    bound: u64,
    tables: &TableCache,
    live: &std::collections::HashSet<String>,
) -> u64 {
    let mut found = 0;
    for (n, key) in listed {
        if *n >= bound {
            tracing::warn!(
                object = %key,
                "object numbered above this database's tables: is another database using the same prefix?"
            );
        } else if !live.contains(key) {
            tables.defer_object(key);
            found += 1;
        }
    }
    found
}

pub(crate) fn open(dir: &Path, opts: Options) -> Result<Arc<Inner>> {
    opts.validate()?;
    if !dir.exists() {
        if !opts.create_if_missing {
            return Err(Error::InvalidArgument(format!(
                "no database at {}",
                dir.display()
            )));
        }
        std::fs::create_dir_all(dir).ctx(|| format!("creating {}", dir.display()))?;
    }
    let dir_lock = DirLock::acquire(dir)?;
    let mut report = RecoveryReport::default();
    let mut rec = replay_manifest(dir, &opts, &mut report)?;

    let blocks = opts
        .block_cache
        .clone()
        .unwrap_or_else(|| BlockCache::new(opts.block_cache_bytes));
    let cache_id = NEXT_CACHE_ID.fetch_add(1, Ordering::Relaxed);
    // Every request to the cold tier (uploads, reads, sweeps) goes through retries with backoff
    // and a bound on requests in flight.
    // The counters see every attempt, so GETs per lookup include retries.
    let object_counters = Arc::new(crate::object::ObjectCounters::default());
    let cold = opts.cold_tier.clone().map(|c| crate::ColdTier {
        store: Arc::new(crate::object::RetryingStore::new(
            crate::object::CountingStore::new(c.store.clone(), object_counters.clone()),
            c.retry,
        )),
        ..c
    });
    // Opened before anything is written, so that a cache directory another database holds
    // fails the open cleanly.
    let disk = opts
        .cold_tier
        .as_ref()
        .and_then(|c| c.disk_cache.as_ref())
        .map(crate::diskcache::DiskCache::open)
        .transpose()?;
    let tables = Arc::new(TableCache::new(
        dir.to_path_buf(),
        cold,
        opts.max_open_tables,
        blocks,
        cache_id,
        disk,
    ));
    if opts.replicated {
        // Nothing is deleted until the replication layer says how far every replica got.
        tables.gc().set_floor(0);
    }

    // Every local table the manifest names must be there, whole. (Cold tables are checked when
    // first read: listing the store here would make opening depend on it being up.)
    for m in rec.levels.iter().flat_map(|l| l.values()) {
        if m.cold {
            if opts.cold_tier.is_none() {
                return Err(Error::InvalidArgument(format!(
                    "table {} is in an object store; open with Options::cold_tier set",
                    m.number
                )));
            }
            continue;
        }
        let p = fsutil::sst_path(dir, m.number);
        match std::fs::metadata(&p) {
            Ok(md) if md.len() == m.size => {}
            Ok(md) => {
                return Err(Error::corruption(
                    &p,
                    format!("size {} but the manifest says {}", md.len(), m.size),
                ))
            }
            Err(_) => {
                return Err(Error::corruption(
                    &p,
                    "table named by the manifest is missing",
                ))
            }
        }
    }

    // Start above every number in the directory too: an open that failed after creating its
    // WAL or manifest (but before switching CURRENT) used numbers the manifest never recorded.
    // And above every object under the prefix, so that no upload replaces one.
    let listed = tables.cold().and_then(list_cold_tables);
    let manifest_bound = rec.next_file;
    let above_objects = listed
        .iter()
        .flatten()
        .map(|(n, _)| n)
        .max()
        .map_or(0, |n| n + 1);
    let mut next_file = rec
        .next_file
        .max(max_file_number(dir)? + 1)
        .max(above_objects);
    let mut alloc = || {
        let n = next_file;
        next_file += 1;
        n
    };
    let mem = Memtable::new(0, opts.write_buffer_size);
    let mut last_seq = rec.last_seq;
    replay_wal(dir, rec.log_number, &mem, &mut last_seq, &mut report)?;
    if !mem.is_empty() {
        // Turn the replayed writes into an L0 table now, so the old segments can go.
        let number = alloc();
        let b = TableBuilder::create(
            &fsutil::sst_path(dir, number),
            opts.block_size,
            opts.block_restart_interval,
            opts.compression,
            opts.bloom_fp_rate,
        )?;
        let meta = super::flush::build_table(&Arc::new(mem), last_seq, number, b)?;
        rec.levels[0].insert(number, meta);
    }
    if opts.replicated {
        // The memtables start empty: the owner replays its log from the flushed sequence on,
        // and anything later the manifest saw applied is applied again.
        last_seq = rec.flushed_seq;
    }
    for m in rec.levels.iter().flat_map(|l| l.values()) {
        last_seq = last_seq.max(m.max_seq);
    }
    let wal_number = if opts.wal { alloc() } else { 0 };
    let manifest_number = alloc();
    let reserved = next_file + super::FILE_NUMBER_RESERVATION;

    let mut base = VersionEdit {
        log_number: Some(wal_number),
        next_file_number: Some(reserved),
        last_seq: Some(last_seq),
        flushed_seq: Some(rec.flushed_seq),
        app_state: Some(rec.app_state.clone()),
        ..Default::default()
    };
    for (level, l) in rec.levels.iter().enumerate() {
        for m in l.values() {
            let mut m = m.clone();
            if m.cold && m.object.is_none() {
                // Recorded by manifest format 2 or older: the new manifest names its object.
                m.object = Some(tables.legacy_object_key(m.number));
            }
            base.added.push((level, m));
        }
    }
    let (version, _) = Version::new(opts.num_levels).apply(&base, |m| {
        Arc::new(crate::version::TableFile::new(
            m.clone(),
            fsutil::sst_path(dir, m.number),
            tables.clone(),
        ))
    });
    // Validate before anything is written: a bad state must not become a new manifest.
    let current = rec.manifest_number.map(|n| manifest::manifest_path(dir, n));
    version
        .check_disjoint()
        .map_err(|d| Error::corruption(current.unwrap_or_else(|| dir.to_path_buf()), d))?;
    let wal = if opts.wal {
        Some(WalWriter::create(dir, wal_number)?)
    } else {
        None
    };
    let manifest = ManifestWriter::create(dir, manifest_number, &base)?;

    // Everything not referenced now is garbage from an earlier run or an interrupted operation.
    let live = |cold: bool| -> std::collections::HashSet<u64> {
        base.added
            .iter()
            .filter(|(_, m)| m.cold == cold)
            .map(|(_, m)| m.number)
            .collect()
    };
    let (live, live_cold) = (live(false), live(true));
    let live_objects: std::collections::HashSet<String> = base
        .added
        .iter()
        .filter(|(_, m)| m.cold)
        .map(|(_, m)| tables.object_key(m))
        .collect();
    for e in std::fs::read_dir(dir)
        .ctx(|| format!("listing {}", dir.display()))?
        .filter_map(|e| e.ok())
    {
        let name = e.file_name().to_string_lossy().into_owned();
        let obsolete = match () {
            _ if fsutil::parse_sst_name(&name).is_some_and(|n| !live.contains(&n)) => {
                report.orphan_files_deleted += 1;
                true
            }
            _ if wal::parse_segment_name(&name).is_some_and(|n| n != wal_number) => true,
            _ if manifest::parse_manifest_name(&name).is_some_and(|n| n != manifest_number) => true,
            _ if name
                .strip_suffix(".meta")
                .and_then(|n| n.parse::<u64>().ok())
                .is_some_and(|n| !live_cold.contains(&n)) =>
            {
                true
            }
            _ => name.ends_with(".tmp"),
        };
        if obsolete {
            let _ = std::fs::remove_file(e.path());
        }
    }

    if let Some(listed) = &listed {
        report.orphan_objects_found = sweep_objects(listed, manifest_bound, &tables, &live_objects);
        if !opts.replicated {
            report.orphan_files_deleted += tables.collect_garbage(&live_objects);
        }
    }

    let pending = crate::compaction::leveled::pending_bytes(&version, &opts);
    let num_levels = opts.num_levels;
    let inner = Arc::new(Inner {
        dir: dir.to_path_buf(),
        tables,
        sv: ArcSwap::from_pointee(SuperVersion {
            mem: Arc::new(Memtable::new(wal_number, opts.write_buffer_size)),
            imms: Vec::new(),
            version: Arc::new(version),
        }),
        visible_seq: AtomicU64::new(last_seq),
        versions: Mutex::new(VersionSet {
            manifest,
            next_file,
            reserved,
            file_limit: u64::MAX,
            log_number: wal_number,
            pointers: vec![Vec::new(); num_levels],
            flushed_seq: rec.flushed_seq,
            app_state: rec.app_state,
        }),
        queue: Queue::new(WriteState { wal, last_seq }),
        bg: Mutex::new(BgState::default()),
        bg_cv: Condvar::new(),
        compaction_lock: Mutex::new(()),
        snapshots: Mutex::new(BTreeMap::new()),
        stats: Counters::default(),
        object_counters,
        recovery: report,
        closed: AtomicBool::new(false),
        object_gc: AtomicBool::new(!opts.replicated),
        has_bg_error: AtomicBool::new(false),
        threads: Mutex::new(Vec::new()),
        dir_lock: Mutex::new(Some(dir_lock)),
        opts,
    });
    inner
        .stats
        .pending_compaction_bytes
        .store(pending, Ordering::Relaxed);
    let spawn = |name: &str, f: fn(Arc<Inner>)| {
        let i = inner.clone();
        std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || f(i))
            .ctx(|| format!("spawning {name} thread"))
    };
    // A replica's owner drives flushing and compaction; its compaction thread only deletes
    // garbage objects (while allowed to).
    if !inner.opts.replicated {
        let flush = spawn("lsm-flush", super::flush::flush_loop)?;
        super::lock(&inner.threads).push(flush);
    }
    let compact = spawn("lsm-compact", super::compact::compaction_loop)?;
    super::lock(&inner.threads).push(compact);
    inner.request_compaction();
    Ok(inner)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::WriteBatch;

    /// Segments 1 and 2: five synced batches in the first, then the second created (its header
    /// synced); returns the start of the first segment's last record.
    fn two_segments(dir: &Path) -> usize {
        let mut w = WalWriter::create(dir, 1).unwrap();
        for seq in 1..=5u64 {
            let mut b = WriteBatch::new();
            b.put(format!("k{seq}"), "v");
            let rep = b.resolved_rep(|| 0).into_owned();
            w.append([(seq, &rep[..])].into_iter(), true).unwrap();
        }
        // As a memtable switch does: the first segment is retired before the next is created.
        w.retire().unwrap();
        WalWriter::create(dir, 2).unwrap();
        let data = std::fs::read(wal::segment_path(dir, 1)).unwrap();
        let mut at = 0;
        let mut last = 0;
        while let Some(len) = crate::coding::u32_at(&data, at) {
            last = at;
            at += crate::framing::HEADER_LEN + len as usize;
        }
        last
    }

    fn replay(dir: &Path) -> Result<(u64, RecoveryReport)> {
        let mem = Memtable::new(0, 1 << 20);
        let (mut last_seq, mut report) = (0, RecoveryReport::default());
        replay_wal(dir, 0, &mem, &mut last_seq, &mut report)?;
        Ok((last_seq, report))
    }

    #[test]
    fn damage_before_a_later_segment_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let last = two_segments(d.path());
        let path = wal::segment_path(d.path(), 1);
        let mut data = std::fs::read(&path).unwrap();
        // The last record of the first segment: nothing after it in the file, but the second
        // segment was created only after this one was synced.
        data[last + 10] ^= 1;
        std::fs::write(&path, &data).unwrap();
        match replay(d.path()) {
            Err(Error::Corruption { path: p, detail }) => {
                assert_eq!(p, path);
                assert!(detail.contains(&format!("byte offset {last}")), "{detail}");
            }
            r => panic!("not refused: {:?}", r.map(|(s, _)| s)),
        }
        // Without the second segment's header (a crash right after creating it), it is a
        // torn tail, cut on disk.
        std::fs::write(wal::segment_path(d.path(), 2), b"").unwrap();
        let (last_seq, report) = replay(d.path()).unwrap();
        assert_eq!((last_seq, report.wal_records_replayed), (4, 4));
        assert_eq!(std::fs::metadata(&path).unwrap().len(), last as u64);
    }

    /// A database written before manifests named objects (format 2: cold tables as field 7,
    /// objects at `<prefix>/sst/<number>.sst`) opens with every table readable where it was, and
    /// the manifest it starts names those objects from then on.
    #[test]
    fn cold_tables_recorded_without_object_keys_are_read_at_their_old_keys() {
        use crate::object::{LocalDirStore, ObjectStore};
        let d = tempfile::tempdir().unwrap();
        let objects = tempfile::tempdir().unwrap();
        let store = Arc::new(LocalDirStore::open(objects.path()).unwrap());
        let opts = || Options {
            write_buffer_size: 32 << 10,
            target_file_size: 32 << 10,
            cold_tier: Some(crate::ColdTier::new(store.clone(), "old")),
            ..Options::default()
        };
        let db = crate::Db::open(d.path(), opts()).unwrap();
        for i in 0..2_000u32 {
            db.put(format!("k{i:05}"), format!("v{i}-{}", "x".repeat(30)))
                .unwrap();
        }
        db.compact_range::<&[u8], _>(..).unwrap();
        let cold: Vec<_> = db
            .tables()
            .into_iter()
            .filter(|t| t.object.is_some())
            .collect();
        assert!(!cold.is_empty());
        db.close().unwrap();

        // As format 2 left it: each object at its number's key, a manifest without keys.
        let legacy = |n: u64| format!("old/sst/{n:06}.sst");
        for t in &cold {
            let key = t.object.as_deref().unwrap();
            assert_ne!(key, legacy(t.number), "new tables get unique keys");
            store
                .put(&legacy(t.number), store.get(key).unwrap())
                .unwrap();
            store.delete(key).unwrap();
        }
        let rec = replay_manifest(d.path(), &opts(), &mut RecoveryReport::default()).unwrap();
        let mut base = VersionEdit {
            log_number: Some(rec.log_number),
            next_file_number: Some(rec.next_file),
            last_seq: Some(rec.last_seq),
            ..Default::default()
        };
        for (level, l) in rec.levels.iter().enumerate() {
            for m in l.values() {
                base.added.push((
                    level,
                    FileMeta {
                        object: None,
                        ..m.clone()
                    },
                ));
            }
        }
        let encoded = base.encode();
        assert!(VersionEdit::decode(&encoded).is_some_and(|e| e == base));
        let number = max_file_number(d.path()).unwrap() + 1;
        ManifestWriter::create(d.path(), number, &base).unwrap();

        let db = crate::Db::open(d.path(), opts()).unwrap();
        for i in (0..2_000u32).step_by(37) {
            let v = db.get(format!("k{i:05}")).unwrap().unwrap();
            assert!(v.starts_with(format!("v{i}-").as_bytes()));
        }
        let named: Vec<_> = db.tables().into_iter().filter_map(|t| t.object).collect();
        let mut want: Vec<_> = cold.iter().map(|t| legacy(t.number)).collect();
        let mut got = named.clone();
        want.sort();
        got.sort();
        assert_eq!(got, want);
        db.close().unwrap();
        let rec = replay_manifest(d.path(), &opts(), &mut RecoveryReport::default()).unwrap();
        for m in rec
            .levels
            .iter()
            .flat_map(|l| l.values())
            .filter(|m| m.cold)
        {
            assert_eq!(m.object.as_deref(), Some(legacy(m.number).as_str()));
        }
    }
}
