//! Group commit and backpressure.
//!
//! Writers enqueue their operation and wait. The writer at the front of the queue becomes the
//! leader: it takes the batches queued behind it (up to 1 MiB), makes room (sealing a full
//! memtable, slowing down or stalling when flush and compaction fall behind), logs the whole group
//! with one write and at most one fsync, inserts it into the memtable, publishes the new sequence
//! number, and hands every follower the group's result.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use super::{lock, Inner, SuperVersion};
use crate::memtable::Memtable;
use crate::wal::WalWriter;
use crate::{batch, Error, Result, WriteBatch};

const MAX_GROUP_BYTES: usize = 1 << 20;

pub(crate) enum Op {
    Batch { batch: WriteBatch, sync: bool },
    Seal { at: Option<u64> },
}

#[derive(Default)]
struct QueueState {
    pending: VecDeque<(u64, Op)>,
    results: HashMap<u64, Result<()>>,
    leader: bool,
    next_ticket: u64,
    /// Writers blocked on the condition variable. `notify_all` costs a system call even with
    /// nobody waiting, so the leader only calls it when this is non-zero.
    waiting: usize,
}

/// State only the current leader touches.
pub(crate) struct WriteState {
    pub wal: Option<WalWriter>,
    /// Last sequence number assigned.
    pub last_seq: u64,
}

pub(crate) struct Queue {
    state: Mutex<QueueState>,
    cv: Condvar,
    ws: Mutex<WriteState>,
}

impl Queue {
    pub(crate) fn new(ws: WriteState) -> Self {
        Queue {
            state: Mutex::new(QueueState::default()),
            cv: Condvar::new(),
            ws: Mutex::new(ws),
        }
    }

    /// The writers' state, for the replica API (which applies entries one at a time, in log
    /// order, without the group-commit queue).
    pub(crate) fn write_state(&self) -> std::sync::MutexGuard<'_, WriteState> {
        lock(&self.ws)
    }

    pub(crate) fn sync_wal(&self) -> Result<()> {
        match lock(&self.ws).wal.as_mut() {
            Some(w) => w.sync(),
            None => Ok(()),
        }
    }
}

impl Inner {
    pub(crate) fn submit(&self, op: Op) -> Result<()> {
        if self.closed.load(Ordering::Acquire) {
            return Err(Error::Closed);
        }
        self.submit_unchecked(op)
    }

    /// Enqueues `op` even while closing (used by `close` itself).
    pub(crate) fn submit_unchecked(&self, op: Op) -> Result<()> {
        let q = &self.queue;
        let mut st = lock(&q.state);
        let ticket = st.next_ticket;
        st.next_ticket += 1;
        st.pending.push_back((ticket, op));
        loop {
            if let Some(r) = st.results.remove(&ticket) {
                return r;
            }
            if !st.leader && st.pending.front().map(|p| p.0) == Some(ticket) {
                break;
            }
            st.waiting += 1;
            st = q.cv.wait(st).unwrap_or_else(|p| p.into_inner());
            st.waiting -= 1;
        }
        st.leader = true;
        let mut group = Vec::new();
        let mut bytes = 0;
        while let Some((_, op)) = st.pending.front() {
            let size = match op {
                Op::Batch { batch, .. } => batch.size_in_bytes(),
                Op::Seal { .. } => usize::MAX,
            };
            // A seal is always alone in its group; batches gather up to the size limit.
            if !group.is_empty() && (size == usize::MAX || bytes + size > MAX_GROUP_BYTES) {
                break;
            }
            bytes = bytes.saturating_add(size);
            group.extend(st.pending.pop_front());
            if size == usize::MAX {
                break;
            }
        }
        drop(st);
        let result = {
            let mut ws = lock(&q.ws);
            self.commit_group(&mut ws, &group)
        };
        let mut st = lock(&q.state);
        for (t, _) in group.iter().filter(|(t, _)| *t != ticket) {
            st.results.insert(*t, result.clone());
        }
        st.leader = false;
        if st.waiting > 0 {
            q.cv.notify_all();
        }
        result
    }

