//! One replica of a group, assembled: its log store, its state machine, its Raft, and the
//! maintainer beside them, from one directory (`log/` and `sm/` under it). The node binary, the
//! benchmark and the tests start replicas the same way.

use std::path::Path;
use std::sync::Arc;

use openraft::network::RaftNetworkFactory;
use openraft::{Config, Raft};

use crate::store::{LogStore, TypeConfig};
use crate::{Maintainer, MaintainerOptions, StateMachine};

/// A running replica. Dropping it stops the maintainer; call [`shutdown`](Self::shutdown) to
/// stop Raft first.
pub struct Replica {
    /// The replica's Raft.
    pub raft: Raft<TypeConfig>,
    /// Its state machine (reads go here once Raft says they may).
    pub sm: StateMachine,
    /// Its log store (for stats).
    pub log: LogStore,
    _maintainer: Maintainer,
}

impl Replica {
    /// Opens (creating if needed) the replica `id` in `dir` and starts its Raft with `network`
    /// and its maintainer. `engine` must name the group's shared object store as its cold tier.
    pub async fn start<N: RaftNetworkFactory<TypeConfig>>(
        id: u64,
        dir: &Path,
        engine: lsm::Options,
        config: Arc<Config>,
        network: N,
        maintainer: MaintainerOptions,
    ) -> crate::Result<Replica> {
        let (log, _) = LogStore::open(dir.join("log"))?;
        let sm = StateMachine::open(dir.join("sm"), engine)?;
        let raft = Raft::new(id, config, network, log.clone(), sm.clone())
            .await
            .map_err(|e| crate::Error::Raft(e.to_string()))?;
        let m = Maintainer::spawn(raft.clone(), sm.clone(), maintainer);
        Ok(Replica {
            raft,
            sm,
            log,
            _maintainer: m,
        })
    }

    /// Stops Raft (and with the replica's drop, everything else).
    pub async fn shutdown(self) {
        let _ = self.raft.shutdown().await;
    }
}
