//! Command line, environment and defaults of the `strata` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

use crate::cluster::identity::ClusterState;
use clap::{Args, Parser, Subcommand};

/// Strata: a replicated, tiered key-value store and URL shortener.
#[derive(Debug, Parser)]
#[command(name = "strata", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Runs a node. With no flags: a one-node group on ./strata-data, listening on
    /// 127.0.0.1:8080, tables in a local object store under the data directory.
    Serve(Box<ServeArgs>),
    /// Cluster administration through a running node's admin API.
    Admin(AdminArgs),
}

/// `strata admin`: talks to one node's `/admin` API (the node forwards nothing: membership
/// changes go to the leader, which `status` names).
#[derive(Debug, Clone, Args)]
pub struct AdminArgs {
    /// Base URL of the node to talk to.
    #[arg(long, env = "STRATA_NODE", default_value = "http://127.0.0.1:8080")]
    pub node: String,
    /// Bearer token of the node's write and admin APIs.
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    #[command(subcommand)]
    pub action: AdminAction,
}

#[derive(Debug, Clone, Subcommand)]
pub enum AdminAction {
    /// Leader, term, members, log and apply indexes, log and snapshot sizes.
    Status,
    /// Forms a new group of these voters (`ID=HOST:PORT` each) on a node started with --join.
    Init {
        #[arg(required = true, value_parser = peer)]
        members: Vec<(u64, String)>,
    },
    /// Adds a node as a learner (it receives the log, or a snapshot, but does not vote); waits
    /// until it has caught up.
    AddLearner {
        id: u64,
        /// The node's advertised HOST:PORT.
        addr: String,
        /// The range whose group the node joins (the first range by default).
        #[arg(long, default_value_t = raftlog::FIRST_RANGE)]
        range: u64,
        /// Every user range the node asked holds, one after the other (not the meta group).
        #[arg(long, conflicts_with = "range")]
        all_ranges: bool,
    },
    /// Makes exactly these nodes the voters (learners among them are promoted; voters left out
    /// become learners, or are removed with --remove).
    ChangeMembership {
        #[arg(required = true)]
        voters: Vec<u64>,
        /// Drop the nodes that stop being voters instead of keeping them as learners.
        #[arg(long)]
        remove: bool,
        /// The range whose voters change (the first range by default).
        #[arg(long, default_value_t = raftlog::FIRST_RANGE)]
        range: u64,
        /// Every user range the node asked holds, one after the other (not the meta group).
        #[arg(long, conflicts_with = "range")]
        all_ranges: bool,
    },
    /// Splits the range holding KEY at KEY (refused while that range holds data at or after
    /// KEY); a key that starts a range already changes nothing.
    Split { key: String },
    /// The ranges this node holds: keys, epoch, replicas, leader, size, rates.
    Ranges,
    /// The nodes of the cluster, with liveness, replicas and leaderships.
    Nodes,
}

/// What `--join` asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Join {
    /// `--join false` (from a file or the environment): form or restart as usual.
    No,
    /// `--join`: wait to be added.
    Wait,
    /// `--join ADDR`: wait to be added, and register through the member at ADDR.
    Via(String),
}

fn join_arg(s: &str) -> Result<Join, String> {
    match s {
        "" | "true" => Ok(Join::Wait),
        "false" => Ok(Join::No),
        addr => {
            peer(&format!("0={addr}"))?;
            Ok(Join::Via(addr.to_string()))
        }
    }
}

/// `ID=HOST:PORT`.
pub fn peer(s: &str) -> Result<(u64, String), String> {
    let (id, addr) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not ID=HOST:PORT"))?;
    let id = id
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("{id:?} is not a node id"))?;
    let addr = addr.trim();
    if addr.parse::<SocketAddr>().is_err() && !addr.contains(':') {
        return Err(format!("{addr:?} is not HOST:PORT"));
    }
    Ok((id, addr.to_string()))
}

