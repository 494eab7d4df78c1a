//! Leveled compaction picking: L0 by file count, deeper levels by size against targets that grow
//! by `level_size_multiplier` per level, round-robin over each level's key space.

use std::sync::Arc;

use crate::version::{TableFile, Version};
use crate::Options;

/// One unit of compaction work.
pub(crate) struct Compaction {
    pub level: usize,
    pub output_level: usize,
    pub inputs: Vec<Arc<TableFile>>,
    /// Overlapping files of the output level.
    pub next: Vec<Arc<TableFile>>,
    /// When set, a single file with nothing to merge moves down without being rewritten.
    pub allow_move: bool,
}

impl Compaction {
    pub fn is_trivial_move(&self) -> bool {
        self.allow_move && self.level > 0 && self.inputs.len() == 1 && self.next.is_empty()
    }
}

pub(crate) fn user_range<'a>(
    files: impl Iterator<Item = &'a Arc<TableFile>>,
) -> (Vec<u8>, Vec<u8>) {
    let mut lo: Option<&[u8]> = None;
    let mut hi: Option<&[u8]> = None;
    for f in files {
        let (s, l) = (f.meta.smallest_user(), f.meta.largest_user());
        lo = Some(lo.map_or(s, |x| x.min(s)));
        hi = Some(hi.map_or(l, |x| x.max(l)));
    }
    (
        lo.unwrap_or_default().to_vec(),
        hi.unwrap_or_default().to_vec(),
    )
}

pub(crate) fn level_target(opts: &Options, level: usize) -> u64 {
    let mut t = opts.max_bytes_for_level_base;
    for _ in 1..level {
        t = t.saturating_mul(opts.level_size_multiplier);
    }
    t
}

/// Score per level: above 1.0 the level needs compaction.
fn scores(v: &Version, opts: &Options) -> Vec<f64> {
    let last = v.levels.len() - 1;
    (0..last)
        .map(|l| {
            if l == 0 {
                v.levels[0].len() as f64 / opts.l0_compaction_trigger as f64
            } else {
                v.level_bytes(l) as f64 / level_target(opts, l) as f64
            }
        })
        .collect()
}

/// Bytes that compaction owes: what each level holds beyond its target (L0 counts in full once
/// it reaches its trigger). Drives the pending-bytes slowdown and stop limits.
pub(crate) fn pending_bytes(v: &Version, opts: &Options) -> u64 {
    let mut total = 0u64;
    if v.levels[0].len() >= opts.l0_compaction_trigger {
        total += v.level_bytes(0);
    }
    for l in 1..v.levels.len() - 1 {
        total += v.level_bytes(l).saturating_sub(level_target(opts, l));
    }
    total
}

/// The most urgent compaction, if any level is over its target.
pub(crate) fn pick(v: &Version, opts: &Options, pointers: &[Vec<u8>]) -> Option<Compaction> {
    let s = scores(v, opts);
    let (level, score) = s
        .iter()
        .copied()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(&b.1))?;
    if score < 1.0 {
        return None;
    }
    let inputs: Vec<Arc<TableFile>> = if level == 0 {
        // L0 files overlap each other: take them all, so no older version of a key stays behind
        // a newer one that moved down.
        v.levels[0].clone()
    } else {
        let files = &v.levels[level];
        let ptr = pointers.get(level).map(Vec::as_slice).unwrap_or(&[]);
        let f = files
            .iter()
            .find(|f| f.meta.smallest_user() > ptr)
            .or_else(|| files.first())?;
        vec![f.clone()]
    };
    let (lo, hi) = user_range(inputs.iter());
    let next = v.overlapping(level + 1, &lo, &hi);
    Some(Compaction {
        level,
        output_level: level + 1,
        inputs,
        next,
        allow_move: true,
    })
}
