//! A real multi-process cluster for integration tests: `raftkv-server` processes on
//! loopback ports leased outside the ephemeral range (`raftkv::server::ports`, so a node
//! restarted after a kill binds its port again) with their data in a temp dir, killed
//! when the value drops.

#![allow(dead_code)]

pub mod http;
pub mod resp;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

use raftkv::client::{Client, ClientOptions};
use raftkv::config::{Config, Member};
use raftkv::server::local::{LocalNode, write_local_configs};
use raftkv::server::ports::{PortLease, lease_loopback_ports};

/// A cluster of real server processes.
pub struct Cluster {
    pub dir: tempfile::TempDir,
    pub nodes: Vec<LocalNode>,
    /// The leases of every node's ports, held while the cluster lives.
    ports: Vec<PortLease>,
    children: Vec<Option<Child>>,
    /// The `--join` address each node is started with, if any.
    join: Vec<Option<String>>,
}

impl Cluster {
    /// Writes configs for `count` nodes, lets `adjust` change each, and starts them all.
    pub fn start(count: usize, adjust: impl Fn(&mut Config)) -> Cluster {
        let mut cluster = Cluster::configure(count, adjust);
        for i in 0..count {
            cluster.start_node(i);
        }
        cluster
    }

    /// Writes configs for `count` nodes and lets `adjust` change each; starts none (the
    /// caller prepares their data directories first, then calls `start_node`).
    pub fn configure(count: usize, adjust: impl Fn(&mut Config)) -> Cluster {
        let dir = tempfile::tempdir().expect("temp dir");
        let configs = write_local_configs(count, dir.path()).expect("configs");
        let nodes = configs.nodes;
        for node in &nodes {
            let mut config = Config::load(&node.config_path).expect("generated config loads");
            adjust(&mut config);
            std::fs::write(&node.config_path, config.to_toml().expect("toml"))
                .expect("write config");
        }
        Cluster {
            dir,
            children: nodes.iter().map(|_| None).collect(),
            join: nodes.iter().map(|_| None).collect(),
            nodes,
            ports: configs.ports,
        }
    }

