//! Tests of the linearizability checker.

use super::*;
use std::sync::Arc;
use std::time::Duration;

fn operation(client: usize, (invoke, respond): (u64, u64), op: Op, outcome: Outcome) -> Operation {
    Operation {
        client,
        invoke,
        respond: Some(respond),
        op,
        outcome,
    }
}

fn put(client: usize, t: (u64, u64), value: &str, version: u64) -> Operation {
    let op = Op::Put {
        value: value.into(),
    };
    operation(client, t, op, Outcome::Written { version })
}

fn get(client: usize, t: (u64, u64), read: Option<(u64, &str)>) -> Operation {
    let read = read.map(|(version, value)| (version, value.as_bytes().to_vec()));
    operation(client, t, Op::Get, Outcome::Read(read))
}

fn delete(client: usize, t: (u64, u64)) -> Operation {
    operation(client, t, Op::Delete, Outcome::Deleted)
}

fn cas(client: usize, t: (u64, u64), expected: u64, new: &str, outcome: Outcome) -> Operation {
    let op = Op::Cas {
        expected_version: expected,
        new: new.into(),
    };
    operation(client, t, op, outcome)
}

fn applied(version: u64) -> Outcome {
    Outcome::CasApplied { version }
}

fn rejected(current_version: u64) -> Outcome {
    Outcome::CasRejected { current_version }
}

/// An operation that never got an answer.
fn unanswered(client: usize, invoke: u64, op: Op) -> Operation {
    Operation {
        client,
        invoke,
        respond: None,
        op,
        outcome: Outcome::Unknown,
    }
}

fn put_op(value: &str) -> Op {
    Op::Put {
        value: value.into(),
    }
}

#[track_caller]
fn assert_ok(history: &[Operation]) {
    if let Err(violation) = check(history) {
        panic!("expected linearizable, got {violation}");
    }
}

#[track_caller]
fn assert_violation(history: &[Operation]) -> Diagnosis {
    match check(history) {
        Err(Violation::NotLinearizable(diagnosis)) => *diagnosis,
        other => panic!("expected a violation, got {other:?}"),
    }
}

#[test]
fn empty_history_passes() {
    assert_ok(&[]);
}

#[test]
fn sequential_valid_history_passes() {
    assert_ok(&[
        get(0, (0, 1), None),
        put(0, (2, 3), "a", 1),
        get(1, (4, 5), Some((1, "a"))),
        put(1, (6, 7), "b", 2),
        get(0, (8, 9), Some((2, "b"))),
        cas(0, (10, 11), 2, "c", applied(3)),
        get(1, (12, 13), Some((3, "c"))),
        cas(1, (14, 15), 2, "x", rejected(3)),
        delete(0, (16, 17)),
        get(1, (18, 19), None),
        cas(0, (20, 21), 3, "x", rejected(0)),
        cas(0, (22, 23), 0, "d", applied(7)),
        get(1, (24, 25), Some((7, "d"))),
    ]);
}

#[test]
fn register_starts_absent() {
    let diagnosis = assert_violation(&[get(0, (0, 1), Some((1, "a")))]);
    assert_eq!(diagnosis.prefix, Vec::<usize>::new());
    assert_eq!(diagnosis.culprit(), Some(0));
    assert_violation(&[cas(0, (0, 1), 5, "a", applied(6))]);
    assert_ok(&[cas(0, (0, 1), 5, "a", rejected(0))]);
}

#[test]
fn stale_read_after_completed_write_fails() {
    let history = [
        put(0, (0, 10), "a", 1),
        put(0, (20, 30), "b", 2),
        get(1, (40, 50), Some((1, "a"))),
    ];
    let diagnosis = assert_violation(&history);
    assert_eq!(diagnosis.prefix, vec![0, 1]);
    assert_eq!(diagnosis.blame, Some(Blame::Impossible(2)));
    assert_eq!(
        diagnosis.states,
        vec![RegisterState::Present {
            version: Some(2),
            value: b"b".to_vec()
        }]
    );
    let report = Violation::NotLinearizable(Box::new(diagnosis)).to_string();
    assert!(
        report.contains("#2 client 1 [40..50] get -> v1 \"a\""),
        "{report}"
    );
    assert!(
        report.contains("no pending write can make this possible"),
        "{report}"
    );
}

