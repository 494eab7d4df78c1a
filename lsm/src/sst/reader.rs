//! Reads a table file through a memory map (layout in `sst/mod.rs`).

use std::cmp::Ordering;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::block::{self, DecodedBlock};
use super::filter::Filter;
use super::props::Properties;
use super::source::{self, Source};
use super::{BlockHandle, BLOCK_TRAILER_LEN, COMPRESSION_LZ4, COMPRESSION_NONE, FOOTER_LEN};
use crate::cache::{BlockCache, BlockKey};
use crate::coding::{u32_at, u64_at, Reader};
use crate::diskcache::{DiskCache, TableId};
use crate::error::IoContext;
use crate::key::cmp_internal;
use crate::object::ObjectStore;
use crate::{Error, Result};

/// An entry found by a point lookup: its internal key and its value.
pub type Entry = (Vec<u8>, Bytes);

pub(crate) struct IndexEntry {
    pub(crate) last_key: Bytes,
    pub(crate) handle: BlockHandle,
}

/// An open, verified table: footer, index, filter and properties are parsed at open; data blocks
/// are read on demand through the block cache.
pub struct Table {
    number: u64,
    path: PathBuf,
    src: Source,
    index: Vec<IndexEntry>,
    filter: Option<Filter>,
    props: Properties,
    cache: BlockCache,
    /// The table's identity in `cache` (see `cache::table_identity`).
    identity: u128,
    /// The disk cache of a cold table's data blocks, and the table's name in it.
    disk: Option<(DiskCache, TableId)>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("number", &self.number)
            .field("path", &self.path)
            .field("blocks", &self.index.len())
            .finish()
    }
}

/// Reads the footer at the end of `tail`: the handles of the filter, index and properties
/// blocks, after checking magic, checksum and version.
pub(crate) fn parse_footer(tail: &[u8], label: &Path) -> Result<[BlockHandle; 3]> {
    let corrupt = |d: String| Error::corruption(label, d);
    let footer = tail
        .len()
        .checked_sub(FOOTER_LEN)
        .map(|s| &tail[s..])
        .ok_or_else(|| corrupt("shorter than the footer".into()))?;
    if u64_at(footer, 56) != Some(super::MAGIC) {
        return Err(corrupt("bad magic number".into()));
    }
    if u32_at(footer, 52) != Some(crc32fast::hash(&footer[..52])) {
        return Err(corrupt("footer checksum mismatch".into()));
    }
    let version = u32_at(footer, 48).unwrap_or(0);
    if version != super::FORMAT_VERSION {
        return Err(corrupt(format!("unsupported format version {version}")));
    }
    let handle = |i: usize| BlockHandle {
        offset: u64_at(footer, i * 16).unwrap_or(u64::MAX),
        size: u64_at(footer, i * 16 + 8).unwrap_or(u64::MAX),
    };
    Ok([handle(0), handle(1), handle(2)])
}

/// Saves the metadata tail of a finished table (the bytes of its file) to `meta_path`, exactly
/// as `Table::open_remote` would after fetching it from an object holding the same bytes: a
/// table uploaded by this node never needs its metadata downloaded.
pub(crate) fn save_meta(file: &[u8], label: &Path, meta_path: &Path) -> Result<()> {
    let [fh, _, _] = parse_footer(file, label)?;
    let start = usize::try_from(fh.offset)
        .ok()
        .filter(|&s| s <= file.len())
        .ok_or_else(|| Error::corruption(label, "filter offset outside the file"))?;
    source::save(meta_path, file.len() as u64, fh.offset, &file[start..])
}

