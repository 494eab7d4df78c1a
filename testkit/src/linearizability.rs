//! Linearizability checker for a per-key versioned key-value register, after
//! Wing & Gong with Lowe's just-in-time linearization and memoization (the
//! algorithm of Knossos and Porcupine), plus reductions specific to registers.
//!
//! # Model
//!
//! Every key is an independent register whose state is either absent or a
//! `(version, value)` pair; it starts absent. Versions are chosen by the system
//! under test (e.g. the Raft log index of the write). The checker assumes
//! nothing about them, not even that they grow or differ: it only requires that
//! what the operations report is consistent with *some* sequential execution
//! that respects real time. Version `0` is reserved ([`Op::Cas`] uses it for
//! "must be absent"), so a write or a read reporting version `0` is rejected as
//! [`Violation::Malformed`].
//!
//! Histories are checked one key at a time ([`check`]); linearizability is
//! local (Herlihy & Wing), so a multi-key history is linearizable iff every
//! per-key projection is. [`check_keyed`] and [`History::check`] do the split.
//!
//! `a` must precede `b` only if `a.respond < b.invoke`: equal timestamps count
//! as concurrent, which can only hide violations, never invent them.
//!
//! # Unknown outcomes
//!
//! An operation whose outcome is [`Outcome::Unknown`] (timeout, lost
//! connection, client crash) may take effect at any instant after its
//! invocation, or never: its response time is +infinity, whatever `respond`
//! says.
//!
//! * Unknown `Get`: it observed nothing, so it is dropped.
//! * Unknown `Delete`: if it takes effect, the key becomes absent.
//! * Unknown `Put`: if it takes effect, the key holds the value with an
//!   *unknown* version, which can turn out to be any non-zero version. The first
//!   observation pins it: a `Get` returning `(v, value)`, or a rejected `Cas`
//!   reporting `current_version = v`, fixes it to `v`, and later observations
//!   must agree. An applied `Cas` with any non-zero `expected_version` matches it
//!   (and replaces the state anyway).
//! * Unknown `Cas`: where its condition certainly holds it applies (new value,
//!   unknown version), where it certainly fails it changes nothing, and against
//!   an unknown version both outcomes are possible (the search tracks the set of
//!   possible states, as the model is then nondeterministic).
//!
//! This is sound: whatever versions the unknown writes really got, the real
//! execution is among those explored, so no false violation is reported. It is
//! incomplete in a corner: the version of an unknown write is never compared
//! with other versions, so an unknown write observed with the version of
//! another write (known or unknown) goes unnoticed, and so does an unknown `Cas`
//! taken as not applied although the unknown version it met later turns out to
//! be its `expected_version`.
//!
//! Because that permissive model lets any pending unknown write explain almost
//! any observation, a first search assumes that unknown writes got versions no
//! known write reported (true of Raft log indices); what it accepts, the
//! permissive model accepts too. Only if it finds a violation does a second,
//! permissive search decide.
//!
//! # Search
//!
//! Operations become call and return entries in a doubly-linked list sorted by
//! time. A configuration (linearized operations, possible states) may linearize
//! next any pending operation whose call precedes the first return entry; doing
//! so unlinks its entries ("lift"), backtracking relinks them ("unlift").
//! Refuted configurations are memoized; one is also pruned when a refuted
//! configuration with the same known operations and states had linearized a
//! subset of its unknown operations (the extra ones are not needed). These
//! reductions keep the search exact, since any completion can be rearranged into
//! one that the search explores (see `Search::level`):
//!
//! * an observer that leaves the possible states unchanged goes first, alone;
//! * of candidates with the same effect only one is tried;
//! * an unknown write must be followed at once by an operation that needs it;
//! * a configuration where some pending operation can no longer get what it
//!   observed (no pending write that could still precede it produces it) is
//!   refuted at once.
//!
//! Candidates are tried in an order tuned for a correct system whose versions
//! follow the linearization order, which then rarely backtracks. The search is
//! bounded by [`Limits`] and reports [`Violation::Inconclusive`] rather than
//! running away; histories with very many concurrent clients on one key *and*
//! many unknown outcomes are where that may happen.

// The fields of the enums' variants are described with their variants.
#![allow(missing_docs)]

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Instant;

/// What a client asked the register to do.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Op {
    /// Unconditionally store `value`.
    Put { value: Vec<u8> },
    /// Make the key absent.
    Delete,
    /// Read the key.
    Get,
    /// Store `new` only if the current version is `expected_version`
    /// (`0`: only if the key is absent).
    Cas { expected_version: u64, new: Vec<u8> },
}

/// What the client observed.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A `Put` was acknowledged and stored with `version`.
    Written { version: u64 },
    /// A `Delete` was acknowledged.
    Deleted,
    /// A `Get` returned this `(version, value)`, or `None` for an absent key.
    Read(Option<(u64, Vec<u8>)>),
    /// A `Cas` found its condition true and stored `new` with `version`.
    CasApplied { version: u64 },
    /// A `Cas` found its condition false; the key had `current_version` (`0`: absent).
    CasRejected { current_version: u64 },
    /// No answer: the operation may or may not have taken effect.
    Unknown,
}

/// One operation of a history: its interval in real time and what was observed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Operation {
    /// Who issued it; only used in reports.
    pub client: usize,
    /// Time at which the request was (about to be) sent, on a clock shared by all
    /// clients of the history.
    pub invoke: u64,
    /// Time at which the response was received; `None` when there was none.
    /// Ignored when `outcome` is [`Outcome::Unknown`].
    pub respond: Option<u64>,
    /// The request.
    pub op: Op,
    /// The observed result.
    pub outcome: Outcome,
}

/// A state of the register, as shown in reports.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RegisterState {
    /// The key does not exist.
    Absent,
    /// The key holds `value`; `version` is `None` when the value was written by an
    /// operation with an unknown outcome and no read has revealed its version yet.
    Present {
        version: Option<u64>,
        value: Vec<u8>,
    },
}

/// Bounds on the search, which is exponential in the worst case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum number of search steps (one step tries one candidate operation)
    /// for each of the (at most two) searches `check` runs.
    pub max_steps: u64,
    /// Approximate bound, in bytes, on the memo of refuted configurations.
    pub max_memo_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_steps: 5_000_000,
            max_memo_bytes: 512 << 20,
        }
    }
}

/// Why a history was not accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Violation {
    /// The history itself is invalid (e.g. a `Get` with a `Written` outcome); this
    /// is a bug in the test harness, not in the system under test.
    Malformed {
        /// Index of the offending operation in the checked slice.
        index: usize,
        reason: String,
    },
    /// No linearization exists.
    NotLinearizable(Box<Diagnosis>),
    /// The search hit its [`Limits`] before reaching a verdict.
    Inconclusive {
        steps: u64,
        memo_bytes: usize,
        /// Operations linearized at the furthest dead end found so far.
        prefix_len: usize,
        /// Number of operations that had to be linearized (unknown reads excluded).
        operations: usize,
        /// The violation found under the extra assumption that a write with an
        /// unknown outcome did not get the same version as a write with a known
        /// one (true of Raft log indices), if any.
        if_versions_unique: Option<Box<Diagnosis>>,
    },
}

