//! Client requests: served at once, proposed and waited on, redirected, or parked until
//! a leader is known; and their deadlines (`limits.request_timeout_ms`) in the driver's
//! millisecond clock.
//!
//! A client write is acknowledged only when its entry is applied, after it committed
//! (durable on a majority, this replica's copy included by an earlier sync). While no
//! leader is known, reads, writes and membership changes are parked ([`super::parked`])
//! for at most `limits.leader_wait_ms`; they are served or redirected at the start of
//! the next `before_sleep` after a leader appears.
//!
//! Invariant: every waiting request (pending write, read, parked request) has exactly
//! one timer in `deadlines`, cancelled when it is answered or forgotten.

use std::sync::Arc;

use log::info;

use super::reads::{PendingRead, ReadWhat};
use super::{ReplicaLog, SnapshotWriter};
use crate::codec::client::{Request, RequestBody, Response, ResponseBody};
use crate::kv::command::encoded_len;
use crate::kv::{Command, CommandResult, encode_command};
use crate::raft::message::{Message, NodeId};
use crate::raft::{self, Role};
use crate::replica::timer::{TimerId, TimerWheel};

use super::Replica;

/// A client connection as the replica knows it: slab key plus generation, so a reply to
/// a connection that has since closed is never delivered to a newer one in the same slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ClientRef {
    /// Slab key of the connection.
    pub key: usize,
    /// Generation of the connection in that slot.
    pub generation: u64,
}

/// Where the replica puts what it wants sent. Implemented by the event loop's network
/// and by the simulation.
pub trait Outbox {
    /// Queues a Raft message for its recipient; returns the bytes queued (0 if dropped).
    fn send(&mut self, message: &Message) -> usize;
    /// Queues a reply for a client.
    fn reply(&mut self, client: ClientRef, response: Response);
    /// Writes queued output now (used to get the leader's appends out before its sync).
    fn flush_now(&mut self);
}

/// A write waiting for its entry to be applied.
pub(super) struct PendingWrite {
    pub(super) client: ClientRef,
    pub(super) request_id: u64,
    /// The term the entry was proposed in.
    pub(super) term: u64,
    pub(super) deadline: TimerId,
}

/// A client request deadline in the timer wheel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Deadline {
    /// The write proposed at this log index.
    Write(u64),
    /// A linearizable read.
    Read(ClientRef, u64),
    /// The end of a parked request's wait for a leader, by park id.
    Parked(u64),
}

/// Who waits for a reply, whatever the request was.
pub(super) struct Waiter {
    pub(super) client: ClientRef,
    pub(super) request_id: u64,
    pub(super) deadline: TimerId,
}

impl From<PendingWrite> for Waiter {
    fn from(write: PendingWrite) -> Waiter {
        Waiter {
            client: write.client,
            request_id: write.request_id,
            deadline: write.deadline,
        }
    }
}

/// Replies to a waiting request and cancels its deadline.
pub(super) fn finish(
    deadlines: &mut TimerWheel<Deadline>,
    out: &mut impl Outbox,
    waiter: Waiter,
    body: ResponseBody,
) {
    deadlines.cancel(waiter.deadline);
    reply_to(out, waiter, body);
}

/// Replies to a waiting request (its deadline already fired or cancelled).
fn reply_to(out: &mut impl Outbox, waiter: Waiter, body: ResponseBody) {
    let response = Response {
        request_id: waiter.request_id,
        body,
    };
    out.reply(waiter.client, response);
}

impl<L: ReplicaLog, W: SnapshotWriter> Replica<L, W> {
    /// A client connection closed: forget what it was waiting for (its writes may
    /// still commit; nobody is told), wherever its reads wait, and cancel their
    /// deadlines.
    pub fn on_client_closed(&mut self, client: ClientRef) {
        for parked in self.parked.take_client(client) {
            self.deadlines.cancel(parked.timer);
        }
        let deadlines = &mut self.deadlines;
        self.pending_writes.retain(|_, write| {
            let keep = write.client != client;
            if !keep {
                deadlines.cancel(write.deadline);
            }
            keep
        });
        self.reads.forget_client(client, deadlines);
    }

