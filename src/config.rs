//! The node's TOML configuration file: parsing, defaults, validation, error messages.
//!
//! Every key is documented in `docs/CONFIG.md`. Identity, addresses and members are
//! required; everything else has a default. Unknown keys are errors (a typo must not
//! silently fall back to a default).
//!
//! Invariant: a [`Config`] returned by [`Config::load`] or [`Config::parse`] has passed
//! [`Config::validate`]; every [`ConfigError`] names the file, and the key whenever the
//! problem belongs to one, so the binary can print it and exit with code 2.
//!
//! [`DEFAULT_LOCAL_TOML`] is the embedded template of `raftkv-server local`: node 1 of a
//! three-node loopback cluster, with every tunable key spelled out at its default.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::codec::peer as peer_codec;
use crate::raft::message::{NO_NODE, NodeId};
use crate::storage::FsyncMode;

/// The embedded default configuration (node 1 of a three-node loopback cluster).
pub const DEFAULT_LOCAL_TOML: &str = include_str!("../config/local.toml");

/// Smallest accepted `storage.segment_bytes`: a segment must hold a header and records.
pub const SEGMENT_BYTES_MIN: u64 = 64 * 1024;

/// A complete, validated node configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// This node's id; must be one of `members` and non-zero.
    pub node_id: NodeId,
    /// The cluster's id; peers presenting another id in their handshake are refused.
    pub cluster_id: u64,
    /// Directory of the WAL, hard state and snapshots. A relative path is resolved
    /// against the directory of the config file.
    pub data_dir: PathBuf,
    /// Address the peer listener binds.
    pub listen_peer: SocketAddr,
    /// Address the client listener binds.
    pub listen_client: SocketAddr,
    /// Address the Redis (RESP2) listener binds; no Redis listener when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_redis: Option<SocketAddr>,
    /// Address the HTTP/JSON listener (API and dashboard) binds; none when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen_http: Option<SocketAddr>,
    /// Every voting member of the cluster, this node included.
    pub members: Vec<Member>,
    /// Raft timings.
    #[serde(default)]
    pub raft: RaftConfig,
    /// Bounds on memory, message sizes and connections.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// Write-ahead log settings.
    #[serde(default)]
    pub storage: StorageConfig,
    /// When snapshots are taken.
    #[serde(default)]
    pub snapshot: SnapshotConfig,
    /// Logging.
    #[serde(default)]
    pub log: LogConfig,
    /// Redis port settings.
    #[serde(default)]
    pub redis: RedisConfig,
    /// TLS on the listeners and links (docs/SECURITY.md).
    #[serde(default)]
    pub tls: TlsConfig,
    /// Authentication (docs/SECURITY.md); every key is optional and off by default, so
    /// the section is left out of a serialized config that sets none.
    #[serde(default, skip_serializing_if = "SecurityConfig::is_off")]
    pub security: SecurityConfig,
}

/// One member of the cluster as seen by every other member.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Member {
    /// The member's node id (non-zero, unique).
    pub id: NodeId,
    /// Address other members dial for Raft traffic.
    pub peer_addr: SocketAddr,
    /// Address clients connect to (returned in NotLeader redirects).
    pub client_addr: SocketAddr,
}

/// Raft timings, in ticks of `tick_ms` milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Length of one logical tick in milliseconds.
    pub tick_ms: u64,
    /// A leader sends heartbeats every `heartbeat_ticks` ticks.
    pub heartbeat_ticks: u32,
    /// Base election timeout in ticks (randomized in `[election_ticks, 2*election_ticks)`).
    pub election_ticks: u32,
    /// A learner is promoted to voter only when it lacks at most this many of the
    /// leader's entries (`raftkv-cli member promote` is refused before).
    pub promote_distance_max: u64,
}

impl Default for RaftConfig {
    fn default() -> RaftConfig {
        RaftConfig {
            tick_ms: 50,
            heartbeat_ticks: 1,
            election_ticks: 5,
            promote_distance_max: 1000,
        }
    }
}

