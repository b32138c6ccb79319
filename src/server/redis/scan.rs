//! The Redis commands built on the kv's range reads: KEYS (every page, filtered by the
//! glob), SCAN (one page from the cursor), DBSIZE (a count) and RANDOMKEY (the first
//! key after a random point). Each is a job of [`RedisConn`](super::RedisConn) that
//! sends one `Range` request per step ([`RangeJob::advance`]).
//!
//! Invariant: a MATCH pattern only narrows the range to its literal prefix (every key
//! it can match has that prefix), so narrowing never drops a key; the filter is applied
//! to what the range returns.

use super::command::{Bytes, Scan};
use super::cursor::{self, Resume};
use super::{Job, Step, glob};
use crate::codec::client::RequestBody;
use crate::codec::resp::RespValue;
use crate::kv::{RangeQuery, RangeResult, prefix_end};

/// The commands built on range reads.
#[derive(Debug)]
pub(super) enum RangeJob {
    /// KEYS: the matching keys found so far (every page is read).
    Keys { pattern: Bytes, found: Vec<Bytes> },
    /// SCAN: one page.
    Scan(Scan),
    /// DBSIZE: a linearizable count.
    Dbsize,
    /// RANDOMKEY: the first key at or after a random point, else the first key.
    Randomkey { from_start: bool },
}

/// The range of the keys `pattern` can match, from `start` on: those with its literal
/// prefix.
fn pattern_range(pattern: Option<&[u8]>, start: Vec<u8>) -> RangeQuery {
    let prefix = pattern.map_or(&[][..], glob::literal_prefix);
    RangeQuery {
        start: start.max(prefix.to_vec()),
        end: prefix_end(prefix),
        keys_only: true,
        ..RangeQuery::default()
    }
}

impl RangeJob {
    /// The job of a range command, with its first page.
    pub(super) fn start(self, random: u64) -> Job {
        let query = match &self {
            RangeJob::Keys { pattern, .. } => pattern_range(Some(pattern), Vec::new()),
            RangeJob::Scan(scan) => {
                let start = match &scan.resume {
                    None => Vec::new(),
                    Some(Resume::From(prefix)) => prefix.clone(),
                    Some(Resume::After(key)) => [key.as_slice(), &[0]].concat(),
                };
                RangeQuery {
                    limit: scan.count,
                    ..pattern_range(scan.pattern.as_deref(), start)
                }
            }
            RangeJob::Dbsize => RangeQuery {
                count_only: true,
                ..RangeQuery::default()
            },
            RangeJob::Randomkey { .. } => RangeQuery {
                start: random.to_be_bytes().to_vec(),
                limit: 1,
                keys_only: true,
                ..RangeQuery::default()
            },
        };
        Job::Range { what: self, query }
    }

    /// The next step once page `result` of `query` arrived: another page or the reply.
    pub(super) fn advance(&mut self, query: &mut RangeQuery, result: RangeResult) -> Step {
        let again = |query: &RangeQuery| {
            Step::Send(vec![RequestBody::Range {
                query: query.clone(),
                stale: false,
            }])
        };
        let last = result.entries.last().map(|(key, _)| key.clone());
        match self {
            RangeJob::Keys { pattern, found } => {
                found.extend(
                    result
                        .entries
                        .into_iter()
                        .map(|(key, _)| key)
                        .filter(|key| glob::matches(pattern, key)),
                );
                match last {
                    Some(last) if result.more => {
                        *query = query.after(&last);
                        again(query)
                    }
                    _ => Step::Done(bulks(std::mem::take(found))),
                }
            }
            RangeJob::Scan(scan) => {
                let next = match last {
                    Some(last) if result.more => cursor::encode(&last),
                    _ => "0".into(),
                };
                let keys = result
                    .entries
                    .into_iter()
                    .map(|(key, _)| key)
                    .filter(|key| {
                        !scan.no_type_match
                            && scan.pattern.as_ref().is_none_or(|p| glob::matches(p, key))
                    })
                    .collect();
                Step::Done(RespValue::Array(Some(vec![
                    RespValue::bulk(next),
                    bulks(keys),
                ])))
            }
            RangeJob::Dbsize => Step::Done(RespValue::Integer(result.count as i64)),
            RangeJob::Randomkey { from_start } => match (last, *from_start) {
                (Some(key), _) => Step::Done(RespValue::Bulk(Some(key))),
                (None, false) => {
                    *from_start = true;
                    query.start.clear();
                    again(query)
                }
                (None, true) => Step::Done(RespValue::Bulk(None)),
            },
        }
    }
}

fn bulks(keys: Vec<Bytes>) -> RespValue {
    RespValue::Array(Some(
        keys.into_iter().map(|k| RespValue::Bulk(Some(k))).collect(),
    ))
}