impl Violation {
    /// True when the checker gave up rather than found a violation.
    pub fn is_inconclusive(&self) -> bool {
        matches!(self, Violation::Inconclusive { .. })
    }
}

/// Where the search got stuck: the dead end that got furthest in real time
/// (the latest earliest-pending-response), among the configurations explored.
///
/// Indices refer to the slice passed to [`check`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// Number of operations that had to be linearized (unknown reads excluded).
    pub operations: usize,
    /// The linearization prefix of that dead end, in linearization order.
    pub prefix: Vec<usize>,
    /// The states the register may be in after that prefix.
    pub states: Vec<RegisterState>,
    /// The operations real-time order allowed next; none of them could be
    /// linearized next (each either contradicts every possible state, or only
    /// leads to configurations already refuted).
    pub stuck: Vec<(usize, Operation)>,
    /// The operation that made that configuration a dead end.
    pub blame: Option<Blame>,
    /// The last operations of `prefix` (most recent last), for context.
    pub recent: Vec<(usize, Operation)>,
}

/// Why the reported configuration was a dead end.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Blame {
    /// What this operation observed (or required) is not among the possible
    /// states, and no write that could still be linearized before its response
    /// can produce it.
    Impossible(usize),
    /// This operation responded before any order of the pending operations
    /// could linearize it.
    Overdue(usize),
}

impl Diagnosis {
    /// The index of the operation in [`Diagnosis::blame`].
    pub fn culprit(&self) -> Option<usize> {
        match self.blame? {
            Blame::Impossible(index) | Blame::Overdue(index) => Some(index),
        }
    }
}

const RECENT: usize = 12;

/// Checks a single key's history with [`Limits::default`].
pub fn check(history: &[Operation]) -> Result<(), Violation> {
    check_with_limits(history, Limits::default())
}

/// Checks a single key's history.
pub fn check_with_limits(history: &[Operation], limits: Limits) -> Result<(), Violation> {
    let problem = Problem::compile(history)?;
    // Fast path: the permissive model lets an unknown write take the version of
    // a known one, which makes a correct history expensive to confirm (any
    // pending unknown write could explain any observation). A Raft-backed system
    // never does that, and whatever the fresh model accepts the permissive one
    // accepts too, so try the fresh one first. If it gives up, the permissive
    // search, which explores a superset, would almost surely give up too.
    let mut fresh_diagnosis = None;
    let unknown_writes = problem
        .ops
        .iter()
        .any(|op| !op.known && op.effect != Effect::Delete);
    if unknown_writes {
        let fresh = Unknowns {
            taken: Some(&problem.known_versions),
        };
        match Search::new(&problem, limits, fresh).run(history) {
            Err(Violation::NotLinearizable(diagnosis)) => fresh_diagnosis = Some(diagnosis),
            result => return result,
        }
    }
    let permissive = Unknowns { taken: None };
    match Search::new(&problem, limits, permissive).run(history) {
        Err(Violation::Inconclusive {
            steps,
            memo_bytes,
            prefix_len,
            operations,
            ..
        }) => Err(Violation::Inconclusive {
            steps,
            memo_bytes,
            prefix_len,
            operations,
            if_versions_unique: fresh_diagnosis,
        }),
        // The fresh model's dead end is usually the clearer explanation: the
        // permissive one tends to get further by letting unknown writes
        // impersonate known ones.
        Err(Violation::NotLinearizable(diagnosis)) => Err(Violation::NotLinearizable(
            fresh_diagnosis.unwrap_or(diagnosis),
        )),
        result => result,
    }
}

/// Checks a multi-key history key by key; on failure returns the first failing key
/// (in key order) and its violation, whose indices refer to that key's operations
/// in the order they appear in `history`.
pub fn check_keyed<K: Ord>(
    history: impl IntoIterator<Item = (K, Operation)>,
    limits: Limits,
) -> Result<(), (K, Violation)> {
    let mut by_key: BTreeMap<K, Vec<Operation>> = BTreeMap::new();
    for (key, operation) in history {
        by_key.entry(key).or_default().push(operation);
    }
    for (key, operations) in by_key {
        check_with_limits(&operations, limits).map_err(|violation| (key, violation))?;
    }
    Ok(())
}

/// Thread-safe recorder of a multi-key history, timestamped with a shared
/// monotonic clock (nanoseconds since the history was created).
///
/// Call [`History::invoke`] right before sending a request and
/// [`History::complete`] right after its response arrives. A [`Pending`] that is
/// never completed (e.g. the client thread panicked) stays [`Outcome::Unknown`],
/// which is exactly the right assumption.
#[derive(Debug)]
pub struct History<K> {
    epoch: Instant,
    records: Mutex<Vec<(K, Operation)>>,
}

/// An invoked operation awaiting its outcome; see [`History::complete`].
#[derive(Debug)]
#[must_use = "complete it with History::complete, or its outcome stays Unknown"]
pub struct Pending {
    slot: usize,
}

impl<K> Default for History<K> {
    fn default() -> Self {
        Self::new()
    }
}

impl<K> History<K> {
    /// Creates an empty history whose clock starts now.
    pub fn new() -> Self {
        Self {
            epoch: Instant::now(),
            records: Mutex::new(Vec::new()),
        }
    }

    /// Current time on the history's clock.
    pub fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    /// Records the invocation of `op` on `key` by `client`.
    pub fn invoke(&self, client: usize, key: K, op: Op) -> Pending {
        let mut records = self.lock();
        // Taken under the lock so that records are in invocation order; a later
        // invocation time is still before the request is sent, hence still sound.
        let invoke = self.now();
        records.push((
            key,
            Operation {
                client,
                invoke,
                respond: None,
                op,
                outcome: Outcome::Unknown,
            },
        ));
        Pending {
            slot: records.len() - 1,
        }
    }

    /// Records the outcome of a pending operation. `Outcome::Unknown` leaves the
    /// operation open-ended.
    pub fn complete(&self, pending: Pending, outcome: Outcome) {
        // Taken before waiting for the lock: the earliest time is the tightest.
        let respond = self.now();
        // A `Pending` from another history may point anywhere; ignore it rather
        // than corrupt a record.
        if let Some((_, record)) = self.lock().get_mut(pending.slot) {
            if outcome != Outcome::Unknown {
                record.respond = Some(respond);
            }
            record.outcome = outcome;
        }
    }

