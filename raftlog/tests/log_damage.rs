//! Recovery's exact rule for damaged records: damage where entry `i` belongs is corruption (the
//! log refuses to open, naming the file and offset) only if a later valid record claims `i`
//! durable; otherwise it is a torn tail and cut. Power cuts during group commit, truncations
//! followed by new appends, and segments of the previous format (version 1).

use std::path::{Path, PathBuf};

use raftlog::{Error, Log, LogOptions, SyncHandle};

/// Large segments: these tests look at records inside one segment.
fn opts() -> LogOptions {
    LogOptions {
        segment_size: 1 << 20,
    }
}

fn payload(index: u64, variant: u8) -> Vec<u8> {
    vec![index as u8 ^ variant; 100 + (index % 7) as usize * 40]
}

fn batch(lo: u64, hi: u64, variant: u8) -> Vec<(u64, Vec<u8>)> {
    (lo..hi).map(|i| (i, payload(i, variant))).collect()
}

fn refs(b: &[(u64, Vec<u8>)]) -> Vec<(u64, &[u8])> {
    b.iter().map(|(i, d)| (*i, &d[..])).collect()
}

/// Appends `lo..hi` in batches of `per`, each synced before the next is written.
fn append_synced(log: &mut Log, lo: u64, hi: u64, per: u64, variant: u8) {
    let mut i = lo;
    while i < hi {
        let n = per.min(hi - i);
        log.append(&refs(&batch(i, i + n, variant))).unwrap();
        i += n;
    }
}

/// Appends `lo..hi` in batches of `per` without syncing them (group commit's writes).
fn append_unsynced(log: &mut Log, lo: u64, hi: u64, per: u64, variant: u8) -> Vec<SyncHandle> {
    let mut handles = Vec::new();
    let mut i = lo;
    while i < hi {
        let n = per.min(hi - i);
        handles.extend(
            log.append_deferred(&refs(&batch(i, i + n, variant)))
                .unwrap(),
        );
        i += n;
    }
    handles
}

fn the_segment(dir: &Path) -> PathBuf {
    let segs: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "seg"))
        .collect();
    assert_eq!(segs.len(), 1, "{segs:?}");
    segs.into_iter().next().unwrap()
}

/// File offsets of the records of a segment, walking the length fields from the header on.
fn record_offsets(path: &Path) -> Vec<u64> {
    let b = std::fs::read(path).unwrap();
    let mut at = 28;
    let mut out = Vec::new();
    while at + 8 <= b.len() {
        let len = u32::from_le_bytes(b[at..at + 4].try_into().unwrap()) as usize;
        if len == 0 {
            break;
        }
        out.push(at as u64);
        at += 8 + len;
    }
    out
}

/// The entry whose record holds byte `pos` (entries start at 0 in these tests).
fn record_holding(offs: &[u64], pos: u64) -> u64 {
    offs.partition_point(|&o| o <= pos) as u64 - 1
}

fn edit(path: &Path, f: impl FnOnce(&mut Vec<u8>)) {
    let mut b = std::fs::read(path).unwrap();
    f(&mut b);
    std::fs::write(path, b).unwrap();
}

/// Checks entries `lo..hi` (not that they are all the log holds).
fn check(log: &Log, lo: u64, hi: u64, variant: u8) {
    assert!(log.last_index() >= Some(hi - 1));
    for i in lo..hi {
        assert_eq!(
            log.get(i).unwrap().unwrap()[..],
            payload(i, variant)[..],
            "{i}"
        );
    }
}

fn assert_refused(dir: &Path, path: &Path, offset: u64) {
    match Log::open_with(dir, opts()).unwrap_err() {
        Error::CorruptRecord {
            path: p, offset: o, ..
        } => assert_eq!((p.as_path(), o), (path, offset)),
        e => panic!("not refused as a corrupt record: {e}"),
    }
}

#[test]
fn a_flipped_length_bit_before_synced_records_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open_with(d.path(), opts()).unwrap();
    append_synced(&mut log, 0, 40, 4, 0);
    drop(log);
    let seg = the_segment(d.path());
    let offs = record_offsets(&seg);
    let victim = offs[10];
    edit(&seg, |b| b[victim as usize] ^= 0x04);
    let before = std::fs::read(&seg).unwrap();
    assert_refused(d.path(), &seg, victim);
    // Refusing changes nothing, and keeps refusing.
    assert!(std::fs::read(&seg).unwrap() == before);
    assert_refused(d.path(), &seg, victim);
    let e = Log::open_with(d.path(), opts()).unwrap_err();
    assert!(e.is_corruption());
    let msg = e.to_string();
    assert!(
        msg.contains(&seg.display().to_string()) && msg.contains(&victim.to_string()),
        "{msg}"
    );
}

