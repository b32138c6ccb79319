//! Plain data types exchanged between the consensus core, the log storage and
//! the network codecs. No wire encoding lives here: codecs and storage own theirs;
//! the one exception is [`Configuration::encode`], the payload of `Config` entries,
//! which the core itself writes into the log.

use std::collections::BTreeMap;
use std::sync::Arc;

use crate::wire::{DecodeError, Reader, len_u32, put_bytes, put_u32, put_u64};

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
    ///
    /// Shared, not owned: cloning an entry (into the `Ready`, into each follower's
    /// append, into the committed entries) bumps a reference count instead of
    /// copying the bytes. Build it from a `Vec<u8>` with `.into()`.
    pub data: Arc<[u8]>,
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

/// A cluster membership: the voters (who elect and form quorums) and the
/// learners (who receive the log but neither vote nor count for commit), with
/// opaque per-member data the driver attached when adding them (raftkv stores
/// each member's peer and client addresses there, so they travel with the
/// configuration in the log and in snapshots).
///
/// Invariant: both lists are sorted, free of duplicates and of [`NO_NODE`], and
/// no id is in both; `member_info` has keys of members only and no empty value.
/// Build it with [`Configuration::new`] and [`Configuration::with_info`].
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct Configuration {
    /// Voting members, sorted ascending.
    pub voters: Vec<NodeId>,
    /// Non-voting members, sorted ascending.
    pub learners: Vec<NodeId>,
    /// Driver data per member, opaque to Raft.
    pub member_info: BTreeMap<NodeId, Vec<u8>>,
}

/// A single-server membership change (Raft thesis section 4.1: one server at a
/// time, effective as soon as the entry is appended).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ConfigChange {
    /// Add a new voting member.
    AddVoter(NodeId),
    /// Add a new learner (it catches up without affecting quorums).
    AddLearner(NodeId),
    /// Turn an existing learner into a voter.
    PromoteLearner(NodeId),
    /// Remove a voter or a learner.
    RemoveNode(NodeId),
}

/// A point-in-time image of the state machine, replacing the log up to `meta.index`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Snapshot {
    /// Where the image sits in the log and which membership was in force there.
    pub meta: SnapshotMeta,
    /// The state machine image, opaque to Raft.
    pub data: Vec<u8>,
}

/// What Raft needs to know about a snapshot besides its bytes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotMeta {
    /// Index of the last entry the snapshot covers.
    pub index: u64,
    /// Term of that entry.
    pub term: u64,
    /// The membership in force at `index`.
    pub config: Configuration,
}

/// One message between two Raft nodes.
///
/// `term` is the sender's current term, except for [`MessageBody::PreVote`],
/// which carries the term the sender *would* campaign in (its term + 1) without
/// having adopted it (Raft thesis section 9.6), and [`MessageBody::PreVoteResponse`],
/// which echoes the request's term when granted. [`MessageBody::ReadIndex`] and
/// [`MessageBody::ReadIndexResponse`] carry `term` like every other message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Sender.
    pub from: NodeId,
    /// Recipient.
    pub to: NodeId,
    /// See the type documentation.
    pub term: u64,
    /// The kind-specific content.
    pub body: MessageBody,
}

/// The content of a [`Message`], one variant per kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MessageBody {
    /// "Would you vote for me?" sent before a real election, without bumping
    /// terms, so a partitioned node cannot disrupt a working leader (thesis 9.6).
    PreVote(VoteRequest),
    /// Answer to [`MessageBody::PreVote`].
    PreVoteResponse(VoteResponse),
    /// RequestVote RPC (Figure 2).
    Vote(VoteRequest),
    /// Answer to [`MessageBody::Vote`].
    VoteResponse(VoteResponse),
    /// AppendEntries RPC carrying entries (Figure 2).
    Append(AppendRequest),
    /// Answer to [`MessageBody::Append`].
    AppendResponse(AppendResponse),
    /// Empty AppendEntries: asserts leadership, carries the commit index and
    /// optionally a ReadIndex round.
    Heartbeat(Heartbeat),
    /// Answer to [`MessageBody::Heartbeat`].
    HeartbeatResponse(HeartbeatResponse),
    /// One chunk of an InstallSnapshot transfer (Figure 13).
    InstallSnapshot(SnapshotChunk),
    /// Answer to [`MessageBody::InstallSnapshot`].
    InstallSnapshotResponse(SnapshotResponse),
    /// Leadership transfer: "start an election now, ignoring your timer"
    /// (thesis section 3.10).
    TimeoutNow,
    /// A follower forwards a client's ReadIndex request to the leader.
    ReadIndex(ReadIndexRequest),
    /// The leader's answer to a forwarded ReadIndex request.
    ReadIndexResponse(ReadIndexResponse),
}

