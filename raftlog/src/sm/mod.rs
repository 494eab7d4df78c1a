//! The state machine: the `lsm` engine in replicated mode (see `lsm::Options::replicated`).
//!
//! Each entry is applied at `seq = log index`. A [`Command::Write`] is evaluated against the
//! state before it (conditions, versions, expiries judged at the leader's `now_ms`) and becomes
//! one engine batch; `Seal`, `ChunkAdded` and `Compacted` drive the engine's memtables and tables
//! the same way on every replica (the leader's side is the [`Maintainer`](crate::Maintainer)).
//!
//! # What is durable, and the snapshot
//!
//! The engine keeps no WAL: what survives a restart is its tables and, saved atomically with
//! them, the *flushed point*: the log id of the last seal whose memtable is in the tables, and
//! the membership as of that entry. After a restart the state machine reports the flushed point
//! as last applied, and openraft applies the committed entries after it again (the log is
//! purged only up to the flushed point, so they are there).
//!
//! A snapshot is the engine's manifest image (tables per level, no data) at the flushed point —
//! or at the last applied entry when no memtable holds a write. Its size depends on the number of
//! tables, not on the data, and the log behind it is purged, so both stay bounded.
//!
//! # Replays and duplicates
//!
//! Every command is recognised when applied a second time: writes and seals at or below the
//! engine's last sequence number, chunks already in the tables, compactions at or below the last
//! one applied (saved with the tables) or whose inputs are gone. A duplicate changes nothing and
//! replies `Tables { applied: false }` (for tables).
//!
//! A replay after a restart runs over tables that may already hold compactions logged after the
//! flushed point. It still decides every entry as the first time: the entries' clock is monotonic
//! along the log and restored from the flushed point, and a compaction drops only values expired
//! by the clock of the flushed point (`lsm::Db::compact_step`), so no replayed entry sees a value
//! missing that was live for it the first time.

// openraft's trait methods return `StorageError`, a large type; the helpers return it as the
// trait methods do (see the same allowance in the log store).
#![allow(clippy::result_large_err)]

mod apply;
pub mod value;

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use lsm::{Db, ManifestImage, TableEdit};
use openraft::storage::{RaftStateMachine, Snapshot};
use openraft::{
    AnyError, BasicNode, EntryPayload, ErrorSubject, ErrorVerb, LogId, RaftSnapshotBuilder,
    SnapshotMeta, StorageError, StorageIOError, StoredMembership,
};
use serde::{Deserialize, Serialize};

use crate::range::{ChildSpec, RangeDescriptor, SplitHook, FIRST_RANGE};
use crate::store::log_store::decode;
use crate::store::{Command, Reply, TypeConfig};
pub use value::Versioned;

type NodeId = u64;
type StoreResult<T> = Result<T, StorageError<NodeId>>;
type Membership = StoredMembership<NodeId, BasicNode>;

/// A point of the log the state machine can stand at: an entry's log id, the membership in
/// effect there and the entries' clock there.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Point {
    pub(crate) last_log_id: Option<LogId<NodeId>>,
    pub(crate) membership: Membership,
    /// The latest `now_ms` of the writes up to this point: the clock writes are judged by is
    /// the maximum along the log, so it never goes back when leaders' clocks differ, and a
    /// replay from this point resumes it exactly.
    pub(crate) now_ms: u64,
}

/// What is saved with the engine's tables, atomically with every change of them (format:
/// [`FORMAT`](crate::store::log_store::FORMAT) tag + postcard).
///
/// After a restart the state machine replays the log from `flushed` over tables that already
/// hold every compaction applied before the crash: `compacted_at` tells which `Compacted` entries
/// those are, so the replay skips them instead of judging them again against a different version
/// (an edit refused the first time could fit once a later compaction moved a table away).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Saved {
    pub(crate) flushed: Point,
    /// Log index of the last `Compacted` entry applied.
    pub(crate) compacted_at: u64,
    /// The group's range as of `flushed` (`None`: not known yet, a replica created empty).
    pub(crate) range: Option<RangeDescriptor>,
}

