//! `raftkv-server local`: a loopback cluster of child processes for trying raftkv out.
//!
//! Steps:
//! 1. When `--dir DIR` already holds a cluster written here (`node-N.toml` files), resume
//!    it from its own configs: the same ids, cluster id, ports and data
//!    ([`read_local_configs`]); an inconsistent set of files or a port in use is refused,
//!    naming the reason. Otherwise lease free loopback ports outside the ephemeral range
//!    ([`super::ports`]) and write one config per node derived from the embedded default
//!    ([`DEFAULT_LOCAL_TOML`]) into DIR as `node-N.toml`, data in `node-N/`
//!    ([`write_local_configs`]).
//! 2. Spawn the server binary with `--config node-N.toml` per node; stdout and stderr are
//!    appended to `node-N.log` in the same directory.
//! 3. Print each node's pid and addresses and paste-ready lines: the `raftkv-cli` next to
//!    the server binary by absolute path (`cargo run --release --bin raftkv-cli --` when
//!    there is none), a `redis-cli -p PORT` line, and each node's HTTP URL (dashboard)
//!    with `curl` lines for the HTTP API.
//! 4. Supervise: a node that exits on its own is reported (id, exit status, log) and the
//!    others keep running, so a user can kill -9 the leader and watch the failover. On
//!    SIGINT/SIGTERM every child gets SIGTERM, and SIGKILL after a grace period. Once no
//!    node is left, `run_local` fails with [`LocalError::AllExited`].
//!
//! Invariant: `run_local` never returns while a child it spawned is still running, and
//! holds the leases of the cluster's ports while it runs.

use std::fs::OpenOptions;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use super::ports::{PortLease, lease_loopback_ports, lease_port};
use crate::config::{Config, ConfigError, DEFAULT_LOCAL_TOML, Member, TlsConfig, TlsPort};
use crate::raft::message::NodeId;
use crate::tls::certs::{self, CertsError, member_name};

/// How often the supervisor checks children and the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Largest accepted `--nodes`.
pub const NODES_MAX: usize = 9;

/// Nodes of a new cluster when `--nodes` is not given.
pub const NODES_DEFAULT: usize = 3;

/// Options of `raftkv-server local`.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Number of nodes (1..=[`NODES_MAX`]); `None`: [`NODES_DEFAULT`] for a new cluster,
    /// as many as a resumed one has.
    pub nodes: Option<usize>,
    /// Cluster directory; default: a fresh `raftkv-local-<pid>` under the temp dir.
    pub dir: Option<PathBuf>,
    /// Server binary to spawn; default: the running executable.
    pub server_exe: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL when stopping the children.
    pub grace: Duration,
    /// TLS on every port and link: development certificates in `DIR/certs`
    /// (`crate::tls::certs`), and the printed commands use them.
    pub tls: bool,
}

impl Default for LocalOptions {
    fn default() -> LocalOptions {
        LocalOptions {
            nodes: None,
            dir: None,
            server_exe: None,
            grace: Duration::from_secs(5),
            tls: false,
        }
    }
}

/// One node of a local cluster, as written by [`write_local_configs`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    /// The node id (1..=nodes).
    pub id: NodeId,
    /// Its config file.
    pub config_path: PathBuf,
    /// Where its stdout and stderr go.
    pub log_path: PathBuf,
    /// Its client address.
    pub client_addr: SocketAddr,
    /// Its peer address.
    pub peer_addr: SocketAddr,
    /// Its Redis (RESP2) address.
    pub redis_addr: SocketAddr,
    /// Its HTTP address (`None` for a resumed cluster written without one).
    pub http_addr: Option<SocketAddr>,
}

/// The nodes of a local cluster and the leases of their ports: while `ports` lives no
/// other raftkv process is handed one of them, so a node restarted later binds its port
/// again.
#[derive(Debug)]
pub struct LocalConfigs {
    /// The nodes, by id.
    pub nodes: Vec<LocalNode>,
    /// The leases of every node's ports.
    pub ports: Vec<PortLease>,
}