    /// Number of recorded operations.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True when nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The recorded operations, in invocation order.
    pub fn into_operations(self) -> Vec<(K, Operation)> {
        self.records
            .into_inner()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, Vec<(K, Operation)>> {
        // A panicking client must not make the history unreadable: the records are
        // always in a consistent state between pushes.
        self.records.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl<K: Clone> History<K> {
    /// A copy of the recorded operations, in invocation order.
    pub fn operations(&self) -> Vec<(K, Operation)> {
        self.lock().clone()
    }
}

impl<K: Ord + Clone> History<K> {
    /// The recorded operations split by key, each in invocation order.
    pub fn by_key(&self) -> BTreeMap<K, Vec<Operation>> {
        let mut by_key: BTreeMap<K, Vec<Operation>> = BTreeMap::new();
        for (key, operation) in self.operations() {
            by_key.entry(key).or_default().push(operation);
        }
        by_key
    }

    /// Checks every key with [`Limits::default`]; see [`check_keyed`].
    pub fn check(&self) -> Result<(), (K, Violation)> {
        check_keyed(self.operations(), Limits::default())
    }
}

// ---------------------------------------------------------------------------
// Compilation of the history into a compact form.

/// Register state with interned values, so that state sets are cheap to copy,
/// compare and hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum State {
    Absent,
    Present { version: Option<u64>, value: usize },
}

/// The transition an operation imposes, given what was observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Effect {
    /// `version` is `None` for an unknown outcome.
    Put {
        value: usize,
        version: Option<u64>,
    },
    Delete,
    Read(Option<(u64, usize)>),
    CasApplied {
        expected: u64,
        new: usize,
        version: u64,
    },
    CasRejected {
        expected: u64,
        current: u64,
    },
    CasUnknown {
        expected: u64,
        new: usize,
    },
}

impl Effect {
    /// Whether the effect certainly replaces every state of `states` by the same
    /// state (an applied write), rather than keeping or filtering some of them.
    fn overwrites(self, states: &[State]) -> bool {
        match self {
            Effect::Put { .. } | Effect::Delete => true,
            Effect::CasUnknown { expected, .. } => states.iter().all(|&state| match state {
                State::Absent => expected == 0,
                State::Present { version, .. } => version == Some(expected),
            }),
            _ => false,
        }
    }

    /// Observers only filter the possible states (and pin unknown versions).
    fn is_observer(self) -> bool {
        matches!(self, Effect::Read(_) | Effect::CasRejected { .. })
    }

    /// What the effect needs from the state to be possible at all.
    fn need(self) -> Need {
        match self {
            Effect::Read(None)
            | Effect::CasApplied { expected: 0, .. }
            | Effect::CasRejected { current: 0, .. } => Need::Absent,
            Effect::Read(Some((version, value))) => Need::Exact(version, value),
            Effect::CasRejected { expected, current } if expected == current => Need::Impossible,
            Effect::CasApplied {
                expected: version, ..
            }
            | Effect::CasRejected {
                current: version, ..
            } => Need::Version(version),
            Effect::Put { .. } | Effect::Delete | Effect::CasUnknown { .. } => Need::Nothing,
        }
    }

    /// What the effect may provide to the operations after it.
    fn supplies(self, known: bool) -> [Option<Supply>; 2] {
        match self {
            Effect::Put {
                version: Some(version),
                value,
            }
            | Effect::CasApplied {
                version,
                new: value,
                ..
            } => [
                Some(Supply::Version(version)),
                Some(Supply::Exact(version, value)),
            ],
            Effect::Put {
                version: None,
                value,
            }
            | Effect::CasUnknown { new: value, .. } => {
                [Some(Supply::AnyVersion), Some(Supply::AnyVersionOf(value))]
            }
            Effect::Delete if known => [Some(Supply::Absent), None],
            Effect::Delete => [Some(Supply::UnknownAbsent), None],
            Effect::Read(_) | Effect::CasRejected { .. } => [None, None],
        }
    }

    /// Whether an unknown write with this effect could provide what `need`s.
    fn may_provide(self, need: Need) -> bool {
        match (self, need) {
            (Effect::Delete, Need::Absent) => true,
            (Effect::Put { .. } | Effect::CasUnknown { .. }, Need::Version(_)) => true,
            (
                Effect::Put { value, .. } | Effect::CasUnknown { new: value, .. },
                Need::Exact(_, wanted),
            ) => value == wanted,
            _ => false,
        }
    }

    /// The version the system reported for a write; the search uses the order
    /// of versions as a hint of the linearization order, never as a constraint.
    fn written_version(self) -> Option<u64> {
        match self {
            Effect::Put { version, .. } => version,
            Effect::CasApplied { version, .. } => Some(version),
            _ => None,
        }
    }
}

/// What an observation or a conditional write needs the state to be.
#[derive(Clone, Copy, Debug)]
enum Need {
    Nothing,
    Impossible,
    Absent,
    Version(u64),
    Exact(u64, usize),
}

/// See `Search::prospect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Prospect {
    Now,
    Known,
    OnlyUnknown,
    Never,
}

/// What a pending write can make the state be.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Supply {
    Absent,
    UnknownAbsent,
    Version(u64),
    Exact(u64, usize),
    /// An unknown write, whose version can turn out to be anything.
    AnyVersion,
    AnyVersionOf(usize),
}

#[derive(Debug)]
struct Compiled {
    /// Index in the caller's slice.
    index: usize,
    effect: Effect,
    /// False for unknown outcomes, which never have to be linearized.
    known: bool,
    /// Response time (`u64::MAX` when unknown); only used to order candidates.
    respond: u64,
    /// Estimated latest linearization time, assuming versions follow the
    /// linearization order; only used to order candidates (see
    /// `Problem::estimate_deadlines`).
    deadline: u64,
    /// Bit in the known or unknown bitset, depending on `known`.
    slot: usize,
}

struct Problem<'h> {
    ops: Vec<Compiled>,
    /// Versions reported by known writes.
    known_versions: HashSet<u64>,
    values: Vec<&'h [u8]>,
    known: usize,
    unknown: usize,
    /// `(time, is_return, op)` sorted; calls sort before returns at equal times so
    /// that touching intervals count as concurrent.
    entries: Vec<(u64, bool, usize)>,
}

