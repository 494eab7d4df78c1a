//! openraft's `RaftLogStorage` over the segmented [`Log`].
//!
//! Every value this module writes is a [postcard] encoding behind a one-byte format tag
//! ([`FORMAT`]): log entries (`openraft::Entry<TypeConfig>`, stored at their own index), the vote,
//! the committed log id and the purge record (openraft's `last_purged_log_id`). The tag lets a
//! later build recognise data written by an older encoding instead of misreading it. Anything
//! read back that does not decode, or an entry whose log id disagrees with the index it is stored
//! at, is a `StorageError` (openraft shuts the node down on it); nothing read from disk is
//! unwrapped.
//!
//! # Blocking
//!
//! Appends call [`Log`] inline, under a `std::sync::Mutex`, from the async trait methods: they
//! only write to the page cache (the `fdatasync` happens on the flusher thread, outside the
//! lock). Every step that syncs (truncate, purge, the vote, the committed id, and an append that
//! starts a new segment) runs on a blocking thread instead: an `fsync` takes milliseconds, and
//! seconds on a sick disk, while the async workers carry heartbeats and client requests. The
//! lock is never held across an `.await`, so a std mutex is sound, and reads (replication tasks
//! using the [`LogReader`]) wait at most for one write.
//!
//! # Guarantees
//!
//! - [`append`](RaftLogStorage::append) writes the whole batch with one
//!   [`Log::append_deferred`] and hands it to the group commit (`flusher`), which calls
//!   `log_io_completed(Ok(()))` only after an `fdatasync` that began after the write; one sync
//!   covers every append written before it. A failed write returns the error and is never
//!   acknowledged; a failed sync is acknowledged with the error and poisons the log.
//! - [`save_vote`](RaftLogStorage::save_vote) is durable when it returns.
//! - [`save_committed`](RaftLogStorage::save_committed) is advisory (openraft uses it to
//!   re-apply committed entries at startup without waiting for a leader; losing it is safe). It
//!   is written durably at most every [`COMMITTED_SAVE_INTERVAL`] and kept in memory in between:
//!   it is called once per apply on every node, and a durable write each time cost two fsyncs
//!   and a rename per commit (more than the append itself). A restart may find an older value,
//!   never a newer one than was committed.
//! - [`purge`](RaftLogStorage::purge) persists the purged log id with the purge point, so
//!   [`get_log_state`](RaftLogStorage::get_log_state) reports it after a restart even when no
//!   entry is left.
//! - [`truncate`](RaftLogStorage::truncate) is durable when it returns.

// openraft's trait methods return `StorageError`, a large type this module cannot shrink; boxing
// it in the helpers would only move the size to the trait boundary, where it is unboxed again.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

use openraft::storage::{LogFlushed, RaftLogStorage};
use openraft::{
    AnyError, Entry, ErrorSubject, ErrorVerb, LogId, LogState, OptionalSend, RaftLogReader,
    StorageError, StorageIOError, Vote,
};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::flusher::Flusher;
use super::types::TypeConfig;
use crate::log::{Log, LogOptions, MetaKind, RecoveryInfo};

/// The format tag in front of every value this module (and the state machine's saved state)
/// writes. 2: the state machine's saved state gained the entries' clock and the last compaction.
pub const FORMAT: u8 = 2;

type NodeId = u64;
type StoreResult<T> = Result<T, StorageError<NodeId>>;

/// openraft's log store for a Strata Raft group: a [`Log`] holding postcard-encoded
/// `openraft::Entry<TypeConfig>`s, with the vote, committed log id and purged log id beside them.
#[derive(Debug, Clone)]
pub struct LogStore {
    log: Arc<Mutex<Log>>,
    committed: Arc<Mutex<Committed>>,
    flusher: Arc<Flusher>,
}

/// How often, at most, the committed log id is written to disk. Each write is two fsyncs and a
/// rename per group: at 200 ms, 64 busy ranges on three nodes made about a thousand a second,
/// a tenth of the nodes' CPU under writes. A restart re-applies up to a value at most this old
/// and takes the rest from the leader, so a second costs little.
pub const COMMITTED_SAVE_INTERVAL: std::time::Duration = std::time::Duration::from_secs(1);

/// The committed log id as last given, and when it was last written durably.
#[derive(Debug, Default)]
struct Committed {
    latest: Option<Option<LogId<NodeId>>>,
    saved_at: Option<std::time::Instant>,
}

