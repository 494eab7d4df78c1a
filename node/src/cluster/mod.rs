//! The cluster layer: this node's ranges (their replicas, write batching, read indexes, leases), the router from keys to ranges, and the node's identity in its cluster. Only this layer touches replicas.

pub mod batcher;
pub mod bootstrap;
pub mod confirm;
pub mod forward;
pub mod identity;
pub mod lease;
pub mod meta;
pub mod range;
pub mod ranges;
pub mod reads;
pub mod router;
