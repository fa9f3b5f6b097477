//! openraft's own storage conformance suite, run on the redb log store and state machine.

use std::sync::Arc;

use ghatta::actors::{ActorHost, ActorLimits};
use ghatta::raft::TypeConfig;
use ghatta::raft::log_store::LogStore;
use ghatta::state::StateMachine;
use openraft::StorageError;
use openraft::testing::log::{StoreBuilder, Suite};

struct RedbBuilder;

impl StoreBuilder<TypeConfig, LogStore, StateMachine, tempfile::TempDir> for RedbBuilder {
    async fn build(
        &self,
    ) -> Result<(tempfile::TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
        let dir = tempfile::tempdir().expect("temp dir");
        let stores = ghatta::storage::open_dir(dir.path()).expect("open db");
        // The suite applies only blank and membership entries: no actor code is needed.
        let host = Arc::new(ActorHost::new(ActorLimits::default(), &[]).expect("empty host"));
        let sm = StateMachine::open(stores.state.clone(), host).expect("open state machine");
        Ok((dir, LogStore::new(stores.log), sm))
    }
}

#[test]
fn redb_store_passes_openraft_suite() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(ghatta::raft::Runtime::scope(1, async {
        Suite::test_all(RedbBuilder)
            .await
            .expect("openraft storage suite");
    }));
}
