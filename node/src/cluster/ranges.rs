//! The ranges this node holds a replica of: starting them (at boot, when a split creates one,
//! when a message names one this node lacks), finding them by id, and the index by key the
//! router reads.
//!
//! Layout of the data directory: the first range where a single-group node kept its group
//! (`log/`, `sm/` at the top, so such a directory opens as range 1 with nothing moved), every
//! other range, the meta group included, in `ranges/<id>/`. Range `n`'s tables are named under
//! `<prefix>.r<n>/` in the object store (range 1 keeps `<prefix>/`).

use std::collections::BTreeMap;
use std::ops::Bound;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use anyhow::{Context, Result};
use openraft::Config;
use raftlog::range::{create_child, create_empty, is_created, ChildSpec, SplitHook};
use raftlog::{MaintainerOptions, RangeDescriptor, Replica, FIRST_RANGE, META_RANGE};
use tokio::sync::mpsc;

use crate::cluster::identity::Identity;
use crate::cluster::lease::Leases;
use crate::cluster::range::Range;
use crate::transport::client::{Network, Peers};

/// Ranges this node creates on messages naming one it lacks, at most: a bound on what a
/// confused (or compromised) peer can make it allocate.
const MAX_RANGES: usize = 4096;

/// In a range's directory: this replica has been a learner of its group since the node lost its
/// data (see [`crate::cluster::identity`]), so its log and vote are its own again.
const REJOINED_FILE: &str = "REJOINED";

/// What starting a replica of any range needs.
pub struct Template {
    pub node_id: u64,
    pub data_dir: PathBuf,
    pub store: Arc<dyn lsm::object::ObjectStore>,
    pub prefix: String,
    pub memtable_bytes: usize,
    pub block_cache: lsm::BlockCache,
    pub raft: Arc<Config>,
    pub peers: Peers,
    pub lease: Duration,
}

impl Template {
    /// Where range `id` keeps its log and state machine.
    pub fn dir(&self, id: u64) -> PathBuf {
        if id == FIRST_RANGE {
            self.data_dir.clone()
        } else {
            self.data_dir.join("ranges").join(id.to_string())
        }
    }

    /// The prefix of range `id`'s table objects.
    pub fn object_prefix(&self, id: u64) -> String {
        if id == FIRST_RANGE {
            self.prefix.clone()
        } else {
            format!("{}.r{id}", self.prefix)
        }
    }

    fn engine(&self, id: u64) -> lsm::Options {
        lsm::Options {
            write_buffer_size: self.memtable_bytes,
            block_cache: Some(self.block_cache.clone()),
            cold_tier: Some(lsm::ColdTier::new(
                self.store.clone(),
                self.object_prefix(id),
            )),
            ..lsm::Options::default()
        }
    }

    fn maintainer(&self) -> MaintainerOptions {
        MaintainerOptions {
            seal_bytes: self.memtable_bytes,
            max_sealed: crate::cluster::range::MAX_SEALED,
            ..MaintainerOptions::default()
        }
    }

    fn backlog_limit(&self) -> usize {
        self.memtable_bytes * (crate::cluster::range::MAX_SEALED + 2)
    }
}

/// A child a split created here, to be started.
struct Born {
    id: u64,
    /// This node is the replica chosen to campaign first (so leaders spread over the nodes).
    campaign: bool,
}

/// The node's ranges.
pub struct Ranges {
    template: Template,
    by_id: RwLock<BTreeMap<u64, Arc<Range>>>,
    /// User ranges by start key, rebuilt when a range changed (see [`Ranges::index`]).
    index: RwLock<Index>,
    /// Serialises starting replicas: one start per range, ever.
    starting: tokio::sync::Mutex<()>,
    /// Serialises creating replica directories: a split's apply and a message of the child's
    /// group may both create the child here at once.
    creating: Arc<std::sync::Mutex<()>>,
    born: mpsc::UnboundedSender<Born>,
    /// Bumped when a range is added.
    added: AtomicU64,
    /// Leadership confirmations of every range this node leads, batched per peer.
    confirmer: Arc<crate::cluster::confirm::Confirmer>,
    /// While the node rejoins after losing its data: replicas started meanwhile rejoin too.
    rejoin: std::sync::Mutex<Option<Arc<Identity>>>,
}

