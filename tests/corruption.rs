//! Damaged files (truncated or with flipped bytes) in the WAL, SSTs and MANIFEST: the engine must
//! report an error or recover up to the damage, never return a value that was not written and
//! never panic. (The directory lock, size limits and the empty key are in `limits.rs`.)
//!
//! Each scenario builds a clean "image" of a database directory once, then copies it for every
//! damage trial, so trials are independent. `STRATA_SEED` replays the random offsets.

mod common;

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::path::{Path, PathBuf};

use common::{copy_dir, files_ending, files_starting, flip, record_ends, seq_key, seq_value};
use common::{trial, truncate};
use lsm::{Db, Error, Options, WriteBatch, WriteOptions};
use rand::{rngs::StdRng, seq::SliceRandom, Rng, SeedableRng};

fn assert_corruption(e: &Error, what: &str) {
    assert!(
        e.is_corruption(),
        "{what}: expected a corruption error, got {e:?}"
    );
}

/// Options under which nothing is flushed: everything written stays in the WAL.
fn wal_only() -> Options {
    Options {
        write_buffer_size: 4 << 20,
        ..Options::default()
    }
}

/// Writes keys `0..n` with one synced single-put batch each and returns a crash image taken while
/// the database is still open, plus the name of the WAL file holding the records.
fn wal_image(root: &Path, n: u64) -> (PathBuf, String) {
    let live = root.join("live");
    let db = Db::open(&live, wal_only()).unwrap();
    for i in 0..n {
        let mut b = WriteBatch::new();
        b.put(seq_key(i), seq_value(i));
        db.write_with(b, &WriteOptions { sync: true }).unwrap();
    }
    let image = root.join("image");
    copy_dir(&live, &image);
    drop(db);
    let wal = files_ending(&image, ".wal")
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .expect("a WAL file");
    (
        image,
        wal.file_name().unwrap().to_str().unwrap().to_string(),
    )
}

/// Checks that the store holds exactly a prefix `0..m` of the sequential workload; returns `m`.
fn seq_prefix(db: &Db) -> u64 {
    let mut m = 0;
    for item in db.iter() {
        let (k, v) = item.expect("scan after recovery");
        assert_eq!(
            k[..],
            seq_key(m)[..],
            "recovered keys are not a prefix of the written ones"
        );
        assert!(v[..] == seq_value(m)[..], "wrong value for key {m}");
        m += 1;
    }
    m
}

/// After recovering `m` keys, a further synced write and another crash must keep both: the
/// engine must not append new records after garbage that the next recovery would stop at.
fn write_after_recovery(db: Db, dir: &Path, m: u64) {
    let mut b = WriteBatch::new();
    b.put(seq_key(m), seq_value(m));
    db.write_with(b, &WriteOptions { sync: true }).unwrap();
    let crashed = dir.with_extension("again");
    copy_dir(dir, &crashed);
    drop(db);
    let db = Db::open(&crashed, wal_only()).expect("reopen after second crash");
    assert_eq!(seq_prefix(&db), m + 1, "write made after recovery was lost");
}