#[test]
fn damage_in_the_last_synced_batch_is_refused_when_later_appends_claim_it() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open_with(d.path(), opts()).unwrap();
    append_synced(&mut log, 0, 20, 5, 0);
    // Written after 0..20 were synced, never synced themselves: they claim 0..20.
    drop(append_unsynced(&mut log, 20, 30, 5, 0));
    drop(log);
    let seg = the_segment(d.path());
    let victim = record_offsets(&seg)[17];
    edit(&seg, |b| b[victim as usize + 40] ^= 0xff);
    assert_refused(d.path(), &seg, victim);
}

#[test]
fn damage_followed_only_by_unsynced_records_is_a_torn_tail() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open_with(d.path(), opts()).unwrap();
    append_synced(&mut log, 0, 20, 5, 0);
    // Group commit wrote three batches; no sync covered them.
    drop(append_unsynced(&mut log, 20, 35, 5, 0));
    drop(log);
    let seg = the_segment(d.path());
    let victim = record_offsets(&seg)[22];
    edit(&seg, |b| b[victim as usize] ^= 0x04);
    let (mut log, info) = Log::open_with(d.path(), opts()).unwrap();
    let dmg = info.damage.expect("the torn tail is reported");
    assert_eq!(
        (dmg.segment, dmg.offset, dmg.index),
        (seg.clone(), victim, 22)
    );
    assert_eq!(log.last_index(), Some(21));
    check(&log, 0, 22, 0);
    // The cut is durable and appends continue at the lost entry.
    append_synced(&mut log, 22, 30, 3, 1);
    drop(log);
    let (log, info) = Log::open_with(d.path(), opts()).unwrap();
    assert_eq!(info.damage, None);
    check(&log, 0, 22, 0);
    check(&log, 22, 30, 1);
}

#[test]
fn a_power_cut_during_group_commit_leaves_a_hole_that_is_cut() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open_with(d.path(), opts()).unwrap();
    // Groups, each synced once through a handle after several deferred appends.
    for g in 0..4 {
        let hs = append_unsynced(&mut log, g * 30, g * 30 + 30, 6, 0);
        hs[0].sync().unwrap();
        for h in &hs[1..] {
            h.covered();
        }
    }
    // The last group: written, its sync never happened.
    drop(append_unsynced(&mut log, 120, 200, 8, 0));
    drop(log);
    let seg = the_segment(d.path());
    let offs = record_offsets(&seg);
    // The power cut lost two 4 KiB pages in the middle of the unsynced group (a hole of zeros)
    // and the pages after the records; unsynced records after the hole survived.
    let page = 4096;
    let hole = (offs[135] / page + 1) * page;
    assert!(
        hole + 2 * page < offs[190],
        "the hole lies inside the group"
    );
    let end_of_190 = offs[191];
    edit(&seg, |b| {
        b[hole as usize..(hole + 2 * page) as usize].fill(0);
        b.truncate(end_of_190 as usize);
    });
    let (log, info) = Log::open_with(d.path(), opts()).unwrap();
    let dmg = info.damage.expect("the hole is reported as a torn tail");
    assert_eq!(dmg.index, record_holding(&offs, hole), "{dmg:?}");
    // Every synced entry is there, and the unsynced ones before the hole.
    assert_eq!(log.last_index(), Some(dmg.index - 1));
    check(&log, 0, dmg.index, 0);
}

#[test]
fn a_hole_in_synced_records_is_refused() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open_with(d.path(), opts()).unwrap();
    for g in 0..4 {
        let hs = append_unsynced(&mut log, g * 30, g * 30 + 30, 6, 0);
        hs.last().unwrap().sync().unwrap();
    }
    drop(log);
    let seg = the_segment(d.path());
    let offs = record_offsets(&seg);
    // The disk lost pages of the second group, which was synced before the third was written.
    let page = 4096;
    let hole = (offs[31] / page + 1) * page;
    assert!(hole + page < offs[59]);
    edit(&seg, |b| b[hole as usize..(hole + page) as usize].fill(0));
    let first_bad = offs[record_holding(&offs, hole) as usize];
    assert_refused(d.path(), &seg, first_bad);
}