    /// A decoded client request at `now_ms` (the driver's clock). Returns the reply when
    /// it can be given at once; otherwise the reply comes from `before_sleep`, or a
    /// timeout from [`Replica::expire_deadlines`]. While no leader is known, a read,
    /// write or membership change waits for one (`limits.leader_wait_ms`).
    ///
    /// `command_bytes`: for a [`RequestBody::Command`], the bytes it was decoded from
    /// (its log encoding, from `decode_request_with_command_bytes`), proposed as they
    /// are; `None` (requests built in the server, as the Redis port's) encodes the
    /// command. Ignored for other requests.
    pub fn on_client_request(
        &mut self,
        client: ClientRef,
        request: Request,
        command_bytes: Option<&[u8]>,
        now_ms: u64,
    ) -> Option<Response> {
        let deadline_ms = now_ms + self.config.limits.request_timeout_ms;
        let raft = self.raw.raft();
        let waits = matches!(
            request.body,
            RequestBody::Get { stale: false, .. }
                | RequestBody::Range { stale: false, .. }
                | RequestBody::Ttl { stale: false, .. }
                | RequestBody::Command(_)
                | RequestBody::MemberChange(_)
        ) && raft.role != Role::Leader
            && raft.leader == raft::NO_NODE;
        if !waits {
            return self.handle_request(client, request, command_bytes, deadline_ms);
        }
        match self.park(client, request, command_bytes, now_ms, deadline_ms, None) {
            Ok(()) => None,
            Err(request) => self.handle_request(client, request, command_bytes, deadline_ms),
        }
    }

    /// A request the Redis port could not forward: the link to the leader at
    /// `leader_addr` (a client address) failed before the request was sent. If this
    /// node now knows another leader (or is the leader), the request goes there as any
    /// other; otherwise it waits for a leader elsewhere like a request with no leader
    /// known, and fails definitively (not applied) when the wait ends.
    pub fn on_leader_unreachable(
        &mut self,
        client: ClientRef,
        request: Request,
        leader_addr: &str,
        now_ms: u64,
    ) -> Option<Response> {
        let raft = self.raw.raft();
        let same_leader = raft.role != Role::Leader
            && raft.leader != raft::NO_NODE
            && self.leader_client_addr().as_deref() == Some(leader_addr);
        if !same_leader {
            return self.on_client_request(client, request, None, now_ms);
        }
        let deadline_ms = now_ms + self.config.limits.request_timeout_ms;
        let unreachable = Some(leader_addr.to_string());
        match self.park(client, request, None, now_ms, deadline_ms, unreachable) {
            Ok(()) => None,
            Err(request) => Some(Response {
                request_id: request.request_id,
                body: ResponseBody::Unavailable(format!(
                    "cannot reach the leader at {leader_addr}; the request was not sent, retry"
                )),
            }),
        }
    }

    /// Parks a request until a leader is known, for at most `limits.leader_wait_ms` and
    /// never past `deadline_ms`; hands it back when waiting is off or the bounds are hit.
    fn park(
        &mut self,
        client: ClientRef,
        request: Request,
        command_bytes: Option<&[u8]>,
        now_ms: u64,
        deadline_ms: u64,
        unreachable: Option<String>,
    ) -> Result<(), Request> {
        let wait_ms = self.config.limits.leader_wait_ms;
        if wait_ms == 0 {
            return Err(request);
        }
        let until_ms = (now_ms + wait_ms).min(deadline_ms);
        let deadlines = &mut self.deadlines;
        self.parked.park(
            client,
            request,
            command_bytes,
            deadline_ms,
            unreachable,
            |id| deadlines.schedule(until_ms, Deadline::Parked(id)),
        )
    }

