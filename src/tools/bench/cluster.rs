//! `raftkv-bench --spawn N`: a throwaway local cluster of `raftkv-server` child processes
//! for one benchmark run.
//!
//! The configs come from [`write_local_configs`] (leased loopback ports, the embedded
//! default config) with the requested fsync mode patched in, and with `--tls` TLS on
//! every port and link (`enable_tls`, certificates in the cluster directory). The server binary is the
//! `raftkv-server` next to the running executable (both are built into the same
//! `target/` directory). Dropping the [`SpawnedCluster`] stops every child (SIGTERM, then
//! SIGKILL after a grace period) and removes the directory if the bench created it.

use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::config::Config;
use crate::server::local::{LocalNode, enable_tls, spawn_node, stop_children, write_local_configs};
use crate::server::ports::PortLease;
use crate::storage::FsyncMode;

use super::BenchError;
use super::cpu::MeteredNode;

/// Time between SIGTERM and SIGKILL when stopping the children.
const STOP_GRACE: Duration = Duration::from_secs(3);

/// A running local cluster owned by the benchmark.
#[derive(Debug)]
pub struct SpawnedCluster {
    nodes: Vec<LocalNode>,
    /// Held while the nodes run, so no other raftkv process is handed their ports.
    _ports: Vec<PortLease>,
    children: Vec<Child>,
    dir: PathBuf,
    /// Whether `dir` was created by us (then removed on drop).
    remove_dir: bool,
    /// The nodes speak TLS (certificates in `dir/certs`).
    tls: bool,
}

impl SpawnedCluster {
    /// Writes the configs of `nodes` nodes into `dir` (default: a fresh directory under
    /// the temp dir), with `fsync`, and starts one `server_exe --config FILE` per node.
    ///
    /// # Errors
    /// [`BenchError`] if a config cannot be written or a process cannot be started; the
    /// nodes already started are stopped.
    pub fn start(
        nodes: usize,
        dir: Option<&Path>,
        fsync: FsyncMode,
        server_exe: &Path,
        tls: bool,
    ) -> Result<SpawnedCluster, BenchError> {
        let (dir, remove_dir) = match dir {
            Some(dir) => (dir.to_path_buf(), false),
            None => {
                let dir = std::env::temp_dir().join(format!("raftkv-bench-{}", std::process::id()));
                (dir, true)
            }
        };
        let configs = write_local_configs(nodes, &dir)?;
        let mut cluster = SpawnedCluster {
            nodes: configs.nodes,
            _ports: configs.ports,
            children: Vec::new(),
            dir,
            remove_dir,
            tls,
        };
        for node in &cluster.nodes {
            set_fsync(&node.config_path, fsync)?;
        }
        if tls {
            enable_tls(&cluster.nodes, &cluster.dir)?;
        }
        for index in 0..cluster.nodes.len() {
            let child = spawn_node(&cluster.nodes[index], server_exe)?;
            cluster.children.push(child);
        }
        Ok(cluster)
    }

    /// The client addresses of the nodes.
    pub fn client_addrs(&self) -> Vec<String> {
        self.nodes
            .iter()
            .map(|node| node.client_addr.to_string())
            .collect()
    }

    /// Each node's id and process id, for the CPU meter.
    pub fn processes(&self) -> Vec<MeteredNode> {
        self.nodes
            .iter()
            .zip(&self.children)
            .map(|(node, child)| MeteredNode {
                id: node.id,
                pid: child.id(),
            })
            .collect()
    }

    /// The CA of the cluster's certificates, when its ports speak TLS.
    pub fn ca_file(&self) -> Option<PathBuf> {
        self.tls.then(|| self.dir.join("certs").join("ca.pem"))
    }

    /// The directory holding configs, data and logs.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// An error naming the first node that exited on its own, if any.
    pub fn check_running(&mut self) -> Result<(), BenchError> {
        for (node, child) in self.nodes.iter().zip(self.children.iter_mut()) {
            if let Ok(Some(status)) = child.try_wait() {
                return Err(BenchError::NodeExited {
                    id: node.id,
                    status: status.to_string(),
                    log: node.log_path.clone(),
                });
            }
        }
        Ok(())
    }
}

impl Drop for SpawnedCluster {
    fn drop(&mut self) {
        stop_children(&mut self.children, STOP_GRACE);
        if self.remove_dir {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Rewrites the config at `path` with `fsync`.
fn set_fsync(path: &Path, fsync: FsyncMode) -> Result<(), BenchError> {
    let mut config = Config::load(path)?;
    config.storage.fsync = fsync;
    let text = config
        .to_toml()
        .map_err(|error| BenchError::Usage(format!("render {}: {error}", path.display())))?;
    std::fs::write(path, text).map_err(|source| BenchError::Io {
        what: format!("write {}", path.display()),
        source,
    })
}