/// Why the local cluster could not be started or did not run to a clean stop.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    /// `--nodes` out of range.
    #[error("--nodes must be between 1 and {NODES_MAX}, got {0}")]
    NodeCount(usize),
    /// A file, port, process or signal operation failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The underlying error.
        source: io::Error,
    },
    /// A generated config was invalid (a bug in the template or the generator), or a
    /// config of a resumed cluster does not load.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A generated config could not be rendered as TOML.
    #[error("cannot render the config of node {id}: {source}")]
    Render {
        /// The node.
        id: NodeId,
        /// The serializer error.
        source: toml::ser::Error,
    },
    /// The directory holds a cluster (or node data) that cannot be resumed as it is.
    #[error("cannot resume the cluster in {}: {reason}", dir.display())]
    Resume {
        /// The cluster directory.
        dir: PathBuf,
        /// What is wrong, and what to do.
        reason: String,
    },
    /// The development certificates of `--tls` could not be written.
    #[error("cannot write the TLS certificates: {0}")]
    Certs(#[from] CertsError),
    /// Every node exited on its own (each was reported as it exited).
    #[error("every node has exited; their logs are in {}", dir.display())]
    AllExited {
        /// The cluster directory.
        dir: PathBuf,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// Writes `node-N.toml` for `nodes` nodes into `dir` (created if needed), on leased
/// loopback ports outside the ephemeral range, with a fresh cluster id, and returns what
/// was written. Every file passes [`Config::load`].
///
/// # Errors
/// [`LocalError`] if `nodes` is out of range, ports cannot be found, or a file cannot be
/// written.
pub fn write_local_configs(nodes: usize, dir: &Path) -> Result<LocalConfigs, LocalError> {
    if nodes == 0 || nodes > NODES_MAX {
        return Err(LocalError::NodeCount(nodes));
    }
    std::fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
    let dir = std::path::absolute(dir).map_err(io_error(format!("resolve {}", dir.display())))?;
    let leases = lease_loopback_ports(4 * nodes).map_err(io_error("find free loopback ports"))?;
    let ports: Vec<SocketAddr> = leases.iter().map(PortLease::addr).collect();
    let members: Vec<Member> = (0..nodes)
        .map(|i| Member {
            id: i as NodeId + 1,
            peer_addr: ports[2 * i],
            client_addr: ports[2 * i + 1],
        })
        .collect();
    let template = Config::parse(DEFAULT_LOCAL_TOML, &dir.join("default.toml"))?;
    let cluster_id = fresh_cluster_id();
    let mut written = Vec::with_capacity(nodes);
    let extra = ports[2 * nodes..3 * nodes].iter().zip(&ports[3 * nodes..]);
    for (member, (redis_addr, http_addr)) in members.iter().zip(extra) {
        let config = Config {
            node_id: member.id,
            cluster_id,
            data_dir: dir.join(format!("node-{}", member.id)),
            listen_peer: member.peer_addr,
            listen_client: member.client_addr,
            listen_redis: Some(*redis_addr),
            listen_http: Some(*http_addr),
            members: members.clone(),
            ..template.clone()
        };
        let config_path = config_path(&dir, member.id);
        config.validate(&config_path)?;
        let body = config.to_toml().map_err(|source| LocalError::Render {
            id: member.id,
            source,
        })?;
        let text = format!(
            "# Generated by `raftkv-server local` from the embedded default config.\n\
             # Every key is documented in docs/CONFIG.md.\n\n{body}"
        );
        std::fs::write(&config_path, text)
            .map_err(io_error(format!("write {}", config_path.display())))?;
        written.push(LocalNode {
            id: member.id,
            log_path: dir.join(format!("node-{}.log", member.id)),
            config_path,
            client_addr: member.client_addr,
            peer_addr: member.peer_addr,
            redis_addr: *redis_addr,
            http_addr: Some(*http_addr),
        });
    }
    Ok(LocalConfigs {
        nodes: written,
        ports: leases,
    })
}

fn config_path(dir: &Path, id: NodeId) -> PathBuf {
    dir.join(format!("node-{id}.toml"))
}

/// The nodes of the cluster `local` wrote into `dir` earlier, from their own configs;
/// `None` when `dir` holds no `node-N.toml`.
///
/// # Errors
/// [`LocalError::Resume`] when the configs are not one consistent cluster (ids not
/// 1..=N, different cluster ids or member lists, no Redis address), or `dir` holds node
/// data directories without configs; [`LocalError::Config`] when one does not load.
pub fn read_local_configs(dir: &Path) -> Result<Option<Vec<LocalNode>>, LocalError> {
    let refuse = |reason: String| LocalError::Resume {
        dir: dir.to_path_buf(),
        reason,
    };
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(format!("read {}", dir.display()))(e)),
    };
    let mut ids = Vec::new();
    let mut data_dirs = Vec::new();
    for entry in entries {
        let name = entry
            .map_err(io_error(format!("read {}", dir.display())))?
            .file_name();
        let name = name.to_string_lossy();
        let Some(rest) = name.strip_prefix("node-") else {
            continue;
        };
        match rest.strip_suffix(".toml").map(str::parse::<NodeId>) {
            Some(Ok(id)) => ids.push(id),
            Some(Err(_)) => {}
            None if rest.parse::<NodeId>().is_ok() => data_dirs.push(name.to_string()),
            None => {}
        }
    }
    if ids.is_empty() {
        if data_dirs.is_empty() {
            return Ok(None);
        }
        return Err(refuse(format!(
            "it holds node data ({}) but no node-N.toml configs; choose another --dir",
            data_dirs.join(", ")
        )));
    }
    ids.sort_unstable();
    if ids.iter().zip(1..).any(|(&id, want)| id != want) {
        return Err(refuse(format!(
            "its configs are for nodes {ids:?}, expected node-1.toml to node-{}.toml",
            ids.len()
        )));
    }
    let dir = std::path::absolute(dir).map_err(io_error(format!("resolve {}", dir.display())))?;
    let mut nodes = Vec::with_capacity(ids.len());
    let mut first: Option<Config> = None;
    for id in ids {
        let path = config_path(&dir, id);
        let config = Config::load(&path)?;
        let Some(redis_addr) = config.listen_redis else {
            return Err(refuse(format!("{} has no listen_redis", path.display())));
        };
        if config.node_id != id {
            return Err(refuse(format!(
                "{} says node_id = {}",
                path.display(),
                config.node_id
            )));
        }
        if let Some(first) = &first
            && (first.cluster_id != config.cluster_id || first.members != config.members)
        {
            return Err(refuse(format!(
                "{} has another cluster_id or members list than node-1.toml",
                path.display()
            )));
        }
        nodes.push(LocalNode {
            id,
            config_path: path,
            log_path: dir.join(format!("node-{id}.log")),
            client_addr: config.listen_client,
            peer_addr: config.listen_peer,
            redis_addr,
            http_addr: config.listen_http,
        });
        first.get_or_insert(config);
    }
    Ok(Some(nodes))
}

