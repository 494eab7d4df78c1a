//! The write-ahead log: one segment file per memtable, named `NNNNNN.wal`.
//!
//! Format version 2: a segment is a sequence of framed records (see `framing`):
//! ```text
//! segment := record(header) | record(entry)*
//! header  := magic "SLSMWAL\0" | version u32 LE     -- record 0, synced when the file is created
//! entry   := claim | seq u64 LE | batch             -- one per committed write batch
//! ```
//! `claim` (see `claim`) numbers the entries from 1 and says how many records were synced when
//! each was written. Group commit writes the records of every batch in a group with one `write`
//! and, if any writer asked for it, one `fdatasync`. A segment is synced before the next one is
//! created, so a later segment's header claims every record of the earlier ones durable.
//!
//! The records may be followed by zeros: space written ahead of the appends (see [`PREALLOC`]),
//! cut off when the segment is retired. A zero length ends the records (see `framing`), so
//! replay reads a tail of zeros as the end of the segment, neither damage nor a torn tail.
//!
//! Version 1 had no header and no claims (`entry := seq u64 LE | batch`); such segments are
//! still replayed, by the conservative rule: damage is a torn tail only when the bad record
//! reaches the end of the file or only zeros follow it, and is refused otherwise. Telling a
//! power cut's hole from lost synced writes needs the claims; refusing costs the operator a
//! restore, replaying past lost acknowledged writes would serve a history that never was.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::claim;
use crate::error::IoContext;
use crate::framing::{self, Records};
use crate::{Error, Result};

const MAGIC: &[u8; 8] = b"SLSMWAL\0";
/// Format version of the segments this build writes.
const VERSION: u32 = 2;

/// Zeros written past the end of the records whenever an append would reach past those already
/// there. An `fdatasync` after a write that grew the file must also commit the new size and
/// blocks through the filesystem's journal; one that only overwrote zeros already on disk
/// flushes the data alone (the Raft log measured 0.10-0.12 ms against 0.19-0.21 ms per synced
/// 1.5 KiB write on ext4). `fallocate` does not do: its unwritten extents are converted, through
/// the journal, by the first write into them. With 1 MiB ahead, one synced write in several
/// thousand pays for the journal instead of each one.
pub(crate) const PREALLOC: u64 = 1 << 20;

pub(crate) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.wal"))
}

/// The open tail segment.
pub(crate) struct WalWriter {
    file: File,
    number: u64,
    path: PathBuf,
    buf: Vec<u8>,
    /// Index of the next record.
    next_index: u64,
    /// Records below this index are durable: what the next record may claim.
    synced: u64,
    /// Where the next record goes: the end of the records.
    end: u64,
    /// Length of the file: the records and the zeros written ahead of them.
    allocated: u64,
}

impl WalWriter {
    /// Creates segment `number` with its header, both durable (file and directory entry) when
    /// this returns, so a synced record in it survives power loss and the header may claim the
    /// earlier segments.
    pub(crate) fn create(dir: &Path, number: u64) -> Result<Self> {
        let path = segment_path(dir, number);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .ctx(|| format!("creating WAL segment {}", path.display()))?;
        let mut header = MAGIC.to_vec();
        header.extend_from_slice(&VERSION.to_le_bytes());
        let mut buf = Vec::with_capacity(64 << 10);
        framing::frame(&mut buf, &header);
        file.write_all(&buf)
            .and_then(|_| file.sync_data())
            .ctx(|| format!("writing the header of {}", path.display()))?;
        crate::fsutil::sync_dir(dir)?;
        let end = buf.len() as u64;
        Ok(WalWriter {
            file,
            number,
            path,
            buf,
            next_index: 1,
            synced: 1,
            end,
            allocated: end,
        })
    }

    pub(crate) fn number(&self) -> u64 {
        self.number
    }

