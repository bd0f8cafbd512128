//! A small seeded pseudo-random generator (SplitMix64) for arrival times and
//! payload values.
//!
//! Load tests must be reproducible: the same seed gives the same Poisson
//! arrivals and the same tensors on every machine and every version, which
//! a general-purpose RNG crate does not promise across releases. SplitMix64
//! passes BigCrush, needs eight bytes of state and is a dozen lines.

/// SplitMix64 (Steele, Lea and Flood, 2014).
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

const GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

impl SplitMix64 {
    /// A generator seeded with `seed`.
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    /// Draw number `index` (0-based) of the generator seeded with `seed`,
    /// computed directly: SplitMix64's state advances by a constant, so any
    /// draw is one multiply away. Lets threads draw per-request values that
    /// depend only on the seed and the request's number, not on timing.
    pub fn draw_at(seed: u64, index: u64) -> u64 {
        let mut generator = Self::new(seed.wrapping_add(index.wrapping_mul(GAMMA)));
        generator.next_u64()
    }

    /// Uniform in `[0, 1)` from draw number `index` of `seed`.
    #[allow(clippy::cast_precision_loss)]
    pub fn unit_at(seed: u64, index: u64) -> f64 {
        (Self::draw_at(seed, index) >> 11) as f64 / (1u64 << 53) as f64
    }

    /// The next 64 uniformly distributed bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(GAMMA);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`, with 53 bits of precision.
    #[allow(clippy::cast_precision_loss)]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `0..bound` (`bound` > 0; a zero bound gives 0).
    pub fn below(&mut self, bound: u64) -> u64 {
        if bound == 0 {
            return 0;
        }
        // Lemire's multiply-shift; the bias is below 2^-64 * bound, far
        // under anything a load test can notice.
        ((u128::from(self.next_u64()) * u128::from(bound)) >> 64) as u64
    }

    /// Exponentially distributed with the given mean (inverse transform).
    pub fn exponential(&mut self, mean: f64) -> f64 {
        // 1 - u is in (0, 1], so the logarithm is finite.
        -mean * (1.0 - self.next_f64()).ln()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_sequence() {
        let mut a = SplitMix64::new(7);
        let mut b = SplitMix64::new(7);
        for _ in 0..100 {
            assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn draw_at_is_the_nth_draw() {
        let mut sequential = SplitMix64::new(99);
        for index in 0..50 {
            assert_eq!(SplitMix64::draw_at(99, index), sequential.next_u64());
        }
    }

    #[test]
    fn known_first_value() {
        // Reference value of SplitMix64 seeded with 0.
        assert_eq!(SplitMix64::new(0).next_u64(), 0xE220_A839_7B1D_CDAF);
    }

    #[test]
    fn unit_interval_and_bounded() {
        let mut rng = SplitMix64::new(1);
        for _ in 0..10_000 {
            let x = rng.next_f64();
            assert!((0.0..1.0).contains(&x));
            assert!(rng.below(10) < 10);
        }
    }
}
