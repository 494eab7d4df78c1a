//! The openraft type configuration of a Strata Raft group.

use std::io::Cursor;

use super::command::{Command, Reply};

openraft::declare_raft_types!(
    /// Strata's openraft type configuration: log entries carry a [`Command`], applying one yields
    /// a [`Reply`], nodes are named by `u64` and addressed by [`openraft::BasicNode`].
    pub TypeConfig:
        D = Command,
        R = Reply,
        NodeId = u64,
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);
