//! Randomized power cuts of the segmented Raft log (issue 13).
//!
//! Each case runs a random workload of synced and deferred appends (some deferred ones synced
//! later through their `SyncHandle`) across segment rollovers. The test itself is the file layer
//! that records what was synced: after every step that completed a sync it snapshots the segment
//! files as they then were, which is what a power cut cannot take back. The cut is applied to a
//! copy of the directory: bytes the last sync of a file covered stay; every 4 KiB page written
//! after it is, at random, kept, reverted (to its synced bytes, zeros past the synced size), or
//! lost together with the rest of the file (the file ends at the page, but never below its synced
//! size). Holes (a reverted page before kept ones) come out of this naturally. Some cases cut
//! during a rollover instead, after the old tail was sealed and before the new segment's
//! creation was durable.
//!
//! The reopened log must open (a power cut never makes a healthy replica look corrupt), hold
//! every synced entry with its content, and hold a prefix of what was written: entries `0..m`,
//! nothing missing in the middle.
//!
//! Cases: `PROPTEST_CASES` (default 48). A failing case prints its seed; `POWER_CUT_SEED=<seed>`
//! runs that case alone.

use std::collections::BTreeMap;
use std::path::Path;

use raftlog::{Log, LogOptions, SyncHandle};
use testkit::power_cut::{power_cut, run_cases, Rng};

/// Bytes of a segment header (`segment.rs`: prefix 12, record header 8, base 8). Segments are
/// created with their header atomically and durably, so that much of a new one is synced.
const SEG_HEADER: usize = 28;

/// The entry at `index` in the case of `seed`: its length (1 B to 2 KiB, so batches span pages)
/// and bytes depend on both, so an entry of another case or index never matches.
fn payload(seed: u64, index: u64) -> Vec<u8> {
    let mut r = Rng(seed ^ index.wrapping_mul(0xA24B_AED4_963E_E407));
    let len = 1 + r.below(2048) as usize;
    (0..len).map(|_| r.next_u64() as u8).collect()
}

/// The segment files of `dir` and their bytes, by name (names sort by base index).
fn segments(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).unwrap(),
            )
        })
        .collect()
}

fn refs(b: &[(u64, Vec<u8>)]) -> Vec<(u64, &[u8])> {
    b.iter().map(|(i, d)| (*i, &d[..])).collect()
}