/// Leases the ports of a cluster to resume, so none is handed to another raftkv process
/// while it runs.
///
/// # Errors
/// [`LocalError::Resume`] naming the node, key and address of a port in use.
fn lease_cluster_ports(nodes: &[LocalNode], dir: &Path) -> Result<Vec<PortLease>, LocalError> {
    let mut leases = Vec::with_capacity(4 * nodes.len());
    for node in nodes {
        let keys = [
            ("listen_peer", Some(node.peer_addr)),
            ("listen_client", Some(node.client_addr)),
            ("listen_redis", Some(node.redis_addr)),
            ("listen_http", node.http_addr),
        ];
        for (key, addr) in keys {
            let Some(addr) = addr else {
                continue;
            };
            let lease =
                lease_port(addr.port()).map_err(io_error(format!("lease port {}", addr.port())))?;
            leases.push(lease.ok_or_else(|| LocalError::Resume {
                dir: dir.to_path_buf(),
                reason: format!(
                    "node {}'s {key} {addr} is in use (is this cluster still running?)",
                    node.id
                ),
            })?);
        }
    }
    Ok(leases)
}

/// The cluster to run in `dir`: the one already there, or a new one of `nodes` nodes;
/// `true` when resumed.
fn prepare(dir: &Path, nodes: Option<usize>) -> Result<(LocalConfigs, bool), LocalError> {
    let Some(found) = read_local_configs(dir)? else {
        let configs = write_local_configs(nodes.unwrap_or(NODES_DEFAULT), dir)?;
        return Ok((configs, false));
    };
    if let Some(wanted) = nodes
        && wanted != found.len()
    {
        return Err(LocalError::Resume {
            dir: dir.to_path_buf(),
            reason: format!(
                "it holds a cluster of {} node(s), not --nodes {wanted}; omit --nodes to \
                 resume it, or choose another --dir",
                found.len()
            ),
        });
    }
    let ports = lease_cluster_ports(&found, dir)?;
    Ok((
        LocalConfigs {
            nodes: found,
            ports,
        },
        true,
    ))
}