#[test]
fn records_after_a_truncation_do_not_claim_the_removed_entries() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open_with(d.path(), opts()).unwrap();
    append_synced(&mut log, 0, 100, 10, 0);
    // A sync in flight across the truncation must not raise the claim either.
    let in_flight = append_unsynced(&mut log, 100, 110, 10, 0);
    log.truncate(50).unwrap();
    for h in &in_flight {
        h.sync().unwrap();
    }
    // New entries from 50, never synced: they may claim 0..50, not the old 50..110.
    drop(append_unsynced(&mut log, 50, 70, 4, 1));
    drop(log);
    let seg = the_segment(d.path());
    let victim = record_offsets(&seg)[55];
    edit(&seg, |b| b[victim as usize + 30] ^= 0x01);
    let (log, info) = Log::open_with(d.path(), opts()).unwrap();
    assert_eq!(info.damage.expect("torn tail").index, 55);
    assert_eq!(log.last_index(), Some(54));
    check(&log, 0, 50, 0);
    check(&log, 50, 55, 1);
}

#[test]
fn a_reopened_log_claims_what_it_recovered_only_once_synced() {
    let d = tempfile::tempdir().unwrap();
    let (mut log, _) = Log::open_with(d.path(), opts()).unwrap();
    drop(append_unsynced(&mut log, 0, 30, 5, 0));
    drop(log);
    // Reopening syncs what it read, so appends after it may claim it.
    let (mut log, _) = Log::open_with(d.path(), opts()).unwrap();
    drop(append_unsynced(&mut log, 30, 40, 5, 0));
    drop(log);
    let seg = the_segment(d.path());
    let victim = record_offsets(&seg)[12];
    edit(&seg, |b| b[victim as usize + 30] ^= 0x01);
    assert_refused(d.path(), &seg, victim);
}

/// A version-1 segment as the previous build wrote it: records `index | entry`, no claims.
fn write_v1_segment(dir: &Path, base: u64, entries: &[(u64, Vec<u8>)]) -> PathBuf {
    fn frame(out: &mut Vec<u8>, parts: &[&[u8]]) {
        let len = (parts.iter().map(|p| p.len()).sum::<usize>() as u32).to_le_bytes();
        let mut h = crc32fast::Hasher::new();
        h.update(&len);
        parts.iter().for_each(|p| h.update(p));
        out.extend_from_slice(&len);
        out.extend_from_slice(&h.finalize().to_le_bytes());
        parts.iter().for_each(|p| out.extend_from_slice(p));
    }
    let mut b = b"SLOGSEGM".to_vec();
    b.extend_from_slice(&1u32.to_le_bytes());
    frame(&mut b, &[&base.to_le_bytes()]);
    for (i, e) in entries {
        frame(&mut b, &[&i.to_le_bytes(), e]);
    }
    let path = dir.join(format!("{base:020}.seg"));
    std::fs::write(&path, b).unwrap();
    path
}

#[test]
fn version_1_segments_are_read_by_the_conservative_rule() {
    let d = tempfile::tempdir().unwrap();
    let seg = write_v1_segment(d.path(), 0, &batch(0, 20, 0));
    let offs = record_offsets(&seg);
    // Read as they are; appends go to a new, version-2 segment.
    let (mut log, info) = Log::open_with(d.path(), opts()).unwrap();
    assert_eq!(info.damage, None);
    check(&log, 0, 20, 0);
    append_synced(&mut log, 20, 30, 5, 0);
    drop(log);
    let (log, _) = Log::open_with(d.path(), opts()).unwrap();
    check(&log, 0, 30, 0);
    drop(log);
    std::fs::remove_dir_all(d.path()).unwrap();
    std::fs::create_dir(d.path()).unwrap();

    // A bad final record is cut: nothing says it was ever synced.
    let seg = write_v1_segment(d.path(), 0, &batch(0, 20, 0));
    edit(&seg, |b| b[offs[19] as usize + 20] ^= 1);
    let (log, info) = Log::open_with(d.path(), opts()).unwrap();
    assert_eq!(info.damage.unwrap().index, 19);
    check(&log, 0, 19, 0);
    drop(log);

    // Damage with data after it cannot be told from lost synced entries: refused.
    let seg = write_v1_segment(d.path(), 0, &batch(0, 20, 0));
    edit(&seg, |b| b[offs[5] as usize + 20] ^= 1);
    assert_refused(d.path(), &seg, offs[5]);
}