    /// The client address of the leader this node knows (not itself), if any.
    fn leader_client_addr(&self) -> Option<String> {
        let leader = self.raw.raft().leader;
        if leader == raft::NO_NODE || leader == self.config.node_id {
            return None;
        }
        self.addrs(leader).map(|a| a.client.to_string())
    }

    /// Once a leader is known, serves the parked requests on it (this node) or
    /// answers them `NotLeader` with its address; a request that waits for a leader
    /// other than the one it could not reach stays while that one still leads.
    pub(super) fn release_parked(&mut self, out: &mut impl Outbox) {
        if self.parked.is_empty() {
            return;
        }
        let raft = self.raw.raft();
        let is_leader = raft.role == Role::Leader;
        if !is_leader && raft.leader == raft::NO_NODE {
            return;
        }
        let leader_addr = self.leader_client_addr();
        let released = self.parked.take_released(|parked| {
            is_leader || parked.unreachable.is_none() || parked.unreachable != leader_addr
        });
        for parked in released {
            self.deadlines.cancel(parked.timer);
            let client = parked.client;
            let bytes = parked.command_bytes.as_deref();
            if let Some(response) =
                self.handle_request(client, parked.request, bytes, parked.deadline_ms)
            {
                out.reply(client, response);
            }
        }
    }

