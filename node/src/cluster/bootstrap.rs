//! Starting the node's ranges from its data directory, forming the cluster on first start
//! (the first range and the meta group, with the same members), and the meta group of a data
//! directory written before ranges existed.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use openraft::{BasicNode, Config, SnapshotPolicy};
use raftlog::{FIRST_RANGE, META_RANGE};

use crate::cluster::identity::{ClusterState, Identity};
use crate::cluster::meta::META_VOTERS;
use crate::cluster::ranges::{Ranges, Template};
use crate::ops::config::ServeArgs;
use crate::transport::client::Peers;

pub fn raft_config(args: &ServeArgs) -> Result<Arc<Config>> {
    let c = Config {
        cluster_name: "strata".into(),
        heartbeat_interval: args.heartbeat_ms,
        election_timeout_min: args.election_timeout_min_ms,
        election_timeout_max: args.election_timeout_max_ms,
        // The maintainer asks for a snapshot whenever the flushed point moves.
        snapshot_policy: SnapshotPolicy::Never,
        max_in_snapshot_log_to_keep: args.raft_keep_entries,
        ..Config::default()
    };
    Ok(Arc::new(c.validate().context("raft configuration")?))
}

/// How the node joins its cluster on first start.
enum Bootstrap {
    /// Form a cluster of these voters (this node has the smallest id among them).
    Form(BTreeMap<u64, BasicNode>),
    /// Another node forms it, or an admin adds this one.
    Wait,
}

fn bootstrap(args: &ServeArgs, advertise: &str) -> Result<Bootstrap> {
    if args.joining() || args.initial_cluster_state == ClusterState::Existing {
        return Ok(Bootstrap::Wait);
    }
    if args.peers.is_empty() {
        return Ok(Bootstrap::Form(BTreeMap::from([(
            args.node_id,
            BasicNode::new(advertise),
        )])));
    }
    let members: BTreeMap<u64, BasicNode> = args
        .peers
        .iter()
        .map(|(id, addr)| (*id, BasicNode::new(addr.clone())))
        .collect();
    anyhow::ensure!(
        members.len() == args.peers.len(),
        "--peers names a node id twice"
    );
    anyhow::ensure!(
        members.contains_key(&args.node_id),
        "--peers does not name this node (--node-id {}); a node joining later starts with --join",
        args.node_id
    );
    let first = members.keys().next().copied();
    Ok(if first == Some(args.node_id) {
        Bootstrap::Form(members)
    } else {
        Bootstrap::Wait
    })
}

/// The cluster's shared object store: an S3 bucket, or a local directory.
fn object_store(args: &ServeArgs) -> Result<Arc<dyn lsm::object::ObjectStore>> {
    if let Some(bucket) = &args.s3_bucket {
        let mut cfg = lsm::object::S3Config::new(bucket.clone());
        if let Some(e) = &args.s3_endpoint {
            cfg = cfg.with_endpoint(e.clone());
        }
        if let Some(r) = &args.s3_region {
            cfg = cfg.with_region(r.clone());
        }
        if let (Some(id), Some(secret)) = (&args.s3_access_key_id, &args.s3_secret_access_key) {
            cfg = cfg.with_static_credentials(id.clone(), secret.clone());
        }
        let store = lsm::object::S3Store::new(cfg)
            .with_context(|| format!("configuring S3 bucket {bucket}"))?;
        if args.s3_create_bucket {
            store
                .create_bucket_if_missing()
                .with_context(|| format!("creating S3 bucket {bucket}"))?;
        }
        return Ok(Arc::new(store));
    }
    let dir = args
        .object_dir
        .clone()
        .unwrap_or_else(|| args.data_dir.join("objects"));
    let store = lsm::object::LocalDirStore::open(&dir)
        .with_context(|| format!("opening the object store in {}", dir.display()))?;
    Ok(Arc::new(store))
}

/// The meta group's voters for a cluster of `members`: the first [`META_VOTERS`] by id.
fn meta_members(members: &BTreeMap<u64, BasicNode>) -> BTreeMap<u64, BasicNode> {
    members
        .iter()
        .take(META_VOTERS)
        .map(|(id, n)| (*id, n.clone()))
        .collect()
}

/// Starts this node's replica of the meta group (empty if new) and forms the group with the
/// first [`META_VOTERS`] of `members`; `Ok(false)` when it exists already (initialize refused).
pub async fn form_meta(ranges: &Arc<Ranges>, members: &BTreeMap<u64, BasicNode>) -> Result<bool> {
    let meta = ranges.start(META_RANGE, true).await?;
    match meta.replica.raft.initialize(meta_members(members)).await {
        Ok(()) => Ok(true),
        Err(e) => {
            tracing::debug!(error = %e, "not initializing: the meta group exists");
            Ok(false)
        }
    }
}

