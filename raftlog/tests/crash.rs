//! Crash safety of the log with a real process kill. The test re-executes its own binary as a
//! child that appends batches, and now and then truncates, purges or saves a vote, printing a
//! line to stdout before each call (`will-…`) and after it returns (the acknowledgement). The
//! parent SIGKILLs the child at a random moment, reopens the log and checks it against what was
//! acknowledged:
//!
//! - every acknowledged entry is there, with the payload of the append that acknowledged it,
//!   unless a purge removed it or the one unacknowledged truncation in flight may have;
//! - no truncated entry came back, and nothing else is there but the batch in flight;
//! - the entries form one contiguous run, each payload intact;
//! - the purge point and the vote are at least the acknowledged ones, at most the attempted ones.
//!
//! Then the next child continues in the same directory. `STRATA_CRASH_SECS` sets the loop's
//! duration (default 10), `STRATA_SEED` replays a run.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use raftlog::{Log, LogOptions, MetaKind};

/// Set (to the log directory) only in the child process.
const CHILD_DIR: &str = "RAFTLOG_CRASH_CHILD_DIR";
/// The child's first generation number (tags its payloads) and its RNG seed.
const CHILD_GEN: &str = "RAFTLOG_CRASH_CHILD_GEN";
const CHILD_SEED: &str = "RAFTLOG_CRASH_CHILD_SEED";
/// Prefix of the child's protocol lines (libtest may print on the same line first).
const MARK: &str = "@@ ";

/// Small segments so that rollovers, and purges and truncations across segments, are frequent.
fn options() -> LogOptions {
    LogOptions {
        segment_size: 16 << 10,
    }
}

/// splitmix64: enough randomness for a test, without a dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..hi` (`lo < hi`).
    fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.next() % (hi - lo)
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.next() % 100 < percent
    }
}

fn env_u64(name: &str) -> Option<u64> {
    let s = std::env::var(name).ok()?;
    Some(
        s.trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={s:?} is not an integer")),
    )
}

/// A self-describing payload: the index and generation, then filler derived from both, so that
/// the parent can tell a stale (truncated) or foreign entry from the one it expects.
fn payload(index: u64, gen: u64) -> Vec<u8> {
    let mut v = Vec::new();
    v.extend_from_slice(&index.to_le_bytes());
    v.extend_from_slice(&gen.to_le_bytes());
    let len = ((index.wrapping_mul(31) ^ gen) % 400) as usize;
    v.extend((0..len).map(|j| (index ^ gen).wrapping_add(j as u64) as u8));
    v
}

/// The generation of a payload that `payload` wrote for `index`, or a panic.
fn check_payload(index: u64, data: &[u8]) -> u64 {
    assert!(data.len() >= 16, "entry {index}: short payload");
    let got = u64::from_le_bytes(data[..8].try_into().unwrap());
    let gen = u64::from_le_bytes(data[8..16].try_into().unwrap());
    assert_eq!(got, index, "entry {index} holds the payload of entry {got}");
    assert!(
        data == payload(index, gen),
        "entry {index}: damaged payload"
    );
    gen
}

