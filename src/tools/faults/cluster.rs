//! A cluster of real `raftkv-server` processes whose peer traffic runs through one
//! [`LinkProxy`] per directed link, so the harness can kill, pause and partition nodes.
//!
//! Node `i`'s config lists, for every other member `j`, the proxy of link `i -> j` as
//! `j`'s peer address; the proxy forwards to `j`'s real peer listener. Client traffic
//! goes direct. Data directories survive kill -9 and restarts, and so do the nodes'
//! ports: they are leased outside the ephemeral range ([`crate::server::ports`]) for the
//! cluster's lifetime, so a restarted node binds its port again. The proxies never
//! restart, so they listen on ordinary ephemeral ports.
//!
//! Invariant: dropping a [`FaultCluster`] kills every node process it started (SIGKILL
//! also ends a stopped process) and stops every proxy.

use std::fs::OpenOptions;
use std::io;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use crate::client::{ClientOptions, status_at};
use crate::codec::client::Status;
use crate::config::{Config, SEGMENT_BYTES_MIN};
use crate::server::local::{LocalNode, enable_tls, write_local_configs};
use crate::server::ports::PortLease;
use crate::tls::ClientTls;

use super::proxy::{LinkMode, LinkProxy};

/// How a node process is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeState {
    /// Running.
    Up,
    /// Stopped with SIGSTOP.
    Paused,
    /// Killed (or not started).
    Down,
}

/// Settings of a [`FaultCluster`].
#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Number of nodes.
    pub nodes: usize,
    /// The `raftkv-server` binary.
    pub server_exe: PathBuf,
    /// Directory for configs, data and logs (created if needed).
    pub dir: PathBuf,
    /// `raft.tick_ms` of every node.
    pub tick_ms: u64,
    /// `snapshot.threshold_entries` of every node, with `storage.segment_bytes` at its
    /// minimum so compaction really deletes log (small: snapshots and InstallSnapshot
    /// happen during the faults); `None` keeps the defaults.
    pub snapshot_entries: Option<u64>,
    /// TLS on every port and link (`server::local::enable_tls`; peer links verify the
    /// member name, not the proxy's address, so the proxies carry TLS unchanged).
    pub tls: bool,
}

struct Process {
    child: Option<Child>,
    state: NodeState,
}

/// The running cluster.
pub struct FaultCluster {
    nodes: Vec<LocalNode>,
    /// Held while the cluster lives: no other raftkv process is handed a node's port.
    _ports: Vec<PortLease>,
    processes: Vec<Process>,
    /// `links[i][j]`: the proxy of link `i -> j` (`None` on the diagonal).
    links: Vec<Vec<Option<LinkProxy>>>,
    server_exe: PathBuf,
    dir: PathBuf,
    /// The client side of the nodes' TLS (`None`: plaintext).
    client_tls: Option<ClientTls>,
}

fn io_error(message: String) -> io::Error {
    io::Error::other(message)
}

impl FaultCluster {
    /// Writes the configs (peer addresses pointing at the proxies) and starts every node.
    ///
    /// # Errors
    /// Writing a config, starting a proxy or spawning a node failed.
    pub fn start(options: &ClusterOptions) -> io::Result<FaultCluster> {
        let count = options.nodes;
        let mut listeners = Vec::with_capacity(count * count);
        for _ in 0..count * count {
            listeners.push(TcpListener::bind("127.0.0.1:0")?);
        }
        let configs = write_local_configs(count, &options.dir)
            .map_err(|e| io_error(format!("write configs: {e}")))?;
        let nodes = configs.nodes;
        let mut links = Vec::with_capacity(count);
        let mut listeners = listeners.into_iter();
        for i in 0..count {
            let mut row = Vec::with_capacity(count);
            for (j, target) in nodes.iter().enumerate() {
                let listener = listeners
                    .next()
                    .ok_or_else(|| io_error("listener".into()))?;
                row.push(if i == j {
                    None
                } else {
                    Some(LinkProxy::start_on(listener, target.peer_addr)?)
                });
            }
            links.push(row);
        }
        for (i, node) in nodes.iter().enumerate() {
            let mut config = Config::load(&node.config_path)
                .map_err(|e| io_error(format!("load generated config: {e}")))?;
            config.raft.tick_ms = options.tick_ms;
            if let Some(entries) = options.snapshot_entries {
                config.snapshot.threshold_entries = entries;
                config.storage.segment_bytes = SEGMENT_BYTES_MIN;
            }
            for member in &mut config.members {
                let j = member.id as usize - 1;
                if let Some(proxy) = &links[i][j] {
                    member.peer_addr = proxy.addr();
                }
            }
            let text = config
                .to_toml()
                .map_err(|e| io_error(format!("render config: {e}")))?;
            std::fs::write(&node.config_path, text)?;
        }
        let client_tls = if options.tls {
            enable_tls(&nodes, &options.dir).map_err(|e| io_error(format!("enable TLS: {e}")))?;
            let ca = options.dir.join("certs").join("ca.pem");
            Some(ClientTls::load(&ca, None).map_err(|e| io_error(format!("load {e}")))?)
        } else {
            None
        };
        let mut cluster = FaultCluster {
            processes: nodes
                .iter()
                .map(|_| Process {
                    child: None,
                    state: NodeState::Down,
                })
                .collect(),
            nodes,
            _ports: configs.ports,
            links,
            server_exe: options.server_exe.clone(),
            dir: options.dir.clone(),
            client_tls,
        };
        for i in 0..cluster.len() {
            cluster.start_node(i)?;
        }
        Ok(cluster)
    }

