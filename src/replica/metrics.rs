//! The node's counters, gauges and histograms, and their rendering for the Metrics reply.
//!
//! The event loop calls the `on_*`/`record_*`/`set_*` methods as things happen; nothing
//! here reads a clock or does IO (durations are measured by the caller and passed in).
//! [`Metrics::render`] flattens everything into `(name, value)` pairs with stable names,
//! documented in `docs/CONFIG.md` ("Metrics"): renaming one is a breaking change for
//! whoever scrapes them.
//!
//! The same numbers are also exported in the Prometheus text format, with base units
//! and exact sums, by [`prometheus`].
//!
//! Invariant: counters only grow; gauges hold the last value set; a [`Timings`] sum is
//! the exact sum of what its histogram recorded (before clamping).

use std::collections::BTreeMap;

use hdrhistogram::Histogram;

use crate::raft::message::NodeId;

pub mod prometheus;

/// Largest fsync latency the histogram tracks exactly (60 s); longer ones are clamped.
const FSYNC_LATENCY_US_MAX: u64 = 60_000_000;

/// Largest number of entries per fsync tracked exactly; larger batches are clamped.
const ENTRIES_PER_FSYNC_MAX: u64 = 10_000_000;

/// Longest loop turn the histogram tracks exactly (60 s); longer ones are clamped.
const TURN_US_MAX: u64 = 60_000_000;

/// Length of one window of `loop.turn_us_max_recent`, in the loop's milliseconds: the
/// gauge is the longest turn of the current window and the one before it.
pub const RECENT_TURN_WINDOW_MS: u64 = 10_000;

/// Longest snapshot write the histogram tracks exactly (1 hour, in ms).
const SNAPSHOT_MS_MAX: u64 = 3_600_000;

/// Longest peer round trip the histogram tracks exactly (60 s, in µs).
const ROUND_TRIP_US_MAX: u64 = 60_000_000;

/// A histogram of observations and their exact sum (Prometheus' `_sum`).
#[derive(Debug, Clone)]
pub struct Timings {
    histogram: Histogram<u64>,
    sum: u64,
}

impl Timings {
    /// Empty; values above `high` are clamped into the histogram's last bucket.
    pub fn new(high: u64) -> Timings {
        Timings {
            histogram: histogram(high),
            sum: 0,
        }
    }

    /// One observation.
    pub fn record(&mut self, value: u64) {
        self.histogram.saturating_record(value);
        self.sum = self.sum.saturating_add(value);
    }

    /// The histogram.
    pub fn histogram(&self) -> &Histogram<u64> {
        &self.histogram
    }

    /// The exact sum of the observations.
    pub fn sum(&self) -> u64 {
        self.sum
    }
}

/// Traffic and link state of one peer.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerMetrics {
    /// Whether a link to the peer is currently up (handshake done).
    pub connected: bool,
    /// Links established.
    pub connects: u64,
    /// Links lost.
    pub disconnects: u64,
    /// Messages sent to the peer.
    pub messages_sent: u64,
    /// Bytes (framed) sent to the peer.
    pub bytes_sent: u64,
    /// Messages received from the peer.
    pub messages_received: u64,
    /// Bytes (framed) received from the peer.
    pub bytes_received: u64,
}

/// What the event loop counts about client and inbound peer connections (the `net.*`
/// metrics); the loop owns the counts and copies them here once per turn.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ConnectionMetrics {
    /// Open client connections (client, Redis and HTTP ports): a gauge.
    pub client_connections: u64,
    /// Of those, the Redis port's: a gauge.
    pub redis_connections: u64,
    /// Of those, the HTTP port's: a gauge.
    pub http_connections: u64,
    /// Bytes read from client connections (client and Redis ports).
    pub client_bytes_received: u64,
    /// Bytes written to client connections.
    pub client_bytes_sent: u64,
    /// Inbound peer connections waiting for their handshake: a gauge.
    pub peer_handshakes: u64,
    /// Connections closed at accept (a limit reached, or out of file descriptors).
    pub accepts_refused: u64,
    /// Peer links closed because the other side did not prove the cluster secret.
    pub peer_auth_failures: u64,
    /// Client AUTHs that failed and client commands refused for want of authentication
    /// or permission (`security.users_file`).
    pub client_auth_failures: u64,
    /// Client connections closed for being idle.
    pub idle_timeouts: u64,
    /// Client connections closed for a request that never completed.
    pub partial_request_timeouts: u64,
    /// Inbound peer connections closed for not sending their handshake in time.
    pub handshake_timeouts: u64,
    /// Times a client connection stopped being read (back-pressure).
    pub reads_paused: u64,
    /// Client connections closed at the hard output limit.
    pub output_limit_disconnects: u64,
    /// Connections closed for a TLS failure (a failed handshake, a refused
    /// certificate, plaintext on a TLS port, a bad record).
    pub tls_failures: u64,
}