/// [`Saved`] as format 2 wrote it, before ranges: the group of a single-group node, whose
/// range is the whole key space.
#[derive(Deserialize)]
struct SavedV2 {
    flushed: Point,
    compacted_at: u64,
}

/// Format tag of [`Saved`] with its range (the log's entries keep [`FORMAT`](crate::store::log_store::FORMAT)).
const SAVED_FORMAT: u8 = 3;

/// Layout: `[SAVED_FORMAT = 3]` + postcard([`Saved`]); format 2 (`[2]` + postcard of
/// `{flushed, compacted_at}`) is read as the whole key space of [`FIRST_RANGE`].
pub(crate) fn encode_saved(saved: &Saved) -> Result<Vec<u8>, AnyError> {
    let mut out = vec![SAVED_FORMAT];
    out.extend(postcard::to_stdvec(saved).map_err(|e| AnyError::new(&e))?);
    Ok(out)
}

pub(crate) fn decode_saved(bytes: &[u8]) -> Result<Saved, AnyError> {
    match bytes.split_first() {
        Some((&SAVED_FORMAT, rest)) => postcard::from_bytes(rest).map_err(|e| AnyError::new(&e)),
        _ => {
            let old: SavedV2 = decode(bytes)?;
            Ok(Saved {
                flushed: old.flushed,
                compacted_at: old.compacted_at,
                range: Some(RangeDescriptor::whole(FIRST_RANGE)),
            })
        }
    }
}

struct State {
    last_applied: Option<LogId<NodeId>>,
    membership: Membership,
    /// Sealed memtables not yet in the tables, by seal index: the point each one completes.
    seals: BTreeMap<u64, Point>,
    /// The point saved with the tables.
    flushed: Point,
    /// The latest `now_ms` of the writes applied (see [`Point::now_ms`]).
    clock_ms: u64,
    /// See [`Saved::compacted_at`].
    compacted_at: u64,
    /// The group's range as of the last entry applied.
    range: Option<RangeDescriptor>,
    /// The last snapshot built or installed, with its encoded image.
    current: Option<(SnapshotMeta<NodeId, BasicNode>, Vec<u8>)>,
}

struct Shared {
    db: Db,
    /// The group this state machine belongs to.
    group: u64,
    /// Creates the child of a split on this node.
    split_hook: std::sync::OnceLock<SplitHook>,
    /// Bumped whenever the range changes (a split, a membership change, a snapshot).
    range_changes: AtomicU64,
    /// `State::range`, published for readers that must not wait for apply.
    published: arc_swap::ArcSwapOption<RangeDescriptor>,
    state: Mutex<State>,
    snapshots_built: AtomicU64,
    /// Set while apply waits for the object store.
    stall: Mutex<Option<ApplyStall>>,
    /// Entries whose apply had to wait for the object store, ever.
    stalled_entries: AtomicU64,
}

/// Apply waiting for the object store: an entry needs a table it cannot read now.
#[derive(Debug, Clone)]
pub struct ApplyStall {
    /// The entry waiting.
    pub log_id: LogId<NodeId>,
    /// Since when.
    pub since: std::time::Instant,
    /// Attempts so far.
    pub attempts: u64,
    /// The last failure.
    pub error: String,
    /// The store refused this node (credentials, bucket): an operator must act, waiting alone
    /// will not end it.
    pub rejected: bool,
}

/// Why an entry was not applied.
enum Halt {
    /// A storage failure: openraft stops.
    Storage(StorageError<NodeId>),
    /// The object store cannot serve a table the entry needs: apply it again later.
    Outage(lsm::Error),
}

impl From<StorageError<NodeId>> for Halt {
    fn from(e: StorageError<NodeId>) -> Halt {
        Halt::Storage(e)
    }
}

/// Whether applying `cmd` reads the state before it (a conditional write), which may read a
/// table from the object store.
fn reads_tables(cmd: &Command) -> bool {
    match cmd {
        Command::Split { .. } => true,
        Command::Write { ops, .. } => ops.iter().any(|op| {
            matches!(
                op,
                crate::store::Op::PutIfAbsent { .. } | crate::store::Op::CompareAndSet { .. }
            )
        }),
        _ => false,
    }
}

