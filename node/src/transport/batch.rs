//! Questions to a peer about many ranges, one call per batch: each question waits in the peer's
//! queue while the calls already out are answered, and the next call carries all that
//! arrived. A node with dozens of ranges would otherwise make a call per range for what one
//! call can answer (leadership confirmations, read indexes). One call is out at a time, unless
//! it is slow: then a few may be, so one slow answer does not hold every question behind it; a peer without the route (an
//! earlier version, answering 404) is asked no more, and the asker does without it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::{mpsc, oneshot};

use crate::transport::client::{CallError, Peers, To};

/// Questions waiting for one peer; beyond this the peer is not answering (each call waits out
/// its timeout while questions pile up) and new ones are refused at once.
const QUEUE: usize = 65536;
/// Questions in one call, at most: one per range, and a node holds at most 4,096 (see
/// `cluster::ranges`). A peer refuses longer lists.
pub const MAX_BATCH: usize = 4096;
/// Calls out to one peer at once, at most.
const IN_FLIGHT: usize = 4;
/// A call out this long no longer holds the next one back. Below it, one call at a time: the
/// questions that arrive meanwhile make the next batch (more calls at once would split them
/// into smaller ones, which at 64 ranges halved the reads a second).
const SLOW_CALL: Duration = Duration::from_millis(50);

struct Item<Q, A> {
    question: Q,
    reply: oneshot::Sender<A>,
}

/// Each peer's address and queue, by its id (a peer that moved gets a new queue).
type Queues<Q, A> = HashMap<u64, (String, mpsc::Sender<Item<Q, A>>)>;

/// One queue and one caller task per peer, for the calls to `/raft/<path>`: a `Vec<Q>` answered
/// by a `Vec<A>` of the same length. Cheap to share.
pub struct PeerBatcher<Q, A> {
    peers: Peers,
    path: &'static str,
    timeout: Duration,
    /// The answer of every question of a call that failed, given why.
    failed: fn(&str) -> A,
    queues: Mutex<Queues<Q, A>>,
    /// Peers that answered 404 at these addresses: they lack the route.
    unsupported: Mutex<HashMap<u64, String>>,
}

impl<Q, A> PeerBatcher<Q, A>
where
    Q: Serialize + Send + Sync + 'static,
    A: DeserializeOwned + Send + 'static,
{
    pub fn new(
        peers: Peers,
        path: &'static str,
        timeout: Duration,
        failed: fn(&str) -> A,
    ) -> Arc<Self> {
        Arc::new(PeerBatcher {
            peers,
            path,
            timeout,
            failed,
            queues: Mutex::new(HashMap::new()),
            unsupported: Mutex::new(HashMap::new()),
        })
    }

    /// Queues `question` for peer `id` at `addr`; the answer arrives on the receiver. `None`
    /// when the peer lacks the route, or its queue is full (it stopped answering): no answer,
    /// rather than a wait that would hold the asker and everything behind it.
    pub fn ask(self: &Arc<Self>, id: u64, addr: &str, question: Q) -> Option<oneshot::Receiver<A>> {
        if self.unsupported(id, addr) {
            return None;
        }
        let (reply, rx) = oneshot::channel();
        self.queue(id, addr)
            .try_send(Item { question, reply })
            .ok()?;
        Some(rx)
    }

    /// Whether peer `id` at `addr` answered 404: it lacks the route.
    pub fn unsupported(&self, id: u64, addr: &str) -> bool {
        self.unsupported
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&id)
            .is_some_and(|a| a == addr)
    }

    fn queue(self: &Arc<Self>, id: u64, addr: &str) -> mpsc::Sender<Item<Q, A>> {
        let mut queues = self.queues.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((_, q)) = queues.get(&id).filter(|(a, q)| a == addr && !q.is_closed()) {
            return q.clone();
        }
        // Replaced, the queue of an address the peer left ends with its sender.
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(self.clone().run(id, addr.to_string(), rx));
        queues.insert(id, (addr.to_string(), tx.clone()));
        tx
    }

    async fn run(self: Arc<Self>, id: u64, addr: String, mut rx: mpsc::Receiver<Item<Q, A>>) {
        let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
        loop {
            // A free slot first, then the questions: everything that arrived while the slots
            // were busy goes in one call.
            let Ok(slot) = slots.clone().acquire_owned().await else {
                return;
            };
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(i) => batch.push(i),
                    Err(_) => break,
                }
            }
            // Questions whose asker no longer waits (it decided without this peer, or gave up).
            batch.retain(|i| !i.reply.is_closed());
            if batch.is_empty() {
                continue;
            }
            let (me, addr) = (self.clone(), addr.clone());
            let (done, answered) = oneshot::channel::<()>();
            tokio::spawn(async move {
                me.call(id, &addr, batch).await;
                drop(slot);
                let _ = done.send(());
            });
            let _ = tokio::time::timeout(SLOW_CALL, answered).await;
        }
    }

    async fn call(&self, id: u64, addr: &str, batch: Vec<Item<Q, A>>) {
        let questions: Vec<&Q> = batch.iter().map(|i| &i.question).collect();
        let to = To {
            node: id,
            addr,
            range: raftlog::FIRST_RANGE,
            epoch: None,
        };
        let answers = match self
            .peers
            .call::<_, Vec<A>>(to, self.path, &questions, self.timeout)
            .await
        {
            Ok(answers) if answers.len() == batch.len() => Ok(answers),
            Ok(answers) => Err(format!(
                "node {id} answered {} of {} questions",
                answers.len(),
                batch.len()
            )),
            Err(e) => {
                if matches!(e, CallError::Refused(404, _)) {
                    self.unsupported
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(id, addr.to_string());
                }
                Err(format!("asking node {id}: {e}"))
            }
        };
        match answers {
            Ok(answers) => {
                for (item, a) in batch.into_iter().zip(answers) {
                    let _ = item.reply.send(a);
                }
            }
            Err(why) => {
                for item in batch {
                    let _ = item.reply.send((self.failed)(&why));
                }
            }
        }
    }
}
