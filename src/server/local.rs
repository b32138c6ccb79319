//! `raftkv-server local`: a loopback cluster of child processes for trying raftkv out.
//!
//! Steps: pick free loopback ports (bind `127.0.0.1:0`, read the port, release it), write
//! one config per node derived from the embedded default ([`DEFAULT_LOCAL_TOML`]) into the
//! cluster directory as `node-N.toml` with data in `node-N/`, spawn the server binary with
//! `--config node-N.toml` per node (stdout and stderr go to `node-N.log` in the same
//! directory), print the client addresses and a ready-to-paste CLI line, then supervise:
//! on SIGINT/SIGTERM every child gets SIGTERM, and SIGKILL after a grace period; a child
//! that exits on its own stops the others and is reported with its log file.
//!
//! The ports are free when chosen but not reserved: another process may take one before
//! the node binds it, in which case that node fails to start and is reported.
//!
//! Invariant: `run_local` never returns while a child it spawned is still running.

use std::fs::File;
use std::io;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::config::{Config, ConfigError, DEFAULT_LOCAL_TOML, Member};
use crate::raft::message::NodeId;

/// How often the supervisor checks children and the stop flag.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// Largest accepted `--nodes`.
pub const NODES_MAX: usize = 9;

/// Options of `raftkv-server local`.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    /// Number of nodes (1..=[`NODES_MAX`]).
    pub nodes: usize,
    /// Cluster directory; default: a fresh `raftkv-local-<pid>` under the temp dir.
    pub dir: Option<PathBuf>,
    /// Server binary to spawn; default: the running executable.
    pub server_exe: Option<PathBuf>,
    /// Time between SIGTERM and SIGKILL when stopping the children.
    pub grace: Duration,
}

impl Default for LocalOptions {
    fn default() -> LocalOptions {
        LocalOptions {
            nodes: 3,
            dir: None,
            server_exe: None,
            grace: Duration::from_secs(5),
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
    /// A generated config was invalid (a bug in the template or the generator).
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
    /// A node exited while the cluster was running; the others were stopped.
    #[error("node {id} exited unexpectedly ({status}); see its log {}", log.display())]
    NodeExited {
        /// The node.
        id: NodeId,
        /// How it exited.
        status: ExitStatus,
        /// Its log file.
        log: PathBuf,
    },
}

fn io_error(what: impl Into<String>) -> impl FnOnce(io::Error) -> LocalError {
    let what = what.into();
    move |source| LocalError::Io { what, source }
}

/// Writes `node-N.toml` for `nodes` nodes into `dir` (created if needed), on free
/// loopback ports, and returns what was written. Every file passes [`Config::load`].
///
/// # Errors
/// [`LocalError`] if `nodes` is out of range, a port cannot be found, or a file cannot be
/// written.
pub fn write_local_configs(nodes: usize, dir: &Path) -> Result<Vec<LocalNode>, LocalError> {
    if nodes == 0 || nodes > NODES_MAX {
        return Err(LocalError::NodeCount(nodes));
    }
    std::fs::create_dir_all(dir).map_err(io_error(format!("create {}", dir.display())))?;
    let dir = std::path::absolute(dir).map_err(io_error(format!("resolve {}", dir.display())))?;
    let ports = free_loopback_ports(3 * nodes)?;
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
    for (member, redis_addr) in members.iter().zip(&ports[2 * nodes..]) {
        let config = Config {
            node_id: member.id,
            cluster_id,
            data_dir: dir.join(format!("node-{}", member.id)),
            listen_peer: member.peer_addr,
            listen_client: member.client_addr,
            listen_redis: Some(*redis_addr),
            members: members.clone(),
            ..template.clone()
        };
        let config_path = dir.join(format!("node-{}.toml", member.id));
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
        });
    }
    Ok(written)
}

/// Runs `raftkv-server local`: writes the configs, spawns the nodes, prints how to reach
/// them, and supervises them until SIGINT/SIGTERM (then `Ok`) or a node dies (then
/// [`LocalError::NodeExited`]). Every child is stopped before returning.
///
/// # Errors
/// [`LocalError`] for bad options, IO failures, or a node that exited on its own.
pub fn run_local(options: LocalOptions) -> Result<(), LocalError> {
    let dir = match &options.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("raftkv-local-{}", std::process::id())),
    };
    let exe = match &options.server_exe {
        Some(exe) => exe.clone(),
        None => std::env::current_exe().map_err(io_error("find the server executable"))?,
    };
    let nodes = write_local_configs(options.nodes, &dir)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut signals = Vec::new();
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        let id = signal_hook::flag::register(signal, Arc::clone(&stop))
            .map_err(io_error("install the signal handler"))?;
        signals.push(id);
    }
    let result = run_cluster(&nodes, &exe, &stop, options.grace, |_| {
        print!("{}", summary(&nodes, &dir));
    });
    for id in signals {
        signal_hook::low_level::unregister(id);
    }
    result.map(|_| ())
}

