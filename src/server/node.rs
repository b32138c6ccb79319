//! The server's wrapper of one [`Replica`]: the replica over the on-disk log
//! ([`WalStore`]) and a snapshot helper thread ([`SnapshotThread`]), plus what needs
//! the disk or a clock: opening the data directory, the removal marker, and the
//! millisecond clock of the NOSPACE retries and snapshot timings.
//!
//! The event loop hands the node decoded peer messages, client requests and ticks, and
//! calls [`Node::before_sleep`] once per loop turn; the order of that turn (apply
//! before the sync on the leader, one sync, acknowledgements after it) is the
//! replica's contract, see [`crate::replica`].
//!
//! Fail-stop: a log store failure while the core reads the log in `tick` or
//! `on_peer_message` is kept and returned by the next `before_sleep`, before anything
//! of that turn is persisted, sent or applied, so the loop stops the node as it does
//! on a WAL write failure. A refused or dropped message is only a warning.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use super::backup::Backups;
use super::removal_marker;
use super::snapshot_thread::SnapshotThread;
use super::wal_store::{StoreOpenError, WalStore};
use crate::codec::backup::BackupRequest;
use crate::codec::client::{Request, RequestBody, Response, ResponseBody};
use crate::config::Config;
use crate::raft::{self, Message};
use crate::replica::changes::{Applied, Observe};
use crate::replica::exposition::Exposition;
pub use crate::replica::request_metrics::Port;
use crate::replica::request_metrics::RequestMetrics;
use crate::replica::round_trips::RoundTrips;
use crate::replica::{self, Replica};
use crate::storage::identity::Identity;

pub use crate::replica::exposition::PROMETHEUS_CONTENT_TYPE;
use crate::replica::metrics::Metrics;
pub use crate::replica::{ClientRef, Outbox, WantedPeer};

