//! Open-loop arrival schedules as pure functions of their settings.
//!
//! A schedule is the list of *intended* send times of a run, as offsets from
//! its start, computed before anything is sent. The runner paces requests to
//! these times and measures each latency from its intended time, so a slow
//! server cannot slow the offered load down (no coordinated omission). Being
//! a plain iterator, a schedule is tested without a clock or a server.

use std::time::Duration;

use crate::LoadgenError;
use crate::rng::SplitMix64;

/// How requests arrive.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Arrival {
    /// Evenly spaced: one request every `1 / rate` seconds, the first at 0.
    Constant { rate: f64 },
    /// A Poisson process: exponential inter-arrival times with mean
    /// `1 / rate`, drawn from a generator seeded with `seed`.
    Poisson { rate: f64, seed: u64 },
}

impl Arrival {
    /// Requests per second.
    pub fn rate(&self) -> f64 {
        match *self {
            Arrival::Constant { rate } | Arrival::Poisson { rate, .. } => rate,
        }
    }

    /// The process's name in reports.
    pub fn name(&self) -> &'static str {
        match self {
            Arrival::Constant { .. } => "constant",
            Arrival::Poisson { .. } => "poisson",
        }
    }
}

/// The intended send times of one open-loop run.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Schedule {
    pub arrival: Arrival,
    /// Requests are scheduled in `[0, duration)`.
    pub duration: Duration,
    /// At most this many requests, if set.
    pub max_requests: Option<u64>,
}

impl Schedule {
    /// Checks the settings: a finite positive rate and a non-zero duration.
    pub fn new(
        arrival: Arrival,
        duration: Duration,
        max_requests: Option<u64>,
    ) -> Result<Self, LoadgenError> {
        let rate = arrival.rate();
        if !(rate.is_finite() && rate > 0.0) {
            return Err(LoadgenError::Settings(format!(
                "the arrival rate must be a positive number of requests per second, not {rate}"
            )));
        }
        if duration.is_zero() {
            return Err(LoadgenError::Settings(
                "the duration must be greater than zero".into(),
            ));
        }
        Ok(Self {
            arrival,
            duration,
            max_requests,
        })
    }

    /// The intended send times, ascending, as offsets from the start.
    pub fn offsets(&self) -> Offsets {
        let rng = match self.arrival {
            Arrival::Poisson { seed, .. } => Some(SplitMix64::new(seed)),
            Arrival::Constant { .. } => None,
        };
        Offsets {
            schedule: *self,
            index: 0,
            poisson_clock: 0.0,
            rng,
        }
    }

    /// The mean gap between requests.
    pub fn mean_gap(&self) -> Duration {
        Duration::from_secs_f64(1.0 / self.arrival.rate())
    }
}

/// Iterator over a [`Schedule`]'s send times.
#[derive(Debug, Clone)]
pub struct Offsets {
    schedule: Schedule,
    index: u64,
    /// Seconds since the start of the last Poisson arrival.
    poisson_clock: f64,
    rng: Option<SplitMix64>,
}

impl Iterator for Offsets {
    type Item = Duration;

    #[allow(clippy::cast_precision_loss)]
    fn next(&mut self) -> Option<Duration> {
        if self
            .schedule
            .max_requests
            .is_some_and(|max| self.index >= max)
        {
            return None;
        }
        let rate = self.schedule.arrival.rate();
        let seconds = match &mut self.rng {
            // Each time is computed from the index, not by adding gaps, so
            // rounding does not accumulate over a long run.
            None => self.index as f64 / rate,
            Some(rng) => {
                self.poisson_clock += rng.exponential(1.0 / rate);
                self.poisson_clock
            }
        };
        if seconds >= self.schedule.duration.as_secs_f64() {
            return None;
        }
        self.index += 1;
        Some(Duration::from_secs_f64(seconds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schedule(arrival: Arrival, seconds: u64, max: Option<u64>) -> Schedule {
        Schedule::new(arrival, Duration::from_secs(seconds), max).unwrap()
    }

    #[test]
    fn constant_rate_gives_rate_times_duration_requests() {
        let s = schedule(Arrival::Constant { rate: 500.0 }, 10, None);
        let offsets: Vec<Duration> = s.offsets().collect();
        assert_eq!(offsets.len(), 5000);
        assert_eq!(offsets[0], Duration::ZERO);
        assert_eq!(offsets[1], Duration::from_millis(2));
        assert!(*offsets.last().unwrap() < Duration::from_secs(10));
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn fractional_rate_rounds_up_partial_gap() {
        // Times 0, 0.4, 0.8, 1.2 s are inside [0, 1.5 s).
        let s = Schedule::new(
            Arrival::Constant { rate: 2.5 },
            Duration::from_millis(1500),
            None,
        )
        .unwrap();
        assert_eq!(s.offsets().count(), 4);
    }

    #[test]
    fn max_requests_caps_the_schedule() {
        let s = schedule(Arrival::Constant { rate: 1000.0 }, 10, Some(123));
        assert_eq!(s.offsets().count(), 123);
        let p = schedule(
            Arrival::Poisson {
                rate: 1000.0,
                seed: 3,
            },
            10,
            Some(77),
        );
        assert_eq!(p.offsets().count(), 77);
    }

    #[test]
    fn poisson_inter_arrivals_have_the_right_mean_and_spread() {
        let rate = 2000.0;
        let s = schedule(Arrival::Poisson { rate, seed: 42 }, 100, None);
        let times: Vec<f64> = s.offsets().map(|d| d.as_secs_f64()).collect();
        let gaps: Vec<f64> = std::iter::once(times[0])
            .chain(times.windows(2).map(|w| w[1] - w[0]))
            .collect();
        let n = gaps.len() as f64;
        let mean = gaps.iter().sum::<f64>() / n;
        let variance = gaps.iter().map(|g| (g - mean).powi(2)).sum::<f64>() / (n - 1.0);
        // 200,000 exponential gaps: the standard error of the mean is
        // 1/sqrt(n) = 0.22% of it, so 1% is over four standard errors.
        assert!(
            (mean * rate - 1.0).abs() < 0.01,
            "mean gap {mean} vs {}",
            1.0 / rate
        );
        // An exponential's standard deviation equals its mean (a constant
        // schedule's is 0).
        let cv = variance.sqrt() / mean;
        assert!((cv - 1.0).abs() < 0.02, "coefficient of variation {cv}");
        // The count over the run is rate x duration within 1%.
        assert!((n / 200_000.0 - 1.0).abs() < 0.01, "count {n}");
    }

    #[test]
    fn poisson_is_reproducible_from_its_seed() {
        let a = schedule(
            Arrival::Poisson {
                rate: 100.0,
                seed: 9,
            },
            5,
            None,
        );
        let b = schedule(
            Arrival::Poisson {
                rate: 100.0,
                seed: 9,
            },
            5,
            None,
        );
        let c = schedule(
            Arrival::Poisson {
                rate: 100.0,
                seed: 10,
            },
            5,
            None,
        );
        assert!(a.offsets().eq(b.offsets()));
        assert!(!a.offsets().eq(c.offsets()));
    }

    #[test]
    fn bad_settings_are_refused() {
        for rate in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(
                Schedule::new(Arrival::Constant { rate }, Duration::from_secs(1), None).is_err()
            );
        }
        assert!(Schedule::new(Arrival::Constant { rate: 1.0 }, Duration::ZERO, None).is_err());
    }
}
