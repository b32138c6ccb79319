//! Key choice for the benchmark: a seeded PRNG, uniform or Zipf-distributed key indexes,
//! and the fixed-width key bytes.
//!
//! The Zipf sampler is rejection-inversion (Hörmann and Derflinger, "Rejection-inversion
//! to generate variates from monotone discrete distributions", 1996), as in Apache
//! Commons RNG: O(1) time and memory per sample for any key count, so `--keys 100000000`
//! costs no table. Rank 1 is the most popular key.
//!
//! Invariant: every index returned is in `0..keys`.

/// Bytes of every benchmark key (`k` and a zero-padded decimal index).
pub const KEY_BYTES: usize = 16;

use crate::raft::rng::Rng;

/// Largest key count whose indexes fit in [`KEY_BYTES`].
pub const KEYS_MAX: u64 = 999_999_999_999_999;

/// How key indexes are drawn.
#[derive(Debug, Clone)]
pub enum KeyChooser {
    /// Every key equally likely.
    Uniform {
        /// The key count.
        keys: u64,
    },
    /// Zipf-distributed over the key count.
    Zipf(Zipf),
}

impl KeyChooser {
    /// Uniform over `keys` keys, or Zipf with exponent `zipf` if given.
    ///
    /// # Panics
    /// If `keys` is 0 or `zipf` is not positive and finite (checked by the caller).
    pub fn new(keys: u64, zipf: Option<f64>) -> KeyChooser {
        assert!(keys > 0, "key count must be positive");
        match zipf {
            Some(exponent) => KeyChooser::Zipf(Zipf::new(keys, exponent)),
            None => KeyChooser::Uniform { keys },
        }
    }

    /// The next key index, in `0..keys`.
    pub fn next_index(&self, rng: &mut Rng) -> u64 {
        match self {
            KeyChooser::Uniform { keys } => rng.below(*keys),
            KeyChooser::Zipf(zipf) => zipf.sample(rng) - 1,
        }
    }
}

/// Writes the key of `index` into `out` (cleared first): `k` and 15 zero-padded digits.
pub fn key_bytes(index: u64, out: &mut Vec<u8>) {
    out.clear();
    out.extend_from_slice(format!("k{index:015}").as_bytes());
}

/// A Zipf distribution over ranks `1..=n`: P(k) proportional to `1 / k^s`.
#[derive(Debug, Clone)]
pub struct Zipf {
    n: f64,
    s: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    threshold: f64,
}

impl Zipf {
    /// The distribution over `1..=n` with exponent `s`.
    ///
    /// # Panics
    /// If `n` is 0 or `s` is not positive and finite.
    pub fn new(n: u64, s: f64) -> Zipf {
        assert!(
            n > 0 && s > 0.0 && s.is_finite(),
            "zipf needs n > 0 and s > 0"
        );
        let mut zipf = Zipf {
            n: n as f64,
            s,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            threshold: 0.0,
        };
        zipf.h_integral_x1 = zipf.h_integral(1.5) - 1.0;
        zipf.h_integral_n = zipf.h_integral(zipf.n + 0.5);
        zipf.threshold = 2.0 - zipf.h_integral_inverse(zipf.h_integral(2.5) - zipf.h(2.0));
        zipf
    }

    /// One rank in `1..=n`.
    pub fn sample(&self, rng: &mut Rng) -> u64 {
        loop {
            let u = self.h_integral_n + rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k = (x + 0.5).floor().clamp(1.0, self.n);
            if k - x <= self.threshold || u >= self.h_integral(k + 0.5) - self.h(k) {
                return k as u64;
            }
        }
    }

    /// `H(x) = ((x^(1-s)) - 1) / (1 - s)`, the integral of `h`, computed stably near s=1.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.s) * log_x) * log_x
    }

    /// `h(x) = x^-s`.
    fn h(&self, x: f64) -> f64 {
        (-self.s * x.ln()).exp()
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.s)).max(-1.0);
        (helper1(t) * x).exp()
    }
}

/// `ln(1 + x) / x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x - 1) / x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x / 3.0 * (1.0 + 0.25 * x))
    }
}

#[cfg(test)]
mod tests {
    //! Goal: the samplers stay in range and follow their distributions. Method: a fixed
    //! seed, 200k samples, frequencies compared with the exact probabilities within a
    //! tolerance far wider than the sampling noise (so the test is deterministic in
    //! practice and still fails on a wrong formula).
    use super::*;

    fn frequencies(chooser: &KeyChooser, keys: u64, samples: u32) -> Vec<f64> {
        let mut rng = Rng::new(42);
        let mut counts = vec![0u32; keys as usize];
        for _ in 0..samples {
            let index = chooser.next_index(&mut rng);
            assert!(index < keys, "index {index} out of range");
            counts[index as usize] += 1;
        }
        counts
            .into_iter()
            .map(|count| f64::from(count) / f64::from(samples))
            .collect()
    }

    #[test]
    fn zipf_matches_exact_probabilities() {
        for (i, s) in [0.5, 0.99, 1.0, 1.2, 2.0].into_iter().enumerate() {
            let keys = 50u64;
            let norm: f64 = (1..=keys).map(|k| (k as f64).powf(-s)).sum();
            let observed = frequencies(&KeyChooser::new(keys, Some(s)), keys, 200_000);
            for rank in [1u64, 2, 3, 10, 50] {
                let want = (rank as f64).powf(-s) / norm;
                let got = observed[rank as usize - 1];
                assert!(
                    (got - want).abs() < 0.01 + want * 0.05,
                    "#{i}: s={s} rank {rank}: got {got:.4}, want {want:.4}"
                );
            }
        }
    }

    #[test]
    fn uniform_covers_every_key_evenly_and_zipf_handles_one_key() {
        let observed = frequencies(&KeyChooser::new(10, None), 10, 200_000);
        for (index, frequency) in observed.iter().enumerate() {
            assert!((frequency - 0.1).abs() < 0.01, "key {index}: {frequency}");
        }
        let mut rng = Rng::new(7);
        let single = KeyChooser::new(1, Some(1.0));
        assert!((0..100).all(|_| single.next_index(&mut rng) == 0));
    }

    #[test]
    fn keys_have_fixed_width() {
        let mut key = Vec::new();
        for index in [0, 7, KEYS_MAX] {
            key_bytes(index, &mut key);
            assert_eq!(key.len(), KEY_BYTES, "index {index}");
        }
        key_bytes(42, &mut key);
        assert_eq!(key, b"k000000000000042");
    }
}