/// Everything the node counts about itself.
#[derive(Debug)]
pub struct Metrics {
    proposals: u64,
    commit_index: u64,
    committed_entries: u64,
    applied_index: u64,
    elections_started: u64,
    elections_won: u64,
    elections_lost: u64,
    /// Writes whose entry was applied in the term they were proposed in.
    proposals_committed: u64,
    /// Writes that were not applied or whose outcome is unknown (leadership lost,
    /// deadline passed).
    proposals_failed: u64,
    leader_changes: u64,
    fsync_count: u64,
    fsync_slow_count: u64,
    slow_fsync_us: u64,
    fsync_latency_us: Timings,
    /// Entries made durable by each fsync: the group-commit factor.
    entries_per_fsync: Timings,
    loop_turns: u64,
    loop_slow_turns: u64,
    /// The work time of each loop turn (the poll's wait excluded).
    turn_us: Timings,
    /// The longest turn of the current window, of the window before it, and when the
    /// current window started (the loop's clock).
    recent_turn_us_max: u64,
    previous_turn_us_max: u64,
    recent_window_started_ms: u64,
    log_bytes: u64,
    snapshot_bytes: u64,
    snapshots_taken: u64,
    snapshots_installed: u64,
    /// How long each snapshot this node took ran, from start to durable (ms).
    snapshot_ms: Timings,
    alarm_nospace: bool,
    nospace_alarms: u64,
    peers: BTreeMap<NodeId, PeerMetrics>,
    /// Round trips of replication messages per peer (µs), measured by the driver.
    peer_round_trip_us: BTreeMap<NodeId, Timings>,
    connections: ConnectionMetrics,
}

impl Metrics {
    /// Empty metrics; fsyncs longer than `slow_fsync_us` microseconds count as slow.
    pub fn new(slow_fsync_us: u64) -> Metrics {
        Metrics {
            proposals: 0,
            commit_index: 0,
            committed_entries: 0,
            applied_index: 0,
            elections_started: 0,
            elections_won: 0,
            elections_lost: 0,
            proposals_committed: 0,
            proposals_failed: 0,
            leader_changes: 0,
            fsync_count: 0,
            fsync_slow_count: 0,
            slow_fsync_us,
            fsync_latency_us: Timings::new(FSYNC_LATENCY_US_MAX),
            entries_per_fsync: Timings::new(ENTRIES_PER_FSYNC_MAX),
            loop_turns: 0,
            loop_slow_turns: 0,
            turn_us: Timings::new(TURN_US_MAX),
            recent_turn_us_max: 0,
            previous_turn_us_max: 0,
            recent_window_started_ms: 0,
            log_bytes: 0,
            snapshot_bytes: 0,
            snapshots_taken: 0,
            snapshots_installed: 0,
            snapshot_ms: Timings::new(SNAPSHOT_MS_MAX),
            alarm_nospace: false,
            nospace_alarms: 0,
            peers: BTreeMap::new(),
            peer_round_trip_us: BTreeMap::new(),
            connections: ConnectionMetrics::default(),
        }
    }

    /// A client proposal was handed to Raft.
    pub fn on_proposal(&mut self) {
        self.proposals += 1;
    }

    /// The commit index moved to `commit_index`; the entries in between count as commits.
    pub fn on_commit(&mut self, commit_index: u64) {
        self.committed_entries += commit_index.saturating_sub(self.commit_index);
        self.commit_index = self.commit_index.max(commit_index);
    }

