//! Sources over a memtable, one table, and one sorted level.

use std::collections::VecDeque;
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::Source;
use crate::cache::TableCache;
use crate::memtable::Memtable;
use crate::sst::block::DecodedBlock;
use crate::sst::Table;
use crate::version::TableFile;
use crate::Result;

/// Where a source starts: at the first entry `>= key` (forward) or the last `<= key` (reverse);
/// `None` means the first (or last) entry.
pub(crate) type Start<'a> = Option<&'a [u8]>;

/// Copies memtable entries out in chunks, so no skip-list borrow outlives a call.
pub(crate) struct MemSource {
    mem: Arc<Memtable>,
    buf: Vec<(Bytes, Bytes)>,
    pos: usize,
    chunk: usize,
    reverse: bool,
}

impl MemSource {
    pub fn new(mem: Arc<Memtable>, start: Start<'_>, reverse: bool) -> Self {
        let mut s = MemSource {
            mem,
            buf: Vec::new(),
            pos: 0,
            chunk: 16,
            reverse,
        };
        let from = start.map_or(Bound::Unbounded, Bound::Included);
        s.mem.chunk(from, reverse, s.chunk, &mut s.buf);
        s
    }
}

impl Source for MemSource {
    fn valid(&self) -> bool {
        self.pos < self.buf.len()
    }
    fn key(&self) -> &[u8] {
        &self.buf[self.pos].0
    }
    fn key_bytes(&self) -> Bytes {
        self.buf[self.pos].0.clone()
    }
    fn value_bytes(&self) -> Bytes {
        self.buf[self.pos].1.clone()
    }
    fn advance(&mut self) -> Result<()> {
        self.pos += 1;
        if self.pos == self.buf.len() && self.buf.len() == self.chunk {
            let last = self.buf[self.pos - 1].0.clone();
            self.buf.clear();
            self.pos = 0;
            // Grow the chunk: short scans stay cheap, long scans amortise the re-seek.
            self.chunk = (self.chunk * 2).min(512);
            self.mem.chunk(
                Bound::Excluded(&last),
                self.reverse,
                self.chunk,
                &mut self.buf,
            );
        }
        Ok(())
    }
}

/// Walks one table block by block.
/// Bytes a scan of a cold table fetches per request: consecutive blocks are coalesced into one
/// ranged GET.
const COLD_READAHEAD: u64 = 256 << 10;

pub(crate) struct TableSource {
    table: Arc<Table>,
    block_idx: usize,
    block: Option<DecodedBlock>,
    pos: usize,
    reverse: bool,
    fill_cache: bool,
    /// Blocks of a cold table already fetched by read-ahead, in iteration order.
    ahead: VecDeque<(usize, Bytes)>,
}

impl TableSource {
    pub fn new(
        table: Arc<Table>,
        start: Start<'_>,
        reverse: bool,
        fill_cache: bool,
    ) -> Result<Self> {
        let n = table.data_blocks();
        let mut s = TableSource {
            table,
            block_idx: 0,
            block: None,
            pos: 0,
            reverse,
            fill_cache,
            ahead: VecDeque::new(),
        };
        match (start, reverse) {
            (None, false) => s.load(0, None, |_| 0)?,
            (None, true) => s.load(n - 1, None, |b| b.len().wrapping_sub(1))?,
            (Some(t), false) => {
                let b = s.table.find_block(t);
                if b < n {
                    s.load(b, Some(t), |blk| blk.lower_bound(t))?;
                }
            }
            (Some(t), true) => {
                let b = s.table.find_block(t).min(n - 1);
                s.load(b, None, |blk| blk.upper_bound(t).wrapping_sub(1))?;
            }
        }
        Ok(s)
    }

    /// Loads block `i` (for forward iteration from `from` when given) and positions with
    /// `pos_in`; then skips to the neighbouring block while the position falls outside (a
    /// `wrapping_sub` past zero means "before the first entry").
    fn load(
        &mut self,
        mut i: usize,
        from: Option<&[u8]>,
        pos_in: impl Fn(&DecodedBlock) -> usize,
    ) -> Result<()> {
        let n = self.table.data_blocks();
        let b = self.block_bytes(i)?;
        let blk = self.table.decode(i, b, from)?;
        let mut pos = pos_in(&blk);
        self.block = Some(blk);
        loop {
            let len = self.block.as_ref().map_or(0, |b| b.len());
            if pos < len {
                self.block_idx = i;
                self.pos = pos;
                return Ok(());
            }
            let next = if self.reverse {
                i.checked_sub(1)
            } else {
                Some(i + 1).filter(|&j| j < n)
            };
            let Some(j) = next else {
                self.block = None;
                return Ok(());
            };
            i = j;
            let b = self.block_bytes(i)?;
            let blk = self.table.decode(i, b, None)?;
            pos = if self.reverse {
                blk.len().wrapping_sub(1)
            } else {
                0
            };
            self.block = Some(blk);
        }
    }

