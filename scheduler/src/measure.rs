//! Request measurement for placement: how often each model is asked for.
//!
//! The rate of a model is the exact number of its requests in the last
//! `window`, divided by the window. Each model has its own lock (a `DashMap`
//! shard entry), so models do not contend with each other; arrival times are
//! kept as offsets from one start instant in a ring buffer, 8 bytes each
//! (at 30,000 requests/s over 10 s, 2.4 MB). Beside it an exponentially
//! weighted moving average of the instantaneous rate, with time constant
//! `window`, gives a smoother trend.
//!
//! The trend (how fast the rate is changing) comes from two such averages,
//! a slow one (time constant `window`) and a fast one (`window / 4`). On a
//! rate rising linearly at `b` requests/s per second, an average with time
//! constant τ lags the rate by `b·τ`, so `b = (fast − slow) / (τ_slow −
//! τ_fast)` and the rate now is `fast + b·τ_fast`. Placement uses it to see
//! a burst coming before it arrives ([`RequestRate::predicted`]).

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use dashmap::DashMap;

/// Requests per second of one model.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct RequestRate {
    /// Requests in the window divided by its length.
    pub window_per_second: f64,
    /// Exponentially weighted moving average of the arrival rate.
    pub ewma_per_second: f64,
    /// The rate now, from the fast average corrected for its lag.
    pub current_per_second: f64,
    /// How fast the rate is changing, requests/s per second (negative
    /// when it falls).
    pub trend_per_second2: f64,
}

impl RequestRate {
    /// A steady rate: no trend, every estimate the same.
    pub fn steady(per_second: f64) -> Self {
        Self {
            window_per_second: per_second,
            ewma_per_second: per_second,
            current_per_second: per_second,
            trend_per_second2: 0.0,
        }
    }

    /// The rate expected `horizon_s` seconds from now if the trend holds
    /// (never below 0, never below the rate now when the trend is flat).
    pub fn predicted(&self, horizon_s: f64) -> f64 {
        (self.current_per_second + self.trend_per_second2 * horizon_s.max(0.0)).max(0.0)
    }
}

/// The fast average's time constant as a share of the window.
const FAST_SHARE: f64 = 0.25;

#[derive(Debug)]
struct ModelArrivals {
    /// Arrival times in nanoseconds since `RateMeter::start`, oldest first.
    arrivals: VecDeque<u64>,
    ewma: f64,
    fast: f64,
    last: Option<u64>,
}

impl ModelArrivals {
    fn rate(&self, window: Duration) -> RequestRate {
        let slow_tau = window.as_secs_f64();
        let fast_tau = slow_tau * FAST_SHARE;
        let trend = if slow_tau > 0.0 {
            (self.fast - self.ewma) / (slow_tau - fast_tau)
        } else {
            0.0
        };
        RequestRate {
            window_per_second: self.arrivals.len() as f64 / slow_tau.max(f64::MIN_POSITIVE),
            ewma_per_second: self.ewma,
            current_per_second: (self.fast + trend * fast_tau).max(0.0),
            trend_per_second2: trend,
        }
    }
}

/// Per-model sliding-window request rates.
#[derive(Debug)]
pub struct RateMeter {
    start: Instant,
    window: Duration,
    models: DashMap<String, ModelArrivals>,
}

impl RateMeter {
    /// A meter counting over `window`, from `start` on. Times are given to
    /// every call rather than read from the clock, so the simulator can
    /// drive the same meter in virtual time.
    pub fn new(window: Duration, start: Instant) -> Self {
        Self {
            start,
            window,
            models: DashMap::new(),
        }
    }

    /// Records a request for `model` at `now` and returns the model's rate
    /// including it.
    pub fn record(&self, model: &str, now: Instant) -> RequestRate {
        let at = self.nanos(now);
        let mut entry = match self.models.get_mut(model) {
            Some(entry) => entry,
            None => self
                .models
                .entry(model.to_owned())
                .or_insert_with(|| ModelArrivals {
                    arrivals: VecDeque::new(),
                    ewma: 0.0,
                    fast: 0.0,
                    last: None,
                }),
        };
        let window = self.window.as_nanos() as f64;
        if let Some(last) = entry.last {
            let gap = at.saturating_sub(last).max(1) as f64;
            let instant = 1e9 / gap;
            let weight = 1.0 - (-gap / window).exp();
            entry.ewma += weight * (instant - entry.ewma);
            let weight = 1.0 - (-gap / (window * FAST_SHARE)).exp();
            entry.fast += weight * (instant - entry.fast);
        }
        entry.last = Some(at);
        entry.arrivals.push_back(at);
        Self::expire(&mut entry.arrivals, at, self.window);
        entry.rate(self.window)
    }