#[test]
fn read_with_right_value_but_wrong_version_fails() {
    assert_violation(&[put(0, (0, 10), "a", 1), get(1, (20, 30), Some((2, "a")))]);
}

#[test]
fn overlapping_write_and_read_pass_in_either_order() {
    let base = [put(0, (0, 10), "a", 1), put(0, (20, 40), "b", 2)];
    for read in [Some((1, "a")), Some((2, "b"))] {
        let mut history = base.to_vec();
        history.push(get(1, (25, 35), read));
        assert_ok(&history);
    }
    // One read sees the new value, an overlapping one the old: order them
    // old, write, new.
    let mut history = base.to_vec();
    history.push(get(1, (21, 39), Some((2, "b"))));
    history.push(get(2, (22, 38), Some((1, "a"))));
    assert_ok(&history);
}

#[test]
fn new_then_old_read_inversion_fails() {
    let history = [
        put(0, (0, 10), "a", 1),
        put(0, (20, 40), "b", 2),
        get(1, (21, 30), Some((2, "b"))),
        get(2, (31, 38), Some((1, "a"))),
    ];
    assert_violation(&history);
}

#[test]
fn concurrent_writes_linearize_in_either_order() {
    // Versions are not assumed to follow real time or linearization order.
    for (version, value) in [(5, "a"), (4, "b")] {
        assert_ok(&[
            put(0, (0, 10), "a", 5),
            put(1, (0, 10), "b", 4),
            get(2, (20, 30), Some((version, value))),
            get(2, (40, 50), Some((version, value))),
        ]);
    }
    assert_violation(&[
        put(0, (0, 10), "a", 5),
        put(1, (0, 10), "b", 4),
        get(2, (20, 30), Some((5, "a"))),
        get(2, (40, 50), Some((4, "b"))),
    ]);
}

#[test]
fn touching_intervals_count_as_concurrent() {
    assert_ok(&[
        put(0, (0, 10), "a", 1),
        put(0, (20, 30), "b", 2),
        get(1, (30, 40), Some((1, "a"))),
    ]);
}

#[test]
fn cas_applied_semantics() {
    let base = [put(0, (0, 10), "a", 3)];
    let with = |op: Operation| {
        let mut history = base.to_vec();
        history.push(op);
        history.push(get(1, (40, 50), Some((9, "b"))));
        history
    };
    assert_ok(&with(cas(1, (20, 30), 3, "b", applied(9))));
    // Wrong expected version, or "must be absent" while present.
    assert_violation(&with(cas(1, (20, 30), 2, "b", applied(9))));
    assert_violation(&with(cas(1, (20, 30), 0, "b", applied(9))));
    // Applied, but the read does not see the version it reported.
    assert_violation(&[
        put(0, (0, 10), "a", 3),
        cas(1, (20, 30), 3, "b", applied(9)),
        get(1, (40, 50), Some((8, "b"))),
    ]);
    // Create-if-absent.
    assert_ok(&[
        cas(1, (0, 10), 0, "b", applied(9)),
        get(1, (20, 30), Some((9, "b"))),
    ]);
}

#[test]
fn cas_rejected_semantics() {
    let base = [put(0, (0, 10), "a", 3)];
    let with = |op: Operation| {
        let mut history = base.to_vec();
        history.push(op);
        history.push(get(1, (40, 50), Some((3, "a"))));
        history
    };
    assert_ok(&with(cas(1, (20, 30), 2, "b", rejected(3))));
    assert_ok(&with(cas(1, (20, 30), 0, "b", rejected(3))));
    // Reports a current version the register never had at that point.
    let diagnosis = assert_violation(&with(cas(1, (20, 30), 2, "b", rejected(4))));
    assert_eq!(diagnosis.culprit(), Some(1));
    assert_violation(&with(cas(1, (20, 30), 2, "b", rejected(0))));
    // Rejected although the condition held.
    assert_violation(&with(cas(1, (20, 30), 3, "b", rejected(3))));
    // Absent key: only "current = absent" is consistent.
    assert_ok(&[cas(1, (0, 10), 3, "b", rejected(0))]);
    assert_violation(&[cas(1, (0, 10), 3, "b", rejected(3))]);
    assert_violation(&[cas(1, (0, 10), 0, "b", rejected(0))]);
}

