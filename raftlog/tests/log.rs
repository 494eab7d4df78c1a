//! The segmented Raft log through its public API: round trips across segment rollovers, reopen,
//! truncate and purge durability, recovery from torn and corrupt records, meta values, and a
//! model test of random operation sequences with reopens in between.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use proptest::prelude::*;
use raftlog::{Error, Log, LogOptions, MetaKind, RecoveryInfo};

/// Small segments, so that a few hundred entries span many of them.
fn small() -> LogOptions {
    LogOptions { segment_size: 4096 }
}

/// The entry at `index`, of a length that varies with it (including empty entries).
fn payload(index: u64, variant: u8) -> Vec<u8> {
    let len = (index.wrapping_mul(37) % 300) as usize;
    (0..len)
        .map(|j| (index as u8).wrapping_add(j as u8) ^ variant)
        .collect()
}

/// Appends `lo..hi` in batches of 1 to 16 entries.
fn append_range(log: &mut Log, lo: u64, hi: u64, variant: u8) {
    let mut i = lo;
    while i < hi {
        let n = (1 + i % 16).min(hi - i);
        let data: Vec<(u64, Vec<u8>)> = (i..i + n).map(|j| (j, payload(j, variant))).collect();
        let refs: Vec<(u64, &[u8])> = data.iter().map(|(j, d)| (*j, &d[..])).collect();
        log.append(&refs).unwrap();
        i += n;
    }
}

fn open(dir: &Path) -> (Log, RecoveryInfo) {
    Log::open_with(dir, small()).unwrap()
}

/// Checks that the log holds exactly `lo..hi`, all of `variant`, through `get` and `range`.
fn check(log: &Log, lo: u64, hi: u64, variant: u8) {
    assert_eq!(log.first_index(), (lo < hi).then_some(lo));
    assert_eq!(log.last_index(), (lo < hi).then(|| hi - 1));
    let all = log.range(..).unwrap();
    assert_eq!(all.len() as u64, hi - lo);
    for (k, (i, data)) in all.iter().enumerate() {
        assert_eq!(*i, lo + k as u64);
        assert!(data[..] == payload(*i, variant)[..], "entry {i}");
    }
    for i in lo..hi {
        assert!(log.get(i).unwrap().unwrap()[..] == payload(i, variant)[..]);
    }
    assert_eq!(log.get(hi).unwrap(), None);
}

/// The segment files of `dir`, in index order.
fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    v.sort();
    v
}

fn flip_byte(path: &Path, offset: u64) {
    let mut b = std::fs::read(path).unwrap();
    b[offset as usize] ^= 0x20;
    std::fs::write(path, b).unwrap();
}

#[test]
fn round_trip_across_rollovers() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, info) = open(d.path());
    assert_eq!(info, RecoveryInfo::default());
    append_range(&mut log, 0, 2000, 0);
    check(&log, 0, 2000, 0);
    let segs = segments(d.path());
    assert!(segs.len() > 20, "{} segments", segs.len());
    // Sealed segments: the last one holds zeros written ahead of its appends until it is sealed
    // or the log closed.
    let sealed = &segs[..segs.len() - 1];
    for s in sealed {
        let len = std::fs::metadata(s).unwrap().len();
        // A batch never exceeds 16 * (24 + 300) bytes, so rollover keeps files near the limit.
        assert!(len <= 4096 + 16 * 324, "{} is {len} bytes", s.display());
    }
    let last = segs.last().unwrap();
    let open_len = std::fs::metadata(last).unwrap().len();
    assert!(
        open_len > 1 << 20,
        "no space written ahead: {open_len} bytes"
    );
    // Ranges across segment boundaries, and ones cut at the end of the log.
    for (lo, hi) in [(0, 1), (90, 700), (1999, 2000), (1500, 5000), (7, 7)] {
        let r = log.range(lo..hi).unwrap();
        assert_eq!(r.len() as u64, hi.min(2000) - lo, "{lo}..{hi}");
        assert!(r
            .iter()
            .zip(lo..)
            .all(|((i, b), j)| *i == j && b[..] == payload(j, 0)[..]));
    }
    assert_eq!(log.range(100..=100).unwrap().len(), 1);
    assert_eq!(log.range(5000..).unwrap(), vec![]);
    drop(log);
    let closed_len = std::fs::metadata(last).unwrap().len();
    assert!(
        closed_len <= 4096 + 16 * 316,
        "closing left {closed_len} bytes"
    );
    let (log, info) = open(d.path());
    assert_eq!(info.damage, None);
    check(&log, 0, 2000, 0);
}