    /// Entries up to `applied_index` were applied to the state machine.
    pub fn on_apply(&mut self, applied_index: u64) {
        self.applied_index = applied_index;
    }

    /// This node started an election (became candidate).
    pub fn on_election_started(&mut self) {
        self.elections_started += 1;
    }

    /// This node won an election (became leader).
    pub fn on_election_won(&mut self) {
        self.elections_won += 1;
    }

    /// This node's election ended without it becoming leader (it went from candidate
    /// back to follower).
    pub fn on_election_lost(&mut self) {
        self.elections_lost += 1;
    }

    /// A write's entry was applied in the term it was proposed in: it committed.
    pub fn on_proposal_committed(&mut self) {
        self.proposals_committed += 1;
    }

    /// A write was not applied, or its outcome is unknown to the client.
    pub fn on_proposal_failed(&mut self) {
        self.proposals_failed += 1;
    }

    /// The leader this node knows of changed (including to "none").
    pub fn on_leader_change(&mut self) {
        self.leader_changes += 1;
    }

    /// One fsync took `latency_us` and made `entries` entries durable. Returns whether it
    /// was slower than the threshold, so the caller logs the warning.
    pub fn record_fsync(&mut self, latency_us: u64, entries: u64) -> bool {
        self.fsync_count += 1;
        self.fsync_latency_us.record(latency_us);
        self.entries_per_fsync.record(entries);
        let slow = latency_us > self.slow_fsync_us;
        if slow {
            self.fsync_slow_count += 1;
        }
        slow
    }

    /// A loop turn began (counted before its sync, so `storage.fsync.count` never
    /// runs ahead of `loop.turns` while the loop keeps one sync per turn).
    pub fn on_loop_turn_started(&mut self) {
        self.loop_turns += 1;
    }

    /// A loop turn ended at `now_ms` (the loop's clock) after `busy_us` microseconds of
    /// work; `slow` when that was longer than the caller's threshold.
    pub fn on_loop_turn_ended(&mut self, now_ms: u64, busy_us: u64, slow: bool) {
        self.turn_us.record(busy_us);
        let window_age_ms = now_ms.saturating_sub(self.recent_window_started_ms);
        if window_age_ms >= RECENT_TURN_WINDOW_MS {
            // A window with no turn at all leaves nothing to carry over.
            self.previous_turn_us_max = if window_age_ms < 2 * RECENT_TURN_WINDOW_MS {
                self.recent_turn_us_max
            } else {
                0
            };
            self.recent_turn_us_max = 0;
            self.recent_window_started_ms = now_ms;
        }
        self.recent_turn_us_max = self.recent_turn_us_max.max(busy_us);
        if slow {
            self.loop_slow_turns += 1;
        }
    }

    /// The WAL now occupies `bytes` on disk.
    pub fn set_log_bytes(&mut self, bytes: u64) {
        self.log_bytes = bytes;
    }

    /// A snapshot of `bytes` bytes this node took is durable, `elapsed_ms` after it
    /// started.
    pub fn on_snapshot(&mut self, bytes: u64, elapsed_ms: u64) {
        self.snapshots_taken += 1;
        self.snapshot_bytes = bytes;
        self.snapshot_ms.record(elapsed_ms);
    }

    /// A snapshot of `bytes` bytes received from the leader was installed.
    pub fn on_snapshot_installed(&mut self, bytes: u64) {
        self.snapshots_installed += 1;
        self.snapshot_bytes = bytes;
    }

    /// A replication message to `peer` was answered `round_trip_us` after it was sent.
    pub fn record_peer_round_trip(&mut self, peer: NodeId, round_trip_us: u64) {
        self.peer_round_trip_us
            .entry(peer)
            .or_insert_with(|| Timings::new(ROUND_TRIP_US_MAX))
            .record(round_trip_us);
    }

    /// Whether the NOSPACE alarm is up (`replica::alarm`); counts each time it goes up.
    pub fn set_alarm_nospace(&mut self, raised: bool) {
        if raised && !self.alarm_nospace {
            self.nospace_alarms += 1;
        }
        self.alarm_nospace = raised;
    }

    /// A link to `peer` completed its handshake.
    pub fn on_peer_connected(&mut self, peer: NodeId) {
        let stats = self.peers.entry(peer).or_default();
        stats.connected = true;
        stats.connects += 1;
    }