#[test]
fn concurrent_cas_race_has_one_winner() {
    let base = [put(0, (0, 10), "a", 1)];
    let mut one_winner = base.to_vec();
    one_winner.push(cas(1, (20, 30), 1, "b", applied(2)));
    one_winner.push(cas(2, (20, 30), 1, "c", rejected(2)));
    assert_ok(&one_winner);
    let mut two_winners = base.to_vec();
    two_winners.push(cas(1, (20, 30), 1, "b", applied(2)));
    two_winners.push(cas(2, (20, 30), 1, "c", applied(3)));
    assert_violation(&two_winners);
}

#[test]
fn delete_semantics() {
    assert_ok(&[
        put(0, (0, 10), "a", 1),
        delete(0, (20, 30)),
        get(1, (40, 50), None),
        cas(1, (60, 70), 1, "b", rejected(0)),
    ]);
    assert_violation(&[
        put(0, (0, 10), "a", 1),
        delete(0, (20, 30)),
        get(1, (40, 50), Some((1, "a"))),
    ]);
}

#[test]
fn unknown_write_that_took_effect_passes() {
    assert_ok(&[
        put(0, (0, 10), "a", 1),
        unanswered(0, 20, put_op("b")),
        get(1, (30, 40), Some((7, "b"))),
        get(1, (50, 60), Some((7, "b"))),
        cas(1, (70, 80), 7, "c", applied(9)),
    ]);
    // Its effect may become visible long after the client gave up.
    assert_ok(&[
        put(0, (0, 10), "a", 1),
        unanswered(0, 20, put_op("b")),
        get(1, (30, 40), Some((1, "a"))),
        get(1, (1000, 1010), Some((7, "b"))),
    ]);
}

#[test]
fn unknown_write_that_did_not_take_effect_passes() {
    assert_ok(&[
        put(0, (0, 10), "a", 1),
        unanswered(0, 20, put_op("b")),
        get(1, (30, 40), Some((1, "a"))),
        get(1, (50, 60), Some((1, "a"))),
        cas(1, (70, 80), 1, "c", applied(9)),
        get(1, (90, 100), Some((9, "c"))),
    ]);
    // Nor does an unknown delete have to.
    assert_ok(&[
        put(0, (0, 10), "a", 1),
        unanswered(0, 20, Op::Delete),
        get(1, (30, 40), Some((1, "a"))),
    ]);
    assert_ok(&[
        put(0, (0, 10), "a", 1),
        unanswered(0, 20, Op::Delete),
        get(1, (30, 40), None),
    ]);
}

#[test]
fn unknown_write_cannot_act_before_invocation_or_twice() {
    // Seen before it was invoked.
    assert_violation(&[
        put(0, (0, 10), "a", 1),
        get(1, (20, 30), Some((7, "b"))),
        unanswered(0, 40, put_op("b")),
    ]);
    // Once visible, it stays until overwritten.
    assert_violation(&[
        put(0, (0, 10), "a", 1),
        unanswered(0, 20, put_op("b")),
        get(1, (30, 40), Some((7, "b"))),
        get(1, (50, 60), Some((1, "a"))),
    ]);
    // One write has one version.
    assert_violation(&[
        unanswered(0, 20, put_op("b")),
        get(1, (30, 40), Some((7, "b"))),
        get(1, (50, 60), Some((8, "b"))),
    ]);
}

#[test]
fn unknown_version_is_pinned_by_rejected_cas() {
    assert_ok(&[
        unanswered(0, 0, put_op("b")),
        cas(1, (10, 20), 3, "x", rejected(7)),
        get(1, (30, 40), Some((7, "b"))),
    ]);
    assert_violation(&[
        unanswered(0, 0, put_op("b")),
        cas(1, (10, 20), 3, "x", rejected(7)),
        get(1, (30, 40), Some((8, "b"))),
    ]);
    // The unknown write is present, so it cannot be reported absent, unless the
    // write has not happened yet.
    assert_ok(&[
        unanswered(0, 0, put_op("b")),
        cas(1, (10, 20), 3, "x", rejected(0)),
    ]);
    assert_violation(&[
        unanswered(0, 0, put_op("b")),
        get(1, (10, 20), Some((7, "b"))),
        cas(1, (30, 40), 3, "x", rejected(0)),
    ]);
}