#[test]
fn reopen_returns_the_same_entries() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = open(d.path());
    append_range(&mut log, 10, 1500, 3);
    let before = log.range(..).unwrap();
    drop(log);
    let (log, info) = open(d.path());
    assert_eq!(info.damage, None);
    assert_eq!(
        (info.first_index, info.last_index, info.segments),
        (Some(10), Some(1499), segments(d.path()).len())
    );
    assert_eq!(log.range(..).unwrap(), before);
    check(&log, 10, 1500, 3);
    // The reopened log continues where it ended, in the same segment.
    drop(log);
    let (mut log, _) = open(d.path());
    let n = segments(d.path()).len();
    append_range(&mut log, 1500, 1501, 3);
    assert_eq!(segments(d.path()).len(), n);
    check(&log, 10, 1501, 3);
}

#[test]
fn truncated_entries_never_come_back() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = open(d.path());
    append_range(&mut log, 0, 1000, 0);
    // In the middle of a segment.
    log.truncate(700).unwrap();
    check(&log, 0, 700, 0);
    drop(log);
    let (mut log, info) = open(d.path());
    assert_eq!(info.damage, None);
    check(&log, 0, 700, 0);
    // Exactly at a segment's first entry: that segment goes entirely.
    let segs = segments(d.path());
    let boundary: u64 = segs[segs.len() / 2]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    log.truncate(boundary).unwrap();
    assert_eq!(segments(d.path()).len(), segs.len() / 2);
    drop(log);
    let (mut log, _) = open(d.path());
    check(&log, 0, boundary, 0);
    // New entries at the truncated indexes replace the old ones, also after a reopen.
    append_range(&mut log, boundary, 900, 1);
    drop(log);
    let (log, _) = open(d.path());
    assert_eq!(log.last_index(), Some(899));
    for i in boundary..900 {
        assert!(log.get(i).unwrap().unwrap()[..] == payload(i, 1)[..]);
    }
    assert!(log.get(boundary - 1).unwrap().unwrap()[..] == payload(boundary - 1, 0)[..]);
    // Truncating everything leaves no segment behind.
    drop(log);
    let (mut log, _) = open(d.path());
    log.truncate(0).unwrap();
    assert_eq!(segments(d.path()), Vec::<PathBuf>::new());
    drop(log);
    let (log, _) = open(d.path());
    assert_eq!((log.first_index(), log.last_index()), (None, None));
}

#[test]
fn purge_survives_reopen() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = open(d.path());
    append_range(&mut log, 1, 1000, 0);
    let n = segments(d.path()).len();
    log.purge(350, b"log id 350").unwrap();
    assert!(segments(d.path()).len() < n);
    let reads_below_fail = |log: &Log| {
        assert_eq!(log.first_index(), Some(351));
        assert_eq!(log.get(350).unwrap(), None);
        assert_eq!(log.get(1).unwrap(), None);
        assert!(matches!(
            log.range(300..400),
            Err(Error::Purged {
                index: 300,
                purged: 350
            })
        ));
        assert!(log.range(..).unwrap()[0].0 == 351);
        assert!(log.get(351).unwrap().unwrap()[..] == payload(351, 0)[..]);
    };
    reads_below_fail(&log);
    drop(log);
    let (mut log, info) = open(d.path());
    assert_eq!(info.purged, Some(350));
    assert_eq!(info.first_index, Some(351));
    assert_eq!(log.last_purged().unwrap(), (350, b"log id 350"[..].into()));
    reads_below_fail(&log);
    check(&log, 351, 1000, 0);
    // Purging past the last entry (a snapshot install) empties the log, durably.
    log.purge(1200, b"snapshot").unwrap();
    assert_eq!(segments(d.path()), Vec::<PathBuf>::new());
    drop(log);
    let (mut log, info) = open(d.path());
    assert_eq!((info.first_index, info.last_index), (None, None));
    assert_eq!(log.next_index(), Some(1201));
    assert!(matches!(log.range(5..), Err(Error::Purged { .. })));
    assert!(matches!(
        log.append(&[(1000, b"x")]),
        Err(Error::NotContiguous {
            expected: 1201,
            got: 1000
        })
    ));
    append_range(&mut log, 1201, 1300, 0);
    drop(log);
    let (log, _) = open(d.path());
    check(&log, 1201, 1300, 0);
    assert_eq!(log.last_purged().unwrap().1, &b"snapshot"[..]);
}