/// A reader of the same [`Log`] as the [`LogStore`] that handed it out; it sees every append as
/// soon as the append returns.
#[derive(Debug, Clone)]
pub struct LogReader {
    log: Arc<Mutex<Log>>,
}

impl LogStore {
    /// Opens (creating if needed) the log in `dir` and wraps it. Recovery (see [`Log::open`])
    /// runs before this returns; what it found is returned beside the store.
    pub fn open(dir: impl AsRef<Path>) -> crate::Result<(LogStore, RecoveryInfo)> {
        Self::open_with(dir, LogOptions::default())
    }

    /// Like [`open`](Self::open), with explicit [`LogOptions`].
    pub fn open_with(
        dir: impl AsRef<Path>,
        opts: LogOptions,
    ) -> crate::Result<(LogStore, RecoveryInfo)> {
        let (log, info) = Log::open_with(dir, opts)?;
        Ok((LogStore::new(log)?, info))
    }

    /// Wraps an open [`Log`] (and starts its syncing thread).
    pub fn new(log: Log) -> crate::Result<LogStore> {
        let log = Arc::new(Mutex::new(log));
        let flusher = Flusher::start(Arc::downgrade(&log)).map_err(|e| crate::Error::Io {
            context: "starting the raft log's sync thread".into(),
            source: e,
        })?;
        Ok(LogStore {
            log,
            committed: Arc::new(Mutex::new(Committed::default())),
            flusher: Arc::new(flusher),
        })
    }

    /// `fdatasync` calls the group commit made so far (each covers every append before it).
    pub fn syncs(&self) -> u64 {
        self.flusher.syncs()
    }

    /// Fault injection (for tests of what a failing disk does to a replica): while `on`, the
    /// group commit's `fdatasync` fails with an I/O error, as a disk's would. The first failure
    /// poisons the log for good (see the flusher): appends waiting on it and every later one
    /// fail, and openraft stops this replica. Turning it off again does not heal the log;
    /// reopening it does.
    pub fn fail_syncs(&self, on: bool) {
        self.flusher.fail_syncs(on);
    }

    /// The vote as last saved durably (what `read_vote` returns). A save holds the log's lock
    /// across its fsync: the read takes the lock at once when it is free, and otherwise waits
    /// for it off the async workers, so that a caller asking for many groups' votes never
    /// stalls a worker behind a disk.
    pub async fn saved_vote(&self) -> StoreResult<Option<Vote<NodeId>>> {
        let now = match self.log.try_lock() {
            Ok(log) => Some(log.meta(MetaKind::Vote)),
            Err(std::sync::TryLockError::WouldBlock) => None,
            // `lock` reports the poisoning.
            Err(std::sync::TryLockError::Poisoned(_)) => {
                Some(lock(&self.log, ErrorSubject::Vote)?.meta(MetaKind::Vote))
            }
        };
        let bytes = match now {
            Some(bytes) => bytes,
            None => {
                off_worker(&self.log, ErrorSubject::Vote, |log| {
                    Ok::<_, std::convert::Infallible>(log.meta(MetaKind::Vote))
                })
                .await?
            }
        };
        bytes
            .map(|b| decode(&b).map_err(|e| read_err(ErrorSubject::Vote, e)))
            .transpose()
    }

    /// Runs `f` on the underlying log (for stats and tests); the store's lock is held meanwhile.
    pub fn with_log<T>(&self, f: impl FnOnce(&Log) -> T) -> StoreResult<T> {
        Ok(f(&*lock(&self.log, ErrorSubject::Store)?))
    }
}

/// Locks the shared log. A poisoned mutex means a thread panicked while using the log; the
/// in-memory state may then disagree with the files, so it is reported, not ignored.
fn lock(log: &Mutex<Log>, subject: ErrorSubject<NodeId>) -> StoreResult<MutexGuard<'_, Log>> {
    log.lock().map_err(|_| {
        StorageIOError::new(
            subject,
            ErrorVerb::Read,
            AnyError::error("raft log mutex poisoned by a panic"),
        )
        .into()
    })
}

/// Runs a write step that syncs on a blocking thread (see "Blocking" above). openraft awaits
/// each storage call before the next, so the steps keep their order.
async fn off_worker<T, E>(
    log: &Arc<Mutex<Log>>,
    subject: ErrorSubject<NodeId>,
    step: impl FnOnce(&mut Log) -> Result<T, E> + Send + 'static,
) -> StoreResult<T>
where
    T: Send + 'static,
    E: std::error::Error + 'static,
{
    let log = Arc::clone(log);
    let inner = subject.clone();
    let ran = tokio::task::spawn_blocking(move || {
        let mut guard = lock(&log, inner.clone())?;
        step(&mut guard).map_err(|e| write_err(inner, AnyError::new(&e)))
    })
    .await;
    match ran {
        Ok(r) => r,
        Err(e) => Err(write_err(
            subject,
            AnyError::error(format!("the log's write thread failed: {e}")),
        )),
    }
}