/// Bounds that keep one peer or client from exhausting the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Most AppendEntries messages in flight to one follower.
    pub inflight_count_max: usize,
    /// Most entry bytes batched into one AppendEntries message.
    pub message_bytes_max: u64,
    /// Largest frame body accepted or sent on any connection.
    pub frame_bytes_max: u32,
    /// Largest log entry (encoded command) one client request may produce; a larger
    /// request is refused where it enters, before it is proposed or forwarded.
    pub entry_bytes_max: u64,
    /// Most simultaneously open client connections, client and Redis ports together
    /// (peer links are not counted). Replaces the old `connections_max`.
    pub client_connections_max: usize,
    /// Most inbound peer connections that have not yet sent their handshake; members'
    /// identified links are not counted and never refused.
    pub peer_handshakes_max: usize,
    /// An inbound peer connection that has not sent its handshake within this many
    /// milliseconds of being accepted is closed.
    pub peer_handshake_timeout_ms: u64,
    /// A client connection with no request in flight and no traffic for this many
    /// milliseconds is closed (like redis `timeout`); 0 keeps idle clients forever.
    pub client_idle_timeout_ms: u64,
    /// A client request (frame or RESP command) whose first byte arrived this many
    /// milliseconds ago and that is still incomplete closes its connection (slowloris).
    pub partial_request_timeout_ms: u64,
    /// Most requests of one client connection in flight (read but not yet answered and
    /// written); past it the loop stops reading that connection until replies drain.
    pub requests_per_connection_max: usize,
    /// Soft output limit: a client connection whose unwritten output plus the replies
    /// it is owed exceeds this is not read until it drains below (back-pressure).
    pub output_bytes_soft_max: usize,
    /// Hard output limit, checked as replies are produced: a connection whose unwritten
    /// output plus held replies would exceed it is disconnected.
    pub output_bytes_max: usize,
    /// Most bytes read from one connection in one loop turn (fairness).
    pub read_bytes_per_turn_max: usize,
    /// A client request not answered within this many milliseconds gets an error.
    pub request_timeout_ms: u64,
    /// While no leader is known, a request waits up to this many milliseconds for one
    /// before it fails definitively (0: fail at once).
    pub leader_wait_ms: u64,
}

impl Default for LimitsConfig {
    fn default() -> LimitsConfig {
        LimitsConfig {
            inflight_count_max: 256,
            message_bytes_max: 1024 * 1024,
            frame_bytes_max: 16 * 1024 * 1024,
            entry_bytes_max: 4 * 1024 * 1024,
            client_connections_max: 10_000,
            peer_handshakes_max: 64,
            peer_handshake_timeout_ms: 5000,
            client_idle_timeout_ms: 300_000,
            partial_request_timeout_ms: 30_000,
            requests_per_connection_max: 256,
            output_bytes_soft_max: 16 * 1024 * 1024,
            output_bytes_max: 64 * 1024 * 1024,
            read_bytes_per_turn_max: 1024 * 1024,
            request_timeout_ms: 5000,
            leader_wait_ms: 1000,
        }
    }
}

/// Write-ahead log settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// A segment file is sealed and a new one started once it reaches this size.
    pub segment_bytes: u64,
    /// Whether appends are synced: `"always"`, one fdatasync per loop turn before
    /// anything is acknowledged (durable), or `"never"` (benchmarks and tests only:
    /// acknowledged writes can be lost on a crash).
    pub fsync: FsyncMode,
    /// Log a warning when one fsync takes longer than this many milliseconds.
    pub slow_fsync_warn_ms: u64,
}

impl Default for StorageConfig {
    fn default() -> StorageConfig {
        StorageConfig {
            segment_bytes: 64 * 1024 * 1024,
            fsync: FsyncMode::Always,
            slow_fsync_warn_ms: 100,
        }
    }
}

