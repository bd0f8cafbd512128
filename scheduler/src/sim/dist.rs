//! Latency distributions fitted to measured percentiles, and the seeded
//! random streams that draw from them.
//!
//! A latency given as a median and a 99th percentile becomes a log-normal
//! distribution: `ln X ~ N(mu, sigma²)` with `mu = ln p50` and
//! `sigma = (ln p99 − ln p50) / z₀.₉₉` (z₀.₉₉ = 2.3263), so the fitted
//! distribution has exactly the measured p50 and p99, is positive, and has
//! the long right tail service times show. Equal p50 and p99 give a
//! constant.

use switchyard_loadgen::rng::SplitMix64;

/// The standard normal quantile at 0.99.
const Z_99: f64 = 2.326_347_874_040_841;

/// A seeded random stream.
#[derive(Debug, Clone)]
pub struct Stream {
    rng: SplitMix64,
    /// The second normal of the last Box–Muller pair, not yet used.
    spare: Option<f64>,
}

impl Stream {
    /// Stream number `id` of the run seeded with `seed`: streams of one
    /// seed are independent of each other, so one policy's choices do not
    /// shift the arrivals or another backend's draws.
    pub fn new(seed: u64, id: u64) -> Self {
        let mut mixer = SplitMix64::new(seed ^ id.wrapping_mul(0xD1B5_4A32_D192_ED03));
        Self {
            rng: SplitMix64::new(mixer.next_u64()),
            spare: None,
        }
    }

    /// 64 uniform bits.
    pub fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }

    /// Uniform in `[0, 1)`.
    pub fn uniform(&mut self) -> f64 {
        self.rng.next_f64()
    }

    /// A standard normal (Box–Muller, both values used).
    pub fn normal(&mut self) -> f64 {
        if let Some(z) = self.spare.take() {
            return z;
        }
        // 1 − u is in (0, 1], so the logarithm is finite.
        let u = 1.0 - self.rng.next_f64();
        let v = self.rng.next_f64();
        let r = (-2.0 * u.ln()).sqrt();
        let angle = std::f64::consts::TAU * v;
        self.spare = Some(r * angle.sin());
        r * angle.cos()
    }
}

/// A log-normal latency distribution in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogNormal {
    /// The median in ms (kept exactly, for constant distributions).
    median: f64,
    mu: f64,
    sigma: f64,
}

impl LogNormal {
    /// The log-normal with median `p50_ms` and 99th percentile `p99_ms`
    /// (callers check 0 < p50 ≤ p99).
    pub fn from_percentiles(p50_ms: f64, p99_ms: f64) -> Self {
        let mu = p50_ms.ln();
        let sigma = ((p99_ms.ln() - mu) / Z_99).max(0.0);
        Self {
            median: p50_ms,
            mu,
            sigma,
        }
    }

    /// The median in ms.
    pub fn p50_ms(&self) -> f64 {
        self.median
    }

    /// The 99th percentile in ms.
    pub fn p99_ms(&self) -> f64 {
        (self.mu + Z_99 * self.sigma).exp()
    }

    /// One draw, in nanoseconds.
    pub fn sample_ns(&self, stream: &mut Stream) -> u64 {
        let ms = if self.sigma == 0.0 {
            self.median
        } else {
            (self.mu + self.sigma * stream.normal()).exp()
        };
        // Saturating float-to-int conversion; latencies are far below u64::MAX ns.
        (ms * 1e6).round() as u64
    }
}

/// Latency by batch size: the measured points, and a log-normal for every
/// batch size from 1 to the largest a model allows, interpolated linearly
/// in p50 and p99 between measured sizes and extrapolated per row beyond
/// the largest.
#[derive(Debug, Clone, PartialEq)]
pub struct BatchLatency {
    /// `(batch, p50 ms, p99 ms)`, ascending by batch, at least one.
    points: Vec<(u64, f64, f64)>,
    /// Index b − 1: the distribution of a batch of b rows.
    by_rows: Vec<LogNormal>,
}