#[derive(Default)]
struct Index {
    /// The sum of the ranges' change counters and `added` it was built at.
    built_at: u64,
    by_start: BTreeMap<Vec<u8>, (Arc<RangeDescriptor>, Arc<Range>)>,
}

impl Ranges {
    /// An empty set of ranges; `start_born` must run for splits to start their children.
    pub fn new(template: Template) -> (Arc<Ranges>, impl std::future::Future<Output = ()>) {
        let (born, rx) = mpsc::unbounded_channel();
        let confirmer = crate::cluster::confirm::Confirmer::new(template.peers.clone());
        let ranges = Arc::new(Ranges {
            confirmer,
            template,
            by_id: RwLock::default(),
            index: RwLock::default(),
            starting: tokio::sync::Mutex::new(()),
            creating: Arc::default(),
            born,
            added: AtomicU64::new(0),
            rejoin: std::sync::Mutex::new(None),
        });
        let weak = Arc::downgrade(&ranges);
        (ranges, start_born(weak, rx))
    }

    pub fn node_id(&self) -> u64 {
        self.template.node_id
    }

    /// The node lost its data and rejoins (see [`crate::cluster::identity`]): every replica
    /// started from now on without a [`REJOINED_FILE`] neither votes nor campaigns until it
    /// has been a learner of its group; once every replica here has, the node's rejoin ends.
    /// Per range, because a node that lost its data may have voted in any of its groups'
    /// current terms.
    pub fn rejoin_with(&self, identity: Arc<Identity>) {
        *self.rejoin.lock().unwrap_or_else(|p| p.into_inner()) = Some(identity);
    }

    fn rejoining_identity(&self) -> Option<Arc<Identity>> {
        self.rejoin
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The client of node-to-node calls.
    pub fn peers(&self) -> &Peers {
        &self.template.peers
    }

    /// The replica of range `id`, if this node has one running.
    pub fn get(&self, id: u64) -> Option<Arc<Range>> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .cloned()
    }

    /// Every range running here, by id (the meta group included).
    pub fn all(&self) -> Vec<Arc<Range>> {
        self.by_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The ids of the ranges whose directories exist here (started or not).
    pub fn on_disk(&self) -> Result<Vec<u64>> {
        let mut ids = Vec::new();
        if self.template.data_dir.join("sm").exists() || self.template.data_dir.join("log").exists()
        {
            ids.push(FIRST_RANGE);
        }
        let dir = self.template.data_dir.join("ranges");
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(ids),
            Err(e) => return Err(e).with_context(|| format!("listing {}", dir.display())),
        };
        for e in entries {
            let e = e.with_context(|| format!("listing {}", dir.display()))?;
            let Some(id) = e.file_name().to_str().and_then(|n| n.parse::<u64>().ok()) else {
                continue;
            };
            if id != FIRST_RANGE && is_created(&e.path()) {
                ids.push(id);
            }
        }
        ids.sort_unstable();
        Ok(ids)
    }

