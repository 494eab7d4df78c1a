//! Entry points for the fuzz targets (`fuzz/` at the repository root) and for the tests that
//! replay their corpora on stable (`tests/fuzz_corpus.rs`). Not part of the engine's API.
//!
//! Each entry point takes bytes as they could arrive from a disk, an object store or a peer,
//! runs the engine's own decoder over them and returns `Ok` when the decoder accepted them and
//! `Err` (its reason) when it refused them. None may panic on any input, with one deliberate
//! exception: where an encoder exists, a value the decoder accepted must encode and decode back
//! to itself, and a mismatch is asserted, since it is a bug in the pair the fuzzer should report.
//!
//! Every stored record is checksummed, and a fuzzer almost never forges a crc32, so the framed
//! formats are also decoded a second time "resealed": with every checksum recomputed over the
//! mutated bytes. That lets the mutations reach the decoders behind the checksums; the checks
//! themselves are still exercised by the first, unmodified pass.

use std::path::Path;

use bytes::Bytes;

use crate::batch::{self, WriteBatch};
use crate::cache::BlockCache;
use crate::coding::u32_at;
use crate::db::{ManifestImage, TableEdit};
use crate::key::{self, ValueKind};
use crate::manifest::{self, VersionEdit};
use crate::sst::block::{self, BlockBuilder, DecodedBlock};
use crate::sst::filter::Filter;
use crate::sst::reader::{parse_footer, parse_index, verify_block};
use crate::sst::{
    filter_hash, BlockHandle, Properties, Table, TableBuilder, BLOCK_TRAILER_LEN, FOOTER_LEN,
};
use crate::version::FileMeta;
use crate::{framing, wal, Compression, MAX_SEQ};

/// What an entry point returns: `Err` holds the decoder's reason for refusing the input.
pub type Outcome = std::result::Result<(), String>;

/// A target's name and entry point.
pub type Target = (&'static str, fn(&[u8]) -> Outcome);

/// Every target of this crate: its name (the fuzz target's, and its corpus directory's under
/// `fuzz/corpus/` and `fuzz/regressions/`) and its entry point.
pub const TARGETS: &[Target] = &[
    ("sst_block", sst_block),
    ("sst_index", sst_index),
    ("sst_footer", sst_footer),
    ("sst_filter", sst_filter),
    ("sst_props", sst_props),
    ("sst_table", sst_table),
    ("lsm_wal", lsm_wal),
    ("lsm_manifest", lsm_manifest),
    ("lsm_replica_edit", lsm_replica_edit),
];

/// Caps the work one input can ask for (entries visited, lookups made), so a large valid input
/// does not turn into a timeout instead of a finding.
const MAX_VISITS: usize = 512;

fn label() -> &'static Path {
    Path::new("fuzz-input")
}

/// A data block (after decompression): whole decoding, point seeks and partial decoding, which
/// trust different parts of it (`seek` and `decode_from` binary-search the restart array).
pub fn sst_block(data: &[u8]) -> Outcome {
    let b = Bytes::copy_from_slice(data);
    let whole = DecodedBlock::decode(b.clone());
    let mut targets = vec![
        key::make_internal_key(b"", MAX_SEQ, key::SEEK_KIND),
        key::make_internal_key(&[0xff; 8], 0, 0),
    ];
    if let Some(d) = &whole {
        for i in [0, d.len() / 2, d.len().saturating_sub(1)] {
            if i < d.len() {
                targets.push(d.key(i).to_vec());
                let _ = (d.value(i), d.key_bytes(i), d.value_bytes(i));
            }
        }
    }
    for t in &targets {
        let _ = block::seek(&b, t);
        if let Some(from) = DecodedBlock::decode_from(b.clone(), t) {
            let _ = (from.lower_bound(t), from.upper_bound(t));
        }
    }
    whole
        .map(|_| ())
        .ok_or_else(|| "malformed data block".into())
}

/// An index block (a data-format block whose values are block handles).
pub fn sst_index(data: &[u8]) -> Outcome {
    parse_index(&Bytes::copy_from_slice(data))
        .map(|_| ())
        .ok_or_else(|| "malformed index block".into())
}

