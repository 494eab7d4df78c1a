//! Visit counts of short links, without a Raft write per redirect.
//!
//! Each node adds up the redirects it serves in memory and, about once a second (and once more
//! on a graceful shutdown), writes them all in ONE Raft entry: per link, a compare-and-set of
//! the counter `link/{code}/visits` on the version this node last read. A counter another node
//! changed in between rejects the update; its delta stays pending for the next round. A node
//! reports (and enforces `max_visits` on) the stored count plus what it holds unflushed.
//!
//! Limits, by design: a node sees other nodes' visits only once they flushed them, so across
//! nodes a `max_visits` limit can be overshot by up to the visits each node serves in one flush
//! interval; visits held by a node that crashes are lost; a flush whose outcome is unknown (the
//! leader failed mid-write) is retried, so such a failover can count its visits twice.
//!
//! The counter records the version of the link it counts for: a link deleted and created again
//! under the same code starts from zero even if a late flush rewrote the old counter.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use raftlog::store::{Op, OpResult};
use serde::{Deserialize, Serialize};

use crate::api::error::ApiError;
use crate::server::AppState;

/// How often a node writes the visits it counted.
pub const FLUSH_INTERVAL: Duration = Duration::from_secs(1);
/// Counter updates per Raft entry (a flush of more links takes several entries).
const OPS_PER_WRITE: usize = 1000;
/// How long a flush waits for this node to apply its own write before it stops holding the
/// flushed visits as "in flight".
const APPLY_WAIT: Duration = Duration::from_secs(5);

/// The key of a link's visit counter: under the reserved link prefix, so the KV API can neither
/// read nor write it, and distinct from every link key (codes contain no `/`).
pub fn counter_key(code: &str) -> Vec<u8> {
    format!("{}{code}/visits", crate::api::links::KEY_PREFIX).into_bytes()
}

/// The stored form of a counter.
#[derive(Debug, Serialize, Deserialize)]
struct StoredCount {
    /// Version of the link counted (a counter left by an earlier link of the code is ignored).
    link_version: u64,
    count: u64,
}

/// A counter as read from the engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counter {
    /// The counter key's version (0: absent): the flush's compare-and-set expects it.
    pub version: u64,
    /// The visits stored for the link version asked about.
    pub count: u64,
}

/// Reads the counter of link `code` at `link_version` from this node's state machine.
pub async fn read_counter(
    state: &AppState,
    code: &str,
    link_version: u64,
) -> Result<Counter, ApiError> {
    let v = state.read_stale(counter_key(code)).await?;
    Ok(match v {
        None => Counter::default(),
        Some(v) => {
            let count = serde_json::from_slice::<StoredCount>(&v.value)
                .ok()
                .filter(|s| s.link_version == link_version)
                .map_or(0, |s| s.count);
            Counter {
                version: v.version,
                count,
            }
        }
    })
}

#[derive(Debug, Clone, Copy)]
struct InFlight {
    /// The counter version the update expects: while the counter still has it, the update has
    /// not been applied here and its visits count on top of the stored ones.
    expected: u64,
    delta: u64,
}

#[derive(Debug)]
struct Entry {
    link_version: u64,
    pending: u64,
    in_flight: Option<InFlight>,
}

impl Entry {
    fn local(&self, counter: Counter) -> u64 {
        let flying = self
            .in_flight
            .filter(|f| f.expected == counter.version)
            .map_or(0, |f| f.delta);
        self.pending + flying
    }
}

/// One counter update of a flush.
struct Update {
    code: String,
    link_version: u64,
    expected: u64,
    delta: u64,
}

/// The visits this node counted and has not yet seen applied, per link code.
#[derive(Debug, Default)]
pub struct Visits {
    entries: Mutex<HashMap<String, Entry>>,
    /// One flush at a time (the timer's and the shutdown's).
    flushing: tokio::sync::Mutex<()>,
}

