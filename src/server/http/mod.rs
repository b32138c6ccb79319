//! The per-connection state of an HTTP client: requests become kv requests, responses
//! go back in request order.
//!
//! Contract with the event loop (as for [`super::redis::RedisConn`]):
//! 1. Feed [`HttpConn::on_request`] each decoded request and [`HttpConn::on_response`]
//!    each answer of the node (or of the leader) to a request this connection submitted.
//! 2. After either, send everything [`HttpConn::take_submits`] returns (answers the node
//!    gives at once go back to step 1), then write what [`HttpConn::take_replies`]
//!    encodes; when it returns true, write and then CLOSE the connection.
//! 3. A connection that stops calling `take_submits` after `on_request` STALLS: this type
//!    does no IO, so it is tested with a fake node.
//!
//! How requests map to the kv (docs/HTTP.md): GET of a key is a linearizable read
//! (ReadIndex) or, with `?stale=true`, a local one; PUT and DELETE are `Put` and
//! `Delete` writes, POST /txn one `Txn`; the status, health and version endpoints read
//! the node's `Status`. Writes need a session: the first write of a connection
//! registers one (`RegisterSession`), and every write carries its next sequence number,
//! so a write the forwarding path resends is applied once. A `NotLeader` answer with the
//! leader's address resends the request there ([`Target::Forward`]), at most
//! [`FORWARDS_MAX`] times; deadlines are the node's and the forwarding link's
//! (`limits.request_timeout_ms`, `limits.leader_wait_ms`).
//!
//! Authentication ([`auth`]): with a users file, each request is checked (Basic auth,
//! the route's permission) before it is routed to the node; a refusal is its response.
//!
//! Invariant (order): requests run one at a time in arrival order: only the first
//! request without a response runs, so a pipelined GET after a PUT sees the PUT, and
//! responses leave in request order. Back-pressure counts the queued requests
//! ([`HttpConn::requests`]) and the held response bytes ([`HttpConn::reply_bytes`]).

pub mod auth;
pub mod json;
pub mod route;

use std::collections::VecDeque;

use serde_json::json;

use self::auth::HttpAccess;
use self::route::Route;
use super::redis::{Submit, Target};
use crate::codec::client::{Request, RequestBody, Response, ResponseBody, Status};
use crate::codec::http::{HttpRequest, HttpResponse};
use crate::kv::{Command, CommandResult, Session};
use crate::raft::message::NO_NODE;
use crate::replica::exposition::PROMETHEUS_CONTENT_TYPE;

/// Times a request follows a `NotLeader` answer.
const FORWARDS_MAX: u8 = 3;

/// The dashboard page (HTML, CSS and JS in one file; it polls this node's endpoints).
const DASHBOARD_HTML: &str = include_str!("dashboard.html");

/// What a connection reads from its own node without a request to the replica: the
/// pages rendered from the node's metrics and events (`GET /metrics`, `GET /events`).
/// They describe this node at the moment the request arrives, so they need no place in
/// the order of the connection's writes.
pub trait NodePages {
    /// The node's metrics in the Prometheus text format.
    fn prometheus_text(&self) -> String;
    /// The node's recent events, a JSON array, newest last.
    fn recent_events_json(&self) -> String;
}

/// What a queued request is doing.
#[derive(Debug)]
enum Job {
    /// Nothing to ask the node.
    Reply(HttpResponse),
    Health,
    /// The local status; then, on a follower that knows a leader, the leader's.
    ClusterStatus(Option<Box<Status>>),
    Get {
        key: Vec<u8>,
        stale: bool,
    },
    Write(Write),
}

#[derive(Debug)]
enum Write {
    Put { key: Vec<u8>, value: Vec<u8> },
    Delete { key: Vec<u8> },
    Txn(json::TxnSpec),
}

enum Step {
    Send(RequestBody, Target),
    Done(HttpResponse),
}