impl<'h> Problem<'h> {
    fn compile(history: &'h [Operation]) -> Result<Self, Violation> {
        let mut interned: HashMap<&'h [u8], usize> = HashMap::new();
        let mut values: Vec<&'h [u8]> = Vec::new();
        let mut intern = |bytes: &'h [u8]| {
            *interned.entry(bytes).or_insert_with(|| {
                values.push(bytes);
                values.len() - 1
            })
        };
        let mut ops = Vec::new();
        let mut entries = Vec::new();
        let (mut known, mut unknown) = (0, 0);
        for (index, operation) in history.iter().enumerate() {
            let malformed = |reason: String| Violation::Malformed { index, reason };
            let nonzero = |version: u64| {
                if version == 0 {
                    Err(malformed(format!(
                        "{} reports version 0, which is reserved for \"absent\"",
                        operation.outcome
                    )))
                } else {
                    Ok(version)
                }
            };
            let effect = match (&operation.op, &operation.outcome) {
                // An unanswered read observed nothing and changes nothing.
                (Op::Get, Outcome::Unknown) => continue,
                (Op::Get, Outcome::Read(None)) => Effect::Read(None),
                (Op::Get, Outcome::Read(Some((version, value)))) => {
                    Effect::Read(Some((nonzero(*version)?, intern(value))))
                }
                (Op::Put { value }, Outcome::Written { version }) => Effect::Put {
                    value: intern(value),
                    version: Some(nonzero(*version)?),
                },
                (Op::Put { value }, Outcome::Unknown) => Effect::Put {
                    value: intern(value),
                    version: None,
                },
                (Op::Delete, Outcome::Deleted | Outcome::Unknown) => Effect::Delete,
                (
                    Op::Cas {
                        expected_version,
                        new,
                    },
                    Outcome::CasApplied { version },
                ) => Effect::CasApplied {
                    expected: *expected_version,
                    new: intern(new),
                    version: nonzero(*version)?,
                },
                (
                    Op::Cas {
                        expected_version, ..
                    },
                    Outcome::CasRejected { current_version },
                ) => Effect::CasRejected {
                    expected: *expected_version,
                    current: *current_version,
                },
                (
                    Op::Cas {
                        expected_version,
                        new,
                    },
                    Outcome::Unknown,
                ) => Effect::CasUnknown {
                    expected: *expected_version,
                    new: intern(new),
                },
                (op, outcome) => {
                    return Err(malformed(format!(
                        "outcome `{outcome}` cannot answer `{op}`"
                    )))
                }
            };
            let op = ops.len();
            entries.push((operation.invoke, false, op));
            let is_known = operation.outcome != Outcome::Unknown;
            if is_known {
                let respond = operation.respond.ok_or_else(|| {
                    malformed(format!(
                        "outcome `{}` without a response time",
                        operation.outcome
                    ))
                })?;
                if respond < operation.invoke {
                    return Err(malformed(format!(
                        "responded at {respond}, before its invocation at {}",
                        operation.invoke
                    )));
                }
                entries.push((respond, true, op));
                known += 1;
            } else {
                unknown += 1;
            }
            ops.push(Compiled {
                index,
                effect,
                known: is_known,
                respond: operation.respond.filter(|_| is_known).unwrap_or(u64::MAX),
                deadline: u64::MAX,
                slot: 0,
            });
        }
        // Stable: ties between calls keep history order, which keeps the search
        // deterministic.
        entries.sort_by_key(|&(time, is_return, _)| (time, is_return));
        // Number the bits in invocation order: the linearized operations are then
        // mostly a prefix, which `Memo` stores compactly.
        let (mut known_slots, mut unknown_slots) = (0, 0);
        for &(_, is_return, op) in &entries {
            if is_return {
                continue;
            }
            let slots = if ops[op].known {
                &mut known_slots
            } else {
                &mut unknown_slots
            };
            ops[op].slot = *slots;
            *slots += 1;
        }
        estimate_deadlines(&mut ops);
        let known_versions = ops
            .iter()
            .filter(|op| op.known)
            .filter_map(|op| op.effect.written_version())
            .collect();
        Ok(Self {
            ops,
            known_versions,
            values,
            known,
            unknown,
            entries,
        })
    }

    fn public_state(&self, state: State) -> RegisterState {
        match state {
            State::Absent => RegisterState::Absent,
            State::Present { version, value } => RegisterState::Present {
                version,
                value: self.values[value].to_vec(),
            },
        }
    }
}

/// Fills `Compiled::deadline`, a search heuristic only. If versions follow the
/// linearization order (as Raft log indices do), the write of version `v`
/// precedes every write of a higher version and every operation that observes
/// or expects such a version, so it must be linearized before all of their
/// responses. Other operations just have their response time.
fn estimate_deadlines(ops: &mut [Compiled]) {
    let mut needed_by: BTreeMap<u64, u64> = BTreeMap::new();
    for op in ops.iter().filter(|op| op.known) {
        let version = match op.effect {
            Effect::Put { version, .. } => version,
            Effect::CasApplied {
                expected, version, ..
            } => {
                if expected != 0 {
                    let entry = needed_by.entry(expected).or_insert(u64::MAX);
                    *entry = (*entry).min(op.respond);
                }
                Some(version)
            }
            Effect::Read(read) => read.map(|(version, _)| version),
            Effect::CasRejected { current, .. } => (current != 0).then_some(current),
            Effect::Delete | Effect::CasUnknown { .. } => None,
        };
        if let Some(version) = version {
            let entry = needed_by.entry(version).or_insert(u64::MAX);
            *entry = (*entry).min(op.respond);
        }
    }
    let mut latest = u64::MAX;
    for deadline in needed_by.values_mut().rev() {
        latest = latest.min(*deadline);
        *deadline = latest;
    }
    for op in ops.iter_mut() {
        op.deadline = match op.effect.written_version() {
            Some(version) if op.known => needed_by.get(&version).copied().unwrap_or(op.respond),
            _ => op.respond,
        };
    }
}

/// Which versions a write with an unknown outcome may turn out to have.
#[derive(Clone, Copy, Debug)]
struct Unknowns<'a> {
    /// Versions it may not have: `None` in the permissive model (any version
    /// but 0), the versions reported by known writes in the fresh model.
    taken: Option<&'a HashSet<u64>>,
}

impl Unknowns<'_> {
    fn may_be(self, version: u64) -> bool {
        version != 0 && self.taken.is_none_or(|taken| !taken.contains(&version))
    }
}

/// Does a present version (`None` = unknown) satisfy a required one?
fn version_matches(actual: Option<u64>, required: u64, unknowns: Unknowns<'_>) -> bool {
    actual.map_or_else(|| unknowns.may_be(required), |actual| actual == required)
}