/// The footer at the end of a table (`data` is the table's tail).
pub fn sst_footer(data: &[u8]) -> Outcome {
    parse_footer(data, label())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A bloom filter block, then probes of it.
pub fn sst_filter(data: &[u8]) -> Outcome {
    let f = Filter::parse(data).ok_or("malformed filter block")?;
    for h in [0, 1, u64::MAX, filter_hash(data)] {
        let _ = f.may_contain(h);
    }
    Ok(())
}

/// A properties block; an accepted one must survive its encoder.
pub fn sst_props(data: &[u8]) -> Outcome {
    let p = Properties::decode(data).ok_or("malformed properties block")?;
    assert_eq!(Properties::decode(&p.encode()).as_ref(), Some(&p));
    Ok(())
}

/// A whole table file as stored locally or in the object store: footer, then filter, index and
/// properties blocks, then every data block, with lookups and multi-block reads. Resealed too.
pub fn sst_table(data: &[u8]) -> Outcome {
    let as_stored = read_table(Bytes::copy_from_slice(data));
    let resealed = reseal_table(data);
    if resealed != data {
        let _ = read_table(Bytes::from(resealed));
    }
    as_stored
}

/// Opens the table, then reads it every way the engine does. Each way runs even when an earlier
/// one failed (a scan may reach a block no lookup did); the first error is the outcome.
fn read_table(bytes: Bytes) -> Outcome {
    let t =
        Table::from_bytes(bytes, label(), BlockCache::new(1 << 20)).map_err(|e| e.to_string())?;
    let mut first_error: Option<String> = None;
    let mut note = |r: crate::Result<()>| {
        if let Err(e) = r {
            first_error.get_or_insert_with(|| e.to_string());
        }
    };
    let mut keys = Vec::new();
    note(t.for_each(|k, _| {
        if keys.len() < MAX_VISITS {
            keys.push(k.to_vec());
        }
    }));
    for k in keys.iter().take(MAX_VISITS / 8) {
        let user = key::user_key(k);
        let _ = t.may_contain(filter_hash(user));
        note(t.get(user, k).map(|_| ()));
    }
    let n = t.data_blocks();
    for (first, reverse) in [(0, false), (n - 1, true), (n / 2, false)] {
        note(t.read_run(first, reverse, 64 << 10).and_then(|run| {
            run.into_iter()
                .try_for_each(|(i, b)| t.decode(i, b, None).map(|_| ()))
        }));
    }
    let from = key::make_internal_key(b"key", MAX_SEQ, key::SEEK_KIND);
    for i in (0..n).take(MAX_VISITS / 8) {
        note(t.decoded_block(i, Some(from.as_slice()), true).map(|_| ()));
    }
    first_error.map_or(Ok(()), Err)
}

/// `data` with the footer's checksum and those of every block it reaches (the three metadata
/// blocks, and the data blocks the index names) recomputed.
pub fn reseal_table(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    let Some(f) = b.len().checked_sub(FOOTER_LEN) else {
        return b;
    };
    let crc = crc32fast::hash(&b[f..f + 52]);
    b[f + 52..f + 56].copy_from_slice(&crc.to_le_bytes());
    let Ok([fh, ih, ph]) = parse_footer(&b, label()) else {
        return b;
    };
    for h in [fh, ih, ph] {
        reseal_block(&mut b, h);
    }
    let index = block_range(&b, ih)
        .and_then(|r| verify_block(Bytes::copy_from_slice(&b[r]), ih.offset, label()).ok())
        .and_then(|p| parse_index(&p));
    for e in index.unwrap_or_default().iter().take(MAX_VISITS) {
        reseal_block(&mut b, e.handle);
    }
    b
}

/// Where block `h` lies in a table of `b` (trailer included), if inside the data area.
fn block_range(b: &[u8], h: BlockHandle) -> Option<std::ops::Range<usize>> {
    let start = usize::try_from(h.offset).ok()?;
    let end = start
        .checked_add(usize::try_from(h.size).ok()?)?
        .checked_add(BLOCK_TRAILER_LEN)?;
    (end <= b.len().checked_sub(FOOTER_LEN)?).then_some(start..end)
}

fn reseal_block(b: &mut [u8], h: BlockHandle) {
    if let Some(r) = block_range(b, h) {
        let crc = crc32fast::hash(&b[r.start..r.end - 4]);
        b[r.end - 4..r.end].copy_from_slice(&crc.to_le_bytes());
    }
}

/// A WAL segment as recovery replays it: framed records of a sequence number and a batch. `Err`
/// when replay stopped before the end. Resealed too.
pub fn lsm_wal(data: &[u8]) -> Outcome {
    let as_stored = replay_wal(data);
    let resealed = reseal_records(data);
    if resealed != data {
        let _ = replay_wal(&resealed);
    }
    as_stored
}

fn replay_wal(data: &[u8]) -> Outcome {
    let r = wal::replay_bytes(Path::new("000001.wal"), data, |_seq, rep| {
        let ops = batch::decode_ops(rep)?;
        check_batch(&ops);
        Some(())
    })
    .map_err(|e| e.to_string())?;
    if r.dropped == 0 {
        Ok(())
    } else {
        Err(format!(
            "replay stopped after {} records, dropping {} bytes (a torn tail)",
            r.records, r.dropped
        ))
    }
}

/// Decoded operations, rebuilt through `WriteBatch`, must decode to themselves.
fn check_batch(ops: &[batch::Op<'_>]) {
    let mut wb = WriteBatch::new();
    for op in ops {
        match op.kind {
            ValueKind::Delete => wb.delete(op.key),
            ValueKind::Put => wb.put(op.key, op.value),
            ValueKind::PutTtl => {
                let (expiry, value) = op.value.split_at(8);
                let expiry = crate::coding::u64_at(expiry, 0).unwrap_or_default();
                wb.put_with_expiry(op.key, value, expiry);
            }
        }
    }
    // A replayed value may exceed what a new write accepts; only writable batches compare.
    if wb.validate().is_err() {
        return;
    }
    let rep = wb.resolved_rep(|| 0);
    let again = batch::decode_ops(&rep).expect("a batch's own encoding decodes");
    let flat = |o: &[batch::Op<'_>]| -> Vec<(ValueKind, Vec<u8>, Vec<u8>)> {
        o.iter()
            .map(|o| (o.kind, o.key.to_vec(), o.value.to_vec()))
            .collect()
    };
    assert_eq!(flat(&again), flat(ops));
}

/// A manifest file as `Db::open` replays it: framed version edits after a format header.
/// Resealed too.
pub fn lsm_manifest(data: &[u8]) -> Outcome {
    let as_stored = replay_manifest(data);
    let resealed = reseal_records(data);
    if resealed != data {
        let _ = replay_manifest(&resealed);
    }
    as_stored
}

fn replay_manifest(data: &[u8]) -> Outcome {
    let r =
        manifest::replay_bytes(Path::new("MANIFEST-000001"), 1, data).map_err(|e| e.to_string())?;
    for e in &r.edits {
        assert_eq!(VersionEdit::decode(&e.encode()).as_ref(), Some(e));
    }
    Ok(())
}

/// A table edit (carried in a Raft log entry) or a manifest image (a Raft snapshot, received
/// from a peer): `Ok` when either decoder accepts the bytes. The image is resealed too.
pub fn lsm_replica_edit(data: &[u8]) -> Outcome {
    let edit = TableEdit::decode(data).map(|e| {
        assert_eq!(TableEdit::decode(&e.encode()).ok(), Some(e.clone()));
    });
    let image = |d: &[u8]| {
        ManifestImage::decode(d).map(|i| {
            assert_eq!(ManifestImage::decode(&i.encode()).ok(), Some(i.clone()));
        })
    };
    let as_stored = image(data);
    if data.len() >= 12 {
        let mut resealed = data.to_vec();
        let crc = crc32fast::hash(&data[12..]);
        resealed[8..12].copy_from_slice(&crc.to_le_bytes());
        let _ = image(&resealed);
    }
    match (edit, as_stored) {
        (Err(a), Err(b)) => Err(format!("{a}; {b}")),
        _ => Ok(()),
    }
}

/// `data` with the checksum of every whole record of the WAL/manifest framing recomputed, up to
/// the first record that is cut short or has length zero.
pub fn reseal_records(data: &[u8]) -> Vec<u8> {
    let mut b = data.to_vec();
    let mut pos = 0;
    while let Some(len) = u32_at(&b, pos) {
        let end = pos
            .checked_add(framing::HEADER_LEN)
            .and_then(|s| s.checked_add(len as usize));
        let Some(end) = end.filter(|&e| len > 0 && e <= b.len()) else {
            break;
        };
        let mut h = crc32fast::Hasher::new();
        h.update(&b[pos..pos + 4]);
        h.update(&b[pos + framing::HEADER_LEN..end]);
        b[pos + 4..pos + 8].copy_from_slice(&h.finalize().to_le_bytes());
        pos = end;
    }
    b
}

/// A seed input: target name, file name, bytes.
pub type Seed = (&'static str, String, Vec<u8>);

/// Seed corpora: valid encodings made by the engine's own encoders (file names `valid-*`, which
/// every entry point must accept), and a few hand-made edge cases (`reject-*`, which it must
/// refuse with an error). Deterministic, so the committed files can be checked against it.
pub fn seeds() -> crate::Result<Vec<Seed>> {
    let dir = ScratchDir::new()?;
    let mut out: Vec<Seed> = Vec::new();
    let mut add = |target: &'static str, name: &str, bytes: Vec<u8>| {
        out.push((target, name.to_string(), bytes));
    };

    for (name, compression, block_size) in [
        ("plain", Compression::None, 128),
        ("lz4", Compression::Lz4, 256),
    ] {
        let table = build_table(&dir.0.join(format!("{name}.sst")), compression, block_size)?;
        let [fh, ih, ph] = parse_footer(&table, label())?;
        let payload = |h: BlockHandle| -> crate::Result<Vec<u8>> {
            let r = block_range(&table, h)
                .ok_or_else(|| crate::Error::corruption(label(), "handle outside the table"))?;
            Ok(verify_block(Bytes::copy_from_slice(&table[r]), h.offset, label())?.to_vec())
        };
        let index = payload(ih)?;
        let handles: Vec<BlockHandle> = parse_index(&Bytes::from(index.clone()))
            .unwrap_or_default()
            .iter()
            .map(|e| e.handle)
            .collect();
        if let (Some(&first), Some(&last)) = (handles.first(), handles.last()) {
            add("sst_block", &format!("valid-{name}-first"), payload(first)?);
            add("sst_block", &format!("valid-{name}-last"), payload(last)?);
        }
        add("sst_index", &format!("valid-{name}"), index);
        add("sst_filter", &format!("valid-{name}"), payload(fh)?);
        add("sst_props", &format!("valid-{name}"), payload(ph)?);
        add(
            "sst_footer",
            &format!("valid-{name}"),
            table[table.len() - FOOTER_LEN..].to_vec(),
        );
        add("sst_table", &format!("valid-{name}"), table);
    }

    let mut blk = BlockBuilder::new(1);
    blk.add(&key::make_internal_key(b"only", 1, 1), b"");
    add("sst_block", "valid-one-entry", blk.finish());
    // One entry claiming an unshared key length near u64::MAX, then a valid restart array.
    let mut huge = Vec::new();
    crate::coding::put_varint(&mut huge, 0);
    crate::coding::put_varint(&mut huge, u64::MAX - 3);
    crate::coding::put_varint(&mut huge, 1);
    huge.extend_from_slice(&[0u8; 16]);
    huge.extend_from_slice(&0u32.to_le_bytes());
    huge.extend_from_slice(&1u32.to_le_bytes());
    add("sst_block", "reject-huge-key-length", huge);
    add(
        "sst_block",
        "reject-no-restarts",
        0u32.to_le_bytes().to_vec(),
    );
    add("sst_filter", "reject-empty", Vec::new());
    add("sst_footer", "reject-short", vec![0; FOOTER_LEN - 1]);
    add("sst_props", "reject-short-keys", vec![0; 9]);

    let wal = write_wal(&dir.0)?;
    add("lsm_wal", "reject-torn-tail", wal[..wal.len() - 3].to_vec());
    // Zeros after the records are the space written ahead of them: the end, not damage.
    let mut ahead = wal.clone();
    ahead.resize(wal.len() + 64, 0);
    add("lsm_wal", "valid-zeros-ahead", ahead);
    add("lsm_wal", "valid-three-batches", wal);
    add("lsm_wal", "valid-empty", Vec::new());
    add("lsm_wal", "valid-zeros", vec![0; 32]);

    let (manifest, edit) = write_manifest(&dir.0)?;
    add("lsm_manifest", "reject-header-only", {
        let mut m = Vec::new();
        framing::frame(&mut m, &manifest_header());
        m
    });
    add("lsm_manifest", "valid-base-and-edit", manifest);

    let table_edit = TableEdit {
        edit: VersionEdit {
            deleted: vec![(1, 3)],
            added: edit.added.clone(),
            ..Default::default()
        },
    };
    add("lsm_replica_edit", "valid-table-edit", table_edit.encode());
    add(
        "lsm_replica_edit",
        "valid-image",
        manifest_image(70, b"raft state"),
    );
    add(
        "lsm_replica_edit",
        "reject-image-magic-only",
        b"LSMI".to_vec(),
    );
    Ok(out)
}

/// The encoding of a manifest image of two cold tables, flushed to `flushed_seq`, holding
/// `app_state`: for the seeds of the crates above this one, whose snapshots are images.
pub fn manifest_image(flushed_seq: u64, app_state: &[u8]) -> Vec<u8> {
    ManifestImage {
        edit: VersionEdit {
            flushed_seq: Some(flushed_seq),
            app_state: Some(app_state.to_vec()),
            added: vec![
                (1, file_meta(3, b"b", b"k", true)),
                (2, file_meta(11, b"c", b"z", true)),
            ],
            ..Default::default()
        },
    }
    .encode()
}

fn file_meta(number: u64, lo: &[u8], hi: &[u8], cold: bool) -> FileMeta {
    FileMeta {
        number,
        size: 4096 + number,
        smallest: key::make_internal_key(lo, 9, 1),
        largest: key::make_internal_key(hi, 5, 1),
        min_seq: 5,
        max_seq: 9,
        entries: 12,
        deletions: 2,
        cold,
        // One cold table of the seeds names its object (format 3), the other does not (as
        // format 2 wrote them): both must decode.
        object: (cold && number % 2 == 1 && number < 10)
            .then(|| format!("db/sst/{number:06}-00000000c0ffee{number:02x}.sst")),
    }
}

fn build_table(path: &Path, compression: Compression, block_size: usize) -> crate::Result<Vec<u8>> {
    let mut b = TableBuilder::create(path, block_size, 4, compression, 0.01)?;
    for i in 0..40u64 {
        let user = format!("key{i:03}");
        let kind = if i % 7 == 3 {
            ValueKind::Delete
        } else {
            ValueKind::Put
        };
        let value = match kind {
            ValueKind::Delete => Vec::new(),
            _ => format!("value {i} {}", "x".repeat(i as usize % 13)).into_bytes(),
        };
        b.add(
            &key::make_internal_key(user.as_bytes(), 100 + i, kind as u8),
            &value,
        )?;
    }
    b.finish()?;
    std::fs::read(path).map_err(|e| crate::Error::io("reading a seed table", e))
}

fn write_wal(dir: &Path) -> crate::Result<Vec<u8>> {
    let mut w = wal::WalWriter::create(dir, 1)?;
    let mut a = WriteBatch::new();
    a.put("apple", "red");
    a.put("banana", "yellow");
    let mut b = WriteBatch::new();
    b.delete("apple");
    let mut c = WriteBatch::new();
    c.put_with_expiry("cherry", "dark", 1_700_000_000_000);
    c.put_with_ttl("date", "brown", std::time::Duration::from_secs(60));
    let reps: Vec<Vec<u8>> = [a, b, c]
        .iter()
        .map(|wb| wb.resolved_rep(|| 1_700_000_000_000).into_owned())
        .collect();
    w.append(reps.iter().zip(1u64..).map(|(r, s)| (s, &r[..])), true)?;
    // Retired: the zeros written ahead of the records are cut.
    w.retire()?;
    std::fs::read(wal::segment_path(dir, 1)).map_err(|e| crate::Error::io("reading a seed WAL", e))
}

fn manifest_header() -> Vec<u8> {
    let mut h = Vec::new();
    crate::coding::put_varint(&mut h, 6);
    crate::coding::put_varint(&mut h, manifest::MANIFEST_FORMAT_VERSION);
    h
}

fn write_manifest(dir: &Path) -> crate::Result<(Vec<u8>, VersionEdit)> {
    let meta = file_meta;
    let base = VersionEdit {
        log_number: Some(4),
        next_file_number: Some(12),
        last_seq: Some(77),
        added: vec![
            (0, meta(7, b"a", b"m", false)),
            (1, meta(3, b"b", b"k", false)),
        ],
        ..Default::default()
    };
    let mut w = manifest::ManifestWriter::create(dir, 1, &base)?;
    let edit = VersionEdit {
        last_seq: Some(90),
        flushed_seq: Some(80),
        app_state: Some(b"owner".to_vec()),
        deleted: vec![(1, 3)],
        added: vec![(2, meta(11, b"c", b"z", true))],
        ..Default::default()
    };
    w.append(&edit)?;
    let path = manifest::manifest_path(dir, 1);
    let bytes = std::fs::read(&path).map_err(|e| crate::Error::io("reading a seed manifest", e))?;
    Ok((bytes, edit))
}

/// A directory removed on drop, for the files the seed encoders write (the crate does not
/// depend on `tempfile` outside its tests).
struct ScratchDir(std::path::PathBuf);

impl ScratchDir {
    fn new() -> crate::Result<ScratchDir> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("lsm-fuzz-seeds-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).map_err(|e| crate::Error::io("creating a scratch dir", e))?;
        Ok(ScratchDir(dir))
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds_are_accepted_and_edge_cases_refused() {
        for (target, name, bytes) in seeds().expect("seeds") {
            let f = TARGETS
                .iter()
                .find(|(t, _)| *t == target)
                .map(|(_, f)| f)
                .expect("known target");
            let r = f(&bytes);
            if name.starts_with("valid-") {
                assert_eq!(r, Ok(()), "{target}/{name}");
            } else {
                assert!(r.is_err(), "{target}/{name}");
            }
        }
    }
}
