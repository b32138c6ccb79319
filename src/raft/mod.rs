//! The consensus core: a pure Raft state machine with no IO, no clock and no
//! threads, so that a deterministic simulation can drive it.

pub mod message;
