//! Group commit for the log store. openraft hands the store one `append` per client write on
//! a busy leader, and waits for nothing but the callback: so each append is written under the
//! log's lock without a sync, and this thread syncs and acknowledges. Appends that arrive while
//! it syncs are covered by its next sync, all at once: one `fdatasync` per wave instead of one
//! per append, and openraft's core never waits on the disk.
//!
//! An acknowledgement (`log_io_completed(Ok)`) is sent only after a sync that started after the
//! append's write returned, so it is true. A failed sync acknowledges every waiting append with
//! the error and poisons the log: after a failed `fdatasync` the page cache may have dropped the
//! data, and no later sync could be trusted to cover it.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex, Weak};

use openraft::storage::LogFlushed;

use super::types::TypeConfig;
use crate::log::{Log, SyncHandle};

struct Job {
    handle: SyncHandle,
    callback: LogFlushed<TypeConfig>,
}

/// The syncing thread of one log store; it stops once every handle to it is dropped.
pub(crate) struct Flusher {
    tx: Mutex<Sender<Job>>,
    syncs: Arc<AtomicU64>,
    /// Fault injection: while set, every sync fails as a failing disk's `fdatasync` does.
    fail: Arc<AtomicBool>,
}

impl std::fmt::Debug for Flusher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Flusher")
            .field("syncs", &self.syncs.load(Ordering::Relaxed))
            .finish()
    }
}

impl Flusher {
    /// Starts the thread. It holds the log weakly: dropping the last store closes the log (and
    /// releases its directory lock) at once, not when the thread gets round to exiting.
    pub(crate) fn start(log: Weak<Mutex<Log>>) -> std::io::Result<Flusher> {
        let (tx, rx) = channel();
        let syncs = Arc::new(AtomicU64::new(0));
        let counter = syncs.clone();
        let fail = Arc::new(AtomicBool::new(false));
        let failing = fail.clone();
        std::thread::Builder::new()
            .name("raftlog-flush".into())
            .spawn(move || run(rx, log, counter, failing))?;
        Ok(Flusher {
            tx: Mutex::new(tx),
            syncs,
            fail,
        })
    }

    /// Queues the sync of an append written through `handle`; `callback` hears the outcome.
    pub(crate) fn submit(&self, handle: SyncHandle, callback: LogFlushed<TypeConfig>) {
        let job = Job { handle, callback };
        let tx = self.tx.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(std::sync::mpsc::SendError(job)) = tx.send(job) {
            // The thread is gone (it only exits when the channel closes, so this is not
            // expected): sync here rather than acknowledge what is not durable.
            let r = job.handle.sync();
            job.callback.log_io_completed(r);
        }
    }

    /// Makes every later sync fail (`on`) or succeed again, as with [`LogStore::fail_syncs`].
    ///
    /// [`LogStore::fail_syncs`]: super::LogStore::fail_syncs
    pub(crate) fn fail_syncs(&self, on: bool) {
        self.fail.store(on, Ordering::Release);
    }

    /// `fdatasync` calls made so far.
    pub(crate) fn syncs(&self) -> u64 {
        self.syncs.load(Ordering::Relaxed)
    }
}

fn run(rx: Receiver<Job>, log: Weak<Mutex<Log>>, syncs: Arc<AtomicU64>, fail: Arc<AtomicBool>) {
    // Once a sync failed, no later one is trusted: jobs written before the failure and still
    // queued could be "covered" by a sync that succeeds over pages the kernel dropped.
    let mut failed: Option<(std::io::ErrorKind, String)> = None;
    while let Ok(first) = rx.recv() {
        let mut jobs = vec![first];
        jobs.extend(rx.try_iter());
        let poisoned = log
            .upgrade()
            .is_some_and(|l| l.lock().unwrap_or_else(|p| p.into_inner()).is_poisoned());
        if failed.is_none() && poisoned {
            // A write step of the log failed (e.g. the sync at a segment rollover).
            failed = Some((
                std::io::ErrorKind::Other,
                "the raft log failed earlier".into(),
            ));
        }
        if let Some((kind, msg)) = &failed {
            for job in jobs {
                job.callback
                    .log_io_completed(Err(std::io::Error::new(*kind, msg.clone())));
            }
            continue;
        }
        let mut synced: Vec<&SyncHandle> = Vec::new();
        let mut failure: Option<std::io::Error> = None;
        for job in &jobs {
            if synced.iter().any(|h| h.same_file(&job.handle)) {
                // That sync began after this job was queued, so after its write: it covers it.
                job.handle.covered();
                continue;
            }
            syncs.fetch_add(1, Ordering::Relaxed);
            let r = if fail.load(Ordering::Acquire) {
                Err(std::io::Error::other(
                    "fdatasync: Input/output error (injected)",
                ))
            } else {
                job.handle.sync()
            };
            if let Err(e) = r {
                failure = Some(e);
                break;
            }
            synced.push(&job.handle);
        }
        if let Some(e) = &failure {
            failed = Some((e.kind(), e.to_string()));
            tracing::error!(error = %e, "raft log sync failed; the log takes no more writes");
            if let Some(log) = log.upgrade() {
                log.lock().unwrap_or_else(|p| p.into_inner()).poison();
            }
        }
        for job in jobs {
            let r = match &failure {
                None => Ok(()),
                Some(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            job.callback.log_io_completed(r);
        }
    }
}