/// Body of [`MessageBody::PreVote`] and [`MessageBody::Vote`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteRequest {
    /// Index of the candidate's last log entry (the up-to-date check, section 5.4.1).
    pub last_log_index: u64,
    /// Term of the candidate's last log entry.
    pub last_log_term: u64,
    /// Set when the election follows a TimeoutNow, so voters skip the
    /// "I have a live leader" check (thesis section 4.2.3).
    pub leadership_transfer: bool,
}

/// Body of [`MessageBody::PreVoteResponse`] and [`MessageBody::VoteResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VoteResponse {
    /// Whether the vote (or pre-vote) is granted.
    pub granted: bool,
}

/// Body of [`MessageBody::Append`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendRequest {
    /// Index of the entry just before `entries`.
    pub prev_log_index: u64,
    /// Term of that entry.
    pub prev_log_term: u64,
    /// Entries to store, consecutive from `prev_log_index + 1`; may be empty (a probe).
    pub entries: Vec<Entry>,
    /// The leader's commit index.
    pub commit: u64,
}

/// Body of [`MessageBody::AppendResponse`].
///
/// On success, `index` is the last index the follower now knows matches the
/// leader's log. On rejection, `index` is the rejected `prev_log_index` and
/// (`conflict_term`, `conflict_index`) is the fast-backtracking hint (section 5.3,
/// etcd's "find conflict by term"): the follower's last entry at or below
/// `min(prev_log_index, its last index)` whose term is at most `prev_log_term`,
/// as (term, index); `conflict_term` is 0 when that term is unknown (compacted).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AppendResponse {
    /// True when the follower's log did not contain `prev_log_index/term`.
    pub reject: bool,
    /// See the type documentation.
    pub index: u64,
    /// Rejection hint: the term of the follower's entry at `conflict_index` (0 if unknown).
    pub conflict_term: u64,
    /// Rejection hint: the highest index that may still match the leader's log.
    pub conflict_index: u64,
}

/// Body of [`MessageBody::Heartbeat`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Heartbeat {
    /// `min(leader commit, follower match)`: never more than the follower is
    /// known to hold, so the follower can commit without checking its log.
    pub commit: u64,
    /// ReadIndex round number this heartbeat confirms, or 0 for none.
    pub context: u64,
}

/// Body of [`MessageBody::HeartbeatResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatResponse {
    /// Echo of [`Heartbeat::context`].
    pub context: u64,
}

/// Body of [`MessageBody::InstallSnapshot`]: the bytes `[offset, offset + data.len())`
/// of the snapshot described by `meta`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotChunk {
    /// The snapshot being sent (repeated in every chunk so any chunk is self-describing).
    pub meta: SnapshotMeta,
    /// Byte offset of `data` within the snapshot data.
    pub offset: u64,
    /// The chunk's bytes.
    pub data: Vec<u8>,
    /// True on the last chunk.
    pub done: bool,
}

/// Body of [`MessageBody::InstallSnapshotResponse`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SnapshotResponse {
    /// `meta.index` of the snapshot this answers.
    pub index: u64,
    /// Bytes of that snapshot the follower holds contiguously from offset 0: the
    /// offset the leader sends next (a lost chunk is resent from here).
    pub offset: u64,
    /// True when the follower installed the snapshot (or already had its content).
    pub done: bool,
}

/// Body of [`MessageBody::ReadIndex`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadIndexRequest {
    /// The caller's opaque request id, returned in the matching `ReadState`.
    pub context: Vec<u8>,
}