    /// Serves, redirects or refuses a request whose deadline is `deadline_ms`.
    fn handle_request(
        &mut self,
        client: ClientRef,
        request: Request,
        command_bytes: Option<&[u8]>,
        deadline_ms: u64,
    ) -> Option<Response> {
        let request_id = request.request_id;
        let reply = |body| Some(Response { request_id, body });
        // Reads, also those ordered through the log (a Redis read behind a write), are
        // still served; only what changes state is refused.
        let changes_state = match &request.body {
            RequestBody::Command(command) => !matches!(command, Command::Get { .. }),
            RequestBody::MemberChange(_) => true,
            _ => false,
        };
        if changes_state && let Some(body) = self.nospace.refusal(self.config.node_id) {
            return reply(body);
        }
        match request.body {
            RequestBody::Status => reply(ResponseBody::Status(self.status())),
            RequestBody::MemberChange(change) => {
                if let Some(body) = self.not_leader() {
                    return reply(body);
                }
                match self.propose_member_change(change) {
                    Ok(Some(index)) => {
                        self.wait_for_commit(client, request_id, index, deadline_ms);
                        None
                    }
                    Ok(None) => reply(ResponseBody::Result(CommandResult::Ok)),
                    Err(body) => reply(body),
                }
            }
            RequestBody::TransferLeader { id } => match self.raw.transfer_leader(id) {
                Ok(()) => {
                    info!("transferring leadership to {id} (asked by a client)");
                    reply(ResponseBody::Result(CommandResult::Ok))
                }
                Err(raft::Error::NotVoter(id)) => reply(ResponseBody::Error(format!(
                    "node {id} is not a voter; leadership goes to voters only"
                ))),
                Err(e) => reply(self.refusal(e)),
            },
            RequestBody::Metrics => reply(ResponseBody::Metrics(self.metrics_snapshot())),
            // A snapshot save writes files from a helper thread: the node server serves
            // it (`server::backup`) with the view [`Replica::backup_view`] takes; a
            // driver without one (the simulation) refuses it.
            RequestBody::Backup(_) => reply(ResponseBody::Error(
                "snapshot save is not served by this driver".into(),
            )),
            // The server's loop serves watches on client connections itself.
            RequestBody::Watch { .. } => reply(ResponseBody::Error(
                "a watch is served on a client-port connection of its own".into(),
            )),
            // Stale reads are not judged by a clock: an expired key shows until the
            // leader's delete of it is applied here.
            RequestBody::Get { key, stale: true } => reply(ReadWhat::Key(key).answer(&self.kv, 0)),
            RequestBody::Range { query, stale: true } => {
                reply(ReadWhat::Range(query).answer(&self.kv, 0))
            }
            RequestBody::Ttl {
                key,
                absolute,
                stale: true,
            } => {
                let now_ms = self.expiry.now_ms();
                reply(ReadWhat::Ttl { key, absolute }.answer(&self.kv, now_ms))
            }
            RequestBody::Ttl {
                key,
                absolute,
                stale: false,
            } => {
                if let Some(body) = self.not_leader() {
                    return reply(body);
                }
                self.add_read(
                    client,
                    request_id,
                    ReadWhat::Ttl { key, absolute },
                    deadline_ms,
                );
                None
            }
            RequestBody::Range {
                query,
                stale: false,
            } => {
                if let Some(body) = self.not_leader() {
                    return reply(body);
                }
                self.add_read(client, request_id, ReadWhat::Range(query), deadline_ms);
                None
            }
            RequestBody::Get { key, stale: false } => {
                // Its size as a log entry, as it would be forwarded or ordered via the log.
                let entry_bytes = encoded_len(&Command::Get { key: Vec::new() }) + key.len();
                if let Some(body) = self.oversized(entry_bytes).or_else(|| self.not_leader()) {
                    return reply(body);
                }
                self.add_read(client, request_id, ReadWhat::Key(key), deadline_ms);
                None
            }
            RequestBody::Command(Command::At { .. } | Command::DeleteExpired { .. }) => {
                reply(ResponseBody::Error(
                    "a command carrying a time is written by the leader only".into(),
                ))
            }
            RequestBody::Command(mut command) => {
                // On the leader, a command whose outcome depends on time is stamped
                // with its expiry clock (relative expiry times made absolute).
                let mut command_bytes = command_bytes;
                let now_ms = self.expiry.now_ms();
                if now_ms > 0 && self.raw.raft().role == Role::Leader {
                    command = command.stamped(now_ms);
                    if matches!(command, Command::At { .. }) {
                        command_bytes = None;
                    }
                }
                let entry_bytes = command_bytes.map_or_else(|| encoded_len(&command), <[u8]>::len);
                // Checked first, so a follower refuses it too instead of redirecting.
                if let Some(body) = self.oversized(entry_bytes).or_else(|| self.not_leader()) {
                    return reply(body);
                }
                // The one copy of the command: from the input buffer into the
                // payload every later clone of the entry shares.
                let data: Arc<[u8]> = match command_bytes {
                    Some(bytes) => Arc::from(bytes),
                    None => {
                        let mut data = Vec::with_capacity(entry_bytes);
                        encode_command(&command, &mut data);
                        data.into()
                    }
                };
                match self.raw.propose(data) {
                    Ok(index) => {
                        self.metrics.on_proposal();
                        self.wait_for_commit(client, request_id, index, deadline_ms);
                        None
                    }
                    Err(e) => reply(self.refusal(e)),
                }
            }
        }
    }

    /// Files a linearizable read of `what` until a ReadIndex round confirms it, answered
    /// with an error at `deadline_ms` if it is still waiting.
    fn add_read(&mut self, client: ClientRef, request_id: u64, what: ReadWhat, deadline_ms: u64) {
        let deadline = self
            .deadlines
            .schedule(deadline_ms, Deadline::Read(client, request_id));
        self.reads.add(PendingRead {
            client,
            request_id,
            what,
            deadline,
        });
    }

    /// Files the client's wait for the entry proposed at `index` in this term.
    fn wait_for_commit(
        &mut self,
        client: ClientRef,
        request_id: u64,
        index: u64,
        deadline_ms: u64,
    ) {
        let term = self.raw.raft().term;
        let deadline = self.deadlines.schedule(deadline_ms, Deadline::Write(index));
        self.pending_writes.insert(
            index,
            PendingWrite {
                client,
                request_id,
                term,
                deadline,
            },
        );
    }