/// A closed log of entries `0..500` and its last segment, with its length. The last entry is
/// 499 * 37 % 300 = 163 bytes long.
fn five_hundred_entries() -> (tempfile::TempDir, PathBuf, u64) {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = open(d.path());
    append_range(&mut log, 0, 500, 0);
    drop(log);
    let last = segments(d.path()).pop().unwrap();
    let len = std::fs::metadata(&last).unwrap().len();
    (d, last, len)
}

#[test]
fn torn_tail_is_cut_at_the_last_whole_record() {
    let (d, last, len) = five_hundred_entries();
    // Cut inside the last entry.
    std::fs::OpenOptions::new()
        .write(true)
        .open(&last)
        .unwrap()
        .set_len(len - 50)
        .unwrap();
    let (mut log, info) = open(d.path());
    let dmg = info.damage.expect("damage reported");
    assert_eq!(dmg.segment, last);
    assert_eq!(dmg.index, 499);
    assert_eq!(dmg.bytes_dropped, 8 + 16 + 163 - 50);
    check(&log, 0, 499, 0);
    // The file was cut back, so the next append continues cleanly.
    append_range(&mut log, 499, 520, 0);
    drop(log);
    let (log, info) = open(d.path());
    assert_eq!(info.damage, None);
    check(&log, 0, 520, 0);
}

#[test]
fn flipped_byte_in_the_last_record_ends_recovery_there() {
    let (d, last, len) = five_hundred_entries();
    flip_byte(&last, len - 10);
    let (log, info) = open(d.path());
    let dmg = info.damage.expect("damage reported");
    assert_eq!(dmg.bytes_dropped, 8 + 16 + 163);
    // Nothing after the bad final record claims it synced: it may be an interrupted append.
    assert_eq!(dmg.index, 499);
    check(&log, 0, 499, 0);
}

#[test]
fn damage_in_a_middle_segment_is_refused_and_nothing_is_deleted() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = open(d.path());
    append_range(&mut log, 0, 1000, 0);
    drop(log);
    let segs = segments(d.path());
    let victim = &segs[2];
    let victim_len = std::fs::metadata(victim).unwrap().len();
    // The last byte of the victim belongs to its last record; later segments exist, and a
    // segment is created only after the one before it is synced.
    flip_byte(victim, victim_len - 1);
    let before: Vec<Vec<u8>> = segs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    match Log::open_with(d.path(), small()).unwrap_err() {
        Error::CorruptRecord { path, offset, .. } => {
            assert_eq!(path, *victim);
            assert!(offset < victim_len, "{offset}");
        }
        e => panic!("not refused as a corrupt record: {e}"),
    }
    assert_eq!(segments(d.path()), segs);
    let after: Vec<Vec<u8>> = segs.iter().map(|p| std::fs::read(p).unwrap()).collect();
    assert!(before == after, "a refused log was changed");
}

#[test]
fn a_missing_segment_is_corruption() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = open(d.path());
    append_range(&mut log, 0, 1000, 0);
    drop(log);
    let segs = segments(d.path());
    let saved = std::fs::read(&segs[3]).unwrap();
    std::fs::remove_file(&segs[3]).unwrap();
    let e = Log::open_with(d.path(), small()).unwrap_err();
    assert!(e.is_corruption(), "{e}");
    // Put back, it opens; after a purge, losing the first live segment is a hole too.
    std::fs::write(&segs[3], saved).unwrap();
    let (mut log, _) = open(d.path());
    let base4: u64 = segs[4]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    log.purge(base4 - 2, b"").unwrap();
    drop(log);
    std::fs::remove_file(&segs[3]).unwrap();
    let e = Log::open_with(d.path(), small()).unwrap_err();
    assert!(e.is_corruption(), "{e}");
}