/// Every option is also read from the environment variable named beside it, and from a TOML
/// file given with --config (keys are the option names, `data-dir` or `data_dir`; `peers` is an
/// array of "ID=HOST:PORT"). The command line wins over the environment, which wins over the
/// file.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// TOML file with any of these options.
    #[arg(long, env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory holding the node's Raft log, engine and (by default) object store.
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "./strata-data")]
    pub data_dir: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, env = "STRATA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// This node's id in its Raft group.
    #[arg(long, env = "STRATA_NODE_ID", default_value_t = 1)]
    pub node_id: u64,
    /// HOST:PORT other nodes reach this one at (default: the listen address).
    #[arg(long, env = "STRATA_ADVERTISE")]
    pub advertise: Option<String>,
    /// The group's founding voters, `ID=HOST:PORT` comma-separated, this node among them. On
    /// first start the node with the smallest id forms the group. Without --peers (and without
    /// --join) the node forms a one-node group.
    #[arg(long, env = "STRATA_PEERS", value_delimiter = ',', value_parser = peer)]
    pub peers: Vec<(u64, String)>,
    /// Start without forming a cluster: wait to be added by `strata admin add-learner` (or to
    /// be named by `strata admin init`). With ADDR (any member's HOST:PORT), also register in
    /// the cluster's node registry through it, so that `strata admin nodes` lists this node
    /// before it holds any replica.
    #[arg(
        long,
        env = "STRATA_JOIN",
        num_args = 0..=1,
        default_missing_value = "true",
        value_name = "ADDR",
        value_parser = join_arg
    )]
    pub join: Option<Join>,
    /// `new`: this node may form a group on first start (alone, or as the smallest id of
    /// --peers), never over an object-store prefix that holds a cluster already. `existing`: the
    /// group exists; never form one (as --join). A node whose data directory was lost rejoins
    /// without voting until it is re-added as a learner (see the README).
    #[arg(long, env = "STRATA_INITIAL_CLUSTER_STATE", value_enum, default_value_t = ClusterState::New)]
    pub initial_cluster_state: ClusterState,
    /// Secret shared by the group's nodes, required on every node-to-node call. Needed with
    /// --peers or --join; without one, this node refuses all node-to-node calls.
    #[arg(long, env = "STRATA_CLUSTER_SECRET", hide_env_values = true)]
    pub cluster_secret: Option<String>,
    /// Raft log entries kept behind a snapshot: a follower further behind than this catches up
    /// by installing the snapshot (the manifest) instead of replaying the log.
    #[arg(long, env = "STRATA_RAFT_KEEP_ENTRIES", default_value_t = 1000)]
    pub raft_keep_entries: u64,
    /// Directory of the local object store holding the tables (default: DATA_DIR/objects).
    /// Every node of a group must see the same store: on one machine, give them one directory;
    /// across machines, use S3.
    #[arg(long, env = "STRATA_OBJECT_DIR", conflicts_with = "s3_bucket")]
    pub object_dir: Option<PathBuf>,
    /// Prefix of the group's object names in the store.
    #[arg(long, env = "STRATA_OBJECT_PREFIX", default_value = "group-1")]
    pub object_prefix: String,
    /// Keep the tables in this S3 bucket instead of a local directory.
    #[arg(long, env = "STRATA_S3_BUCKET")]
    pub s3_bucket: Option<String>,
    /// S3-compatible endpoint (MinIO, R2, ...), e.g. http://127.0.0.1:9000; default AWS.
    #[arg(long, env = "STRATA_S3_ENDPOINT", requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
    /// S3 region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "STRATA_S3_REGION", requires = "s3_bucket")]
    pub s3_region: Option<String>,
    /// S3 access key id (default: the AWS environment and profile chain).
    #[arg(long, env = "STRATA_S3_ACCESS_KEY_ID", requires_all = ["s3_bucket", "s3_secret_access_key"])]
    pub s3_access_key_id: Option<String>,
    /// S3 secret access key.
    #[arg(
        long,
        env = "STRATA_S3_SECRET_ACCESS_KEY",
        hide_env_values = true,
        requires = "s3_access_key_id"
    )]
    pub s3_secret_access_key: Option<String>,
    /// Create the bucket at start when it does not exist.
    #[arg(long, env = "STRATA_S3_CREATE_BUCKET", requires = "s3_bucket")]
    pub s3_create_bucket: bool,
    /// Memtable size in MiB: the leader seals and uploads a table at this size.
    #[arg(long, env = "STRATA_MEMTABLE_MB", default_value_t = 64)]
    pub memtable_mb: usize,
    /// Block cache size in MiB.
    #[arg(long, env = "STRATA_BLOCK_CACHE_MB", default_value_t = 256)]
    pub block_cache_mb: usize,
    /// Bearer token required by writes and admin calls. Without one anybody who can reach the
    /// port may write (the node warns at start).
    #[arg(long, env = "STRATA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Status of short-link redirects: 301, 302, 307 or 308.
    #[arg(long, env = "STRATA_REDIRECT_STATUS", default_value_t = 302, value_parser = redirect_status)]
    pub redirect_status: u16,
    /// Base of the short URLs handed out (default: http://LISTEN).
    #[arg(long, env = "STRATA_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// Largest request body accepted, in bytes.
    #[arg(long, env = "STRATA_MAX_BODY_BYTES", default_value_t = 8 << 20)]
    pub max_body_bytes: usize,
    /// Links each client address (IPv6: each /64) may create per minute, in bursts of as
    /// many; 0: no limit. A batch counts each link.
    #[arg(long, env = "STRATA_LINK_RATE_PER_MINUTE", default_value_t = 600)]
    pub link_rate_per_minute: u32,
    /// Threads serving requests and Raft (0: one per core). Fewer than the cores leaves CPU to
    /// other processes, e.g. several nodes sharing one machine.
    #[arg(long, env = "STRATA_WORKER_THREADS", default_value_t = 0)]
    pub worker_threads: usize,
    /// Local address of this node's connections to other nodes (default: chosen by the OS),
    /// e.g. to pick the interface of a multi-homed host.
    #[arg(long, env = "STRATA_PEER_SOURCE_IP")]
    pub peer_source_ip: Option<std::net::IpAddr>,
    /// Raft heartbeat interval in milliseconds: a leader sends its followers AppendEntries at
    /// least this often.
    #[arg(long, env = "STRATA_HEARTBEAT_MS", default_value_t = 100)]
    pub heartbeat_ms: u64,
    /// Shortest Raft election timeout in milliseconds: a follower hearing nothing from its
    /// leader for a random time between this and --election-timeout-max-ms starts an election.
    #[arg(long, env = "STRATA_ELECTION_TIMEOUT_MIN_MS", default_value_t = 400)]
    pub election_timeout_min_ms: u64,
    /// Longest Raft election timeout in milliseconds; also how long a follower refuses votes
    /// after hearing from its leader, and a node refuses votes after it starts.
    #[arg(long, env = "STRATA_ELECTION_TIMEOUT_MAX_MS", default_value_t = 800)]
    pub election_timeout_max_ms: u64,
    /// Bound, in milliseconds, on how far two nodes' monotonic clocks may drift apart over one
    /// --election-timeout-min-ms. A leader's lease lasts the election timeout minus this past
    /// the send time of heartbeats a quorum acknowledged.
    #[arg(long, env = "STRATA_MAX_CLOCK_DRIFT_MS", default_value_t = 100)]
    pub max_clock_drift_ms: u64,
    /// Milliseconds a client has to send a request's headers, counted from when the connection
    /// waits for them (opened, or done with its previous request): slow or stalled clients
    /// (slowloris) are disconnected. Keep it above 4 s in a group: other nodes reuse an idle
    /// connection for up to 4 s.
    #[arg(long, env = "STRATA_HEADER_TIMEOUT_MS", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub header_timeout_ms: u64,
    /// Milliseconds a request may take, body included, before it is answered 503 `timeout` (a
    /// write may still be applied after that: its outcome is unknown).
    #[arg(long, env = "STRATA_REQUEST_TIMEOUT_MS", default_value_t = 30_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Milliseconds a connection may go without a byte read or written before it is closed.
    #[arg(long, env = "STRATA_IDLE_TIMEOUT_MS", default_value_t = 60_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// Connections open at once; beyond this, new ones wait in the listen backlog.
    #[arg(long, env = "STRATA_MAX_CONNECTIONS", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Client requests served at once (node-to-node calls are not counted); beyond this,
    /// requests are answered 503 `overloaded` with Retry-After.
    #[arg(long, env = "STRATA_MAX_IN_FLIGHT", default_value_t = 1024, value_parser = clap::value_parser!(u64).range(1..))]
    pub max_in_flight: u64,
    /// Milliseconds shutdown waits for requests in flight before closing their connections.
    #[arg(long, env = "STRATA_SHUTDOWN_TIMEOUT_MS", default_value_t = 10_000)]
    pub shutdown_timeout_ms: u64,
    /// Reads that may wait on disk or the object store (table blocks not in the cache) run on
    /// at most this many threads at once; beyond it they wait, within the request timeout.
    #[arg(long, env = "STRATA_READ_THREADS", default_value_t = 64)]
    pub read_threads: usize,
    /// Bytes of keys and values in one scan page, at most (a page holds at least one item).
    #[arg(long, env = "STRATA_SCAN_PAGE_BYTES", default_value_t = 4 << 20, value_parser = clap::value_parser!(u64).range(1..))]
    pub scan_page_bytes: u64,
}

