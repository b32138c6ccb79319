//! Round-trip times of replication messages to each peer, for the
//! `raftkv_peer_round_trip_seconds` histogram: the time from sending an append (or a
//! heartbeat) to the answer that acknowledges it. The driver calls
//! [`RoundTrips::on_sent`] for every message it sends and [`RoundTrips::on_received`]
//! for every message it receives, with its clock in microseconds (nothing here reads
//! a clock).
//!
//! An append is acknowledged by the first successful answer whose match index reaches
//! its last entry; the newest append an answer covers gives the sample (older ones it
//! also covers were pipelined behind it and are dropped without one). A rejection
//! forgets the peer's appends in flight (the leader resends from another index). A
//! heartbeat is timed from the oldest one unanswered, unless that is older than
//! [`HEARTBEAT_STALE_US`] (lost, or the peer was down), then from the next one.
//!
//! Invariant: at most [`INFLIGHT_MAX`] appends are remembered per peer, in the order
//! sent; a full queue drops its oldest.

use std::collections::{BTreeMap, VecDeque};

use crate::raft::message::{Message, MessageBody, NodeId};

/// Appends remembered per peer (the core's inflight window is smaller by default).
pub const INFLIGHT_MAX: usize = 256;

/// A heartbeat unanswered for this long (10 s) is taken as lost.
pub const HEARTBEAT_STALE_US: u64 = 10_000_000;

#[derive(Debug, Default)]
struct InFlight {
    /// (last index, sent at), in the order sent.
    appends: VecDeque<(u64, u64)>,
    /// When the oldest unanswered heartbeat was sent.
    heartbeat_sent_us: Option<u64>,
}

/// The replication messages in flight to each peer.
#[derive(Debug, Default)]
pub struct RoundTrips {
    peers: BTreeMap<NodeId, InFlight>,
}

impl RoundTrips {
    /// Nothing in flight.
    pub fn new() -> RoundTrips {
        RoundTrips::default()
    }

    /// `message` was sent at `now_us`.
    pub fn on_sent(&mut self, message: &Message, now_us: u64) {
        match &message.body {
            MessageBody::Append(append) => {
                let last = append.prev_log_index + append.entries.len() as u64;
                let peer = self.peers.entry(message.to).or_default();
                if peer.appends.len() == INFLIGHT_MAX {
                    peer.appends.pop_front();
                }
                peer.appends.push_back((last, now_us));
            }
            MessageBody::Heartbeat(_) => {
                let peer = self.peers.entry(message.to).or_default();
                let stale = peer
                    .heartbeat_sent_us
                    .is_some_and(|sent| now_us.saturating_sub(sent) > HEARTBEAT_STALE_US);
                if peer.heartbeat_sent_us.is_none() || stale {
                    peer.heartbeat_sent_us = Some(now_us);
                }
            }
            _ => {}
        }
    }