/// Runs `raftkv-server local`: writes (or resumes) the configs, spawns the nodes, prints
/// how to reach them, reports nodes that exit, and supervises the rest until
/// SIGINT/SIGTERM (then `Ok`) or until none is left ([`LocalError::AllExited`]). Every
/// child is stopped before returning.
///
/// # Errors
/// [`LocalError`] for bad options, a cluster directory that cannot be resumed, IO
/// failures, or every node having exited.
pub fn run_local(options: LocalOptions) -> Result<(), LocalError> {
    let dir = match &options.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("raftkv-local-{}", std::process::id())),
    };
    let exe = match &options.server_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().map_err(io_error("find the server executable"))?,
    };
    let exe = std::path::absolute(&exe).map_err(io_error(format!("resolve {}", exe.display())))?;
    let (configs, resumed) = prepare(&dir, options.nodes)?;
    let dir = configs
        .nodes
        .first()
        .and_then(|node| node.config_path.parent())
        .map_or(dir, Path::to_path_buf);
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = Vec::new();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let id = signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(io_error("install the signal handler"))?;
        signals.push(id);
    }
    if options.tls {
        enable_tls(&configs.nodes, &dir)?;
    }
    let tls_ca = match configs.nodes.first() {
        Some(node) => {
            let tls = Config::load(&node.config_path)?.tls;
            tls.ca_file.filter(|_| !tls.ports.is_empty())
        }
        None => None,
    };
    let commands = Commands::next_to(&exe, &dir).with_tls(tls_ca.as_deref());
    let nodes = &configs.nodes;
    let result = run_cluster(
        nodes,
        &exe,
        &stop,
        options.grace,
        |pids| print!("{}", summary(nodes, pids, &dir, &commands, resumed)),
        |node, status, running| print!("{}", exit_report(node, status, running, &commands)),
    );
    for id in signals {
        signal_hook::low_level::unregister(id);
    }
    result.map(|_| ())
}

/// Writes development certificates for `nodes` into `dir/certs` (keeping any already
/// there) and turns TLS on for every port and link in each node's config.
///
/// # Errors
/// [`LocalError`] if a certificate or a config cannot be written.
pub fn enable_tls(nodes: &[LocalNode], dir: &Path) -> Result<(), LocalError> {
    let certs_dir = dir.join("certs");
    let ids: Vec<NodeId> = nodes.iter().map(|node| node.id).collect();
    certs::init(&certs_dir, &ids, &[])?;
    for node in nodes {
        let mut config = Config::load(&node.config_path)?;
        let name = member_name(node.id);
        config.tls = TlsConfig {
            ports: vec![
                TlsPort::Client,
                TlsPort::Redis,
                TlsPort::Http,
                TlsPort::Peer,
            ],
            cert_file: Some(certs_dir.join(format!("{name}.pem"))),
            key_file: Some(certs_dir.join(format!("{name}-key.pem"))),
            ca_file: Some(certs_dir.join("ca.pem")),
            client_ca_file: None,
        };
        config.validate(&node.config_path)?;
        let body = config.to_toml().map_err(|source| LocalError::Render {
            id: node.id,
            source,
        })?;
        let text = format!(
            "# Generated by `raftkv-server local --tls` from the embedded default config.\n\
             # Every key is documented in docs/CONFIG.md.\n\n{body}"
        );
        std::fs::write(&node.config_path, text)
            .map_err(io_error(format!("write {}", node.config_path.display())))?;
    }
    Ok(())
}

/// The paste-ready command prefixes printed by `local`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Commands {
    /// How to run `raftkv-cli` (followed by its arguments).
    pub cli: String,
    /// The line that resumes this cluster.
    pub resume: String,
    /// The CA file (a shell word) of a TLS cluster, which every printed command uses.
    pub tls_ca: Option<String>,
}

impl Commands {
    /// The `raftkv-cli` next to `server_exe` by absolute path when it exists there, else
    /// its `cargo run` form (run from the source tree); the resume line of `dir`.
    pub fn next_to(server_exe: &Path, dir: &Path) -> Commands {
        let cli = server_exe
            .parent()
            .map(|parent| parent.join("raftkv-cli"))
            .filter(|cli| cli.is_file())
            .map_or_else(
                || "cargo run --release --bin raftkv-cli --".to_string(),
                |cli| shell_word(&cli.to_string_lossy()),
            );
        let resume = format!(
            "{} local --dir {}",
            shell_word(&server_exe.to_string_lossy()),
            shell_word(&dir.to_string_lossy())
        );
        Commands {
            cli,
            resume,
            tls_ca: None,
        }
    }

    /// These commands for a cluster whose ports speak TLS with certificates of `ca`.
    pub fn with_tls(self, ca: Option<&Path>) -> Commands {
        Commands {
            tls_ca: ca.map(|ca| shell_word(&ca.to_string_lossy())),
            ..self
        }
    }
}

/// `text` as one shell word: as is when it holds only safe characters, else quoted.
fn shell_word(text: &str) -> String {
    let safe = |c: char| c.is_ascii_alphanumeric() || "_-./:,=+@%".contains(c);
    if !text.is_empty() && text.chars().all(safe) {
        text.to_string()
    } else {
        format!("'{}'", text.replace('\'', r"'\''"))
    }
}