/// Pushes onto `out` every state `state` can move to under `effect` when the
/// observation is consistent; nothing when it is not.
fn successors(state: State, effect: Effect, unknowns: Unknowns<'_>, out: &mut Vec<State>) {
    match (effect, state) {
        (Effect::Put { value, version }, _) => out.push(State::Present { version, value }),
        (Effect::Delete, _) => out.push(State::Absent),
        (Effect::Read(None), State::Absent) => out.push(State::Absent),
        (
            Effect::Read(Some((version, value))),
            State::Present {
                version: v,
                value: x,
            },
        ) if x == value && version_matches(v, version, unknowns) => {
            // Pin an unknown version to the observed one.
            out.push(State::Present {
                version: Some(version),
                value,
            });
        }
        (Effect::Read(_), _) => {}
        (
            Effect::CasApplied {
                expected,
                new,
                version,
            },
            _,
        ) => {
            let holds = match state {
                State::Absent => expected == 0,
                State::Present { version: v, .. } => version_matches(v, expected, unknowns),
            };
            if holds {
                out.push(State::Present {
                    version: Some(version),
                    value: new,
                });
            }
        }
        (Effect::CasRejected { expected, current }, _) if expected != current => match state {
            State::Absent if current == 0 => out.push(State::Absent),
            State::Present { version, value } if version_matches(version, current, unknowns) => {
                out.push(State::Present {
                    version: Some(current),
                    value,
                });
            }
            _ => {}
        },
        // Rejected although it reports the expected version: impossible anywhere.
        (Effect::CasRejected { .. }, _) => {}
        (Effect::CasUnknown { expected, new }, State::Absent) => {
            out.push(if expected == 0 {
                State::Present {
                    version: None,
                    value: new,
                }
            } else {
                state
            });
        }
        (Effect::CasUnknown { expected, new }, State::Present { version, .. }) => {
            let applied = State::Present {
                version: None,
                value: new,
            };
            match version {
                Some(v) if v == expected => out.push(applied),
                Some(_) => out.push(state),
                None if !unknowns.may_be(expected) => out.push(state),
                // The unknown version may or may not be `expected`. Not recording
                // "!= expected" in the rejected branch only makes it more permissive.
                None => {
                    out.push(applied);
                    out.push(state);
                }
            }
        }
    }
}

/// All the states `states` can move to under `effect`, sorted and deduplicated
/// so that equal sets compare equal; empty when the observation is impossible.
fn step_set(states: &[State], effect: Effect, unknowns: Unknowns<'_>, out: &mut Vec<State>) {
    out.clear();
    for &state in states {
        successors(state, effect, unknowns, out);
    }
    out.sort_unstable();
    out.dedup();
}

// ---------------------------------------------------------------------------
// The search.

const HEAD: usize = 0;
const NIL: usize = usize::MAX;

fn set_bit(bits: &mut [u64], bit: usize) {
    bits[bit / 64] |= 1 << (bit % 64);
}

fn clear_bit(bits: &mut [u64], bit: usize) {
    bits[bit / 64] &= !(1 << (bit % 64));
}

fn is_subset(small: &[u64], large: &[u64]) -> bool {
    small.iter().zip(large).all(|(s, l)| s & !l == 0)
}

/// Refuted configurations: (known bitset, states) -> the unknown bitsets with
/// which that configuration was refuted (kept minimal under inclusion).
struct Memo {
    refuted: HashMap<Box<[u64]>, Vec<Box<[u64]>>>,
    bytes: usize,
    key: Vec<u64>,
}

impl Memo {
    fn load_key(&mut self, known: &[u64], states: &[State]) {
        // Known operations are numbered in invocation order, so the set is
        // mostly full words followed by empty ones: store only the middle.
        // The lengths keep the encoding unambiguous.
        let full = known.iter().take_while(|&&word| word == u64::MAX).count();
        let end = known
            .iter()
            .rposition(|&word| word != 0)
            .map_or(0, |last| last + 1)
            .max(full);
        self.key.clear();
        self.key.extend([full as u64, (end - full) as u64]);
        self.key.extend_from_slice(&known[full..end]);
        for state in states {
            match *state {
                State::Absent => self.key.push(0),
                State::Present {
                    version: None,
                    value,
                } => self.key.extend([1, value as u64]),
                State::Present {
                    version: Some(version),
                    value,
                } => self.key.extend([2, value as u64, version]),
            }
        }
    }

    fn is_refuted(&mut self, known: &[u64], states: &[State], unknown: &[u64]) -> bool {
        self.load_key(known, states);
        self.refuted
            .get(self.key.as_slice())
            .is_some_and(|subsets| subsets.iter().any(|s| is_subset(s, unknown)))
    }

    fn refute(&mut self, known: &[u64], states: &[State], unknown: &[u64]) {
        self.load_key(known, states);
        let entry_bytes = 8 * unknown.len() + 3 * std::mem::size_of::<usize>();
        if let Some(subsets) = self.refuted.get_mut(self.key.as_slice()) {
            subsets.retain(|s| !is_subset(unknown, s));
            subsets.push(unknown.into());
            self.bytes += entry_bytes;
        } else {
            self.bytes += entry_bytes + 8 * self.key.len() + 64;
            self.refuted
                .insert(self.key.as_slice().into(), vec![unknown.into()]);
        }
    }
}

/// One configuration on the search path: the states it may be in and the
/// operations that may be linearized next, in the order they are tried. The
/// linearized sets are not stored: they are the search's current bitsets.
struct Level {
    states: Vec<State>,
    /// Call nodes.
    candidates: Vec<usize>,
    /// Number of `candidates` tried; while a child is explored, the last tried
    /// one is lifted.
    tried: usize,
    /// Reached by an unknown write and restricted to the operations that justify
    /// it (see `Search::level`): a refutation only holds under that restriction,
    /// so it is not memoized.
    restricted: bool,
}

/// The dead end that got furthest, kept for the report.
struct Deepest {
    /// Time of the earliest pending response, then known operations placed:
    /// how far the search got. Depth alone would favour detours through
    /// unknown operations.
    progress: (u64, usize),
    prefix: Vec<usize>,
    states: Vec<State>,
    stuck: Vec<usize>,
    blame: Option<Blame>,
}

struct Search<'p, 'h> {
    problem: &'p Problem<'h>,
    limits: Limits,
    unknowns: Unknowns<'p>,
    /// Node `HEAD` is the sentinel; node `i + 1` is `problem.entries[i]`.
    next: Vec<usize>,
    prev: Vec<usize>,
    node_op: Vec<usize>,
    node_is_return: Vec<bool>,
    return_node: Vec<usize>,
    invoke: Vec<u64>,
    /// The pending operations that can supply each state, by invocation time.
    suppliers: HashMap<Supply, BTreeSet<(u64, usize)>>,
}

impl<'p, 'h> Search<'p, 'h> {
    fn new(problem: &'p Problem<'h>, limits: Limits, unknowns: Unknowns<'p>) -> Self {
        let nodes = problem.entries.len() + 1;
        let mut search = Self {
            problem,
            limits,
            unknowns,
            next: (1..=nodes)
                .map(|n| if n == nodes { NIL } else { n })
                .collect(),
            prev: (0..nodes).map(|n| n.wrapping_sub(1)).collect(),
            node_op: vec![NIL; nodes],
            node_is_return: vec![false; nodes],
            return_node: vec![NIL; problem.ops.len()],
            invoke: vec![0; problem.ops.len()],
            suppliers: HashMap::new(),
        };
        for (i, &(time, is_return, op)) in problem.entries.iter().enumerate() {
            search.node_op[i + 1] = op;
            search.node_is_return[i + 1] = is_return;
            if is_return {
                search.return_node[op] = i + 1;
            } else {
                search.invoke[op] = time;
            }
        }
        for op in 0..problem.ops.len() {
            search.supply(op, true);
        }
        search
    }