    /// Starts node `i` (0-based) again.
    pub fn start_node(&mut self, i: usize) {
        assert!(self.children[i].is_none(), "node {i} is already running");
        let node = &self.nodes[i];
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&node.log_path)
            .expect("log file");
        let mut command = Command::new(env!("CARGO_BIN_EXE_raftkv-server"));
        command.arg("--config").arg(&node.config_path);
        if let Some(addr) = &self.join[i] {
            command.arg("--join").arg(addr);
        }
        let child = command
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn raftkv-server");
        self.children[i] = Some(child);
    }

    /// Writes the config of a new node (next id, newly leased loopback ports, the cluster's
    /// id and tunables, itself as its only member) and starts it with `--join` to
    /// node `via`; returns its index. It waits until a leader adds it.
    pub fn start_joining_node(&mut self, via: usize) -> usize {
        let template = Config::load(&self.nodes[0].config_path).expect("config");
        let id = self.nodes.iter().map(|n| n.id).max().unwrap_or(0) + 1;
        let leases = lease_loopback_ports(4).expect("free ports");
        let ports: Vec<SocketAddr> = leases.iter().map(PortLease::addr).collect();
        self.ports.extend(leases);
        let dir = self.dir.path();
        let config = Config {
            node_id: id,
            data_dir: dir.join(format!("node-{id}")),
            listen_peer: ports[0],
            listen_client: ports[1],
            listen_redis: Some(ports[2]),
            listen_http: Some(ports[3]),
            members: vec![Member {
                id,
                peer_addr: ports[0],
                client_addr: ports[1],
            }],
            ..template
        };
        let config_path = dir.join(format!("node-{id}.toml"));
        std::fs::write(&config_path, config.to_toml().expect("toml")).expect("write config");
        self.nodes.push(LocalNode {
            id,
            config_path,
            log_path: dir.join(format!("node-{id}.log")),
            client_addr: ports[1],
            peer_addr: ports[0],
            redis_addr: ports[2],
            http_addr: Some(ports[3]),
        });
        self.children.push(None);
        self.join.push(Some(self.addr(via)));
        let i = self.nodes.len() - 1;
        self.start_node(i);
        i
    }

    /// Waits up to `timeout` for node `i` to exit on its own; its exit status.
    pub fn wait_exit(&mut self, i: usize, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.children[i].as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.children[i] = None;
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            sleep(Duration::from_millis(20));
        }
    }

    /// The process id of node `i`, while it runs.
    pub fn pid(&self, i: usize) -> Option<u32> {
        self.children[i].as_ref().map(Child::id)
    }

    /// The server log of node `i` so far.
    pub fn log_text(&self, i: usize) -> String {
        std::fs::read_to_string(&self.nodes[i].log_path).unwrap_or_default()
    }

    /// kill -9 of node `i`.
    pub fn kill(&mut self, i: usize) {
        if let Some(mut child) = self.children[i].take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`pause`) or SIGCONT of node `i`: a stopped node keeps its sockets
    /// (connects to it still complete) but answers nothing.
    pub fn pause(&self, i: usize, pause: bool) {
        let Some(child) = &self.children[i] else {
            return;
        };
        let pid = libc::pid_t::try_from(child.id()).expect("pid fits");
        let signal = if pause { libc::SIGSTOP } else { libc::SIGCONT };
        // SAFETY: kill(2) of a child we spawned and have not waited for.
        let sent = unsafe { libc::kill(pid, signal) };
        assert_eq!(sent, 0, "kill({pid}, {signal})");
    }

    /// The data directory of node `i`.
    pub fn data_dir(&self, i: usize) -> PathBuf {
        let config = Config::load(&self.nodes[i].config_path).expect("config");
        config.data_dir
    }

    pub fn addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|n| n.client_addr.to_string())
            .collect()
    }

    pub fn addr(&self, i: usize) -> String {
        self.nodes[i].client_addr.to_string()
    }

    pub fn client(&self) -> Client {
        Client::connect(&self.addrs(), options()).expect("client")
    }

    /// Index (0-based) of the current leader, waiting up to 10 s for one.
    pub fn leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            for (i, addr) in self.addrs().iter().enumerate() {
                if self.children[i].is_none() {
                    continue;
                }
                if let Ok(status) = raftkv::client::status_at(addr, &options())
                    && status.leader_id == status.node_id
                {
                    return i;
                }
            }
            assert!(Instant::now() < deadline, "no leader within 10 s");
            sleep(Duration::from_millis(20));
        }
    }

    /// Waits until node `i` has applied at least `index`.
    pub fn wait_applied(&self, i: usize, index: u64) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Ok(status) = raftkv::client::status_at(&self.addr(i), &options())
                && status.applied_index >= index
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} did not apply {index} within 20 s"
            );
            sleep(Duration::from_millis(20));
        }
    }

    /// The applied index of node `i`.
    pub fn applied(&self, i: usize) -> u64 {
        raftkv::client::status_at(&self.addr(i), &options())
            .expect("status")
            .applied_index
    }

    /// A stale read served by node `i` itself.
    pub fn read_at(&self, i: usize, key: &[u8]) -> Option<Vec<u8>> {
        let mut client = Client::connect(&[self.addr(i)], options()).expect("client");
        client.get_stale(key).expect("stale read")
    }
}

impl Drop for Cluster {
    /// Kills every node; when a test failed, keeps the directory (configs, data,
    /// node logs) and prints where it is.
    fn drop(&mut self) {
        for i in 0..self.children.len() {
            self.kill(i);
        }
        if std::thread::panicking()
            && let Ok(spare) = tempfile::tempdir()
        {
            let dir = std::mem::replace(&mut self.dir, spare).keep();
            eprintln!("cluster directory kept for inspection: {}", dir.display());
        }
    }
}

pub fn options() -> ClientOptions {
    ClientOptions {
        request_timeout: Duration::from_secs(10),
        ..ClientOptions::default()
    }
}

/// Index in `addrs` of the node that says it leads, waiting up to 10 s for one.
pub fn leader_of(addrs: &[String]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (i, addr) in addrs.iter().enumerate() {
            if let Ok(status) = raftkv::client::status_at(addr, &options())
                && status.leader_id == status.node_id
            {
                return i;
            }
        }
        assert!(Instant::now() < deadline, "no leader within 10 s");
        sleep(Duration::from_millis(20));
    }
}

/// Retries `f` until it succeeds, for at most 15 s (a fresh cluster may still be
/// electing; the Redis port answers TRYAGAIN meanwhile).
pub fn eventually<T, E: std::fmt::Display>(mut f: impl FnMut() -> Result<T, E>) -> T {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        match f() {
            Ok(value) => return value,
            Err(e) => {
                assert!(Instant::now() < deadline, "still failing after 15 s: {e}");
                sleep(Duration::from_millis(50));
            }
        }
    }
}