#[test]
fn cas_may_match_an_unknown_version() {
    assert_ok(&[
        unanswered(0, 0, put_op("b")),
        get(1, (10, 20), Some((7, "b"))),
        cas(1, (30, 40), 7, "c", applied(9)),
        get(1, (50, 60), Some((9, "c"))),
    ]);
    assert_ok(&[
        put(0, (0, 5), "a", 1),
        unanswered(0, 10, put_op("b")),
        cas(1, (30, 40), 42, "c", applied(50)),
        get(1, (50, 60), Some((50, "c"))),
    ]);
}

#[test]
fn unknown_cas_semantics() {
    let base = [
        put(0, (0, 10), "a", 1),
        unanswered(
            0,
            20,
            Op::Cas {
                expected_version: 1,
                new: b"b".to_vec(),
            },
        ),
    ];
    for read in [Some((1, "a")), Some((5, "b"))] {
        let mut history = base.to_vec();
        history.push(get(1, (30, 40), read));
        assert_ok(&history);
    }
    // Its condition could never hold, so it could not have written "b".
    assert_violation(&[
        put(0, (0, 10), "a", 1),
        unanswered(
            0,
            20,
            Op::Cas {
                expected_version: 2,
                new: b"b".to_vec(),
            },
        ),
        get(1, (30, 40), Some((5, "b"))),
    ]);
    // Against an unknown version it may or may not apply.
    for read in [Some((7, "b")), Some((9, "c"))] {
        assert_ok(&[
            unanswered(0, 0, put_op("b")),
            unanswered(
                1,
                10,
                Op::Cas {
                    expected_version: 7,
                    new: b"c".to_vec(),
                },
            ),
            get(2, (30, 40), read),
        ]);
    }
}

#[test]
fn unknown_write_matched_by_cas_then_deleted() {
    // Regression: a memo key collision once refuted this.
    assert_ok(&[
        unanswered(0, 6, put_op("a")),
        delete(1, (2, 12)),
        cas(2, (3, 9), 3, "a", applied(3)),
        get(3, (17, 17), None),
    ]);
}

#[test]
fn unknown_write_may_take_any_version() {
    // Documented permissiveness: nothing says that the unknown write did not
    // get version 5 too (a Raft log index would not repeat, but the checker
    // does not assume it), so this passes, through the second search.
    assert_ok(&[
        put(0, (0, 10), "a", 5),
        unanswered(1, 20, put_op("b")),
        get(2, (30, 40), Some((5, "b"))),
    ]);
}

#[test]
fn unknown_get_is_ignored() {
    assert_ok(&[
        put(0, (0, 10), "a", 1),
        unanswered(1, 5, Op::Get),
        get(1, (20, 30), Some((1, "a"))),
    ]);
}

#[test]
fn lost_acknowledged_write_fails() {
    // The write of "b" was acknowledged, then a read saw the old value.
    let diagnosis = assert_violation(&[
        put(0, (0, 10), "a", 1),
        put(1, (20, 30), "b", 2),
        get(2, (25, 35), Some((2, "b"))),
        get(2, (40, 50), Some((1, "a"))),
    ]);
    assert_eq!(diagnosis.culprit(), Some(3));
    // Or the key vanished.
    assert_violation(&[put(1, (20, 30), "b", 2), get(2, (40, 50), None)]);
}

#[test]
fn malformed_histories_are_rejected() {
    let cases = [
        operation(0, (0, 1), Op::Get, Outcome::Written { version: 1 }),
        operation(0, (0, 1), Op::Delete, Outcome::Read(None)),
        put(0, (0, 1), "a", 0),
        get(0, (0, 1), Some((0, "a"))),
        cas(0, (0, 1), 1, "a", applied(0)),
        put(0, (5, 1), "a", 1),
        Operation {
            respond: None,
            ..put(0, (0, 1), "a", 1)
        },
    ];
    for case in cases {
        let history = [get(0, (0, 1), None), case];
        match check(&history) {
            Err(Violation::Malformed { index: 1, reason }) => assert!(!reason.is_empty()),
            other => panic!("expected malformed, got {other:?}"),
        }
    }
}

