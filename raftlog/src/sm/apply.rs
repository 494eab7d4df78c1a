//! Evaluating a write batch: conditions, versions and expiries, as a pure function of the entry
//! (its index and the leader's clock) and the state before it.

use std::collections::BTreeMap;

use lsm::WriteBatch;

use super::value::{self, Versioned};
use crate::store::{Op, OpResult};

/// What a key holds after the batch: the last op on it wins.
enum Final {
    Put {
        value: Vec<u8>,
        expires_at_ms: Option<u64>,
    },
    Delete,
}

/// Evaluates `ops` of the entry at `index` with the leader's clock `now_ms`. `current` reads a
/// key's live value (judging expiry at `now_ms`) from the state before the entry. Returns the
/// batch to apply (one operation per key written) and one result per op.
pub(crate) fn evaluate<E>(
    index: u64,
    now_ms: u64,
    ops: &[Op],
    mut current: impl FnMut(&[u8]) -> Result<Option<Versioned>, E>,
) -> Result<(WriteBatch, Vec<OpResult>), E> {
    let mut finals: BTreeMap<Vec<u8>, Final> = BTreeMap::new();
    let mut results = Vec::with_capacity(ops.len());
    let expiry = |ttl: Option<u64>| ttl.map(|t| now_ms.saturating_add(t));
    for op in ops {
        let key = op.key();
        // A key written earlier in this batch has this entry's version.
        let (cur_version, cur_value) = match finals.get(key) {
            Some(Final::Put {
                value,
                expires_at_ms,
            }) if expires_at_ms.is_none_or(|e| e > now_ms) => (index, Some(value.clone())),
            Some(_) => (0, None),
            None if matches!(op, Op::PutIfAbsent { .. } | Op::CompareAndSet { .. }) => {
                match current(key)? {
                    Some(v) => (v.version, Some(v.value.to_vec())),
                    None => (0, None),
                }
            }
            None => (0, None),
        };
        let (result, fin) = match op {
            Op::Put { value, .. } => (
                OpResult::Done { version: index },
                Some(Final::Put {
                    value: value.clone(),
                    expires_at_ms: None,
                }),
            ),
            Op::PutWithTtl { value, ttl_ms, .. } => (
                OpResult::Done { version: index },
                Some(Final::Put {
                    value: value.clone(),
                    expires_at_ms: expiry(Some(*ttl_ms)),
                }),
            ),
            Op::Delete { .. } => (OpResult::Done { version: index }, Some(Final::Delete)),
            Op::PutIfAbsent { value, ttl_ms, .. } => {
                if cur_value.is_none() {
                    (
                        OpResult::Applied {
                            version: index,
                            previous_version: 0,
                        },
                        Some(Final::Put {
                            value: value.clone(),
                            expires_at_ms: expiry(*ttl_ms),
                        }),
                    )
                } else {
                    (
                        OpResult::Rejected {
                            current_version: cur_version,
                            current: cur_value,
                        },
                        None,
                    )
                }
            }
            Op::CompareAndSet {
                expected_version,
                new,
                ttl_ms,
                ..
            } => {
                let live_version = if cur_value.is_some() { cur_version } else { 0 };
                if live_version == *expected_version {
                    let fin = match new {
                        Some(v) => Final::Put {
                            value: v.clone(),
                            expires_at_ms: expiry(*ttl_ms),
                        },
                        None => Final::Delete,
                    };
                    (
                        OpResult::Applied {
                            version: index,
                            previous_version: live_version,
                        },
                        Some(fin),
                    )
                } else {
                    (
                        OpResult::Rejected {
                            current_version: live_version,
                            current: cur_value,
                        },
                        None,
                    )
                }
            }
        };
        if let Some(f) = fin {
            finals.insert(key.to_vec(), f);
        }
        results.push(result);
    }
    let mut batch = WriteBatch::new();
    for (key, f) in finals {
        match f {
            Final::Put {
                value,
                expires_at_ms: None,
            } => batch.put(&key, value::encode(index, &value)),
            Final::Put {
                value,
                expires_at_ms: Some(e),
            } => batch.put_with_expiry(&key, value::encode(index, &value), e),
            Final::Delete => batch.delete(&key),
        }
    }
    Ok((batch, results))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use bytes::Bytes;

    use super::*;

    fn run(
        state: &HashMap<Vec<u8>, Versioned>,
        index: u64,
        ops: &[Op],
    ) -> (WriteBatch, Vec<OpResult>) {
        evaluate::<()>(index, 1000, ops, |k| Ok(state.get(k).cloned())).unwrap()
    }

    fn put_if_absent(k: &str, v: &str) -> Op {
        Op::PutIfAbsent {
            key: k.into(),
            value: v.into(),
            ttl_ms: None,
        }
    }

    fn cas(k: &str, expected: u64, new: Option<&str>) -> Op {
        Op::CompareAndSet {
            key: k.into(),
            expected_version: expected,
            new: new.map(Into::into),
            ttl_ms: None,
        }
    }

    #[test]
    fn conditions_see_the_state_and_earlier_ops_of_the_batch() {
        let mut state = HashMap::new();
        state.insert(
            b"a".to_vec(),
            Versioned {
                version: 5,
                value: Bytes::from_static(b"old"),
            },
        );
        let (batch, r) = run(
            &state,
            9,
            &[
                put_if_absent("a", "x"),
                cas("a", 4, Some("y")),
                cas("a", 5, Some("z")),
                cas("a", 9, None),
                put_if_absent("a", "again"),
                cas("b", 0, Some("new")),
            ],
        );
        assert_eq!(
            r,
            vec![
                OpResult::Rejected {
                    current_version: 5,
                    current: Some(b"old".to_vec())
                },
                OpResult::Rejected {
                    current_version: 5,
                    current: Some(b"old".to_vec())
                },
                OpResult::Applied {
                    version: 9,
                    previous_version: 5
                },
                OpResult::Applied {
                    version: 9,
                    previous_version: 9
                },
                OpResult::Applied {
                    version: 9,
                    previous_version: 0
                },
                OpResult::Applied {
                    version: 9,
                    previous_version: 0
                },
            ]
        );
        // One operation per key: the last one.
        assert_eq!(batch.len(), 2);
    }

    #[test]
    fn ttl_of_zero_is_expired_within_the_batch() {
        let state = HashMap::new();
        let (_, r) = run(
            &state,
            3,
            &[
                Op::PutWithTtl {
                    key: b"k".to_vec(),
                    value: b"v".to_vec(),
                    ttl_ms: 0,
                },
                put_if_absent("k", "w"),
            ],
        );
        assert_eq!(
            r[1],
            OpResult::Applied {
                version: 3,
                previous_version: 0
            }
        );
    }
}
