//! The cluster's identity, and what a node with an empty data directory may do.
//!
//! A Raft voter must never forget its vote: one that lost its data directory and rejoined as a
//! voter could vote twice in one term and elect two leaders. And a node that finds nothing on its
//! disk must not form a new group over an object-store prefix whose tables belong to another.
//! So:
//!
//! - The group's **cluster id** (128 random bits, hex) is written once, when the group is formed,
//!   to `<prefix>/CLUSTER` in the object store and to `CLUSTER` in every member's data directory.
//!   A node whose directory names another cluster than the prefix refuses to start.
//! - Each node id that ever kept state over the prefix leaves a marker `<prefix>/node-<id>`,
//!   written before its Raft starts. A node that starts with an empty data directory and finds its
//!   marker was wiped: it **rejoins** (`REJOINING` in its directory, until cleared): in each
//!   range, the meta group included, it neither votes nor campaigns, whatever the membership
//!   says, until it has been a learner of that range's group since (the operator removed it from
//!   the voters and added it back; see the README). Then that replica's log and vote are its own
//!   again (`REJOINED` in the range's directory) and it may be promoted; the node's rejoin ends
//!   when every replica it holds has rejoined (see `Ranges::rejoin_with`).
//! - A node forms a group only when told (`--initial-cluster-state new`, the default, with
//!   `--peers` or alone) and only over a prefix holding no cluster; with `existing` (or `--join`)
//!   it waits to be added.
//!
//! Local file layout, version 1 (text, one `key=value` per line):
//! ```text
//! strata-cluster 1
//! cluster_id=<32 hex digits>
//! ```

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{bail, Context, Result};
use bytes::Bytes;
use lsm::object::{ObjectError, ObjectStore};

const LOCAL_FILE: &str = "CLUSTER";
const REJOIN_FILE: &str = "REJOINING";
const HEADER: &str = "strata-cluster 1";

/// `--initial-cluster-state`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClusterState {
    /// This node may form a new group (alone, or as the smallest id of `--peers`), over a prefix
    /// that holds no cluster.
    New,
    /// The group exists: never form one, wait to be added.
    Existing,
}

/// The cluster this node belongs to, and whether it is rejoining after losing its data.
pub struct Identity {
    data_dir: PathBuf,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    /// Known once the group is formed.
    cluster_id: Mutex<Option<String>>,
    /// The prefix held a cluster when this node started with an empty directory.
    existing_at_start: bool,
    rejoining: AtomicBool,
}

fn remote_key(prefix: &str) -> String {
    format!("{prefix}/CLUSTER")
}

fn marker_key(prefix: &str, node: u64) -> String {
    format!("{prefix}/node-{node}")
}

fn new_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

fn parse_local(path: &Path, text: &str) -> Result<String> {
    let mut lines = text.lines();
    if lines.next() != Some(HEADER) {
        bail!(
            "{} is not a strata cluster file of version 1",
            path.display()
        );
    }
    for l in lines {
        if let Some(id) = l.strip_prefix("cluster_id=") {
            if id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(id.to_string());
            }
        }
    }
    bail!("{} names no valid cluster_id", path.display())
}

fn parse_remote(key: &str, data: &[u8]) -> Result<String> {
    let id = std::str::from_utf8(data)
        .ok()
        .map(str::trim)
        .filter(|id| id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()))
        .with_context(|| format!("object {key} does not hold a cluster id"))?;
    Ok(id.to_string())
}

/// Writes `contents` to `path` durably (temporary file, fsync, rename, fsync of the directory).
pub(crate) fn write_durably(path: &Path, contents: &[u8]) -> Result<()> {
    use std::io::Write;
    let dir = path.parent().context("a file path has a parent")?;
    let tmp = path.with_extension("tmp");
    let mut f =
        std::fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(contents)
        .and_then(|()| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("renaming to {}", path.display()))?;
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("syncing {}", dir.display()))?;
    Ok(())
}