/// The child's body. Does nothing in a normal test run (the variable is absent).
#[test]
fn crash_child() {
    let Some(dir) = std::env::var_os(CHILD_DIR) else {
        return;
    };
    let mut gen = env_u64(CHILD_GEN).unwrap();
    let mut rng = Rng(env_u64(CHILD_SEED).unwrap());
    let (mut log, _) = Log::open_with(&dir, options()).expect("child: open");
    let mut vote = log
        .meta(MetaKind::Vote)
        .map_or(0, |v| u64::from_le_bytes(v[..].try_into().unwrap()));
    let mut out = std::io::stdout().lock();
    let mut say = |line: String| {
        writeln!(out, "{MARK}{line}").unwrap();
        out.flush().unwrap();
    };
    say("ready".into());
    // Only a guard against a parent that died without killing us; it kills far earlier.
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let next = log.next_index().unwrap_or(0);
        let (first, last) = (log.first_index(), log.last_index());
        let roll = rng.range(0, 100);
        if let (Some(first), Some(last), true) = (first, last, roll < 4) {
            // Mostly a few entries off the end (a new leader's conflict), sometimes deep.
            let from = if rng.chance(70) {
                last.saturating_sub(rng.range(0, 20)).max(first)
            } else {
                rng.range(first, last + 1)
            };
            say(format!("will-trunc {from}"));
            log.truncate(from).expect("child: truncate");
            say(format!("trunc {from}"));
            // Entries written from now on must be told from the ones just removed.
            gen += 1;
        } else if let (Some(last), true) = (last, roll < 8) {
            // Keep up to a thousand entries (a dozen segments); purges cut segments in the
            // middle as often as not.
            let upto = last.saturating_sub(rng.range(0, 1000));
            let record = upto.to_le_bytes();
            say(format!("will-purge {upto}"));
            log.purge(upto, &record).expect("child: purge");
            say(format!("purge {upto}"));
        } else if roll < 11 {
            vote += 1;
            say(format!("will-vote {vote}"));
            log.save_meta(MetaKind::Vote, &vote.to_le_bytes())
                .expect("child: vote");
            say(format!("vote {vote}"));
        } else {
            let n = if rng.chance(30) { rng.range(2, 17) } else { 1 };
            let data: Vec<(u64, Vec<u8>)> =
                (next..next + n).map(|i| (i, payload(i, gen))).collect();
            let refs: Vec<(u64, &[u8])> = data.iter().map(|(i, d)| (*i, &d[..])).collect();
            say(format!("will-append {next} {} {gen}", next + n - 1));
            log.append(&refs).expect("child: append");
            say(format!("append {next} {} {gen}", next + n - 1));
        }
    }
    panic!("child: not killed within its deadline");
}

/// Kills the child if the parent panics, so no writer outlives a failed test.
struct ChildGuard(Option<Child>);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// What the parent knows the log must hold: every acknowledged change applied in order.
#[derive(Debug, Clone, Default)]
struct Model {
    /// Index -> generation of the entries the log must hold (above `purged`).
    entries: BTreeMap<u64, u64>,
    purged: Option<u64>,
    vote: u64,
}

/// The one operation that had started but not returned when the kill landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Pending {
    Append { first: u64, last: u64, gen: u64 },
    Truncate { from: u64 },
    Purge { upto: u64 },
    Vote(u64),
}

struct Run {
    ready: bool,
    acks: u32,
    model: Model,
    pending: Option<Pending>,
    stderr: String,
}

fn nums<const N: usize>(rest: &str) -> [u64; N] {
    let v: Vec<u64> = rest.split(' ').map(|s| s.parse().unwrap()).collect();
    v.try_into().expect("number count")
}

/// Applies one protocol line of the child to the model.
fn apply(line: &str, run: &mut Run) {
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    let m = &mut run.model;
    let pending = match verb {
        "ready" => {
            run.ready = true;
            return;
        }
        "will-append" => {
            let [first, last, gen] = nums(rest);
            Pending::Append { first, last, gen }
        }
        "will-trunc" => Pending::Truncate {
            from: nums::<1>(rest)[0],
        },
        "will-purge" => Pending::Purge {
            upto: nums::<1>(rest)[0],
        },
        "will-vote" => Pending::Vote(nums::<1>(rest)[0]),
        ack => {
            match (ack, run.pending.take()) {
                ("append", Some(Pending::Append { first, last, gen })) => {
                    assert_eq!(nums::<3>(rest), [first, last, gen]);
                    m.entries.split_off(&first);
                    m.entries.extend((first..=last).map(|i| (i, gen)));
                }
                ("trunc", Some(Pending::Truncate { from })) => {
                    m.entries.split_off(&from);
                }
                ("purge", Some(Pending::Purge { upto })) => {
                    m.purged = m.purged.max(Some(upto));
                    m.entries = m.entries.split_off(&(upto + 1));
                }
                ("vote", Some(Pending::Vote(v))) => m.vote = v,
                other => panic!("unexpected line {line:?} after {other:?}"),
            }
            run.acks += 1;
            return;
        }
    };
    assert_eq!(
        run.pending, None,
        "{line:?} before the previous call returned"
    );
    run.pending = Some(pending);
}