    /// Starts the replica of range `id` from its directory (creating the directory empty if
    /// `create`), unless it runs already. Returns it.
    pub async fn start(self: &Arc<Self>, id: u64, create: bool) -> Result<Arc<Range>> {
        if let Some(r) = self.get(id) {
            return Ok(r);
        }
        let _one = self.starting.lock().await;
        if let Some(r) = self.get(id) {
            return Ok(r);
        }
        let t = &self.template;
        let dir = t.dir(id);
        if id != FIRST_RANGE && !is_created(&dir) {
            anyhow::ensure!(create, "range {id} has no replica on this node");
            anyhow::ensure!(
                self.by_id.read().unwrap_or_else(|p| p.into_inner()).len() < MAX_RANGES,
                "this node holds {MAX_RANGES} ranges already"
            );
            let (d, creating) = (dir.clone(), self.creating.clone());
            tokio::task::spawn_blocking(move || {
                let _one = creating.lock().unwrap_or_else(|p| p.into_inner());
                create_empty(&d)
            })
            .await
            .context("creating an empty replica")??;
            tracing::info!(
                range = id,
                "created an empty replica for a range this node lacked"
            );
        }
        let leases = Arc::new(Leases::new(t.lease));
        let rejoin = self
            .rejoining_identity()
            .filter(|_| !dir.join(REJOINED_FILE).exists());
        // A rejoining replica starts with elections off, so it never campaigns on a log it
        // cannot vouch for (its votes are refused in `transport::server::vote`).
        let raft = match rejoin {
            Some(_) => Arc::new(Config {
                enable_elect: false,
                ..(*t.raft).clone()
            }),
            None => t.raft.clone(),
        };
        let replica = Replica::start_group(
            t.node_id,
            id,
            &dir,
            t.engine(id),
            raft,
            Network::new(t.peers.clone(), leases.clone(), id),
            t.maintainer(),
            Some(self.split_hook()),
        )
        .await
        .with_context(|| format!("starting the replica of range {id}"))?;
        let range = Arc::new(Range::new(
            id,
            Arc::new(replica),
            t.peers.clone(),
            leases,
            self.confirmer.clone(),
            t.backlog_limit(),
        ));
        if let Some(identity) = rejoin {
            range.set_rejoining(true);
            tokio::spawn(rejoin_range(
                Arc::downgrade(self),
                range.clone(),
                dir.join(REJOINED_FILE),
                identity,
            ));
        }
        self.by_id
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, range.clone());
        self.added.fetch_add(1, Ordering::AcqRel);
        Ok(range)
    }

    /// What a replica calls when it applies a split: creates the child here durably (before
    /// the split's apply returns) and queues it to be started.
    fn split_hook(self: &Arc<Self>) -> SplitHook {
        let weak = Arc::downgrade(self);
        Arc::new(move |spec: &ChildSpec| {
            let Some(ranges) = weak.upgrade() else {
                return Err(raftlog::Error::Raft("the node is stopping".into()));
            };
            let t = &ranges.template;
            let dir = t.dir(spec.desc.id);
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(|e| raftlog::Error::Io {
                    context: format!("creating {}", parent.display()),
                    source: e,
                })?;
            }
            let created = {
                let _one = ranges.creating.lock().unwrap_or_else(|p| p.into_inner());
                create_child(&dir, spec, t.node_id, t.engine(spec.desc.id))?
            };
            // The chosen replica campaigns first, so the leaders of consecutive children land
            // on different nodes. Not a replica that existed already (created empty for an
            // early message, or by this split before a restart): its group has a leader, whom
            // an election would only depose.
            let voters: Vec<u64> = spec.membership.voter_ids().collect();
            let chosen = voters
                .get((spec.desc.id as usize) % voters.len().max(1))
                .copied();
            let _ = ranges.born.send(Born {
                id: spec.desc.id,
                campaign: created && chosen == Some(t.node_id),
            });
            Ok(())
        })
    }

    /// The user range holding `key` as this node knows it, if any.
    pub fn route(&self, key: &[u8]) -> Option<(Arc<RangeDescriptor>, Arc<Range>)> {
        self.refresh_index();
        let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
        idx.by_start
            .range::<[u8], _>((Bound::Unbounded, Bound::Included(key)))
            .next_back()
            .filter(|(_, (d, _))| d.contains(key))
            .map(|(_, v)| v.clone())
    }

    /// The user range holding the keys just below `hi` (`None`: the last range), for reverse
    /// scans.
    pub fn route_below(&self, hi: Option<&[u8]>) -> Option<(Arc<RangeDescriptor>, Arc<Range>)> {
        self.refresh_index();
        let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
        let found = match hi {
            None => idx.by_start.iter().next_back(),
            Some(hi) => idx
                .by_start
                .range::<[u8], _>((Bound::Unbounded, Bound::Excluded(hi)))
                .next_back(),
        };
        found
            .filter(|(_, (d, _))| match (hi, &d.end) {
                (None, None) => true,
                (Some(hi), Some(end)) => hi <= end.as_slice() && hi > d.start.as_slice(),
                (Some(hi), None) => hi > d.start.as_slice(),
                (None, Some(_)) => false,
            })
            .map(|(_, v)| v.clone())
    }

    /// The user ranges as this node knows them, in key order.
    pub fn descriptors(&self) -> Vec<(Arc<RangeDescriptor>, Arc<Range>)> {
        self.refresh_index();
        let idx = self.index.read().unwrap_or_else(|p| p.into_inner());
        idx.by_start.values().cloned().collect()
    }

    fn changes(&self) -> u64 {
        let by_id = self.by_id.read().unwrap_or_else(|p| p.into_inner());
        by_id
            .values()
            .map(|r| r.replica.sm.range_changes())
            .fold(self.added.load(Ordering::Acquire), u64::wrapping_add)
    }

    /// Rebuilds the index when a range changed since it was built. Where two replicas here
    /// claim a key (a parent that has not applied its split yet beside its child that has), the
    /// one starting later wins: the child, whose picture is the newer.
    fn refresh_index(&self) {
        let now = self.changes();
        if self
            .index
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .built_at
            == now
        {
            return;
        }
        let mut by_start = BTreeMap::new();
        for r in self.all() {
            if r.id() == META_RANGE {
                continue;
            }
            if let Some(d) = r.replica.sm.range_arc() {
                by_start.insert(d.start.clone(), (d, r));
            }
        }
        let mut idx = self.index.write().unwrap_or_else(|p| p.into_inner());
        *idx = Index {
            built_at: now,
            by_start,
        };
    }

    /// Stops every replica's Raft.
    pub async fn shutdown(&self) {
        for r in self.all() {
            let _ = r.replica.raft.shutdown().await;
        }
    }
}

