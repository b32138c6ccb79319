//! The key-value state machine applied from committed log entries.
