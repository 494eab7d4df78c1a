//! One segment file: a header, then the framed records of consecutive log entries.
//!
//! Format version 2, file name `{base:020}.seg` (the index of its first entry):
//! ```text
//! segment := header | record*                                   -- record: see `framing`
//! header  := magic "SLOGSEGM" | version u32 LE | record(base u64 LE)
//! payload := index u64 LE | durable_next u64 LE | entry bytes   -- of each record after the header
//! ```
//! Entry `base + i` is the `i`-th record. `durable_next` is the log's durability claim when the
//! record was written: every entry below it had been synced (see `claim`); it never exceeds the
//! record's own index. The header is written with the file, atomically (see
//! `fsutil::write_atomic`), so a segment under its final name always has a whole header: a bad
//! one is corruption. A segment is created only once the previous one is synced, so its header
//! claims every entry below `base` durable. Records are only appended at the end, one `write`
//! and one `fdatasync` per batch, and the file is only ever cut back to a record boundary.
//!
//! The records may be followed by zeros: space written ahead of the appends (see [`PREALLOC`]),
//! cut off when the segment is sealed or closed. A zero length ends the records (see
//! `framing`), so recovery reads it as the end of the log, not as damage.
//!
//! Damage after the last valid record is a torn tail, cut, unless a later valid record claims
//! the damaged entry durable: then the segment is corrupt and recovery refuses it.
//!
//! Version 1 (read, never written; a version-1 tail is sealed and the log continues in a new
//! segment) had no `durable_next`. Without claims a hole of unsynced pages cannot be told from
//! lost synced data, so it is read by the conservative rule: damage is a torn tail only when the
//! bad record is the last thing before the end of the file or zeros; anything else is refused.
//! Refusing a log that a power cut merely tore costs a rebuild of the replica; accepting one that
//! lost acknowledged entries could break Raft's safety.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::claim::{self, CLAIM_LEN};
use super::framing::{self, Next, PREFIX_LEN};
use super::fsutil;
use crate::error::{Error, IoContext, Result};

const MAGIC: &[u8; 8] = b"SLOGSEGM";
/// Format version of the segment files this build writes.
pub(crate) const VERSION: u32 = 2;
/// The version before durability claims, still read.
const VERSION_1: u32 = 1;
/// Bytes of the segment header; the first record starts here.
pub(crate) const HEADER_LEN: u64 = (PREFIX_LEN + framing::HEADER_LEN + 8) as u64;

/// Largest entry the log accepts. Recovery treats a longer record as damage, which bounds what a
/// corrupt length field can make it allocate.
pub const MAX_ENTRY_LEN: usize = 64 << 20;
/// Largest record payload: the index and the claim, then the entry.
const MAX_PAYLOAD_LEN: u32 = (MAX_ENTRY_LEN + CLAIM_LEN) as u32;

/// Zeros written past the end of the records whenever an append would reach past those already
/// there. An `fdatasync` after an append that grew the file must also commit the new size and
/// block allocation to the filesystem's journal; one that only overwrote zeros already on disk
/// flushes the data alone, about half the time on the ext4 disk the project is measured on
/// (0.10-0.12 ms against 0.19-0.21 ms for 1.5 KiB writes). `fallocate` does not do: its
/// unwritten extents are converted, through the journal, by the first write into them. With
/// 1 MiB ahead, one sync in several hundred pays for the journal instead of every one.
pub(crate) const PREALLOC: u64 = 1 << 20;

/// The path of the segment whose first entry is `base`.
pub(crate) fn path_for(dir: &Path, base: u64) -> PathBuf {
    dir.join(format!("{base:020}.seg"))
}

/// The base index of a segment file name, `None` for any other file.
pub(crate) fn parse_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    (digits.len() == 20 && digits.bytes().all(|b| b.is_ascii_digit()))
        .then(|| digits.parse().ok())
        .flatten()
}