#[test]
fn search_limits_give_inconclusive() {
    let history: Vec<Operation> = (0..50)
        .map(|i| put(i, (0, 10), "a", i as u64 + 1))
        .chain([get(0, (20, 30), Some((1_000, "z")))])
        .collect();
    let limits = Limits {
        max_steps: 100,
        ..Limits::default()
    };
    let result = check_with_limits(&history, limits);
    assert!(
        result.as_ref().is_err_and(Violation::is_inconclusive),
        "{result:?}"
    );
}

// -- Randomized histories ---------------------------------------------

/// SplitMix64: deterministic, good enough, no dependencies.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn percent(&mut self, p: u64) -> bool {
        self.below(100) < p
    }
}

struct Planned {
    client: usize,
    invoke: u64,
    point: u64,
    respond: u64,
    kind: u64,
    unknown: bool,
}

const VALUES: [&str; 4] = ["a", "b", "c", "d"];

/// A history produced by a real sequential register: each operation takes
/// effect at a random point inside its interval, clients are sequential, and
/// some operations lose their answer (taking effect or not).
fn generate(
    rng: &mut Rng,
    clients: usize,
    per_client: usize,
    unknown_percent: u64,
) -> Vec<Operation> {
    let mut planned = Vec::new();
    for client in 0..clients {
        let mut t = rng.below(20);
        for _ in 0..per_client {
            let invoke = t + rng.below(10);
            let point = invoke + rng.below(40);
            let respond = point + rng.below(40);
            planned.push(Planned {
                client,
                invoke,
                point,
                respond,
                kind: rng.below(10),
                unknown: rng.percent(unknown_percent),
            });
            t = respond + 1;
        }
    }
    planned.sort_by_key(|p| (p.point, p.client));

    let mut state: Option<(u64, Vec<u8>)> = None;
    let mut log_index = 0;
    let mut history = Vec::new();
    for p in planned {
        let value = VALUES[rng.below(VALUES.len() as u64) as usize]
            .as_bytes()
            .to_vec();
        let current = state.as_ref().map_or(0, |(version, _)| *version);
        let takes_effect = !p.unknown || rng.percent(50);
        let (op, outcome) = match p.kind {
            0..=3 => (Op::Get, Outcome::Read(state.clone())),
            4 | 5 => {
                let op = Op::Put {
                    value: value.clone(),
                };
                if takes_effect {
                    let version = bump(&mut log_index, rng);
                    state = Some((version, value));
                    (op, Outcome::Written { version })
                } else {
                    (op, Outcome::Unknown)
                }
            }
            6 => {
                if takes_effect {
                    state = None;
                }
                (Op::Delete, Outcome::Deleted)
            }
            _ => {
                let expected_version = match rng.below(4) {
                    0 | 1 => current,
                    2 => 0,
                    _ => log_index.saturating_sub(rng.below(4)),
                };
                let op = Op::Cas {
                    expected_version,
                    new: value.clone(),
                };
                if !takes_effect {
                    (op, Outcome::Unknown)
                } else if expected_version == current {
                    let version = bump(&mut log_index, rng);
                    state = Some((version, value));
                    (op, Outcome::CasApplied { version })
                } else {
                    let outcome = Outcome::CasRejected {
                        current_version: current,
                    };
                    (op, outcome)
                }
            }
        };
        let (respond, outcome) = if p.unknown {
            (None, Outcome::Unknown)
        } else {
            (Some(p.respond), outcome)
        };
        history.push(Operation {
            client: p.client,
            invoke: p.invoke,
            respond,
            op,
            outcome,
        });
    }
    // The checker must not depend on the order of the slice.
    history.sort_by_key(|o| (o.client, o.invoke));
    history
}

/// Next simulated log index; gaps stand for other keys' writes.
fn bump(log_index: &mut u64, rng: &mut Rng) -> u64 {
    *log_index += 1 + rng.below(3);
    *log_index
}

fn reads(history: &[Operation]) -> Vec<usize> {
    (0..history.len())
        .filter(|&i| matches!(history[i].outcome, Outcome::Read(_)))
        .collect()
}

