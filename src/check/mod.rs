//! Checkers for histories recorded by tests: the deterministic simulation and the
//! multi-process fault suite record what clients saw, and these modules decide whether a
//! correct system could have produced it.
//!
//! - [`linearizability`]: a WGL / porcupine-style linearizability checker for a
//!   key-value history, partitioned per key, that handles operations of unknown outcome.

pub mod linearizability;

pub use linearizability::{
    CheckError, KvCall, Operation, Outcome, Violation, check, check_with_budget,
};