/// The text printed once the nodes are started (`pids` in `nodes` order). Every command
/// line in it can be pasted into a shell as it is.
pub fn summary(
    nodes: &[LocalNode],
    pids: &[u32],
    dir: &Path,
    commands: &Commands,
    resumed: bool,
) -> String {
    let cluster: Vec<String> = nodes.iter().map(|n| n.client_addr.to_string()).collect();
    let cluster = cluster.join(",");
    let mut text = format!(
        "raftkv local cluster{}: {} node(s), configs, data and logs in {}\n",
        if resumed { " (resumed)" } else { "" },
        nodes.len(),
        dir.display()
    );
    for (node, pid) in nodes.iter().zip(pids) {
        let http = node.http_addr.map_or_else(String::new, |addr| {
            let scheme = if commands.tls_ca.is_some() {
                "https"
            } else {
                "http"
            };
            format!("  {scheme}://{addr}/")
        });
        text.push_str(&format!(
            "  node {}  pid {pid}  client {}  redis {}  peer {}{http}  log {}\n",
            node.id,
            node.client_addr,
            node.redis_addr,
            node.peer_addr,
            node.log_path.display()
        ));
    }
    let (cli, redis_cli, curl, scheme) = match &commands.tls_ca {
        Some(ca) => (
            format!("{} --cacert {ca}", commands.cli),
            format!("redis-cli --tls --cacert {ca}"),
            format!("curl --cacert {ca}"),
            "https",
        ),
        None => (
            commands.cli.clone(),
            "redis-cli".to_string(),
            "curl".to_string(),
            "http",
        ),
    };
    if commands.tls_ca.is_some() {
        text.push_str("TLS on every port and link (certificates in the certs/ directory)\n");
    }
    text.push_str(&format!(
        "try:\n  {cli} --cluster {cluster} put hello world\n  \
         {cli} --cluster {cluster} get hello\n  \
         {cli} --cluster {cluster} status\n  \
         {redis_cli} -p {} set hello world   # any node: followers forward to the leader\n\
         kill -9 the leader's pid (status shows which node leads) to watch a failover.\n\
         Ctrl-C stops every node; this resumes the cluster afterwards:\n  {}\n",
        nodes.first().map_or(0, |n| n.redis_addr.port()),
        commands.resume
    ));
    if let Some(http) = nodes.first().and_then(|n| n.http_addr) {
        text.push_str(&format!(
            "HTTP (any node; the dashboard is at {scheme}://{http}/):\n  \
             {curl} -X PUT {scheme}://{http}/kv/name -d '{{\"value\": \"RaftKV\"}}'\n  \
             {curl} {scheme}://{http}/kv/name\n  \
             {curl} {scheme}://{http}/cluster/status\n"
        ));
    }
    text
}

/// The text printed when `node` exits on its own while `running` nodes keep running.
pub fn exit_report(
    node: &LocalNode,
    status: ExitStatus,
    running: usize,
    commands: &Commands,
) -> String {
    let what = if running == 0 {
        "no node is left".to_string()
    } else {
        format!("{running} node(s) keep running")
    };
    format!(
        "node {} exited on its own ({status}); its log: {}\n  \
         {what}; after Ctrl-C this brings the whole cluster back:\n  {}\n",
        node.id,
        node.log_path.display(),
        commands.resume
    )
}

/// Spawns every node, calls `started` once with their pids, then supervises until `stop`
/// is set (returns each child's exit status after stopping it). A child that exits on its
/// own is passed to `exited` with the number still running, once; when none is left,
/// returns [`LocalError::AllExited`].
fn run_cluster(
    nodes: &[LocalNode],
    exe: &Path,
    stop: &AtomicBool,
    grace: Duration,
    started: impl FnOnce(&[u32]),
    mut exited: impl FnMut(&LocalNode, ExitStatus, usize),
) -> Result<Vec<ExitStatus>, LocalError> {
    let mut children: Vec<Child> = Vec::with_capacity(nodes.len());
    for node in nodes {
        match spawn_node(node, exe) {
            Ok(child) => children.push(child),
            Err(error) => {
                stop_children(&mut children, grace);
                return Err(error);
            }
        }
    }
    started(&children.iter().map(Child::id).collect::<Vec<_>>());
    let mut gone = vec![false; nodes.len()];
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(stop_children(&mut children, grace));
        }
        for (i, (node, child)) in nodes.iter().zip(children.iter_mut()).enumerate() {
            if gone[i] {
                continue;
            }
            let status = match child.try_wait() {
                Ok(Some(status)) => status,
                Ok(None) => continue,
                Err(error) => {
                    stop_children(&mut children, grace);
                    return Err(io_error(format!("wait for node {}", node.id))(error));
                }
            };
            gone[i] = true;
            exited(node, status, gone.iter().filter(|g| !**g).count());
        }
        if gone.iter().all(|g| *g) {
            let dir = nodes
                .first()
                .and_then(|node| node.log_path.parent())
                .map_or_else(PathBuf::new, Path::to_path_buf);
            return Err(LocalError::AllExited { dir });
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Starts `exe --config <node config>` with stdout and stderr appended to the node's log
/// (a resumed node's log keeps its earlier runs).
///
/// # Errors
/// The log file cannot be opened or the process cannot be started.
pub fn spawn_node(node: &LocalNode, exe: &Path) -> Result<Child, LocalError> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(&node.log_path)
        .map_err(io_error(format!("open {}", node.log_path.display())))?;
    let log_err = log
        .try_clone()
        .map_err(io_error(format!("open {}", node.log_path.display())))?;
    Command::new(exe)
        .arg("--config")
        .arg(&node.config_path)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn()
        .map_err(io_error(format!(
            "start node {} ({})",
            node.id,
            exe.display()
        )))
}