#[test]
fn crash_remnants_are_cleaned_up() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = open(d.path());
    append_range(&mut log, 0, 600, 0);
    let before = segments(d.path());
    let copies: Vec<Vec<u8>> = before.iter().map(|p| std::fs::read(p).unwrap()).collect();
    let base3: u64 = before[3]
        .file_stem()
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    log.purge(base3 + 1, b"p").unwrap();
    drop(log);
    // As if the purge had crashed after its record but before deleting segments.
    for (p, b) in before.iter().zip(&copies).take(3) {
        std::fs::write(p, b).unwrap();
    }
    // As if a rollover had crashed after creating the next segment, before writing to it: take
    // the header of a real segment starting at 600.
    let scratch = tempfile::tempdir().unwrap();
    let (mut other, _) = Log::open_with(scratch.path(), small()).unwrap();
    other.append(&[(600, b"")]).unwrap();
    drop(other);
    let header = std::fs::read(segments(scratch.path()).pop().unwrap()).unwrap()[..28].to_vec();
    std::fs::write(d.path().join("00000000000000000600.seg"), header).unwrap();
    std::fs::write(d.path().join("vote.meta.tmp"), b"half a vo").unwrap();
    let (log, info) = open(d.path());
    assert_eq!(info.segments_removed, 4);
    assert_eq!(info.temp_files_removed, 1);
    assert_eq!(info.damage, None);
    assert_eq!(segments(d.path()), before[3..]);
    check(&log, base3 + 2, 600, 0);
    assert_eq!(log.meta(MetaKind::Vote), None);
}

#[test]
fn meta_values_survive_reopen() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = open(d.path());
    assert_eq!(log.meta(MetaKind::Vote), None);
    log.save_meta(MetaKind::Vote, b"term 3 for node 2").unwrap();
    log.save_meta(MetaKind::Vote, b"term 4 for node 1").unwrap();
    log.save_meta(MetaKind::Committed, b"committed 17").unwrap();
    drop(log);
    // A torn replacement of the vote, left by a crash before its rename, is ignored.
    std::fs::write(d.path().join("vote.meta.tmp"), b"SLOGMETA\x01\x00").unwrap();
    let (log, info) = open(d.path());
    assert_eq!(info.temp_files_removed, 1);
    assert_eq!(log.meta(MetaKind::Vote).unwrap(), &b"term 4 for node 1"[..]);
    assert_eq!(log.meta(MetaKind::Committed).unwrap(), &b"committed 17"[..]);
    drop(log);
    // Damage to the vote itself is an error, not a forgotten vote.
    flip_byte(&d.path().join("vote.meta"), 20);
    let e = Log::open_with(d.path(), small()).unwrap_err();
    assert!(e.is_corruption(), "{e}");
}

#[test]
fn a_second_handle_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (_log, _) = open(d.path());
    assert!(matches!(
        Log::open_with(d.path(), small()),
        Err(Error::Locked { .. })
    ));
}

/// One step of the model test.
#[derive(Debug, Clone)]
enum Op {
    /// Append this many entries (payload lengths from the seed).
    Append(u8, u16),
    /// Truncate at a position in the current log, as a fraction of its length in 256ths.
    Truncate(u8),
    /// Purge up to a position, as for `Truncate`; above 255 means past the end.
    Purge(u16),
    SaveVote(u8),
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (1u8..12, any::<u16>()).prop_map(|(n, s)| Op::Append(n, s)),
        2 => any::<u8>().prop_map(Op::Truncate),
        2 => (0u16..300).prop_map(Op::Purge),
        1 => any::<u8>().prop_map(Op::SaveVote),
        2 => Just(Op::Reopen),
    ]
}

fn model_payload(index: u64, seed: u16) -> Vec<u8> {
    let len = (u64::from(seed) * 7 + index * 13) % 90;
    vec![(index as u8) ^ (seed as u8); len as usize]
}

