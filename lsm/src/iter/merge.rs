//! K-way merge of sources with a binary heap of source indices.

use std::cmp::Ordering;

use bytes::Bytes;

use super::Source;
use crate::key::cmp_internal;
use crate::Result;

pub(crate) struct MergeIter {
    sources: Vec<Box<dyn Source>>,
    heap: Vec<usize>,
    reverse: bool,
}

impl MergeIter {
    pub fn new(sources: Vec<Box<dyn Source>>, reverse: bool) -> Self {
        let heap = (0..sources.len()).filter(|&i| sources[i].valid()).collect();
        let mut m = MergeIter {
            sources,
            heap,
            reverse,
        };
        for i in (0..m.heap.len() / 2).rev() {
            m.sift_down(i);
        }
        m
    }

    /// True when source `a` should come out before source `b`. Internal keys are unique across
    /// sources, so ties only arise between damaged inputs; the lower index (newer source) wins.
    #[inline]
    fn before(&self, a: usize, b: usize) -> bool {
        let o = cmp_internal(self.sources[a].key(), self.sources[b].key());
        let o = if self.reverse { o.reverse() } else { o };
        o == Ordering::Less || (o == Ordering::Equal && a < b)
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        loop {
            let l = 2 * i + 1;
            if l >= n {
                return;
            }
            let r = l + 1;
            let c = if r < n && self.before(self.heap[r], self.heap[l]) {
                r
            } else {
                l
            };
            if self.before(self.heap[c], self.heap[i]) {
                self.heap.swap(c, i);
                i = c;
            } else {
                return;
            }
        }
    }

    #[inline]
    pub fn valid(&self) -> bool {
        !self.heap.is_empty()
    }

    #[inline]
    pub fn key(&self) -> &[u8] {
        self.sources[self.heap[0]].key()
    }

    pub fn key_bytes(&self) -> Bytes {
        self.sources[self.heap[0]].key_bytes()
    }

    pub fn value_bytes(&self) -> Bytes {
        self.sources[self.heap[0]].value_bytes()
    }

    pub fn advance(&mut self) -> Result<()> {
        let top = self.heap[0];
        self.sources[top].advance()?;
        if !self.sources[top].valid() {
            let last = self.heap.len() - 1;
            self.heap.swap(0, last);
            self.heap.pop();
        }
        self.sift_down(0);
        Ok(())
    }
}