/// Snapshot policy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SnapshotConfig {
    /// The floor: no snapshot before this many entries were applied since the last one.
    pub threshold_entries: u64,
    /// Then a snapshot once the log on disk reaches this percent of the last snapshot's
    /// size (`replica::snapshot_policy`), so a big store does not snapshot all the time.
    pub log_growth_percent: u64,
    /// Most of one core the snapshot helper thread uses while encoding (1..=100).
    pub encode_cpu_percent: u32,
}

impl Default for SnapshotConfig {
    fn default() -> SnapshotConfig {
        SnapshotConfig {
            threshold_entries: 100_000,
            log_growth_percent: 50,
            encode_cpu_percent: 50,
        }
    }
}

/// Log verbosity (`RUST_LOG`, when set, takes precedence).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// No logging.
    Off,
    /// Errors only.
    Error,
    /// Errors and warnings.
    Warn,
    /// Role changes, terms, leaders, snapshots, peer connects and disconnects.
    Info,
    /// Per-request detail.
    Debug,
    /// Everything.
    Trace,
}

impl LogLevel {
    /// The equivalent `log` crate filter.
    pub fn to_level_filter(self) -> log::LevelFilter {
        match self {
            LogLevel::Off => log::LevelFilter::Off,
            LogLevel::Error => log::LevelFilter::Error,
            LogLevel::Warn => log::LevelFilter::Warn,
            LogLevel::Info => log::LevelFilter::Info,
            LogLevel::Debug => log::LevelFilter::Debug,
            LogLevel::Trace => log::LevelFilter::Trace,
        }
    }
}

/// Logging settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Verbosity.
    pub level: LogLevel,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            level: LogLevel::Info,
        }
    }
}

/// Redis port settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct RedisConfig {
    /// `notify-keyspace-events` at start, in Redis's flag letters (empty: off);
    /// `CONFIG SET` changes it on the running node.
    pub notify_keyspace_events: String,
}

/// A listener that can speak TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TlsPort {
    /// The client (binary protocol) port; the forwarding link to the leader then
    /// speaks TLS too.
    Client,
    /// The Redis port.
    Redis,
    /// The HTTP port.
    Http,
    /// The peer port and the peer links (mutual TLS: both sides present a certificate
    /// from the cluster CA that names the member, `node-N`).
    Peer,
}

/// TLS settings. The file keys are paths (relative ones are resolved against the
/// config file's directory), read when the node starts and again on SIGHUP.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// The listeners that speak TLS (empty: none, every port is plaintext).
    pub ports: Vec<TlsPort>,
    /// This node's certificate chain (PEM, leaf first): presented on every TLS port,
    /// and as the client certificate of its own TLS links.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert_file: Option<PathBuf>,
    /// The private key of `cert_file` (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_file: Option<PathBuf>,
    /// The cluster's CA (PEM): the other members' certificates must chain to it (peer
    /// links, the forwarding link).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<PathBuf>,
    /// When set, clients of the TLS client, Redis and HTTP ports must present a
    /// certificate that chains to this CA (PEM).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub client_ca_file: Option<PathBuf>,
}

impl TlsConfig {
    /// Whether `port` speaks TLS.
    pub fn on(&self, port: TlsPort) -> bool {
        self.ports.contains(&port)
    }
}

/// Authentication settings: files holding the credentials, never the credentials
/// themselves (see docs/SECURITY.md). A relative path is resolved against the directory
/// of the config file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// The file holding the cluster secret peers prove in their handshake; without it,
    /// anyone who reaches the peer port and knows the cluster id is a peer (insecure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cluster_secret_file: Option<PathBuf>,
    /// The users file of the client ports (users, password hashes, permissions); without
    /// it every client may read, write and administer (insecure).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub users_file: Option<PathBuf>,
    /// With `users_file`: the HTTP port's `/metrics` needs no credentials (for a
    /// Prometheus scraper without them).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub metrics_open: bool,
}