    /// The link to `peer` was lost (only counted if it was up).
    pub fn on_peer_disconnected(&mut self, peer: NodeId) {
        let stats = self.peers.entry(peer).or_default();
        if stats.connected {
            stats.connected = false;
            stats.disconnects += 1;
        }
    }

    /// One message of `bytes` bytes was queued for `peer`.
    pub fn on_message_sent(&mut self, peer: NodeId, bytes: u64) {
        let stats = self.peers.entry(peer).or_default();
        stats.messages_sent += 1;
        stats.bytes_sent += bytes;
    }

    /// One message of `bytes` bytes arrived from `peer`.
    pub fn on_message_received(&mut self, peer: NodeId, bytes: u64) {
        let stats = self.peers.entry(peer).or_default();
        stats.messages_received += 1;
        stats.bytes_received += bytes;
    }

    /// The event loop's connection counts as of now.
    pub fn set_connections(&mut self, connections: ConnectionMetrics) {
        self.connections = connections;
    }

    /// The counters of `peer`, if anything was recorded for it.
    pub fn peer(&self, peer: NodeId) -> Option<&PeerMetrics> {
        self.peers.get(&peer)
    }

    /// Every metric as `(name, value)`, in a stable order; names are documented in
    /// `docs/CONFIG.md`.
    pub fn render(&self) -> Vec<(String, u64)> {
        let mut out: Vec<(String, u64)> = [
            ("raft.proposals", self.proposals),
            ("raft.commit_index", self.commit_index),
            ("raft.committed_entries", self.committed_entries),
            ("raft.applied_index", self.applied_index),
            ("raft.elections_started", self.elections_started),
            ("raft.elections_won", self.elections_won),
            ("raft.leader_changes", self.leader_changes),
            ("loop.turns", self.loop_turns),
            ("loop.slow_turns", self.loop_slow_turns),
            ("storage.fsync.count", self.fsync_count),
            ("storage.fsync.slow_count", self.fsync_slow_count),
        ]
        .into_iter()
        .map(|(name, value)| (name.to_string(), value))
        .collect();
        push_percentiles(&mut out, "loop.turn_us", &self.turn_us.histogram);
        out.push((
            "loop.turn_us_max_recent".to_string(),
            self.recent_turn_us_max.max(self.previous_turn_us_max),
        ));
        push_percentiles(
            &mut out,
            "storage.fsync.latency_us",
            &self.fsync_latency_us.histogram,
        );
        out.push((
            "storage.fsync.entries.sum".to_string(),
            self.entries_per_fsync.sum,
        ));
        push_percentiles(
            &mut out,
            "storage.fsync.entries",
            &self.entries_per_fsync.histogram,
        );
        out.push(("storage.log_bytes".to_string(), self.log_bytes));
        out.push(("storage.snapshot_bytes".to_string(), self.snapshot_bytes));
        out.push(("storage.snapshots_taken".to_string(), self.snapshots_taken));
        out.push((
            "storage.alarm_nospace".to_string(),
            u64::from(self.alarm_nospace),
        ));
        out.push(("storage.nospace_alarms".to_string(), self.nospace_alarms));
        let c = &self.connections;
        let connections = [
            ("net.client_connections", c.client_connections),
            ("net.peer_handshakes", c.peer_handshakes),
            ("net.accepts_refused", c.accepts_refused),
            ("net.peer_auth_failures", c.peer_auth_failures),
            ("net.client_auth_failures", c.client_auth_failures),
            ("net.idle_timeouts", c.idle_timeouts),
            ("net.partial_request_timeouts", c.partial_request_timeouts),
            ("net.handshake_timeouts", c.handshake_timeouts),
            ("net.reads_paused", c.reads_paused),
            ("net.output_limit_disconnects", c.output_limit_disconnects),
            ("net.tls_failures", c.tls_failures),
        ];
        for (name, value) in connections {
            out.push((name.to_string(), value));
        }
        for (id, peer) in &self.peers {
            let fields = [
                ("connected", u64::from(peer.connected)),
                ("connects", peer.connects),
                ("disconnects", peer.disconnects),
                ("messages_sent", peer.messages_sent),
                ("bytes_sent", peer.bytes_sent),
                ("messages_received", peer.messages_received),
                ("bytes_received", peer.bytes_received),
            ];
            for (field, value) in fields {
                out.push((format!("peer.{id}.{field}"), value));
            }
        }
        out
    }
}