#[derive(Debug)]
struct Slot {
    job: Job,
    keep_alive: bool,
    /// The finished response.
    done: Option<HttpResponse>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SessionState {
    None,
    Registering,
    Ready { client_id: u64, next_seq: u64 },
}

/// The one request of this connection waiting for an answer.
struct Inflight {
    request_id: u64,
    body: RequestBody,
    forwards: u8,
    /// Registers the session rather than serving the front slot.
    session: bool,
}

/// One HTTP connection's state.
pub struct HttpConn {
    /// Invariant: the slots before `running` are done; `slots[running]`, if any, is the
    /// one request started and not done.
    slots: VecDeque<Slot>,
    inflight: Option<Inflight>,
    next_request_id: u64,
    outgoing: Vec<Submit>,
    session: SessionState,
    /// A `100 Continue` was sent for the request being received.
    continued: bool,
    /// Sum of the body sizes of the done responses not yet taken.
    done_bytes: usize,
    /// A request could not be decoded: no later input is a request.
    broken: bool,
    /// Who may run what.
    access: HttpAccess,
}

impl Default for HttpConn {
    fn default() -> HttpConn {
        HttpConn::new()
    }
}

impl HttpConn {
    /// A fresh connection.
    pub fn new() -> HttpConn {
        HttpConn {
            slots: VecDeque::new(),
            inflight: None,
            next_request_id: 1,
            outgoing: Vec::new(),
            session: SessionState::None,
            continued: false,
            done_bytes: 0,
            broken: false,
            access: HttpAccess::default(),
        }
    }

    /// Checks this connection's requests with `access` (`security.users_file`).
    pub fn require_auth(&mut self, access: HttpAccess) {
        self.access = access;
    }

    /// Requests refused by authentication since the last call.
    pub fn take_auth_failures(&mut self) -> u64 {
        self.access.take_failures()
    }

    /// Requests received and not yet answered to the client.
    pub fn requests(&self) -> usize {
        self.slots.len()
    }

    /// About how many bytes the finished responses not yet taken hold.
    pub fn reply_bytes(&self) -> usize {
        self.done_bytes
    }

    /// Whether to send `100 Continue` for a request whose head asked for it: once per
    /// request, and only when no earlier response is still owed (an interim response
    /// must not overtake them).
    pub fn should_continue(&mut self) -> bool {
        if self.continued || !self.slots.is_empty() {
            return false;
        }
        self.continued = true;
        true
    }

    /// Whether an undecodable request was received: the connection closes after its
    /// answer, and the input after it is discarded.
    pub fn is_broken(&self) -> bool {
        self.broken
    }

    /// A decoded request (ignored after an undecodable one); `pages` renders the node's
    /// metrics and events.
    pub fn on_request(&mut self, request: HttpRequest, pages: &dyn NodePages) {
        if self.broken {
            return;
        }
        self.continued = false;
        let mut route = route::route(&request);
        if let Some(refusal) = self.access.check(&request, &route) {
            route = Route::Refuse(refusal);
        }
        let job = match route {
            Route::Dashboard => Job::Reply(HttpResponse {
                status: 200,
                content_type: "text/html; charset=utf-8",
                headers: Vec::new(),
                body: DASHBOARD_HTML.as_bytes().to_vec(),
            }),
            Route::Version => Job::Reply(HttpResponse::json(200, version_body())),
            Route::Health => Job::Health,
            Route::ClusterStatus => Job::ClusterStatus(None),
            Route::Metrics => Job::Reply(HttpResponse {
                status: 200,
                content_type: PROMETHEUS_CONTENT_TYPE,
                headers: Vec::new(),
                body: pages.prometheus_text().into_bytes(),
            }),
            Route::Events => Job::Reply(HttpResponse::json(
                200,
                pages.recent_events_json().into_bytes(),
            )),
            Route::Get { key, stale } => Job::Get { key, stale },
            Route::Put { key, value } => Job::Write(Write::Put { key, value }),
            Route::Delete { key } => Job::Write(Write::Delete { key }),
            Route::Txn(spec) => Job::Write(Write::Txn(spec)),
            Route::Refuse(response) => Job::Reply(response),
        };
        self.slots.push_back(Slot {
            job,
            keep_alive: request.keep_alive,
            done: None,
        });
        self.dispatch();
    }