impl SecurityConfig {
    /// No security key is set.
    pub fn is_off(&self) -> bool {
        *self == SecurityConfig::default()
    }

    fn resolve_paths(&mut self, base: &Path) {
        for path in [&mut self.cluster_secret_file, &mut self.users_file]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }
}

/// A config file that cannot be used. The `Display` form is the message to print.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("config {}: cannot read: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config {}: line {line}, column {column}: {message}", path.display())]
    Syntax {
        /// The file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column of the error.
        column: usize,
        /// What the TOML parser reported.
        message: String,
    },
    /// One key is missing, unknown, of the wrong type, or has an invalid value.
    #[error("config {}: key `{key}`: {message}", path.display())]
    Key {
        /// The file.
        path: PathBuf,
        /// The dotted key path, e.g. `raft.election_ticks` or `members[1].peer_addr`.
        key: String,
        /// What is wrong with it.
        message: String,
    },
}

impl ConfigError {
    /// The offending key, when the error belongs to one.
    pub fn key(&self) -> Option<&str> {
        match self {
            ConfigError::Key { key, .. } => Some(key),
            _ => None,
        }
    }
}

impl Config {
    /// Reads, parses and validates the config file at `path`.
    ///
    /// # Errors
    /// [`ConfigError`] naming the file (and the key) when it cannot be read, parsed or
    /// validated.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(&text, path)
    }

    /// Parses and validates `text`; `path` names it in errors, and a relative `data_dir`
    /// is resolved against `path`'s directory.
    ///
    /// # Errors
    /// [`ConfigError::Syntax`] for invalid TOML, [`ConfigError::Key`] for a missing,
    /// unknown, mistyped or invalid key.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let mut config: Config =
            toml::from_str(text).map_err(|error| toml_error(text, path, &error))?;
        if config.data_dir.is_relative()
            && !config.data_dir.as_os_str().is_empty()
            && let Some(parent) = path.parent()
        {
            config.data_dir = parent.join(&config.data_dir);
        }
        if let Some(parent) = path.parent() {
            let tls = &mut config.tls;
            for file in [
                &mut tls.cert_file,
                &mut tls.key_file,
                &mut tls.ca_file,
                &mut tls.client_ca_file,
            ]
            .into_iter()
            .flatten()
            {
                if file.is_relative() && !file.as_os_str().is_empty() {
                    *file = parent.join(&*file);
                }
            }
            config.security.resolve_paths(parent);
        }
        config.validate(path)?;
        Ok(config)
    }

    /// Checks the relations between keys that the types cannot express.
    ///
    /// # Errors
    /// [`ConfigError::Key`] naming `path` and the first offending key.
    pub fn validate(&self, path: &Path) -> Result<(), ConfigError> {
        let fail = |key: &str, message: &str| {
            Err(ConfigError::Key {
                path: path.to_path_buf(),
                key: key.to_string(),
                message: message.to_string(),
            })
        };
        if self.node_id == NO_NODE {
            return fail("node_id", "must not be 0 (0 means \"no node\")");
        }
        if self.cluster_id == 0 {
            return fail("cluster_id", "must not be 0");
        }
        if self.data_dir.as_os_str().is_empty() {
            return fail("data_dir", "must not be empty");
        }
        if self.members.is_empty() {
            return fail("members", "must list at least this node");
        }
        let mut ids = HashSet::new();
        let mut addrs = HashSet::new();
        for (i, member) in self.members.iter().enumerate() {
            if member.id == NO_NODE {
                return fail(&format!("members[{i}].id"), "must not be 0");
            }
            if !ids.insert(member.id) {
                return fail(&format!("members[{i}].id"), "duplicate member id");
            }
            if !addrs.insert(member.peer_addr) {
                return fail(&format!("members[{i}].peer_addr"), "address used twice");
            }
            if !addrs.insert(member.client_addr) {
                return fail(&format!("members[{i}].client_addr"), "address used twice");
            }
        }
        if !ids.contains(&self.node_id) {
            return fail("node_id", "must be the id of one of the members");
        }
        if self.listen_peer == self.listen_client {
            return fail("listen_client", "must differ from listen_peer");
        }
        if let Some(redis) = self.listen_redis
            && (redis == self.listen_peer || redis == self.listen_client)
        {
            return fail(
                "listen_redis",
                "must differ from listen_peer and listen_client",
            );
        }
        if let Some(http) = self.listen_http
            && (http == self.listen_peer
                || http == self.listen_client
                || Some(http) == self.listen_redis)
        {
            return fail(
                "listen_http",
                "must differ from listen_peer, listen_client and listen_redis",
            );
        }
        self.validate_tls(path)?;
        self.validate_tunables(path)
    }

    fn validate_tls(&self, path: &Path) -> Result<(), ConfigError> {
        let fail = |key: &str, message: &str| {
            Err(ConfigError::Key {
                path: path.to_path_buf(),
                key: key.to_string(),
                message: message.to_string(),
            })
        };
        let tls = &self.tls;
        let mut seen = HashSet::new();
        for port in &tls.ports {
            if !seen.insert(port) {
                return fail(
                    "tls.ports",
                    &format!("{port:?} listed twice").to_lowercase(),
                );
            }
        }
        if tls.on(TlsPort::Redis) && self.listen_redis.is_none() {
            return fail("tls.ports", "lists \"redis\" but listen_redis is not set");
        }
        if tls.on(TlsPort::Http) && self.listen_http.is_none() {
            return fail("tls.ports", "lists \"http\" but listen_http is not set");
        }
        let files = [
            ("tls.cert_file", &tls.cert_file),
            ("tls.key_file", &tls.key_file),
            ("tls.ca_file", &tls.ca_file),
            ("tls.client_ca_file", &tls.client_ca_file),
        ];
        for (key, file) in files {
            if file.as_ref().is_some_and(|f| f.as_os_str().is_empty()) {
                return fail(key, "must not be empty");
            }
        }
        if tls.ports.is_empty() {
            return Ok(());
        }
        if tls.cert_file.is_none() {
            return fail("tls.cert_file", "required when tls.ports is not empty");
        }
        if tls.key_file.is_none() {
            return fail("tls.key_file", "required when tls.ports is not empty");
        }
        let links = tls.on(TlsPort::Peer) || tls.on(TlsPort::Client);
        if links && tls.ca_file.is_none() {
            return fail(
                "tls.ca_file",
                "required when tls.ports lists \"peer\" or \"client\" (it verifies the other members)",
            );
        }
        Ok(())
    }

    fn validate_tunables(&self, path: &Path) -> Result<(), ConfigError> {
        let fail = |key: &str, message: String| {
            Err(ConfigError::Key {
                path: path.to_path_buf(),
                key: key.to_string(),
                message,
            })
        };
        let positive: [(&str, u64); 18] = [
            ("raft.tick_ms", self.raft.tick_ms),
            ("limits.entry_bytes_max", self.limits.entry_bytes_max),
            ("raft.heartbeat_ticks", u64::from(self.raft.heartbeat_ticks)),
            (
                "limits.inflight_count_max",
                self.limits.inflight_count_max as u64,
            ),
            ("limits.message_bytes_max", self.limits.message_bytes_max),
            (
                "limits.frame_bytes_max",
                u64::from(self.limits.frame_bytes_max),
            ),
            (
                "limits.client_connections_max",
                self.limits.client_connections_max as u64,
            ),
            (
                "limits.peer_handshakes_max",
                self.limits.peer_handshakes_max as u64,
            ),
            (
                "limits.peer_handshake_timeout_ms",
                self.limits.peer_handshake_timeout_ms,
            ),
            (
                "limits.partial_request_timeout_ms",
                self.limits.partial_request_timeout_ms,
            ),
            (
                "limits.requests_per_connection_max",
                self.limits.requests_per_connection_max as u64,
            ),
            (
                "limits.output_bytes_soft_max",
                self.limits.output_bytes_soft_max as u64,
            ),
            (
                "limits.read_bytes_per_turn_max",
                self.limits.read_bytes_per_turn_max as u64,
            ),
            ("limits.request_timeout_ms", self.limits.request_timeout_ms),
            (
                "snapshot.threshold_entries",
                self.snapshot.threshold_entries,
            ),
            (
                "snapshot.log_growth_percent",
                self.snapshot.log_growth_percent,
            ),
            (
                "snapshot.encode_cpu_percent",
                u64::from(self.snapshot.encode_cpu_percent),
            ),
            (
                "storage.slow_fsync_warn_ms",
                self.storage.slow_fsync_warn_ms,
            ),
        ];
        for (key, value) in positive {
            if value == 0 {
                return fail(key, "must be greater than 0".to_string());
            }
        }
        if self.snapshot.encode_cpu_percent > 100 {
            return fail(
                "snapshot.encode_cpu_percent",
                "must be at most 100 (percent of one core)".to_string(),
            );
        }
        if self.raft.election_ticks <= self.raft.heartbeat_ticks {
            return fail(
                "raft.election_ticks",
                "must be greater than raft.heartbeat_ticks".to_string(),
            );
        }
        let frame_bytes_max = u64::from(self.limits.frame_bytes_max);
        let headroom = peer_codec::MESSAGE_HEADROOM_BYTES as u64;
        if self.limits.message_bytes_max.saturating_add(headroom) > frame_bytes_max {
            return fail(
                "limits.message_bytes_max",
                format!(
                    "must be at most limits.frame_bytes_max - {headroom} (a message must fit \
                     in a frame with its header)"
                ),
            );
        }
        let entry_overhead = peer_codec::ENTRY_FRAME_OVERHEAD_BYTES as u64;
        if self.limits.entry_bytes_max.saturating_add(entry_overhead) > frame_bytes_max {
            return fail(
                "limits.entry_bytes_max",
                format!(
                    "must be at most limits.frame_bytes_max - {entry_overhead} (one entry \
                     must fit in an AppendEntries frame)"
                ),
            );
        }
        if (self.limits.output_bytes_max as u64) < u64::from(self.limits.frame_bytes_max) {
            return fail(
                "limits.output_bytes_max",
                "must be at least limits.frame_bytes_max (one frame must fit)".to_string(),
            );
        }
        if self.limits.output_bytes_soft_max > self.limits.output_bytes_max {
            return fail(
                "limits.output_bytes_soft_max",
                "must be at most limits.output_bytes_max".to_string(),
            );
        }
        if self.limits.leader_wait_ms > self.limits.request_timeout_ms {
            return fail(
                "limits.leader_wait_ms",
                "must not exceed limits.request_timeout_ms (a request never waits past its \
                 deadline)"
                    .to_string(),
            );
        }
        if self.storage.segment_bytes < SEGMENT_BYTES_MIN {
            return fail(
                "storage.segment_bytes",
                format!("must be at least {SEGMENT_BYTES_MIN}"),
            );
        }
        let flags = self.redis.notify_keyspace_events.as_bytes();
        if crate::server::redis::notify::NotifyFlags::parse(flags).is_none() {
            return fail(
                "redis.notify_keyspace_events",
                "has a character that is not a Redis event class (use Ag$lshzxeKEtmdn)".into(),
            );
        }
        Ok(())
    }

    /// This node's own member entry.
    pub fn self_member(&self) -> Option<&Member> {
        self.member(self.node_id)
    }

    /// The member with id `id`.
    pub fn member(&self, id: NodeId) -> Option<&Member> {
        self.members.iter().find(|m| m.id == id)
    }

    /// Every member except this node.
    pub fn peers(&self) -> impl Iterator<Item = &Member> {
        self.members.iter().filter(move |m| m.id != self.node_id)
    }

    /// The config as a TOML document that [`Config::parse`] reads back unchanged.
    ///
    /// # Errors
    /// Only if `data_dir` is not valid UTF-8 (TOML strings are UTF-8).
    pub fn to_toml(&self) -> Result<String, toml::ser::Error> {
        toml::to_string(self)
    }
}

