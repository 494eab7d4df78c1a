//! Running the node: configuration, the HTTP listener and its guards, metrics, the read pool, rate limits and the admin CLI.

pub mod admin_cli;
pub mod config;
pub mod config_file;
pub mod guard;
pub mod http;
pub mod metrics;
pub mod ratelimit;
pub mod read_pool;
