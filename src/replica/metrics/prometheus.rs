//! What a replica exports at `GET /metrics`: its Raft state, the counters and
//! histograms of [`Metrics`], and the sizes of its log and state machine, in the
//! Prometheus text format ([`Exposition`]).
//!
//! Names follow the Prometheus conventions: a `raftkv_` prefix, base units in the name
//! (`_seconds`, `_bytes`, `_entries`), `_total` on counters, histograms with buckets.
//! Every name is listed with its meaning in `docs/monitoring/README.md`, and the alert
//! rules of `docs/monitoring/alerts.yml` use them: renaming one breaks both.
//!
//! Invariant: every family is written with its `# HELP`/`# TYPE` lines even when it
//! has no sample yet (a follower has no replication lag), so a scrape always shows
//! the same set of names.

use super::{Metrics, Timings};
use crate::raft::Role;
use crate::replica::exposition::{Buckets, Exposition, Kind};
use crate::replica::{Replica, ReplicaLog, SnapshotWriter};

/// Latencies recorded in microseconds, exported in seconds: 50 µs to 10 s.
const LATENCY_BUCKETS: Buckets = Buckets {
    bounds: &[
        50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
        1_000_000, 2_500_000, 5_000_000, 10_000_000,
    ],
    units_per_base: 1_000_000,
};

/// Entries per fsync: powers of two up to 16 Ki.
const ENTRIES_BUCKETS: Buckets = Buckets {
    bounds: &[1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1_024, 4_096, 16_384],
    units_per_base: 1,
};

/// Snapshot durations recorded in milliseconds, exported in seconds: 10 ms to 10 min.
const SNAPSHOT_BUCKETS: Buckets = Buckets {
    bounds: &[
        10, 50, 100, 500, 1_000, 5_000, 10_000, 30_000, 60_000, 300_000, 600_000,
    ],
    units_per_base: 1_000,
};

/// The role label values, in the core's order.
const ROLES: [(Role, &str); 4] = [
    (Role::Follower, "follower"),
    (Role::PreCandidate, "pre_candidate"),
    (Role::Candidate, "candidate"),
    (Role::Leader, "leader"),
];

impl<L: ReplicaLog, W: SnapshotWriter> Replica<L, W> {
    /// Everything this replica exports, in the Prometheus text format 0.0.4 (serve it
    /// with [`crate::replica::exposition::PROMETHEUS_CONTENT_TYPE`]).
    pub fn prometheus_text(&self) -> String {
        let mut x = Exposition::new();
        self.write_raft_state(&mut x);
        self.metrics.write_prometheus(&mut x);
        x.gauge(
            "raftkv_storage_log_bytes",
            "Bytes the write-ahead log occupies on disk.",
            self.raw.store().log_bytes(),
        );
        x.gauge(
            "raftkv_alarm_nospace",
            "1 while the NOSPACE alarm is up: the disk is full, writes are refused.",
            u64::from(self.nospace.raised()),
        );
        x.gauge(
            "raftkv_kv_keys",
            "Keys in the state machine.",
            self.kv.len() as u64,
        );
        x.gauge(
            "raftkv_kv_expiring_keys",
            "Keys with an expiry time in the state machine.",
            self.kv.expiring_len() as u64,
        );
        x.counter(
            "raftkv_kv_expired_keys_total",
            "Keys the state machine deleted because their expiry time had passed.",
            self.expiry.expired_keys,
        );
        x.gauge(
            "raftkv_kv_sessions",
            "Client sessions the state machine tracks for deduplication.",
            self.kv.session_count() as u64,
        );
        x.finish()
    }

