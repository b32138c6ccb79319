//! `raftkv-log snapshot-restore`: turns a snapshot file into the data directory of one
//! node of a NEW cluster whose state machine starts from the image (as `etcdutl
//! snapshot restore` does). Each node of the new cluster gets its own restore, with
//! the same image, cluster id and members and its own node id.
//!
//! Invariants: the image is verified (crc over the whole file) before anything is
//! written, and a corrupt file is refused naming the file and the byte offset; a
//! non-empty data directory is refused, never overwritten. The directory written holds
//! the snapshot (same index, term and data; its membership replaced by the given
//! members), a log reset to that snapshot, a hard state at the snapshot's term with no
//! vote, `BOOTSTRAP` (the members) and `IDENTITY` (cluster and node id), so a node
//! started on it opens it as its own, consistent state.

use std::net::SocketAddr;
use std::path::Path;

use crate::raft::{Configuration, HardState, NO_NODE};
use crate::replica::members::MemberAddrs;
use crate::storage::identity::{self, Identity};
use crate::storage::{Wal, WalOptions, hard_state, snapshot};

/// One member of the new cluster: `ID=PEER_ADDR,CLIENT_ADDR`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreMember {
    /// The member's node id.
    pub id: u64,
    /// Its addresses.
    pub addrs: MemberAddrs,
}

impl std::str::FromStr for RestoreMember {
    type Err = String;

    fn from_str(text: &str) -> Result<RestoreMember, String> {
        let usage = || format!("member {text:?}: expected ID=PEER_ADDR,CLIENT_ADDR");
        let (id, addrs) = text.split_once('=').ok_or_else(usage)?;
        let (peer, client) = addrs.split_once(',').ok_or_else(usage)?;
        let id = id.parse::<u64>().map_err(|_| usage())?;
        let peer = peer.parse::<SocketAddr>().map_err(|_| usage())?;
        let client = client.parse::<SocketAddr>().map_err(|_| usage())?;
        Ok(RestoreMember {
            id,
            addrs: MemberAddrs { peer, client },
        })
    }
}

/// What a restore wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Restored {
    /// Index the new cluster's log starts after.
    pub index: u64,
    /// Term of that index (the new nodes' starting term).
    pub term: u64,
    /// Bytes of state machine data.
    pub data_bytes: u64,
}

/// Restores `file` into the empty (or absent) `data_dir` as node `node_id` of cluster
/// `cluster_id` made of `members`.
///
/// # Errors
/// A message naming the problem: a corrupt or unreadable file (with its offset), a
/// non-empty data directory, `node_id` not among `members`, IO errors.
pub fn restore(
    file: &Path,
    data_dir: &Path,
    node_id: u64,
    cluster_id: u64,
    members: &[RestoreMember],
) -> Result<Restored, String> {
    if !members.iter().any(|m| m.id == node_id) {
        return Err(format!("node id {node_id} is not among the --member ids"));
    }
    if let Ok(mut entries) = std::fs::read_dir(data_dir)
        && entries.next().is_some()
    {
        return Err(format!(
            "{}: data directory is not empty; restore writes a new node's directory only",
            data_dir.display()
        ));
    }
    let image = snapshot::open(file.to_path_buf()).map_err(|e| e.to_string())?;
    let config = members.iter().fold(
        Configuration::new(members.iter().map(|m| m.id), []),
        |config, m| config.with_info(m.id, m.addrs.encode()),
    );
    let snapshot_dir = data_dir.join("snapshots");
    std::fs::create_dir_all(&snapshot_dir)
        .map_err(|e| format!("{}: {e}", snapshot_dir.display()))?;
    let (index, term) = (image.index, image.term);
    let meta = config.encode();
    snapshot::save_with(&snapshot_dir, index, term, &meta, |out| {
        std::io::copy(&mut image.image.reader(), out).map(|_| ())
    })
    .map_err(|e| e.to_string())?;
    let wal_dir = data_dir.join("wal");
    let mut wal = Wal::open(&wal_dir, WalOptions::default()).map_err(|e| e.to_string())?;
    wal.reset_to_snapshot(index, term)
        .map_err(|e| e.to_string())?;
    let state = HardState {
        term,
        vote: NO_NODE,
        commit: index,
    };
    wal.save_hard_state(&state).map_err(|e| e.to_string())?;
    wal.sync().map_err(|e| e.to_string())?;
    drop(wal);
    hard_state::write_durably(data_dir, "BOOTSTRAP", "BOOTSTRAP.tmp", &meta)
        .map_err(|e| e.to_string())?;
    identity::save(
        data_dir,
        Identity {
            cluster_id,
            node_id,
        },
    )
    .map_err(|e| e.to_string())?;
    Ok(Restored {
        index,
        term,
        data_bytes: image.image.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::LogStore;
    use crate::server::wal_store::WalStore;

    fn members() -> Vec<RestoreMember> {
        [
            "1=127.0.0.1:7001,127.0.0.1:8001",
            "2=127.0.0.1:7002,127.0.0.1:8002",
        ]
        .iter()
        .map(|m| m.parse().unwrap())
        .collect()
    }

    /// Goal: a restored directory opens as the new node's own store at the image's
    /// index and term with the new members; a corrupt image (named with its offset) and
    /// a non-empty directory are refused.
    #[test]
    fn restore_writes_an_openable_directory_and_refuses_bad_input() {
        let tmp = tempfile::tempdir().unwrap();
        let source = tmp.path().join("source");
        std::fs::create_dir_all(&source).unwrap();
        let old = Configuration::new([9], []).encode();
        let saved = snapshot::save(&source, 40, 3, &old, b"state machine bytes").unwrap();
        let file = saved.image.path().to_path_buf();
        let dir = tmp.path().join("node2");
        let done = restore(&file, &dir, 2, 77, &members()).unwrap();
        assert_eq!((done.index, done.term, done.data_bytes), (40, 3, 19));
        let identity = Identity {
            cluster_id: 77,
            node_id: 2,
        };
        let store = WalStore::open(
            &dir,
            WalOptions::default(),
            Configuration::default(),
            identity,
        )
        .unwrap();
        assert_eq!(store.last_index(), 40);
        assert_eq!(store.term(40).unwrap(), 3);
        let reopened = snapshot::open_latest(&dir.join("snapshots"))
            .unwrap()
            .unwrap();
        assert_eq!(
            Configuration::decode(&reopened.meta).unwrap().voters,
            vec![1, 2]
        );
        assert_eq!(
            reopened.image.read_at(0, 100).unwrap(),
            b"state machine bytes"
        );
        let err = restore(&file, &dir, 2, 77, &members()).unwrap_err();
        assert!(err.contains("not empty"), "{err}");
        let mut bytes = std::fs::read(&file).unwrap();
        let at = bytes.len() - 8;
        bytes[at] ^= 0xff;
        let bad = tmp.path().join("bad.snap");
        std::fs::write(&bad, bytes).unwrap();
        let err = restore(&bad, &tmp.path().join("node3"), 2, 77, &members()).unwrap_err();
        assert!(err.contains("bad.snap") && err.contains("offset"), "{err}");
        assert!(restore(&file, &tmp.path().join("x"), 5, 77, &members()).is_err());
    }
}
