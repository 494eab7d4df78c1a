//! Compaction output: tables cut at the target size, only between user keys, so that files of a
//! sorted level never share a user key.

use crate::key;
use crate::sst::TableBuilder;
use crate::version::FileMeta;
use crate::Result;

pub(crate) struct Outputs<'a> {
    target: u64,
    new_builder: Box<dyn FnMut() -> Result<(u64, TableBuilder)> + 'a>,
    cur: Option<(u64, TableBuilder)>,
    last_user_key: Vec<u8>,
    pub done: Vec<FileMeta>,
    pub bytes: u64,
}

impl<'a> Outputs<'a> {
    pub fn new(target: u64, new_builder: impl FnMut() -> Result<(u64, TableBuilder)> + 'a) -> Self {
        Outputs {
            target,
            new_builder: Box::new(new_builder),
            cur: None,
            last_user_key: Vec::new(),
            done: Vec::new(),
            bytes: 0,
        }
    }

    pub fn add(&mut self, ikey: &[u8], value: &[u8]) -> Result<()> {
        let uk = key::user_key(ikey);
        if let Some((_, b)) = &self.cur {
            if b.estimated_file_size() >= self.target && uk != self.last_user_key.as_slice() {
                self.finish_current()?;
            }
        }
        if self.cur.is_none() {
            self.cur = Some((self.new_builder)()?);
        }
        if let Some((_, b)) = self.cur.as_mut() {
            b.add(ikey, value)?;
        }
        self.last_user_key.clear();
        self.last_user_key.extend_from_slice(uk);
        Ok(())
    }

    fn finish_current(&mut self) -> Result<()> {
        if let Some((number, b)) = self.cur.take() {
            let (props, size) = b.finish()?;
            self.bytes += size;
            self.done.push(FileMeta::from_props(number, size, props));
        }
        Ok(())
    }

    pub fn finish(mut self) -> Result<(Vec<FileMeta>, u64)> {
        self.finish_current()?;
        Ok((std::mem::take(&mut self.done), self.bytes))
    }

    /// Paths of every file started, finished or not (to delete after a failure).
    pub fn started(&self) -> Vec<u64> {
        self.done
            .iter()
            .map(|m| m.number)
            .chain(self.cur.as_ref().map(|(n, _)| *n))
            .collect()
    }
}