    /// Term, role, leader, log indexes and, on the leader, each follower's lag.
    fn write_raft_state(&self, x: &mut Exposition) {
        let status = self.raw.status();
        x.gauge("raftkv_raft_term", "The current Raft term.", status.term);
        x.family(
            "raftkv_raft_role",
            Kind::Gauge,
            "1 for the role this node has now, 0 for the others.",
        );
        for (role, name) in ROLES {
            let value = u64::from(status.role == role);
            x.sample("raftkv_raft_role", &[("role", name)], value);
        }
        x.gauge(
            "raftkv_raft_leader_id",
            "The id of the leader this node knows of (0: none).",
            status.leader,
        );
        x.gauge(
            "raftkv_raft_has_leader",
            "1 when this node knows a leader.",
            u64::from(status.leader != crate::raft::NO_NODE),
        );
        x.gauge(
            "raftkv_raft_commit_index",
            "Highest log index known committed.",
            status.commit,
        );
        x.gauge(
            "raftkv_raft_applied_index",
            "Highest log index applied to the state machine.",
            self.kv.applied_index(),
        );
        x.gauge(
            "raftkv_raft_last_index",
            "Index of the last entry in this node's log.",
            status.last_index,
        );
        x.family(
            "raftkv_raft_peer_replication_lag_entries",
            Kind::Gauge,
            "On the leader: entries of its log a follower does not have yet.",
        );
        let peers: Vec<(String, &crate::raft::PeerStatus)> = status
            .progress
            .iter()
            .filter(|p| p.id != self.config.node_id)
            .map(|p| (p.id.to_string(), p))
            .collect();
        for (id, p) in &peers {
            let lag = status.last_index.saturating_sub(p.match_index);
            x.sample(
                "raftkv_raft_peer_replication_lag_entries",
                &[("peer", id)],
                lag,
            );
        }
        x.family(
            "raftkv_raft_peer_active",
            Kind::Gauge,
            "On the leader: 1 when a follower answered since the last check-quorum round.",
        );
        for (id, p) in &peers {
            let active = u64::from(p.recent_active);
            x.sample("raftkv_raft_peer_active", &[("peer", id)], active);
        }
    }
}

impl Metrics {
    /// The counters and histograms, in the Prometheus text format.
    pub fn write_prometheus(&self, x: &mut Exposition) {
        self.write_raft_counters(x);
        self.write_storage(x);
        self.write_loop(x);
        self.write_peers(x);
        self.write_connections(x);
    }

    fn write_raft_counters(&self, x: &mut Exposition) {
        let counters = [
            (
                "raftkv_raft_leader_changes_total",
                "Times the leader this node knows of changed (to none included).",
                self.leader_changes,
            ),
            (
                "raftkv_raft_elections_started_total",
                "Elections this node started (it became candidate).",
                self.elections_started,
            ),
            (
                "raftkv_raft_elections_won_total",
                "Elections this node won (it became leader).",
                self.elections_won,
            ),
            (
                "raftkv_raft_elections_lost_total",
                "Elections this node started and did not win.",
                self.elections_lost,
            ),
            (
                "raftkv_raft_proposals_total",
                "Client writes this node handed to Raft as leader.",
                self.proposals,
            ),
            (
                "raftkv_raft_proposals_committed_total",
                "Client writes applied in the term they were proposed in.",
                self.proposals_committed,
            ),
            (
                "raftkv_raft_proposals_failed_total",
                "Client writes not applied or with an unknown outcome (leadership lost, \
                 deadline passed).",
                self.proposals_failed,
            ),
            (
                "raftkv_raft_committed_entries_total",
                "Log entries this node saw committed.",
                self.committed_entries,
            ),
        ];
        for (name, help, value) in counters {
            x.counter(name, help, value);
        }
    }

    fn write_storage(&self, x: &mut Exposition) {
        x.counter(
            "raftkv_storage_fsyncs_total",
            "fdatasync calls on the write-ahead log.",
            self.fsync_count,
        );
        x.counter(
            "raftkv_storage_fsync_slow_total",
            "fsyncs slower than storage.slow_fsync_warn_ms.",
            self.fsync_slow_count,
        );
        histogram(
            x,
            "raftkv_storage_fsync_duration_seconds",
            "Duration of each fdatasync of the write-ahead log.",
            &self.fsync_latency_us,
            LATENCY_BUCKETS,
        );
        histogram(
            x,
            "raftkv_storage_fsync_entries",
            "Log entries made durable by each fsync (the group-commit factor).",
            &self.entries_per_fsync,
            ENTRIES_BUCKETS,
        );
        x.gauge(
            "raftkv_storage_snapshot_bytes",
            "Size of the latest snapshot taken or installed.",
            self.snapshot_bytes,
        );
        x.counter(
            "raftkv_snapshots_taken_total",
            "Snapshots of the state machine this node took.",
            self.snapshots_taken,
        );
        x.counter(
            "raftkv_snapshots_installed_total",
            "Snapshots received from the leader and installed.",
            self.snapshots_installed,
        );
        histogram(
            x,
            "raftkv_snapshot_duration_seconds",
            "Time from starting a snapshot to its data being durable.",
            &self.snapshot_ms,
            SNAPSHOT_BUCKETS,
        );
        x.counter(
            "raftkv_alarm_nospace_raised_total",
            "Times the NOSPACE alarm went up.",
            self.nospace_alarms,
        );
    }

    fn write_loop(&self, x: &mut Exposition) {
        x.counter(
            "raftkv_loop_turns_total",
            "Turns of the event loop.",
            self.loop_turns,
        );
        x.counter(
            "raftkv_loop_slow_turns_total",
            "Loop turns whose work took longer than half the heartbeat interval.",
            self.loop_slow_turns,
        );
        histogram(
            x,
            "raftkv_loop_turn_duration_seconds",
            "Work time of each event loop turn (the poll's wait excluded).",
            &self.turn_us,
            LATENCY_BUCKETS,
        );
    }