    fn commit_group(&self, ws: &mut WriteState, group: &[(u64, Op)]) -> Result<()> {
        if let Some(e) = self.bg_error() {
            return Err(e);
        }
        if let Some((_, Op::Seal { at })) = group.first() {
            return self.seal(ws, *at);
        }
        self.make_room(ws)?;
        let clock = &self.opts.clock;
        let mut recs = Vec::with_capacity(group.len());
        let mut sync = false;
        let mut user_bytes = 0u64;
        let mut seq = ws.last_seq;
        for (_, op) in group {
            if let Op::Batch { batch, sync: s } = op {
                seq += 1;
                recs.push((seq, batch.resolved_rep(|| clock.now_millis())));
                sync |= *s;
                user_bytes += batch.size_in_bytes() as u64;
            }
        }
        if let Some(wal) = ws.wal.as_mut() {
            match wal.append(recs.iter().map(|(s, r)| (*s, &r[..])), sync) {
                Ok(n) => {
                    self.stats.wal_bytes.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) => {
                    // The log may now end in a partial record; anything appended after it would
                    // be unreachable at recovery, so stop accepting writes.
                    self.set_bg_error(e.clone());
                    return Err(e);
                }
            }
        }
        let mem = self.sv.load().mem.clone();
        for (s, rep) in &recs {
            // The representation was built and validated by `WriteBatch`, so it decodes.
            for op in batch::ops(rep).map_while(|o| o) {
                mem.insert(op.key, *s, op.kind, op.value);
            }
        }
        ws.last_seq = seq;
        self.visible_seq.store(seq, Ordering::Release);
        self.stats
            .user_bytes
            .fetch_add(user_bytes, Ordering::Relaxed);
        self.stats
            .writes
            .fetch_add(recs.len() as u64, Ordering::Relaxed);
        Ok(())
    }

    /// Seals a full memtable, or delays the writer while flush and compaction catch up.
    fn make_room(&self, ws: &mut WriteState) -> Result<()> {
        let o = &self.opts;
        let mut slowed = false;
        let mut stall_started: Option<Instant> = None;
        let result = loop {
            if let Some(e) = self.bg_error() {
                break Err(e);
            }
            let sv = self.sv.load();
            let l0 = sv.version.levels[0].len();
            let pending = self.stats.pending_compaction_bytes.load(Ordering::Relaxed);
            let mem_full = o.auto_seal && sv.mem.approximate_bytes() >= o.write_buffer_size;
            if (mem_full && sv.imms.len() >= o.max_immutable_memtables)
                || l0 >= o.l0_stop_trigger
                || pending >= o.pending_compaction_bytes_stop
            {
                if self.closed.load(Ordering::Acquire) {
                    break Err(Error::Closed);
                }
                if stall_started.is_none() {
                    stall_started = Some(Instant::now());
                    self.stats.stalls.fetch_add(1, Ordering::Relaxed);
                }
                let bg = lock(&self.bg);
                // Flush and compaction notify after installing a version; the timeout covers a
                // notification that raced with the check above.
                let _ = self.bg_cv.wait_timeout(bg, Duration::from_millis(10));
                continue;
            }
            if !slowed
                && (l0 >= o.l0_slowdown_trigger || pending >= o.pending_compaction_bytes_slowdown)
            {
                slowed = true;
                self.stats.slowdowns.fetch_add(1, Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(1));
                continue;
            }
            if mem_full {
                self.seal(ws, None)?;
                continue;
            }
            break Ok(());
        };
        if let Some(t) = stall_started {
            self.stats
                .stall_micros
                .fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        result
    }

    /// Makes the active memtable immutable and starts a new one (and a new WAL segment).
    pub(crate) fn seal(&self, ws: &mut WriteState, at: Option<u64>) -> Result<()> {
        if let Some(at) = at {
            if at < ws.last_seq {
                return Err(Error::InvalidArgument(format!(
                    "cannot seal at {at}: writes up to {} are already applied",
                    ws.last_seq
                )));
            }
            ws.last_seq = at;
            self.visible_seq.store(at, Ordering::Release);
        }
        let cur = self.sv.load_full();
        if let Some(at) = at {
            cur.mem.note_seq(at);
        }
        if cur.mem.is_empty() {
            return Ok(());
        }
        // Sync the segment being retired: a later synced write in the next segment must not
        // survive a power loss that this segment's unsynced tail does not.
        if let Some(w) = ws.wal.as_mut() {
            // After a failed fsync the kernel may have dropped the dirty pages: a later sync
            // could succeed over a hole. Stop accepting writes.
            w.retire().inspect_err(|e| self.set_bg_error(e.clone()))?;
        }
        let mut vs = lock(&self.versions);
        // Re-read the view under the versions lock: a flush or compaction may have installed a
        // new version since `cur` was loaded, and storing a view built on the old one would
        // resurrect tables it removed.
        let cur = self.sv.load_full();
        let new_wal = if self.opts.wal {
            let n = self.alloc_file(&mut vs)?;
            Some(WalWriter::create(&self.dir, n)?)
        } else {
            None
        };
        let wal_number = new_wal.as_ref().map_or(0, |w| w.number());
        let mut imms = Vec::with_capacity(cur.imms.len() + 1);
        imms.push(cur.mem.clone());
        imms.extend(cur.imms.iter().cloned());
        self.sv.store(Arc::new(SuperVersion {
            mem: Arc::new(Memtable::new(wal_number, self.opts.write_buffer_size)),
            imms,
            version: cur.version.clone(),
        }));
        drop(vs);
        if new_wal.is_some() {
            ws.wal = new_wal;
        }
        let _bg = lock(&self.bg);
        self.bg_cv.notify_all();
        Ok(())
    }
}