/// One case: workload, power cut, reopen, checks.
fn run_case(seed: u64) {
    let mut rng = Rng(seed);
    let opts = LogOptions {
        // Small segments in most cases, so the workload crosses several rollovers.
        segment_size: [6 << 10, 16 << 10, 64 << 10, 1 << 20][rng.below(4) as usize],
    };
    let root = tempfile::tempdir().unwrap();
    let live = root.path().join("live");
    let (mut log, _) = Log::open_with(&live, opts.clone()).unwrap();

    // The durable image of each segment file: its bytes when its last sync completed.
    let mut durable: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    // Entries below this were synced (acknowledged, or sealed by a rollover).
    let mut synced_next = 0u64;
    let mut next = 0u64;
    let mut pending: Option<SyncHandle> = None;
    // Then, in most cases, a burst of group-commit writes no sync covered, so that the cut
    // finds many unsynced pages to tear.
    let synced_steps = 5 + rng.below(40);
    let burst = if rng.chance(70) { 3 + rng.below(20) } else { 0 };
    for step in 0..synced_steps + burst {
        let n = 1 + rng.below(6);
        let batch: Vec<(u64, Vec<u8>)> = (next..next + n).map(|i| (i, payload(seed, i))).collect();
        next += n;
        let may_sync = step < synced_steps;
        let synced_now = if may_sync && rng.chance(20) {
            log.append(&refs(&batch)).unwrap();
            pending = None;
            true
        } else {
            let h = log.append_deferred(&refs(&batch)).unwrap();
            // The latest handle is always of the tail segment: a rollover syncs the old tail.
            pending = h;
            if may_sync && rng.chance(20) {
                pending.take().unwrap().sync().unwrap();
                true
            } else {
                false
            }
        };
        let files = segments(&live);
        let tail = files.keys().next_back().cloned();
        for (name, bytes) in &files {
            if Some(name) != tail.as_ref() || synced_now {
                // Every segment but the tail was sealed (synced whole) before its successor
                // was created; the tail was just synced.
                durable.insert(name.clone(), bytes.clone());
            } else {
                // A tail not synced since its creation holds just its header durably.
                durable
                    .entry(name.clone())
                    .or_insert_with(|| bytes[..SEG_HEADER].to_vec());
            }
        }
        if synced_now {
            synced_next = next;
        } else if let Some(name) = &tail {
            let base: u64 = name.trim_end_matches(".seg").parse().unwrap();
            synced_next = synced_next.max(base);
        }
    }
    drop(pending);

    // The crash image, taken while the log is still open (its drop would trim the tail).
    let image = root.path().join("image");
    std::fs::create_dir_all(&image).unwrap();
    let files = segments(&live);
    let during_rollover = rng.chance(20);
    // How likely each changed page survives, varied per case: from mostly lost to mostly kept.
    let keep_percent = [10, 40, 70, 95][rng.below(4) as usize];
    for (name, now) in &files {
        let bytes = if during_rollover {
            // The tail was sealed: all of it is durable.
            now.clone()
        } else {
            power_cut(&durable[name], now, &mut rng, keep_percent)
        };
        std::fs::write(image.join(name), bytes).unwrap();
    }
    if during_rollover {
        synced_next = next;
        // The next segment's creation was interrupted: either before the rename of its
        // temporary file (a partial header under `.tmp`), or after it but before the directory
        // sync (the header under the final name, no records).
        let name = format!("{next:020}.seg");
        if rng.chance(50) {
            let partial = &header_of(root.path(), next)[..rng.below(SEG_HEADER as u64) as usize];
            std::fs::write(image.join(format!("{name}.tmp")), partial).unwrap();
        } else {
            std::fs::write(image.join(&name), header_of(root.path(), next)).unwrap();
        }
    }
    drop(log);

    let (log, info) = Log::open_with(&image, opts.clone())
        .unwrap_or_else(|e| panic!("a power cut's image was refused: {e}"));
    let m = check_prefix(&log, seed, next);
    assert!(
        m >= synced_next,
        "synced entries lost: the log ends before {m}, entries below {synced_next} were synced \
         ({info:?})"
    );
    // The repair holds: the log goes on from where recovery left it, and a reopen keeps both.
    let mut log = log;
    log.append(&[(m, &payload(seed, m)[..])]).unwrap();
    drop(log);
    let (log, _) = Log::open_with(&image, opts).unwrap();
    assert_eq!(check_prefix(&log, seed, next.max(m + 1)), m + 1);
}

/// Checks that the log holds entries `0..m` (for some `m <= written`) with their contents, and
/// nothing else; returns `m`.
fn check_prefix(log: &Log, seed: u64, written: u64) -> u64 {
    let all = log.range(..).unwrap();
    for (k, (index, data)) in all.iter().enumerate() {
        assert_eq!(*index, k as u64, "entries missing before {index}");
        assert!(
            data[..] == payload(seed, *index)[..],
            "entry {index} has the wrong content"
        );
    }
    let m = all.len() as u64;
    assert!(m <= written, "{m} entries, only {written} were written");
    assert_eq!(log.last_index(), m.checked_sub(1));
    m
}

/// The header of a segment starting at `base`, as the log writes it.
fn header_of(scratch: &Path, base: u64) -> Vec<u8> {
    let dir = scratch.join(format!("header-{base}"));
    let (mut log, _) = Log::open(&dir).unwrap();
    log.append(&[(base, b"x")]).unwrap();
    drop(log);
    let bytes = std::fs::read(dir.join(format!("{base:020}.seg"))).unwrap();
    bytes[..SEG_HEADER].to_vec()
}

#[test]
fn power_cuts_keep_synced_entries_and_never_refuse() {
    run_cases(run_case);
}

#[test]
fn the_header_length_matches_the_format() {
    // `SEG_HEADER` is what a segment holds before its first record: check it against a real
    // segment, whose first record (entry 5, payload "x") follows the header.
    let d = tempfile::tempdir().unwrap();
    let h = header_of(d.path(), 5);
    let seg = std::fs::read(d.path().join("header-5").join(format!("{:020}.seg", 5))).unwrap();
    assert_eq!(&seg[..SEG_HEADER], &h[..]);
    assert_eq!(&seg[..8], b"SLOGSEGM");
    // Record header (len, crc), then index 5 and its claim, then the entry.
    let len = u32::from_le_bytes(seg[SEG_HEADER..SEG_HEADER + 4].try_into().unwrap());
    assert_eq!(len, 8 + 8 + 1);
    assert_eq!(
        u64::from_le_bytes(seg[SEG_HEADER + 8..SEG_HEADER + 16].try_into().unwrap()),
        5
    );
}
