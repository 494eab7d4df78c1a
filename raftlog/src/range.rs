//! Ranges: a group's share of the key space, and the creation of a child range by a split.
//!
//! A group's state machine holds its [`RangeDescriptor`], saved with the tables and carried in
//! every snapshot: that copy is authoritative (a routing table elsewhere is only an index of
//! it). Writes to keys outside it are refused at apply ([`Reply::WrongRange`]), so a write
//! routed by a stale table never lands in a range that no longer owns its key, whatever the
//! router believed; a read checks the descriptor after its read barrier for the same reason.
//!
//! A [`Command::Split`] at log id *L = (t, P)* narrows the parent to `[start, key)` and creates
//! the child `[key, end)` on every replica applying it, without `initialize()`: the child's log
//! is purged up to *L* (its first entry will be *P + 1*, so `seq = log index` holds in both),
//! its state machine stands at *L* with the parent's membership, and its vote is this replica's
//! own at term *t*, so that the child's first election is in a term above every log id it holds.
//! In this version a split refuses a range holding live data at or after the split key (the
//! child starts empty); sharing the parent's tables with the child is a later step.
//!
//! [`Reply::WrongRange`]: crate::store::Reply::WrongRange
//! [`Command::Split`]: crate::store::Command::Split

use std::path::{Path, PathBuf};

use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, LogId, StoredMembership, Vote};
use serde::{Deserialize, Serialize};

use crate::store::LogStore;
use crate::StateMachine;

/// The id of the meta group: the range table and the node registry, never user keys.
pub const META_RANGE: u64 = 0;
/// The id of the first user range, the one a cluster is formed with (and the one a data
/// directory of a single-group node holds).
pub const FIRST_RANGE: u64 = 1;

/// A range: the keys `[start, end)` (`end: None` is unbounded), its id and epoch. The epoch is
/// bumped by every split and every membership change, so a router holding an older one knows
/// its picture of the range is out of date.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct RangeDescriptor {
    /// Unique in the cluster.
    pub id: u64,
    /// First key of the range.
    pub start: Vec<u8>,
    /// First key past the range; `None`: no end.
    pub end: Option<Vec<u8>>,
    /// Bumped by every split and membership change.
    pub epoch: u64,
}

impl RangeDescriptor {
    /// The descriptor of a group formed with `initialize()`: the whole key space, epoch 1.
    pub fn whole(id: u64) -> RangeDescriptor {
        RangeDescriptor {
            id,
            start: Vec::new(),
            end: None,
            epoch: 1,
        }
    }

    /// Whether `key` is in the range.
    pub fn contains(&self, key: &[u8]) -> bool {
        key >= self.start.as_slice() && self.end.as_deref().is_none_or(|e| key < e)
    }

    /// Whether a split at `key` would leave both sides non-empty.
    pub fn splits_at(&self, key: &[u8]) -> bool {
        key > self.start.as_slice() && self.contains(key)
    }
}

/// What a replica needs to create the child of a split.
#[derive(Debug, Clone)]
pub struct ChildSpec {
    /// The child's descriptor.
    pub desc: RangeDescriptor,
    /// The log id of the Split entry in the parent's log.
    pub at: LogId<u64>,
    /// The parent's membership at the split (the child's first).
    pub membership: openraft::Membership<u64, BasicNode>,
    /// The entries' clock at the split.
    pub now_ms: u64,
}

/// Called by a state machine applying a split, before the split's reply: creates the child
/// replica's directories durably (see [`create_child`]) and starts it. It must be idempotent:
/// a split is applied again after a restart that came before its flushed point.
pub type SplitHook = std::sync::Arc<dyn Fn(&ChildSpec) -> crate::Result<()> + Send + Sync>;

/// The marker a fully created replica directory holds: a directory without it is the
/// leftover of a crash during creation and is created again.
const CREATED: &str = "created";

/// Whether `dir` holds a replica that was fully created (by a split or empty).
pub fn is_created(dir: &Path) -> bool {
    dir.join(CREATED).exists()
}

