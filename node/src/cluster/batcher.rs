//! Group commit of client writes: concurrent requests share one Raft entry.
//!
//! Every Raft entry costs the same round trip, fsyncs and openraft bookkeeping whether it
//! carries one put or hundreds, so under load the node proposes a few entries at a time and puts
//! every request that arrived meanwhile into the next one. With one client there is nothing to
//! wait for: a request is proposed at once, no timer adds latency.
//!
//! A Write entry's ops are evaluated in order against the state before the entry, and every op
//! of it gets the entry's index as its version. Two requests on one key in one entry would both
//! report that version, and a compare-and-set on it could not tell them apart, so an entry never
//! holds one key twice: the later request waits for the next entry.

use std::collections::HashSet;
use std::sync::Arc;

use openraft::Raft;
use raftlog::store::{Command, Op, OpResult, Reply, TypeConfig};
use tokio::sync::{mpsc, oneshot, OwnedSemaphorePermit, Semaphore};

use crate::api::error::ApiError;
use crate::transport::client::Peers;

/// Entries proposed and not yet answered: while they are in flight, requests queue up and form
/// the next entries.
const MAX_IN_FLIGHT: usize = 2;
/// Ops in one entry.
const MAX_OPS: usize = 1024;
/// Key and value bytes in one entry (a single larger request goes alone).
const MAX_BYTES: usize = 1 << 20;
/// Requests waiting for an entry; beyond this, callers wait to enqueue.
const QUEUE: usize = 8192;
/// Key and value bytes of the requests queued or in flight; beyond this, callers wait to
/// enqueue. 8,192 requests of 8 MiB each would otherwise be 64 GiB.
const QUEUE_BYTES: usize = 64 << 20;

type Answer = Result<Vec<OpResult>, ApiError>;

struct Request {
    ops: Vec<Op>,
    reply: oneshot::Sender<Answer>,
    /// This request's share of [`QUEUE_BYTES`], returned when it is answered (dropped).
    _bytes: OwnedSemaphorePermit,
}

impl Request {
    fn bytes(&self) -> usize {
        self.ops.iter().map(op_bytes).sum()
    }
}

fn op_bytes(op: &Op) -> usize {
    op.key().len()
        + match op {
            Op::Put { value, .. }
            | Op::PutWithTtl { value, .. }
            | Op::PutIfAbsent { value, .. } => value.len(),
            Op::CompareAndSet { new, .. } => new.as_ref().map_or(0, Vec::len),
            Op::Delete { .. } => 0,
        }
}

/// Submits writes to be proposed in shared entries. Cheap to clone.
#[derive(Clone)]
pub struct Batcher {
    tx: mpsc::Sender<Request>,
    bytes: Arc<Semaphore>,
}

impl Batcher {
    /// Starts the batching task on the current runtime; it ends when every [`Batcher`] clone is
    /// dropped.
    pub fn spawn(raft: Raft<TypeConfig>, peers: Peers, range: u64) -> Batcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(rx, raft, peers, range));
        Batcher {
            tx,
            bytes: Arc::new(Semaphore::new(QUEUE_BYTES)),
        }
    }

    /// Proposes `ops` (applied together, in order, in one entry) and returns one result per op.
    /// Every wait here (for room in the queue, for the outcome) ends when the caller's future is
    /// dropped, as the request deadline does (`guard::deadline`).
    pub async fn write(&self, ops: Vec<Op>) -> Answer {
        let size: usize = ops.iter().map(op_bytes).sum();
        // A request larger than the whole budget waits for all of it: it goes alone.
        let share = u32::try_from(size.clamp(1, QUEUE_BYTES)).unwrap_or(u32::MAX);
        let permit = self
            .bytes
            .clone()
            .acquire_many_owned(share)
            .await
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?;
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Request {
                ops,
                reply,
                _bytes: permit,
            })
            .await
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?;
        rx.await
            .map_err(|_| ApiError::unavailable("the write's outcome is unknown"))?
    }
}

async fn run(mut rx: mpsc::Receiver<Request>, raft: Raft<TypeConfig>, peers: Peers, range: u64) {
    let slots = Arc::new(Semaphore::new(MAX_IN_FLIGHT));
    let mut carried: Option<Request> = None;
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carried.take() {
            Some(r) => r,
            None => match rx.recv().await {
                Some(r) => r,
                None => return,
            },
        };
        let mut keys: HashSet<Vec<u8>> = first.ops.iter().map(|o| o.key().to_vec()).collect();
        let mut ops = first.ops.len();
        let mut bytes = first.bytes();
        let mut batch = vec![first];
        while ops < MAX_OPS && bytes < MAX_BYTES {
            let Ok(next) = rx.try_recv() else { break };
            let clash = next.ops.iter().any(|o| keys.contains(o.key()));
            let n_bytes = next.bytes();
            if clash || ops + next.ops.len() > MAX_OPS || bytes + n_bytes > MAX_BYTES {
                carried = Some(next);
                break;
            }
            keys.extend(next.ops.iter().map(|o| o.key().to_vec()));
            ops += next.ops.len();
            bytes += n_bytes;
            batch.push(next);
        }
        let raft = raft.clone();
        let peers = peers.clone();
        tokio::spawn(async move {
            propose(&raft, &peers, range, batch).await;
            drop(slot);
        });
    }
}

/// Proposes `batch` as one entry and answers each request with its share of the results.
async fn propose(raft: &Raft<TypeConfig>, peers: &Peers, range: u64, batch: Vec<Request>) {
    let counts: Vec<usize> = batch.iter().map(|r| r.ops.len()).collect();
    let all: Vec<Op> = batch.iter().flat_map(|r| r.ops.iter().cloned()).collect();
    let cmd = Command::Write {
        ops: all,
        now_ms: crate::api::kv::now_ms(),
    };
    match crate::cluster::forward::propose_with(raft, peers, range, cmd).await {
        Ok(Reply::Write(results)) if results.len() == counts.iter().sum::<usize>() => {
            let mut results = results.into_iter();
            for r in batch {
                let mine: Vec<OpResult> = results.by_ref().take(r.ops.len()).collect();
                let _ = r.reply.send(Ok(mine));
            }
        }
        // The entry was refused as a whole (an oversized key or value makes the engine refuse
        // the batch): each request alone, so only the bad one fails.
        Ok(Reply::Invalid(m)) if batch.len() > 1 => {
            tracing::debug!(reason = %m, requests = batch.len(), "shared entry refused; splitting");
            for r in batch {
                Box::pin(propose(raft, peers, range, vec![r])).await;
            }
        }
        Ok(Reply::Invalid(m)) => answer_all(batch, ApiError::bad_request(m)),
        // Routed by an out-of-date picture of the ranges: each request is routed again.
        Ok(Reply::WrongRange(d)) => {
            answer_all(batch, crate::cluster::range::wrong_range(d.as_ref()))
        }
        Ok(other) => answer_all(
            batch,
            ApiError::unavailable(format!("unexpected reply {other:?}")),
        ),
        Err(e) => answer_all(batch, e),
    }
}

fn answer_all(batch: Vec<Request>, e: ApiError) {
    for r in batch {
        let _ = r.reply.send(Err(e.clone()));
    }
}
