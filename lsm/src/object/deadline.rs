//! A deadline for the object-store requests of one thread.
//!
//! The engine's API is synchronous and its read path has no deadline parameter; threading one
//! through every lookup, iterator and table open would touch all of them. Instead the caller
//! sets a deadline for the current thread with [`with_deadline`], and the object stores (and
//! the retry layer) read it wherever they are about to wait: S3 requests, backoff between
//! retries, the wait for an in-flight slot, injected latency. Work on the calling thread is
//! all the read path does, so every request of an engine read made inside the closure is
//! covered.

use std::cell::Cell;
use std::time::{Duration, Instant};

use super::{ObjectError, ObjectOp};

thread_local! {
    static DEADLINE: Cell<Option<Instant>> = const { Cell::new(None) };
}

/// Runs `f` with every object-store request made on this thread giving up at `deadline`.
///
/// Meant for a caller that serves requests with deadlines, such as a server's bounded pool of
/// blocking threads for reads: it runs the engine read (`Db::get`, a scan, ...) inside `f`.
/// Every object-store request made on this thread while `f` runs — reading a data block,
/// opening a cold table, waiting for a free request slot, backing off before a retry — gives
/// up at the deadline with [`ObjectError::Timeout`], and no retry is started that could not
/// finish its backoff in time. The engine reports that as
/// [`Error::Unavailable`](crate::Error::Unavailable) naming the timeout. A read that needs no
/// object-store request (memtables, local tables, cached blocks) is not affected.
///
/// A nested call keeps the earlier of the two deadlines. The previous deadline (or none) is
/// restored when `f` returns or unwinds.
///
/// The deadline belongs to the thread, not to what `f` returns: an iterator created inside `f`
/// but advanced after it returns, or work handed to another thread, runs without it.
pub fn with_deadline<T>(deadline: Instant, f: impl FnOnce() -> T) -> T {
    let previous = current();
    let effective = previous.map_or(deadline, |p| p.min(deadline));
    set(Some(effective));
    // Restores on unwind too, so a panicking read does not leave its deadline on a pooled
    // thread for whatever runs there next.
    let _restore = Restore(previous);
    f()
}

struct Restore(Option<Instant>);

impl Drop for Restore {
    fn drop(&mut self) {
        set(self.0);
    }
}

fn set(d: Option<Instant>) {
    // `try_with`: a store used from another thread-local's destructor must not panic here.
    let _ = DEADLINE.try_with(|c| c.set(d));
}

/// The deadline of the current thread, if any.
pub(crate) fn current() -> Option<Instant> {
    DEADLINE.try_with(Cell::get).ok().flatten()
}

/// Time left before the current thread's deadline: `None` when there is none, zero once it has
/// passed.
pub(crate) fn remaining() -> Option<Duration> {
    current().map(|d| d.saturating_duration_since(Instant::now()))
}

/// The time a request may take: `own` (the store's own limit), cut to what is left of the
/// deadline; `Timeout` when nothing is left, so the request is never sent.
#[cfg(any(feature = "s3", test))]
pub(crate) fn bound(own: Duration, op: ObjectOp, key: &str) -> Result<Duration, ObjectError> {
    match remaining() {
        None => Ok(own),
        Some(left) if left.is_zero() => Err(timeout(op, key)),
        Some(left) => Ok(own.min(left)),
    }
}

/// Sleeps `d`, or until the deadline if that comes first. Returns false when the deadline cut
/// the sleep short.
pub(crate) fn sleep(d: Duration) -> bool {
    match remaining() {
        Some(left) if left < d => {
            std::thread::sleep(left);
            false
        }
        _ => {
            std::thread::sleep(d);
            true
        }
    }
}

pub(crate) fn timeout(op: ObjectOp, key: &str) -> ObjectError {
    ObjectError::Timeout {
        op,
        key: key.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_deadlines_keep_the_earlier_and_restore_the_previous() {
        assert_eq!(remaining(), None);
        let now = Instant::now();
        let (near, far) = (
            now + Duration::from_secs(10),
            now + Duration::from_secs(100),
        );
        with_deadline(near, || {
            assert_eq!(current(), Some(near));
            with_deadline(far, || assert_eq!(current(), Some(near)));
            assert_eq!(current(), Some(near));
            with_deadline(now, || {
                assert_eq!(current(), Some(now));
                assert_eq!(remaining(), Some(Duration::ZERO));
            });
            assert_eq!(current(), Some(near));
        });
        assert_eq!(current(), None);
    }

    #[test]
    fn a_panic_restores_the_previous_deadline() {
        let outer = Instant::now() + Duration::from_secs(60);
        with_deadline(outer, || {
            let r = std::panic::catch_unwind(|| {
                with_deadline(Instant::now(), || panic!("read failed"));
            });
            assert!(r.is_err());
            assert_eq!(current(), Some(outer));
        });
        assert_eq!(current(), None);
    }

    #[test]
    fn the_deadline_belongs_to_the_thread() {
        with_deadline(Instant::now(), || {
            let other = std::thread::spawn(remaining).join().expect("thread");
            assert_eq!(other, None);
        });
    }

    #[test]
    fn bound_cuts_the_request_timeout_to_what_is_left() {
        let own = Duration::from_secs(30);
        assert_eq!(bound(own, ObjectOp::Get, "k").ok(), Some(own));
        with_deadline(Instant::now() + Duration::from_secs(1), || {
            let t = bound(own, ObjectOp::Get, "k").expect("time left");
            assert!(t <= Duration::from_secs(1) && t > Duration::from_millis(500));
        });
        with_deadline(Instant::now(), || {
            assert!(matches!(
                bound(own, ObjectOp::Get, "k"),
                Err(ObjectError::Timeout { .. })
            ));
        });
    }

    #[test]
    fn sleep_ends_at_the_deadline() {
        let t = Instant::now();
        let slept_fully = with_deadline(t + Duration::from_millis(50), || {
            sleep(Duration::from_secs(5))
        });
        assert!(!slept_fully);
        let took = t.elapsed();
        assert!(
            took >= Duration::from_millis(50) && took < Duration::from_secs(2),
            "{took:?}"
        );
        assert!(sleep(Duration::from_millis(1)));
    }
}
