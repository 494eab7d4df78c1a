//! openraft's own storage test suite against the log store and the state machine over lsm.

mod common;

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use raftlog::store::{LogStore, TypeConfig};
use raftlog::StateMachine;

struct Builder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for Builder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<u64>> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let (log, _) = LogStore::open(dir.path().join("log")).expect("open log");
        let store = common::object_store(&dir.path().join("objects"));
        let sm = StateMachine::open(dir.path().join("sm"), common::engine_options(store))
            .expect("open state machine");
        Ok((dir, log, sm))
    }
}

/// Every test of the suite, each on fresh stores (the suite builds its own runtimes).
#[test]
fn openraft_storage_suite() {
    Suite::test_all(Builder).expect("openraft storage suite");
}