/// Why [`Node::open`] failed.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    /// The data directory holds state that is not this node's, or not consistent: the
    /// node must not start on it; the message names the file and the repair.
    #[error("{0}")]
    Refused(#[source] StoreOpenError),
    /// The storage could not be opened.
    #[error("{0}")]
    Failed(#[source] StoreOpenError),
    /// The replica could not be built on the opened storage (a corrupt snapshot).
    #[error("{0}")]
    Replica(#[source] replica::Error),
    /// The snapshot saves a previous run left in the data directory could not be
    /// removed.
    #[error("removing the snapshot saves left in {}/backups: {source}", dir.display())]
    Backups {
        /// The data directory.
        dir: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// One node: its replica over the WAL and the snapshot thread.
pub struct Node {
    replica: Replica<WalStore, SnapshotThread>,
    data_dir: PathBuf,
    /// The origin of the replica's clock (NOSPACE retries, snapshot timings).
    opened: Instant,
    /// The wall clock at `opened`, in ms since the Unix epoch: events happen at this
    /// plus the replica's clock.
    opened_wall_ms: u64,
    /// A store failure from `tick` or `on_peer_message`, returned by the next
    /// `before_sleep` (see the module docs).
    failed: Option<replica::Error>,
    /// Replication messages in flight, timed with `opened`'s clock in µs.
    round_trips: RoundTrips,
    /// Client requests waiting and answered, timed with the same clock.
    requests: RequestMetrics,
    /// The snapshot saves clients asked for (`raftkv-cli snapshot save`).
    backups: Backups,
}

/// An [`Outbox`] that times the replication messages and the replies it passes on.
struct TimedOutbox<'a, O: Outbox> {
    inner: &'a mut O,
    round_trips: &'a mut RoundTrips,
    requests: &'a mut RequestMetrics,
    now_us: u64,
}

impl<O: Outbox> Outbox for TimedOutbox<'_, O> {
    fn send(&mut self, message: &Message) -> usize {
        self.round_trips.on_sent(message, self.now_us);
        self.inner.send(message)
    }

    fn reply(&mut self, client: ClientRef, response: Response) {
        self.requests.on_response(client, &response, self.now_us);
        self.inner.reply(client, response);
    }

    fn flush_now(&mut self) {
        self.inner.flush_now();
    }
}

impl Node {
    /// Opens the node's storage, restores the state machine from the latest snapshot
    /// and builds the consensus core.
    ///
    /// # Errors
    /// [`OpenError::Refused`] for a data directory that is not this node's consistent
    /// state (another cluster's or node's, a log without its hard state);
    /// [`OpenError::Failed`] for storage that cannot be opened (locked, corrupt,
    /// unreadable) or a corrupt snapshot.
    /// `join`: the node starts with an empty membership and waits for a leader to
    /// add it (`raftkv-server --join`); ignored when the data directory already
    /// holds a node, which always restarts from its saved bootstrap membership.
    pub fn open(config: Config, join: bool) -> Result<Node, OpenError> {
        let bootstrap = crate::replica::members::bootstrap_configuration(&config, join);
        let options = crate::storage::WalOptions {
            segment_bytes: config.storage.segment_bytes,
            fsync: config.storage.fsync,
            ..crate::storage::WalOptions::default()
        };
        let identity = Identity {
            cluster_id: config.cluster_id,
            node_id: config.node_id,
        };
        let store =
            WalStore::open(&config.data_dir, options, bootstrap, identity).map_err(|e| {
                if e.is_refusal() {
                    OpenError::Refused(e)
                } else {
                    OpenError::Failed(e)
                }
            })?;
        let snapshots = SnapshotThread::new(
            store.snapshot_dir().to_path_buf(),
            config.snapshot.encode_cpu_percent,
        );
        let raft_config = replica::raft_config(&config);
        let seed = config.node_id ^ (std::process::id() as u64) << 32;
        let data_dir = config.data_dir.clone();
        let backups =
            Backups::new(&data_dir, config.snapshot.encode_cpu_percent).map_err(|source| {
                OpenError::Backups {
                    dir: data_dir.clone(),
                    source,
                }
            })?;
        let replica = Replica::new(config, raft_config, store, snapshots, seed)
            .map_err(OpenError::Replica)?;
        Ok(Node {
            replica,
            data_dir,
            opened: Instant::now(),
            opened_wall_ms: wall_clock_ms(),
            failed: None,
            round_trips: RoundTrips::new(),
            requests: RequestMetrics::new(),
            backups,
        })
    }

    /// See [`Replica::removed_at`].
    pub fn removed_at(&self) -> Option<u64> {
        self.replica.removed_at()
    }

    /// Records in the data directory that this node was removed at `index`, so that
    /// it refuses to start from it again.
    ///
    /// # Errors
    /// The marker could not be written.
    pub fn record_removal(&self, index: u64) -> Result<(), removal_marker::Error> {
        removal_marker::write(&self.data_dir, index)
    }

    /// The index this node's data directory records its removal at, if it does.
    ///
    /// # Errors
    /// The marker exists but cannot be read.
    pub fn recorded_removal(&self) -> Result<Option<u64>, removal_marker::Error> {
        removal_marker::read(&self.data_dir)
    }

    /// Where this node stands: voter, learner, joining (empty membership) or removed.
    pub fn member_state(&self) -> raft::MemberState {
        self.replica.member_state()
    }

    /// See [`Replica::wanted_peers`].
    pub fn wanted_peers(&mut self) -> Option<Vec<WantedPeer>> {
        self.replica.wanted_peers()
    }

    /// The node's metrics, for the loop to record network events.
    pub fn metrics_mut(&mut self) -> &mut Metrics {
        self.replica.metrics_mut()
    }

    /// Everything the node exports, in the Prometheus text format 0.0.4 (the answer to
    /// `GET /metrics`, served as [`PROMETHEUS_CONTENT_TYPE`]).
    pub fn prometheus_text(&self) -> String {
        let mut x = Exposition::new();
        self.requests.write_prometheus(&mut x);
        let mut text = self.replica.prometheus_text();
        text.push_str(&x.finish());
        text
    }

    /// The recent events (leader changes, elections, membership changes, snapshots,
    /// alarms) as a JSON array, newest last (the answer to `GET /events`). Each object
    /// has `time_ms` (wall clock, ms since the Unix epoch), `kind`, `term`, `message`,
    /// and the event's numeric details (`leader`, `member`, `index`, `bytes`...).
    pub fn recent_events_json(&self) -> String {
        let events: Vec<serde_json::Value> = self
            .replica
            .events()
            .iter()
            .map(|event| {
                let mut object = serde_json::Map::new();
                let time_ms = self.opened_wall_ms.saturating_add(event.at_ms);
                object.insert("time_ms".into(), time_ms.into());
                object.insert("kind".into(), event.kind.name().into());
                object.insert("term".into(), event.term.into());
                object.insert("message".into(), event.message.clone().into());
                for (key, value) in &event.fields {
                    object.insert((*key).into(), (*value).into());
                }
                serde_json::Value::Object(object)
            })
            .collect();
        serde_json::Value::Array(events).to_string()
    }

    /// One line on what the last `before_sleep` did (for slow-turn warnings).
    pub fn last_turn_summary(&self) -> String {
        self.replica.last_turn_summary()
    }

    /// One logical clock tick; a store failure stops the node at the next
    /// `before_sleep`.
    pub fn tick(&mut self) {
        self.set_expiry_clock();
        if let Err(e) = self.replica.tick() {
            self.fail(e);
        }
    }

    /// A message from a peer; a store failure stops the node at the next
    /// `before_sleep`.
    pub fn on_peer_message(&mut self, message: Message) {
        self.set_expiry_clock();
        if let Some(round_trip_us) = self.round_trips.on_received(&message, self.now_us()) {
            self.replica
                .metrics_mut()
                .record_peer_round_trip(message.from, round_trip_us);
        }
        if let Err(e) = self.replica.step(message) {
            self.fail(e);
        }
    }

    fn fail(&mut self, error: replica::Error) {
        log::error!("{error}: the node stops");
        self.failed.get_or_insert(error);
    }

    /// See [`Replica::on_client_closed`].
    pub fn on_client_closed(&mut self, client: ClientRef) {
        self.requests.on_client_closed(client);
        self.backups.on_client_closed(client);
        self.replica.on_client_closed(client);
    }

    /// See [`Replica::on_client_request`]; `port` labels the request's metrics.
    pub fn on_client_request(
        &mut self,
        port: Port,
        client: ClientRef,
        request: Request,
        command_bytes: Option<&[u8]>,
        now_ms: u64,
    ) -> Option<Response> {
        self.set_expiry_clock();
        self.requests
            .on_request(port, client, &request, self.now_us());
        let response = match request.body {
            RequestBody::Backup(step) => Some(self.serve_backup(client, request.request_id, step)),
            _ => self
                .replica
                .on_client_request(client, request, command_bytes, now_ms),
        };
        self.measure_reply(client, response)
    }

    /// Serves a step of a snapshot save ([`Backups`]); a store failure taking the view
    /// stops the node at the next `before_sleep`.
    fn serve_backup(
        &mut self,
        client: ClientRef,
        request_id: u64,
        step: BackupRequest,
    ) -> Response {
        let replica = &mut self.replica;
        let failed = &mut self.failed;
        let body = self
            .backups
            .serve(client, step, || match replica.backup_view() {
                Ok(view) => view,
                Err(e) => {
                    log::error!("{e}: the node stops");
                    failed.get_or_insert(e);
                    Err(ResponseBody::Unavailable("the node is stopping".into()))
                }
            });
        Response { request_id, body }
    }

    /// See [`Replica::on_leader_unreachable`]; `port` labels the request's metrics.
    pub fn on_leader_unreachable(
        &mut self,
        port: Port,
        client: ClientRef,
        request: Request,
        leader_addr: &str,
        now_ms: u64,
    ) -> Option<Response> {
        self.set_expiry_clock();
        self.requests
            .on_request(port, client, &request, self.now_us());
        let response = self
            .replica
            .on_leader_unreachable(client, request, leader_addr, now_ms);
        self.measure_reply(client, response)
    }

    /// Counts and times a reply given at once.
    fn measure_reply(&mut self, client: ClientRef, response: Option<Response>) -> Option<Response> {
        if let Some(response) = &response {
            self.requests.on_response(client, response, self.now_us());
        }
        response
    }

    /// See [`Replica::set_observe`].
    pub fn set_observe(&mut self, observe: Observe) {
        self.replica.set_observe(observe);
    }

    /// See [`Replica::applied_index`].
    pub fn applied_index(&self) -> u64 {
        self.replica.applied_index()
    }

    /// See [`Replica::take_applied`].
    pub fn take_applied(&mut self) -> Vec<Applied> {
        self.replica.take_applied()
    }

    /// See [`Replica::has_apply_backlog`].
    pub fn has_apply_backlog(&self) -> bool {
        self.replica.has_apply_backlog()
    }

    /// The earliest client request deadline, in the loop's clock.
    pub fn next_deadline(&mut self) -> Option<u64> {
        self.replica.next_deadline()
    }

    /// See [`Replica::expire_deadlines`].
    pub fn expire_deadlines(&mut self, now_ms: u64, out: &mut impl Outbox) {
        let mut out = TimedOutbox {
            inner: out,
            round_trips: &mut self.round_trips,
            requests: &mut self.requests,
            now_us: u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX),
        };
        self.replica.expire_deadlines(now_ms, &mut out);
    }

    /// Drains the replica's Ready once per loop turn.
    ///
    /// # Errors
    /// A storage failure (also one kept from `tick` or `on_peer_message`); the caller
    /// must stop the node: nothing after it may be acknowledged.
    pub fn before_sleep(&mut self, out: &mut impl Outbox) -> Result<(), replica::Error> {
        if let Some(error) = self.failed.take() {
            return Err(error);
        }
        self.set_expiry_clock();
        let now_ms = self.opened.elapsed().as_millis() as u64;
        let mut out = TimedOutbox {
            inner: out,
            round_trips: &mut self.round_trips,
            requests: &mut self.requests,
            now_us: u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX),
        };
        self.replica.before_sleep(now_ms, &mut out)
    }

    /// Gives the replica its expiry clock: the wall time the node opened plus the
    /// monotonic time since, so a jump of the wall clock while it runs changes nothing
    /// (see docs/REDIS.md, "Expiry").
    fn set_expiry_clock(&mut self) {
        let elapsed_ms = u64::try_from(self.opened.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.replica
            .set_wall_clock_ms(self.opened_wall_ms.saturating_add(elapsed_ms));
    }

    /// The replica's clock in microseconds (for round trips).
    fn now_us(&self) -> u64 {
        u64::try_from(self.opened.elapsed().as_micros()).unwrap_or(u64::MAX)
    }
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
fn wall_clock_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
#[path = "node_tests.rs"]
mod tests;
