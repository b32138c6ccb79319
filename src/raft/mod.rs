//! The consensus core: a pure Raft state machine with no IO, no clock and no
//! threads, so that a deterministic simulation can drive it. The driver
//! contract is documented on [`raw_node`].

pub mod core;
pub mod error;
pub mod log;
pub mod message;
pub mod progress;
pub mod quorum;
pub mod raw_node;
pub mod read_only;
pub mod rng;
pub mod store;

pub use self::core::{Config, Role};
pub use error::{Error, StoreError};
pub use message::{
    ConfigChange, Configuration, Entry, EntryKind, HardState, Message, MessageBody, NO_NODE,
    NodeId, Snapshot, SnapshotChunk, SnapshotMeta,
};
pub use raw_node::{MemberState, PeerStatus, RawNode, Ready, Status};
pub use read_only::ReadState;
pub use store::{InitialState, LogStore, MemStore};

#[cfg(test)]
mod boundary_tests;
#[cfg(test)]
mod membership_tests;
#[cfg(test)]
mod network;
#[cfg(test)]
mod scenario_tests;