impl Table {
    /// Maps and validates the table at `path`. `cache_id` distinguishes databases sharing `cache`.
    pub fn open(path: &Path, number: u64, cache: BlockCache, cache_id: u64) -> Result<Table> {
        let f = std::fs::File::open(path).ctx(|| format!("opening table {}", path.display()))?;
        // SAFETY: tables are immutable once written and never modified in place; the map is
        // read-only. Truncation by another process is outside the engine's contract.
        let map =
            unsafe { memmap2::Mmap::map(&f) }.ctx(|| format!("mapping {}", path.display()))?;
        let src = Source::Local(Bytes::from_owner(map));
        let identity = crate::cache::table_identity(cache_id, number, None);
        Self::from_source(src, path.to_path_buf(), number, cache, identity)
    }

    /// Opens a table stored as object `key`. Its metadata comes from `meta_path` when a valid
    /// copy is saved there, otherwise from one suffix GET of `tail_hint` bytes (one more ranged
    /// GET if the metadata is larger), and is then saved to `meta_path`. Data blocks are read
    /// with one ranged GET each, through the block cache.
    pub fn open_remote(
        store: Arc<dyn ObjectStore>,
        key: &str,
        number: u64,
        cache: BlockCache,
        cache_id: u64,
        meta_path: Option<&Path>,
        tail_hint: u64,
    ) -> Result<Table> {
        let label = PathBuf::from(key);
        let identity = crate::cache::table_identity(cache_id, number, Some(key));
        if let Some(saved) = meta_path.and_then(|p| source::load(p, store.clone(), key)) {
            let t = Self::from_source(
                Source::Remote(saved),
                label.clone(),
                number,
                cache.clone(),
                identity,
            );
            match t {
                Ok(t) => return Ok(t),
                Err(e) if e.is_corruption() => {
                    tracing::warn!(key, error = %e, "saved table metadata unusable; fetching it again");
                }
                Err(e) => return Err(e),
            }
        }
        let remote = source::fetch(store, key, tail_hint, &label, |tail| {
            Ok(parse_footer(tail, &label)?[0].offset)
        })?;
        let t = Self::from_source(Source::Remote(remote), label, number, cache, identity)?;
        if let (Some(p), Source::Remote(r)) = (meta_path, &t.src) {
            // A saved copy only spares the next open a GET: the table is open either way.
            if let Err(e) = source::save(p, r.size, r.tail_start, &r.tail) {
                tracing::warn!(key, error = %e, "could not save a cold table's metadata locally");
            }
        }
        Ok(t)
    }

    /// A table over bytes held in memory (for the fuzz targets: the same checks as a file).
    pub(crate) fn from_bytes(bytes: Bytes, label: &Path, cache: BlockCache) -> Result<Table> {
        let identity = crate::cache::table_identity(0, 0, None);
        Self::from_source(
            Source::Local(bytes),
            label.to_path_buf(),
            0,
            cache,
            identity,
        )
    }

    fn from_source(
        src: Source,
        path: PathBuf,
        number: u64,
        cache: BlockCache,
        identity: u128,
    ) -> Result<Table> {
        let len = src.len();
        if len < FOOTER_LEN as u64 {
            return Err(Error::corruption(&path, "shorter than the footer"));
        }
        let footer = src.read(len - FOOTER_LEN as u64, len, &path)?;
        let [fh, ih, ph] = parse_footer(&footer, &path)?;
        let mut t = Table {
            number,
            path,
            src,
            index: Vec::new(),
            filter: None,
            props: Properties::default(),
            cache,
            identity,
            disk: None,
        };
        let corrupt = |t: &Table, d: &str| Error::corruption(&t.path, d.to_string());
        let fb = t.read_raw(fh)?;
        t.filter = Some(Filter::parse(&fb).ok_or_else(|| corrupt(&t, "malformed filter block"))?);
        let ib = t.read_raw(ih)?;
        t.index = parse_index(&ib).ok_or_else(|| corrupt(&t, "malformed index block"))?;
        let pb = t.read_raw(ph)?;
        t.props =
            Properties::decode(&pb).ok_or_else(|| corrupt(&t, "malformed properties block"))?;
        if t.index.is_empty() {
            return Err(corrupt(&t, "table has no data blocks"));
        }
        // Checked here, not only when a block is read: `read_run` adds the offsets and sizes of
        // neighbouring blocks before it reads any, and a damaged size would overflow there.
        for e in &t.index {
            t.block_end(e.handle)?;
        }
        Ok(t)
    }