    fn supply(&mut self, op: usize, pending: bool) {
        let key = (self.invoke[op], op);
        let op_ref = &self.problem.ops[op];
        for supply in op_ref.effect.supplies(op_ref.known).into_iter().flatten() {
            let suppliers = self.suppliers.entry(supply).or_default();
            if pending {
                suppliers.insert(key);
            } else {
                suppliers.remove(&key);
            }
        }
    }

    fn is_supplied(&self, supply: Supply) -> bool {
        self.suppliers
            .get(&supply)
            .is_some_and(|suppliers| !suppliers.is_empty())
    }

    /// Where what a pending known operation needs can come from: the current
    /// states, or a pending write that could still be linearized before the
    /// operation's response.
    fn prospect(&self, op: &Compiled, states: &[State]) -> Prospect {
        let available = |supply: Supply| {
            self.suppliers
                .get(&supply)
                .and_then(BTreeSet::first)
                .is_some_and(|&(invoke, _)| invoke <= op.respond)
        };
        let present = |pred: &dyn Fn(Option<u64>, usize) -> bool| {
            states.iter().any(|&state| match state {
                State::Absent => false,
                State::Present { version, value } => pred(version, value),
            })
        };
        let (now, known, unknown) = match op.effect.need() {
            Need::Nothing => return Prospect::Now,
            Need::Impossible => return Prospect::Never,
            Need::Absent => (
                states.contains(&State::Absent),
                available(Supply::Absent),
                available(Supply::UnknownAbsent),
            ),
            Need::Version(wanted) => (
                present(&|version, _| version_matches(version, wanted, self.unknowns)),
                available(Supply::Version(wanted)),
                self.unknowns.may_be(wanted) && available(Supply::AnyVersion),
            ),
            Need::Exact(wanted, wanted_value) => (
                present(&|version, value| {
                    value == wanted_value && version_matches(version, wanted, self.unknowns)
                }),
                available(Supply::Exact(wanted, wanted_value)),
                self.unknowns.may_be(wanted) && available(Supply::AnyVersionOf(wanted_value)),
            ),
        };
        if now {
            Prospect::Now
        } else if known {
            Prospect::Known
        } else if unknown {
            Prospect::OnlyUnknown
        } else {
            Prospect::Never
        }
    }

    /// Whether a pending known operation can never become possible; then the
    /// configuration has no completion.
    fn is_dead(&self, op: &Compiled, states: &[State]) -> bool {
        self.prospect(op, states) == Prospect::Never
    }