/// Starts the children splits create here, one at a time, as they are announced.
async fn start_born(ranges: std::sync::Weak<Ranges>, mut rx: mpsc::UnboundedReceiver<Born>) {
    while let Some(b) = rx.recv().await {
        let Some(ranges) = ranges.upgrade() else {
            return;
        };
        match ranges.start(b.id, false).await {
            Ok(r) if b.campaign => {
                // openraft 0.9 has no leader transfer; an election at once on the chosen
                // replica usually wins before the others' timers fire.
                if let Err(e) = r.replica.raft.trigger().elect().await {
                    tracing::debug!(range = b.id, error = %e, "campaign not started");
                }
            }
            Ok(_) => {}
            Err(e) => {
                tracing::error!(range = b.id, error = %format!("{e:#}"), "starting a range created by a split")
            }
        }
    }
}

/// Ends a replica's rejoin once it is a learner of its group (the operator took it out of the
/// voters and added it back), then the node's once no replica here rejoins any more.
async fn rejoin_range(
    ranges: std::sync::Weak<Ranges>,
    range: Arc<Range>,
    marker: PathBuf,
    identity: Arc<Identity>,
) {
    let mut rx = range.replica.raft.metrics();
    loop {
        let learner = {
            let m = rx.borrow_and_update();
            let mem = m.membership_config.membership();
            mem.get_node(&m.id).is_some() && !mem.voter_ids().any(|v| v == m.id)
        };
        if learner {
            break;
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
    let written = tokio::task::spawn_blocking(move || {
        crate::cluster::identity::write_durably(
            &marker,
            b"a learner since the node lost its data\n",
        )
    })
    .await;
    if let Err(e) = written.map_err(anyhow::Error::from).and_then(|r| r) {
        tracing::error!(range = range.id(), error = %format!("{e:#}"), "ending a range's rejoin");
        return;
    }
    range.set_rejoining(false);
    range.replica.raft.runtime_config().elect(true);
    tracing::info!(
        range = range.id(),
        "rejoined as a learner: this replica votes again once promoted"
    );
    let Some(ranges) = ranges.upgrade() else {
        return;
    };
    // Under the start lock: no replica starts (rejoining) while the node's rejoin ends.
    let _one = ranges.starting.lock().await;
    if ranges.all().iter().any(|r| r.rejoining()) || ranges.rejoining_identity().is_none() {
        return;
    }
    match tokio::task::spawn_blocking(move || identity.rejoined()).await {
        Ok(Ok(())) => {
            *ranges.rejoin.lock().unwrap_or_else(|p| p.into_inner()) = None;
            tracing::info!("every range here rejoined: the node's rejoin is over");
        }
        Ok(Err(e)) => tracing::error!(error = %format!("{e:#}"), "ending the node's rejoin"),
        Err(_) => {}
    }
}