#[test]
fn random_histories_from_sequential_executions_pass() {
    for seed in 0..200 {
        let mut rng = Rng(seed);
        let clients = 1 + rng.below(8) as usize;
        let per_client = 5 + rng.below(40) as usize;
        let history = generate(&mut rng, clients, per_client, 10);
        if let Err(violation) = check(&history) {
            panic!("seed {seed}: {violation}");
        }
    }
}

#[test]
fn random_history_with_impossible_read_fails() {
    for seed in 0..200 {
        let mut rng = Rng(seed);
        let clients = 1 + rng.below(8) as usize;
        let per_client = 5 + rng.below(40) as usize;
        let mut history = generate(&mut rng, clients, per_client, 10);
        let reads = reads(&history);
        if reads.is_empty() {
            continue;
        }
        let victim = reads[rng.below(reads.len() as u64) as usize];
        history[victim].outcome = Outcome::Read(Some((u64::MAX, b"never written".to_vec())));
        match check(&history) {
            Err(Violation::NotLinearizable(diagnosis)) => {
                // The search may get stuck elsewhere first, but not past it.
                let named = diagnosis.culprit() == Some(victim)
                    || diagnosis.stuck.iter().any(|&(index, _)| index == victim);
                assert!(named, "seed {seed}: {diagnosis}");
            }
            other => panic!("seed {seed}: expected a violation, got {other:?}"),
        }
    }
}

#[test]
fn random_history_with_plausible_wrong_read_usually_fails() {
    let (mut trials, mut caught) = (0, 0);
    for seed in 0..300 {
        let mut rng = Rng(seed);
        let clients = 2 + rng.below(6) as usize;
        let per_client = 10 + rng.below(30) as usize;
        let mut history = generate(&mut rng, clients, per_client, 5);
        let reads = reads(&history);
        // Candidate replacements: absent, or any (version, value) some
        // acknowledged write produced somewhere in the history.
        let mut written: Vec<Option<(u64, Vec<u8>)>> = vec![None];
        for o in &history {
            match (&o.op, &o.outcome) {
                (Op::Put { value }, Outcome::Written { version })
                | (Op::Cas { new: value, .. }, Outcome::CasApplied { version }) => {
                    written.push(Some((*version, value.clone())));
                }
                _ => {}
            }
        }
        if reads.is_empty() {
            continue;
        }
        let victim = reads[rng.below(reads.len() as u64) as usize];
        let replacement = written[rng.below(written.len() as u64) as usize].clone();
        if history[victim].outcome == Outcome::Read(replacement.clone()) {
            continue;
        }
        history[victim].outcome = Outcome::Read(replacement);
        trials += 1;
        match check(&history) {
            Ok(()) => {}
            Err(Violation::NotLinearizable(_)) => caught += 1,
            Err(other) => panic!("seed {seed}: {other}"),
        }
    }
    eprintln!("plausible wrong reads caught: {caught}/{trials}");
    // Some replacements are legitimately possible (a concurrent write).
    assert!(caught * 3 >= trials * 2, "only {caught}/{trials} caught");
}

/// Exhaustive reference for the search: every order real time allows, same
/// register semantics, no pruning, reductions or heuristics.
fn brute_force(history: &[Operation]) -> bool {
    fn extend(
        problem: &Problem<'_>,
        invoke: &[u64],
        placed: &mut [bool],
        states: &[State],
    ) -> bool {
        let ops = &problem.ops;
        if (0..ops.len()).all(|op| placed[op] || !ops[op].known) {
            return true;
        }
        let mut next = Vec::new();
        for op in 0..ops.len() {
            let blocked = (0..ops.len())
                .any(|other| !placed[other] && ops[other].known && ops[other].respond < invoke[op]);
            if placed[op] || blocked {
                continue;
            }
            step_set(states, ops[op].effect, Unknowns { taken: None }, &mut next);
            if next.is_empty() {
                continue;
            }
            placed[op] = true;
            if extend(problem, invoke, placed, &next) {
                return true;
            }
            placed[op] = false;
        }
        false
    }
    let Ok(problem) = Problem::compile(history) else {
        return false;
    };
    let mut invoke = vec![0; problem.ops.len()];
    for &(time, is_return, op) in &problem.entries {
        if !is_return {
            invoke[op] = time;
        }
    }
    let mut placed = vec![false; problem.ops.len()];
    extend(&problem, &invoke, &mut placed, &[State::Absent])
}