    fn write_peers(&self, x: &mut Exposition) {
        let ids: Vec<(String, &super::PeerMetrics)> = self
            .peers
            .iter()
            .map(|(id, peer)| (id.to_string(), peer))
            .collect();
        type Field = fn(&super::PeerMetrics) -> u64;
        let families: [(&str, Kind, &str, Field); 7] = [
            (
                "raftkv_peer_connected",
                Kind::Gauge,
                "1 while the link to the peer is up (handshake done).",
                |p| u64::from(p.connected),
            ),
            (
                "raftkv_peer_connects_total",
                Kind::Counter,
                "Links to the peer established.",
                |p| p.connects,
            ),
            (
                "raftkv_peer_disconnects_total",
                Kind::Counter,
                "Links to the peer lost.",
                |p| p.disconnects,
            ),
            (
                "raftkv_peer_sent_messages_total",
                Kind::Counter,
                "Raft messages queued for the peer.",
                |p| p.messages_sent,
            ),
            (
                "raftkv_peer_sent_bytes_total",
                Kind::Counter,
                "Bytes (framed) queued for the peer.",
                |p| p.bytes_sent,
            ),
            (
                "raftkv_peer_received_messages_total",
                Kind::Counter,
                "Raft messages received from the peer.",
                |p| p.messages_received,
            ),
            (
                "raftkv_peer_received_bytes_total",
                Kind::Counter,
                "Bytes (framed) received from the peer.",
                |p| p.bytes_received,
            ),
        ];
        for (name, kind, help, field) in families {
            x.family(name, kind, help);
            for (id, peer) in &ids {
                x.sample(name, &[("peer", id)], field(peer));
            }
        }
        let name = "raftkv_peer_round_trip_seconds";
        x.family(
            name,
            Kind::Histogram,
            "Time from sending a replication message (append or heartbeat) to a peer to its answer.",
        );
        for (id, timings) in &self.peer_round_trip_us {
            let id = id.to_string();
            let (h, sum) = (timings.histogram(), timings.sum());
            x.histogram(name, &[("peer", &id)], h, sum, LATENCY_BUCKETS);
        }
    }

    fn write_connections(&self, x: &mut Exposition) {
        let c = &self.connections;
        x.family(
            "raftkv_connections",
            Kind::Gauge,
            "Open client connections by port.",
        );
        let client_port = c
            .client_connections
            .saturating_sub(c.redis_connections + c.http_connections);
        x.sample("raftkv_connections", &[("port", "client")], client_port);
        x.sample(
            "raftkv_connections",
            &[("port", "redis")],
            c.redis_connections,
        );
        x.sample(
            "raftkv_connections",
            &[("port", "http")],
            c.http_connections,
        );
        x.gauge(
            "raftkv_peer_handshakes_pending",
            "Inbound peer connections waiting for their handshake.",
            c.peer_handshakes,
        );
        x.family(
            "raftkv_client_bytes_total",
            Kind::Counter,
            "Bytes read from (in) and written to (out) client connections, both ports.",
        );
        x.sample(
            "raftkv_client_bytes_total",
            &[("direction", "in")],
            c.client_bytes_received,
        );
        x.sample(
            "raftkv_client_bytes_total",
            &[("direction", "out")],
            c.client_bytes_sent,
        );
        x.family(
            "raftkv_connections_closed_total",
            Kind::Counter,
            "Connections refused or closed by a limit, by reason.",
        );
        let closed = [
            ("accept_refused", c.accepts_refused),
            ("idle_timeout", c.idle_timeouts),
            ("partial_request_timeout", c.partial_request_timeouts),
            ("handshake_timeout", c.handshake_timeouts),
            ("output_limit", c.output_limit_disconnects),
            ("tls", c.tls_failures),
            ("peer_auth_failure", c.peer_auth_failures),
            ("client_auth_failure", c.client_auth_failures),
        ];
        for (reason, value) in closed {
            x.sample(
                "raftkv_connections_closed_total",
                &[("reason", reason)],
                value,
            );
        }
        x.counter(
            "raftkv_connection_reads_paused_total",
            "Times a client connection stopped being read (back-pressure).",
            c.reads_paused,
        );
    }
}

/// A family of one unlabelled histogram.
fn histogram(x: &mut Exposition, name: &str, help: &str, timings: &Timings, buckets: Buckets) {
    x.family(name, Kind::Histogram, help);
    x.histogram(name, &[], timings.histogram(), timings.sum(), buckets);
}