impl BatchLatency {
    /// From measured `(batch, p50, p99)` points (ascending, non-empty,
    /// validated by the profile), for batches of up to `max_rows`.
    pub fn new(points: Vec<(u64, f64, f64)>, max_rows: u64) -> Self {
        let max_rows = max_rows.clamp(1, 4096);
        let by_rows = (1..=max_rows)
            .map(|rows| {
                let (p50, p99) = interpolate(&points, rows);
                LogNormal::from_percentiles(p50, p99)
            })
            .collect();
        Self { points, by_rows }
    }

    /// The distribution of a batch of `rows` rows.
    pub fn for_rows(&self, rows: u64) -> LogNormal {
        let index = usize::try_from(rows.max(1) - 1).unwrap_or(usize::MAX);
        match self.by_rows.get(index) {
            Some(dist) => *dist,
            None => {
                let (p50, p99) = interpolate(&self.points, rows);
                LogNormal::from_percentiles(p50, p99)
            }
        }
    }

    /// The measured points.
    pub fn points(&self) -> &[(u64, f64, f64)] {
        &self.points
    }
}

/// `(p50, p99)` at `rows` from the measured points.
fn interpolate(points: &[(u64, f64, f64)], rows: u64) -> (f64, f64) {
    let Some(&(first_rows, first_p50, first_p99)) = points.first() else {
        return (1.0, 1.0);
    };
    if rows <= first_rows {
        return (first_p50, first_p99);
    }
    for pair in points.windows(2) {
        let ((b0, a50, a99), (b1, c50, c99)) = (pair[0], pair[1]);
        if rows <= b1 {
            let t = (rows - b0) as f64 / (b1 - b0) as f64;
            return (a50 + t * (c50 - a50), a99 + t * (c99 - a99));
        }
    }
    // Beyond the largest measured batch: the same time per row.
    let &(last_rows, p50, p99) = points.last().unwrap_or(&(first_rows, first_p50, first_p99));
    let scale = rows as f64 / last_rows as f64;
    (p50 * scale, p99 * scale)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_fit_reproduces_the_percentiles_it_was_given() {
        let dist = LogNormal::from_percentiles(59.0, 80.0);
        assert!((dist.p50_ms() - 59.0).abs() < 1e-9);
        assert!((dist.p99_ms() - 80.0).abs() < 1e-9);
        let mut stream = Stream::new(1, 2);
        let mut draws: Vec<u64> = (0..200_000).map(|_| dist.sample_ns(&mut stream)).collect();
        draws.sort_unstable();
        let p50 = draws[100_000] as f64 / 1e6;
        let p99 = draws[198_000] as f64 / 1e6;
        assert!((p50 - 59.0).abs() < 0.3, "sampled p50 {p50}");
        assert!((p99 - 80.0).abs() < 1.0, "sampled p99 {p99}");
    }

    #[test]
    fn equal_percentiles_give_a_constant() {
        let dist = LogNormal::from_percentiles(2.0, 2.0);
        let mut stream = Stream::new(3, 0);
        assert!((0..100).all(|_| dist.sample_ns(&mut stream) == 2_000_000));
    }

    #[test]
    fn batches_interpolate_between_points_and_extrapolate_per_row() {
        let latency = BatchLatency::new(vec![(1, 1.0, 2.0), (9, 5.0, 10.0)], 32);
        let at = |rows| {
            let d = latency.for_rows(rows);
            (d.p50_ms(), d.p99_ms())
        };
        let close =
            |(a, b): (f64, f64), (c, d): (f64, f64)| (a - c).abs() < 1e-9 && (b - d).abs() < 1e-9;
        assert!(close(at(1), (1.0, 2.0)));
        assert!(close(at(5), (3.0, 6.0)), "{:?}", at(5));
        assert!(close(at(18), (10.0, 20.0)), "{:?}", at(18));
        assert!(close(at(100), (100.0 / 9.0 * 5.0, 100.0 / 9.0 * 10.0)));
    }

    #[test]
    fn streams_of_one_seed_differ_and_repeat() {
        let a: Vec<u64> = (0..4).map(|_| Stream::new(7, 1).next_u64()).collect();
        assert!(
            a.windows(2).all(|w| w[0] == w[1]),
            "same stream, same values"
        );
        assert_ne!(Stream::new(7, 1).next_u64(), Stream::new(7, 2).next_u64());
        assert_ne!(Stream::new(7, 1).next_u64(), Stream::new(8, 1).next_u64());
    }
}
