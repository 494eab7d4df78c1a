//! Command line, environment and defaults of the `strata` binary.

use std::net::SocketAddr;
use std::path::PathBuf;

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
    Serve(ServeArgs),
}

/// Every option is also read from the environment variable named beside it.
#[derive(Debug, Clone, Args)]
pub struct ServeArgs {
    /// Directory holding the node's Raft log, engine and (by default) object store.
    #[arg(long, env = "STRATA_DATA_DIR", default_value = "./strata-data")]
    pub data_dir: PathBuf,
    /// Address of the HTTP API.
    #[arg(long, env = "STRATA_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// This node's id in its Raft group.
    #[arg(long, env = "STRATA_NODE_ID", default_value_t = 1)]
    pub node_id: u64,
    /// Directory of the local object store holding the tables (default: DATA_DIR/objects).
    #[arg(long, env = "STRATA_OBJECT_DIR")]
    pub object_dir: Option<PathBuf>,
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
}

fn redirect_status(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n @ (301 | 302 | 307 | 308)) => Ok(n),
        _ => Err(format!("{s:?} is not one of 301, 302, 307, 308")),
    }
}