/// A torn tail: where a segment's valid records ended before the end of its file, with nothing
/// after them that proves the damaged entry had been synced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Damage {
    /// File offset of the first invalid byte (the end of the last valid record).
    pub offset: u64,
    /// Bytes from `offset` to the end of the file.
    pub bytes: u64,
    /// The entry that belonged at `offset`.
    pub index: u64,
}

/// An open segment with an in-memory index of its records.
#[derive(Debug)]
pub(crate) struct Segment {
    path: PathBuf,
    /// Shared with [`SyncHandle`]s of deferred appends, which sync it outside the log's lock.
    file: Arc<File>,
    base: u64,
    /// File offset of each record: entry `base + i` starts at `offsets[i]`.
    offsets: Vec<u64>,
    /// End of the last valid record, where the next append goes.
    end: u64,
    /// Length of the file: `end`, then zeros written ahead of the appends.
    allocated: u64,
    /// Format version of the file; appends go only to segments of [`VERSION`].
    version: u32,
}

impl Segment {
    /// Creates an empty segment for entries from `base` on; durable (file and directory entry)
    /// when it returns, so a synced append to it survives power loss.
    pub(crate) fn create(dir: &Path, base: u64) -> Result<Self> {
        let path = path_for(dir, base);
        let mut header = Vec::with_capacity(HEADER_LEN as usize);
        framing::put_prefix(&mut header, MAGIC, VERSION);
        framing::frame(&mut header, &[&base.to_le_bytes()]);
        debug_assert_eq!(header.len() as u64, HEADER_LEN);
        fsutil::write_atomic(&path, &header)?;
        let file = Arc::new(open_rw(&path)?);
        Ok(Segment {
            path,
            file,
            base,
            offsets: Vec::new(),
            end: HEADER_LEN,
            allocated: HEADER_LEN,
            version: VERSION,
        })
    }

    /// Opens the segment at `path`, whose name says it starts at `base`, and indexes its valid
    /// records. Returns the torn tail that ended them early, if any; the file is left as found
    /// ([`truncate_from`](Self::truncate_from) at [`next_index`](Self::next_index) cuts it).
    /// Damage that is not a torn tail (see the module doc) is [`Error::CorruptRecord`].
    pub(crate) fn open(path: PathBuf, base: u64) -> Result<(Self, Option<Damage>)> {
        let file = open_rw(&path)?;
        let file_len = file
            .metadata()
            .ctx(|| format!("reading the size of {}", path.display()))?
            .len();
        let mut offsets = Vec::new();
        let mut end = HEADER_LEN;
        let mut r = BufReader::with_capacity(256 << 10, &file);
        let version = check_header(&path, &mut r, base)?;
        let mut payload = Vec::new();
        let damage = loop {
            // A record cannot be longer than what is left of the file. Capping it there reads a
            // damaged length at the end of a small segment as damage at once, instead of first
            // allocating and zeroing up to the entry limit for a read that must come up short.
            let left = file_len.saturating_sub(end + framing::HEADER_LEN as u64);
            let cap = u32::try_from(left).map_or(MAX_PAYLOAD_LEN, |l| l.min(MAX_PAYLOAD_LEN));
            let next = framing::read_record(&mut r, cap, &mut payload)
                .ctx(|| format!("reading {}", path.display()))?;
            let index = base + offsets.len() as u64;
            let declared_len = match next {
                Next::End => break None,
                Next::Record if record_fits(version, &payload, index) => {
                    offsets.push(end);
                    end += (framing::HEADER_LEN + payload.len()) as u64;
                    continue;
                }
                // A record that checks out but holds the wrong index is damage all the same:
                // what follows it cannot be trusted to be this log's next entries.
                Next::Record => Some(payload.len() as u32),
                Next::Damaged { declared_len } => declared_len,
            };
            // Space written ahead of the appends, never used (or used by an append a crash
            // interrupted before any of it reached the disk): the log ends here, undamaged.
            if zeros_from(&file, &path, end, file_len)? {
                break None;
            }
            let damage = Damage {
                offset: end,
                bytes: file_len - end,
                index,
            };
            if version == VERSION_1 {
                check_v1_tail(&file, &path, &damage, declared_len)?;
            } else {
                check_claims(&file, &path, &damage)?;
            }
            break Some(damage);
        };
        drop(r);
        let seg = Segment {
            path,
            file: Arc::new(file),
            base,
            offsets,
            end,
            allocated: file_len,
            version,
        };
        Ok((seg, damage))
    }