fn histogram(high: u64) -> Histogram<u64> {
    // Constant, valid bounds (1 <= high, 3 significant figures): creation cannot fail.
    Histogram::new_with_bounds(1, high, 3).expect("constant histogram bounds are valid")
}

fn push_percentiles(out: &mut Vec<(String, u64)>, prefix: &str, histogram: &Histogram<u64>) {
    let quantiles = [("p50", 0.5), ("p99", 0.99), ("p999", 0.999)];
    for (name, quantile) in quantiles {
        out.push((
            format!("{prefix}.{name}"),
            histogram.value_at_quantile(quantile),
        ));
    }
    out.push((format!("{prefix}.max"), histogram.max()));
}

#[cfg(test)]
mod tests {
    //! Goal: every recorded event shows up under its documented name with the right value.
    use super::*;

    fn value(rendered: &[(String, u64)], name: &str) -> u64 {
        rendered
            .iter()
            .find(|(n, _)| n == name)
            .unwrap_or_else(|| panic!("metric {name} missing"))
            .1
    }

    #[test]
    fn fresh_metrics_render_zeroes_and_no_peers() {
        let rendered = Metrics::new(100_000).render();
        assert!(rendered.iter().all(|(_, v)| *v == 0));
        assert!(rendered.iter().all(|(n, _)| !n.starts_with("peer.")));
        assert_eq!(rendered.len(), 41);
    }

    #[test]
    fn raft_counters_and_gauges() {
        let mut m = Metrics::new(100_000);
        m.on_proposal();
        m.on_proposal();
        m.on_commit(5);
        m.on_commit(3); // a stale report never moves the index back
        m.on_commit(9);
        m.on_apply(7);
        m.on_election_started();
        m.on_election_started();
        m.on_election_won();
        m.on_leader_change();
        m.on_loop_turn_started();
        m.on_loop_turn_ended(1, 40, false);
        m.on_loop_turn_started();
        m.on_loop_turn_ended(2, 90_000, true);
        let r = m.render();
        let want = [
            ("raft.proposals", 2),
            ("raft.commit_index", 9),
            ("raft.committed_entries", 9),
            ("raft.applied_index", 7),
            ("raft.elections_started", 2),
            ("raft.elections_won", 1),
            ("raft.leader_changes", 1),
            ("loop.turns", 2),
            ("loop.slow_turns", 1),
            ("loop.turn_us.p50", 40),
        ];
        for (i, (name, v)) in want.iter().enumerate() {
            assert_eq!(value(&r, name), *v, "#{i}: {name}");
        }
        // The longest turn, to the histogram's 3 significant digits.
        let longest = value(&r, "loop.turn_us.max");
        assert!((90_000..=90_100).contains(&longest), "{longest}");
        assert_eq!(value(&r, "loop.turn_us_max_recent"), 90_000);
    }

    /// Goal: `loop.turn_us_max_recent` forgets a long turn once a whole window passed
    /// after the window it happened in, while `loop.turn_us.max` keeps it.
    #[test]
    fn recent_turn_max_forgets_old_windows() {
        let mut m = Metrics::new(100_000);
        let w = RECENT_TURN_WINDOW_MS;
        m.on_loop_turn_ended(10, 500_000, true);
        m.on_loop_turn_ended(w + 20, 300, false);
        assert_eq!(value(&m.render(), "loop.turn_us_max_recent"), 500_000);
        m.on_loop_turn_ended(2 * w + 30, 200, false);
        assert_eq!(value(&m.render(), "loop.turn_us_max_recent"), 300);
        m.on_loop_turn_ended(5 * w, 100, false);
        let r = m.render();
        assert_eq!(value(&r, "loop.turn_us_max_recent"), 100);
        assert!(value(&r, "loop.turn_us.max") >= 500_000);
    }