/// Runs one child from the state `model` and SIGKILLs it after `kill_after`.
fn run_child(dir: &Path, model: Model, gen: u64, seed: u64, kill_after: Duration) -> Run {
    let child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "crash_child",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(CHILD_DIR, dir)
        .env(CHILD_GEN, gen.to_string())
        .env(CHILD_SEED, seed.to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn child");
    let mut guard = ChildGuard(Some(child));
    let child = guard.0.as_mut().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    // Reads until EOF, i.e. until the child is dead, so every line written before the kill counts.
    let out = std::thread::spawn(move || {
        let mut run = Run {
            ready: false,
            acks: 0,
            model,
            pending: None,
            stderr: String::new(),
        };
        for line in BufReader::new(stdout).lines() {
            let line = line.unwrap();
            if let Some(pos) = line.find(MARK) {
                apply(&line[pos + MARK.len()..], &mut run);
            }
        }
        run
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    std::thread::sleep(kill_after);
    let mut child = guard.0.take().unwrap();
    if let Some(status) = child.try_wait().unwrap() {
        let stderr = err.join().unwrap();
        panic!("child exited on its own ({status:?}) instead of being killed; stderr:\n{stderr}");
    }
    child.kill().unwrap();
    let status = child.wait().unwrap();
    let mut run = out.join().expect("stdout reader");
    run.stderr = err.join().unwrap();
    assert_eq!(
        status.signal(),
        Some(9),
        "child not killed by SIGKILL: {}",
        run.stderr
    );
    run
}

/// Checks the reopened log against what the child acknowledged (see the module doc) and returns
/// the model of what it now holds.
fn verify(log: &Log, run: &Run) -> Model {
    let (m, pending) = (&run.model, run.pending);
    // The purge point and vote: at least the acknowledged ones, at most the attempted ones.
    let purged = log.last_purged().map(|(upto, rec)| {
        assert_eq!(&rec[..], &upto.to_le_bytes()[..], "purge record");
        upto
    });
    let max_purge = match pending {
        Some(Pending::Purge { upto }) => m.purged.max(Some(upto)),
        _ => m.purged,
    };
    assert!(
        m.purged <= purged && purged <= max_purge,
        "purge point {purged:?}, acknowledged {:?}, attempted {max_purge:?}",
        m.purged
    );
    let vote = log
        .meta(MetaKind::Vote)
        .map_or(0, |v| u64::from_le_bytes(v[..].try_into().unwrap()));
    let max_vote = match pending {
        Some(Pending::Vote(v)) => v,
        _ => m.vote,
    };
    assert!(
        m.vote <= vote && vote <= max_vote,
        "vote {vote}, acknowledged {}, attempted {max_vote}",
        m.vote
    );

    // Contiguous, intact entries just above the purge point.
    let entries = log.range(..).expect("read after recovery");
    let mut got = BTreeMap::new();
    for (k, (index, data)) in entries.iter().enumerate() {
        assert_eq!(*index, entries[0].0 + k as u64, "hole in the recovered log");
        got.insert(*index, check_payload(*index, data));
    }
    if let (Some(p), Some(&first)) = (purged, got.keys().next()) {
        assert_eq!(first, p + 1, "entries do not start after the purge point");
    }
    assert_eq!(log.first_index(), got.keys().next().copied(), "first_index");
    assert_eq!(
        log.last_index(),
        got.keys().next_back().copied(),
        "last_index"
    );

    // Every acknowledged entry above the purge point is there, with its generation; only an
    // unacknowledged truncation may have cut them, and only as a suffix from its cut point.
    let floor = purged.map_or(0, |p| p + 1);
    let cut = match pending {
        Some(Pending::Truncate { from }) => from,
        _ => u64::MAX,
    };
    for (&i, &gen) in m.entries.range(floor..) {
        match got.get(&i) {
            Some(&g) => assert_eq!(g, gen, "entry {i}: a truncated or foreign version"),
            None => assert!(
                i >= cut && got.range(i..).next().is_none(),
                "acknowledged entry {i} (generation {gen}) is missing; pending {pending:?}"
            ),
        }
    }
    // Anything else is the append in flight.
    for (&i, &gen) in &got {
        if m.entries.contains_key(&i) {
            continue;
        }
        match pending {
            Some(Pending::Append { first, last, gen: g }) if (first..=last).contains(&i) => {
                assert_eq!(gen, g, "entry {i}: not from the append in flight");
            }
            _ => panic!("entry {i} (generation {gen}) was never acknowledged nor in flight; pending {pending:?}"),
        }
    }
    Model {
        entries: got,
        purged,
        vote,
    }
}

#[test]
fn crash_recovery_loop() {
    if std::env::var_os(CHILD_DIR).is_some() {
        return;
    }
    let budget = Duration::from_secs(env_u64("STRATA_CRASH_SECS").unwrap_or(10));
    let seed = env_u64("STRATA_SEED").unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        t.unwrap().as_nanos() as u64
    });
    eprintln!("raftlog crash: STRATA_SEED={seed}");
    let mut rng = Rng(seed);
    let dir = tempfile::tempdir().unwrap();
    let mut model = Model::default();
    let (mut iterations, mut with_acks, mut not_ready) = (0u32, 0u32, 0u32);
    let (mut damaged, mut max_segments, mut pending_kinds) = (0u32, 0usize, [0u32; 4]);
    let started = Instant::now();
    while started.elapsed() < budget || iterations < 5 {
        // Mostly mid-workload; sometimes during start-up and recovery.
        let ms = if rng.chance(15) {
            rng.range(0, 25)
        } else {
            rng.range(25, 400)
        };
        let gen = u64::from(iterations + 1) << 32;
        let run = run_child(
            dir.path(),
            model.clone(),
            gen,
            rng.next(),
            Duration::from_millis(ms),
        );
        iterations += 1;
        not_ready += u32::from(!run.ready);
        with_acks += u32::from(run.acks > 0);
        if let Some(p) = run.pending {
            pending_kinds[match p {
                Pending::Append { .. } => 0,
                Pending::Truncate { .. } => 1,
                Pending::Purge { .. } => 2,
                Pending::Vote(_) => 3,
            }] += 1;
        }
        let (log, info) = Log::open_with(dir.path(), options()).unwrap_or_else(|e| {
            panic!(
                "iteration {iterations}: reopen after kill failed: {e}\nchild stderr:\n{}",
                run.stderr
            )
        });
        // A kill can only tear the tail; anything else is refused by the open above.
        damaged += u32::from(info.damage.is_some());
        max_segments = max_segments.max(info.segments);
        model = verify(&log, &run);
    }
    eprintln!(
        "raftlog crash: {iterations} kills ({not_ready} before the child was ready, {with_acks} \
         after acknowledgements, {damaged} torn tails cut), in flight at the kill \
         [append, truncate, purge, vote] = {pending_kinds:?}, up to {max_segments} segments, \
         {} entries at the end, {:?}",
        model.entries.len(),
        started.elapsed()
    );
    // The loop must really have killed writers mid-workload, not just idle children.
    assert!(
        with_acks * 2 >= iterations,
        "too few kills landed after an acknowledgement: {with_acks}/{iterations}"
    );
}