/// Small histories with arbitrary (mostly impossible) outcomes.
fn arbitrary_history(rng: &mut Rng) -> Vec<Operation> {
    let len = 1 + rng.below(8) as usize;
    (0..len)
        .map(|client| {
            let invoke = rng.below(20);
            let respond = invoke + rng.below(15);
            let value = VALUES[rng.below(2) as usize].as_bytes().to_vec();
            let version = 1 + rng.below(3);
            let (op, outcome) = match rng.below(4) {
                0 => {
                    let read = (!rng.percent(30)).then_some((version, value));
                    (Op::Get, Outcome::Read(read))
                }
                1 => (Op::Put { value }, Outcome::Written { version }),
                2 => (Op::Delete, Outcome::Deleted),
                _ => {
                    let op = Op::Cas {
                        expected_version: rng.below(4),
                        new: value,
                    };
                    let outcome = if rng.percent(50) {
                        Outcome::CasApplied { version }
                    } else {
                        Outcome::CasRejected {
                            current_version: rng.below(4),
                        }
                    };
                    (op, outcome)
                }
            };
            let unknown = rng.percent(20);
            Operation {
                client,
                invoke,
                respond: (!unknown).then_some(respond),
                op,
                outcome: if unknown { Outcome::Unknown } else { outcome },
            }
        })
        .collect()
}

#[test]
fn search_agrees_with_brute_force_on_small_histories() {
    let (mut linearizable, mut violations) = (0, 0);
    for seed in 0..10_000 {
        let mut rng = Rng(seed);
        let history = if seed % 2 == 0 {
            arbitrary_history(&mut rng)
        } else {
            // Valid ones, sometimes with one read changed.
            let clients = 1 + rng.below(3) as usize;
            let per_client = 1 + rng.below(4) as usize;
            let mut history = generate(&mut rng, clients, per_client, 20);
            let reads = reads(&history);
            if !reads.is_empty() && rng.percent(50) {
                let victim = reads[rng.below(reads.len() as u64) as usize];
                let value = VALUES[rng.below(2) as usize].as_bytes().to_vec();
                let read = (!rng.percent(30)).then(|| (1 + rng.below(6), value));
                history[victim].outcome = Outcome::Read(read);
            }
            history
        };
        let expected = brute_force(&history);
        let got = check(&history);
        assert_eq!(got.is_ok(), expected, "seed {seed}: {got:?}\n{history:#?}");
        if let Err(violation) = got {
            assert!(
                matches!(violation, Violation::NotLinearizable(_)),
                "{violation}"
            );
            violations += 1;
        } else {
            linearizable += 1;
        }
    }
    eprintln!("{linearizable} linearizable, {violations} not");
    assert!(linearizable > 2000 && violations > 2000);
}

fn timed_check(history: &[Operation]) -> (Result<(), Violation>, Duration) {
    let start = Instant::now();
    let result = check(history);
    (result, start.elapsed())
}

#[test]
fn performance_2000_ops_16_clients() {
    let mut rng = Rng(42);
    let history = generate(&mut rng, 16, 125, 3);
    let (result, elapsed) = timed_check(&history);
    eprintln!("2000 ops / 16 clients: {elapsed:?}");
    if let Err(violation) = result {
        panic!("{violation}");
    }

    let mut history = history;
    let reads = reads(&history);
    let victim = reads[reads.len() / 2];
    history[victim].outcome = Outcome::Read(Some((u64::MAX, b"never written".to_vec())));
    let (result, elapsed) = timed_check(&history);
    eprintln!("2000 ops / 16 clients, refuted: {elapsed:?}");
    assert!(
        matches!(result, Err(Violation::NotLinearizable(_))),
        "{result:?}"
    );
}

#[test]
fn performance_4000_ops_64_clients() {
    let mut rng = Rng(7);
    let history = generate(&mut rng, 64, 63, 0);
    let (result, elapsed) = timed_check(&history);
    eprintln!("4032 ops / 64 clients: {elapsed:?}");
    if let Err(violation) = result {
        panic!("{violation}");
    }
}