impl ServeArgs {
    /// Whether the node joins an existing cluster (never forms one).
    pub fn joining(&self) -> bool {
        matches!(self.join, Some(Join::Wait | Join::Via(_)))
    }

    /// The member a joining node registers through, if named.
    pub fn join_via(&self) -> Option<&str> {
        match &self.join {
            Some(Join::Via(a)) => Some(a),
            _ => None,
        }
    }

    /// Refuses settings no parser can: an empty token or cluster secret (from any source) would
    /// look configured and protect nothing.
    pub fn validate(&self) -> anyhow::Result<()> {
        for (name, v) in [
            ("--token (STRATA_TOKEN)", &self.token),
            (
                "--cluster-secret (STRATA_CLUSTER_SECRET)",
                &self.cluster_secret,
            ),
        ] {
            if v.as_deref().is_some_and(|s| s.trim().is_empty()) {
                anyhow::bail!("{name} is empty: give a secret, or leave the option out");
            }
        }
        Ok(())
    }

    /// How long a leader's lease lasts past the send time a quorum acknowledged (none when the
    /// drift bound leaves nothing of the election timeout: lease reads then use a read index).
    pub fn lease_duration(&self) -> std::time::Duration {
        std::time::Duration::from_millis(
            self.election_timeout_min_ms
                .saturating_sub(self.max_clock_drift_ms),
        )
    }
}

fn redirect_status(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n @ (301 | 302 | 307 | 308)) => Ok(n),
        _ => Err(format!("{s:?} is not one of 301, 302, 307, 308")),
    }
}