/// Record end offsets of the image's WAL, which must hold exactly one record per write.
/// The WAL's bytes, the end of its header record, and the end of each write's record.
fn wal_records(image: &Path, wal: &str, n: u64) -> (Vec<u8>, usize, Vec<usize>) {
    let mut data = std::fs::read(image.join(wal)).unwrap();
    // The records of an open segment are followed by the zeros written ahead of them (a zero
    // length ends the records); the image keeps them, the offsets cover the records.
    let mut end = 0;
    while let Some(len) = data
        .get(end..end + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .filter(|len| *len > 0)
    {
        end += 8 + len;
    }
    data.truncate(end);
    let ends = record_ends(&data).expect("WAL is not a sequence of [len][crc][payload] records");
    assert_eq!(
        ends.len() as u64,
        n + 1,
        "a header record, then one WAL record per synced write"
    );
    (data, ends[0], ends[1..].to_vec())
}

#[test]
fn wal_truncation() {
    const N: u64 = 120;
    let root = tempfile::tempdir().unwrap();
    let (image, wal) = wal_image(root.path(), N);
    let (data, header_end, ends) = wal_records(&image, &wal, N);
    let mut rng = StdRng::seed_from_u64(common::seed("wal_truncation"));
    let mut cuts = vec![0, 1, 4, 8, 9, data.len() - 1, data.len()];
    for &i in &[0, 1, 7, 59, 118] {
        cuts.extend([ends[i] - 1, ends[i], ends[i] + 1, ends[i] + 5]);
    }
    cuts.extend((0..20).map(|_| rng.gen_range(0..data.len())));
    for cut in cuts {
        let dir = trial(&image, root.path());
        truncate(&dir.join(&wal), cut as u64);
        // A torn tail is exactly what a crash leaves behind, so the store must open.
        let db =
            Db::open(&dir, wal_only()).unwrap_or_else(|e| panic!("cut {cut}: open failed: {e}"));
        let m = seq_prefix(&db);
        let report = db.recovery_report();
        let whole = ends.iter().filter(|&&end| end <= cut).count() as u64;
        assert_eq!(m, whole, "cut {cut}: keys recovered vs whole records kept");
        assert_eq!(report.wal_records_replayed, whole, "cut {cut}");
        let at_boundary = cut == 0 || cut == header_end || ends.contains(&cut);
        assert_eq!(
            report.wal_bytes_dropped > 0,
            !at_boundary,
            "cut {cut}: {report:?}"
        );
        write_after_recovery(db, &dir, m);
    }
}

#[test]
fn wal_byte_flips() {
    const N: u64 = 80;
    let root = tempfile::tempdir().unwrap();
    let (image, wal) = wal_image(root.path(), N);
    let (data, _, ends) = wal_records(&image, &wal, N);
    let mut rng = StdRng::seed_from_u64(common::seed("wal_byte_flips"));
    // Header bytes (length, checksum) of a few records, and random bytes anywhere.
    let mut offsets: Vec<usize> = (0..8).collect();
    for &i in &[10usize, 40, 78] {
        offsets.extend((0..8).map(|d| ends[i] + d));
    }
    offsets.extend((0..30).map(|_| rng.gen_range(0..data.len())));
    // Every write was synced before the next was written, so each record but the last is
    // proven durable by the claims of the records after it: damage there is corruption, and
    // only damage in the last record can be a torn tail.
    let last_start = ends[ends.len() - 2];
    let mut refused = 0;
    for at in offsets {
        let dir = trial(&image, root.path());
        flip(&dir.join(&wal), at, rng.gen_range(1..=255));
        let db = match Db::open(&dir, wal_only()) {
            Ok(db) => db,
            Err(e) => {
                assert_corruption(&e, &format!("flip at {at}"));
                assert!(
                    at < last_start,
                    "flip at {at} in the last record was refused: {e}"
                );
                refused += 1;
                continue;
            }
        };
        assert!(
            at >= last_start,
            "flip at {at}, before records that prove it synced, was not refused"
        );
        let m = seq_prefix(&db);
        let report = db.recovery_report();
        assert!(
            report.wal_bytes_dropped > 0,
            "flip at {at} went unnoticed: {report:?}"
        );
        assert_eq!(m, N - 1, "flip at {at} in the last record");
        write_after_recovery(db, &dir, m);
    }
    eprintln!("wal_byte_flips: {refused} damaged logs refused at open, the rest recovered");
}

/// Every read must be the written value or a corruption error; a successful full scan must
/// return everything. `written` maps each key to the values it may legitimately have. Returns
/// whether any read reported corruption.
fn check_reads(
    db: &Db,
    written: &BTreeMap<Vec<u8>, Vec<Option<Vec<u8>>>>,
    complete: bool,
    what: &str,
) -> bool {
    let mut detected = false;
    for (k, allowed) in written {
        match db.get(k) {
            Ok(v) => assert!(
                allowed.contains(&v.map(|b| b.to_vec())),
                "{what}: get {:?} returned a value never written there",
                String::from_utf8_lossy(k)
            ),
            Err(e) => {
                assert_corruption(&e, what);
                detected = true;
            }
        }
    }
    for reverse in [false, true] {
        let mut seen = Vec::new();
        let mut failed = false;
        let it = db.iter();
        let it: Box<dyn Iterator<Item = _>> = if reverse {
            Box::new(it.rev())
        } else {
            Box::new(it)
        };
        for item in it {
            match item {
                Ok((k, v)) => {
                    let ok = written
                        .get(&k[..])
                        .is_some_and(|a| a.contains(&Some(v.to_vec())));
                    assert!(
                        ok,
                        "{what}: scan returned {:?} with a value never written",
                        String::from_utf8_lossy(&k)
                    );
                    seen.push(k.to_vec());
                }
                Err(e) => {
                    assert_corruption(&e, what);
                    failed = true;
                    break;
                }
            }
        }
        if reverse {
            seen.reverse();
        }
        assert!(
            seen.windows(2).all(|w| w[0] < w[1]),
            "{what}: scan not sorted / duplicates"
        );
        if complete && !failed {
            let all: Vec<_> = written.keys().cloned().collect();
            assert_eq!(
                seen, all,
                "{what}: scan finished without error but lost keys"
            );
        }
        detected |= failed;
    }
    detected
}

#[test]
fn sst_damage() {
    let root = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(common::seed("sst_damage"));
    let image = root.path().join("image");
    let mut written = BTreeMap::new();
    {
        let db = Db::open(&image, common::tiny_options(None)).unwrap();
        let mut order: Vec<u64> = (0..600).collect();
        order.shuffle(&mut rng);
        for i in order {
            db.put(seq_key(i), seq_value(i)).unwrap();
            written.insert(seq_key(i), vec![Some(seq_value(i))]);
        }
        db.flush().unwrap();
        db.close().unwrap();
    }
    let ssts = files_ending(&image, ".sst");
    assert!(
        ssts.len() >= 3,
        "expected several tables, got {}",
        ssts.len()
    );
    // Control: the undamaged image reads back completely.
    let control = Db::open(trial(&image, root.path()), common::tiny_options(None)).unwrap();
    assert!(!check_reads(&control, &written, true, "control"));
    drop(control);
    let (mut refused, mut detected, mut harmless) = (0, 0, 0);
    for sst in ssts.choose_multiple(&mut rng, 5) {
        let name = sst.file_name().unwrap();
        let len = std::fs::metadata(sst).unwrap().len() as usize;
        let mut damage: Vec<(bool, usize)> = [0, 1, len / 2, len - 64, len - 1]
            .iter()
            .map(|&c| (true, c))
            .collect();
        damage.extend([len - 1, len - 8, len - 64, 0].iter().map(|&o| (false, o)));
        damage.extend((0..8).map(|_| (false, rng.gen_range(0..len))));
        // The tail holds the index, filter and footer: one flip there can hide a whole table.
        damage.extend((0..4).map(|_| (false, rng.gen_range(len.saturating_sub(512)..len))));
        for (cut, at) in damage {
            let what = format!(
                "{name:?} {} at {at} of {len}",
                if cut { "cut" } else { "flip" }
            );
            let dir = trial(&image, root.path());
            if cut {
                truncate(&dir.join(name), at as u64);
            } else {
                flip(&dir.join(name), at, rng.gen_range(1..=255));
            }
            // Failing to open is an acceptable answer; anything it does return must be right.
            match Db::open(&dir, common::tiny_options(None)) {
                Err(_) => refused += 1,
                Ok(db) if check_reads(&db, &written, true, &what) => detected += 1,
                // Only possible for bytes no read depends on; every value was still right.
                Ok(_) => {
                    assert!(!cut, "{what}: truncation went unnoticed");
                    harmless += 1;
                }
            }
        }
    }
    eprintln!(
        "sst_damage: {refused} refused at open, {detected} detected on read, {harmless} harmless"
    );
}

#[test]
fn manifest_damage() {
    let root = tempfile::tempdir().unwrap();
    let mut rng = StdRng::seed_from_u64(common::seed("manifest_damage"));
    let image = root.path().join("image");
    // Several rounds of overwrites and deletes, each flushed, so the manifest holds many edits
    // and an older version of the tree would return older (but once written) values.
    let mut written: BTreeMap<Vec<u8>, Vec<Option<Vec<u8>>>> = BTreeMap::new();
    {
        let db = Db::open(&image, common::tiny_options(None)).unwrap();
        for round in 0..4u64 {
            for i in 0..150 {
                let e = written.entry(seq_key(i)).or_insert_with(|| vec![None]);
                if round == 3 && i % 5 == 0 {
                    db.delete(seq_key(i)).unwrap();
                } else {
                    let v = [format!("r{round}-").into_bytes(), seq_value(i)].concat();
                    db.put(seq_key(i), &v).unwrap();
                    e.push(Some(v));
                }
            }
            db.flush().unwrap();
        }
        db.compact_range::<&[u8], _>(..).unwrap();
        db.close().unwrap();
    }
    let current: BTreeMap<_, _> = {
        let db = Db::open(trial(&image, root.path()), common::tiny_options(None)).unwrap();
        common::collect(db.iter()).unwrap().into_iter().collect()
    };
    assert_eq!(
        current.len(),
        120,
        "control: live keys after the last round"
    );
    for (k, v) in &current {
        assert_eq!(
            written[k].last().unwrap().as_ref(),
            Some(v),
            "control: latest value"
        );
    }
    let manifests = files_starting(&image, "MANIFEST-");
    let manifest = manifests
        .last()
        .expect("a manifest")
        .file_name()
        .unwrap()
        .to_owned();
    let data = std::fs::read(image.join(&manifest)).unwrap();
    assert!(!data.is_empty(), "empty manifest");
    let ends = record_ends(&data).expect("manifest is not a sequence of framed records");
    let mut trials: Vec<(bool, usize)> =
        vec![(true, 0), (true, data.len() - 1), (true, data.len() / 2)];
    // Around the ends of the last edits (an edit torn by a crash, or lost whole).
    trials.extend(
        ends.iter()
            .rev()
            .take(3)
            .flat_map(|&b| [(true, b - 3), (true, b)]),
    );
    trials.extend((0..10).map(|_| (true, rng.gen_range(0..data.len()))));
    trials.extend((0..20).map(|_| (false, rng.gen_range(0..data.len()))));
    let (n, mut refused) = (trials.len(), 0);
    for (cut, at) in trials {
        let what = format!(
            "manifest {} at {at} of {}",
            if cut { "cut" } else { "flip" },
            data.len()
        );
        let dir = trial(&image, root.path());
        if cut {
            truncate(&dir.join(&manifest), at as u64);
        } else {
            flip(&dir.join(&manifest), at, rng.gen_range(1..=255));
        }
        let Ok(db) = Db::open(&dir, common::tiny_options(None)) else {
            refused += 1;
            continue;
        };
        if cut && at > 0 && !ends.contains(&at) {
            let report = db.recovery_report();
            assert!(
                report.manifest_bytes_dropped > 0,
                "{what}: torn edit not reported"
            );
        }
        check_reads(&db, &written, false, &what);
    }
    eprintln!("manifest_damage: {refused} of {n} damaged manifests refused at open");
    // A torn append (a crash while logging an edit that was never acknowledged) is the one
    // manifest damage a crash produces: it must be dropped and reported, with all data intact.
    let last = &data[ends[ends.len() - 2]..];
    for extra in [1, 7, 8, last.len() - 1] {
        let dir = trial(&image, root.path());
        let mut f = OpenOptions::new()
            .append(true)
            .open(dir.join(&manifest))
            .unwrap();
        std::io::Write::write_all(&mut f, &last[..extra]).unwrap();
        let db =
            Db::open(&dir, common::tiny_options(None)).expect("open with a torn manifest tail");
        assert!(
            db.recovery_report().manifest_bytes_dropped > 0,
            "torn tail of {extra} bytes"
        );
        let all: BTreeMap<_, _> = common::collect(db.iter()).unwrap().into_iter().collect();
        assert!(
            all == current,
            "data changed by a torn manifest tail of {extra} bytes"
        );
    }
    // A CURRENT that names no valid manifest must fail the open, not create an empty store.
    for content in ["MANIFEST-999999\n", "garbage", ""] {
        let dir = trial(&image, root.path());
        std::fs::write(dir.join("CURRENT"), content).unwrap();
        assert!(
            Db::open(&dir, common::tiny_options(None)).is_err(),
            "CURRENT = {content:?} opened"
        );
    }
}