/// SIGTERM to every running child, SIGKILL to those still running after `grace`; waits
/// for all and returns their exit statuses (in `children` order).
pub(crate) fn stop_children(children: &mut [Child], grace: Duration) -> Vec<ExitStatus> {
    for child in children.iter_mut() {
        if matches!(child.try_wait(), Ok(None)) {
            terminate(child);
        }
    }
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline
        && children
            .iter_mut()
            .any(|c| matches!(c.try_wait(), Ok(None)))
    {
        thread::sleep(Duration::from_millis(20));
    }
    children
        .iter_mut()
        .filter_map(|child| {
            if matches!(child.try_wait(), Ok(None)) {
                // Already exited between the check and the kill is fine: wait() reaps it.
                let _ = child.kill();
            }
            child.wait().ok()
        })
        .collect()
}

/// Sends SIGTERM to a child node, so it flushes, syncs and exits cleanly.
pub fn terminate(child: &Child) {
    let Ok(pid) = libc::pid_t::try_from(child.id()) else {
        return;
    };
    // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own unreaped child,
    // so it cannot name a recycled process.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
}

/// A non-zero cluster id unlikely to match another local cluster's (pid and clock mixed).
fn fresh_cluster_id() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mixed = (u64::from(std::process::id()) << 32) ^ nanos;
    mixed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1
}

#[cfg(test)]
mod tests {
    //! Goal: generated configs are valid and consistent and read back as the same cluster
    //! (resume); inconsistent directories are refused; the printed lines are paste-ready;
    //! the supervisor stops children on request (SIGTERM, then SIGKILL for stubborn ones)
    //! and reports a child that dies while the others keep running.
    //! Method: real files in a temp dir; shell scripts stand in for the server binary.
    use super::*;
    use std::collections::HashSet;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::ExitStatusExt;

    fn script(dir: &Path, name: &str, body: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    #[test]
    fn configs_are_valid_consistent_and_on_distinct_ports() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = write_local_configs(3, dir.path()).unwrap().nodes;
        assert_eq!(
            nodes.iter().map(|n| n.id).collect::<Vec<_>>(),
            vec![1, 2, 3]
        );
        let configs: Vec<Config> = nodes
            .iter()
            .map(|n| Config::load(&n.config_path).unwrap())
            .collect();
        let mut addrs = HashSet::new();
        for (node, config) in nodes.iter().zip(&configs) {
            assert_eq!(config.node_id, node.id);
            assert_eq!(config.members, configs[0].members, "node {}", node.id);
            assert_eq!(config.cluster_id, configs[0].cluster_id);
            assert_eq!(config.listen_client, node.client_addr);
            assert_eq!(config.listen_peer, node.peer_addr);
            assert!(config.listen_client.ip().is_loopback());
            assert_eq!(
                config.data_dir,
                dir.path().join(format!("node-{}", node.id))
            );
            assert_eq!(config.listen_redis, Some(node.redis_addr));
            assert!(addrs.insert(node.client_addr) && addrs.insert(node.peer_addr));
            assert!(addrs.insert(node.redis_addr));
            assert_eq!(config.listen_http, node.http_addr);
            assert!(addrs.insert(node.http_addr.expect("an HTTP address")));
            assert_eq!(config.raft, configs[0].raft);
        }
        assert_eq!(addrs.len(), 12);
    }