    fn unlink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = next;
        if next != NIL {
            self.prev[next] = prev;
        }
    }

    /// Undoes `unlink`; valid because unlinks are undone in LIFO order.
    fn relink(&mut self, node: usize) {
        let (prev, next) = (self.prev[node], self.next[node]);
        self.next[prev] = node;
        if next != NIL {
            self.prev[next] = node;
        }
    }

    fn lift(&mut self, call: usize) {
        self.supply(self.node_op[call], false);
        self.unlink(call);
        let ret = self.return_node[self.node_op[call]];
        if ret != NIL {
            self.unlink(ret);
        }
    }

    fn unlift(&mut self, call: usize) {
        let ret = self.return_node[self.node_op[call]];
        if ret != NIL {
            self.relink(ret);
        }
        self.relink(call);
        self.supply(self.node_op[call], true);
    }

    /// The call nodes before the first return node (the operations real-time
    /// order allows next) and that return node (`NIL` if none).
    fn window(&self) -> (Vec<usize>, usize) {
        let mut calls = Vec::new();
        let mut node = self.next[HEAD];
        while node != NIL && !self.node_is_return[node] {
            calls.push(node);
            node = self.next[node];
        }
        (calls, node)
    }

    /// Builds the level for a configuration whose operations are already lifted.
    ///
    /// `justify` is `Some(parent states)` when the configuration was reached by an
    /// unknown write that certainly applied (see `Effect::overwrites`).
    ///
    /// The candidate set is reduced in ways that keep the search complete,
    /// because any completion of a configuration can be rearranged into one the
    /// search explores:
    ///
    /// * An observer that leaves the possible states unchanged becomes the only
    ///   candidate: nothing pending must precede it, and moving it to the front
    ///   cannot hurt the operations it jumps over.
    /// * Of several candidates with the same effect, only the one with the
    ///   earliest response (invocation, for unknown ones) is tried: swapping two
    ///   such operations in a completion keeps it valid.
    /// * An unknown operation that would change nothing is not tried: unknown
    ///   operations never have to be linearized.
    /// * An unknown write that certainly applies must be followed at once by a
    ///   known operation that was impossible before it, or by an unknown `Cas`.
    ///   Otherwise it could be moved after the next operation (an observer, which
    ///   then sees the earlier state; the write still applies after it and leaves
    ///   a state at least as permissive, since an unpinned version matches
    ///   anything a pinned one does) or dropped (the next operation overwrites
    ///   it). Without this, every unknown write multiplies the configurations by
    ///   the places where it could have been applied unseen.
    ///
    /// A configuration in which some pending known operation can never become
    /// possible (see `Search::prospect`) has no candidates at all.
    ///
    /// The order only affects speed; it is tuned for a correct system whose
    /// versions follow the linearization order (e.g. Raft log indices):
    ///
    /// 1. unknown writes that provide what a pending operation waits for and
    ///    only an unknown write can provide, if no pending known write has a
    ///    lower version than the one waited for;
    /// 2. known operations: after an unknown write, those that needed it before
    ///    those that could use it to impersonate a pending known write; then a
    ///    `Cas` whose expected state no pending known write can bring back (any
    ///    other write first would leave it to unknown writes); then earliest
    ///    estimated deadline first (see `estimate_deadlines`; a delete's deadline
    ///    is advanced to that of a pending operation that needs the key absent),
    ///    writes with equal deadlines in version order;
    /// 3. the other unknown operations, last so that the subset pruning in
    ///    `Memo` applies.
    fn level(
        &self,
        states: Vec<State>,
        justify: Option<&[State]>,
        scratch: &mut Vec<State>,
    ) -> Level {
        let ops = &self.problem.ops;
        let op_of = |call: usize| &ops[self.node_op[call]];
        let (calls, _) = self.window();
        let restricted = justify.is_some();
        if calls
            .iter()
            .any(|&call| op_of(call).known && self.is_dead(op_of(call), &states))
        {
            return Level {
                states,
                candidates: Vec::new(),
                tried: 0,
                restricted,
            };
        }
        // Judged on all pending operations, including those impossible right now:
        // they are the ones waiting for something. If a pending operation needs
        // the key absent, some delete must come before its deadline.
        let absent_deadline = calls
            .iter()
            .map(|&call| op_of(call))
            .filter(|op| {
                op.known
                    && matches!(
                        op.effect,
                        Effect::Read(None)
                            | Effect::CasRejected { current: 0, .. }
                            | Effect::CasApplied { expected: 0, .. }
                    )
            })
            .map(|op| op.deadline)
            .min()
            .filter(|_| !states.contains(&State::Absent))
            .unwrap_or(u64::MAX);
        // What pending operations wait for that only an unknown write can
        // provide: the unknown writes providing it are tried first, unless a
        // pending known write has a lower version (its turn comes first).
        let next_version = calls
            .iter()
            .map(|&call| op_of(call))
            .filter(|op| op.known)
            .filter_map(|op| op.effect.written_version())
            .min()
            .unwrap_or(u64::MAX);
        let demands: Vec<Need> = calls
            .iter()
            .map(|&call| op_of(call))
            .filter(|op| op.known && self.prospect(op, &states) == Prospect::OnlyUnknown)
            .map(|op| op.effect.need())
            .filter(|need| match *need {
                Need::Version(version) | Need::Exact(version, _) => version < next_version,
                _ => true,
            })
            .collect();
        let mut known = Vec::with_capacity(calls.len());
        let mut unknown = Vec::new();
        for call in calls {
            let op = op_of(call);
            step_set(&states, op.effect, self.unknowns, scratch);
            if scratch.is_empty() {
                continue;
            }
            if !op.known {
                let allowed = match justify {
                    Some(_) => matches!(op.effect, Effect::CasUnknown { .. }),
                    None => true,
                };
                if allowed && *scratch != states {
                    unknown.push(call);
                }
                continue;
            }
            if let Some(parent) = justify {
                let mut before = Vec::new();
                step_set(parent, op.effect, self.unknowns, &mut before);
                if before.is_empty() {
                    known.push(call);
                }
                continue;
            }
            if op.effect.is_observer() && *scratch == states {
                return Level {
                    states,
                    candidates: vec![call],
                    tried: 0,
                    restricted: false,
                };
            }
            known.push(call);
        }
        // Of equal effects keep one: swapping two such operations in a
        // completion keeps it valid if the one kept has the earliest response
        // (known ones) or is any (unknown ones, which have none). An unknown
        // operation is dropped in favour of a known one with the same effect,
        // which must be linearized anyway.
        let mut kept: HashMap<Effect, usize> = HashMap::new();
        for &call in &known {
            let op = op_of(call);
            kept.entry(op.effect)
                .and_modify(|other| {
                    if op.respond < op_of(*other).respond {
                        *other = call;
                    }
                })
                .or_insert(call);
        }
        known.retain(|&call| kept.get(&op_of(call).effect) == Some(&call));
        unknown.retain(|&call| kept.insert(op_of(call).effect, call).is_none());

        // A `Cas` possible now, whose expected state no pending known write can
        // bring back, is tried first: any other write would leave it to unknown
        // writes. After an unknown write, operations that needed an unknown
        // write are tried before those that merely could use it to impersonate a
        // pending known write. Then earliest deadline first, writes with equal
        // deadlines in version order.
        let now_or_never = |op: &Compiled| match op.effect {
            Effect::CasApplied { expected: 0, .. } => !self.is_supplied(Supply::Absent),
            Effect::CasApplied { expected, .. } => !self.is_supplied(Supply::Version(expected)),
            _ => false,
        };
        let impersonates = |op: &Compiled| {
            justify.is_some_and(|parent| self.prospect(op, parent) == Prospect::Known)
        };
        known.sort_by_cached_key(|&call| {
            let op = op_of(call);
            let deadline = match op.effect {
                Effect::Delete => op.deadline.min(absent_deadline),
                _ => op.deadline,
            };
            (
                impersonates(op),
                !now_or_never(op),
                deadline,
                op.effect.written_version().unwrap_or(u64::MAX),
                op.respond,
            )
        });
        let (wanted, unwanted): (Vec<usize>, Vec<usize>) = unknown.into_iter().partition(|&call| {
            demands
                .iter()
                .any(|&need| op_of(call).effect.may_provide(need))
        });
        let mut candidates = wanted;
        candidates.extend(known);
        candidates.extend(unwanted);
        Level {
            states,
            candidates,
            tried: 0,
            restricted,
        }
    }

    fn run(mut self, history: &[Operation]) -> Result<(), Violation> {
        let problem = self.problem;
        let mut known_bits = vec![0u64; problem.known.div_ceil(64)];
        let mut unknown_bits = vec![0u64; problem.unknown.div_ceil(64)];
        let mut memo = Memo {
            refuted: HashMap::new(),
            bytes: 0,
            key: Vec::new(),
        };
        let mut scratch = Vec::new();
        let mut levels = vec![self.level(vec![State::Absent], None, &mut scratch)];
        let mut placed_known = 0;
        let mut deepest: Option<Deepest> = None;
        let mut steps = 0u64;
        loop {
            if placed_known == problem.known {
                return Ok(());
            }
            let depth = levels.len() - 1;
            let Some(top) = levels.last_mut() else {
                break;
            };
            let mut lifted = false;
            while top.tried < top.candidates.len() {
                if steps >= self.limits.max_steps || memo.bytes > self.limits.max_memo_bytes {
                    return Err(Violation::Inconclusive {
                        steps,
                        memo_bytes: memo.bytes,
                        prefix_len: deepest.map_or(depth, |d| d.prefix.len()),
                        operations: problem.ops.len(),
                        if_versions_unique: None,
                    });
                }
                steps += 1;
                let call = top.candidates[top.tried];
                top.tried += 1;
                let op = &problem.ops[self.node_op[call]];
                step_set(&top.states, op.effect, self.unknowns, &mut scratch);
                if scratch.is_empty() {
                    continue;
                }
                let bits = if op.known {
                    &mut known_bits
                } else {
                    &mut unknown_bits
                };
                set_bit(bits, op.slot);
                if memo.is_refuted(&known_bits, &scratch, &unknown_bits) {
                    let bits = if op.known {
                        &mut known_bits
                    } else {
                        &mut unknown_bits
                    };
                    clear_bit(bits, op.slot);
                    continue;
                }
                self.lift(call);
                placed_known += usize::from(op.known);
                lifted = true;
                break;
            }
            if lifted {
                let states = std::mem::take(&mut scratch);
                let op = &problem.ops[self.node_op[top.candidates[top.tried - 1]]];
                let justify =
                    (!op.known && op.effect.overwrites(&top.states)).then_some(&top.states[..]);
                let level = self.level(states, justify, &mut scratch);
                levels.push(level);
                continue;
            }

            // Every candidate failed: this configuration is refuted.
            if !top.restricted {
                memo.refute(&known_bits, &top.states, &unknown_bits);
            }
            let progress = (self.frontier(), placed_known);
            if deepest.as_ref().is_none_or(|d| progress > d.progress) {
                deepest = Some(self.deepest(&levels, progress));
            }
            levels.pop();
            let Some(parent) = levels.last() else {
                break;
            };
            let call = parent.candidates[parent.tried - 1];
            self.unlift(call);
            let op = &problem.ops[self.node_op[call]];
            if op.known {
                clear_bit(&mut known_bits, op.slot);
                placed_known -= 1;
            } else {
                clear_bit(&mut unknown_bits, op.slot);
            }
        }
        let deepest = deepest.unwrap_or_else(|| self.deepest(&levels, (0, 0)));
        Err(Violation::NotLinearizable(Box::new(
            self.diagnosis(history, deepest),
        )))
    }

    /// Time of the first pending response: real time up to which the current
    /// configuration is consistent.
    fn frontier(&self) -> u64 {
        let mut node = self.next[HEAD];
        while node != NIL && !self.node_is_return[node] {
            node = self.next[node];
        }
        match node {
            NIL => u64::MAX,
            node => self.problem.entries[node - 1].0,
        }
    }

    /// Snapshot of the current path, whose last level is refuted.
    fn deepest(&self, levels: &[Level], progress: (u64, usize)) -> Deepest {
        let (stuck, first_return) = self.window();
        let (path, last) = match levels.split_last() {
            Some((last, path)) => (path, last.states.clone()),
            None => (levels, Vec::new()),
        };
        let ops = &self.problem.ops;
        let impossible = stuck
            .iter()
            .map(|&call| self.node_op[call])
            .find(|&op| ops[op].known && self.is_dead(&ops[op], &last));
        // Operation indices in the caller's history.
        let blame = match impossible {
            Some(op) => Some(Blame::Impossible(ops[op].index)),
            None => {
                (first_return != NIL).then(|| Blame::Overdue(ops[self.node_op[first_return]].index))
            }
        };
        Deepest {
            progress,
            prefix: path
                .iter()
                .map(|level| self.node_op[level.candidates[level.tried - 1]])
                .collect(),
            states: last,
            stuck: stuck.into_iter().map(|call| self.node_op[call]).collect(),
            blame,
        }
    }

    fn diagnosis(&self, history: &[Operation], deepest: Deepest) -> Diagnosis {
        let ops = &self.problem.ops;
        let with_op = |op: usize| (ops[op].index, history[ops[op].index].clone());
        let recent_from = deepest.prefix.len().saturating_sub(RECENT);
        Diagnosis {
            operations: ops.len(),
            recent: deepest.prefix[recent_from..]
                .iter()
                .map(|&op| with_op(op))
                .collect(),
            prefix: deepest.prefix.iter().map(|&op| ops[op].index).collect(),
            states: deepest
                .states
                .iter()
                .map(|&s| self.problem.public_state(s))
                .collect(),
            stuck: deepest.stuck.iter().map(|&op| with_op(op)).collect(),
            blame: deepest.blame,
        }
    }
}