#[cfg(test)]
mod tests {
    //! Goal: the recorded numbers come out under their Prometheus names, in base units,
    //! and every family has one HELP and one TYPE line before its samples.
    use super::*;
    use crate::replica::metrics::ConnectionMetrics;

    fn rendered(m: &Metrics) -> String {
        let mut x = Exposition::new();
        m.write_prometheus(&mut x);
        x.finish()
    }

    fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
        text.lines()
            .find(|l| l.starts_with(prefix) && l.as_bytes().get(prefix.len()) == Some(&b' '))
            .unwrap_or_else(|| panic!("no sample {prefix} in\n{text}"))
    }

    #[test]
    fn counters_and_histograms_in_base_units() {
        let mut m = Metrics::new(100_000);
        m.on_election_started();
        m.on_election_lost();
        m.on_proposal();
        m.on_proposal_committed();
        m.on_proposal_failed();
        m.record_fsync(2_000, 3);
        m.record_fsync(250_000, 1);
        m.on_snapshot(100, 1_500);
        m.on_peer_connected(2);
        m.on_message_sent(2, 40);
        m.record_peer_round_trip(2, 700);
        m.set_connections(ConnectionMetrics {
            client_connections: 6,
            redis_connections: 2,
            http_connections: 1,
            client_bytes_sent: 9,
            idle_timeouts: 2,
            ..ConnectionMetrics::default()
        });
        let text = rendered(&m);
        let want = [
            ("raftkv_raft_elections_started_total", "1"),
            ("raftkv_raft_elections_lost_total", "1"),
            ("raftkv_raft_proposals_committed_total", "1"),
            ("raftkv_raft_proposals_failed_total", "1"),
            ("raftkv_storage_fsyncs_total", "2"),
            ("raftkv_storage_fsync_slow_total", "1"),
            (
                r#"raftkv_storage_fsync_duration_seconds_bucket{le="0.0025"}"#,
                "1",
            ),
            (
                r#"raftkv_storage_fsync_duration_seconds_bucket{le="0.25"}"#,
                "1",
            ),
            (
                r#"raftkv_storage_fsync_duration_seconds_bucket{le="0.5"}"#,
                "2",
            ),
            ("raftkv_storage_fsync_duration_seconds_sum", "0.252"),
            ("raftkv_storage_fsync_duration_seconds_count", "2"),
            ("raftkv_storage_fsync_entries_sum", "4"),
            (r#"raftkv_storage_fsync_entries_bucket{le="1"}"#, "1"),
            ("raftkv_snapshot_duration_seconds_sum", "1.5"),
            (r#"raftkv_peer_connected{peer="2"}"#, "1"),
            (r#"raftkv_peer_sent_bytes_total{peer="2"}"#, "40"),
            (
                r#"raftkv_peer_round_trip_seconds_bucket{peer="2",le="0.001"}"#,
                "1",
            ),
            (r#"raftkv_peer_round_trip_seconds_sum{peer="2"}"#, "0.0007"),
            (r#"raftkv_connections{port="client"}"#, "3"),
            (r#"raftkv_connections{port="redis"}"#, "2"),
            (r#"raftkv_connections{port="http"}"#, "1"),
            (r#"raftkv_client_bytes_total{direction="out"}"#, "9"),
            (
                r#"raftkv_connections_closed_total{reason="idle_timeout"}"#,
                "2",
            ),
        ];
        for (i, (sample, value)) in want.iter().enumerate() {
            let got = line(&text, sample);
            assert_eq!(got, format!("{sample} {value}"), "#{i}");
        }
    }

    #[test]
    fn every_family_has_one_help_and_type_before_its_samples() {
        let mut m = Metrics::new(1);
        m.on_peer_connected(3);
        m.record_peer_round_trip(3, 10);
        let text = rendered(&m);
        let mut declared: Vec<&str> = Vec::new();
        for (i, l) in text.lines().enumerate() {
            if let Some(rest) = l.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().expect("a name");
                assert!(!declared.contains(&name), "#{i}: {name} declared twice");
                let help = format!("# HELP {name} ");
                assert!(text.contains(&help), "#{i}: {name} has no HELP");
                declared.push(name);
            } else if !l.starts_with('#') {
                let name = l.split(['{', ' ']).next().expect("a name");
                let family = declared.last().expect("a sample before any TYPE");
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s).filter(|b| b == family))
                    .unwrap_or(name);
                assert_eq!(base, *family, "#{i}: sample {name} outside its family");
            }
        }
        assert!(declared.len() >= 25, "{} families", declared.len());
    }
}