/// Runs `f`, which may block, telling a multi-threaded runtime to move this worker's other
/// tasks elsewhere meanwhile (heartbeats and reads must not wait behind an object-store
/// request). A current-thread runtime (openraft's test suite) has nowhere to move them.
fn blocking<T>(f: impl FnOnce() -> T) -> T {
    match tokio::runtime::Handle::try_current().map(|h| h.runtime_flavor()) {
        Ok(tokio::runtime::RuntimeFlavor::MultiThread) => tokio::task::block_in_place(f),
        _ => f(),
    }
}

/// First and longest pause before applying an entry again during an object-store outage.
const OUTAGE_BACKOFF_MIN: std::time::Duration = std::time::Duration::from_millis(10);
const OUTAGE_BACKOFF_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// openraft's state machine (and snapshot builder) over an `lsm` database in replicated mode.
/// Cheap to clone: clones share the database.
#[derive(Clone)]
pub struct StateMachine {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for StateMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StateMachine")
            .field("dir", &self.shared.db.path())
            .finish()
    }
}

fn sm_err(
    subject: ErrorSubject<NodeId>,
    verb: ErrorVerb,
    e: impl std::error::Error + 'static,
) -> StorageError<NodeId> {
    StorageIOError::new(subject, verb, AnyError::new(&e)).into()
}

impl StateMachine {
    /// Opens the replica's engine in `dir` with `opts` (which must name the group's shared
    /// object store as its cold tier; `replicated` and `wal: false` are set here) and resumes at
    /// the flushed point.
    pub fn open(dir: impl AsRef<Path>, opts: lsm::Options) -> crate::Result<StateMachine> {
        Self::open_group(dir, opts, FIRST_RANGE)
    }

    /// [`open`](Self::open) for the replica of group `group`.
    pub fn open_group(
        dir: impl AsRef<Path>,
        mut opts: lsm::Options,
        group: u64,
    ) -> crate::Result<StateMachine> {
        opts.replicated = true;
        opts.wal = false;
        let db = Db::open(dir.as_ref(), opts).map_err(crate::Error::Engine)?;
        let saved = db.app_state();
        let saved: Saved = if saved.is_empty() {
            Saved::default()
        } else {
            decode_saved(&saved).map_err(|e| crate::Error::Corruption {
                path: dir.as_ref().to_path_buf(),
                detail: format!("state saved with the tables: {e}"),
            })?
        };
        let flushed = saved.flushed;
        let saved_range = saved.range.clone();
        Ok(StateMachine {
            shared: Arc::new(Shared {
                db,
                state: Mutex::new(State {
                    last_applied: flushed.last_log_id,
                    membership: flushed.membership.clone(),
                    seals: BTreeMap::new(),
                    clock_ms: flushed.now_ms,
                    compacted_at: saved.compacted_at,
                    range: saved.range.clone(),
                    flushed,
                    current: None,
                }),
                group,
                split_hook: std::sync::OnceLock::new(),
                range_changes: AtomicU64::new(0),
                published: arc_swap::ArcSwapOption::new(saved_range.map(Arc::new)),
                snapshots_built: AtomicU64::new(0),
                stall: Mutex::new(None),
                stalled_entries: AtomicU64::new(0),
            }),
        })
    }

    /// The group's range as of the last entry applied (`None` on a replica created empty that
    /// has not installed a snapshot yet).
    pub fn range(&self) -> Option<RangeDescriptor> {
        self.range_arc().map(|r| (*r).clone())
    }

    /// [`range`](Self::range) without a copy.
    pub fn range_arc(&self) -> Option<Arc<RangeDescriptor>> {
        self.shared.published.load_full()
    }

    /// Whether the range holds `key` now (`false` while it is not known): the check of every
    /// read, without copying the descriptor.
    pub fn range_holds(&self, key: &[u8]) -> bool {
        self.shared
            .published
            .load()
            .as_deref()
            .is_some_and(|r| r.contains(key))
    }

    /// Publishes `st.range` to readers, after a change of it.
    fn publish_range(&self, st: &State) {
        self.shared.published.store(st.range.clone().map(Arc::new));
        self.shared.range_changes.fetch_add(1, Ordering::AcqRel);
    }

