//! Limits on client and inbound peer connections, decided without IO: when a
//! connection has been idle, half-sent or unidentified for too long, and how often a
//! refused connection may be logged. The event loop owns the sockets and the clock and
//! asks these questions with `now_ms` passed in, so every rule has a unit test here.
//!
//! The rules (see docs/CONFIG.md, `[limits]`):
//! 1. A client connection (client or Redis port) with no request in flight and no bytes
//!    read or written for `client_idle_timeout_ms` is idle: close it (redis `timeout`).
//! 2. The first byte of an incomplete request starts a clock; a request still
//!    incomplete after `partial_request_timeout_ms` closes the connection (slowloris).
//!    Completing a request restarts the clock for the bytes after it. While the loop
//!    has paused reading a connection (back-pressure) its unread input is not the
//!    client's fault: the clock stops and restarts on resume.
//! 3. An inbound peer connection must send its handshake within
//!    `peer_handshake_timeout_ms` of being accepted. Identified peer links, outbound
//!    links and the forwarding link are never timed out here.
//! 4. Refusals are logged at most once per [`REFUSAL_LOG_INTERVAL_MS`], with the number
//!    of refusals not logged since the previous line.
//!
//! Invariant: `Activity::partial_since_ms` is `Some` only while unconsumed input is held
//! and reading is not paused.

/// Shortest time between two log lines about refused connections.
pub const REFUSAL_LOG_INTERVAL_MS: u64 = 1000;

/// The sweep that applies the timeouts runs at least this often...
const SWEEP_INTERVAL_MAX_MS: u64 = 1000;
/// ...and at most this often, whatever the timeouts.
const SWEEP_INTERVAL_MIN_MS: u64 = 10;

/// The configured timeouts, in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Idle client connections are closed after this; `None` keeps them.
    pub idle_ms: Option<u64>,
    /// An incomplete request must complete within this.
    pub partial_ms: u64,
    /// An inbound peer connection must identify itself within this.
    pub handshake_ms: u64,
}

impl Timeouts {
    /// How often the loop should sweep: a quarter of the shortest timeout (so a
    /// connection is closed at most a quarter late), between 10 ms and 1 s.
    pub fn sweep_interval_ms(&self) -> u64 {
        let shortest = self
            .idle_ms
            .unwrap_or(u64::MAX)
            .min(self.partial_ms)
            .min(self.handshake_ms);
        (shortest / 4).clamp(SWEEP_INTERVAL_MIN_MS, SWEEP_INTERVAL_MAX_MS)
    }
}

/// Which rules apply to a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Watch {
    /// A client connection: rules 1 and 2.
    Client,
    /// An inbound peer connection before its handshake: rule 3.
    Handshake,
    /// Peer links and the forwarding link: no timeout.
    Exempt,
}

/// Why a connection timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Rule 1.
    Idle,
    /// Rule 2.
    PartialRequest,
    /// Rule 3.
    Handshake,
}

impl Expiry {
    /// The reason logged when the connection is closed.
    pub fn reason(self) -> &'static str {
        match self {
            Expiry::Idle => "idle for limits.client_idle_timeout_ms",
            Expiry::PartialRequest => "request incomplete for limits.partial_request_timeout_ms",
            Expiry::Handshake => "no handshake within limits.peer_handshake_timeout_ms",
        }
    }
}

/// The times the rules look at, for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Activity {
    opened_ms: u64,
    last_traffic_ms: u64,
    /// Invariant: see the module docs.
    partial_since_ms: Option<u64>,
}

impl Activity {
    /// A connection opened at `now_ms`.
    pub fn new(now_ms: u64) -> Activity {
        Activity {
            opened_ms: now_ms,
            last_traffic_ms: now_ms,
            partial_since_ms: None,
        }
    }

    /// Bytes were read from or written to the socket at `now_ms`.
    pub fn on_traffic(&mut self, now_ms: u64) {
        self.last_traffic_ms = now_ms;
    }

    /// The loop decoded what it could at `now_ms`: `progressed` when at least one
    /// request was consumed, `leftover` when unconsumed input remains, `paused` when the
    /// loop stopped decoding because of back-pressure.
    pub fn on_decoded(&mut self, now_ms: u64, progressed: bool, leftover: bool, paused: bool) {
        if paused || !leftover {
            self.partial_since_ms = None;
        } else if progressed || self.partial_since_ms.is_none() {
            self.partial_since_ms = Some(now_ms);
        }
    }

    /// Which rule, if any, says to close the connection at `now_ms`; `busy` when a
    /// request of the connection is in flight (its reply not yet produced).
    pub fn expiry(
        &self,
        watch: Watch,
        busy: bool,
        timeouts: &Timeouts,
        now_ms: u64,
    ) -> Option<Expiry> {
        let since = |t: u64| now_ms.saturating_sub(t);
        match watch {
            Watch::Exempt => None,
            Watch::Handshake => {
                (since(self.opened_ms) >= timeouts.handshake_ms).then_some(Expiry::Handshake)
            }
            Watch::Client => {
                if let Some(started) = self.partial_since_ms
                    && since(started) >= timeouts.partial_ms
                {
                    return Some(Expiry::PartialRequest);
                }
                let idle = timeouts
                    .idle_ms
                    .is_some_and(|idle_ms| !busy && since(self.last_traffic_ms) >= idle_ms);
                idle.then_some(Expiry::Idle)
            }
        }
    }
}

