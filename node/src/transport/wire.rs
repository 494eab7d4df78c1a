//! The bodies of node-to-node calls (format in [`crate::transport::client`]): one postcard value each,
//! with nothing after it. Requests are decoded by `rpc.rs`, replies by `network.rs`.
//!
//! This file uses nothing else of the node, so the fuzz targets (`fuzz/` at the repository root)
//! compile it by path, without the node's HTTP and S3 dependencies.

use serde::de::DeserializeOwned;

/// Decodes a whole body. Bytes left after the value are refused: the peer encoded something
/// other than what this node expects, and guessing would act on a misread message.
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, String> {
    match postcard::take_from_bytes(body) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(format!("{} trailing bytes", rest.len())),
        Err(e) => Err(e.to_string()),
    }
}

/// The entry point of the `node_rpc` fuzz target and of the corpus replay test.
#[cfg(any(test, fuzzing))]
pub mod fuzzing {
    use openraft::error::{InstallSnapshotError, RaftError};
    use openraft::raft::{
        AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest,
        InstallSnapshotResponse, VoteRequest, VoteResponse,
    };
    use openraft::LogId;
    use raftlog::store::{Command, Reply, TypeConfig};
    use serde::de::DeserializeOwned;
    use serde::Serialize;

    /// `Err` holds every decoder's reason for refusing the input.
    pub type Outcome = Result<(), String>;

    /// Every body a node decodes from a peer, tried in turn on the same bytes: the requests of
    /// `/raft/{append,vote,snapshot,propose,read-index,confirm,read-indexes}` and the replies to
    /// them. `Ok` when one
    /// of them accepts the input. Never panics, except when an accepted value does not survive
    /// being encoded and decoded again.
    pub fn node_rpc(data: &[u8]) -> Outcome {
        let results = [
            check::<AppendEntriesRequest<TypeConfig>>(data),
            check::<VoteRequest<u64>>(data),
            check::<InstallSnapshotRequest<TypeConfig>>(data),
            check::<Command>(data),
            check::<()>(data),
            check::<Result<AppendEntriesResponse<u64>, RaftError<u64>>>(data),
            check::<Result<VoteResponse<u64>, RaftError<u64>>>(data),
            check::<Result<InstallSnapshotResponse<u64>, RaftError<u64, InstallSnapshotError>>>(
                data,
            ),
            check::<Result<Reply, String>>(data),
            check::<Result<Option<LogId<u64>>, String>>(data),
            check::<Vec<(u64, openraft::Vote<u64>)>>(data),
            check::<Vec<bool>>(data),
            check::<Vec<u64>>(data),
            check::<Vec<Result<Option<LogId<u64>>, String>>>(data),
        ];
        if results.iter().any(Result::is_ok) {
            return Ok(());
        }
        Err(results
            .into_iter()
            .filter_map(Result::err)
            .collect::<Vec<_>>()
            .join("; "))
    }

    fn check<T: Serialize + DeserializeOwned>(data: &[u8]) -> Outcome {
        let v: T = super::decode(data)?;
        let again = postcard::to_stdvec(&v).map_err(|e| e.to_string())?;
        let back: T = super::decode(&again).expect("an encoded body decodes");
        assert_eq!(postcard::to_stdvec(&back).ok().as_ref(), Some(&again));
        Ok(())
    }
}