    /// The group this state machine belongs to.
    pub fn group(&self) -> u64 {
        self.shared.group
    }

    /// Changes whenever [`range`](Self::range) may have: a router rebuilds its index then.
    pub fn range_changes(&self) -> u64 {
        self.shared.range_changes.load(Ordering::Acquire)
    }

    /// Sets what creates the child of a split applied here (once; later calls are ignored).
    /// Without one, a split is applied to this range and no child is created on this node.
    pub fn set_split_hook(&self, hook: SplitHook) {
        let _ = self.shared.split_hook.set(hook);
    }

    /// Stands a new, empty state machine at `at` (the child of a split: see
    /// [`crate::range`]), durably.
    pub(crate) fn start_at(
        &self,
        at: LogId<NodeId>,
        membership: Membership,
        now_ms: u64,
        range: RangeDescriptor,
    ) -> crate::Result<()> {
        let point = Point {
            last_log_id: Some(at),
            membership,
            now_ms,
        };
        let saved = Saved {
            flushed: point.clone(),
            compacted_at: 0,
            range: Some(range.clone()),
        };
        let bytes = encode_saved(&saved).map_err(|e| crate::Error::Raft(e.to_string()))?;
        self.shared.db.save_app_state(at.index, &bytes)?;
        let mut st = self.state();
        st.last_applied = Some(at);
        st.membership = point.membership.clone();
        st.clock_ms = now_ms;
        st.range = Some(range);
        st.flushed = point;
        self.publish_range(&st);
        Ok(())
    }

    /// The engine (for reads, stats and the leader's maintenance).
    pub fn db(&self) -> &Db {
        &self.shared.db
    }

    /// The live value of `key` and its version, as this replica has applied so far.
    pub fn get(&self, key: &[u8]) -> crate::Result<Option<Versioned>> {
        let v = self.shared.db.get(key).map_err(crate::Error::Engine)?;
        v.map(|b| value::decode(b).ok_or_else(|| undecodable(key)))
            .transpose()
    }

    /// [`get`](Self::get) if it needs no I/O (see [`lsm::Db::get_without_io`]); `None` when it
    /// would read a table file or the object store.
    pub fn get_without_io(&self, key: &[u8]) -> Option<crate::Result<Option<Versioned>>> {
        let v = self.shared.db.get_without_io(key)?;
        Some(v.map_err(crate::Error::Engine).and_then(|v| {
            v.map(|b| value::decode(b).ok_or_else(|| undecodable(key)))
                .transpose()
        }))
    }

    /// Sealed memtables waiting to be built into tables, and bytes in all memtables: a leader
    /// refuses or slows writes when these grow (the tables are falling behind).
    pub fn backlog(&self) -> (usize, usize) {
        let s = self.shared.db.replica_status();
        (s.sealed.len(), s.active_bytes + s.sealed_bytes)
    }

    /// The last entry applied.
    pub fn last_applied(&self) -> Option<LogId<NodeId>> {
        self.state().last_applied
    }

    /// The log id every write up to which is in the tables (the point a restart resumes at).
    pub fn flushed(&self) -> Option<LogId<NodeId>> {
        self.state().flushed.last_log_id
    }

    /// The entries' clock at the flushed point: no entry a replica can replay over its tables is
    /// judged at an earlier time, so a compaction may drop what expired by then (and nothing
    /// later; see `lsm::Db::compact_step`).
    pub fn flushed_clock(&self) -> u64 {
        self.state().flushed.now_ms
    }

    /// Changes whenever the tables do (a chunk added, a compaction applied, an image
    /// installed): until it changes, a compaction found nothing to do finds nothing again.
    pub fn tables_epoch(&self) -> (Option<LogId<NodeId>>, u64) {
        let st = self.state();
        (st.flushed.last_log_id, st.compacted_at)
    }

