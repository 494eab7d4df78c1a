//! Writes a table file (layout in `sst/mod.rs`).

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use super::block::BlockBuilder;
use super::filter::Filter;
use super::props::Properties;
use super::{BlockHandle, COMPRESSION_LZ4, COMPRESSION_NONE, FORMAT_VERSION, MAGIC};
use crate::error::IoContext;
use crate::key::{self, ValueKind};
use crate::{Compression, Result};

/// Streams sorted internal-key entries into a new table file.
pub struct TableBuilder {
    out: BufWriter<File>,
    path: PathBuf,
    offset: u64,
    block_size: usize,
    compression: Compression,
    fp_rate: f64,
    data: BlockBuilder,
    index: BlockBuilder,
    hashes: Vec<u64>,
    last_user_key: Vec<u8>,
    props: Properties,
    scratch: Vec<u8>,
}

impl TableBuilder {
    /// Creates the file at `path` (which must not exist).
    pub fn create(
        path: &Path,
        block_size: usize,
        restart_interval: usize,
        compression: Compression,
        fp_rate: f64,
    ) -> Result<Self> {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
            .ctx(|| format!("creating table {}", path.display()))?;
        Ok(TableBuilder {
            out: BufWriter::with_capacity(256 << 10, file),
            path: path.to_path_buf(),
            offset: 0,
            block_size,
            compression,
            fp_rate,
            data: BlockBuilder::new(restart_interval),
            index: BlockBuilder::new(1),
            hashes: Vec::new(),
            last_user_key: Vec::new(),
            props: Properties {
                min_seq: u64::MAX,
                ..Default::default()
            },
            scratch: Vec::new(),
        })
    }

    /// Adds an entry; internal keys must be strictly increasing.
    pub fn add(&mut self, ikey: &[u8], value: &[u8]) -> Result<()> {
        let (ukey, trailer) = key::split(ikey);
        if self.props.entries == 0 || ukey != self.last_user_key.as_slice() {
            self.hashes.push(super::filter_hash(ukey));
            self.last_user_key.clear();
            self.last_user_key.extend_from_slice(ukey);
        }
        if self.props.entries == 0 {
            self.props.smallest = ikey.to_vec();
        }
        let seq = key::seq_of(trailer);
        self.props.min_seq = self.props.min_seq.min(seq);
        self.props.max_seq = self.props.max_seq.max(seq);
        self.props.entries += 1;
        if key::kind_byte(trailer) == ValueKind::Delete as u8 {
            self.props.deletions += 1;
        }
        self.props.raw_key_bytes += ikey.len() as u64;
        self.props.raw_value_bytes += value.len() as u64;
        self.data.add(ikey, value);
        if self.data.estimated_size() >= self.block_size {
            self.flush_data_block()?;
        }
        Ok(())
    }

    /// Number of entries added.
    pub fn entries(&self) -> u64 {
        self.props.entries
    }

    /// Bytes written so far plus the pending block; used to cut files at a target size.
    pub fn estimated_file_size(&self) -> u64 {
        self.offset + self.data.estimated_size() as u64
    }

    fn flush_data_block(&mut self) -> Result<()> {
        if self.data.is_empty() {
            return Ok(());
        }
        let last = self.data.last_key().to_vec();
        let raw = self.data.finish();
        let h = self.write_block(&raw, self.compression)?;
        self.props.data_blocks += 1;
        let mut v = Vec::with_capacity(16);
        crate::coding::put_varint(&mut v, h.offset);
        crate::coding::put_varint(&mut v, h.size);
        self.index.add(&last, &v);
        self.props.largest = last;
        Ok(())
    }

    fn write_block(&mut self, raw: &[u8], compression: Compression) -> Result<BlockHandle> {
        let kind = match compression {
            Compression::Lz4 => {
                self.scratch.clear();
                self.scratch
                    .extend_from_slice(&(raw.len() as u32).to_le_bytes());
                let bound = lz4_flex::block::get_maximum_output_size(raw.len());
                self.scratch.resize(4 + bound, 0);
                let n = lz4_flex::block::compress_into(raw, &mut self.scratch[4..])
                    .map_err(|e| crate::Error::InvalidArgument(format!("lz4: {e}")))?;
                self.scratch.truncate(4 + n);
                // Keep the block raw unless compression saves at least 1/8.
                if self.scratch.len() < raw.len() - raw.len() / 8 {
                    COMPRESSION_LZ4
                } else {
                    COMPRESSION_NONE
                }
            }
            Compression::None => COMPRESSION_NONE,
        };
        let payload: &[u8] = if kind == COMPRESSION_LZ4 {
            &self.scratch
        } else {
            raw
        };
        let mut crc = crc32fast::Hasher::new();
        crc.update(payload);
        crc.update(&[kind]);
        let handle = BlockHandle {
            offset: self.offset,
            size: payload.len() as u64,
        };
        let path = &self.path;
        self.out
            .write_all(payload)
            .and_then(|_| self.out.write_all(&[kind]))
            .and_then(|_| self.out.write_all(&crc.finalize().to_le_bytes()))
            .ctx(|| format!("writing table {}", path.display()))?;
        self.offset += payload.len() as u64 + super::BLOCK_TRAILER_LEN as u64;
        Ok(handle)
    }

    /// Writes filter, index, properties and footer, syncs the file, and returns the properties
    /// and the file size. An empty table is an error (callers never build one).
    pub fn finish(mut self) -> Result<(Properties, u64)> {
        if self.props.entries == 0 {
            return Err(crate::Error::InvalidArgument(
                "cannot finish an empty table".into(),
            ));
        }
        self.flush_data_block()?;
        let filter = Filter::build(&self.hashes, self.fp_rate);
        let fh = self.write_block(&filter, Compression::None)?;
        let index = self.index.finish();
        let ih = self.write_block(&index, Compression::None)?;
        let props = self.props.encode();
        let ph = self.write_block(&props, Compression::None)?;
        let mut footer = Vec::with_capacity(super::FOOTER_LEN);
        for h in [fh, ih, ph] {
            footer.extend_from_slice(&h.offset.to_le_bytes());
            footer.extend_from_slice(&h.size.to_le_bytes());
        }
        footer.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        footer.extend_from_slice(&crc32fast::hash(&footer).to_le_bytes());
        footer.extend_from_slice(&MAGIC.to_le_bytes());
        let path = self.path.clone();
        self.out
            .write_all(&footer)
            .ctx(|| format!("writing table {}", path.display()))?;
        let file = self.out.into_inner().map_err(|e| {
            crate::Error::io(format!("flushing {}", path.display()), e.into_error())
        })?;
        file.sync_all()
            .ctx(|| format!("syncing table {}", path.display()))?;
        let size = self.offset + footer.len() as u64;
        Ok((self.props, size))
    }

    /// Path of the file being written.
    pub fn path(&self) -> &Path {
        &self.path
    }
}