/// Creates, durably, the directories (`log/`, `sm/`) of the child described by `spec` in `dir`,
/// as replica `me`. Returns `false` (and changes nothing) when `dir` already holds a replica,
/// created by this split before or empty on a message from the child's group.
pub fn create_child(
    dir: &Path,
    spec: &ChildSpec,
    me: u64,
    engine: lsm::Options,
) -> crate::Result<bool> {
    if is_created(dir) {
        return Ok(false);
    }
    let io = |what: &str, e: std::io::Error| crate::Error::Io {
        context: format!("{what} {}", dir.display()),
        source: e,
    };
    let tmp = staging(dir);
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io("removing a half-created replica", e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io("creating", e))?;
    {
        let (mut log, _) = LogStore::open(tmp.join("log"))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .map_err(|e| io("a runtime for the log", e))?;
        rt.block_on(async {
            log.purge(spec.at).await?;
            log.save_vote(&Vote::new(spec.at.leader_id.term, me)).await
        })
        .map_err(|e| crate::Error::Raft(format!("starting the child's log: {e}")))?;
        let sm = StateMachine::open(tmp.join("sm"), engine)?;
        let membership = StoredMembership::new(Some(spec.at), spec.membership.clone());
        sm.start_at(spec.at, membership, spec.now_ms, spec.desc.clone())?;
        // Dropping the last handle closes the engine (its manifest is synced as it goes).
        drop(sm);
    }
    finish(dir, &tmp)?;
    Ok(true)
}

/// Creates an empty replica in `dir` (nothing in its log, no descriptor): a replica of a group
/// this node heard of before it applied the split that creates it here. It is caught up by a
/// snapshot, which brings its descriptor. Returns `false` when `dir` already holds one.
pub fn create_empty(dir: &Path) -> crate::Result<bool> {
    if is_created(dir) {
        return Ok(false);
    }
    let tmp = staging(dir);
    let io = |what: &str, e: std::io::Error| crate::Error::Io {
        context: format!("{what} {}", dir.display()),
        source: e,
    };
    if tmp.exists() {
        std::fs::remove_dir_all(&tmp).map_err(|e| io("removing a half-created replica", e))?;
    }
    std::fs::create_dir_all(&tmp).map_err(|e| io("creating", e))?;
    finish(dir, &tmp)?;
    Ok(true)
}

fn staging(dir: &Path) -> PathBuf {
    let mut name = dir.file_name().unwrap_or_default().to_os_string();
    name.push(".creating");
    dir.with_file_name(name)
}

/// Marks `tmp` created and moves it to `dir`, durably.
fn finish(dir: &Path, tmp: &Path) -> crate::Result<()> {
    let io = |what: &str, e: std::io::Error| crate::Error::Io {
        context: format!("{what} {}", dir.display()),
        source: e,
    };
    let marker = tmp.join(CREATED);
    std::fs::write(&marker, b"1\n").map_err(|e| io("writing the created marker", e))?;
    std::fs::File::open(&marker)
        .and_then(|f| f.sync_all())
        .map_err(|e| io("syncing the created marker", e))?;
    sync_dir(tmp).map_err(|e| io("syncing", e))?;
    if dir.exists() {
        // An empty directory someone made (or a crash left) without the marker.
        std::fs::remove_dir_all(dir).map_err(|e| io("replacing", e))?;
    }
    std::fs::rename(tmp, dir).map_err(|e| io("renaming into place", e))?;
    if let Some(parent) = dir.parent() {
        sync_dir(parent).map_err(|e| io("syncing the parent directory", e))?;
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contains_and_splits_at() {
        let r = RangeDescriptor {
            id: 2,
            start: b"b".to_vec(),
            end: Some(b"m".to_vec()),
            epoch: 3,
        };
        assert!(!r.contains(b"a"));
        assert!(r.contains(b"b"));
        assert!(r.contains(b"lzz"));
        assert!(!r.contains(b"m"));
        assert!(
            !r.splits_at(b"b"),
            "a split at the start leaves the parent empty"
        );
        assert!(r.splits_at(b"c"));
        assert!(!r.splits_at(b"m"));
        let w = RangeDescriptor::whole(1);
        assert!(w.contains(b"") && w.contains(&[0xff; 100]));
        assert!(!w.splits_at(b""));
        assert!(w.splits_at(b"\0"));
    }
}