impl Visits {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        // Held over plain counter arithmetic only: a panic leaves nothing half-updated.
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The visits of link `code` (at `link_version`): `counter` as stored plus this node's.
    pub fn total(&self, code: &str, link_version: u64, counter: Counter) -> u64 {
        let local = self
            .entries()
            .get(code)
            .filter(|e| e.link_version == link_version)
            .map_or(0, |e| e.local(counter));
        counter.count + local
    }

    /// Counts one visit unless the link's visits reached `max` (then `false`). The check and
    /// the count are one step, so concurrent redirects on this node cannot overshoot `max`.
    pub fn try_visit(
        &self,
        code: &str,
        link_version: u64,
        counter: Counter,
        max: Option<u64>,
    ) -> bool {
        let mut map = self.entries();
        let e = map.entry(code.to_string()).or_insert(Entry {
            link_version,
            pending: 0,
            in_flight: None,
        });
        if e.link_version != link_version {
            // The code names another link now: what was counted belonged to the old one.
            *e = Entry {
                link_version,
                pending: 0,
                in_flight: None,
            };
        }
        if max.is_some_and(|m| counter.count + e.local(counter) >= m) {
            return false;
        }
        e.pending += 1;
        true
    }

    /// Forgets what this node counted for `code` (its link was deleted).
    pub fn forget(&self, code: &str) {
        self.entries().remove(code);
    }

    /// Links with visits not yet written.
    pub fn pending_links(&self) -> usize {
        self.entries().values().filter(|e| e.pending > 0).count()
    }