    /// The table's file number.
    pub fn number(&self) -> u64 {
        self.number
    }

    /// The table's properties.
    pub fn properties(&self) -> &Properties {
        &self.props
    }

    /// Number of data blocks.
    pub fn data_blocks(&self) -> usize {
        self.index.len()
    }

    /// False when the filter proves the user key (by `filter_hash`) is absent.
    #[inline]
    pub fn may_contain(&self, hash: u64) -> bool {
        self.filter.as_ref().is_none_or(|f| f.may_contain(hash))
    }

    /// Verifies a block's checksum and returns its decompressed payload.
    fn read_raw(&self, h: BlockHandle) -> Result<Bytes> {
        let end = self.block_end(h)?;
        let raw = self.src.read(h.offset, end, &self.path)?;
        self.verify(raw, h.offset)
    }

    /// End offset of block `h` (trailer included), checked to lie before the footer.
    fn block_end(&self, h: BlockHandle) -> Result<u64> {
        h.offset
            .checked_add(h.size)
            .and_then(|e| e.checked_add(BLOCK_TRAILER_LEN as u64))
            .filter(|&e| e <= self.src.len() - FOOTER_LEN as u64)
            .ok_or_else(|| {
                Error::corruption(
                    &self.path,
                    format!("block at {}+{} outside the file", h.offset, h.size),
                )
            })
    }

    /// Checks the checksum of a block read with its trailer (at file offset `start`) and
    /// returns the decompressed payload.
    fn verify(&self, raw: Bytes, start: u64) -> Result<Bytes> {
        verify_block(raw, start, &self.path)
    }

    /// True when the table's bytes live in an object store.
    pub(crate) fn is_remote(&self) -> bool {
        matches!(self.src, Source::Remote(_))
    }

    /// Reads this cold table's data blocks through `disk` (a local table ignores it). The table
    /// is named there by its object key and a hash of its locally held metadata, which differs
    /// between tables that happen to reuse a key.
    pub(crate) fn with_disk_cache(mut self, disk: Option<DiskCache>) -> Table {
        if let (Some(d), Source::Remote(r)) = (disk, &self.src) {
            let fingerprint = xxhash_rust::xxh3::xxh3_64_with_seed(&r.tail, r.size);
            self.disk = Some((d, TableId::new(&r.key, fingerprint)));
        }
        self
    }

    /// Data block `i` if the block cache or the disk cache holds it. A disk hit is not added to
    /// the block cache: the callers are scans, which leave it alone.
    pub(crate) fn cached_block(&self, i: usize) -> Option<Bytes> {
        let h = self.index[i].handle;
        self.cache
            .get(&BlockKey {
                table: self.identity,
                offset: h.offset,
            })
            .or_else(|| self.disk_block(h))
    }

    /// Data block `h`, verified and decompressed, if the disk cache holds it intact.
    fn disk_block(&self, h: BlockHandle) -> Option<Bytes> {
        let (disk, id) = self.disk.as_ref()?;
        let end = self.block_end(h).ok()?;
        let raw = disk.get(id, h.offset, end - h.offset)?;
        match self.verify(raw, h.offset) {
            Ok(b) => Some(b),
            Err(e) => {
                // Only verified blocks are inserted and the record's checksums passed, so this
                // takes damage both checksums miss; still a miss, not an error.
                disk.reject(id, h.offset, &e);
                None
            }
        }
    }