proptest! {
    // Few cases by default (every append is fsynced); PROPTEST_CASES runs more.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|c| c.parse().ok()).unwrap_or(48),
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Random appends, truncations, purges and reopens against a `BTreeMap` of what the log must
    /// hold. Tiny segments put segment boundaries everywhere.
    #[test]
    fn model(start in 0u64..5, ops in proptest::collection::vec(op(), 1..40)) {
        let d = tempfile::tempdir().unwrap();
        let opts = LogOptions { segment_size: 300 };
        let (mut log, _) = Log::open_with(d.path(), opts.clone()).unwrap();
        let mut model: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
        let mut purged: Option<u64> = None;
        let mut vote: Option<Vec<u8>> = None;
        for op in ops {
            let next = model.keys().next_back().map(|l| l + 1)
                .or(purged.map(|p| p + 1)).unwrap_or(start);
            let first = model.keys().next().copied();
            match op {
                Op::Append(n, seed) => {
                    let data: Vec<(u64, Vec<u8>)> =
                        (next..next + u64::from(n)).map(|i| (i, model_payload(i, seed))).collect();
                    let refs: Vec<(u64, &[u8])> = data.iter().map(|(i, d)| (*i, &d[..])).collect();
                    log.append(&refs).unwrap();
                    model.extend(data);
                }
                Op::Truncate(at) => {
                    let Some(first) = first else { continue };
                    let from = first + (next - first) * u64::from(at) / 256;
                    log.truncate(from).unwrap();
                    model.retain(|&i, _| i < from);
                }
                Op::Purge(at) => {
                    let base = purged.map_or(first.unwrap_or(start), |p| p + 1);
                    let upto = (base + (next - base + 5) * u64::from(at) / 256).saturating_sub(1);
                    // At or below the current purge point, a purge changes nothing, record included.
                    log.purge(upto, &upto.to_le_bytes()).unwrap();
                    if purged.is_none_or(|p| upto > p) {
                        purged = Some(upto);
                        model.retain(|&i, _| i > upto);
                    }
                }
                Op::SaveVote(v) => {
                    log.save_meta(MetaKind::Vote, &[v; 3]).unwrap();
                    vote = Some(vec![v; 3]);
                }
                Op::Reopen => {
                    drop(log);
                    let (l, info) = Log::open_with(d.path(), opts.clone()).unwrap();
                    prop_assert_eq!(info.damage, None);
                    log = l;
                }
            }
            // The log agrees with the model after every step.
            prop_assert_eq!(log.first_index(), model.keys().next().copied());
            prop_assert_eq!(log.last_index(), model.keys().next_back().copied());
            prop_assert_eq!(log.last_purged().map(|p| p.0), purged);
            if let Some((p, rec)) = log.last_purged() {
                prop_assert_eq!(&rec[..], &p.to_le_bytes()[..]);
                prop_assert_eq!(log.get(p).unwrap(), None);
                prop_assert!(log.range(p..).is_err());
            }
            prop_assert_eq!(log.meta(MetaKind::Vote).map(|v| v.to_vec()), vote.clone());
            let got: Vec<(u64, Vec<u8>)> =
                log.range(..).unwrap().into_iter().map(|(i, b)| (i, b.to_vec())).collect();
            let want: Vec<(u64, Vec<u8>)> = model.clone().into_iter().collect();
            prop_assert_eq!(got, want);
            for (i, data) in model.iter().step_by(7) {
                let got = log.get(*i).unwrap();
                prop_assert_eq!(got.as_deref(), Some(&data[..]));
            }
        }
    }
}

/// A quick measurement, not a check: 1000 appends of 10 entries of 100 bytes, each append
/// fsynced. Run with `cargo test -p raftlog --test log append_throughput -- --ignored
/// --nocapture`; `STRATA_BENCH_DIR` puts the log on another filesystem.
#[test]
#[ignore]
fn append_throughput() {
    let base = std::env::var_os("STRATA_BENCH_DIR").map(PathBuf::from);
    let d = match &base {
        Some(b) => tempfile::tempdir_in(b).unwrap(),
        None => tempfile::tempdir().unwrap(),
    };
    let (mut log, _) = Log::open(d.path()).unwrap();
    let entry = [7u8; 100];
    let (appends, per) = (1000u64, 10u64);
    let started = std::time::Instant::now();
    for a in 0..appends {
        let batch: Vec<(u64, &[u8])> = (a * per..(a + 1) * per).map(|i| (i, &entry[..])).collect();
        log.append(&batch).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "{appends} appends of {per} x 100 B in {secs:.2} s: {:.0} appends/s, {:.0} entries/s, \
         {:.2} ms per append",
        appends as f64 / secs,
        (appends * per) as f64 / secs,
        secs * 1000.0 / appends as f64
    );
    assert_eq!(log.last_index(), Some(appends * per - 1));
}
