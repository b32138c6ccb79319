//! Reconnect backoff: exponential growth with full jitter, sans-IO.
//!
//! The n-th consecutive failure waits a uniformly random delay in
//! `[min_ms, min(max_ms, min_ms * 2^n)]` ("full jitter", so that peers that lost the same
//! node do not redial in lockstep). Randomness is passed in by the caller as a `u64` drawn
//! from its seeded PRNG, so the simulator replays the same delays from the same seed.
//!
//! Invariant: every delay lies in `[min_ms, max_ms]`.

/// Exponential backoff state for one peer link.
#[derive(Debug, Clone)]
pub struct Backoff {
    min_ms: u64,
    max_ms: u64,
    /// Consecutive failures since the last success.
    failures: u32,
}

impl Backoff {
    /// A backoff between `min_ms` and `max_ms` milliseconds.
    ///
    /// # Panics
    /// If `min_ms` is 0 or greater than `max_ms` (a programming error).
    pub fn new(min_ms: u64, max_ms: u64) -> Backoff {
        assert!(
            0 < min_ms && min_ms <= max_ms,
            "backoff bounds {min_ms}..{max_ms}"
        );
        Backoff {
            min_ms,
            max_ms,
            failures: 0,
        }
    }

    /// Records one more failure and returns how long to wait before the next attempt.
    /// `random` is any value from the caller's PRNG.
    pub fn next_delay_ms(&mut self, random: u64) -> u64 {
        let ceiling = self.ceiling_ms();
        self.failures = self.failures.saturating_add(1);
        // `min_ms >= 1`, so the width `ceiling - min_ms + 1` cannot overflow.
        self.min_ms + random % (ceiling - self.min_ms + 1)
    }

    /// The upper bound of the next delay.
    pub fn ceiling_ms(&self) -> u64 {
        let factor = 1u64.checked_shl(self.failures).unwrap_or(u64::MAX);
        self.min_ms.saturating_mul(factor).min(self.max_ms)
    }

    /// Consecutive failures since the last [`Backoff::reset`].
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// A connection succeeded: the next failure starts again from `min_ms`.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

#[cfg(test)]
mod tests {
    //! Goal: delays grow exponentially, stay in bounds, spread over the whole range, and
    //! restart after a success. Method: a SplitMix64 sequence as the caller's PRNG.
    use super::*;

    fn splitmix(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    #[test]
    fn ceiling_doubles_up_to_max() {
        let mut backoff = Backoff::new(50, 1000);
        let mut ceilings = Vec::new();
        for _ in 0..8 {
            ceilings.push(backoff.ceiling_ms());
            backoff.next_delay_ms(0);
        }
        assert_eq!(ceilings, vec![50, 100, 200, 400, 800, 1000, 1000, 1000]);
        assert_eq!(backoff.failures(), 8);
    }

    #[test]
    fn extreme_random_values_hit_both_bounds() {
        let mut backoff = Backoff::new(50, 1000);
        assert_eq!(backoff.next_delay_ms(0), 50);
        // Second failure: ceiling 100, width 51; 50 % 51 = 50.
        assert_eq!(backoff.next_delay_ms(50), 100);
    }

    #[test]
    fn delays_stay_in_bounds_and_use_the_range() {
        let mut state = 42;
        let mut backoff = Backoff::new(10, 5000);
        for _ in 0..40 {
            backoff.next_delay_ms(splitmix(&mut state));
        }
        let delays: Vec<u64> = (0..1000)
            .map(|_| backoff.next_delay_ms(splitmix(&mut state)))
            .collect();
        assert!(delays.iter().all(|d| (10..=5000).contains(d)));
        assert!(
            delays.iter().any(|&d| d < 1000),
            "full jitter reaches low delays"
        );
        assert!(
            delays.iter().any(|&d| d > 4000),
            "full jitter reaches high delays"
        );
    }

    #[test]
    fn many_failures_do_not_overflow() {
        let mut backoff = Backoff::new(1, u64::MAX);
        for _ in 0..200 {
            backoff.next_delay_ms(u64::MAX);
        }
        assert_eq!(backoff.ceiling_ms(), u64::MAX);
        assert_eq!(backoff.next_delay_ms(u64::MAX - 2), u64::MAX - 1);
    }

    #[test]
    fn reset_restarts_from_min() {
        let mut backoff = Backoff::new(100, 10_000);
        for _ in 0..5 {
            backoff.next_delay_ms(7);
        }
        backoff.reset();
        assert_eq!(backoff.failures(), 0);
        assert_eq!(backoff.ceiling_ms(), 100);
        assert!(backoff.next_delay_ms(u64::MAX) <= 100);
    }

    #[test]
    fn same_seed_same_delays() {
        let run = || {
            let mut state = 7;
            let mut backoff = Backoff::new(10, 1000);
            (0..10)
                .map(|_| backoff.next_delay_ms(splitmix(&mut state)))
                .collect::<Vec<_>>()
        };
        assert_eq!(run(), run());
    }
}
