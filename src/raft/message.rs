//! Plain data types exchanged between the consensus core, the log storage and
//! the network codecs. No encoding lives here: codecs and storage own theirs.

/// A node identifier. `0` is reserved for "none" (no vote, no known leader).
pub type NodeId = u64;

/// The id meaning "no node" (no vote cast, no leader known).
pub const NO_NODE: NodeId = 0;

/// What an entry carries. The numeric values are written to disk and to the
/// wire; `0` is deliberately unused so that zeroed bytes never decode as an
/// entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum EntryKind {
    /// An application command, opaque to Raft (a kv command).
    Normal = 1,
    /// The empty entry a new leader appends to commit entries of earlier terms.
    Noop = 2,
    /// A cluster configuration (membership) change.
    Config = 3,
}

impl EntryKind {
    /// Decodes the on-disk / on-wire byte; `None` for an unknown kind.
    pub fn from_u8(byte: u8) -> Option<EntryKind> {
        match byte {
            1 => Some(EntryKind::Normal),
            2 => Some(EntryKind::Noop),
            3 => Some(EntryKind::Config),
            _ => None,
        }
    }

    /// A short lowercase name for tools and logs.
    pub fn name(self) -> &'static str {
        match self {
            EntryKind::Normal => "normal",
            EntryKind::Noop => "noop",
            EntryKind::Config => "config",
        }
    }
}

/// One log entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Position in the log, starting at 1.
    pub index: u64,
    /// Term of the leader that created the entry.
    pub term: u64,
    /// What the payload is.
    pub kind: EntryKind,
    /// The payload (a kv command for `Normal`, an encoded configuration for `Config`).
    pub data: Vec<u8>,
}

/// The state Raft must persist before answering a vote or an append
/// (Figure 2, "persistent state on all servers"), plus the commit index.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HardState {
    /// Latest term this node has seen.
    pub term: u64,
    /// Candidate voted for in `term`, or [`NO_NODE`].
    pub vote: NodeId,
    /// Highest index known to be committed.
    pub commit: u64,
}
