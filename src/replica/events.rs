//! The replica's recent events: leader changes, elections, membership changes,
//! snapshots and alarms, as they happen. Each is logged as one structured line at
//! info level (`event=leader_changed term=7 leader=2 previous=1 msg="..."`, for log
//! search and alerting on logs) and kept in a bounded ring of the last [`EVENTS_MAX`]
//! for `GET /events`.
//!
//! Time is the driver's millisecond clock, handed in with [`Events::set_now`] once
//! per turn (the replica reads no clock); the server turns it into wall-clock time
//! when it renders the ring.
//!
//! Invariant: the ring holds at most its capacity, oldest first; recording into a
//! full ring drops the oldest event.

use std::collections::VecDeque;
use std::fmt::Write as _;

use log::info;

/// How many events the ring keeps.
pub const EVENTS_MAX: usize = 256;

/// What happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    /// The leader this node knows of changed (to none included).
    LeaderChanged,
    /// This node started an election (it became candidate, or stayed candidate in a
    /// new term after a split vote).
    ElectionStarted,
    /// This node won its election.
    ElectionWon,
    /// This node's election ended without it becoming leader.
    ElectionLost,
    /// A configuration entry that adds a member was applied.
    MemberAdded,
    /// A configuration entry that removes a member was applied.
    MemberRemoved,
    /// A snapshot this node took is durable and the log compacted.
    SnapshotTaken,
    /// A snapshot received from the leader was installed.
    SnapshotInstalled,
    /// This leader found a member that lost the log it had acknowledged (a wiped data
    /// directory): it is not repaired; an operator removes it and adds it again.
    MemberLostLog,
    /// An alarm (NOSPACE) went up.
    AlarmRaised,
    /// An alarm went down.
    AlarmCleared,
}

impl EventKind {
    /// The name in log lines and JSON.
    pub fn name(self) -> &'static str {
        match self {
            EventKind::LeaderChanged => "leader_changed",
            EventKind::ElectionStarted => "election_started",
            EventKind::ElectionWon => "election_won",
            EventKind::ElectionLost => "election_lost",
            EventKind::MemberAdded => "member_added",
            EventKind::MemberRemoved => "member_removed",
            EventKind::SnapshotTaken => "snapshot_taken",
            EventKind::SnapshotInstalled => "snapshot_installed",
            EventKind::MemberLostLog => "member_lost_log",
            EventKind::AlarmRaised => "alarm_raised",
            EventKind::AlarmCleared => "alarm_cleared",
        }
    }
}

/// One event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// When, in the driver's clock (ms).
    pub at_ms: u64,
    /// What happened.
    pub kind: EventKind,
    /// The node's term at the time.
    pub term: u64,
    /// Details as `key=value` with numeric values (member ids, indexes, sizes).
    pub fields: Vec<(&'static str, u64)>,
    /// Human text.
    pub message: String,
}

/// The ring of recent events.
#[derive(Debug)]
pub struct Events {
    /// Invariant: `ring.len() <= capacity`, oldest first.
    ring: VecDeque<Event>,
    capacity: usize,
    now_ms: u64,
}

impl Events {
    /// An empty ring keeping the last `capacity` events (at least one).
    pub fn new(capacity: usize) -> Events {
        let capacity = capacity.max(1);
        Events {
            ring: VecDeque::with_capacity(capacity),
            capacity,
            now_ms: 0,
        }
    }

    /// The driver's clock for the events recorded from now on.
    pub fn set_now(&mut self, now_ms: u64) {
        self.now_ms = now_ms;
    }

    /// Logs the event as one line and keeps it in the ring.
    pub fn record(
        &mut self,
        kind: EventKind,
        term: u64,
        fields: &[(&'static str, u64)],
        message: String,
    ) {
        let event = Event {
            at_ms: self.now_ms,
            kind,
            term,
            fields: fields.to_vec(),
            message,
        };
        info!("{}", log_line(&event));
        if self.ring.len() == self.capacity {
            self.ring.pop_front();
        }
        self.ring.push_back(event);
    }

    /// The events kept, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Event> {
        self.ring.iter()
    }
}

/// `event=KIND term=T key=value ... msg="TEXT"`, the message quoted with `"` and `\`
/// escaped so that the line stays one `key=value` record.
pub fn log_line(event: &Event) -> String {
    let mut line = format!("event={} term={}", event.kind.name(), event.term);
    for (key, value) in &event.fields {
        // Writing to a String cannot fail.
        let _ = write!(line, " {key}={value}");
    }
    line.push_str(" msg=\"");
    for c in event.message.chars() {
        match c {
            '"' => line.push_str("\\\""),
            '\\' => line.push_str("\\\\"),
            '\n' => line.push_str("\\n"),
            c => line.push(c),
        }
    }
    line.push('"');
    line
}

#[cfg(test)]
mod tests {
    //! Goal: the ring keeps the newest events in order within its bound, stamps them
    //! with the clock set last, and the log line is one parseable key=value record.
    use super::*;

    #[test]
    fn the_ring_keeps_the_newest_in_order() {
        let mut events = Events::new(3);
        for i in 0..5u64 {
            events.set_now(100 + i);
            events.record(
                EventKind::LeaderChanged,
                i,
                &[("leader", i)],
                format!("#{i}"),
            );
        }
        let kept: Vec<(u64, u64)> = events.iter().map(|e| (e.at_ms, e.term)).collect();
        assert_eq!(kept, [(102, 2), (103, 3), (104, 4)]);
    }

    #[test]
    fn log_line_is_key_value_with_a_quoted_message() {
        let event = Event {
            at_ms: 5,
            kind: EventKind::MemberAdded,
            term: 4,
            fields: vec![("member", 3), ("index", 17)],
            message: "member 3 \"c\" added\\".to_string(),
        };
        assert_eq!(
            log_line(&event),
            r#"event=member_added term=4 member=3 index=17 msg="member 3 \"c\" added\\""#
        );
    }

    #[test]
    fn every_kind_has_a_distinct_snake_case_name() {
        let kinds = [
            EventKind::LeaderChanged,
            EventKind::ElectionStarted,
            EventKind::ElectionWon,
            EventKind::ElectionLost,
            EventKind::MemberAdded,
            EventKind::MemberRemoved,
            EventKind::SnapshotTaken,
            EventKind::SnapshotInstalled,
            EventKind::AlarmRaised,
            EventKind::AlarmCleared,
        ];
        let mut names: Vec<&str> = kinds.iter().map(|k| k.name()).collect();
        assert!(
            names
                .iter()
                .all(|n| n.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
        );
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), kinds.len());
    }
}
