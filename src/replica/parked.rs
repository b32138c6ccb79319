//! Requests waiting for a leader (`limits.leader_wait_ms`).
//!
//! While an election is in progress a node knows no leader, so it can neither serve a
//! linearizable read or a write nor redirect it. Instead of failing such a request at
//! once (the client would only retry), the node parks it here until a leader is known
//! (then it is served on the leader, or answered `NotLeader` with the leader's address),
//! or until its wait ends (then it fails definitively: nothing was proposed). A request
//! the Redis port could not forward because the leader's address refused the link waits
//! the same way, for a leader at another address.
//!
//! The node keeps one timer per parked request in its deadline wheel (at the earlier of
//! the end of the wait and the request's own deadline) and cancels it when the request
//! leaves, whichever way.
//!
//! Invariant: `bytes` is the sum of the `bytes` of the parked requests, and a request
//! is parked only while `requests.len() < PARKED_COUNT_MAX` and `bytes` stays within
//! [`PARKED_BYTES_MAX`], so waiting requests cannot exhaust the node's memory; past
//! either bound a request fails at once as it did before parking existed.

use std::collections::BTreeMap;

use super::requests::ClientRef;
use crate::codec::client::{MemberChange, Request, RequestBody};
use crate::kv::encode_command;
use crate::replica::timer::TimerId;

/// Most requests parked on one node.
pub const PARKED_COUNT_MAX: usize = 4096;
/// Most request bytes (keys, values, encoded commands) parked on one node.
pub const PARKED_BYTES_MAX: usize = 64 * 1024 * 1024;

/// One request waiting for a leader.
#[derive(Debug)]
pub struct Parked {
    /// Who waits for the answer.
    pub client: ClientRef,
    /// The request, untouched.
    pub request: Request,
    /// The log encoding of a command (as it arrived on the client port, or encoded
    /// when parked).
    pub command_bytes: Option<Vec<u8>>,
    /// The request's own deadline (arrival + `limits.request_timeout_ms`), kept when it
    /// is served after the wait.
    pub deadline_ms: u64,
    /// The leader client address the request could not be forwarded to: it waits for
    /// a leader elsewhere. `None`: it waits for any leader.
    pub unreachable: Option<String>,
    /// Its timer in the node's deadline wheel.
    pub timer: TimerId,
    bytes: usize,
}

/// The parked requests of one node, in arrival order.
#[derive(Debug, Default)]
pub struct ParkedRequests {
    /// By park id (increasing with arrival).
    requests: BTreeMap<u64, Parked>,
    next_id: u64,
    bytes: usize,
}

impl ParkedRequests {
    /// Whether nothing is parked.
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Number of parked requests.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Parks a request unless a bound is reached (then it is handed back). `schedule`
    /// is given the park id and returns the timer it scheduled for it.
    ///
    /// # Errors
    /// The request, unparked, when [`PARKED_COUNT_MAX`] or [`PARKED_BYTES_MAX`] would
    /// be exceeded.
    pub fn park(
        &mut self,
        client: ClientRef,
        request: Request,
        command_bytes: Option<&[u8]>,
        deadline_ms: u64,
        unreachable: Option<String>,
        schedule: impl FnOnce(u64) -> TimerId,
    ) -> Result<(), Request> {
        // A command is kept in its log encoding (encoded now if it was built in the
        // server): that is what its bound counts, and what is proposed after the wait.
        let command_bytes = match (&request.body, command_bytes) {
            (RequestBody::Command(_), Some(bytes)) => Some(bytes.to_vec()),
            (RequestBody::Command(command), None) => {
                let mut data = Vec::new();
                encode_command(command, &mut data);
                Some(data)
            }
            _ => None,
        };
        let bytes = body_bytes(&request.body) + command_bytes.as_ref().map_or(0, Vec::len);
        if self.requests.len() >= PARKED_COUNT_MAX || self.bytes + bytes > PARKED_BYTES_MAX {
            return Err(request);
        }
        let id = self.next_id;
        self.next_id += 1;
        let timer = schedule(id);
        self.bytes += bytes;
        let parked = Parked {
            client,
            request,
            command_bytes,
            deadline_ms,
            unreachable,
            timer,
            bytes,
        };
        self.requests.insert(id, parked);
        Ok(())
    }

