//! The open-loop schedule: when each request of one connection is due.
//!
//! With `--rate R` over `C` connections, each connection sends every `C / R` seconds and
//! connection `c` is offset by `c / R` seconds, so together they send evenly every
//! `1 / R` seconds rather than in bursts of `C`. A request's latency is measured from its
//! due time, not from when it was actually sent: if the cluster stalls and the connection
//! falls behind, the wait counts against the cluster (no coordinated omission).
//!
//! Pure: offsets from the start of the run, as `Duration`s; the caller owns the clock.

use std::time::Duration;

/// The send times of one connection's requests.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateSchedule {
    /// Seconds between two requests of this connection.
    interval_secs: f64,
    /// Seconds from the start to this connection's first request.
    offset_secs: f64,
}

impl RateSchedule {
    /// The schedule of connection `connection` of `connections` sharing `rate` requests
    /// per second.
    ///
    /// # Panics
    /// If `rate` is not positive and finite or `connection >= connections` (checked by
    /// the caller).
    pub fn new(rate: f64, connections: usize, connection: usize) -> RateSchedule {
        assert!(rate > 0.0 && rate.is_finite(), "rate must be positive");
        assert!(connection < connections, "connection index out of range");
        RateSchedule {
            interval_secs: connections as f64 / rate,
            offset_secs: connection as f64 / rate,
        }
    }

    /// When request number `sequence` (0-based) of this connection is due, from the
    /// start of the run.
    pub fn due(&self, sequence: u64) -> Duration {
        Duration::from_secs_f64(self.offset_secs + sequence as f64 * self.interval_secs)
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the connections together send evenly at the requested rate. Method: merge
    //! the due times of every connection and check the gaps.
    use super::*;

    #[test]
    fn connections_interleave_into_an_even_stream() {
        let rate = 1000.0;
        let connections = 4;
        let mut due: Vec<Duration> = (0..connections)
            .flat_map(|c| {
                let schedule = RateSchedule::new(rate, connections, c);
                (0..250).map(move |sequence| schedule.due(sequence))
            })
            .collect();
        due.sort();
        assert_eq!(due.len(), 1000);
        assert_eq!(due[0], Duration::ZERO);
        for (i, pair) in due.windows(2).enumerate() {
            let gap = pair[1] - pair[0];
            let error = gap.as_secs_f64() - 0.001;
            assert!(error.abs() < 1e-9, "#{i}: gap {gap:?}");
        }
        // 1000 requests at 1000/s: the last is due just before one second.
        assert!(due[999] < Duration::from_secs(1));
    }

    #[test]
    fn one_connection_sends_at_the_full_rate() {
        let schedule = RateSchedule::new(200.0, 1, 0);
        let cases = [(0, 0), (1, 5), (200, 1000)];
        for (i, (sequence, millis)) in cases.into_iter().enumerate() {
            let got = schedule.due(sequence);
            let want = Duration::from_millis(millis);
            assert!(
                got.abs_diff(want) < Duration::from_nanos(10),
                "#{i}: {got:?}"
            );
        }
    }
}