    /// A request that could not be decoded: answered with `response`, then the
    /// connection closes.
    pub fn on_bad_request(&mut self, response: HttpResponse) {
        if std::mem::replace(&mut self.broken, true) {
            return;
        }
        self.slots.push_back(Slot {
            job: Job::Reply(response),
            keep_alive: false,
            done: None,
        });
        self.dispatch();
    }

    /// An answer to a request this connection submitted; `http_addr` is this node's
    /// HTTP address, shown in the cluster status.
    pub fn on_response(&mut self, response: Response, http_addr: Option<&str>) {
        let Some(inflight) = self
            .inflight
            .take_if(|i| i.request_id == response.request_id)
        else {
            return;
        };
        let body = match response.body {
            ResponseBody::NotLeader {
                leader_client_addr: Some(addr),
                ..
            } if inflight.forwards < FORWARDS_MAX => {
                let target = Target::Forward(addr);
                self.send(
                    inflight.body,
                    target,
                    inflight.forwards + 1,
                    inflight.session,
                );
                return;
            }
            ResponseBody::NotLeader { .. } => ResponseBody::Unavailable("no leader known".into()),
            body => body,
        };
        if inflight.session {
            self.on_session_reply(body);
        } else {
            self.on_slot_reply(body, http_addr);
        }
        self.dispatch();
    }

    fn on_session_reply(&mut self, body: ResponseBody) {
        if let ResponseBody::Result(CommandResult::Registered { client_id }) = body {
            self.session = SessionState::Ready {
                client_id,
                next_seq: 1,
            };
            return;
        }
        // The write that waited for the session gets the error; the next one retries.
        self.session = SessionState::None;
        let response = failure(&body);
        self.finish_running(response);
    }

    fn on_slot_reply(&mut self, body: ResponseBody, http_addr: Option<&str>) {
        if let ResponseBody::Result(CommandResult::SessionExpired) = body {
            self.session = SessionState::None;
        }
        let Some(index) = self.running() else {
            return;
        };
        let step = advance(&mut self.slots[index].job, body, http_addr);
        self.apply(index, step);
    }

    /// The requests to send now.
    pub fn take_submits(&mut self) -> Vec<Submit> {
        std::mem::take(&mut self.outgoing)
    }

    /// Encodes the finished responses at the front of the queue into `out`; returns true
    /// when the last one closes the connection (write `out`, then close).
    pub fn take_replies(&mut self, out: &mut Vec<u8>) -> bool {
        while self.slots.front().is_some_and(|s| s.done.is_some()) {
            let Some(slot) = self.slots.pop_front() else {
                break;
            };
            let Some(response) = slot.done else {
                break;
            };
            self.done_bytes = self.done_bytes.saturating_sub(response.body.len());
            response.encode(!slot.keep_alive, out);
            if !slot.keep_alive {
                self.slots.clear();
                return true;
            }
        }
        // Nothing to start here: a slot starts as soon as the one before it is done
        // (`dispatch` after each answer), not when its response is taken.
        false
    }

    /// Index of the first slot without a response.
    fn running(&self) -> Option<usize> {
        self.slots.iter().position(|s| s.done.is_none())
    }

    fn dispatch(&mut self) {
        while self.inflight.is_none() {
            let Some(index) = self.running() else {
                return;
            };
            let needs_session = matches!(self.slots[index].job, Job::Write(_));
            if needs_session && !matches!(self.session, SessionState::Ready { .. }) {
                if self.session == SessionState::None {
                    self.session = SessionState::Registering;
                    let body = RequestBody::Command(Command::RegisterSession);
                    self.send(body, Target::Local, 0, true);
                }
                return;
            }
            let session = if needs_session {
                self.next_session()
            } else {
                Session {
                    client_id: 0,
                    seq: 0,
                }
            };
            let step = start(&mut self.slots[index].job, session);
            self.apply(index, step);
        }
    }