/// Why `limits.connections_max` is refused: it counted peers and clients together, so
/// idle clients could starve the peer links; its meaning changed, so it was renamed.
const RENAMED_CONNECTIONS_MAX: &str = "was split: use limits.client_connections_max (client \
     and Redis ports together) and limits.peer_handshakes_max (inbound peer connections \
     before their handshake); members' peer links are no longer counted";

/// Turns a toml/serde error into a [`ConfigError`] naming the key when one can be found.
fn toml_error(text: &str, path: &Path, error: &toml::de::Error) -> ConfigError {
    let message = error.message().trim().to_string();
    let span = error.span();
    // A document that does not parse as TOML at all has no key to blame: give line/column.
    let Ok(document) = toml::de::DeTable::parse(text) else {
        let (line, column) = span.map_or((1, 1), |s| line_column(text, s.start));
        return ConfigError::Syntax {
            path: path.to_path_buf(),
            line,
            column,
            message,
        };
    };
    let mut key = span
        .and_then(|s| find_key(document.get_ref(), &s))
        .unwrap_or_default();
    if key == "limits.connections_max" {
        return ConfigError::Key {
            path: path.to_path_buf(),
            key,
            message: RENAMED_CONNECTIONS_MAX.to_string(),
        };
    }
    // serde names missing and unknown fields only in the message: "missing field `x`".
    let names_field = message.starts_with("missing field") || message.starts_with("unknown field");
    if names_field
        && let Some(field) = message.split('`').nth(1)
        && key.rsplit('.').next() != Some(field)
    {
        if !key.is_empty() {
            key.push('.');
        }
        key.push_str(field);
    }
    if key.is_empty() {
        key.push_str("<document>");
    }
    ConfigError::Key {
        path: path.to_path_buf(),
        key,
        message,
    }
}

