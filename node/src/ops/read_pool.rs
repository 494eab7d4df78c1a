//! Engine reads that may block: a read the memtables and caches cannot answer may read a table
//! file or wait on the object store (seconds, when it is slow or down). Such reads run here, on
//! tokio's blocking threads, at most `--read-threads` at once, each under the request's deadline,
//! which the object store honours (`lsm::object::with_deadline`): the async workers, which
//! carry heartbeats, Raft RPCs and every other request, never wait on a disk or a network call.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::Semaphore;

use crate::api::error::ApiError;

/// A bound on blocking reads and the deadline each gets.
pub struct ReadPool {
    slots: Arc<Semaphore>,
    timeout: Duration,
}

impl ReadPool {
    /// At most `threads` reads at once, each given `timeout` from when it is asked for.
    pub fn new(threads: usize, timeout: Duration) -> Self {
        ReadPool {
            slots: Arc::new(Semaphore::new(threads.max(1))),
            timeout,
        }
    }

    /// Runs `read` on a blocking thread once a slot is free, with the object store's requests
    /// bounded by the deadline. The slot is held until `read` returns, even if the caller stops
    /// waiting: the bound counts threads, not waiters.
    pub async fn run<T: Send + 'static>(
        &self,
        read: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let deadline = Instant::now() + self.timeout;
        let slot = tokio::time::timeout_at(deadline.into(), self.slots.clone().acquire_owned())
            .await
            .map_err(|_| {
                let mut e = ApiError::unavailable(
                    "overloaded: every read thread waits on storage; retry later",
                );
                e.error = "overloaded";
                e.retry_after = Some(1);
                e
            })?
            .map_err(|_| ApiError::unavailable("the node is shutting down"))?;
        tokio::task::spawn_blocking(move || {
            let _slot = slot;
            lsm::object::with_deadline(deadline, read)
        })
        .await
        .map_err(|e| ApiError::unavailable(format!("the read failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bounded_and_timed() {
        let pool = Arc::new(ReadPool::new(1, Duration::from_millis(100)));
        let busy = pool.clone();
        let held = tokio::spawn(async move {
            busy.run(|| {
                std::thread::sleep(Duration::from_millis(400));
                Ok(1)
            })
            .await
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let began = Instant::now();
        let e = pool.run(|| Ok(2)).await.expect_err("no free slot");
        assert_eq!(e.error, "overloaded");
        assert!(began.elapsed() < Duration::from_millis(300));
        assert_eq!(held.await.expect("join").expect("read"), 1);
        assert_eq!(pool.run(|| Ok(3)).await.expect("a free slot"), 3);
    }
}