    fn next_session(&mut self) -> Session {
        match &mut self.session {
            SessionState::Ready {
                client_id,
                next_seq,
            } => {
                let session = Session {
                    client_id: *client_id,
                    seq: *next_seq,
                };
                *next_seq += 1;
                session
            }
            // Writes start only once the session is ready (see `dispatch`).
            SessionState::None | SessionState::Registering => Session {
                client_id: 0,
                seq: 0,
            },
        }
    }

    fn apply(&mut self, index: usize, step: Step) {
        match step {
            Step::Send(body, target) => self.send(body, target, 0, false),
            Step::Done(response) => {
                self.done_bytes += response.body.len();
                self.slots[index].done = Some(response);
            }
        }
    }

    fn finish_running(&mut self, response: HttpResponse) {
        if let Some(index) = self.running() {
            self.apply(index, Step::Done(response));
        }
    }

    fn send(&mut self, body: RequestBody, target: Target, forwards: u8, session: bool) {
        let request_id = self.next_request_id;
        self.next_request_id += 1;
        self.inflight = Some(Inflight {
            request_id,
            body: body.clone(),
            forwards,
            session,
        });
        self.outgoing.push(Submit {
            request: Request { request_id, body },
            target,
        });
    }
}

fn version_body() -> Vec<u8> {
    json!({
        "name": env!("CARGO_PKG_NAME"),
        "version": env!("CARGO_PKG_VERSION"),
        "http_api": 1,
    })
    .to_string()
    .into_bytes()
}

fn start(job: &mut Job, session: Session) -> Step {
    match job {
        Job::Reply(response) => Step::Done(std::mem::replace(
            response,
            HttpResponse::json(200, Vec::new()),
        )),
        Job::Health | Job::ClusterStatus(_) => Step::Send(RequestBody::Status, Target::Local),
        Job::Get { key, stale } => Step::Send(
            RequestBody::Get {
                key: key.clone(),
                stale: *stale,
            },
            Target::Local,
        ),
        Job::Write(write) => {
            let command = match write {
                Write::Put { key, value } => Command::Put {
                    session,
                    key: key.clone(),
                    value: std::mem::take(value),
                },
                Write::Delete { key } => Command::Delete {
                    session,
                    key: key.clone(),
                },
                Write::Txn(spec) => Command::Txn {
                    session,
                    compare: std::mem::take(&mut spec.compare),
                    success: std::mem::take(&mut spec.success),
                    failure: std::mem::take(&mut spec.failure),
                },
            };
            Step::Send(RequestBody::Command(command), Target::Local)
        }
    }
}

fn advance(job: &mut Job, body: ResponseBody, http_addr: Option<&str>) -> Step {
    match (job, body) {
        (Job::Health, ResponseBody::Status(status)) => Step::Done(health(&status)),
        (Job::ClusterStatus(local), ResponseBody::Status(status)) => match local.take() {
            None => {
                let leader_addr = status
                    .members
                    .iter()
                    .find(|m| m.id == status.leader_id && status.leader_id != status.node_id)
                    .map(|m| m.client_addr.clone())
                    .filter(|addr| !addr.is_empty());
                match leader_addr {
                    Some(addr) if status.leader_id != NO_NODE => {
                        *local = Some(Box::new(status));
                        Step::Send(RequestBody::Status, Target::Forward(addr))
                    }
                    _ => Step::Done(status_response(&status, None, http_addr)),
                }
            }
            Some(local) => Step::Done(status_response(&local, Some(&status), http_addr)),
        },
        // The leader did not answer: what this node knows is still worth showing.
        (Job::ClusterStatus(Some(local)), _) => Step::Done(status_response(local, None, http_addr)),
        (Job::Get { key, .. }, ResponseBody::Result(CommandResult::Value(value))) => {
            Step::Done(match value {
                Some(value) => HttpResponse::json(200, json::key_value(key, &value)),
                None => HttpResponse::json(404, json::error_body("key not found")),
            })
        }
        (Job::Write(write), ResponseBody::Result(result)) => {
            Step::Done(write_result(write, result))
        }
        (_, other) => Step::Done(failure(&other)),
    }
}

fn status_response(
    local: &Status,
    leader: Option<&Status>,
    http_addr: Option<&str>,
) -> HttpResponse {
    let body = json::cluster_status(local, leader, http_addr);
    HttpResponse::json(200, body.to_string().into_bytes())
}

/// 200 when this node knows a leader and has applied all it knows committed, else 503.
fn health(status: &Status) -> HttpResponse {
    let reason = if status.leader_id == NO_NODE {
        Some("no leader known")
    } else if status.applied_index < status.commit_index {
        Some("applying committed entries")
    } else {
        None
    };
    let body = json!({
        "healthy": reason.is_none(),
        "reason": reason,
        "node_id": status.node_id,
        "leader_id": status.leader_id,
        "commit_index": status.commit_index,
        "applied_index": status.applied_index,
    });
    let response = HttpResponse::json(
        if reason.is_none() { 200 } else { 503 },
        body.to_string().into_bytes(),
    );
    if reason.is_some() {
        response.with_header("Retry-After", "1".into())
    } else {
        response
    }
}

fn write_result(write: &Write, result: CommandResult) -> HttpResponse {
    match (write, result) {
        (Write::Put { key, .. }, CommandResult::Ok) => {
            HttpResponse::json(200, json::key_flag(key, "ok", true))
        }
        (Write::Delete { key }, CommandResult::Ok) => {
            HttpResponse::json(200, json::key_flag(key, "deleted", true))
        }
        (Write::Delete { key }, CommandResult::NotFound) => {
            HttpResponse::json(200, json::key_flag(key, "deleted", false))
        }
        (Write::Txn(_), CommandResult::Txn { succeeded, results }) => HttpResponse::json(
            if succeeded { 200 } else { 409 },
            json::txn_result(succeeded, &results),
        ),
        (_, other) => failure(&ResponseBody::Result(other)),
    }
}

/// The error response for an answer that is not the expected success: 503 (with
/// `Retry-After`) when the cluster cannot serve now, 504 when the request's deadline
/// passed, 507 for a write refused by the NOSPACE alarm, 413 for an entry over the size
/// limit, 400 for another refused request, 500 otherwise.
fn failure(body: &ResponseBody) -> HttpResponse {
    let (status, message) = match body {
        ResponseBody::Unavailable(message)
            if message.contains("timed out") || message.contains("no answer from the leader") =>
        {
            (504, message.clone())
        }
        ResponseBody::Unavailable(message) => (503, message.clone()),
        ResponseBody::NotLeader { .. } => (503, "no leader known".into()),
        // The NOSPACE alarm's refusal of a write (see `replica::alarm`).
        ResponseBody::Error(message) if message.starts_with("NOSPACE") => (507, message.clone()),
        // The node refuses an entry over `limits.entry_bytes_max` this way.
        ResponseBody::Error(message) if message.contains("exceeds the limit") => {
            (413, message.clone())
        }
        ResponseBody::Error(message) => (400, message.clone()),
        ResponseBody::Result(CommandResult::SessionExpired) => (
            503,
            "the write session expired before this write; it was not applied, retry".into(),
        ),
        ResponseBody::Result(CommandResult::StaleSequence) => (
            503,
            "stale write sequence; the write was not applied, retry".into(),
        ),
        other => (500, format!("unexpected answer from the node: {other:?}")),
    };
    let response = HttpResponse::json(status, json::error_body(&message));
    if status == 503 {
        response.with_header("Retry-After", "1".into())
    } else {
        response
    }
}

#[cfg(test)]
mod tests;
