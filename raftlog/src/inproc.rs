//! An in-process transport for a Raft group whose nodes share one process: for tests,
//! simulations and benchmarks. Every RPC goes through a [`Router`] that can cut links, lose
//! requests and replies, and delay delivery, so the same code exercises partitions and message
//! loss without sockets.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use openraft::error::{InstallSnapshotError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{AnyError, BasicNode, Raft};
use rand::Rng;

use crate::store::TypeConfig;

/// What the network does to messages.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// Directed links that deliver nothing.
    pub cut: HashSet<(u64, u64)>,
    /// Chance, per message and per reply, that it is lost (0.0 to 1.0).
    pub drop_rate: f64,
    /// Each message waits up to this long before delivery.
    pub max_delay: Duration,
}

/// Routes RPCs between the nodes of one process.
#[derive(Default)]
pub struct Router {
    nodes: Mutex<HashMap<u64, Raft<TypeConfig>>>,
    faults: Mutex<Faults>,
}

impl Router {
    /// Replaces the faults in effect.
    pub fn set_faults(&self, f: Faults) {
        *self.faults() = f;
    }

    /// Makes `raft` reachable as node `id` (replacing an earlier instance).
    pub fn add(&self, id: u64, raft: Raft<TypeConfig>) {
        self.nodes().insert(id, raft);
    }

    /// Makes node `id` unreachable, as a crashed process is.
    pub fn remove(&self, id: u64) {
        self.nodes().remove(&id);
    }

    /// The network factory node `from` gives its Raft.
    pub fn factory(self: &Arc<Self>, from: u64) -> NetFactory {
        NetFactory {
            from,
            router: self.clone(),
        }
    }

    fn faults(&self) -> MutexGuard<'_, Faults> {
        self.faults.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn nodes(&self) -> MutexGuard<'_, HashMap<u64, Raft<TypeConfig>>> {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Cuts every link between `id` and the nodes of `all`.
    pub fn isolate(&self, id: u64, all: &[u64]) {
        let mut f = self.faults();
        for &o in all.iter().filter(|&&o| o != id) {
            f.cut.insert((id, o));
            f.cut.insert((o, id));
        }
    }

    /// Restores every cut link.
    pub fn heal(&self) {
        self.faults().cut.clear();
    }

    fn lost(&self, from: u64, to: u64) -> bool {
        let f = self.faults();
        f.cut.contains(&(from, to))
            || (f.drop_rate > 0.0 && rand::thread_rng().gen_bool(f.drop_rate))
    }

    fn delay(&self) -> Duration {
        let max = self.faults().max_delay;
        if max.is_zero() {
            return max;
        }
        rand::thread_rng().gen_range(Duration::ZERO..max)
    }

    /// Delivers one RPC from `from` to `to` through the faults; a lost request or reply is
    /// `Unreachable` to the sender (a lost reply after the receiver acted on it, as on a real
    /// network).
    async fn deliver<T, E, F, Fut>(
        &self,
        from: u64,
        to: u64,
        call: F,
    ) -> Result<T, RPCError<u64, BasicNode, RaftError<u64, E>>>
    where
        E: std::error::Error,
        F: FnOnce(Raft<TypeConfig>) -> Fut,
        Fut: std::future::Future<Output = Result<T, RaftError<u64, E>>>,
    {
        let unreachable =
            |what: &str| RPCError::Unreachable(Unreachable::new(&AnyError::error(what)));
        let d = self.delay();
        if !d.is_zero() {
            tokio::time::sleep(d).await;
        }
        if self.lost(from, to) {
            return Err(unreachable("message lost"));
        }
        let target = self.nodes().get(&to).cloned();
        let Some(raft) = target else {
            return Err(unreachable("node down"));
        };
        let r = call(raft)
            .await
            .map_err(|e| RPCError::RemoteError(RemoteError::new(to, e)))?;
        if self.lost(to, from) {
            return Err(unreachable("reply lost"));
        }
        Ok(r)
    }
}

/// The [`RaftNetworkFactory`] of one node.
#[derive(Clone)]
pub struct NetFactory {
    from: u64,
    router: Arc<Router>,
}

/// A connection from one node to another.
pub struct Conn {
    from: u64,
    to: u64,
    router: Arc<Router>,
}

impl RaftNetworkFactory<TypeConfig> for NetFactory {
    type Network = Conn;
    async fn new_client(&mut self, target: u64, _node: &BasicNode) -> Conn {
        Conn {
            from: self.from,
            to: target,
            router: self.router.clone(),
        }
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        _o: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.router
            .deliver(self.from, self.to, |r| async move {
                r.append_entries(rpc).await
            })
            .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        _o: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<u64>,
        RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>,
    > {
        self.router
            .deliver(self.from, self.to, |r| async move {
                r.install_snapshot(rpc).await
            })
            .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<u64>,
        _o: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        self.router
            .deliver(self.from, self.to, |r| async move { r.vote(rpc).await })
            .await
    }
}