/// Appends encoded entries without syncing them (the flusher does). Entries at or below the
/// purge point are covered by the state machine already (openraft purges up to what it applied
/// when it finds the state machine ahead of the log): they are dropped, not stored below the
/// purge point.
fn append_encoded(
    log: &mut Log,
    encoded: &[(u64, Vec<u8>)],
) -> crate::Result<Option<crate::log::SyncHandle>> {
    let purged = log.last_purged().map(|(upto, _)| upto);
    let batch: Vec<(u64, &[u8])> = encoded
        .iter()
        .filter(|(i, _)| purged.is_none_or(|p| *i > p))
        .map(|(i, b)| (*i, b.as_slice()))
        .collect();
    log.append_deferred(&batch)
}

/// Encodes `value` behind the [`FORMAT`] tag.
pub(crate) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, AnyError> {
    let mut out = vec![FORMAT];
    postcard::to_io(value, &mut out).map_err(|e| AnyError::new(&e))?;
    Ok(out)
}

/// Decodes a value written by [`encode`], checking the tag and that no bytes are left over.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, AnyError> {
    match bytes.split_first() {
        Some((&FORMAT, rest)) => {
            let (value, left) =
                postcard::take_from_bytes::<T>(rest).map_err(|e| AnyError::new(&e))?;
            if left.is_empty() {
                Ok(value)
            } else {
                Err(AnyError::error(format!(
                    "{} trailing bytes after the encoded value",
                    left.len()
                )))
            }
        }
        Some((tag, _)) => Err(AnyError::error(format!(
            "unknown format tag {tag} (this build reads {FORMAT})"
        ))),
        None => Err(AnyError::error("empty record")),
    }
}

fn read_err(subject: ErrorSubject<NodeId>, e: impl Into<AnyError>) -> StorageError<NodeId> {
    StorageIOError::new(subject, ErrorVerb::Read, e).into()
}

fn write_err(subject: ErrorSubject<NodeId>, e: impl Into<AnyError>) -> StorageError<NodeId> {
    StorageIOError::new(subject, ErrorVerb::Write, e).into()
}

/// Decodes the entry stored at `index`, checking that it is the entry of that index.
pub(crate) fn decode_entry(index: u64, bytes: &[u8]) -> StoreResult<Entry<TypeConfig>> {
    let entry: Entry<TypeConfig> =
        decode(bytes).map_err(|e| read_err(ErrorSubject::LogIndex(index), e))?;
    if entry.log_id.index != index {
        return Err(read_err(
            ErrorSubject::LogIndex(index),
            AnyError::error(format!(
                "entry stored at index {index} carries log id {}",
                entry.log_id
            )),
        ));
    }
    Ok(entry)
}

/// The entries of `range` (cut to what the log holds; a purged index is an error).
fn read_entries(
    log: &Mutex<Log>,
    range: impl RangeBounds<u64>,
) -> StoreResult<Vec<Entry<TypeConfig>>> {
    let log = lock(log, ErrorSubject::Logs)?;
    // Purged entries are simply absent, as openraft's reader contract has it (it returns what
    // it has of the range); openraft knows the purge point and never relies on them.
    let mut start = range.start_bound().cloned();
    if let Some((upto, _)) = log.last_purged() {
        let first = upto + 1;
        let below = match start {
            Bound::Included(s) => s < first,
            Bound::Excluded(s) => s < upto,
            Bound::Unbounded => true,
        };
        if below {
            start = Bound::Included(first);
        }
    }
    let bounds: (Bound<u64>, Bound<u64>) = (start, range.end_bound().cloned());
    let raw = log
        .range(bounds)
        .map_err(|e| read_err(ErrorSubject::Logs, AnyError::new(&e)))?;
    raw.iter()
        .map(|(index, bytes)| decode_entry(*index, bytes))
        .collect()
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        read_entries(&self.log, range)
    }
}

impl RaftLogReader<TypeConfig> for LogReader {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StoreResult<Vec<Entry<TypeConfig>>> {
        read_entries(&self.log, range)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = LogReader;