    /// Takes the request parked under `id` (its timer fired), if it is still parked.
    pub fn take(&mut self, id: u64) -> Option<Parked> {
        let parked = self.requests.remove(&id)?;
        self.bytes -= parked.bytes;
        Some(parked)
    }

    /// Takes, in arrival order, every parked request for which `released` holds.
    pub fn take_released(&mut self, mut released: impl FnMut(&Parked) -> bool) -> Vec<Parked> {
        let ids: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, parked)| released(parked))
            .map(|(id, _)| *id)
            .collect();
        ids.into_iter().filter_map(|id| self.take(id)).collect()
    }

    /// Takes every request of `client` (its connection closed).
    pub fn take_client(&mut self, client: ClientRef) -> Vec<Parked> {
        self.take_released(|parked| parked.client == client)
    }
}

/// The bytes a request holds besides a command's log encoding.
fn body_bytes(body: &RequestBody) -> usize {
    const FIXED: usize = 64;
    FIXED
        + match body {
            RequestBody::Get { key, .. } => key.len(),
            RequestBody::Range { query, .. } => {
                query.start.len() + query.end.as_ref().map_or(0, Vec::len)
            }
            RequestBody::MemberChange(MemberChange::AddLearner {
                peer_addr,
                client_addr,
                ..
            }) => peer_addr.len() + client_addr.len(),
            _ => 0,
        }
}

#[cfg(test)]
mod tests {
    //! Goal: the bounds hold and requests leave in arrival order, by id, by client or by
    //! a release rule. Method: park small requests with fake timers and count bytes.

    use super::*;
    use crate::kv::{Command, Session};

    fn client(key: usize) -> ClientRef {
        ClientRef { key, generation: 1 }
    }

    fn put(request_id: u64, value_bytes: usize) -> Request {
        Request {
            request_id,
            body: RequestBody::Command(Command::Put {
                session: Session {
                    client_id: 1,
                    seq: request_id,
                },
                key: b"k".to_vec(),
                value: vec![0; value_bytes],
            }),
        }
    }

    fn timer(id: u64) -> TimerId {
        let mut wheel = crate::replica::timer::TimerWheel::new(4, 1, 0);
        wheel.schedule(id, ())
    }

    fn park(parked: &mut ParkedRequests, key: usize, request: Request) -> Result<(), Request> {
        parked.park(client(key), request, None, 100, None, timer)
    }

    #[test]
    fn leaves_in_arrival_order_by_rule_by_id_and_by_client() {
        let mut parked = ParkedRequests::default();
        for i in 0..4 {
            park(&mut parked, (i % 2) as usize, put(i, 10)).expect("room");
        }
        assert_eq!(parked.len(), 4);
        let gone = parked.take_client(client(1));
        let ids: Vec<u64> = gone.iter().map(|p| p.request.request_id).collect();
        assert_eq!(ids, vec![1, 3]);
        assert!(parked.take(1).is_none(), "#1: taken with its client");
        assert_eq!(parked.take(2).map(|p| p.request.request_id), Some(2));
        let rest = parked.take_released(|_| true);
        assert_eq!(rest.len(), 1);
        assert!(parked.is_empty());
        assert_eq!(parked.bytes, 0, "bytes return to zero");
    }

    #[test]
    fn refuses_past_the_count_and_byte_bounds() {
        let mut parked = ParkedRequests::default();
        for i in 0..PARKED_COUNT_MAX as u64 {
            park(&mut parked, 0, put(i, 0)).expect("room");
        }
        assert!(park(&mut parked, 0, put(9, 0)).is_err(), "count bound");
        let mut parked = ParkedRequests::default();
        park(&mut parked, 0, put(1, PARKED_BYTES_MAX / 2)).expect("room");
        assert!(
            park(&mut parked, 0, put(2, PARKED_BYTES_MAX / 2)).is_err(),
            "byte bound"
        );
        assert!(park(&mut parked, 0, put(3, 1000)).is_ok());
    }
}