    /// Format version of the file.
    pub(crate) fn version(&self) -> u32 {
        self.version
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn base(&self) -> u64 {
        self.base
    }

    /// The index the next appended entry must have.
    pub(crate) fn next_index(&self) -> u64 {
        self.base + self.offsets.len() as u64
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.offsets.is_empty()
    }

    /// Size of the file in bytes, up to the end of its last record.
    pub(crate) fn size(&self) -> u64 {
        self.end
    }

    /// Appends the entries, which must continue this segment, with one write and (when `sync`)
    /// one `fdatasync`; the index covers them once written. Each record claims `durable_next`
    /// (see `claim`), which must not exceed what is synced. `buf` is scratch space.
    pub(crate) fn append(
        &mut self,
        entries: &[(u64, &[u8])],
        durable_next: u64,
        buf: &mut Vec<u8>,
        sync: bool,
    ) -> Result<()> {
        debug_assert_eq!(
            self.version, VERSION,
            "appends go to current-version segments only"
        );
        debug_assert!(entries.first().is_none_or(|e| durable_next <= e.0));
        debug_assert!(entries
            .iter()
            .zip(self.next_index()..)
            .all(|(e, i)| e.0 == i));
        buf.clear();
        let first = self.offsets.len();
        for (index, data) in entries {
            self.offsets.push(self.end + buf.len() as u64);
            framing::frame(
                buf,
                &[&index.to_le_bytes(), &durable_next.to_le_bytes(), data],
            );
        }
        let records = buf.len() as u64;
        // The zeros go in the same write as the records, so the sync that makes these records
        // durable also makes the space ahead durable, once.
        let past = self.end + records;
        let ahead = if past > self.allocated { PREALLOC } else { 0 };
        buf.resize((records + ahead) as usize, 0);
        let written = self.file.write_all_at(buf, self.end).and_then(|_| {
            if sync {
                self.file.sync_data()
            } else {
                Ok(())
            }
        });
        if let Err(e) = written {
            self.offsets.truncate(first);
            return Err(Error::io(
                format!("appending to {}", self.path.display()),
                e,
            ));
        }
        self.end = past;
        if ahead > 0 {
            self.allocated = past + ahead;
        }
        buf.truncate(records as usize);
        Ok(())
    }

    /// `fdatasync` of the file: every record in it is durable when this returns.
    pub(crate) fn sync(&self) -> Result<()> {
        self.file
            .sync_data()
            .ctx(|| format!("syncing {}", self.path.display()))
    }

    /// Cuts the zeros written ahead of the records and syncs the file (size included): for a
    /// segment no more appends will go to.
    pub(crate) fn seal(&mut self) -> Result<()> {
        self.cut_ahead()
            .ctx(|| format!("sealing {}", self.path.display()))?;
        self.file
            .sync_all()
            .map_err(|e| Error::io(format!("syncing {}", self.path.display()), e))
    }

    /// Best effort, for a log being closed: cuts the zeros ahead of the records so the file on
    /// disk ends with its last record. Left in place (say, by a crash), they are harmless.
    pub(crate) fn trim(&mut self) {
        let _ = self.cut_ahead();
    }

    /// Cuts the file at the end of its records, dropping the zeros written ahead.
    fn cut_ahead(&mut self) -> std::io::Result<()> {
        if self.allocated > self.end {
            self.file.set_len(self.end)?;
            self.allocated = self.end;
        }
        Ok(())
    }

    /// The file, for syncing a deferred append outside the log's lock.
    pub(crate) fn handle(&self) -> Arc<File> {
        self.file.clone()
    }

    /// Durably cuts the file before entry `from` (`base <= from <= next_index`): removed entries
    /// cannot come back after a crash. Also cuts any bytes past the last valid record.
    pub(crate) fn truncate_from(&mut self, from: u64) -> Result<()> {
        let keep = (from - self.base) as usize;
        let end = self.offsets.get(keep).copied().unwrap_or(self.end);
        self.file
            .set_len(end)
            .and_then(|_| self.file.sync_all())
            .ctx(|| format!("truncating {}", self.path.display()))?;
        self.offsets.truncate(keep);
        self.end = end;
        self.allocated = end;
        Ok(())
    }

    /// Reads entries `lo..hi` (all within this segment) with one positioned read, checking each
    /// record again: the disk may have changed since the segment was indexed.
    pub(crate) fn read(&self, lo: u64, hi: u64, out: &mut Vec<(u64, Bytes)>) -> Result<()> {
        debug_assert!(self.base <= lo && lo < hi && hi <= self.next_index());
        let start = self.offsets[(lo - self.base) as usize];
        let stop = self
            .offsets
            .get((hi - self.base) as usize)
            .copied()
            .unwrap_or(self.end);
        let mut buf = vec![0u8; (stop - start) as usize];
        self.file
            .read_exact_at(&mut buf, start)
            .ctx(|| format!("reading {}", self.path.display()))?;
        let buf = Bytes::from(buf);
        let mut pos = 0;
        for index in lo..hi {
            let bad = || {
                Error::corruption(
                    &self.path,
                    format!(
                        "entry {index} at offset {} changed since it was indexed",
                        start
                    ),
                )
            };
            let (payload, used) = framing::decode(&buf[pos..], MAX_PAYLOAD_LEN).ok_or_else(bad)?;
            if index_of(payload) != Some(index) {
                return Err(bad());
            }
            let skip = if self.version == VERSION_1 {
                8
            } else {
                CLAIM_LEN
            };
            if used < framing::HEADER_LEN + skip {
                return Err(bad());
            }
            out.push((
                index,
                buf.slice(pos + framing::HEADER_LEN + skip..pos + used),
            ));
            pos += used;
        }
        Ok(())
    }
}

/// True when `payload` is the record of entry `index` in a file of `version`. `u64::MAX` is
/// never appended (no index could follow it); refusing it keeps `next_index` from overflowing on
/// a crafted file.
fn record_fits(version: u32, payload: &[u8], index: u64) -> bool {
    let claim_ok = version == VERSION_1
        || payload
            .get(8..CLAIM_LEN)
            .and_then(|b| b.try_into().ok())
            .is_some_and(|b| u64::from_le_bytes(b) <= index);
    claim_ok && index != u64::MAX && index_of(payload) == Some(index)
}

/// Refuses the damage unless no later record of the segment claims the damaged entry durable.
fn check_claims(file: &File, path: &Path, d: &Damage) -> Result<()> {
    let mut tail = vec![0u8; d.bytes as usize];
    file.read_exact_at(&mut tail, d.offset)
        .ctx(|| format!("reading {}", path.display()))?;
    match claim::find(&tail, d.index, MAX_PAYLOAD_LEN) {
        None => Ok(()),
        Some((at, durable_next)) => Err(Error::CorruptRecord {
            path: path.to_path_buf(),
            offset: d.offset,
            detail: format!(
                "entry {} is damaged, but the record at byte offset {} claims every entry below \
                 {durable_next} was synced before it was written",
                d.index,
                d.offset + at as u64
            ),
        }),
    }
}

/// The rule for version-1 segments, which carry no claims: the damage is a torn tail only when
/// the bad record reaches the end of the file or is followed by nothing but zeros.
fn check_v1_tail(file: &File, path: &Path, d: &Damage, declared_len: Option<u32>) -> Result<()> {
    let extent = declared_len.map(|len| framing::HEADER_LEN as u64 + u64::from(len));
    let torn = match extent {
        Some(n) if n < d.bytes => zeros_from(file, path, d.offset + n, d.offset + d.bytes)?,
        // It reaches the end of the file, or its header does.
        _ => true,
    };
    if torn {
        return Ok(());
    }
    Err(Error::CorruptRecord {
        path: path.to_path_buf(),
        offset: d.offset,
        detail: format!(
            "entry {} is damaged and data follows it; a version-1 segment carries no durability \
             claims, so this cannot be told from the loss of synced entries",
            d.index
        ),
    })
}

fn open_rw(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .ctx(|| format!("opening {}", path.display()))
}

/// True when every byte of `from..to` of `file` is zero.
fn zeros_from(file: &File, path: &Path, mut from: u64, to: u64) -> Result<bool> {
    let mut buf = vec![0u8; 64 << 10];
    while from < to {
        let n = buf.len().min((to - from) as usize);
        file.read_exact_at(&mut buf[..n], from)
            .ctx(|| format!("reading {}", path.display()))?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        from += n as u64;
    }
    Ok(true)
}

fn index_of(payload: &[u8]) -> Option<u64> {
    payload.first_chunk::<8>().map(|b| u64::from_le_bytes(*b))
}

/// Reads and checks the header, returning the file's version; the base it records must be the
/// one the file name gives.
fn check_header(path: &Path, r: &mut impl Read, base: u64) -> Result<u32> {
    let bad = |detail: &str| Error::corruption(path, detail);
    let mut header = [0u8; HEADER_LEN as usize];
    let n = framing::read_full(r, &mut header).ctx(|| format!("reading {}", path.display()))?;
    if n < header.len() {
        return Err(bad("shorter than a segment header"));
    }
    let (prefix, record) = header.split_at(PREFIX_LEN);
    let prefix = prefix.try_into().map_err(|_| bad("bad header"))?;
    let version = framing::check_prefix(path, prefix, MAGIC, VERSION_1, VERSION)?;
    match framing::decode(record, 8).and_then(|(p, _)| index_of(p)) {
        Some(b) if b == base => Ok(version),
        Some(b) => Err(bad(&format!(
            "header says the segment starts at index {b}, its name says {base}"
        ))),
        None => Err(bad("segment header fails its checksum")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(range: std::ops::Range<u64>) -> Vec<(u64, Vec<u8>)> {
        range
            .map(|i| (i, format!("entry {i}").repeat(i as usize % 5).into_bytes()))
            .collect()
    }

    fn append(seg: &mut Segment, es: &[(u64, Vec<u8>)]) {
        let refs: Vec<(u64, &[u8])> = es.iter().map(|(i, d)| (*i, &d[..])).collect();
        // Synced appends: every entry before the batch is durable.
        let claim = seg.next_index();
        seg.append(&refs, claim, &mut Vec::new(), true).unwrap();
    }

    fn read_all(seg: &Segment) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        if !seg.is_empty() {
            seg.read(seg.base(), seg.next_index(), &mut out).unwrap();
        }
        out.into_iter().map(|(i, b)| (i, b.to_vec())).collect()
    }

    #[test]
    fn names() {
        assert_eq!(parse_name("00000000000000000007.seg"), Some(7));
        assert_eq!(
            path_for(Path::new("d"), 7),
            Path::new("d/00000000000000000007.seg")
        );
        for bad in [
            "7.seg",
            "0000000000000000000x.seg",
            "00000000000000000007.seg.tmp",
            "LOCK",
        ] {
            assert_eq!(parse_name(bad), None, "{bad}");
        }
        // Twenty digits above u64::MAX are not a name this code wrote.
        assert_eq!(parse_name("99999999999999999999.seg"), None);
    }

    #[test]
    fn append_read_reopen() {
        let d = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(d.path(), 10).unwrap();
        assert_eq!((seg.next_index(), seg.size()), (10, HEADER_LEN));
        let es = entries(10..30);
        append(&mut seg, &es[..5]);
        append(&mut seg, &es[5..]);
        assert_eq!(read_all(&seg), es);
        let mut part = Vec::new();
        seg.read(12, 14, &mut part).unwrap();
        assert_eq!(part.len(), 2);
        assert_eq!(part[1].0, 13);
        let (seg2, damage) = Segment::open(seg.path().to_path_buf(), 10).unwrap();
        assert_eq!(damage, None);
        assert_eq!(read_all(&seg2), es);
        assert_eq!(seg2.size(), seg.size());
    }

    #[test]
    fn torn_tail_and_corrupt_record_are_told_apart() {
        let d = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(d.path(), 0).unwrap();
        let es = entries(0..6);
        // One synced batch per entry: each record claims every earlier entry durable.
        for e in es.chunks(1) {
            append(&mut seg, e);
        }
        let path = seg.path().to_path_buf();
        // The records, without the zeros written ahead of them.
        let full = std::fs::read(&path).unwrap()[..seg.size() as usize].to_vec();
        let last = seg.offsets[5];
        let third = seg.offsets[2];
        // Cut inside the last record: an interrupted append.
        std::fs::write(&path, &full[..full.len() - 3]).unwrap();
        let (s, damage) = Segment::open(path.clone(), 0).unwrap();
        assert_eq!(s.next_index(), 5);
        let dmg = damage.unwrap();
        assert_eq!((dmg.offset, dmg.index), (last, 5));
        assert_eq!(dmg.bytes, full.len() as u64 - 3 - last);
        // Zeros after the records are space written ahead, not damage.
        let mut zeros = full.clone();
        zeros.extend_from_slice(&[0; 100]);
        std::fs::write(&path, &zeros).unwrap();
        let (s, damage) = Segment::open(path.clone(), 0).unwrap();
        assert_eq!(s.next_index(), 6);
        assert_eq!(damage, None);
        // A record cut short and followed by those zeros is an interrupted append.
        let mut cut = full[..full.len() - 10].to_vec();
        cut.extend_from_slice(&[0; 100]);
        std::fs::write(&path, &cut).unwrap();
        let (s, damage) = Segment::open(path.clone(), 0).unwrap();
        assert_eq!(s.next_index(), 5);
        assert_eq!(damage.unwrap().offset, last);
        // A flipped byte in the third record, with records after it that claim it synced.
        let mut flipped = full.clone();
        flipped[third as usize + 12] ^= 1;
        std::fs::write(&path, &flipped).unwrap();
        match Segment::open(path.clone(), 0).unwrap_err() {
            Error::CorruptRecord {
                path: p, offset, ..
            } => assert_eq!((p, offset), (path, third)),
            e => panic!("{e}"),
        }
    }

    #[test]
    fn damage_in_one_unsynced_batch_is_a_torn_tail() {
        let d = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(d.path(), 0).unwrap();
        append(&mut seg, &entries(0..2));
        // Written, never synced: each record claims only entries 0 and 1.
        let es = entries(2..8);
        let refs: Vec<(u64, &[u8])> = es.iter().map(|(i, d)| (*i, &d[..])).collect();
        seg.append(&refs, 2, &mut Vec::new(), false).unwrap();
        let third = seg.offsets[2];
        let path = seg.path().to_path_buf();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[third as usize + 12] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let (mut s, damage) = Segment::open(path.clone(), 0).unwrap();
        assert_eq!(s.next_index(), 2);
        assert_eq!(damage.unwrap().offset, third);
        // Cutting at the last good record leaves a clean file that appends continue.
        s.truncate_from(2).unwrap();
        append(&mut s, &es);
        let (s, damage) = Segment::open(path, 0).unwrap();
        assert_eq!(damage, None);
        assert_eq!(s.next_index(), 8);
    }

    #[test]
    fn appends_write_zeros_ahead_that_reopening_reuses_and_sealing_cuts() {
        let d = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(d.path(), 0).unwrap();
        let file_len = |s: &Segment| std::fs::metadata(s.path()).unwrap().len();
        let es = entries(0..40);
        append(&mut seg, &es[..1]);
        let ahead = file_len(&seg);
        assert_eq!(ahead, seg.size() + PREALLOC);
        // Later appends overwrite those zeros: the file does not grow.
        append(&mut seg, &es[1..20]);
        assert_eq!(file_len(&seg), ahead);
        let (mut seg, damage) = Segment::open(seg.path().to_path_buf(), 0).unwrap();
        assert_eq!(damage, None);
        assert_eq!(read_all(&seg), es[..20]);
        append(&mut seg, &es[20..]);
        assert_eq!(file_len(&seg), ahead);
        // An append past the zeros writes more ahead of itself.
        let big = vec![(40, vec![7u8; PREALLOC as usize])];
        append(&mut seg, &big);
        assert_eq!(file_len(&seg), seg.size() + PREALLOC);
        seg.seal().unwrap();
        assert_eq!(file_len(&seg), seg.size());
        let (mut seg, damage) = Segment::open(seg.path().to_path_buf(), 0).unwrap();
        assert_eq!(damage, None);
        assert_eq!(seg.next_index(), 41);
        // Truncation cuts the zeros with the records, so no old record lies beyond the end.
        seg.truncate_from(10).unwrap();
        assert_eq!(file_len(&seg), seg.size());
    }

    #[test]
    fn a_record_with_the_wrong_index_ends_the_segment() {
        let d = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(d.path(), 0).unwrap();
        append(&mut seg, &entries(0..2));
        // Framed correctly, but index 5 where 2 belongs, and claiming entry 2 durable.
        let mut buf = Vec::new();
        framing::frame(&mut buf, &[&5u64.to_le_bytes(), &3u64.to_le_bytes(), b"x"]);
        seg.file.write_all_at(&buf, seg.end).unwrap();
        let err = Segment::open(seg.path().to_path_buf(), 0).unwrap_err();
        assert!(matches!(err, Error::CorruptRecord { offset, .. } if offset == seg.end));
        // Claiming less, it is a torn tail.
        buf.clear();
        framing::frame(&mut buf, &[&5u64.to_le_bytes(), &2u64.to_le_bytes(), b"x"]);
        seg.file.write_all_at(&buf, seg.end).unwrap();
        let (s, damage) = Segment::open(seg.path().to_path_buf(), 0).unwrap();
        assert_eq!(s.next_index(), 2);
        assert_eq!(damage.unwrap().index, 2);
    }

    #[test]
    fn truncate_is_durable_and_reads_check_records() {
        let d = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(d.path(), 5).unwrap();
        let es = entries(5..15);
        append(&mut seg, &es);
        seg.truncate_from(9).unwrap();
        assert_eq!(seg.next_index(), 9);
        let (s, damage) = Segment::open(seg.path().to_path_buf(), 5).unwrap();
        assert_eq!(damage, None);
        assert_eq!(read_all(&s), es[..4]);
        // Damage after indexing is caught on read.
        let off = seg.offsets[1] + framing::HEADER_LEN as u64 + 8;
        seg.file.write_all_at(b"\xff", off).unwrap();
        let mut out = Vec::new();
        assert!(seg.read(5, 9, &mut out).unwrap_err().is_corruption());
        seg.truncate_from(5).unwrap();
        assert!(seg.is_empty());
        assert_eq!(std::fs::metadata(seg.path()).unwrap().len(), HEADER_LEN);
    }

    #[test]
    fn bad_headers_are_corruption() {
        let d = tempfile::tempdir().unwrap();
        let seg = Segment::create(d.path(), 3).unwrap();
        let path = seg.path().to_path_buf();
        let good = std::fs::read(&path).unwrap();
        // The name and the header disagree.
        assert!(Segment::open(path.clone(), 4).unwrap_err().is_corruption());
        for i in 0..good.len() {
            let mut bad = good.clone();
            bad[i] ^= 0x40;
            std::fs::write(&path, &bad).unwrap();
            let err = Segment::open(path.clone(), 3).unwrap_err();
            let version = (MAGIC.len()..PREFIX_LEN).contains(&i);
            assert_eq!(err.is_corruption(), !version, "byte {i}: {err}");
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(Segment::open(path, 3).unwrap_err().is_corruption());
    }
}