    /// The refusal of a request whose log entry would take `entry_bytes`, when that is
    /// over `limits.entry_bytes_max`: such an entry could not be replicated in one
    /// AppendEntries frame, so it is refused where it enters, before it is proposed or
    /// forwarded.
    fn oversized(&self, entry_bytes: usize) -> Option<ResponseBody> {
        let max = self.config.limits.entry_bytes_max;
        (entry_bytes as u64 > max).then(|| {
            ResponseBody::Error(format!(
                "request of {entry_bytes} bytes exceeds the limit of {max} bytes \
                 (limits.entry_bytes_max)"
            ))
        })
    }

    pub(super) fn not_leader(&self) -> Option<ResponseBody> {
        let raft = self.raw.raft();
        if raft.role == Role::Leader {
            return None;
        }
        Some(self.redirect(raft.leader))
    }

    pub(super) fn redirect(&self, leader: NodeId) -> ResponseBody {
        match self.addrs(leader) {
            Some(addrs) if leader != self.config.node_id => ResponseBody::NotLeader {
                leader_id: leader,
                leader_client_addr: Some(addrs.client.to_string()),
            },
            _ => ResponseBody::Unavailable("no leader known; an election is in progress".into()),
        }
    }

    pub(super) fn refusal(&self, error: raft::Error) -> ResponseBody {
        match error {
            raft::Error::NotLeader { leader } => self.redirect(leader.unwrap_or(raft::NO_NODE)),
            raft::Error::ProposalDropped => ResponseBody::Unavailable(
                "a leadership transfer is in progress; retry at the new leader".into(),
            ),
            other => ResponseBody::Unavailable(other.to_string()),
        }
    }

    /// (writes waiting to be applied, reads waiting for their ReadIndex round), for
    /// the tests of the server's node.
    #[cfg(test)]
    pub(crate) fn waiting_counts(&self) -> (usize, usize) {
        (self.pending_writes.len(), self.reads.in_round())
    }

    /// The earliest client request deadline, in the driver's clock.
    pub fn next_deadline(&mut self) -> Option<u64> {
        self.deadlines.next_deadline()
    }

    /// Answers every request whose deadline passed by `now_ms` with Unavailable: a write
    /// may still commit later (its outcome is unknown to the client, whose session makes
    /// a retry safe); a read is simply not served.
    pub fn expire_deadlines(&mut self, now_ms: u64, out: &mut impl Outbox) {
        let mut expired = Vec::new();
        self.deadlines.expire(now_ms, &mut expired);
        for deadline in expired {
            let (waiter, what) = match deadline {
                Deadline::Write(index) => {
                    let Some(write) = self.pending_writes.remove(&index) else {
                        continue;
                    };
                    self.metrics.on_proposal_failed();
                    (
                        Waiter::from(write),
                        "write timed out before it committed; outcome unknown",
                    )
                }
                Deadline::Read(client, request_id) => {
                    let Some(read) = self.reads.take(client, request_id) else {
                        continue;
                    };
                    (
                        Waiter::from(read),
                        "read timed out before leadership was confirmed",
                    )
                }
                Deadline::Parked(id) => {
                    let Some(parked) = self.parked.take(id) else {
                        continue;
                    };
                    let what = match &parked.unreachable {
                        Some(addr) => format!(
                            "cannot reach the leader at {addr} and no other leader was \
                             elected in time (limits.leader_wait_ms); the request was not \
                             applied, retry"
                        ),
                        None => "no leader elected in time (limits.leader_wait_ms); the \
                                 request was not applied, retry"
                            .into(),
                    };
                    let response = Response {
                        request_id: parked.request.request_id,
                        body: ResponseBody::Unavailable(what),
                    };
                    out.reply(parked.client, response);
                    continue;
                }
            };
            reply_to(out, waiter, ResponseBody::Unavailable(what.into()));
        }
    }
}