    /// Writes the visits counted so far, in one Raft entry per [`OPS_PER_WRITE`] links, and
    /// returns how many links' counters it updated.
    pub async fn flush(&self, state: &AppState) -> Result<usize, ApiError> {
        let _one = self.flushing.lock().await;
        let todo: Vec<(String, u64)> = self
            .entries()
            .iter()
            .filter(|(_, e)| e.pending > 0 && e.in_flight.is_none())
            .map(|(c, e)| (c.clone(), e.link_version))
            .collect();
        if todo.is_empty() {
            return Ok(0);
        }
        let now = crate::api::kv::now_ms();
        let mut updates = Vec::new();
        let mut ops = Vec::new();
        for (code, link_version) in todo {
            // Local reads: a stale counter version only makes the update rejected and retried.
            // A failed read leaves the visits pending for the next flush.
            let link = match crate::api::links::lookup(state, &code).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(code, error = %e.message, "reading a link to count its visits");
                    continue;
                }
            };
            let alive = link
                .as_ref()
                .filter(|(s, v)| *v == link_version && s.expires_ms.is_none_or(|e| e > now));
            let Some((stored, _)) = alive else {
                // Deleted, expired or replaced: its visits count for nothing.
                let mut map = self.entries();
                if map
                    .get(&code)
                    .is_some_and(|e| e.link_version == link_version)
                {
                    map.remove(&code);
                }
                continue;
            };
            let counter = match read_counter(state, &code, link_version).await {
                Ok(c) => c,
                Err(e) => {
                    tracing::warn!(code, error = %e.message, "reading a visit counter");
                    continue;
                }
            };
            let ttl_ms = stored.expires_ms.map(|e| e.saturating_sub(now).max(1));
            let delta = {
                let mut map = self.entries();
                let Some(e) = map
                    .get_mut(&code)
                    .filter(|e| e.link_version == link_version)
                else {
                    continue;
                };
                let delta = std::mem::take(&mut e.pending);
                e.in_flight = Some(InFlight {
                    expected: counter.version,
                    delta,
                });
                delta
            };
            // `Value`'s Display cannot fail, unlike `to_vec` of a type: nothing can strand the
            // visits just moved to in flight.
            let value = serde_json::json!({
                "link_version": link_version,
                "count": counter.count.saturating_add(delta),
            })
            .to_string();
            ops.push(Op::CompareAndSet {
                key: counter_key(&code),
                expected_version: counter.version,
                new: Some(value.into_bytes()),
                ttl_ms,
            });
            updates.push(Update {
                code,
                link_version,
                expected: counter.version,
                delta,
            });
        }
        let mut written = 0;
        let mut first_error = None;
        while !updates.is_empty() {
            let n = updates.len().min(OPS_PER_WRITE);
            let batch: Vec<Update> = updates.drain(..n).collect();
            let batch_ops: Vec<Op> = ops.drain(..n).collect();
            let results = match crate::cluster::router::write(&state.ranges, batch_ops).await {
                Ok(r) if r.len() == batch.len() => Some(r),
                Ok(r) => {
                    first_error.get_or_insert(ApiError::unavailable(format!(
                        "{} results for {} counter updates",
                        r.len(),
                        batch.len()
                    )));
                    None
                }
                Err(e) => {
                    first_error.get_or_insert(e);
                    None
                }
            };
            written += self.settle(state, batch, results).await;
        }
        match first_error {
            Some(e) => Err(e),
            None => Ok(written),
        }
    }

    /// Applies a flush's results: applied updates stop being held once this node applied them;
    /// rejected ones (and all, when the write failed) go back to pending.
    async fn settle(
        &self,
        state: &AppState,
        batch: Vec<Update>,
        results: Option<Vec<OpResult>>,
    ) -> usize {
        let mut applied = Vec::new();
        let mut retry = Vec::new();
        // Per range, the highest version written (versions are log indexes of the range's own
        // group).
        let mut highest: std::collections::BTreeMap<
            u64,
            (std::sync::Arc<crate::cluster::range::Range>, u64),
        > = std::collections::BTreeMap::new();
        match results {
            Some(results) => {
                for (u, r) in batch.into_iter().zip(results) {
                    match r {
                        OpResult::Applied { version, .. } => {
                            if let Some((d, r)) = state.ranges.route(&counter_key(&u.code)) {
                                let e = highest.entry(d.id).or_insert((r, 0));
                                e.1 = e.1.max(version);
                            }
                            applied.push(u);
                        }
                        _ => retry.push(u),
                    }
                }
            }
            None => retry = batch,
        }
        // Until this node applied the writes, its local reads miss them: keep counting the
        // visits as in flight meanwhile (their `expected` version still matches).
        for (range, version) in highest.into_values() {
            range.wait_applied(version, APPLY_WAIT).await;
        }
        let mut map = self.entries();
        let n = applied.len();
        for u in applied {
            if let Some(e) = map
                .get_mut(&u.code)
                .filter(|e| e.link_version == u.link_version)
            {
                e.in_flight = None;
                if e.pending == 0 {
                    map.remove(&u.code);
                }
            }
        }
        for u in retry {
            if let Some(e) = map
                .get_mut(&u.code)
                .filter(|e| e.link_version == u.link_version)
            {
                if e.in_flight.is_some_and(|f| f.expected == u.expected) {
                    e.in_flight = None;
                    e.pending += u.delta;
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_counts_and_limits() {
        let v = Visits::default();
        let c0 = Counter::default();
        assert!(v.try_visit("abc", 7, c0, Some(2)));
        assert!(v.try_visit("abc", 7, c0, Some(2)));
        assert!(
            !v.try_visit("abc", 7, c0, Some(2)),
            "the limit holds locally"
        );
        assert_eq!(v.total("abc", 7, c0), 2);
        assert_eq!(v.total("abc", 8, c0), 0, "another link of the code");
        // In flight: counted while the counter still has the expected version, not after.
        {
            let mut m = v.entries();
            let e = m.get_mut("abc").unwrap();
            e.in_flight = Some(InFlight {
                expected: 0,
                delta: 2,
            });
            e.pending = 0;
        }
        assert_eq!(v.total("abc", 7, c0), 2);
        let applied = Counter {
            version: 40,
            count: 2,
        };
        assert_eq!(v.total("abc", 7, applied), 2, "not counted twice");
        // A new link of the same code starts afresh.
        assert!(v.try_visit("abc", 9, c0, Some(1)));
        assert!(!v.try_visit("abc", 9, c0, Some(1)));
        assert_eq!(v.pending_links(), 1);
        v.forget("abc");
        assert_eq!(v.total("abc", 9, c0), 0);
        assert_eq!(counter_key("x-Y_1"), b"link/x-Y_1/visits");
    }
}