    /// Frames and writes one record per `(seq, rep)` with a single system call; syncs if asked.
    /// Returns the bytes written.
    pub(crate) fn append<'a>(
        &mut self,
        records: impl Iterator<Item = (u64, &'a [u8])>,
        sync: bool,
    ) -> Result<usize> {
        self.buf.clear();
        let mut index = self.next_index;
        let mut head = Vec::with_capacity(claim::CLAIM_LEN + 8);
        for (seq, rep) in records {
            head.clear();
            claim::put(&mut head, index, self.synced);
            head.extend_from_slice(&seq.to_le_bytes());
            framing::frame_parts(&mut self.buf, &[&head, rep]);
            index += 1;
        }
        let records = self.buf.len() as u64;
        // The zeros go in the same write as the records, so the sync that makes these records
        // durable makes the space ahead durable too, once.
        let past = self.end + records;
        let ahead = if past > self.allocated { PREALLOC } else { 0 };
        self.buf.resize((records + ahead) as usize, 0);
        self.file
            .write_all_at(&self.buf, self.end)
            .ctx(|| format!("appending to {}", self.path.display()))?;
        self.buf.truncate(records as usize);
        self.end = past;
        if ahead > 0 {
            self.allocated = past + ahead;
        }
        self.next_index = index;
        if sync {
            self.sync()?;
        }
        Ok(records as usize)
    }

    /// Syncs the segment and cuts the zeros ahead of its records, for a segment no more writes
    /// will go to: it is left as long as its records, as replay and tools expect.
    pub(crate) fn retire(&mut self) -> Result<()> {
        if self.allocated > self.end {
            self.file
                .set_len(self.end)
                .ctx(|| format!("cutting the space ahead in {}", self.path.display()))?;
            self.allocated = self.end;
        }
        self.sync()
    }

    /// `fdatasync`; every record written so far is durable when this returns.
    pub(crate) fn sync(&mut self) -> Result<()> {
        if take_injected_sync_failure() {
            return Err(crate::Error::io(
                format!("syncing {} (injected)", self.path.display()),
                std::io::Error::from_raw_os_error(5), // EIO
            ));
        }
        self.file
            .sync_data()
            .ctx(|| format!("syncing {}", self.path.display()))?;
        self.synced = self.next_index;
        Ok(())
    }
}

/// WAL syncs still to fail (process-wide; see [`fail_next_syncs`]).
static INJECTED_SYNC_FAILURES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Fault injection for tests: the next `n` WAL syncs of this process fail with EIO, as an
/// fdatasync does after the kernel dropped dirty pages it could not write. Process-wide: a test
/// using it runs in a binary of its own.
#[doc(hidden)]
pub fn fail_next_syncs(n: u64) {
    INJECTED_SYNC_FAILURES.store(n, std::sync::atomic::Ordering::SeqCst);
}

fn take_injected_sync_failure() -> bool {
    use std::sync::atomic::Ordering;
    INJECTED_SYNC_FAILURES
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
}

/// What replaying one segment found.
#[derive(Debug, Default)]
pub(crate) struct SegmentReplay {
    pub records: u64,
    /// Offset of the torn tail, when the valid records end before the file does.
    pub torn_at: Option<u64>,
    /// Bytes after the last valid record (a torn tail).
    pub dropped: u64,
}

/// Replays the valid prefix of a segment, calling `apply(seq, rep)` per record. A record whose
/// frame is intact but whose body does not decode counts as damage. Damage that is not a torn
/// tail (see the module doc) is [`Error::Corruption`] naming the file and offset.
pub(crate) fn replay_segment(
    path: &Path,
    apply: impl FnMut(u64, &[u8]) -> Option<()>,
) -> Result<SegmentReplay> {
    let data = std::fs::read(path).ctx(|| format!("reading WAL segment {}", path.display()))?;
    replay_bytes(path, &data, apply)
}

