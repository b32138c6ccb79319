//! Everything durable: the segmented write-ahead log and the hard state.

pub mod snapshot;