    async fn get_log_state(&mut self) -> StoreResult<LogState<TypeConfig>> {
        let log = lock(&self.log, ErrorSubject::Logs)?;
        let last_purged_log_id = match log.last_purged() {
            Some((upto, record)) => {
                let id: LogId<NodeId> =
                    decode(&record).map_err(|e| read_err(ErrorSubject::LogIndex(upto), e))?;
                if id.index != upto {
                    return Err(read_err(
                        ErrorSubject::LogIndex(upto),
                        AnyError::error(format!("purge point {upto} carries purged log id {id}")),
                    ));
                }
                Some(id)
            }
            None => None,
        };
        let last_log_id = match log.last_index() {
            Some(last) => {
                let bytes = log
                    .get(last)
                    .map_err(|e| read_err(ErrorSubject::LogIndex(last), AnyError::new(&e)))?
                    .ok_or_else(|| {
                        read_err(
                            ErrorSubject::LogIndex(last),
                            AnyError::error("the last entry is missing"),
                        )
                    })?;
                Some(decode_entry(last, &bytes)?.log_id)
            }
            None => last_purged_log_id,
        };
        Ok(LogState {
            last_purged_log_id,
            last_log_id,
        })
    }

    async fn get_log_reader(&mut self) -> LogReader {
        LogReader {
            log: Arc::clone(&self.log),
        }
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StoreResult<()> {
        let bytes = encode(vote).map_err(|e| write_err(ErrorSubject::Vote, e))?;
        off_worker(&self.log, ErrorSubject::Vote, move |log| {
            log.save_meta(MetaKind::Vote, &bytes)
        })
        .await
    }

    async fn read_vote(&mut self) -> StoreResult<Option<Vote<NodeId>>> {
        self.saved_vote().await
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StoreResult<()> {
        {
            let mut c = self.committed.lock().unwrap_or_else(|p| p.into_inner());
            c.latest = Some(committed);
            if c.saved_at
                .is_some_and(|t| t.elapsed() < COMMITTED_SAVE_INTERVAL)
            {
                return Ok(());
            }
            // Marked saved before the write: a failed write fails this call (openraft then
            // stops), so nothing relies on the mark.
            c.saved_at = Some(std::time::Instant::now());
        }
        let bytes = encode(&committed).map_err(|e| write_err(ErrorSubject::Store, e))?;
        off_worker(&self.log, ErrorSubject::Store, move |log| {
            log.save_meta(MetaKind::Committed, &bytes)
        })
        .await
    }

    async fn read_committed(&mut self) -> StoreResult<Option<LogId<NodeId>>> {
        if let Some(latest) = self
            .committed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .latest
        {
            return Ok(latest);
        }
        let bytes = lock(&self.log, ErrorSubject::Store)?.meta(MetaKind::Committed);
        match bytes {
            // Saved as an `Option`, so a saved `None` reads back as `None` too.
            Some(b) => decode(&b).map_err(|e| read_err(ErrorSubject::Store, e)),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StoreResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let encoded = entries
            .into_iter()
            .map(|entry| {
                let bytes =
                    encode(&entry).map_err(|e| write_err(ErrorSubject::Log(entry.log_id), e))?;
                Ok((entry.log_id.index, bytes))
            })
            .collect::<StoreResult<Vec<_>>>()?;
        let rolls_over = {
            let all: Vec<(u64, &[u8])> = encoded.iter().map(|(i, b)| (*i, b.as_slice())).collect();
            lock(&self.log, ErrorSubject::Logs)?.append_rolls_over(&all)
        };
        let handle = if rolls_over {
            // Starting a segment syncs the last one and the directory: off the workers.
            off_worker(&self.log, ErrorSubject::Logs, move |log| {
                append_encoded(log, &encoded)
            })
            .await?
        } else {
            let mut log = lock(&self.log, ErrorSubject::Logs)?;
            append_encoded(&mut log, &encoded)
                .map_err(|e| write_err(ErrorSubject::Logs, AnyError::new(&e)))?
        };
        match handle {
            // Acknowledged by the flusher once a sync covers it (see `flusher`).
            Some(h) => self.flusher.submit(h, callback),
            None => callback.log_io_completed(Ok(())),
        }
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        off_worker(&self.log, ErrorSubject::Log(log_id), move |log| {
            log.truncate(log_id.index)
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StoreResult<()> {
        let record = encode(&log_id).map_err(|e| write_err(ErrorSubject::Log(log_id), e))?;
        off_worker(&self.log, ErrorSubject::Log(log_id), move |log| {
            log.purge(log_id.index, &record)
        })
        .await
    }
}