/// The dotted path of the innermost key whose key or value span covers `span`.
fn find_key(table: &toml::de::DeTable<'_>, span: &Range<usize>) -> Option<String> {
    for (key, value) in table {
        let name = key.get_ref().to_string();
        if covers(&key.span(), span) {
            return Some(name);
        }
        if let Some(inner) = find_in_value(value.get_ref(), span) {
            return Some(join_key(&name, &inner));
        }
        if covers(&value.span(), span) {
            return Some(name);
        }
    }
    None
}

fn find_in_value(value: &toml::de::DeValue<'_>, span: &Range<usize>) -> Option<String> {
    match value {
        toml::de::DeValue::Table(table) => find_key(table, span),
        toml::de::DeValue::Array(array) => array.iter().enumerate().find_map(|(i, item)| {
            match find_in_value(item.get_ref(), span) {
                Some(inner) => Some(join_key(&format!("[{i}]"), &inner)),
                None if covers(&item.span(), span) => Some(format!("[{i}]")),
                None => None,
            }
        }),
        _ => None,
    }
}

fn join_key(outer: &str, inner: &str) -> String {
    if inner.starts_with('[') {
        format!("{outer}{inner}")
    } else {
        format!("{outer}.{inner}")
    }
}

fn covers(outer: &Range<usize>, inner: &Range<usize>) -> bool {
    outer.start <= inner.start && inner.end <= outer.end && outer.start < outer.end
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}

#[cfg(test)]
#[path = "config_tests.rs"]
mod tests;