/// [`replay_segment`] over a segment's bytes (`path` labels errors).
pub(crate) fn replay_bytes(
    path: &Path,
    data: &[u8],
    mut apply: impl FnMut(u64, &[u8]) -> Option<()>,
) -> Result<SegmentReplay> {
    let mut recs = Records::new(data);
    let mut out = SegmentReplay::default();
    let mut valid = 0usize;
    let mut version = None;
    for payload in recs.by_ref() {
        let v = *version.get_or_insert_with(|| header_version(payload));
        if valid == 0 && v != 1 {
            if v != VERSION {
                return Err(Error::corruption(
                    path,
                    format!("WAL format version {v}; this build reads 1 and {VERSION}"),
                ));
            }
            valid += framing::HEADER_LEN + payload.len();
            continue;
        }
        let body = if v == 1 {
            Some(payload)
        } else {
            claim::split(payload)
                .filter(|(index, _, _)| *index == out.records + 1)
                .map(|(_, _, body)| body)
        };
        let applied = body.and_then(|b| {
            let seq = crate::coding::u64_at(b, 0)?;
            apply(seq, &b[8..])
        });
        if applied.is_none() {
            break;
        }
        out.records += 1;
        valid += framing::HEADER_LEN + payload.len();
    }
    // Zeros after the records: space written ahead of them (or a file whose last writes never
    // reached the disk, which is the same to the reader): the end of the segment.
    if data[valid..].iter().all(|b| *b == 0) {
        return Ok(out);
    }
    let proof = match version {
        Some(VERSION) => claim::find(data, valid, out.records + 1)
            .map(|p| claim::corruption_detail(valid, out.records + 1, p)),
        // The first record is damaged: the header of a version-2 segment, or an entry of a
        // version-1 one. Entries with claims after it prove synced writes would be lost (a
        // flipped length there would otherwise read as one record running past the end, a
        // torn tail, and drop the whole segment).
        None if claim::find(data, 0, 1).is_some() => {
            claim::find(data, 0, 1).map(|p| claim::corruption_detail(0, 1, p))
        }
        _ if framing::is_torn_tail(data, valid) => None,
        _ => Some(format!(
            "damaged record at byte offset {valid} with data after it; a version-1 segment \
             carries no durability claims, so this cannot be told from lost synced writes"
        )),
    };
    if let Some(detail) = proof {
        return Err(Error::corruption(path, detail));
    }
    out.torn_at = Some(valid as u64);
    out.dropped = (data.len() - valid) as u64;
    Ok(out)
}

/// The version a segment's first record declares: its header's, or 1 when it is an entry of a
/// version-1 segment (which has no header).
fn header_version(first: &[u8]) -> u32 {
    match first.strip_prefix(MAGIC.as_slice()) {
        Some(v) => v.try_into().map(u32::from_le_bytes).unwrap_or(u32::MAX),
        None => 1,
    }
}

/// True when the segment at `path` begins with a valid record (its header, or a version-1
/// entry): it was created after every earlier segment was synced, so damage in those is not a
/// torn tail.
pub(crate) fn has_first_record(path: &Path) -> Result<bool> {
    let data = std::fs::read(path).ctx(|| format!("reading WAL segment {}", path.display()))?;
    Ok(Records::new(&data).next().is_some())
}

/// True when the segment at `path` may hold logged writes: anything beyond a header but zeros.
/// (A header alone, and the zeros written ahead of the first record, is what a crash between
/// creating the segment and using it leaves.)
pub(crate) fn holds_writes(path: &Path) -> Result<bool> {
    let data = std::fs::read(path).ctx(|| format!("reading WAL segment {}", path.display()))?;
    let header = Records::new(&data)
        .next()
        .filter(|first| header_version(first) != 1)
        .map_or(0, |first| framing::HEADER_LEN + first.len());
    Ok(data[header..].iter().any(|b| *b != 0))
}

/// Cuts a torn tail off, durably, so that segments created after this recovery do not make it
/// look like damage before synced data at the next one.
pub(crate) fn cut(path: &Path, at: u64) -> Result<()> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.set_len(at).and_then(|_| f.sync_all()))
        .ctx(|| format!("cutting the torn tail of {}", path.display()))
}