/// Rate limit of the "refusing connection" log line (rule 4).
#[derive(Debug, Default)]
pub struct RefusalLog {
    last_logged_ms: Option<u64>,
    suppressed: u64,
}

impl RefusalLog {
    /// One connection was refused at `now_ms`. `Some(n)`: log this one now, saying that
    /// `n` refusals were not logged since the previous line; `None`: stay quiet.
    pub fn on_refusal(&mut self, now_ms: u64) -> Option<u64> {
        if self.due(now_ms) {
            self.last_logged_ms = Some(now_ms);
            return Some(std::mem::take(&mut self.suppressed));
        }
        self.suppressed += 1;
        None
    }

    /// Refusals not yet logged, once the interval has passed (called by the sweep, so
    /// the last burst is reported even if no refusal follows it).
    pub fn take_suppressed(&mut self, now_ms: u64) -> Option<u64> {
        if self.suppressed == 0 || !self.due(now_ms) {
            return None;
        }
        self.last_logged_ms = Some(now_ms);
        Some(std::mem::take(&mut self.suppressed))
    }

    fn due(&self, now_ms: u64) -> bool {
        self.last_logged_ms
            .is_none_or(|last| now_ms.saturating_sub(last) >= REFUSAL_LOG_INTERVAL_MS)
    }
}

#[cfg(test)]
mod tests {
    //! Goal: each timeout rule closes exactly the connections it names, at the time it
    //! names. Method: drive `Activity` with explicit times.
    use super::*;

    const TIMEOUTS: Timeouts = Timeouts {
        idle_ms: Some(1000),
        partial_ms: 100,
        handshake_ms: 50,
    };

    #[test]
    fn idle_counts_from_the_last_traffic_and_not_while_busy() {
        let mut a = Activity::new(0);
        a.on_traffic(500);
        let cases = [
            (1499, false, None),
            (1500, false, Some(Expiry::Idle)),
            (5000, true, None),
        ];
        for (i, (now, busy, want)) in cases.into_iter().enumerate() {
            assert_eq!(a.expiry(Watch::Client, busy, &TIMEOUTS, now), want, "#{i}");
        }
        let never = Timeouts {
            idle_ms: None,
            ..TIMEOUTS
        };
        assert_eq!(a.expiry(Watch::Client, false, &never, u64::MAX), None);
    }

    #[test]
    fn a_partial_request_has_a_deadline_from_its_first_byte() {
        let mut a = Activity::new(0);
        a.on_traffic(10);
        a.on_decoded(10, false, true, false);
        // More bytes of the same request do not move the clock.
        a.on_traffic(60);
        a.on_decoded(60, false, true, false);
        assert_eq!(a.expiry(Watch::Client, true, &TIMEOUTS, 109), None);
        assert_eq!(
            a.expiry(Watch::Client, true, &TIMEOUTS, 110),
            Some(Expiry::PartialRequest)
        );
        // A completed request restarts it for the bytes after it.
        a.on_decoded(105, true, true, false);
        assert_eq!(a.expiry(Watch::Client, true, &TIMEOUTS, 150), None);
        // Nothing left over: no clock at all.
        a.on_decoded(106, true, false, false);
        assert_eq!(a.expiry(Watch::Client, true, &TIMEOUTS, 10_000), None);
    }

    #[test]
    fn a_paused_connection_is_not_blamed_for_its_unread_input() {
        let mut a = Activity::new(0);
        a.on_decoded(0, false, true, false);
        a.on_decoded(20, true, true, true);
        assert_eq!(a.expiry(Watch::Client, true, &TIMEOUTS, 500), None);
        a.on_decoded(500, true, true, false);
        assert_eq!(a.expiry(Watch::Client, true, &TIMEOUTS, 599), None);
        assert_eq!(
            a.expiry(Watch::Client, true, &TIMEOUTS, 600),
            Some(Expiry::PartialRequest)
        );
    }

    #[test]
    fn handshake_deadline_and_exempt_links() {
        let a = Activity::new(100);
        assert_eq!(a.expiry(Watch::Handshake, false, &TIMEOUTS, 149), None);
        assert_eq!(
            a.expiry(Watch::Handshake, false, &TIMEOUTS, 150),
            Some(Expiry::Handshake)
        );
        assert_eq!(a.expiry(Watch::Exempt, false, &TIMEOUTS, u64::MAX), None);
    }

    #[test]
    fn sweep_interval_is_a_quarter_of_the_shortest_timeout_within_bounds() {
        let cases = [
            (Some(300_000), 30_000, 5000, 1000),
            (None, 400, 5000, 100),
            (Some(8), 4, 4, 10),
        ];
        for (i, (idle_ms, partial_ms, handshake_ms, want)) in cases.into_iter().enumerate() {
            let timeouts = Timeouts {
                idle_ms,
                partial_ms,
                handshake_ms,
            };
            assert_eq!(timeouts.sweep_interval_ms(), want, "#{i}");
        }
    }

    #[test]
    fn refusals_are_logged_once_per_interval_with_the_suppressed_count() {
        let mut log = RefusalLog::default();
        assert_eq!(log.on_refusal(0), Some(0));
        assert_eq!(log.on_refusal(10), None);
        assert_eq!(log.on_refusal(999), None);
        assert_eq!(log.take_suppressed(999), None);
        assert_eq!(log.on_refusal(1000), Some(2));
        assert_eq!(log.on_refusal(1500), None);
        assert_eq!(log.take_suppressed(1999), None);
        assert_eq!(log.take_suppressed(2000), Some(1));
        assert_eq!(log.take_suppressed(5000), None);
    }
}
