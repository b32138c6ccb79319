//! [`Client`]: typed calls against a cluster, with leader discovery, redirects, retries
//! and a write session.
//!
//! Routing: writes and linearizable reads go to the leader. The client starts at any
//! member; a follower answers `NotLeader` with the leader's client address, which the
//! client follows at once. `Unavailable`, `NotLeader` without an address and connection
//! failures are retried on the next member after a backoff with full jitter
//! ([`Backoff`]), until the per-request timeout.
//!
//! Sessions (Raft thesis §6.3): the first write registers a session (`client_id` is
//! assigned by the cluster: the index of the registering entry). Each write takes the
//! next `seq`, and every retry of that write re-sends the same `(client_id, seq)`, so
//! the cluster applies it once and answers a duplicate from its recorded result.
//!
//! Invariant: at most one request of a [`Client`] is in flight; its connection is dropped
//! after any error, so a late reply can never be matched to a later request.

use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::codec::client::{MemberChange, RequestBody, ResponseBody, Status};
use crate::kv::{
    Command, CommandResult, Compare, Deadline, Op, OpResult, RangeQuery, RangeResult, RmwOp,
    Session, SetCondition, SetExpiry,
};
use crate::raft::message::NodeId;
use crate::server::backoff::Backoff;

use super::addr::check_addr;
use super::error::Error;
use super::pipeline::Pipeline;
use crate::tls::ClientTls;

/// Settings of a [`Client`].
#[derive(Debug, Clone)]
pub struct ClientOptions {
    /// Time allowed for one call, retries and redirects included.
    pub request_timeout: Duration,
    /// Time allowed for one TCP connect.
    pub connect_timeout: Duration,
    /// Smallest backoff between retries, in milliseconds (at least 1).
    pub backoff_min_ms: u64,
    /// Largest backoff between retries, in milliseconds.
    pub backoff_max_ms: u64,
    /// Largest frame sent or accepted, in bytes.
    pub frame_bytes_max: u32,
    /// Speak TLS to every node (their certificates must chain to this CA); `None`:
    /// plain TCP.
    pub tls: Option<ClientTls>,
}

impl ClientOptions {
    /// A pipelined connection to `addr` with these options (TLS and frame limit),
    /// connecting for at most `timeout`.
    ///
    /// # Errors
    /// [`Error::Io`] if `addr` cannot be reached.
    pub fn pipeline(&self, addr: &str, timeout: Duration) -> Result<Pipeline, Error> {
        Pipeline::connect_tls(addr, timeout, self.frame_bytes_max, self.tls.as_ref())
    }
}

impl Default for ClientOptions {
    fn default() -> ClientOptions {
        ClientOptions {
            request_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(1),
            backoff_min_ms: 10,
            backoff_max_ms: 100,
            frame_bytes_max: 16 * 1024 * 1024,
            tls: None,
        }
    }
}

/// The answer of [`Client::ttl`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyTtl {
    /// No such key (or it has expired).
    Absent,
    /// The key has no expiry time.
    Persistent,
    /// The key expires after this long.
    Expires(Duration),
}

/// The outcome of [`Client::cas`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CasOutcome {
    /// The expected value matched; the new value is written.
    Swapped,
    /// The expected value did not match; nothing was written.
    Failed {
        /// The value found (`None`: absent).
        current: Option<Vec<u8>>,
    },
}

/// The outcome of [`Client::txn`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnOutcome {
    /// Whether every compare held (the success branch ran).
    pub succeeded: bool,
    /// One result per op of the branch that ran.
    pub results: Vec<OpResult>,
}

/// Counters of what the client had to do to get answers.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClientStats {
    /// `NotLeader` answers followed to another node.
    pub redirects: u64,
    /// Attempts repeated after a connection failure or an `Unavailable` answer.
    pub retries: u64,
}

/// The leader as reported by the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's node id.
    pub id: NodeId,
    /// The leader's client address.
    pub client_addr: String,
    /// The leader's term.
    pub term: u64,
}

/// The result of one attempt of a call.
enum Attempt {
    Answered(ResponseBody),
    Redirect(String),
    Retry(Error),
}