    /// Reads data block `first` and the blocks after it (before it, when `reverse`) that fit in
    /// `max_bytes`, with one request, and returns them verified and decompressed in iteration
    /// order. Nothing is cached, in memory or on disk: a scan must not evict the point lookups'
    /// working set, least of all from the disk cache, whose FIFO eviction has no defence against
    /// one pass over a large range; and compaction, which reads its cold inputs this way, would
    /// fill the disk cache with tables it is about to delete. (Blocks the disk cache already holds
    /// are read from it, through `cached_block`.)
    pub(crate) fn read_run(
        &self,
        first: usize,
        reverse: bool,
        max_bytes: u64,
    ) -> Result<Vec<(usize, Bytes)>> {
        let h = |i: usize| self.index[i].handle;
        let len = |i: usize| h(i).size + BLOCK_TRAILER_LEN as u64;
        // Blocks are written back to back; only a contiguous run can be read at once.
        let adjacent = |a: usize, b: usize| h(a).offset + len(a) == h(b).offset;
        let (mut lo, mut hi, mut total) = (first, first, len(first));
        if reverse {
            while lo > 0 && adjacent(lo - 1, lo) && total + len(lo - 1) <= max_bytes {
                lo -= 1;
                total += len(lo);
            }
        } else {
            while hi + 1 < self.index.len()
                && adjacent(hi, hi + 1)
                && total + len(hi + 1) <= max_bytes
            {
                hi += 1;
                total += len(hi);
            }
        }
        let start = h(lo).offset;
        let raw = self.src.read(start, self.block_end(h(hi))?, &self.path)?;
        let mut out = Vec::with_capacity(hi - lo + 1);
        for i in lo..=hi {
            let off = (h(i).offset - start) as usize;
            out.push((
                i,
                self.verify(raw.slice(off..off + len(i) as usize), h(i).offset)?,
            ));
        }
        if reverse {
            out.reverse();
        }
        Ok(out)
    }

    /// Decodes data block `i` from its payload `b`, whole or (with `from`) from the restart
    /// point a forward iteration from that internal key needs.
    pub(crate) fn decode(&self, i: usize, b: Bytes, from: Option<&[u8]>) -> Result<DecodedBlock> {
        let d = match from {
            Some(t) => DecodedBlock::decode_from(b, t),
            None => DecodedBlock::decode(b),
        };
        d.ok_or_else(|| Error::corruption(&self.path, format!("malformed data block {i}")))
    }

    /// Data block `i`, through the block cache and, for a cold table, the disk cache (both
    /// filled only when `fill_cache`).
    pub(crate) fn block(&self, i: usize, fill_cache: bool) -> Result<Bytes> {
        let h = self.index[i].handle;
        let key = BlockKey {
            table: self.identity,
            offset: h.offset,
        };
        if let Some(b) = self.cache.get(&key) {
            return Ok(b);
        }
        let b = match (self.disk_block(h), &self.disk) {
            (Some(b), _) => b,
            (None, Some((disk, id))) => {
                let end = self.block_end(h)?;
                let raw = self.src.read(h.offset, end, &self.path)?;
                let b = self.verify(raw.clone(), h.offset)?;
                if fill_cache {
                    // Stored as fetched (compressed, trailer included): smaller on disk, and
                    // verified again by the checksum trailer whenever it is read back.
                    disk.insert(id, h.offset, &raw);
                }
                b
            }
            (None, None) => self.read_raw(h)?,
        };
        if fill_cache {
            self.cache.insert(key, b.clone());
        }
        Ok(b)
    }

    /// Decoded data block `i`, for iteration; with `from`, only the entries a forward iteration
    /// from that internal key can reach.
    pub(crate) fn decoded_block(
        &self,
        i: usize,
        from: Option<&[u8]>,
        fill_cache: bool,
    ) -> Result<DecodedBlock> {
        self.decode(i, self.block(i, fill_cache)?, from)
    }

    /// Index of the first data block whose last key is `>= target` (`data_blocks()` if none).
    pub(crate) fn find_block(&self, target: &[u8]) -> usize {
        self.index
            .partition_point(|e| cmp_internal(&e.last_key, target) == Ordering::Less)
    }