    /// The payload of data block `i`. Local tables go through the block cache; cold tables
    /// use the cache when it has the block and otherwise fetch a run of blocks with one request
    /// (read-ahead), without caching them.
    fn block_bytes(&mut self, i: usize) -> Result<Bytes> {
        if !self.table.is_remote() {
            return self.table.block(i, self.fill_cache);
        }
        if let Some(pos) = self.ahead.iter().position(|(j, _)| *j == i) {
            self.ahead.drain(..pos);
            if let Some((_, b)) = self.ahead.pop_front() {
                return Ok(b);
            }
        }
        self.ahead.clear();
        if let Some(b) = self.table.cached_block(i) {
            return Ok(b);
        }
        self.ahead = self.table.read_run(i, self.reverse, COLD_READAHEAD)?.into();
        match self.ahead.pop_front() {
            Some((j, b)) if j == i => Ok(b),
            _ => Err(crate::Error::InvalidArgument(
                "internal: read-ahead did not start at the requested block".into(),
            )),
        }
    }

    fn block(&self) -> &DecodedBlock {
        self.block.as_ref().expect("valid source has a block")
    }
}

impl Source for TableSource {
    fn valid(&self) -> bool {
        self.block.is_some()
    }
    fn key(&self) -> &[u8] {
        self.block().key(self.pos)
    }
    fn key_bytes(&self) -> Bytes {
        self.block().key_bytes(self.pos)
    }
    fn value_bytes(&self) -> Bytes {
        self.block().value_bytes(self.pos)
    }
    fn advance(&mut self) -> Result<()> {
        let len = self.block().len();
        if self.reverse {
            if self.pos > 0 {
                self.pos -= 1;
                return Ok(());
            }
            match self.block_idx.checked_sub(1) {
                Some(i) => self.load(i, None, |b| b.len().wrapping_sub(1)),
                None => {
                    self.block = None;
                    Ok(())
                }
            }
        } else {
            if self.pos + 1 < len {
                self.pos += 1;
                return Ok(());
            }
            if self.block_idx + 1 < self.table.data_blocks() {
                self.load(self.block_idx + 1, None, |_| 0)
            } else {
                self.block = None;
                Ok(())
            }
        }
    }
}

/// Concatenates the disjoint, sorted tables of one level, opening each only when reached.
pub(crate) struct LevelSource {
    files: Vec<Arc<TableFile>>,
    idx: usize,
    cur: Option<TableSource>,
    tables: Arc<TableCache>,
    reverse: bool,
    fill_cache: bool,
}

impl LevelSource {
    pub fn new(
        files: Vec<Arc<TableFile>>,
        tables: Arc<TableCache>,
        start: Start<'_>,
        reverse: bool,
        fill_cache: bool,
    ) -> Result<Self> {
        use crate::key::cmp_internal;
        use std::cmp::Ordering::*;
        let idx = match (start, reverse) {
            (None, false) => 0,
            (None, true) => files.len().wrapping_sub(1),
            (Some(t), false) => files.partition_point(|f| cmp_internal(&f.meta.largest, t) == Less),
            (Some(t), true) => files
                .partition_point(|f| cmp_internal(&f.meta.smallest, t) != Greater)
                .wrapping_sub(1),
        };
        let mut s = LevelSource {
            files,
            idx,
            cur: None,
            tables,
            reverse,
            fill_cache,
        };
        s.open_from(start)?;
        Ok(s)
    }

    /// Opens the table at `idx` (positioned at `start`), moving on past tables with nothing left.
    fn open_from(&mut self, mut start: Start<'_>) -> Result<()> {
        self.cur = None;
        while let Some(f) = self.files.get(self.idx) {
            let table = self.tables.get(&f.meta)?;
            let src = TableSource::new(table, start, self.reverse, self.fill_cache)?;
            if src.valid() {
                self.cur = Some(src);
                return Ok(());
            }
            start = None;
            self.idx = if self.reverse {
                self.idx.wrapping_sub(1)
            } else {
                self.idx + 1
            };
        }
        Ok(())
    }
}

impl Source for LevelSource {
    fn valid(&self) -> bool {
        self.cur.is_some()
    }
    fn key(&self) -> &[u8] {
        self.cur.as_ref().map_or(&[], |c| c.key())
    }
    fn key_bytes(&self) -> Bytes {
        self.cur.as_ref().map_or_else(Bytes::new, |c| c.key_bytes())
    }
    fn value_bytes(&self) -> Bytes {
        self.cur
            .as_ref()
            .map_or_else(Bytes::new, |c| c.value_bytes())
    }
    fn advance(&mut self) -> Result<()> {
        let Some(c) = self.cur.as_mut() else {
            return Ok(());
        };
        c.advance()?;
        if !c.valid() {
            self.idx = if self.reverse {
                self.idx.wrapping_sub(1)
            } else {
                self.idx + 1
            };
            self.open_from(None)?;
        }
        Ok(())
    }
}