    #[test]
    fn fsync_histograms_and_slow_count() {
        let mut m = Metrics::new(100_000);
        for i in 1..=1000u64 {
            assert!(!m.record_fsync(i * 10, 4));
        }
        assert!(m.record_fsync(250_000, 100));
        let r = m.render();
        assert_eq!(value(&r, "storage.fsync.count"), 1001);
        assert_eq!(value(&r, "storage.fsync.slow_count"), 1);
        let p50 = value(&r, "storage.fsync.latency_us.p50");
        assert!((4_990..=5_020).contains(&p50), "p50 {p50}");
        let max = value(&r, "storage.fsync.latency_us.max");
        assert!((249_000..=251_000).contains(&max), "max {max}");
        assert_eq!(value(&r, "storage.fsync.entries.sum"), 4100);
        assert_eq!(value(&r, "storage.fsync.entries.p50"), 4);
        assert_eq!(value(&r, "storage.fsync.entries.max"), 100);
    }

    #[test]
    fn peer_traffic_and_link_state() {
        let mut m = Metrics::new(100_000);
        m.on_peer_disconnected(3); // never connected: not a disconnect
        m.on_peer_connected(2);
        m.on_message_sent(2, 100);
        m.on_message_sent(2, 50);
        m.on_message_received(2, 30);
        m.on_peer_disconnected(2);
        m.on_peer_connected(2);
        let r = m.render();
        assert_eq!(value(&r, "peer.2.connected"), 1);
        assert_eq!(value(&r, "peer.2.connects"), 2);
        assert_eq!(value(&r, "peer.2.disconnects"), 1);
        assert_eq!(value(&r, "peer.2.messages_sent"), 2);
        assert_eq!(value(&r, "peer.2.bytes_sent"), 150);
        assert_eq!(value(&r, "peer.2.messages_received"), 1);
        assert_eq!(value(&r, "peer.2.bytes_received"), 30);
        assert_eq!(value(&r, "peer.3.disconnects"), 0);
        assert_eq!(value(&r, "peer.3.connected"), 0);
    }

    #[test]
    fn connection_counts_render_under_net() {
        let mut m = Metrics::new(1);
        m.set_connections(ConnectionMetrics {
            client_connections: 1,
            peer_handshakes: 2,
            accepts_refused: 3,
            idle_timeouts: 4,
            partial_request_timeouts: 5,
            handshake_timeouts: 6,
            reads_paused: 7,
            output_limit_disconnects: 8,
            tls_failures: 9,
            peer_auth_failures: 10,
            client_auth_failures: 11,
            ..ConnectionMetrics::default()
        });
        let r = m.render();
        let want = [
            "net.client_connections",
            "net.peer_handshakes",
            "net.accepts_refused",
            "net.idle_timeouts",
            "net.partial_request_timeouts",
            "net.handshake_timeouts",
            "net.reads_paused",
            "net.output_limit_disconnects",
            "net.tls_failures",
            "net.peer_auth_failures",
            "net.client_auth_failures",
        ];
        for (i, name) in want.iter().enumerate() {
            assert_eq!(value(&r, name), i as u64 + 1, "#{i}: {name}");
        }
    }

    #[test]
    fn storage_sizes() {
        let mut m = Metrics::new(1);
        m.set_log_bytes(4096);
        m.on_snapshot(1000, 5);
        m.on_snapshot_installed(2000);
        let r = m.render();
        assert_eq!(value(&r, "storage.log_bytes"), 4096);
        assert_eq!(value(&r, "storage.snapshot_bytes"), 2000);
        // An installed snapshot is not one this node took.
        assert_eq!(value(&r, "storage.snapshots_taken"), 1);
    }

    #[test]
    fn nospace_alarm_gauge_and_count() {
        let mut m = Metrics::new(1);
        assert_eq!(value(&m.render(), "storage.alarm_nospace"), 0);
        m.set_alarm_nospace(true);
        m.set_alarm_nospace(true);
        let r = m.render();
        assert_eq!(value(&r, "storage.alarm_nospace"), 1);
        assert_eq!(value(&r, "storage.nospace_alarms"), 1);
        m.set_alarm_nospace(false);
        m.set_alarm_nospace(true);
        let r = m.render();
        assert_eq!(value(&r, "storage.nospace_alarms"), 2);
    }
}