/// A blocking client of a raftkv cluster. Not shared between threads: open one per
/// thread.
#[derive(Debug)]
pub struct Client {
    addrs: Vec<String>,
    options: ClientOptions,
    connection: Option<Pipeline>,
    /// The leader's client address, when a node told us.
    leader_hint: Option<String>,
    /// Index into `addrs` of the next member to try without a hint.
    next_addr: usize,
    /// The registered session id, once the first write registered it.
    client_id: Option<u64>,
    /// The seq of the next new write.
    next_seq: u64,
    /// SplitMix64 state for backoff jitter.
    rng_state: u64,
    stats: ClientStats,
    /// How many times the last call sent its request (1 = no resend).
    last_call_sends: u32,
}

impl Client {
    /// A client of the cluster whose members' client addresses include `addrs`. Connects
    /// lazily: the first call finds a reachable member.
    ///
    /// # Errors
    /// [`Error::Invalid`] if `addrs` is empty, one of them is not `HOST:PORT`
    /// ([`check_addr`]), or the backoff bounds are not `1 <= min <= max`.
    pub fn connect(addrs: &[String], options: ClientOptions) -> Result<Client, Error> {
        if addrs.is_empty() {
            return Err(Error::Invalid("no cluster address given".into()));
        }
        for addr in addrs {
            check_addr(addr)?;
        }
        if options.backoff_min_ms == 0 || options.backoff_min_ms > options.backoff_max_ms {
            return Err(Error::Invalid(
                "backoff bounds must be 1 <= min <= max".into(),
            ));
        }
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |elapsed| elapsed.as_nanos() as u64);
        Ok(Client {
            addrs: addrs.to_vec(),
            options,
            connection: None,
            leader_hint: None,
            next_addr: 0,
            client_id: None,
            next_seq: 1,
            rng_state: now ^ (u64::from(std::process::id()) << 32),
            stats: ClientStats::default(),
            last_call_sends: 0,
        })
    }

    /// What the client did so far to get its answers.
    pub fn stats(&self) -> ClientStats {
        self.stats
    }

    /// The options this client was built with.
    pub fn options(&self) -> &ClientOptions {
        &self.options
    }

    /// The session of this client, once a write registered it.
    pub fn client_id(&self) -> Option<u64> {
        self.client_id
    }

    /// The session id, registering a session now if none is open. For callers that
    /// build their own commands (the pipelined benchmark): they must give each new write
    /// a new `seq`, keep it on retries, and keep at most `session_results_max` (128 by
    /// default) writes of one session in flight.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn session_id(&mut self) -> Result<u64, Error> {
        self.session()
    }

    /// Reads `key` linearizably (through the leader). `None`: absent.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn get(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.read(key, false)
    }

    /// Reads `key` from whichever member answers, possibly stale. `None`: absent.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn get_stale(&mut self, key: &[u8]) -> Result<Option<Vec<u8>>, Error> {
        self.read(key, true)
    }

    /// One page of the range `query`: each page is one linearizable read (or, with
    /// `stale`, one local read of whichever member answers), at most
    /// [`crate::kv::RANGE_REPLY_BYTES_MAX`] bytes; `more` says keys follow its last one.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn range_page(&mut self, query: &RangeQuery, stale: bool) -> Result<RangeResult, Error> {
        let body = RequestBody::Range {
            query: query.clone(),
            stale,
        };
        match self.call(&body)? {
            ResponseBody::Range(result) => Ok(result),
            other => Err(self.unexpected_body(&other)),
        }
    }

    /// The whole range `query` (up to its limit), page after page: each page is
    /// linearizable, the whole is not one snapshot (a key present throughout is
    /// returned exactly once; one written meanwhile may or may not be).
    ///
    /// # Errors
    /// See [`Error`].
    pub fn range(&mut self, query: &RangeQuery, stale: bool) -> Result<RangeResult, Error> {
        let mut total = RangeResult::default();
        let mut next = query.clone();
        loop {
            let page = self.range_page(&next, stale)?;
            total.count += page.count;
            total.more = page.more;
            let last = page.entries.last().map(|(key, _)| key.clone());
            total.entries.extend(page.entries);
            let left = query.limit.saturating_sub(total.count);
            match last {
                Some(last) if page.more && (query.limit == 0 || left > 0) => {
                    next = query.after(&last);
                    next.limit = left;
                }
                _ => return Ok(total),
            }
        }
    }

    /// Sets `key` to `value`.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn put(&mut self, key: &[u8], value: &[u8]) -> Result<(), Error> {
        let result = self.write(|session| Command::Put {
            session,
            key: key.to_vec(),
            value: value.to_vec(),
        })?;
        match result {
            CommandResult::Ok => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Sets `key` to `value`, expiring `ttl` after the leader accepts the write: the
    /// leader turns the TTL into an absolute time on its clock (as Redis `SET k v PX ms`),
    /// and its expiry cycle deletes the key once that time passed.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn put_with_ttl(&mut self, key: &[u8], value: &[u8], ttl: Duration) -> Result<(), Error> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let result = self.write(|session| Command::Rmw {
            session,
            op: RmwOp::Set {
                key: key.to_vec(),
                value: value.to_vec(),
                condition: SetCondition::Always,
                get: false,
                expiry: SetExpiry::At(Deadline::After(ttl_ms)),
            },
        })?;
        match result {
            CommandResult::Ok => Ok(()),
            other => Err(self.unexpected(&other)),
        }
    }

    /// How long `key` has left before it expires, judged by the leader's clock through
    /// a linearizable read (as Redis `PTTL`).
    ///
    /// # Errors
    /// See [`Error`].
    pub fn ttl(&mut self, key: &[u8]) -> Result<KeyTtl, Error> {
        let body = RequestBody::Ttl {
            key: key.to_vec(),
            absolute: false,
            stale: false,
        };
        match self.call(&body)? {
            ResponseBody::Result(CommandResult::Integer(-2)) => Ok(KeyTtl::Absent),
            ResponseBody::Result(CommandResult::Integer(-1)) => Ok(KeyTtl::Persistent),
            ResponseBody::Result(CommandResult::Integer(ms)) if ms >= 0 => {
                Ok(KeyTtl::Expires(Duration::from_millis(ms as u64)))
            }
            ResponseBody::Result(CommandResult::Error(message)) => Err(Error::Refused(message)),
            other => Err(self.unexpected_body(&other)),
        }
    }

    /// Removes `key`; `true` if it existed.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn delete(&mut self, key: &[u8]) -> Result<bool, Error> {
        let result = self.write(|session| Command::Delete {
            session,
            key: key.to_vec(),
        })?;
        match result {
            CommandResult::Ok => Ok(true),
            CommandResult::NotFound => Ok(false),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Sets `key` to `new` if its value is `expected` (`None`: if it is absent).
    ///
    /// # Errors
    /// See [`Error`].
    pub fn cas(
        &mut self,
        key: &[u8],
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<CasOutcome, Error> {
        let result = self.write(|session| Command::Cas {
            session,
            key: key.to_vec(),
            expected: expected.map(<[u8]>::to_vec),
            new: new.to_vec(),
        })?;
        match result {
            CommandResult::Ok => Ok(CasOutcome::Swapped),
            CommandResult::CasFailed { current } => Ok(CasOutcome::Failed { current }),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Adds `delta` to the integer in `key` (absent: 0) and returns the new value: one
    /// read-modify-write decided when its entry is applied, applied once even when the
    /// request is retried (the session's seq is kept across retries).
    ///
    /// # Errors
    /// [`Error::Refused`] when the value is not an integer or the sum overflows (nothing
    /// is written); see [`Error`].
    pub fn incr(&mut self, key: &[u8], delta: i64) -> Result<i64, Error> {
        let result = self.write(|session| Command::Rmw {
            session,
            op: RmwOp::IncrBy {
                key: key.to_vec(),
                delta,
            },
        })?;
        match result {
            CommandResult::Integer(value) => Ok(value),
            CommandResult::Rejected(error) => Err(Error::Refused(error.to_string())),
            other => Err(self.unexpected(&other)),
        }
    }

    /// Runs `success` if every condition of `compare` holds, else `failure`, atomically.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn txn(
        &mut self,
        compare: &[Compare],
        success: &[Op],
        failure: &[Op],
    ) -> Result<TxnOutcome, Error> {
        let result = self.write(|session| Command::Txn {
            session,
            compare: compare.to_vec(),
            success: success.to_vec(),
            failure: failure.to_vec(),
        })?;
        match result {
            CommandResult::Txn { succeeded, results } => Ok(TxnOutcome { succeeded, results }),
            other => Err(self.unexpected(&other)),
        }
    }

    /// The status of whichever member answers.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn status(&mut self) -> Result<Status, Error> {
        match self.call(&RequestBody::Status)? {
            ResponseBody::Status(status) => Ok(status),
            other => Err(self.unexpected_body(&other)),
        }
    }

    /// The counters of whichever member answers.
    ///
    /// # Errors
    /// See [`Error`].
    pub fn metrics(&mut self) -> Result<Vec<(String, u64)>, Error> {
        match self.call(&RequestBody::Metrics)? {
            ResponseBody::Metrics(counters) => Ok(counters),
            other => Err(self.unexpected_body(&other)),
        }
    }

    /// The leader's view of the cluster: its status, whose `members` carry each
    /// member's role, addresses and match index (how much of the log it holds).
    ///
    /// # Errors
    /// See [`Client::find_leader`] and [`status_at`].
    pub fn leader_status(&mut self) -> Result<Status, Error> {
        let leader = self.find_leader()?;
        let status = status_at(&leader.client_addr, &self.options)?;
        if status.leader_id != status.node_id {
            return Err(Error::Unavailable(format!(
                "node {} no longer leads (leader is now {})",
                status.node_id, status.leader_id
            )));
        }
        Ok(status)
    }

    /// Adds node `id` as a learner listening on `peer_addr` (Raft traffic) and
    /// `client_addr`; returns once the new configuration is committed. Adding the
    /// same learner again with the same addresses succeeds.
    ///
    /// # Errors
    /// [`Error::Refused`] for an id or an address already in use, a bad address;
    /// [`Error::Unavailable`] while another change is in progress; see [`Error`].
    pub fn member_add_learner(
        &mut self,
        id: NodeId,
        peer_addr: &str,
        client_addr: &str,
    ) -> Result<(), Error> {
        self.member_change(MemberChange::AddLearner {
            id,
            peer_addr: peer_addr.to_string(),
            client_addr: client_addr.to_string(),
        })
    }

    /// Promotes learner `id` to voter; returns once committed. The leader refuses
    /// (retryably, so this call keeps trying until its timeout) while the learner
    /// lags more than its promotion distance.
    ///
    /// # Errors
    /// [`Error::Refused`] if `id` is not a learner (promoting a voter succeeds);
    /// [`Error::Unavailable`] with the learner's lag when it did not catch up in time.
    pub fn member_promote(&mut self, id: NodeId) -> Result<(), Error> {
        self.member_change(MemberChange::Promote { id })
    }

    /// Removes member `id` (a voter, the leader included, or a learner); returns once
    /// the configuration without it is committed.
    ///
    /// # Errors
    /// [`Error::Refused`] if `id` is not a member or the last voter; see [`Error`].
    pub fn member_remove(&mut self, id: NodeId) -> Result<(), Error> {
        self.member_change(MemberChange::Remove { id })
    }

    fn member_change(&mut self, change: MemberChange) -> Result<(), Error> {
        match self.call(&RequestBody::MemberChange(change))? {
            ResponseBody::Result(CommandResult::Ok) => Ok(()),
            other => Err(self.unexpected_body(&other)),
        }
    }

    /// Asks the leader to hand leadership to voter `id`; returns once the transfer
    /// started (the target campaigns at once; [`Client::find_leader`] shows the
    /// outcome).
    ///
    /// # Errors
    /// [`Error::Refused`] if `id` is not a voter; see [`Error`].
    pub fn transfer_leader(&mut self, id: NodeId) -> Result<(), Error> {
        match self.call(&RequestBody::TransferLeader { id })? {
            ResponseBody::Result(CommandResult::Ok) => Ok(()),
            other => Err(self.unexpected_body(&other)),
        }
    }

    /// Finds the current leader by asking members for their status, retrying until the
    /// request timeout.
    ///
    /// # Errors
    /// [`Error::Unavailable`] if no member knows a leader before the timeout, or the
    /// error of the last member asked if none answered.
    pub fn find_leader(&mut self) -> Result<LeaderInfo, Error> {
        let deadline = Instant::now() + self.options.request_timeout;
        let mut backoff = self.backoff();
        loop {
            let mut last_error = Error::Unavailable("no member knows a leader".into());
            for addr in self.addrs.clone() {
                match status_at(&addr, &self.options) {
                    Ok(status) => {
                        if let Some(leader) = leader_of(&status) {
                            self.leader_hint = Some(leader.client_addr.clone());
                            return Ok(leader);
                        }
                    }
                    Err(error) => last_error = error,
                }
            }
            self.stats.retries += 1;
            if !self.sleep_before_retry(&mut backoff, deadline) {
                return Err(last_error);
            }
        }
    }

    fn read(&mut self, key: &[u8], stale: bool) -> Result<Option<Vec<u8>>, Error> {
        let body = RequestBody::Get {
            key: key.to_vec(),
            stale,
        };
        match self.call(&body)? {
            ResponseBody::Result(CommandResult::Value(value)) => Ok(value),
            ResponseBody::Result(CommandResult::NotFound) => Ok(None),
            ResponseBody::Result(CommandResult::Error(message)) => Err(Error::Refused(message)),
            other => Err(self.unexpected_body(&other)),
        }
    }

    /// Proposes the write built by `make` under this client's session. A write refused
    /// with `SessionExpired` before any resend is safe to repeat under a new session,
    /// since nothing of it was applied; after a resend its outcome is unknown.
    fn write(&mut self, make: impl Fn(Session) -> Command) -> Result<CommandResult, Error> {
        loop {
            let client_id = self.session()?;
            let session = Session {
                client_id,
                seq: self.next_seq,
            };
            self.next_seq += 1;
            let result = match self.call(&RequestBody::Command(make(session)))? {
                ResponseBody::Result(result) => result,
                other => return Err(self.unexpected_body(&other)),
            };
            match result {
                CommandResult::SessionExpired => {
                    self.client_id = None;
                    if self.last_call_sends > 1 {
                        return Err(Error::SessionExpired);
                    }
                }
                CommandResult::StaleSequence => return Err(Error::StaleSequence),
                CommandResult::Error(message) => return Err(Error::Refused(message)),
                other => return Ok(other),
            }
        }
    }

    /// The session id, registering a session on first use.
    fn session(&mut self) -> Result<u64, Error> {
        if let Some(client_id) = self.client_id {
            return Ok(client_id);
        }
        let body = RequestBody::Command(Command::RegisterSession);
        match self.call(&body)? {
            ResponseBody::Result(CommandResult::Registered { client_id }) => {
                self.client_id = Some(client_id);
                self.next_seq = 1;
                Ok(client_id)
            }
            other => Err(self.unexpected_body(&other)),
        }
    }

    /// Sends `body` until a node answers it, following redirects and retrying failures
    /// until the request timeout.
    pub(super) fn call(&mut self, body: &RequestBody) -> Result<ResponseBody, Error> {
        let deadline = Instant::now() + self.options.request_timeout;
        let mut backoff = self.backoff();
        let mut redirects_in_a_row = 0;
        // Why the previous attempt failed: when the deadline then cuts an attempt short,
        // "unavailable" says more than "timeout".
        let mut last_failure: Option<Error> = None;
        self.last_call_sends = 0;
        loop {
            match self.attempt(body, deadline) {
                Ok(Attempt::Answered(answer)) => return Ok(answer),
                Ok(Attempt::Redirect(addr)) => {
                    self.stats.redirects += 1;
                    self.connection = None;
                    self.leader_hint = Some(addr);
                    // Nodes that disagree on the leader could bounce us forever: back off
                    // once every member had its chance.
                    redirects_in_a_row += 1;
                    if redirects_in_a_row > self.addrs.len() {
                        redirects_in_a_row = 0;
                        if !self.sleep_before_retry(&mut backoff, deadline) {
                            return Err(Error::Timeout);
                        }
                    }
                }
                Ok(Attempt::Retry(error)) => {
                    self.stats.retries += 1;
                    self.connection = None;
                    self.leader_hint = None;
                    if !self.sleep_before_retry(&mut backoff, deadline) {
                        return Err(error);
                    }
                    last_failure = Some(error);
                }
                Err(Error::Timeout) if last_failure.is_some() => {
                    self.connection = None;
                    return Err(last_failure.unwrap_or(Error::Timeout));
                }
                Err(error) => {
                    self.connection = None;
                    return Err(error);
                }
            }
        }
    }

    /// One send and one receive. `Err` ends the call; `Ok(Retry)` tries again.
    fn attempt(&mut self, body: &RequestBody, deadline: Instant) -> Result<Attempt, Error> {
        // The connection is taken out and put back only after a good answer, so every
        // error path drops it.
        let mut connection = match self.take_connection(deadline) {
            Ok(connection) => connection,
            Err(error @ Error::Io { .. }) => return Ok(Attempt::Retry(error)),
            Err(error) => return Err(error),
        };
        let request_id = connection.submit(body.clone())?;
        self.last_call_sends += 1;
        let response = match connection.recv(deadline) {
            Ok(response) => response,
            Err(error @ Error::Io { .. }) => return Ok(Attempt::Retry(error)),
            Err(error) => return Err(error),
        };
        if response.request_id != request_id {
            return Err(Error::Protocol {
                addr: connection.addr().to_string(),
                reason: format!(
                    "reply to request {} while waiting for {request_id}",
                    response.request_id
                ),
            });
        }
        Ok(match response.body {
            ResponseBody::NotLeader {
                leader_client_addr: Some(addr),
                ..
            } => Attempt::Redirect(addr),
            ResponseBody::NotLeader {
                leader_client_addr: None,
                ..
            } => Attempt::Retry(Error::Unavailable("no leader known".into())),
            ResponseBody::Unavailable(reason) => Attempt::Retry(Error::Unavailable(reason)),
            ResponseBody::Error(message) => return Err(Error::Refused(message)),
            answer => {
                self.connection = Some(connection);
                Attempt::Answered(answer)
            }
        })
    }

    /// The open connection, or a new one to the leader hint or the next member.
    fn take_connection(&mut self, deadline: Instant) -> Result<Pipeline, Error> {
        if let Some(connection) = self.connection.take() {
            return Ok(connection);
        }
        let addr = match self.leader_hint.take() {
            Some(addr) => addr,
            None => {
                let addr = self.addrs[self.next_addr % self.addrs.len()].clone();
                self.next_addr = self.next_addr.wrapping_add(1);
                addr
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        let timeout = self.options.connect_timeout.min(remaining);
        let connection = self.options.pipeline(&addr, timeout)?;
        self.leader_hint = Some(addr);
        Ok(connection)
    }

    fn backoff(&self) -> Backoff {
        Backoff::new(self.options.backoff_min_ms, self.options.backoff_max_ms)
    }

    /// Sleeps the next backoff delay, cut at the deadline; `false` if the deadline passed.
    fn sleep_before_retry(&mut self, backoff: &mut Backoff, deadline: Instant) -> bool {
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return false;
        }
        let delay = Duration::from_millis(backoff.next_delay_ms(self.next_random()));
        thread::sleep(delay.min(remaining));
        Instant::now() < deadline
    }

    /// SplitMix64: jitter only, so any decent mixing will do.
    fn next_random(&mut self) -> u64 {
        self.rng_state = self.rng_state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.rng_state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn unexpected(&self, result: &CommandResult) -> Error {
        self.unexpected_body(&ResponseBody::Result(result.clone()))
    }

    pub(super) fn unexpected_body(&self, body: &ResponseBody) -> Error {
        let addr = self
            .connection
            .as_ref()
            .map_or_else(String::new, |connection| connection.addr().to_string());
        Error::Protocol {
            addr,
            reason: format!("unexpected answer {body:?}"),
        }
    }
}

/// The leader named by `status`, with its client address, if the node knows one.
pub fn leader_of(status: &Status) -> Option<LeaderInfo> {
    let member = status
        .members
        .iter()
        .find(|member| member.id == status.leader_id)?;
    Some(LeaderInfo {
        id: member.id,
        client_addr: member.client_addr.clone(),
        term: status.term,
    })
}

/// Asks the node at `addr`, and only it, for its status: one attempt, no retry, so an
/// unreachable member shows as an error.
///
/// # Errors
/// [`Error::Io`] if unreachable, [`Error::Timeout`] after `options.request_timeout`.
pub fn status_at(addr: &str, options: &ClientOptions) -> Result<Status, Error> {
    match call_once(addr, RequestBody::Status, options)? {
        ResponseBody::Status(status) => Ok(status),
        other => Err(Error::Protocol {
            addr: addr.to_string(),
            reason: format!("unexpected answer {other:?}"),
        }),
    }
}

/// Asks the node at `addr`, and only it, for its counters (as [`status_at`]).
///
/// # Errors
/// As [`status_at`].
pub fn metrics_at(addr: &str, options: &ClientOptions) -> Result<Vec<(String, u64)>, Error> {
    match call_once(addr, RequestBody::Metrics, options)? {
        ResponseBody::Metrics(counters) => Ok(counters),
        other => Err(Error::Protocol {
            addr: addr.to_string(),
            reason: format!("unexpected answer {other:?}"),
        }),
    }
}

fn call_once(
    addr: &str,
    body: RequestBody,
    options: &ClientOptions,
) -> Result<ResponseBody, Error> {
    let deadline = Instant::now() + options.request_timeout;
    let mut pipeline = options.pipeline(addr, options.connect_timeout)?;
    pipeline.submit(body)?;
    let response = pipeline.recv(deadline)?;
    match response.body {
        ResponseBody::Unavailable(reason) => Err(Error::Unavailable(reason)),
        ResponseBody::Error(message) => Err(Error::Refused(message)),
        answer => Ok(answer),
    }
}