    /// What clients of this cluster speak TLS with (`None`: plaintext).
    pub fn client_tls(&self) -> Option<&ClientTls> {
        self.client_tls.as_ref()
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether the cluster has no nodes (never, once started).
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The cluster directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The client addresses of every node.
    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.client_addr.to_string())
            .collect()
    }

    /// The log files of every node.
    pub fn log_paths(&self) -> Vec<PathBuf> {
        self.nodes.iter().map(|n| n.log_path.clone()).collect()
    }

    /// The state of node `i`.
    pub fn state(&self, i: usize) -> NodeState {
        self.processes[i].state
    }

    /// Starts node `i` if it is down.
    ///
    /// # Errors
    /// Opening its log or spawning the process failed.
    pub fn start_node(&mut self, i: usize) -> io::Result<()> {
        if self.processes[i].state != NodeState::Down {
            return Ok(());
        }
        let node = &self.nodes[i];
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)?;
        let child = Command::new(&self.server_exe)
            .arg("--config")
            .arg(&node.config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()?;
        self.processes[i] = Process {
            child: Some(child),
            state: NodeState::Up,
        };
        Ok(())
    }

    /// kill -9 of node `i` (waits for it to be gone).
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.processes[i].child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.processes[i].state = NodeState::Down;
    }

    /// SIGSTOP (`pause = true`) or SIGCONT of node `i`, if it is running.
    pub fn pause(&mut self, i: usize, pause: bool) {
        let Some(child) = &self.processes[i].child else {
            return;
        };
        let Ok(pid) = libc::pid_t::try_from(child.id()) else {
            return;
        };
        let signal = if pause { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) with a pid we spawned and still own (not yet waited for).
        let sent = unsafe { libc::kill(pid, signal) } == 0;
        if sent {
            self.processes[i].state = if pause {
                NodeState::Paused
            } else {
                NodeState::Up
            };
        }
    }

    /// Nodes believed running whose process has exited on its own (a crash), each with
    /// its exit status and the last line of its log; they are marked down.
    pub fn crashed(&mut self) -> Vec<String> {
        let mut crashed = Vec::new();
        for (i, process) in self.processes.iter_mut().enumerate() {
            if process.state == NodeState::Down {
                continue;
            }
            if let Some(child) = &mut process.child
                && let Ok(Some(status)) = child.try_wait()
            {
                let last_line = std::fs::read_to_string(&self.nodes[i].log_path)
                    .ok()
                    .and_then(|log| log.lines().last().map(str::to_string))
                    .unwrap_or_default();
                crashed.push(format!(
                    "n{} exited on its own ({status}); last log line: {last_line}",
                    i + 1
                ));
                process.child = None;
                process.state = NodeState::Down;
            }
        }
        crashed
    }

    /// Sets the mode of link `from -> to`.
    pub fn set_link(&self, from: usize, to: usize, mode: LinkMode) {
        if let Some(proxy) = &self.links[from][to] {
            proxy.set_mode(mode);
        }
    }

    /// Every link back to [`LinkMode::Pass`], every paused node continued, every killed
    /// node restarted.
    ///
    /// # Errors
    /// Restarting a node failed.
    pub fn heal(&mut self) -> io::Result<()> {
        for i in 0..self.len() {
            for j in 0..self.len() {
                self.set_link(i, j, LinkMode::Pass);
            }
            match self.processes[i].state {
                NodeState::Paused => self.pause(i, false),
                NodeState::Down => self.start_node(i)?,
                NodeState::Up => {}
            }
        }
        Ok(())
    }

    /// Node `i`'s status, if it answers within `timeout`.
    pub fn status(&self, i: usize, timeout: Duration) -> Option<Status> {
        if self.processes[i].state != NodeState::Up {
            return None;
        }
        let options = ClientOptions {
            request_timeout: timeout,
            connect_timeout: timeout,
            tls: self.client_tls.clone(),
            ..ClientOptions::default()
        };
        status_at(&self.nodes[i].client_addr.to_string(), &options).ok()
    }

    /// The running node that says it leads (highest term wins), if any.
    pub fn leader(&self) -> Option<usize> {
        (0..self.len())
            .filter_map(|i| self.status(i, Duration::from_millis(300)).map(|s| (i, s)))
            .filter(|(_, s)| s.leader_id == s.node_id)
            .max_by_key(|(_, s)| s.term)
            .map(|(i, _)| i)
    }

    /// Waits up to `timeout` for a leader.
    pub fn wait_leader(&self, timeout: Duration) -> Option<usize> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(leader) = self.leader() {
                return Some(leader);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for FaultCluster {
    fn drop(&mut self) {
        for i in 0..self.len() {
            self.kill(i);
        }
    }
}
