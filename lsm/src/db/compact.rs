//! Running compactions: the background thread, manual `compact_range`, and the merge itself.

use std::ops::Bound;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{lock, Inner};
use crate::compaction::leveled::{self, Compaction};
use crate::compaction::outputs::Outputs;
use crate::compaction::Gc;
use crate::iter::merge::MergeIter;
use crate::iter::sources::{LevelSource, TableSource};
use crate::iter::Source;
use crate::key;
use crate::manifest::VersionEdit;
use crate::{fsutil, Error, Result};

/// What a compaction wrote: the edit installing it and what it cost.
pub(crate) struct CompactionOutput {
    pub edit: VersionEdit,
    /// The round-robin cursor of the input level after this compaction.
    pub pointer: Option<Vec<u8>>,
    pub counts: CompactionCounts,
}

#[derive(Default)]
pub(crate) struct CompactionCounts {
    pub trivial_move: bool,
    pub read: u64,
    pub written: u64,
}

impl Inner {
    fn shutting_down(&self) -> bool {
        lock(&self.bg).shutdown
    }

    /// Merges the inputs of `c` into new tables of its output level and installs the result.
    pub(crate) fn run_compaction(&self, c: &Compaction) -> Result<()> {
        let out = self.compaction_output(c, self.opts.clock.now_millis())?;
        let mut vs = lock(&self.versions);
        // On failure the outputs stay: the manifest may name them (orphans go at the next open).
        self.install(&mut vs, out.edit, None)?;
        if let Some(p) = out.pointer {
            vs.pointers[c.level] = p;
        }
        drop(vs);
        self.count_compaction(&out.counts);
        Ok(())
    }