    /// The first entry with internal key `>= seek_key` if it belongs to the same user key:
    /// returns its internal key and value. The caller has already consulted the filter.
    pub fn get(&self, user_key: &[u8], seek_key: &[u8]) -> Result<Option<Entry>> {
        let i = self.find_block(seek_key);
        if i >= self.index.len() {
            return Ok(None);
        }
        let b = self.block(i, true)?;
        let found = block::seek(&b, seek_key)
            .map_err(|_| Error::corruption(&self.path, format!("malformed data block {i}")))?;
        Ok(found.filter(|(k, _)| crate::key::user_key(k) == user_key))
    }

    /// As [`get`](Self::get) when the block is in the block cache; `None` when answering would
    /// read the file or the object store.
    pub fn get_cached(&self, user_key: &[u8], seek_key: &[u8]) -> Option<Result<Option<Entry>>> {
        let i = self.find_block(seek_key);
        let Some(entry) = self.index.get(i) else {
            return Some(Ok(None));
        };
        let b = self.cache.get(&BlockKey {
            table: self.identity,
            offset: entry.handle.offset,
        })?;
        let found = block::seek(&b, seek_key)
            .map_err(|_| Error::corruption(&self.path, format!("malformed data block {i}")));
        Some(found.map(|f| f.filter(|(k, _)| crate::key::user_key(k) == user_key)))
    }

    /// Visits every entry in order (used by tools and tests; reads bypass the cache).
    pub fn for_each(&self, mut f: impl FnMut(&[u8], &[u8])) -> Result<()> {
        for i in 0..self.index.len() {
            let d = self.decoded_block(i, None, false)?;
            for j in 0..d.len() {
                f(d.key(j), d.value(j));
            }
        }
        Ok(())
    }
}

/// Checks the checksum of a block read with its trailer (at file offset `start`) and returns
/// the decompressed payload.
pub(crate) fn verify_block(raw: Bytes, start: u64, path: &Path) -> Result<Bytes> {
    let corrupt = |d: String| Error::corruption(path, d);
    if raw.len() < BLOCK_TRAILER_LEN {
        return Err(corrupt(format!("short block at {start}")));
    }
    let size = raw.len() - BLOCK_TRAILER_LEN;
    let payload = &raw[..size];
    let kind = raw[size];
    let mut crc = crc32fast::Hasher::new();
    crc.update(payload);
    crc.update(&[kind]);
    if u32_at(&raw, size + 1) != Some(crc.finalize()) {
        return Err(corrupt(format!("checksum mismatch in block at {start}")));
    }
    match kind {
        COMPRESSION_NONE => Ok(raw.slice(..size)),
        COMPRESSION_LZ4 => {
            let n = u32_at(payload, 0).ok_or_else(|| corrupt("short lz4 block".into()))? as usize;
            if n > super::MAX_BLOCK_LEN {
                return Err(corrupt(format!("lz4 block claims {n} bytes")));
            }
            let mut out = vec![0u8; n];
            match lz4_flex::block::decompress_into(&payload[4..], &mut out) {
                Ok(m) if m == n => Ok(Bytes::from(out)),
                _ => Err(corrupt(format!("lz4 block at {start} does not decompress"))),
            }
        }
        k => Err(corrupt(format!("unknown compression {k} at {start}"))),
    }
}

pub(crate) fn parse_index(b: &Bytes) -> Option<Vec<IndexEntry>> {
    let d = DecodedBlock::decode(b.clone())?;
    let mut out = Vec::with_capacity(d.len());
    for i in 0..d.len() {
        let mut r = Reader::new(d.value(i));
        let handle = BlockHandle {
            offset: r.varint()?,
            size: r.varint()?,
        };
        out.push(IndexEntry {
            last_key: d.key_bytes(i),
            handle,
        });
    }
    Some(out)
}
