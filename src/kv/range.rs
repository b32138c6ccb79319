//! Ordered range reads over the applied state: [`RangeQuery`] (keys in `[start, end)`,
//! at most `limit`, keys only or a count only) answered by [`KvStore::range`] with a
//! [`RangeResult`], as etcd's `get --prefix` / `--from-key`. The native protocol serves
//! them linearizably through ReadIndex like a Get (or from local state when stale); the
//! Redis port builds KEYS, SCAN, DBSIZE and RANDOMKEY on them.
//!
//! Invariant: one answer holds at most [`RANGE_REPLY_BYTES_MAX`] bytes of keys and
//! values (and at least one entry when the range is not empty), so it fits a frame and
//! one read cannot hold the loop for long; `more` says that keys of the range follow
//! the last one returned, and the caller goes on from just after it
//! ([`RangeQuery::after`]). A count walks the range without copying (the whole store: its
//! length, in O(1)).

use super::store::KvStore;

/// Most key and value bytes one [`RangeResult`] carries.
pub const RANGE_REPLY_BYTES_MAX: usize = 1024 * 1024;

/// A range read: the keys `k` with `start <= k < end` in byte order.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeQuery {
    /// The first key (inclusive); empty: from the first key.
    pub start: Vec<u8>,
    /// The end (exclusive); `None`: to the last key.
    pub end: Option<Vec<u8>>,
    /// The most entries answered (or counted); 0: no limit.
    pub limit: u64,
    /// Leave the values out.
    pub keys_only: bool,
    /// Answer only the number of keys (no entries).
    pub count_only: bool,
}

/// The answer to a [`RangeQuery`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RangeResult {
    /// The entries in key order (values empty when `keys_only`; none when
    /// `count_only`).
    pub entries: Vec<(Vec<u8>, Vec<u8>)>,
    /// The number of entries answered, or counted when `count_only`.
    pub count: u64,
    /// More keys of the range follow (beyond the limit or the reply's byte bound).
    pub more: bool,
}

impl RangeQuery {
    /// The keys starting with `prefix`.
    pub fn prefix(prefix: &[u8]) -> RangeQuery {
        RangeQuery {
            start: prefix.to_vec(),
            end: prefix_end(prefix),
            ..RangeQuery::default()
        }
    }

    /// The same query continued just after `key` (the last key of an answer).
    pub fn after(&self, key: &[u8]) -> RangeQuery {
        let mut start = key.to_vec();
        start.push(0);
        RangeQuery {
            start,
            ..self.clone()
        }
    }
}

/// The smallest key above every key that starts with `prefix`: `None` when there is
/// none (the prefix is empty or all 0xff).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

impl KvStore {
    /// Answers `query` from the applied state (linearizable only after a ReadIndex
    /// round confirmed the applied index, as [`KvStore::get`]), every key included
    /// (also one whose expiry time has passed but whose delete is not applied yet).
    pub fn range(&self, query: &RangeQuery) -> RangeResult {
        self.range_at(query, 0)
    }

    /// As [`KvStore::range`] for a reader at `now_ms` (unix milliseconds): keys whose
    /// expiry time is not after it are left out, as [`KvStore::get_at`] does.
    pub fn range_at(&self, query: &RangeQuery, now_ms: u64) -> RangeResult {
        let limit = if query.limit == 0 {
            u64::MAX
        } else {
            query.limit
        };
        let below_end = |key: &[u8]| query.end.as_deref().is_none_or(|end| key < end);
        let none_expired = self.expired_keys(now_ms, 1).is_empty();
        let mut keys = self
            .data
            .iter_from(&query.start[..])
            .take_while(|(key, _)| below_end(key))
            .filter(|(key, _)| none_expired || self.get_at(key, now_ms).is_some());
        if query.count_only {
            if query.start.is_empty() && query.end.is_none() {
                // The expired keys waiting for their delete, counted from the time
                // index: O(expired), not a walk of the whole store.
                let due = if none_expired {
                    0
                } else {
                    self.expiries.due_count(now_ms)
                };
                let len = self.data.len().saturating_sub(due) as u64;
                return RangeResult {
                    entries: Vec::new(),
                    count: len.min(limit),
                    more: len > limit,
                };
            }
            let count = keys.by_ref().take(limit as usize).count() as u64;
            let more = count == limit && keys.next().is_some();
            return RangeResult {
                entries: Vec::new(),
                count,
                more,
            };
        }
        let mut result = RangeResult::default();
        let mut bytes = 0;
        for (key, value) in keys {
            let value: &[u8] = if query.keys_only { &[] } else { value };
            let full = result.count == limit
                || (result.count > 0 && bytes + key.len() + value.len() > RANGE_REPLY_BYTES_MAX);
            if full {
                result.more = true;
                break;
            }
            bytes += key.len() + value.len();
            result.entries.push((key.to_vec(), value.to_vec()));
            result.count += 1;
        }
        result
    }
}