    pub(crate) fn count_compaction(&self, counts: &CompactionCounts) {
        if counts.trivial_move {
            self.stats.trivial_moves.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.stats.compactions.fetch_add(1, Ordering::Relaxed);
        self.stats
            .compaction_bytes_read
            .fetch_add(counts.read, Ordering::Relaxed);
        self.stats
            .compaction_bytes_written
            .fetch_add(counts.written, Ordering::Relaxed);
    }

    /// Merges the inputs of `c` into new tables (uploaded when they belong in the cold tier) and
    /// returns the edit that would install them, without installing it.
    pub(crate) fn compaction_output(
        &self,
        c: &Compaction,
        now_ms: u64,
    ) -> Result<CompactionOutput> {
        let mut edit = VersionEdit::default();
        for f in &c.inputs {
            edit.deleted.push((c.level, f.meta.number));
        }
        for f in &c.next {
            edit.deleted.push((c.output_level, f.meta.number));
        }
        // (`level == output_level` rewrites tables in place: the same edit deletes and adds.)
        let cold_output = self.opts.replicated
            || self
                .tables
                .cold()
                .is_some_and(|t| c.output_level >= t.first_level);
        // A local table moving into the cold tier must be uploaded: rewrite it instead.
        let crosses_tier = cold_output && c.inputs.iter().any(|f| !f.meta.cold);
        if c.is_trivial_move() && !crosses_tier {
            edit.added.push((c.output_level, c.inputs[0].meta.clone()));
            return Ok(CompactionOutput {
                edit,
                pointer: Some(c.inputs[0].meta.largest_user().to_vec()),
                counts: CompactionCounts {
                    trivial_move: true,
                    ..Default::default()
                },
            });
        }
        let version = self.sv.load().version.clone();
        let mut sources: Vec<Box<dyn Source>> = Vec::new();
        let mut read_bytes = 0u64;
        if c.level == 0 {
            for f in &c.inputs {
                let t = self.tables.get(&f.meta)?;
                sources.push(Box::new(TableSource::new(t, None, false, false)?));
            }
        } else {
            sources.push(Box::new(LevelSource::new(
                c.inputs.clone(),
                self.tables.clone(),
                None,
                false,
                false,
            )?));
        }
        if !c.next.is_empty() {
            sources.push(Box::new(LevelSource::new(
                c.next.clone(),
                self.tables.clone(),
                None,
                false,
                false,
            )?));
        }
        for f in c.inputs.iter().chain(c.next.iter()) {
            read_bytes += f.meta.size;
        }
        let mut merge = MergeIter::new(sources, false);
        let smallest = self.smallest_snapshot();
        let mut gc = Gc::new(smallest, now_ms, true);
        let mut zeroed: Vec<u8> = Vec::new();
        let mut out = Outputs::new(self.opts.target_file_size, || {
            let mut vs = lock(&self.versions);
            self.new_table(&mut vs)
        });
        let merged = (|| {
            let mut n = 0u64;
            while merge.valid() {
                n += 1;
                if n.is_multiple_of(4096) && self.shutting_down() {
                    return Err(Error::Closed);
                }
                let (k, v) = (merge.key(), merge.value_bytes());
                let (uk, trailer) = key::split(k);
                let bottom = version.is_bottom_for(c.output_level, uk);
                if gc.keep(k, &v, |_| bottom) {
                    // A surviving entry that every snapshot sees, with nothing below it, is the
                    // only version of its key any reader will ever need: its sequence number
                    // carries no information, and zeros compress to almost nothing.
                    if bottom && key::seq_of(trailer) <= smallest && key::seq_of(trailer) != 0 {
                        zeroed.clear();
                        key::append_internal_key(&mut zeroed, uk, 0, key::kind_byte(trailer));
                        out.add(&zeroed, &v)?;
                    } else {
                        out.add(k, &v)?;
                    }
                }
                merge.advance()?;
            }
            Ok(())
        })();
        let started = out.started();
        let outputs = match merged {
            Ok(()) => out.finish(),
            Err(e) => Err(e),
        };
        let uploaded = outputs.and_then(|(mut metas, written)| {
            if cold_output {
                for m in metas.iter_mut() {
                    self.upload(m)?;
                }
            }
            Ok((metas, written))
        });
        let (metas, written) = match uploaded {
            Ok(x) => x,
            Err(e) => {
                // Nothing names these yet (objects already uploaded are swept at open).
                for n in started {
                    let _ = std::fs::remove_file(fsutil::sst_path(&self.dir, n));
                    let _ = std::fs::remove_file(self.tables.meta_path(n));
                }
                return Err(e);
            }
        };
        for m in metas {
            edit.added.push((c.output_level, m));
        }
        Ok(CompactionOutput {
            edit,
            pointer: c
                .inputs
                .iter()
                .map(|f| f.meta.largest_user())
                .max()
                .map(<[u8]>::to_vec),
            counts: CompactionCounts {
                trivial_move: false,
                read: read_bytes,
                written,
            },
        })
    }

    /// Pushes everything overlapping `[lo, hi]` down to the deepest level holding data.
    pub(crate) fn compact_range(&self, lo: Bound<Vec<u8>>, hi: Bound<Vec<u8>>) -> Result<()> {
        let _g = lock(&self.compaction_lock);
        // Tables numbered from here on are written by this call (numbers only grow).
        let first_new = lock(&self.versions).next_file;
        let in_range = |f: &crate::version::TableFile| {
            let above_lo = match &lo {
                Bound::Included(l) => f.meta.largest_user() >= l.as_slice(),
                Bound::Excluded(l) => f.meta.largest_user() > l.as_slice(),
                Bound::Unbounded => true,
            };
            let below_hi = match &hi {
                Bound::Included(h) => f.meta.smallest_user() <= h.as_slice(),
                Bound::Excluded(h) => f.meta.smallest_user() < h.as_slice(),
                Bound::Unbounded => true,
            };
            above_lo && below_hi
        };
        let deepest = {
            let v = self.sv.load().version.clone();
            (0..v.levels.len())
                .rev()
                .find(|&l| !v.levels[l].is_empty())
                .unwrap_or(0)
        };
        for level in 0..deepest.max(1) {
            if let Some(e) = self.bg_error() {
                return Err(e);
            }
            let v = self.sv.load().version.clone();
            let inputs: Vec<_> = if level == 0 {
                if v.levels[0].iter().any(|f| in_range(f)) {
                    v.levels[0].clone()
                } else {
                    Vec::new()
                }
            } else {
                v.levels[level]
                    .iter()
                    .filter(|f| in_range(f))
                    .cloned()
                    .collect()
            };
            if inputs.is_empty() {
                continue;
            }
            let (a, b) = leveled::user_range(inputs.iter());
            let next = v.overlapping(level + 1, &a, &b);
            self.run_manual(&Compaction {
                level,
                output_level: level + 1,
                inputs,
                next,
                allow_move: false,
            })?;
        }
        // Then rewrite, in place, the bottom-level tables in range that this call did not just
        // write: they may hold tombstones, sequence numbers that can now be zeroed, or values
        // that have expired since they were written.
        let v = self.sv.load().version.clone();
        let bottom = (1..v.levels.len()).rev().find(|&l| !v.levels[l].is_empty());
        if let Some(level) = bottom {
            let inputs: Vec<_> = v.levels[level]
                .iter()
                .filter(|f| in_range(f) && f.meta.number < first_new)
                .cloned()
                .collect();
            if !inputs.is_empty() {
                self.run_manual(&Compaction {
                    level,
                    output_level: level,
                    inputs,
                    next: Vec::new(),
                    allow_move: false,
                })?;
            }
        }
        // The tables this call replaced are garbage now; with no grace period, their objects
        // go before it returns.
        self.collect_cold_garbage();
        Ok(())
    }

    /// Deletes cold objects whose grace period is over (see `cold_gc`). Not while a background
    /// error stands: the in-memory version may then be ahead of what the manifest holds. The
    /// caller holds the compaction lock.
    pub(crate) fn collect_cold_garbage(&self) {
        if self.tables.cold().is_none()
            || !self.object_gc.load(Ordering::Acquire)
            || self.tables.garbage_pending() == 0
            || self.bg_error().is_some()
        {
            return;
        }
        let live: std::collections::HashSet<String> = self
            .sv
            .load()
            .version
            .levels
            .iter()
            .flatten()
            .filter(|f| f.meta.cold)
            .map(|f| self.tables.object_key(&f.meta))
            .collect();
        self.tables.collect_garbage(&live);
    }

    fn run_manual(&self, c: &Compaction) -> Result<()> {
        self.run_compaction(c).inspect_err(|e| {
            if !matches!(e, Error::Closed) && !e.is_object_store_outage() {
                self.set_bg_error(e.clone());
            }
        })
    }

    /// Uploads a finished output table to the cold tier and saves its metadata locally; the
    /// local file goes once the object holds it. Runs before the manifest edit that names the
    /// table, so a crash in between leaves only an orphan object, never a missing one.
    pub(crate) fn upload(&self, m: &mut crate::version::FileMeta) -> Result<()> {
        let Some(cold) = self.tables.cold() else {
            return Ok(());
        };
        let path = fsutil::sst_path(&self.dir, m.number);
        let bytes = bytes::Bytes::from(
            std::fs::read(&path)
                .map_err(|e| Error::io(format!("reading {}", path.display()), e))?,
        );
        let key = self.tables.new_object_key(m.number);
        cold.store
            .put(&key, bytes.clone())
            .map_err(|e| crate::sst::source_error(&path, e))?;
        crate::sst::save_meta(&bytes, &path, &self.tables.meta_path(m.number))?;
        m.cold = true;
        m.object = Some(key);
        let _ = std::fs::remove_file(&path);
        self.stats
            .cold_bytes_uploaded
            .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        Ok(())
    }
}

/// The compaction thread: runs picked compactions while any level is over target.
pub(crate) fn compaction_loop(inner: Arc<Inner>) {
    const COLLECT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
    let mut collected = std::time::Instant::now();
    loop {
        let compact = {
            let mut bg = lock(&inner.bg);
            while !bg.shutdown && (!bg.compaction_requested || bg.error.is_some()) {
                // Objects wait for their grace period, and garbage is also queued without a
                // wake-up (a replica applying a compaction its leader ran): look every second.
                // By the clock, not by a timed-out wait: under steady writes the condition
                // variable is woken far more often than that and the wait never times out.
                let (g, _) = inner
                    .bg_cv
                    .wait_timeout(bg, COLLECT_EVERY)
                    .unwrap_or_else(|p| p.into_inner());
                bg = g;
                if collected.elapsed() >= COLLECT_EVERY && inner.tables.garbage_pending() > 0 {
                    break;
                }
            }
            if bg.shutdown {
                return;
            }
            let compact = bg.compaction_requested && bg.error.is_none() && !inner.opts.replicated;
            bg.compaction_requested = false;
            compact
        };
        if compact {
            loop {
                let _g = lock(&inner.compaction_lock);
                if inner.shutting_down() || inner.bg_error().is_some() {
                    break;
                }
                let picked = {
                    let vs = lock(&inner.versions);
                    leveled::pick(&inner.sv.load().version, &inner.opts, &vs.pointers)
                };
                let Some(c) = picked else { break };
                match inner.run_compaction(&c) {
                    Ok(()) => {
                        let _bg = lock(&inner.bg);
                        inner.bg_cv.notify_all();
                    }
                    Err(Error::Closed) => return,
                    Err(e) if e.is_object_store_outage() => {
                        // The object store is down (or refuses this node until an operator fixes
                        // its credentials): writes go on into L0 until backpressure; try again
                        // after a pause (or the next flush).
                        if matches!(e, Error::Rejected(_)) {
                            tracing::error!(error = %e, "compaction paused: the object store refuses this node");
                        } else {
                            tracing::warn!(error = %e, "compaction paused: object store unavailable");
                        }
                        let bg = lock(&inner.bg);
                        let _ = inner
                            .bg_cv
                            .wait_timeout(bg, std::time::Duration::from_secs(1));
                        break;
                    }
                    Err(e) => {
                        inner.set_bg_error(e);
                        break;
                    }
                }
            }
        }
        {
            // Under the compaction lock: one collection pass at a time, never concurrent with
            // a compaction's upload and install.
            let _g = lock(&inner.compaction_lock);
            inner.collect_cold_garbage();
            collected = std::time::Instant::now();
        }
    }
}