/// Body of [`MessageBody::ReadIndexResponse`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadIndexResponse {
    /// Echo of [`ReadIndexRequest::context`].
    pub context: Vec<u8>,
    /// The commit index the read must wait to have applied.
    pub index: u64,
}

/// Version byte of the [`Configuration`] encoding without member info.
const CONFIG_ENCODING_VERSION: u8 = 1;
/// Version byte of the [`Configuration`] encoding with member info.
const CONFIG_ENCODING_VERSION_INFO: u8 = 2;
/// Upper bound on one member's info bytes accepted when decoding.
pub const MEMBER_INFO_BYTES_MAX: usize = 4096;

/// Upper bound on members accepted when decoding, so a corrupt length cannot
/// make the decoder allocate without limit.
const CONFIG_MEMBERS_MAX: usize = 1024;

impl Configuration {
    /// A configuration with the given members, normalised (sorted, deduplicated,
    /// [`NO_NODE`] dropped, a voter listed as learner too stays a voter only).
    pub fn new(
        voters: impl IntoIterator<Item = NodeId>,
        learners: impl IntoIterator<Item = NodeId>,
    ) -> Configuration {
        let mut voters: Vec<NodeId> = voters.into_iter().filter(|&id| id != NO_NODE).collect();
        voters.sort_unstable();
        voters.dedup();
        let mut learners: Vec<NodeId> = learners
            .into_iter()
            .filter(|&id| id != NO_NODE && voters.binary_search(&id).is_err())
            .collect();
        learners.sort_unstable();
        learners.dedup();
        Configuration {
            voters,
            learners,
            member_info: BTreeMap::new(),
        }
    }

    /// The same configuration with `info` attached to member `id` (replacing what
    /// it had; an empty `info` removes it). Ignored for an id that is not a member.
    pub fn with_info(mut self, id: NodeId, info: Vec<u8>) -> Configuration {
        if info.is_empty() {
            self.member_info.remove(&id);
        } else if self.contains(id) {
            self.member_info.insert(id, info);
        }
        self
    }

    /// The info attached to member `id`, if any.
    pub fn info(&self, id: NodeId) -> Option<&[u8]> {
        self.member_info.get(&id).map(Vec::as_slice)
    }

    /// Whether `id` is a voter.
    pub fn is_voter(&self, id: NodeId) -> bool {
        self.voters.binary_search(&id).is_ok()
    }

    /// Whether `id` is a learner.
    pub fn is_learner(&self, id: NodeId) -> bool {
        self.learners.binary_search(&id).is_ok()
    }

    /// Whether `id` is a voter or a learner.
    pub fn contains(&self, id: NodeId) -> bool {
        self.is_voter(id) || self.is_learner(id)
    }

    /// Every member, voters first.
    pub fn members(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.voters.iter().chain(self.learners.iter()).copied()
    }

    /// The configuration after `change`, or `None` when the change does not
    /// apply (adding a present member, promoting a non-learner, removing an
    /// absent member, removing the last voter, or [`NO_NODE`]). The info of the
    /// members that stay is kept; a removed member's goes with it.
    pub fn apply(&self, change: ConfigChange) -> Option<Configuration> {
        let (voters, learners) = (self.voters.iter().copied(), self.learners.iter().copied());
        let next = match change {
            ConfigChange::AddVoter(id) if id != NO_NODE && !self.contains(id) => {
                Configuration::new(voters.chain([id]), learners)
            }
            ConfigChange::AddLearner(id) if id != NO_NODE && !self.contains(id) => {
                Configuration::new(voters, learners.chain([id]))
            }
            ConfigChange::PromoteLearner(id) if self.is_learner(id) => {
                Configuration::new(voters.chain([id]), learners.filter(|&l| l != id))
            }
            ConfigChange::RemoveNode(id) if self.contains(id) => {
                Configuration::new(voters.filter(|&v| v != id), learners.filter(|&l| l != id))
            }
            _ => return None,
        };
        let mut next = next;
        next.member_info = self
            .member_info
            .iter()
            .filter(|(id, _)| next.contains(**id))
            .map(|(id, info)| (*id, info.clone()))
            .collect();
        (!next.voters.is_empty()).then_some(next)
    }