    /// `message` arrived at `now_us`; returns the round trip it completes, in µs.
    pub fn on_received(&mut self, message: &Message, now_us: u64) -> Option<u64> {
        let peer = self.peers.get_mut(&message.from)?;
        match &message.body {
            MessageBody::AppendResponse(response) if response.reject => {
                peer.appends.clear();
                None
            }
            MessageBody::AppendResponse(response) => {
                let mut newest = None;
                while let Some(&(last, sent)) = peer.appends.front() {
                    if last > response.index {
                        break;
                    }
                    newest = Some(sent);
                    peer.appends.pop_front();
                }
                newest.map(|sent| now_us.saturating_sub(sent))
            }
            MessageBody::HeartbeatResponse(_) => peer
                .heartbeat_sent_us
                .take()
                .map(|sent| now_us.saturating_sub(sent)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    //! Goal: each answer yields the time since the message it acknowledges was sent;
    //! rejections, unknown peers and stale heartbeats yield nothing misleading.
    use super::*;
    use crate::raft::message::{
        AppendRequest, AppendResponse, Entry, EntryKind, Heartbeat, HeartbeatResponse,
    };

    fn append(to: NodeId, prev: u64, count: u64) -> Message {
        let entries = (prev + 1..=prev + count)
            .map(|index| Entry {
                index,
                term: 1,
                kind: EntryKind::Normal,
                data: Vec::new().into(),
            })
            .collect();
        let body = MessageBody::Append(AppendRequest {
            prev_log_index: prev,
            prev_log_term: 1,
            entries,
            commit: 0,
        });
        Message {
            from: 1,
            to,
            term: 1,
            body,
        }
    }

    fn answer(from: NodeId, index: u64, reject: bool) -> Message {
        let body = MessageBody::AppendResponse(AppendResponse {
            reject,
            index,
            conflict_term: 0,
            conflict_index: 0,
        });
        Message {
            from,
            to: 1,
            term: 1,
            body,
        }
    }

    fn heartbeat(to: NodeId) -> Message {
        let body = MessageBody::Heartbeat(Heartbeat {
            commit: 0,
            context: 0,
        });
        Message {
            from: 1,
            to,
            term: 1,
            body,
        }
    }

    fn heartbeat_answer(from: NodeId) -> Message {
        let body = MessageBody::HeartbeatResponse(HeartbeatResponse { context: 0 });
        Message {
            from,
            to: 1,
            term: 1,
            body,
        }
    }

    #[test]
    fn appends_are_timed_by_the_answer_that_covers_them() {
        let mut rt = RoundTrips::new();
        rt.on_sent(&append(2, 0, 3), 100); // entries 1..=3
        rt.on_sent(&append(2, 3, 2), 150); // entries 4..=5
        rt.on_sent(&append(3, 0, 3), 160);
        assert_eq!(rt.on_received(&answer(2, 2, false), 200), None, "partial");
        assert_eq!(rt.on_received(&answer(2, 3, false), 400), Some(300));
        assert_eq!(rt.on_received(&answer(3, 5, false), 500), Some(340));
        assert_eq!(rt.on_received(&answer(2, 5, false), 900), Some(750));
        assert_eq!(
            rt.on_received(&answer(2, 5, false), 950),
            None,
            "a duplicate"
        );
    }

    #[test]
    fn pipelined_appends_take_the_newest_covered() {
        let mut rt = RoundTrips::new();
        rt.on_sent(&append(2, 0, 1), 100);
        rt.on_sent(&append(2, 1, 1), 200);
        assert_eq!(rt.on_received(&answer(2, 2, false), 260), Some(60));
    }

    #[test]
    fn a_rejection_forgets_the_appends_in_flight() {
        let mut rt = RoundTrips::new();
        rt.on_sent(&append(2, 10, 1), 100);
        assert_eq!(rt.on_received(&answer(2, 10, true), 200), None);
        assert_eq!(rt.on_received(&answer(2, 11, false), 300), None);
        assert_eq!(rt.on_received(&answer(9, 11, false), 300), None, "unknown");
    }

    #[test]
    fn heartbeats_are_timed_from_the_oldest_unanswered_unless_stale() {
        let mut rt = RoundTrips::new();
        rt.on_sent(&heartbeat(2), 1_000);
        rt.on_sent(&heartbeat(2), 2_000);
        assert_eq!(rt.on_received(&heartbeat_answer(2), 2_500), Some(1_500));
        assert_eq!(rt.on_received(&heartbeat_answer(2), 2_600), None);
        rt.on_sent(&heartbeat(2), 10_000);
        let later = 10_000 + HEARTBEAT_STALE_US + 1;
        rt.on_sent(&heartbeat(2), later);
        assert_eq!(rt.on_received(&heartbeat_answer(2), later + 70), Some(70));
    }

    #[test]
    fn the_queue_is_bounded() {
        let mut rt = RoundTrips::new();
        for i in 0..(INFLIGHT_MAX as u64 + 10) {
            rt.on_sent(&append(2, i, 1), i);
        }
        assert_eq!(rt.peers[&2].appends.len(), INFLIGHT_MAX);
        assert_eq!(rt.peers[&2].appends.front(), Some(&(11, 10)));
    }
}