/// Whether `dir` holds any Raft or engine state (a directory from before cluster ids, say).
fn has_state(dir: &Path) -> bool {
    ["log", "sm"].iter().any(|sub| {
        std::fs::read_dir(dir.join(sub)).is_ok_and(|mut entries| entries.next().is_some())
    })
}

impl Identity {
    /// Checks this node's data directory against the object store prefix before Raft starts, and
    /// decides whether it is rejoining (see the module comment). `forming`: this node would form
    /// the group on this start.
    pub fn establish(
        data_dir: &Path,
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        node_id: u64,
        forming: bool,
    ) -> Result<Identity> {
        let local_path = data_dir.join(LOCAL_FILE);
        let local = match std::fs::read_to_string(&local_path) {
            Ok(t) => Some(parse_local(&local_path, &t)?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", local_path.display())),
        };
        let key = remote_key(prefix);
        let remote = match store.get(&key) {
            Ok(data) => Some(parse_remote(&key, &data)?),
            Err(ObjectError::NotFound(_)) => None,
            // A member restarting knows its cluster: it starts with the store down (what is
            // local and cached serves meanwhile), as it did before cluster ids. Only a node with
            // nothing on its disk needs the store to know what it may do.
            Err(e) if local.is_some() && !matches!(e, ObjectError::Rejected { .. }) => {
                tracing::warn!(error = %e, "object store unreachable at start: the cluster id is not checked against it");
                let rejoining = data_dir.join(REJOIN_FILE).exists();
                return Ok(Identity {
                    data_dir: data_dir.to_path_buf(),
                    store,
                    prefix: prefix.to_string(),
                    cluster_id: Mutex::new(local),
                    existing_at_start: false,
                    rejoining: AtomicBool::new(rejoining),
                });
            }
            Err(e) => {
                return Err(e).context(
                    "reading the cluster id from the object store (needed to start safely)",
                )
            }
        };
        let marker = marker_key(prefix, node_id);
        let was_member = match store.size(&marker) {
            Ok(_) => true,
            Err(ObjectError::NotFound(_)) => false,
            Err(e) => return Err(e).context("reading this node's marker in the object store"),
        };
        let rejoin_path = data_dir.join(REJOIN_FILE);
        let mut rejoining = rejoin_path.exists();
        // Set when this node starts with nothing over an existing cluster: it never names one.
        let mut existing_at_start = false;
        let cluster_id = match (local, remote) {
            (Some(l), Some(r)) if l != r => bail!(
                "{} belongs to cluster {l}, but the object store prefix {prefix:?} holds cluster {r}: \
                 this data directory and this object store do not go together",
                data_dir.display()
            ),
            (Some(l), Some(_)) => Some(l),
            (Some(l), None) => bail!(
                "{} belongs to cluster {l}, but the object store prefix {prefix:?} holds no \
                 cluster: wrong --object-prefix or store, or the store lost its objects",
                data_dir.display()
            ),
            // A directory from before cluster ids: it joins what the prefix holds.
            (None, Some(r)) if has_state(data_dir) => Some(r),
            (None, Some(r)) => {
                existing_at_start = true;
                if forming {
                    bail!(
                        "the object store prefix {prefix:?} already holds cluster {r}, and {} is \
                         empty: refusing to form a new group over it. To join that cluster, start \
                         with --initial-cluster-state existing (or --join) and have it added; to \
                         start a separate one, use another --object-prefix",
                        data_dir.display()
                    );
                }
                if was_member && !rejoining {
                    tracing::warn!(
                        node = node_id,
                        "this node kept state in cluster {r} before and its data directory is \
                         empty: it REJOINS without voting until it has been removed from the \
                         voters and added back as a learner"
                    );
                    write_durably(&rejoin_path, b"rejoining after losing the data directory\n")?;
                    rejoining = true;
                }
                Some(r)
            }
            (None, None) if has_state(data_dir) => {
                // The group predates cluster ids: name it now.
                Some(Self::publish(&*store, &key, new_id())?)
            }
            // The group is formed later (by this node or another); see `create`.
            (None, None) => None,
        };
        if let Some(id) = &cluster_id {
            write_durably(
                &local_path,
                format!("{HEADER}\ncluster_id={id}\n").as_bytes(),
            )?;
        }
        if !was_member {
            store
                .put(&marker, Bytes::from(format!("node {node_id}\n")))
                .context("writing this node's marker in the object store")?;
        }
        Ok(Identity {
            data_dir: data_dir.to_path_buf(),
            store,
            prefix: prefix.to_string(),
            cluster_id: Mutex::new(cluster_id),
            existing_at_start,
            rejoining: AtomicBool::new(rejoining),
        })
    }

    /// Writes `id` as the prefix's cluster id unless one is there, and returns the one there.
    fn publish(store: &dyn ObjectStore, key: &str, id: String) -> Result<String> {
        if store
            .put_if_absent(key, Bytes::from(format!("{id}\n")))
            .context("writing the cluster id to the object store")?
        {
            return Ok(id);
        }
        let data = store
            .get(key)
            .context("reading the cluster id from the object store")?;
        parse_remote(key, &data)
    }

    /// The cluster id, once known.
    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Names the group this node is about to form (or formed before a restart). Refused when the
    /// prefix held a cluster when this node started with nothing on its disk (that group exists
    /// already).
    pub fn create(&self) -> Result<String> {
        if let Some(id) = self.cluster_id() {
            if self.existing_at_start {
                bail!(
                    "the object store prefix {:?} already holds cluster {id}",
                    self.prefix
                );
            }
            return Ok(id);
        }
        let id = Self::publish(&*self.store, &remote_key(&self.prefix), new_id())?;
        self.adopt(&id)?;
        Ok(id)
    }

    /// Reads the cluster id from the object store once another node has formed the group
    /// (`Ok(false)`: not yet).
    pub fn learn(&self) -> Result<bool> {
        if self.cluster_id().is_some() {
            return Ok(true);
        }
        let key = remote_key(&self.prefix);
        match self.store.get(&key) {
            Ok(data) => {
                self.adopt(&parse_remote(&key, &data)?)?;
                Ok(true)
            }
            Err(ObjectError::NotFound(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    fn adopt(&self, id: &str) -> Result<()> {
        write_durably(
            &self.data_dir.join(LOCAL_FILE),
            format!("{HEADER}\ncluster_id={id}\n").as_bytes(),
        )?;
        *self.cluster_id.lock().unwrap_or_else(|p| p.into_inner()) = Some(id.to_string());
        Ok(())
    }

    /// True while this node rejoins after losing its data: it must not vote nor campaign.
    pub fn rejoining(&self) -> bool {
        self.rejoining.load(Ordering::SeqCst)
    }

    /// Ends the rejoin: this node has been a learner since it lost its data, so its log and
    /// vote are its own.
    pub fn rejoined(&self) -> Result<()> {
        let path = self.data_dir.join(REJOIN_FILE);
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e).with_context(|| format!("removing {}", path.display())),
        }
        std::fs::File::open(&self.data_dir)
            .and_then(|d| d.sync_all())
            .with_context(|| format!("syncing {}", self.data_dir.display()))?;
        self.rejoining.store(false, Ordering::SeqCst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lsm::object::LocalDirStore;

    fn store(dir: &Path) -> Arc<dyn ObjectStore> {
        Arc::new(LocalDirStore::open(dir).unwrap())
    }

    #[test]
    fn a_formed_group_is_named_in_the_store_and_every_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(&tmp.path().join("objects"));
        let (d1, d2) = (tmp.path().join("n1"), tmp.path().join("n2"));
        std::fs::create_dir_all(&d1).unwrap();
        std::fs::create_dir_all(&d2).unwrap();
        let one = Identity::establish(&d1, s.clone(), "g", 1, true).unwrap();
        let two = Identity::establish(&d2, s.clone(), "g", 2, false).unwrap();
        assert!(one.cluster_id().is_none() && !two.learn().unwrap());
        let id = one.create().unwrap();
        assert!(two.learn().unwrap());
        assert_eq!(two.cluster_id(), Some(id.clone()));
        // Restarted, both find their cluster; neither is rejoining, and the former may form
        // (openraft then finds its group initialized already).
        let again = Identity::establish(&d2, s.clone(), "g", 2, false).unwrap();
        assert_eq!(again.cluster_id(), Some(id.clone()));
        assert!(!again.rejoining());
        let former = Identity::establish(&d1, s.clone(), "g", 1, true).unwrap();
        assert_eq!(former.create().unwrap(), id);
    }

    #[test]
    fn an_empty_directory_over_an_existing_cluster_never_forms_a_group() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(&tmp.path().join("objects"));
        let d1 = tmp.path().join("n1");
        std::fs::create_dir_all(&d1).unwrap();
        Identity::establish(&d1, s.clone(), "g", 1, true)
            .unwrap()
            .create()
            .unwrap();
        std::fs::remove_dir_all(&d1).unwrap();
        std::fs::create_dir_all(&d1).unwrap();
        let e = Identity::establish(&d1, s.clone(), "g", 1, true)
            .err()
            .expect("forming over an existing cluster is refused");
        assert!(format!("{e:#}").contains("already holds cluster"), "{e:#}");
        // Joining instead, it rejoins without a vote; a restart keeps it so until cleared.
        let id = Identity::establish(&d1, s.clone(), "g", 1, false).unwrap();
        assert!(id.rejoining());
        assert!(id.create().is_err(), "the group exists");
        let id = Identity::establish(&d1, s.clone(), "g", 1, false).unwrap();
        assert!(id.rejoining());
        id.rejoined().unwrap();
        assert!(!Identity::establish(&d1, s.clone(), "g", 1, false)
            .unwrap()
            .rejoining());
        // A new node id over the same prefix is new, not rejoining.
        let d4 = tmp.path().join("n4");
        std::fs::create_dir_all(&d4).unwrap();
        assert!(!Identity::establish(&d4, s, "g", 4, false)
            .unwrap()
            .rejoining());
    }

    #[test]
    fn a_directory_of_another_cluster_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let d1 = tmp.path().join("n1");
        std::fs::create_dir_all(&d1).unwrap();
        let a = store(&tmp.path().join("a"));
        Identity::establish(&d1, a, "g", 1, true)
            .unwrap()
            .create()
            .unwrap();
        let b = store(&tmp.path().join("b"));
        let d9 = tmp.path().join("n9");
        std::fs::create_dir_all(&d9).unwrap();
        Identity::establish(&d9, b.clone(), "g", 9, true)
            .unwrap()
            .create()
            .unwrap();
        let e = Identity::establish(&d1, b, "g", 1, true)
            .err()
            .expect("another cluster's directory");
        assert!(format!("{e:#}").contains("do not go together"), "{e:#}");
    }

    #[test]
    fn a_member_restarts_with_the_store_down_but_an_empty_directory_does_not() {
        use lsm::object::{FaultConfig, FaultyStore};
        let tmp = tempfile::tempdir().unwrap();
        let objects = store(&tmp.path().join("objects"));
        let d1 = tmp.path().join("n1");
        std::fs::create_dir_all(&d1).unwrap();
        let id = Identity::establish(&d1, objects.clone(), "g", 1, true)
            .unwrap()
            .create()
            .unwrap();
        let down = Arc::new(FaultyStore::new(objects, 1));
        down.set_all(FaultConfig {
            error_rate: 1.0,
            ..FaultConfig::default()
        });
        let again = Identity::establish(&d1, down.clone(), "g", 1, true).unwrap();
        assert_eq!(again.cluster_id(), Some(id));
        let d2 = tmp.path().join("n2");
        std::fs::create_dir_all(&d2).unwrap();
        assert!(Identity::establish(&d2, down, "g", 2, false).is_err());
    }
}