    /// Encodes the configuration as the payload of a `Config` entry:
    /// `version: u8 = 1 | voters: u32 LE count, u64 LE ids | learners: same`, or,
    /// when some member has info, `version: u8 = 2 | voters | learners | info: u32 LE
    /// count, then per member u64 LE id, u32 LE length, bytes` (ids ascending).
    pub fn encode(&self) -> Vec<u8> {
        let info_bytes: usize = self.member_info.values().map(|i| 12 + i.len()).sum();
        let mut out =
            Vec::with_capacity(13 + 8 * (self.voters.len() + self.learners.len()) + info_bytes);
        let version = if self.member_info.is_empty() {
            CONFIG_ENCODING_VERSION
        } else {
            CONFIG_ENCODING_VERSION_INFO
        };
        out.push(version);
        for list in [&self.voters, &self.learners] {
            put_u32(&mut out, len_u32(list.len()));
            for &id in list.iter() {
                put_u64(&mut out, id);
            }
        }
        if version == CONFIG_ENCODING_VERSION_INFO {
            put_u32(&mut out, len_u32(self.member_info.len()));
            for (&id, info) in &self.member_info {
                put_u64(&mut out, id);
                put_bytes(&mut out, info);
            }
        }
        out
    }

    /// Decodes a `Config` entry payload written by [`Configuration::encode`].
    ///
    /// # Errors
    /// [`DecodeError::Malformed`] for an unknown version, a truncated body, more than
    /// 1024 members, trailing bytes, lists that are not a normalised configuration,
    /// or member info that is empty, too large, unsorted or for a non-member.
    pub fn decode(bytes: &[u8]) -> Result<Configuration, DecodeError> {
        const TRUNCATED: &str = "truncated configuration";
        let mut reader = Reader::new(bytes);
        let version = reader.u8("empty configuration")?;
        if version != CONFIG_ENCODING_VERSION && version != CONFIG_ENCODING_VERSION_INFO {
            return Err(DecodeError::Malformed("unknown configuration version"));
        }
        let mut lists = [Vec::new(), Vec::new()];
        for list in &mut lists {
            let count = reader.count(8, TRUNCATED)?;
            if count > CONFIG_MEMBERS_MAX {
                return Err(DecodeError::Malformed("too many configuration members"));
            }
            for _ in 0..count {
                list.push(reader.u64(TRUNCATED)?);
            }
        }
        let [voters, learners] = lists;
        let mut config = Configuration::new(voters.iter().copied(), learners.iter().copied());
        if config.voters != voters || config.learners != learners {
            return Err(DecodeError::Malformed("configuration lists not normalised"));
        }
        if version == CONFIG_ENCODING_VERSION_INFO {
            config.member_info = decode_member_info(&mut reader, &config)?;
            if config.member_info.is_empty() {
                return Err(DecodeError::Malformed(
                    "version 2 configuration without info",
                ));
            }
        }
        reader.finish()?;
        Ok(config)
    }
}

