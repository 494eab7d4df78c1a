//! The write-ahead log: one segment file per memtable, named `NNNNNN.wal`.
//!
//! Format version 1: a segment is a sequence of framed records (see `framing`), one per committed
//! write batch:
//! ```text
//! payload := seq u64 LE | batch representation (see `batch`)
//! ```
//! Group commit writes the records of every batch in a group with one `write` and, if any writer
//! asked for it, one `fdatasync`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::IoContext;
use crate::framing::{self, Records};
use crate::Result;

pub(crate) fn segment_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:06}.wal"))
}

/// The open tail segment.
pub(crate) struct WalWriter {
    file: File,
    number: u64,
    path: PathBuf,
    buf: Vec<u8>,
}

impl WalWriter {
    /// Creates segment `number`; the directory entry is made durable so a synced record in it
    /// survives power loss.
    pub(crate) fn create(dir: &Path, number: u64) -> Result<Self> {
        let path = segment_path(dir, number);
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .ctx(|| format!("creating WAL segment {}", path.display()))?;
        crate::fsutil::sync_dir(dir)?;
        Ok(WalWriter {
            file,
            number,
            path,
            buf: Vec::with_capacity(64 << 10),
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
        for (seq, rep) in records {
            framing::frame_parts(&mut self.buf, &[&seq.to_le_bytes(), rep]);
        }
        self.file
            .write_all(&self.buf)
            .ctx(|| format!("appending to {}", self.path.display()))?;
        if sync {
            self.sync()?;
        }
        Ok(self.buf.len())
    }

    pub(crate) fn sync(&mut self) -> Result<()> {
        self.file
            .sync_data()
            .ctx(|| format!("syncing {}", self.path.display()))
    }
}

/// What replaying one segment found.
#[derive(Debug, Default)]
pub(crate) struct SegmentReplay {
    pub records: u64,
    /// Bytes after the last valid record (torn or corrupt tail).
    pub dropped: u64,
    /// True when the dropped bytes can only be an interrupted final append (the normal result of
    /// a crash), false when valid-looking data followed the damage.
    pub torn_tail: bool,
}

/// Replays the valid prefix of a segment, calling `apply(seq, rep)` per record. A record whose
/// frame is intact but whose body does not decode counts as damage: replay stops before it.
pub(crate) fn replay_segment(
    path: &Path,
    apply: impl FnMut(u64, &[u8]) -> Option<()>,
) -> Result<SegmentReplay> {
    let data = std::fs::read(path).ctx(|| format!("reading WAL segment {}", path.display()))?;
    Ok(replay_bytes(&data, apply))
}

/// [`replay_segment`] over a segment's bytes.
pub(crate) fn replay_bytes(
    data: &[u8],
    mut apply: impl FnMut(u64, &[u8]) -> Option<()>,
) -> SegmentReplay {
    let mut recs = Records::new(data);
    let mut out = SegmentReplay::default();
    let mut valid = 0usize;
    for payload in recs.by_ref() {
        let Some(seq) = crate::coding::u64_at(payload, 0) else {
            break;
        };
        if apply(seq, &payload[8..]).is_none() {
            break;
        }
        out.records += 1;
        valid += framing::HEADER_LEN + payload.len();
    }
    out.dropped = (data.len() - valid) as u64;
    out.torn_tail = framing::is_torn_tail(data, valid);
    out
}

/// The segment number of a file name like `000012.wal`.
pub(crate) fn parse_segment_name(name: &str) -> Option<u64> {
    name.strip_suffix(".wal")?.parse().ok()
}