#[cfg(test)]
mod tests {
    //! Goal: a range answers exactly the keys of `[start, end)` in order, within its
    //! limit and byte bound, says when more follow, and paging with `after` visits every
    //! key once; prefixes end where they should.
    use super::*;
    use crate::kv::{Command, KvConfig, Session, command_to_vec};

    fn store(keys: &[&str]) -> KvStore {
        let mut kv = KvStore::new(KvConfig::default());
        let mut index = 1;
        kv.apply(index, &command_to_vec(&Command::RegisterSession));
        for (seq, key) in keys.iter().enumerate() {
            index += 1;
            let put = Command::Put {
                session: Session {
                    client_id: 1,
                    seq: seq as u64 + 1,
                },
                key: key.as_bytes().to_vec(),
                value: format!("v{key}").into_bytes(),
            };
            kv.apply(index, &command_to_vec(&put));
        }
        kv
    }

    fn keys(result: &RangeResult) -> Vec<String> {
        let text = |k: &Vec<u8>| String::from_utf8_lossy(k).into_owned();
        result.entries.iter().map(|(k, _)| text(k)).collect()
    }

    #[test]
    fn ranges_answer_the_keys_between_start_and_end() {
        let kv = store(&["a", "ab", "abc", "b", "ba", "c"]);
        let query = |start: &str, end: Option<&str>, limit| RangeQuery {
            start: start.as_bytes().to_vec(),
            end: end.map(|e| e.as_bytes().to_vec()),
            limit,
            ..RangeQuery::default()
        };
        let cases = [
            (
                query("", None, 0),
                vec!["a", "ab", "abc", "b", "ba", "c"],
                false,
            ),
            (query("ab", Some("b"), 0), vec!["ab", "abc"], false),
            (query("b", None, 1), vec!["b"], true),
            (query("b", None, 3), vec!["b", "ba", "c"], false),
            (query("d", None, 0), vec![], false),
            (RangeQuery::prefix(b"ab"), vec!["ab", "abc"], false),
            (RangeQuery::prefix(b"b"), vec!["b", "ba"], false),
        ];
        for (i, (query, want, more)) in cases.into_iter().enumerate() {
            let got = kv.range(&query);
            assert_eq!(keys(&got), want, "#{i}: {query:?}");
            assert_eq!(got.more, more, "#{i}: more");
            assert_eq!(got.count, want.len() as u64, "#{i}: count");
            let counted = kv.range(&RangeQuery {
                count_only: true,
                ..query.clone()
            });
            assert_eq!((counted.count, counted.more), (got.count, got.more), "#{i}");
            assert!(counted.entries.is_empty());
        }
        let only_keys = kv.range(&RangeQuery {
            keys_only: true,
            ..RangeQuery::prefix(b"c")
        });
        assert_eq!(only_keys.entries, vec![(b"c".to_vec(), Vec::new())]);
        let values = kv.range(&RangeQuery::prefix(b"c"));
        assert_eq!(values.entries, vec![(b"c".to_vec(), b"vc".to_vec())]);
        assert_eq!(prefix_end(b"a\xff\xff"), Some(b"b".to_vec()));
        assert_eq!(prefix_end(b"\xff"), None);
    }

    #[test]
    fn paging_after_the_last_key_visits_every_key_once() {
        let names: Vec<String> = (0..250).map(|i| format!("k{i:03}")).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let kv = store(&refs);
        let mut query = RangeQuery {
            limit: 7,
            keys_only: true,
            ..RangeQuery::default()
        };
        let mut seen = Vec::new();
        loop {
            let page = kv.range(&query);
            seen.extend(keys(&page));
            match page.entries.last() {
                Some((last, _)) if page.more => query = query.after(last),
                _ => break,
            }
        }
        assert_eq!(seen, names);
    }
}