/// Reads the member info section of a version 2 configuration.
fn decode_member_info(
    reader: &mut Reader<'_>,
    config: &Configuration,
) -> Result<BTreeMap<NodeId, Vec<u8>>, DecodeError> {
    const TRUNCATED: &str = "truncated configuration member info";
    let count = reader.count(12, TRUNCATED)?;
    let mut infos = BTreeMap::new();
    let mut previous = NO_NODE;
    for _ in 0..count {
        let id = reader.u64(TRUNCATED)?;
        let info = reader.slice(TRUNCATED)?;
        if info.is_empty() || info.len() > MEMBER_INFO_BYTES_MAX {
            return Err(DecodeError::Malformed("member info empty or too large"));
        }
        if id <= previous || !config.contains(id) {
            return Err(DecodeError::Malformed(
                "member info unsorted or for a non-member",
            ));
        }
        infos.insert(id, info.to_vec());
        previous = id;
    }
    Ok(infos)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Goal: every single-server change yields the expected membership, and
    /// invalid changes are refused. Reference: Raft thesis section 4.1.
    #[test]
    fn configuration_changes() {
        let base = Configuration::new([1, 2, 3], [4]);
        let cases = [
            (
                ConfigChange::AddVoter(5),
                Some(Configuration::new([1, 2, 3, 5], [4])),
            ),
            (ConfigChange::AddVoter(2), None),
            (ConfigChange::AddVoter(NO_NODE), None),
            (
                ConfigChange::AddLearner(6),
                Some(Configuration::new([1, 2, 3], [4, 6])),
            ),
            (ConfigChange::AddLearner(4), None),
            (
                ConfigChange::PromoteLearner(4),
                Some(Configuration::new([1, 2, 3, 4], [])),
            ),
            (ConfigChange::PromoteLearner(1), None),
            (
                ConfigChange::RemoveNode(2),
                Some(Configuration::new([1, 3], [4])),
            ),
            (
                ConfigChange::RemoveNode(4),
                Some(Configuration::new([1, 2, 3], [])),
            ),
            (ConfigChange::RemoveNode(9), None),
        ];
        for (i, (change, want)) in cases.into_iter().enumerate() {
            assert_eq!(base.apply(change), want, "#{i}: {change:?}");
        }
        let single = Configuration::new([1], []);
        assert_eq!(
            single.apply(ConfigChange::RemoveNode(1)),
            None,
            "last voter stays"
        );
    }

    /// Goal: the Config entry payload round-trips, and corrupt payloads are
    /// errors, never panics. Method: decode every prefix and a few mutations.
    #[test]
    fn configuration_encoding_round_trips_and_rejects_garbage() {
        let config = Configuration::new([1, 2, 3], [7, 9]);
        let bytes = config.encode();
        assert_eq!(Configuration::decode(&bytes), Ok(config));
        for len in 0..bytes.len() {
            assert!(
                Configuration::decode(&bytes[..len]).is_err(),
                "prefix {len}"
            );
        }
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Configuration::decode(&trailing).is_err());
        let mut version = bytes.clone();
        version[0] = 3;
        assert!(Configuration::decode(&version).is_err());
        let unsorted = Configuration {
            voters: vec![2, 1],
            learners: vec![],
            member_info: BTreeMap::new(),
        }
        .encode();
        assert!(Configuration::decode(&unsorted).is_err());
        let mut huge = vec![CONFIG_ENCODING_VERSION];
        huge.extend_from_slice(&u32::MAX.to_le_bytes());
        assert!(Configuration::decode(&huge).is_err());
    }

    /// Goal: member info travels with the configuration (version 2), survives
    /// changes of other members, goes with its member, and a corrupt info section
    /// is an error. Method: build, change, round-trip, decode every prefix.
    #[test]
    fn configuration_member_info_round_trips_and_follows_members() {
        let config = Configuration::new([1, 2], [3])
            .with_info(1, b"one".to_vec())
            .with_info(3, b"three".to_vec())
            .with_info(9, b"not a member".to_vec());
        assert_eq!(config.info(1), Some(&b"one"[..]));
        assert_eq!(config.info(9), None);
        let bytes = config.encode();
        assert_eq!(bytes[0], CONFIG_ENCODING_VERSION_INFO);
        assert_eq!(Configuration::decode(&bytes), Ok(config.clone()));
        for len in 0..bytes.len() {
            assert!(
                Configuration::decode(&bytes[..len]).is_err(),
                "prefix {len}"
            );
        }
        let promoted = config.apply(ConfigChange::PromoteLearner(3)).unwrap();
        assert_eq!(promoted.info(3), Some(&b"three"[..]));
        let removed = promoted.apply(ConfigChange::RemoveNode(1)).unwrap();
        assert_eq!(removed.info(1), None);
        assert_eq!(removed.member_info.len(), 1);
        let plain = Configuration::new([1], []);
        assert_eq!(plain.encode()[0], CONFIG_ENCODING_VERSION);
        let mut foreign = Configuration::new([1, 2], []).with_info(2, b"x".to_vec());
        foreign.member_info.insert(5, b"y".to_vec());
        assert!(Configuration::decode(&foreign.encode()).is_err());
    }
}
