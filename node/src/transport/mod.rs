//! Node-to-node calls: the client (Raft RPCs, forwarded writes and read indexes, with the cluster secret) and the server side of them.

pub mod batch;
pub mod client;
pub mod server;
pub mod wire;