/// The segment number of a file name like `000012.wal`.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".wal")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framing::test_files::{edit_file, offsets};

    fn replay(path: &Path) -> Result<(Vec<u64>, SegmentReplay)> {
        let mut seqs = Vec::new();
        let r = replay_segment(path, |seq, _| {
            seqs.push(seq);
            Some(())
        })?;
        Ok((seqs, r))
    }

    #[test]
    fn claims_follow_syncs() {
        let d = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(d.path(), 1).unwrap();
        let rep = [7u8; 50];
        w.append([(1, &rep[..]), (2, &rep[..])].into_iter(), true)
            .unwrap();
        w.append([(3, &rep[..])].into_iter(), false).unwrap();
        w.append([(4, &rep[..])].into_iter(), false).unwrap();
        let path = segment_path(d.path(), 1);
        let data = std::fs::read(&path).unwrap();
        let claims: Vec<(u64, u64)> = Records::new(&data)
            .skip(1)
            .map(|p| claim::split(p).map(|(i, c, _)| (i, c)).unwrap())
            .collect();
        assert_eq!(claims, [(1, 1), (2, 1), (3, 3), (4, 3)]);
        let (seqs, r) = replay(&path).unwrap();
        assert_eq!((seqs, r.torn_at), (vec![1, 2, 3, 4], None));
        let empty = WalWriter::create(d.path(), 2).unwrap();
        assert!(!holds_writes(&segment_path(d.path(), empty.number())).unwrap());
        assert!(holds_writes(&path).unwrap());
    }

    #[test]
    fn zeros_ahead_end_the_records_and_are_cut_on_retire() {
        let d = tempfile::tempdir().unwrap();
        let mut w = WalWriter::create(d.path(), 1).unwrap();
        let path = segment_path(d.path(), 1);
        let header_len = std::fs::metadata(&path).unwrap().len();
        let rep = [9u8; 100];
        w.append([(1, &rep[..])].into_iter(), true).unwrap();
        let len = std::fs::metadata(&path).unwrap().len();
        assert!(len >= PREALLOC, "{len}: no space written ahead");
        // Later appends overwrite the zeros: the file does not grow.
        for seq in 2..100 {
            w.append([(seq, &rep[..])].into_iter(), seq % 10 == 0)
                .unwrap();
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), len);
        let (seqs, r) = replay(&path).unwrap();
        assert_eq!(seqs, (1..100).collect::<Vec<_>>());
        assert_eq!(
            (r.torn_at, r.dropped),
            (None, 0),
            "zeros are not a torn tail"
        );
        w.retire().unwrap();
        let cut = std::fs::metadata(&path).unwrap().len();
        assert_eq!(cut, w.end);
        assert!(cut > header_len && cut < PREALLOC);
        assert_eq!(replay(&path).unwrap().0.len(), 99);

        let mut empty = WalWriter::create(d.path(), 2).unwrap();
        let rep2 = [1u8; 10];
        empty.append([(1, &rep2[..])].into_iter(), false).unwrap();
        let p2 = segment_path(d.path(), 2);
        assert!(holds_writes(&p2).unwrap());
        // The record never reached the disk; the zeros ahead of it did.
        edit_file(&p2, |data| {
            let at = header_len as usize;
            data[at..].iter_mut().for_each(|b| *b = 0);
        });
        assert!(!holds_writes(&p2).unwrap());
    }

    #[test]
    fn version_1_segments_are_read_by_the_conservative_rule() {
        let d = tempfile::tempdir().unwrap();
        let path = segment_path(d.path(), 4);
        let mut b = Vec::new();
        for seq in 10..16u64 {
            framing::frame_parts(&mut b, &[&seq.to_le_bytes(), &[1u8; 30]]);
        }
        let offs = offsets(&b);
        std::fs::write(&path, &b).unwrap();
        assert_eq!(replay(&path).unwrap().0, (10..16).collect::<Vec<_>>());
        edit_file(&path, |b| b[offs[5] + 12] ^= 1);
        let (seqs, r) = replay(&path).unwrap();
        assert_eq!((seqs.len(), r.torn_at), (5, Some(offs[5] as u64)));
        std::fs::write(&path, &b).unwrap();
        edit_file(&path, |b| b[offs[2] + 12] ^= 1);
        let e = replay(&path).unwrap_err();
        assert!(
            e.to_string().contains(&format!("byte offset {}", offs[2])),
            "{e}"
        );
    }
}