// ---------------------------------------------------------------------------
// Reporting.

struct Bytes<'a>(&'a [u8]);

impl fmt::Display for Bytes<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "\"{}\"", self.0.escape_ascii())
    }
}

struct Version(u64);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0 == 0 {
            f.write_str("absent")
        } else {
            write!(f, "v{}", self.0)
        }
    }
}

impl fmt::Display for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Put { value } => write!(f, "put({})", Bytes(value)),
            Op::Delete => f.write_str("delete"),
            Op::Get => f.write_str("get"),
            Op::Cas {
                expected_version,
                new,
            } => write!(
                f,
                "cas(expect {} -> {})",
                Version(*expected_version),
                Bytes(new)
            ),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Written { version } => write!(f, "ok v{version}"),
            Outcome::Deleted => f.write_str("ok"),
            Outcome::Read(None) => f.write_str("absent"),
            Outcome::Read(Some((version, value))) => write!(f, "v{version} {}", Bytes(value)),
            Outcome::CasApplied { version } => write!(f, "applied v{version}"),
            Outcome::CasRejected { current_version } => {
                write!(f, "rejected (current {})", Version(*current_version))
            }
            Outcome::Unknown => f.write_str("unknown"),
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "client {} [{}..", self.client, self.invoke)?;
        match self.respond {
            Some(respond) if self.outcome != Outcome::Unknown => write!(f, "{respond}]")?,
            _ => f.write_str("?]")?,
        }
        write!(f, " {} -> {}", self.op, self.outcome)
    }
}

impl fmt::Display for RegisterState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RegisterState::Absent => f.write_str("absent"),
            RegisterState::Present {
                version: Some(version),
                value,
            } => write!(f, "v{version} {}", Bytes(value)),
            RegisterState::Present {
                version: None,
                value,
            } => write!(f, "v? {}", Bytes(value)),
        }
    }
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "not linearizable: stuck after linearizing {} of {} operations",
            self.prefix.len(),
            self.operations
        )?;
        if self.recent.is_empty() {
            writeln!(f, "  (nothing could be linearized first)")?;
        } else {
            writeln!(f, "  end of that linearization prefix:")?;
            for (index, operation) in &self.recent {
                writeln!(f, "    #{index} {operation}")?;
            }
        }
        let states: Vec<String> = self.states.iter().map(ToString::to_string).collect();
        writeln!(f, "  register state then: {}", states.join(" | "))?;
        writeln!(f, "  none of these can be linearized next:")?;
        for (index, operation) in &self.stuck {
            let mark = match self.blame {
                Some(Blame::Overdue(culprit)) if culprit == *index => {
                    "  <- responded before it could be linearized"
                }
                Some(Blame::Impossible(culprit)) if culprit == *index => {
                    "  <- no pending write can make this possible"
                }
                _ => "",
            };
            writeln!(f, "    #{index} {operation}{mark}")?;
        }
        Ok(())
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Violation::Malformed { index, reason } => {
                write!(f, "malformed history: operation #{index}: {reason}")
            }
            Violation::NotLinearizable(diagnosis) => diagnosis.fmt(f),
            Violation::Inconclusive {
                steps,
                memo_bytes,
                prefix_len,
                operations,
                if_versions_unique,
            } => {
                write!(
                    f,
                    "inconclusive: search limits hit after {steps} steps and ~{memo_bytes} memo \
                     bytes; got furthest after linearizing {prefix_len} of {operations} operations"
                )?;
                if let Some(diagnosis) = if_versions_unique {
                    write!(
                        f,
                        "\nassuming unknown writes got versions no known write reported, {diagnosis}"
                    )?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for Violation {}

// ---------------------------------------------------------------------------

#[cfg(test)]
mod tests;