    #[test]
    fn enable_tls_writes_certificates_and_configs_that_load_and_print_tls_commands() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = write_local_configs(2, dir.path()).unwrap().nodes;
        enable_tls(&nodes, dir.path()).unwrap();
        for node in &nodes {
            let tls = Config::load(&node.config_path).unwrap().tls;
            assert_eq!(tls.ports.len(), 4);
            for file in [&tls.cert_file, &tls.key_file, &tls.ca_file] {
                let file = file.as_ref().expect("a file");
                assert!(file.is_file(), "{} missing", file.display());
            }
            let ports = crate::server::tls_ports::TlsPorts::load(&tls);
            assert!(ports.is_ok(), "node {}: {:?}", node.id, ports.err());
        }
        // Enabling again keeps the CA.
        let ca = std::fs::read(dir.path().join("certs/ca.pem")).unwrap();
        enable_tls(&nodes, dir.path()).unwrap();
        assert_eq!(std::fs::read(dir.path().join("certs/ca.pem")).unwrap(), ca);

        let ca_path = dir.path().join("certs/ca.pem");
        let commands = Commands::next_to(&dir.path().join("raftkv-server"), dir.path())
            .with_tls(Some(&ca_path));
        let text = summary(&nodes, &[11, 12], dir.path(), &commands, false);
        let ca = ca_path.display().to_string();
        for want in [
            format!("raftkv-cli -- --cacert {ca} --cluster"),
            format!(
                "redis-cli --tls --cacert {ca} -p {}",
                nodes[0].redis_addr.port()
            ),
            format!("curl --cacert {ca} https://"),
        ] {
            assert!(text.contains(&want), "no {want:?} in:\n{text}");
        }
        assert!(!text.contains("http://"), "{text}");
    }

    #[test]
    fn node_count_is_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(matches!(
            write_local_configs(0, dir.path()),
            Err(LocalError::NodeCount(0))
        ));
        assert!(matches!(
            write_local_configs(10, dir.path()),
            Err(LocalError::NodeCount(10))
        ));
    }

    #[test]
    fn summary_has_paste_ready_lines() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = write_local_configs(2, dir.path()).unwrap().nodes;
        // No raftkv-cli next to this "server": the cargo form.
        let commands = Commands::next_to(&dir.path().join("raftkv-server"), dir.path());
        let text = summary(&nodes, &[11, 12], dir.path(), &commands, false);
        let line = format!(
            "cargo run --release --bin raftkv-cli -- --cluster {},{} put hello world",
            nodes[0].client_addr, nodes[1].client_addr
        );
        assert!(text.contains(&line), "{text}");
        assert!(
            text.contains(&format!("node 2  pid 12  client {}", nodes[1].client_addr)),
            "{text}"
        );
        let redis = format!(
            "redis-cli -p {} set hello world   # ",
            nodes[0].redis_addr.port()
        );
        assert!(text.contains(&redis), "{text}");
        let http = nodes[0].http_addr.expect("an HTTP address");
        let curl = format!("curl -X PUT http://{http}/kv/name -d '{{\"value\": \"RaftKV\"}}'");
        assert!(text.contains(&curl), "{text}");
        assert!(
            text.contains(&format!("curl http://{http}/cluster/status")),
            "{text}"
        );
        // With a raftkv-cli next to it: its absolute path, quoted when it needs quotes.
        let bin = dir.path().join("my bin");
        std::fs::create_dir(&bin).unwrap();
        std::fs::write(bin.join("raftkv-cli"), "").unwrap();
        let commands = Commands::next_to(&bin.join("raftkv-server"), dir.path());
        let quoted = format!("'{}'", bin.join("raftkv-cli").display());
        assert_eq!(commands.cli, quoted);
        assert!(
            commands.resume.contains(" local --dir "),
            "{}",
            commands.resume
        );
        assert_eq!(shell_word("a'b"), r"'a'\''b'");
        assert_eq!(shell_word("/x/y-1.2"), "/x/y-1.2");
    }

    #[test]
    fn written_configs_read_back_as_the_same_cluster() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_local_configs(dir.path()).unwrap().is_none());
        let written = write_local_configs(3, dir.path()).unwrap();
        let read = read_local_configs(dir.path()).unwrap().expect("a cluster");
        assert_eq!(read, written.nodes);
        // Its ports are leased by `written`: resuming now is refused, naming the port.
        let error = prepare(dir.path(), None).unwrap_err();
        assert!(
            error.to_string().contains("node 1's listen_peer"),
            "{error}"
        );
        drop(written);
        let (resumed, was_resumed) = prepare(dir.path(), None).unwrap();
        assert!(was_resumed);
        assert_eq!(resumed.nodes, read);
        let error = prepare(dir.path(), Some(5)).unwrap_err();
        assert!(error.to_string().contains("not --nodes 5"), "{error}");
    }

    #[test]
    fn inconsistent_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("node-1")).unwrap();
        let error = read_local_configs(dir.path()).unwrap_err();
        assert!(error.to_string().contains("no node-N.toml"), "{error}");
        let dir = tempfile::tempdir().unwrap();
        let nodes = write_local_configs(3, dir.path()).unwrap().nodes;
        std::fs::remove_file(&nodes[1].config_path).unwrap();
        let error = read_local_configs(dir.path()).unwrap_err();
        assert!(
            error.to_string().contains("expected node-1.toml"),
            "{error}"
        );
        let other = tempfile::tempdir().unwrap();
        let others = write_local_configs(3, other.path()).unwrap().nodes;
        std::fs::copy(&others[1].config_path, &nodes[1].config_path).unwrap();
        let error = read_local_configs(dir.path()).unwrap_err();
        assert!(error.to_string().contains("another cluster_id"), "{error}");
    }

    #[test]
    fn stop_flag_terminates_children_and_escalates_to_kill() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = write_local_configs(2, dir.path()).unwrap().nodes;
        // Node 1 obeys SIGTERM; node 2 ignores it and must be killed after the grace.
        let exe = script(
            dir.path(),
            "fake-server",
            "case \"$2\" in *node-2.toml) trap '' TERM ;; esac\necho \"started $2\"\n\
             while :; do sleep 1; done",
        );
        let stop = AtomicBool::new(false);
        let mut started = false;
        let statuses = thread::scope(|scope| {
            // Stop only once both scripts run (and node 2 has installed its trap).
            scope.spawn(|| {
                let ready = |n: &LocalNode| {
                    std::fs::read_to_string(&n.log_path).is_ok_and(|t| t.contains("started"))
                };
                // Bounded, so a failed start cannot hang the test; the asserts then fail.
                for _ in 0..1000 {
                    if nodes.iter().all(ready) {
                        break;
                    }
                    thread::sleep(Duration::from_millis(10));
                }
                stop.store(true, Ordering::SeqCst);
            });
            run_cluster(
                &nodes,
                &exe,
                &stop,
                Duration::from_millis(300),
                |_| started = true,
                |_, _, _| {},
            )
        })
        .unwrap();
        assert!(started);
        assert_eq!(statuses.len(), 2);
        assert_eq!(statuses[0].signal(), Some(libc::SIGTERM));
        assert_eq!(statuses[1].signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn a_dying_node_is_reported_and_the_others_keep_running() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = write_local_configs(3, dir.path()).unwrap().nodes;
        let exe = script(
            dir.path(),
            "fake-server",
            "case \"$2\" in *node-3.toml) echo 'bind failed' >&2; exit 3 ;; esac\n\
             while :; do sleep 1; done",
        );
        let stop = AtomicBool::new(false);
        let mut reports = Vec::new();
        let statuses = run_cluster(
            &nodes,
            &exe,
            &stop,
            Duration::from_secs(5),
            |_| {},
            |node, status, running| {
                reports.push((node.id, status.code(), running));
                // Stop only after the report: the supervisor must not have stopped the
                // others on its own.
                stop.store(true, Ordering::SeqCst);
            },
        )
        .unwrap();
        assert_eq!(reports, vec![(3, Some(3), 2)]);
        assert_eq!(statuses[0].signal(), Some(libc::SIGTERM));
        assert_eq!(statuses[1].signal(), Some(libc::SIGTERM));
        assert_eq!(statuses[2].code(), Some(3));
        assert_eq!(
            std::fs::read_to_string(&nodes[2].log_path).unwrap(),
            "bind failed\n"
        );
        let all_exit = script(dir.path(), "exiting-server", "exit 1");
        let running = AtomicBool::new(false);
        let mut exits = 0;
        let error = run_cluster(
            &nodes,
            &all_exit,
            &running,
            Duration::ZERO,
            |_| {},
            |_, _, _| exits += 1,
        );
        assert!(
            matches!(error, Err(LocalError::AllExited { .. })),
            "{error:?}"
        );
        assert_eq!(exits, 3);
    }

    #[test]
    fn a_missing_binary_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = write_local_configs(1, dir.path()).unwrap().nodes;
        let stop = AtomicBool::new(false);
        let missing = dir.path().join("no-such-server");
        let error = run_cluster(
            &nodes,
            &missing,
            &stop,
            Duration::from_secs(1),
            |_| {},
            |_, _, _| {},
        )
        .unwrap_err();
        assert!(error.to_string().starts_with("start node 1"), "{error}");
    }
}