/// Starts the node's ranges; a node that forms its cluster on first start does so here.
/// Returns the ranges and the task that starts the children of splits (to be spawned).
pub async fn start(
    args: &ServeArgs,
    advertise: &str,
    peers: Peers,
) -> Result<(
    Arc<Ranges>,
    Arc<Identity>,
    impl std::future::Future<Output = ()>,
)> {
    let plan = bootstrap(args, advertise)?;
    let multi = args.joining() || !args.peers.is_empty();
    anyhow::ensure!(
        !multi || args.cluster_secret.is_some(),
        "--peers and --join need --cluster-secret (STRATA_CLUSTER_SECRET): nodes authenticate each other with it"
    );
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("creating {}", args.data_dir.display()))?;
    let store = object_store(args)?;
    let identity = {
        let (dir, store, prefix) = (
            args.data_dir.clone(),
            store.clone(),
            args.object_prefix.clone(),
        );
        let (id, forming) = (args.node_id, matches!(plan, Bootstrap::Form(_)));
        // The object store's calls block (S3's client runs its own runtime).
        tokio::task::spawn_blocking(move || Identity::establish(&dir, store, &prefix, id, forming))
            .await
            .context("checking the cluster identity")??
    };
    let identity = Arc::new(identity);
    let (ranges, born) = Ranges::new(Template {
        node_id: args.node_id,
        data_dir: args.data_dir.clone(),
        store,
        prefix: args.object_prefix.clone(),
        memtable_bytes: args.memtable_mb << 20,
        block_cache: lsm::BlockCache::new(args.block_cache_mb << 20),
        raft: raft_config(args)?,
        peers,
        lease: args.lease_duration(),
    });
    // The first range always runs (a single-group node's directory is its replica); the
    // others whose directories exist too.
    let mut ids = ranges.on_disk()?;
    if !ids.contains(&FIRST_RANGE) {
        ids.insert(0, FIRST_RANGE);
    }
    if identity.rejoining() {
        // Neither campaign nor vote in any range until re-added to it (see `Ranges::rejoin_with`).
        ranges.rejoin_with(identity.clone());
    }
    for id in ids {
        ranges.start(id, false).await?;
    }
    if let Bootstrap::Form(members) = plan {
        let named = identity.clone();
        let cluster = tokio::task::spawn_blocking(move || named.create())
            .await
            .context("naming the cluster")??;
        let first = ranges.start(FIRST_RANGE, false).await?;
        // An initialized node refuses, which is fine: the group exists.
        match first.replica.raft.initialize(members.clone()).await {
            Ok(()) => tracing::info!(cluster = %cluster, "formed a new cluster"),
            Err(e) => tracing::debug!(error = %e, "not initializing: the first range exists"),
        }
        form_meta(&ranges, &members).await?;
    }
    if !multi {
        let first = ranges.start(FIRST_RANGE, false).await?;
        first
            .replica
            .raft
            .wait(Some(Duration::from_secs(30)))
            .current_leader(args.node_id, "this node leads its group")
            .await
            .context("waiting for the node to lead its group")?;
    }
    Ok((ranges, identity, born))
}

/// A cluster written before ranges existed has no meta group: the smallest voter of the first
/// range forms one with the first range's voters (up to [`META_VOTERS`]); the others create
/// their replicas when its messages arrive.
pub async fn ensure_meta(ranges: Arc<Ranges>) {
    let Some(first) = ranges.get(FIRST_RANGE) else {
        return;
    };
    let mut rx = first.replica.raft.metrics();
    loop {
        if ranges.get(META_RANGE).is_some() {
            return;
        }
        let members = {
            let m = rx.borrow_and_update();
            let mem = m.membership_config.membership();
            let voters: BTreeMap<u64, BasicNode> = mem
                .voter_ids()
                .filter_map(|id| mem.get_node(&id).map(|n| (id, n.clone())))
                .collect();
            // Only once the first range has a leader: its membership is then the group's.
            m.current_leader.map(|_| voters)
        };
        if let Some(voters) = members {
            if voters.keys().next() == Some(&ranges.node_id()) {
                match form_meta(&ranges, &voters).await {
                    Ok(true) => {
                        tracing::info!("formed the meta group of a cluster written before ranges")
                    }
                    Ok(false) => {}
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "starting the meta group"),
                }
                return;
            }
            if !voters.contains_key(&ranges.node_id()) {
                return;
            }
        }
        if rx.changed().await.is_err() {
            return;
        }
    }
}

/// Until the cluster id is known (another node forms the cluster), looks for it in the object
/// store now and then and records it in the data directory.
pub async fn learn_cluster_id(identity: Arc<Identity>) {
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        let id = identity.clone();
        match tokio::task::spawn_blocking(move || id.learn()).await {
            Ok(Ok(true)) => return,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => tracing::warn!(error = %format!("{e:#}"), "reading the cluster id"),
            Err(_) => return,
        }
    }
}