/// The text printed once the nodes are started.
pub fn summary(nodes: &[LocalNode], dir: &Path) -> String {
    let cluster: Vec<String> = nodes.iter().map(|n| n.client_addr.to_string()).collect();
    let cluster = cluster.join(",");
    let mut text = format!(
        "raftkv local cluster: {} node(s), configs, data and logs in {}\n",
        nodes.len(),
        dir.display()
    );
    for node in nodes {
        text.push_str(&format!(
            "  node {}  client {}  redis {}  peer {}  log {}\n",
            node.id,
            node.client_addr,
            node.redis_addr,
            node.peer_addr,
            node.log_path.display()
        ));
    }
    text.push_str(&format!(
        "try:\n  raftkv-cli --cluster {cluster} put hello world\n  \
         raftkv-cli --cluster {cluster} get hello\n  \
         raftkv-cli --cluster {cluster} status\n  \
         redis-cli -p {} set hello world   (any node; followers forward to the leader)\n\
         Ctrl-C stops every node.\n",
        nodes.first().map_or(0, |n| n.redis_addr.port())
    ));
    text
}

/// Spawns every node, calls `started` once, then supervises until `stop` is set (returns
/// each child's exit status after stopping it) or a child exits (stops the others and
/// returns [`LocalError::NodeExited`]).
fn run_cluster(
    nodes: &[LocalNode],
    exe: &Path,
    stop: &AtomicBool,
    grace: Duration,
    started: impl FnOnce(&[LocalNode]),
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
    started(nodes);
    loop {
        if stop.load(Ordering::SeqCst) {
            return Ok(stop_children(&mut children, grace));
        }
        for (node, child) in nodes.iter().zip(children.iter_mut()) {
            let exited = child
                .try_wait()
                .map_err(io_error(format!("wait for node {}", node.id)));
            let exited = match exited {
                Ok(exited) => exited,
                Err(error) => {
                    stop_children(&mut children, grace);
                    return Err(error);
                }
            };
            if let Some(status) = exited {
                let error = LocalError::NodeExited {
                    id: node.id,
                    status,
                    log: node.log_path.clone(),
                };
                stop_children(&mut children, grace);
                return Err(error);
            }
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// Starts `exe --config <node config>` with stdout and stderr going to the node's log.
///
/// # Errors
/// The log file cannot be created or the process cannot be started.
pub fn spawn_node(node: &LocalNode, exe: &Path) -> Result<Child, LocalError> {
    let log = File::create(&node.log_path)
        .map_err(io_error(format!("create {}", node.log_path.display())))?;
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

/// `count` distinct free loopback addresses. All listeners are held until every port is
/// chosen, so the ports are distinct; they are released before returning.
fn free_loopback_ports(count: usize) -> Result<Vec<SocketAddr>, LocalError> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind("127.0.0.1:0"))
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_error("find a free loopback port"))?;
    listeners
        .iter()
        .map(TcpListener::local_addr)
        .collect::<io::Result<Vec<_>>>()
        .map_err(io_error("find a free loopback port"))
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
    //! Goal: generated configs are valid and consistent; the supervisor stops children on
    //! request (SIGTERM, then SIGKILL for stubborn ones) and reports a child that dies.
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
        let nodes = write_local_configs(3, dir.path()).unwrap();
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
            assert_eq!(config.raft, configs[0].raft);
        }
        assert_eq!(addrs.len(), 9);
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
    fn summary_has_a_ready_to_paste_cli_line() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = write_local_configs(2, dir.path()).unwrap();
        let text = summary(&nodes, dir.path());
        let line = format!(
            "raftkv-cli --cluster {},{} put hello world",
            nodes[0].client_addr, nodes[1].client_addr
        );
        assert!(text.contains(&line), "{text}");
        assert!(
            text.contains(&format!("node 2  client {}", nodes[1].client_addr)),
            "{text}"
        );
    }

    #[test]
    fn stop_flag_terminates_children_and_escalates_to_kill() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = write_local_configs(2, dir.path()).unwrap();
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
            run_cluster(&nodes, &exe, &stop, Duration::from_millis(300), |_| {
                started = true
            })
        })
        .unwrap();
        assert!(started);
        assert_eq!(statuses.len(), 2);
        assert_eq!(statuses[0].signal(), Some(libc::SIGTERM));
        assert_eq!(statuses[1].signal(), Some(libc::SIGKILL));
    }

    #[test]
    fn a_dying_node_is_reported_and_the_others_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = write_local_configs(3, dir.path()).unwrap();
        let exe = script(
            dir.path(),
            "fake-server",
            "case \"$2\" in *node-3.toml) echo 'bind failed' >&2; exit 3 ;; esac\n\
             while :; do sleep 1; done",
        );
        let stop = AtomicBool::new(false);
        let error = run_cluster(&nodes, &exe, &stop, Duration::from_secs(5), |_| {}).unwrap_err();
        match error {
            LocalError::NodeExited { id, status, log } => {
                assert_eq!(id, 3);
                assert_eq!(status.code(), Some(3));
                assert_eq!(log, nodes[2].log_path);
                assert_eq!(std::fs::read_to_string(log).unwrap(), "bind failed\n");
            }
            other => panic!("expected NodeExited, got {other}"),
        }
    }

    #[test]
    fn a_missing_binary_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let nodes = write_local_configs(1, dir.path()).unwrap();
        let stop = AtomicBool::new(false);
        let missing = dir.path().join("no-such-server");
        let error =
            run_cluster(&nodes, &missing, &stop, Duration::from_secs(1), |_| {}).unwrap_err();
        assert!(error.to_string().starts_with("start node 1"), "{error}");
    }
}