    /// The current rate of `model` without recording a request.
    pub fn rate(&self, model: &str, now: Instant) -> RequestRate {
        let at = self.nanos(now);
        match self.models.get_mut(model) {
            Some(mut entry) => {
                Self::expire(&mut entry.arrivals, at, self.window);
                entry.rate(self.window)
            }
            None => RequestRate::default(),
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.start).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Keeps the arrivals in `(now - window, now]`.
    fn expire(arrivals: &mut VecDeque<u64>, now: u64, window: Duration) {
        let window = u64::try_from(window.as_nanos()).unwrap_or(u64::MAX);
        let Some(horizon) = now.checked_sub(window) else {
            return;
        };
        while arrivals.front().is_some_and(|&t| t <= horizon) {
            arrivals.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_exactly_within_the_window_and_forgets_after_it() {
        let meter = RateMeter::new(Duration::from_secs(1), Instant::now());
        let t0 = Instant::now() + Duration::from_secs(1);
        for i in 0..100 {
            meter.record("m", t0 + Duration::from_millis(i * 5));
        }
        let rate = meter.rate("m", t0 + Duration::from_millis(500));
        assert!((rate.window_per_second - 100.0).abs() < 1e-9, "{rate:?}");
        // At t0 + 1.2 s the window is (t0 + 200 ms, t0 + 1.2 s]: the 41
        // arrivals at t0 + 0, 5, ..., 200 ms have left it, 59 remain.
        let rate = meter.rate("m", t0 + Duration::from_millis(1200));
        assert!((rate.window_per_second - 59.0).abs() < 1e-9, "{rate:?}");
        assert_eq!(
            meter
                .rate("m", t0 + Duration::from_secs(5))
                .window_per_second,
            0.0
        );
        assert_eq!(meter.rate("other", t0).window_per_second, 0.0);
    }

    #[test]
    fn ewma_tracks_a_steady_rate() {
        let t0 = Instant::now();
        let meter = RateMeter::new(Duration::from_millis(100), t0);
        let mut rate = RequestRate::default();
        for i in 0..2000 {
            rate = meter.record("m", t0 + Duration::from_millis(i)); // 1000/s
        }
        assert!((rate.ewma_per_second - 1000.0).abs() < 1.0, "{rate:?}");
        assert!((rate.window_per_second - 1000.0).abs() < 20.0, "{rate:?}");
        assert!(rate.trend_per_second2.abs() < 20.0, "{rate:?}");
        assert!((rate.predicted(5.0) - 1000.0).abs() < 100.0, "{rate:?}");
    }

    /// Requests at the instantaneous rate `rate(t)` from `from` to `to`
    /// seconds; returns the meter's estimate after the last one.
    fn drive(
        meter: &RateMeter,
        t0: Instant,
        from: f64,
        to: f64,
        rate: impl Fn(f64) -> f64,
    ) -> RequestRate {
        let mut t = from;
        let mut last = RequestRate::default();
        while t < to {
            last = meter.record("m", t0 + Duration::from_secs_f64(t));
            t += 1.0 / rate(t);
        }
        last
    }

    #[test]
    fn the_trend_of_a_linear_ramp_is_its_slope() {
        // The paper's ramp shape: 10 -> 70 requests/s over 60 s, 1/s².
        let t0 = Instant::now();
        let meter = RateMeter::new(Duration::from_secs(10), t0);
        let rate = drive(&meter, t0, 0.0, 60.0, |t| 10.0 + t);
        assert!((rate.trend_per_second2 - 1.0).abs() < 0.15, "{rate:?}");
        assert!((rate.current_per_second - 70.0).abs() < 5.0, "{rate:?}");
        // The slow average lags by about slope x window.
        assert!(rate.ewma_per_second < 62.0, "{rate:?}");
        assert!((rate.predicted(10.0) - 80.0).abs() < 6.0, "{rate:?}");
    }

    #[test]
    fn a_step_up_shows_as_a_rising_trend_before_the_window_catches_up() {
        let t0 = Instant::now();
        let meter = RateMeter::new(Duration::from_secs(10), t0);
        drive(&meter, t0, 0.0, 30.0, |_| 5.0);
        // Two seconds into a jump to 100/s.
        let rate = drive(&meter, t0, 30.0, 32.0, |_| 100.0);
        // The window still says 24/s; the fast average with its lag
        // correction says 69/s and rising 4.7/s per second.
        assert!(rate.window_per_second < 30.0, "{rate:?}");
        assert!(rate.current_per_second > 60.0, "{rate:?}");
        assert!(rate.trend_per_second2 > 3.0, "{rate:?}");
        assert!(rate.predicted(5.0) > 90.0, "{rate:?}");
        // A fall is a negative trend, and the prediction never goes below 0.
        let rate = drive(&meter, t0, 60.0, 62.0, |_| 1.0);
        assert!(rate.trend_per_second2 < 0.0, "{rate:?}");
        assert!(rate.predicted(1000.0) >= 0.0, "{rate:?}");
    }
}
