//! One replica of a group, assembled: its log store, its state machine, its Raft, and the
//! maintainer beside them, from one directory (`log/` and `sm/` under it). The node binary, the
//! benchmark and the tests start replicas the same way.

use std::path::Path;
use std::sync::Arc;

use openraft::error::{CheckIsLeaderError, Fatal, RaftError};
use openraft::network::RaftNetworkFactory;
use openraft::storage::RaftLogStorage;
use openraft::{BasicNode, Config, LogId, Raft};

use crate::log::RecoveryInfo;
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
    /// What the log's recovery found at the start (a torn tail it cut, segments it removed).
    pub log_recovery: RecoveryInfo,
    /// The index of the last entry in the log when the replica started (see
    /// [`read_log_id`](Self::read_log_id)).
    start_log_index: u64,
    _maintainer: Maintainer,
}

/// Why a linearizable read point could not be had (e.g. this replica does not lead).
pub type ReadError = RaftError<u64, CheckIsLeaderError<u64, BasicNode>>;

impl Replica {
    /// Opens (creating if needed) the replica `id` in `dir` and starts its Raft with `network`
    /// and its maintainer. `engine` must name the group's shared object store as its cold tier.
    ///
    /// A log that recovery finds corrupt ([`Error::CorruptRecord`](crate::Error::CorruptRecord):
    /// synced entries lost or altered on disk) is refused: this fails rather than rejoin the
    /// group, and vote, with a log shorter than the one it acknowledged. The replica must then be
    /// rebuilt (removed from the voters, wiped, re-added as a learner, promoted).
    pub async fn start<N: RaftNetworkFactory<TypeConfig>>(
        id: u64,
        dir: &Path,
        engine: lsm::Options,
        config: Arc<Config>,
        network: N,
        maintainer: MaintainerOptions,
    ) -> crate::Result<Replica> {
        Self::start_group(
            id,
            crate::FIRST_RANGE,
            dir,
            engine,
            config,
            network,
            maintainer,
            None,
        )
        .await
    }

    /// [`start`](Self::start) for the replica of group `group` (a range, or the meta group),
    /// with the hook that creates the children of the splits it applies (see
    /// [`crate::range`]), set before anything is applied.
    #[allow(clippy::too_many_arguments)]
    pub async fn start_group<N: RaftNetworkFactory<TypeConfig>>(
        id: u64,
        group: u64,
        dir: &Path,
        engine: lsm::Options,
        config: Arc<Config>,
        network: N,
        maintainer: MaintainerOptions,
        split_hook: Option<crate::range::SplitHook>,
    ) -> crate::Result<Replica> {
        let log_dir = dir.join("log");
        let (log, log_recovery) = LogStore::open(&log_dir).inspect_err(|e| {
            if e.is_corruption() {
                tracing::error!(
                    replica = id,
                    group,
                    dir = %log_dir.display(),
                    error = %e,
                    "raft log is corrupt: refusing to start; rebuild this replica"
                );
            }
        })?;
        if let Some(d) = &log_recovery.damage {
            tracing::warn!(
                replica = id,
                segment = %d.segment.display(),
                offset = d.offset,
                index = d.index,
                bytes = d.bytes_dropped,
                "raft log: cut a torn tail of unacknowledged entries"
            );
        }
        let start_log_index = log
            .clone()
            .get_log_state()
            .await
            .map_err(|e| crate::Error::Raft(e.to_string()))?
            .last_log_id
            .map_or(0, |l| l.index);
        let sm = StateMachine::open_group(dir.join("sm"), engine, group)?;
        if let Some(hook) = split_hook {
            sm.set_split_hook(hook);
        }
        // Obsolete objects found at open were removed by entries this replica applied, all in
        // (or purged from) the log it starts with.
        sm.db().stamp_obsolete_objects(start_log_index);
        let raft = Raft::new(id, config, network, log.clone(), sm.clone())
            .await
            .map_err(|e| crate::Error::Raft(e.to_string()))?;
        let m = Maintainer::spawn(raft.clone(), sm.clone(), maintainer);
        Ok(Replica {
            raft,
            sm,
            log,
            log_recovery,
            start_log_index,
            _maintainer: m,
        })
    }

    /// The index of the last entry in the log when the replica started: a leader restored at
    /// restart may have acknowledged writes up to it that its state machine has not applied.
    pub fn start_log_index(&self) -> u64 {
        self.start_log_index
    }

    /// The log id up to which the state machine must have applied for a read to be
    /// linearizable, once this replica confirmed with a quorum that it leads
    /// ([`Raft::get_read_log_id`]); never below the log it had when it started.
    ///
    /// openraft 0.9 restores a replica that led when it stopped as the leader at once, in the
    /// same term, if it restarts before its followers elect another; it then derives read
    /// points from its committed index, which after a restart it only knows from the advisory
    /// `save_committed`, possibly older than writes it acknowledged before it stopped. A read
    /// point of that index served stale reads. So until it has applied all of the log it started
    /// with (entries of its own term, committed as soon as a quorum has them), the read point is
    /// the end of that log.
    pub async fn read_log_id(&self) -> Result<Option<LogId<u64>>, ReadError> {
        let (read, _) = self.raft.get_read_log_id().await?;
        if read.map_or(0, |l| l.index) >= self.start_log_index {
            return Ok(read);
        }
        self.raft
            .wait(None)
            .applied_index_at_least(Some(self.start_log_index), "the log before the start")
            .await
            .map_err(|_| RaftError::Fatal(Fatal::Stopped))?;
        // Committed is now past the start's log too; confirm the leadership again.
        Ok(self.raft.get_read_log_id().await?.0)
    }

    /// Returns once a read of this replica's state machine is linearizable: it leads
    /// ([`read_log_id`](Self::read_log_id)) and applied up to the read point, which it returns.
    /// [`Raft::ensure_linearizable`] without the stale reads of a leader restored at startup.
    pub async fn ensure_linearizable(&self) -> Result<Option<LogId<u64>>, ReadError> {
        let read = self.read_log_id().await?;
        self.raft
            .wait(None)
            .applied_index_at_least(read.map(|l| l.index), "the read point")
            .await
            .map_err(|_| RaftError::Fatal(Fatal::Stopped))?;
        Ok(read)
    }

    /// Stops Raft and the maintainer (and with the replica's drop, everything else).
    pub async fn shutdown(mut self) {
        let _ = self.raft.shutdown().await;
        self._maintainer.stop().await;
    }
}