#[test]
fn performance_4000_ops_32_clients_with_unknown_outcomes() {
    let mut rng = Rng(7);
    let history = generate(&mut rng, 32, 125, 3);
    let (result, elapsed) = timed_check(&history);
    eprintln!("4000 ops / 32 clients / 3% unknown: {elapsed:?}");
    if let Err(violation) = result {
        panic!("{violation}");
    }
}

// -- History recorder -------------------------------------------------

#[test]
fn recorded_threaded_history_passes() {
    const KEYS: [&str; 3] = ["k0", "k1", "k2"];
    let history = Arc::new(History::<&'static str>::new());
    // The system under test: one register per key behind a lock.
    type Store = Mutex<HashMap<&'static str, (u64, Vec<u8>)>>;
    let store: Arc<Store> = Arc::default();
    let log_index = Arc::new(Mutex::new(0u64));
    let threads: Vec<_> = (0..8)
        .map(|client| {
            let (history, store, log_index) = (
                Arc::clone(&history),
                Arc::clone(&store),
                Arc::clone(&log_index),
            );
            std::thread::spawn(move || {
                let mut rng = Rng(client as u64);
                for _ in 0..150 {
                    let key = KEYS[rng.below(3) as usize];
                    let value = VALUES[rng.below(4) as usize].as_bytes().to_vec();
                    let op = match rng.below(4) {
                        0 => Op::Get,
                        1 => Op::Put { value },
                        2 => Op::Delete,
                        _ => Op::Cas {
                            expected_version: rng.below(40),
                            new: value,
                        },
                    };
                    let pending = history.invoke(client, key, op.clone());
                    let outcome = {
                        let mut store = store.lock().unwrap_or_else(PoisonError::into_inner);
                        let mut log_index =
                            log_index.lock().unwrap_or_else(PoisonError::into_inner);
                        let current = store.get(key).map_or(0, |(v, _)| *v);
                        match op {
                            Op::Get => Outcome::Read(store.get(key).cloned()),
                            Op::Put { value } => {
                                *log_index += 1;
                                store.insert(key, (*log_index, value));
                                Outcome::Written {
                                    version: *log_index,
                                }
                            }
                            Op::Delete => {
                                store.remove(key);
                                Outcome::Deleted
                            }
                            Op::Cas {
                                expected_version,
                                new,
                            } if expected_version == current => {
                                *log_index += 1;
                                store.insert(key, (*log_index, new));
                                Outcome::CasApplied {
                                    version: *log_index,
                                }
                            }
                            Op::Cas { .. } => Outcome::CasRejected {
                                current_version: current,
                            },
                        }
                    };
                    // Some answers get lost after the fact.
                    if rng.percent(5) {
                        history.complete(pending, Outcome::Unknown);
                    } else {
                        history.complete(pending, outcome);
                    }
                }
            })
        })
        .collect();
    for thread in threads {
        assert!(thread.join().is_ok());
    }
    assert_eq!(history.len(), 8 * 150);
    assert_eq!(history.by_key().len(), KEYS.len());
    if let Err((key, violation)) = history.check() {
        panic!("key {key}: {violation}");
    }
}

#[test]
fn recorded_history_detects_stale_read() {
    let history = History::new();
    let p = history.invoke(0, "k", put_op("a"));
    history.complete(p, Outcome::Written { version: 1 });
    let p = history.invoke(0, "k", put_op("b"));
    history.complete(p, Outcome::Written { version: 2 });
    let p = history.invoke(1, "k", Op::Get);
    history.complete(p, Outcome::Read(Some((1, b"a".to_vec()))));
    // Never completed: stays unknown, which must not matter.
    let _abandoned = history.invoke(2, "k", Op::Delete);
    let other = history.invoke(0, "other", Op::Get);
    history.complete(other, Outcome::Read(None));
    match history.check() {
        Err(("k", Violation::NotLinearizable(diagnosis))) => {
            assert_eq!(diagnosis.culprit(), Some(2), "{diagnosis}");
        }
        other => panic!("expected a violation on k, got {other:?}"),
    }
    let operations = history.into_operations();
    assert_eq!(operations.len(), 5);
    assert_eq!(operations[3].1.outcome, Outcome::Unknown);
    assert!(operations
        .windows(2)
        .all(|w| w[0].1.invoke <= w[1].1.invoke));
}