    /// Apply waiting for the object store now, if it is.
    pub fn apply_stall(&self) -> Option<ApplyStall> {
        self.shared
            .stall
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Entries whose apply had to wait for the object store since the start.
    pub fn stalled_entries(&self) -> u64 {
        self.shared.stalled_entries.load(Ordering::Relaxed)
    }

    fn stalled(&self, log_id: LogId<NodeId>, e: &lsm::Error) {
        let rejected = matches!(e, lsm::Error::Rejected(_));
        let mut stall = self.shared.stall.lock().unwrap_or_else(|p| p.into_inner());
        let s = match stall.as_mut() {
            Some(s) if s.log_id == log_id => s,
            _ => {
                self.shared.stalled_entries.fetch_add(1, Ordering::Relaxed);
                if rejected {
                    tracing::error!(error = %e, entry = %log_id, "apply waits: the object store REFUSES this node; fix its credentials or bucket");
                } else {
                    tracing::warn!(error = %e, entry = %log_id, "apply waits for the object store");
                }
                stall.insert(ApplyStall {
                    log_id,
                    since: std::time::Instant::now(),
                    attempts: 0,
                    error: String::new(),
                    rejected,
                })
            }
        };
        s.attempts += 1;
        s.error = e.to_string();
        s.rejected = rejected;
        if s.attempts.is_multiple_of(30) {
            tracing::warn!(error = %e, entry = %log_id, waited = ?s.since.elapsed(), "apply still waits for the object store");
        }
    }

    fn unstalled(&self) {
        let mut stall = self.shared.stall.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = stall.take() {
            tracing::info!(entry = %s.log_id, waited = ?s.since.elapsed(), "apply resumed: the object store answers again");
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Apply holds this lock only over plain data updates; a panic there leaves nothing
        // half-written that the engine does not also guard.
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Applies one command; [`Halt::Outage`] when it needs a table the object store cannot
    /// serve now (nothing was changed but the clock, which only moves forward: the same entry
    /// is applied again later).
    fn apply_command(
        &self,
        st: &mut State,
        log_id: LogId<NodeId>,
        cmd: &Command,
    ) -> Result<Reply, Halt> {
        let db = &self.shared.db;
        let index = log_id.index;
        let fail = |e: lsm::Error| sm_err(ErrorSubject::Apply(log_id), ErrorVerb::Write, e);
        Ok(match cmd {
            Command::Write { ops, now_ms } => {
                st.clock_ms = st.clock_ms.max(*now_ms);
                let now_ms = st.clock_ms;
                if index <= db.last_seq() {
                    // A replay: the engine has this write (its reply went out the first time).
                    return Ok(Reply::Write(Vec::new()));
                }
                // Routed with an out-of-date picture of the ranges: refused here, where the
                // range is known exactly, on every replica alike.
                // (No range: a state machine driven without Raft's first membership entry, as
                // the engine's tests and tools do; a replica in a group always has one before
                // its first write, from that entry, a snapshot or its split.)
                if let Some(r) = &st.range {
                    if !ops.iter().all(|op| r.contains(op.key())) {
                        return Ok(Reply::WrongRange(Some(r.clone())));
                    }
                }
                let evaluated =
                    apply::evaluate(index, now_ms, ops, |k| match db.get_as_of(k, now_ms)? {
                        Some(b) => value::decode(b).map(Some).ok_or_else(|| {
                            lsm::Error::InvalidArgument(format!("undecodable value of key {k:?}"))
                        }),
                        None => Ok(None),
                    });
                // The entry must be applied with the real state (skipping it or failing would
                // make replicas diverge or stop): an outage is waited out by the caller.
                let (batch, results) = match evaluated {
                    Err(e) if e.is_object_store_outage() => return Err(Halt::Outage(e)),
                    r => r.map_err(fail)?,
                };
                if let Some(e) = batch_error(&batch) {
                    // Deterministic: every replica refuses it the same way.
                    return Ok(Reply::Invalid(e));
                }
                db.apply_at(index, &batch).map_err(fail)?;
                Reply::Write(results)
            }
            Command::Seal => {
                if db.apply_seal(index).map_err(fail)?
                    && db.replica_status().sealed.last() == Some(&index)
                {
                    st.seals.insert(
                        index,
                        Point {
                            last_log_id: Some(log_id),
                            membership: st.membership.clone(),
                            now_ms: st.clock_ms,
                        },
                    );
                }
                Reply::Done
            }
            Command::ChunkAdded { sealed_at, edit } => {
                let sealed_at = *sealed_at;
                let edit = match TableEdit::decode(edit) {
                    Ok(e) => e,
                    Err(e) => return Ok(Reply::Invalid(e.to_string())),
                };
                let Some(point) = st.seals.get(&sealed_at).cloned() else {
                    return Ok(Reply::Tables { applied: false });
                };
                let saved = save(
                    log_id,
                    &Saved {
                        flushed: point.clone(),
                        compacted_at: st.compacted_at,
                        range: st.range.clone(),
                    },
                )?;
                let applied = match db.apply_chunk(sealed_at, &edit, &saved) {
                    Err(e) if refused(&e) => return Ok(Reply::Invalid(e.to_string())),
                    r => r.map_err(fail)?,
                };
                if applied {
                    st.seals.remove(&sealed_at);
                    st.flushed = point;
                }
                Reply::Tables { applied }
            }
            Command::Split { key, child } => self.apply_split(st, log_id, key, *child)?,
            Command::Compacted { edit } => {
                let edit = match TableEdit::decode(edit) {
                    Ok(e) => e,
                    Err(e) => return Ok(Reply::Invalid(e.to_string())),
                };
                if index <= st.compacted_at {
                    // The tables hold this compaction (or a later one, which judged it).
                    return Ok(Reply::Tables { applied: false });
                }
                let saved = save(
                    log_id,
                    &Saved {
                        flushed: st.flushed.clone(),
                        compacted_at: index,
                        range: st.range.clone(),
                    },
                )?;
                match db.apply_compaction(&edit, &saved) {
                    Err(e) if refused(&e) => Reply::Invalid(e.to_string()),
                    r => {
                        let applied = r.map_err(fail)?;
                        if applied {
                            st.compacted_at = index;
                        }
                        Reply::Tables { applied }
                    }
                }
            }
        })
    }

    /// A split of this range at `key`, the part from `key` on becoming range `child` (see
    /// [`crate::range`]). Refused, identically on every replica, unless `key` lies strictly
    /// inside the range and no key at or after it is live at the entries' clock: judged at
    /// that clock, the answer is the same on a replay over tables compacted since (compactions
    /// drop only what expired before the flushed point's clock, and tombstones).
    fn apply_split(
        &self,
        st: &mut State,
        log_id: LogId<NodeId>,
        key: &[u8],
        child: u64,
    ) -> Result<Reply, Halt> {
        let Some(range) = st.range.clone() else {
            return Ok(Reply::SplitRefused(
                "this replica does not know its range".into(),
            ));
        };
        if child == range.id || child == crate::range::META_RANGE {
            return Ok(Reply::SplitRefused(format!(
                "range id {child} cannot name a new range"
            )));
        }
        if !range.splits_at(key) {
            return Ok(Reply::SplitRefused(format!(
                "key {key:?} is not strictly inside range {} [{:?}, {:?})",
                range.id, range.start, range.end
            )));
        }
        let db = &self.shared.db;
        let upper = match &range.end {
            Some(e) => std::ops::Bound::Excluded(e.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let mut live = db.range_as_of::<Vec<u8>, _>(
            (std::ops::Bound::Included(key.to_vec()), upper),
            st.clock_ms,
        );
        match live.next() {
            None => {}
            Some(Ok((k, _))) => {
                return Ok(Reply::SplitRefused(format!(
                    "range {} holds data at or after the split key (first: {:?}); splitting a \
                     range with data is not supported yet",
                    range.id,
                    String::from_utf8_lossy(&k)
                )))
            }
            Some(Err(e)) if e.is_object_store_outage() => return Err(Halt::Outage(e)),
            Some(Err(e)) => {
                return Err(sm_err(ErrorSubject::Apply(log_id), ErrorVerb::Read, e).into())
            }
        }
        drop(live);
        let epoch = range.epoch + 1;
        let parent = RangeDescriptor {
            end: Some(key.to_vec()),
            epoch,
            ..range.clone()
        };
        let child = RangeDescriptor {
            id: child,
            start: key.to_vec(),
            end: range.end.clone(),
            epoch,
        };
        if let Some(hook) = self.shared.split_hook.get() {
            let spec = ChildSpec {
                desc: child.clone(),
                at: log_id,
                membership: st.membership.membership().clone(),
                now_ms: st.clock_ms,
            };
            hook(&spec).map_err(|e| sm_err(ErrorSubject::Apply(log_id), ErrorVerb::Write, e))?;
        }
        st.range = Some(parent.clone());
        self.publish_range(st);
        Ok(Reply::Split { parent, child })
    }

    /// The point a snapshot taken now stands at: the last applied entry when the memtables are
    /// empty (saving it with the tables first, so a restart does not fall behind a purged log),
    /// else the flushed point.
    fn snapshot_point(&self, st: &mut State) -> StoreResult<Point> {
        let db = &self.shared.db;
        if !db.replica_status().memtables_empty {
            return Ok(st.flushed.clone());
        }
        let point = Point {
            last_log_id: st.last_applied,
            membership: st.membership.clone(),
            now_ms: st.clock_ms,
        };
        if let Some(id) = point
            .last_log_id
            .filter(|id| Some(*id) > st.flushed.last_log_id)
        {
            let saved = encode_saved(&Saved {
                flushed: point.clone(),
                compacted_at: st.compacted_at,
                range: st.range.clone(),
            })
            .map_err(|e| StorageIOError::new(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
            db.save_app_state(id.index, &saved)
                .map_err(|e| sm_err(ErrorSubject::Snapshot(None), ErrorVerb::Write, e))?;
            st.flushed = point.clone();
        }
        Ok(point)
    }

    /// The current snapshot, or a new one when `force_new` or when the current one is behind.
    /// Without `force_new`, nothing applied means no snapshot.
    fn snapshot(&self, force_new: bool) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        let mut st = self.state();
        let point = self.snapshot_point(&mut st)?;
        let last = point.last_log_id;
        if last.is_none() && !force_new {
            return Ok(None);
        }
        // Under the state lock: no entry is applied between choosing the point and exporting.
        // The image is exported every time (it is small): a cached one could name tables a
        // compaction has since replaced and the leader deleted.
        let data = self.shared.db.export_image().encode();
        if let Some((meta, cached)) = &st.current {
            if !force_new && meta.last_log_id == last && *cached == data {
                return Ok(Some(Snapshot {
                    meta: meta.clone(),
                    snapshot: Box::new(Cursor::new(data)),
                }));
            }
        }
        let n = self.shared.snapshots_built.fetch_add(1, Ordering::Relaxed);
        let (term, index) = last.map_or((0, 0), |l| (l.leader_id.term, l.index));
        let meta = SnapshotMeta {
            last_log_id: last,
            last_membership: point.membership,
            snapshot_id: format!("{term}-{index}-{n}"),
        };
        st.current = Some((meta.clone(), data.clone()));
        Ok(Some(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
        }))
    }
}

/// `saved` encoded for the engine, or the storage error of the entry at `log_id`.
fn save(log_id: LogId<NodeId>, saved: &Saved) -> StoreResult<Vec<u8>> {
    encode_saved(saved)
        .map_err(|e| StorageIOError::new(ErrorSubject::Apply(log_id), ErrorVerb::Write, e).into())
}

/// An edit the engine refuses as such (a level beyond its `num_levels`, a malformed edit): every
/// replica refuses it the same way, so it is a reply, not a storage failure that would stop Raft
/// at this entry on every replica, again after every restart.
fn refused(e: &lsm::Error) -> bool {
    matches!(e, lsm::Error::InvalidArgument(_))
}

fn undecodable(key: &[u8]) -> crate::Error {
    crate::Error::Engine(lsm::Error::InvalidArgument(format!(
        "stored value of key {key:?} is not in the state machine's format"
    )))
}

/// Why the engine would refuse `batch` (oversized keys or values), if it would.
fn batch_error(batch: &lsm::WriteBatch) -> Option<String> {
    batch.validate().err().map(|e| e.to_string())
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> StoreResult<(Option<LogId<NodeId>>, Membership)> {
        let st = self.state();
        Ok((st.last_applied, st.membership.clone()))
    }

    async fn apply<I>(&mut self, entries: I) -> StoreResult<Vec<Reply>>
    where
        I: IntoIterator<Item = openraft::Entry<TypeConfig>> + openraft::OptionalSend,
        I::IntoIter: openraft::OptionalSend,
    {
        let mut replies = Vec::new();
        for e in entries {
            let mut wait = OUTAGE_BACKOFF_MIN;
            let reply = loop {
                // The guard must be gone before the await below (it is not `Send`).
                let outage = {
                    let mut st = self.state();
                    let r = match &e.payload {
                        EntryPayload::Blank => Ok(Reply::Done),
                        EntryPayload::Membership(m) => {
                            st.membership = StoredMembership::new(Some(e.log_id), m.clone());
                            match &mut st.range {
                                // The entry `initialize()` writes: the group was formed here,
                                // over the whole key space (only the first range and the meta
                                // group are formed so; others are born of splits).
                                None if e.log_id.index == 0 => {
                                    st.range = Some(RangeDescriptor::whole(self.shared.group));
                                }
                                Some(r) => r.epoch += 1,
                                None => {}
                            }
                            self.publish_range(&st);
                            Ok(Reply::Done)
                        }
                        EntryPayload::Normal(cmd) if reads_tables(cmd) => {
                            // May wait on the object store (a cold table read, up to the
                            // store's own timeout): off this runtime worker when possible.
                            blocking(|| self.apply_command(&mut st, e.log_id, cmd))
                        }
                        EntryPayload::Normal(cmd) => self.apply_command(&mut st, e.log_id, cmd),
                    };
                    match r {
                        Ok(reply) => {
                            st.last_applied = Some(e.log_id);
                            self.shared.db.note_applied(e.log_id.index);
                            break reply;
                        }
                        Err(Halt::Storage(err)) => return Err(err),
                        Err(Halt::Outage(err)) => err,
                    }
                };
                self.stalled(e.log_id, &outage);
                // Asleep on the runtime's timer, not on the thread: heartbeats, votes and reads
                // of what is cached go on meanwhile.
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(OUTAGE_BACKOFF_MAX);
            };
            self.unstalled();
            replies.push(reply);
        }
        Ok(replies)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StoreResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<NodeId, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> StoreResult<()> {
        let subject = ErrorSubject::Snapshot(Some(meta.signature()));
        let data = snapshot.into_inner();
        let image = ManifestImage::decode(&data)
            .map_err(|e| sm_err(subject.clone(), ErrorVerb::Read, e))?;
        let saved: Saved = decode_saved(image.app_state())
            .map_err(|e| StorageIOError::new(subject.clone(), ErrorVerb::Read, e))?;
        let point = saved.flushed;
        if point.last_log_id != meta.last_log_id
            || point.last_log_id.map_or(0, |l| l.index) != image.flushed_seq()
        {
            return Err(StorageIOError::new(
                subject,
                ErrorVerb::Read,
                AnyError::error(format!(
                    "snapshot image stands at {:?}, its metadata says {:?}",
                    point.last_log_id, meta.last_log_id
                )),
            )
            .into());
        }
        let mut st = self.state();
        // Tables the image drops were removed at or before its point.
        if let Some(l) = meta.last_log_id {
            self.shared.db.note_applied(l.index);
        }
        self.shared
            .db
            .install_image(&image)
            .map_err(|e| sm_err(subject, ErrorVerb::Write, e))?;
        st.last_applied = meta.last_log_id;
        st.membership = meta.last_membership.clone();
        st.seals.clear();
        st.clock_ms = point.now_ms;
        st.compacted_at = saved.compacted_at;
        st.range = saved.range;
        st.flushed = point;
        st.current = Some((meta.clone(), data));
        self.publish_range(&st);
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StoreResult<Option<Snapshot<TypeConfig>>> {
        self.snapshot(false)
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> StoreResult<Snapshot<TypeConfig>> {
        self.snapshot(true)?.ok_or_else(|| {
            StorageIOError::new(
                ErrorSubject::Snapshot(None),
                ErrorVerb::Read,
                AnyError::error("no snapshot built"),
            )
            .into()
        })
    }
}
