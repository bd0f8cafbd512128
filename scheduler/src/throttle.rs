//! Adaptive load shedding per model: client-side throttling as described in
//! Google's SRE book ("Handling Overload").
//!
//! Over a sliding window the gateway counts, per model, the `requests` that
//! arrived and the `accepts`: requests the backends took. When the backends
//! refuse more than they take, a new request is shed at the door, before
//! any placement work, with probability
//!
//! ```text
//! p = max(0, (requests − K · accepts) / (requests + 1))
//! ```
//!
//! Nothing is shed while the window holds fewer than `min_requests`
//! requests (as Envoy's admission control has an RPS threshold): a handful
//! of refusals at low traffic is not an overload worth shedding for.
//!
//! Accepts are counted as `requests − rejects`, where a reject is a request
//! that was refused for load everywhere (429, no backend with room), timed
//! out, or was shed. A request still in flight therefore counts as accepted
//! until it is refused, so a cold burst at start, whose first answers are
//! still on their way, is not shed for lack of history.
//!
//! With K = 2 nothing is shed until the backends refuse half of what comes,
//! and then the gateway sends them about K times what they accept: enough
//! to notice at once when they recover, not so much that refusals cost more
//! than the work. Shed requests count as requests, so under a sustained 10×
//! overload p approaches 1 − K/10 and the gateway's own memory and CPU stay
//! bounded while the admitted requests keep their latency. Shed requests get
//! 429 with `Retry-After`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Settings of shedding (`[placement.load_shedding]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleConfig {
    pub enabled: bool,
    /// K: the multiple of accepted requests let through.
    pub k: f64,
    pub window: Duration,
    /// Requests the window must hold before anything is shed.
    pub min_requests: u64,
}

impl Default for ThrottleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            k: 2.0,
            window: Duration::from_secs(10),
            min_requests: 20,
        }
    }
}

/// `[placement.load_shedding]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThrottleFile {
    enabled: bool,
    k: f64,
    window_ms: u64,
    min_requests: u64,
}

impl Default for ThrottleFile {
    fn default() -> Self {
        let d = ThrottleConfig::default();
        Self {
            enabled: d.enabled,
            k: d.k,
            window_ms: u64::try_from(d.window.as_millis()).unwrap_or(u64::MAX),
            min_requests: d.min_requests,
        }
    }
}

impl ThrottleFile {
    /// Checks the ranges; an error is `(key, message)`.
    pub fn validate(self) -> Result<ThrottleConfig, (&'static str, String)> {
        if !(self.k.is_finite() && self.k >= 1.0 && self.k <= 100.0) {
            return Err((
                "k",
                "must be between 1 and 100 (2 = let through twice what the backends accept)".into(),
            ));
        }
        if !(1_000..=3_600_000).contains(&self.window_ms) {
            return Err(("window_ms", "must be between 1000 and 3600000 ms".into()));
        }
        Ok(ThrottleConfig {
            enabled: self.enabled,
            k: self.k,
            window: Duration::from_millis(self.window_ms),
            min_requests: self.min_requests,
        })
    }
}

const BUCKETS: usize = 10;

#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    slot: u64,
    requests: u64,
    rejects: u64,
}

#[derive(Debug, Default)]
struct Window {
    buckets: [Bucket; BUCKETS],
}

impl Window {
    fn bucket(&mut self, slot: u64) -> &mut Bucket {
        let bucket = &mut self.buckets[(slot % BUCKETS as u64) as usize];
        if bucket.slot != slot {
            *bucket = Bucket {
                slot,
                requests: 0,
                rejects: 0,
            };
        }
        bucket
    }

    fn totals(&self, slot: u64) -> (u64, u64) {
        let oldest = slot.saturating_sub(BUCKETS as u64 - 1);
        self.buckets
            .iter()
            .filter(|b| b.slot >= oldest && b.slot <= slot)
            .fold((0, 0), |(r, j), b| (r + b.requests, j + b.rejects))
    }
}

/// A model's counts now, for stats.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThrottleState {
    pub requests: u64,
    pub accepts: u64,
    pub shed_probability: f64,
}

/// The shedding state of every model.
#[derive(Debug)]
pub struct Throttle {
    config: ThrottleConfig,
    origin: Instant,
    models: HashMap<String, Mutex<Window>>,
}

impl Throttle {
    pub fn new(config: ThrottleConfig, models: impl IntoIterator<Item = String>) -> Self {
        Self {
            config,
            origin: Instant::now(),
            models: models
                .into_iter()
                .map(|m| (m, Mutex::new(Window::default())))
                .collect(),
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        let width = self.config.window.as_nanos() / BUCKETS as u128;
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos() / width.max(1))
            .unwrap_or(u64::MAX)
    }

    fn probability(&self, requests: u64, rejects: u64) -> f64 {
        if requests < self.config.min_requests {
            return 0.0;
        }
        let accepts = requests.saturating_sub(rejects) as f64;
        let requests = requests as f64;
        ((requests - self.config.k * accepts) / (requests + 1.0)).max(0.0)
    }

    /// Counts a request for `model` and decides whether to shed it:
    /// `Some(p)` (the shedding probability) when it is shed. `random` is a
    /// uniform draw for this request.
    pub fn admit(&self, model: &str, random: u64, now: Instant) -> Option<f64> {
        if !self.config.enabled {
            return None;
        }
        let slot = self.slot(now);
        let window = self.models.get(model)?;
        let Ok(mut window) = window.lock() else {
            return None;
        };
        let (requests, rejects) = window.totals(slot);
        let p = self.probability(requests, rejects);
        // The top 53 bits as a uniform number in [0, 1).
        let u = (random >> 11) as f64 / (1u64 << 53) as f64;
        let shed = u < p;
        let bucket = window.bucket(slot);
        bucket.requests += 1;
        bucket.rejects += u64::from(shed);
        shed.then_some(p)
    }

    /// Counts a request of `model` that was refused for load or timed out.
    pub fn rejected(&self, model: &str, now: Instant) {
        if !self.config.enabled {
            return;
        }
        let slot = self.slot(now);
        if let Some(Ok(mut window)) = self.models.get(model).map(Mutex::lock) {
            window.bucket(slot).rejects += 1;
        }
    }

    /// Every model's counts and current shedding probability.
    pub fn states(&self, now: Instant) -> Vec<(String, ThrottleState)> {
        let slot = self.slot(now);
        let mut states: Vec<(String, ThrottleState)> = self
            .models
            .iter()
            .filter_map(|(model, window)| {
                let (requests, rejects) = window.lock().ok()?.totals(slot);
                Some((
                    model.clone(),
                    ThrottleState {
                        requests,
                        accepts: requests.saturating_sub(rejects),
                        shed_probability: self.probability(requests, rejects),
                    },
                ))
            })
            .collect();
        states.sort_by(|a, b| a.0.cmp(&b.0));
        states
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn throttle() -> (Throttle, Instant) {
        let t = Throttle::new(ThrottleConfig::default(), ["m".to_owned()]);
        let t0 = t.origin;
        (t, t0)
    }

    /// The i-th of n evenly spread draws in [0, 1), as the u64 `admit` takes.
    fn draw(i: u64, n: u64) -> u64 {
        (((i as f64 + 0.5) / n as f64) * (1u64 << 53) as f64) as u64 * 2048
    }

    #[test]
    fn nothing_is_shed_while_backends_take_at_least_half() {
        let (t, t0) = throttle();
        // A cold burst: nothing answered yet, nothing refused.
        for i in 0..1_000 {
            assert_eq!(t.admit("m", draw(i % 100, 100), t0), None);
        }
        // Then half of what comes is refused.
        for i in 0..1_000 {
            assert_eq!(t.admit("m", draw(i % 100, 100), t0), None);
            if i % 2 == 0 {
                t.rejected("m", t0);
            }
        }
        assert_eq!(t.states(t0)[0].1.shed_probability, 0.0);
    }

    #[test]
    fn under_10x_overload_about_k_times_the_accepts_get_through() {
        let (t, t0) = throttle();
        // 1,000 requests a second arrive; the backends take 100 a second and
        // refuse the rest. After a minute the window holds steady overload.
        let mut admitted_last_window = 0u32;
        for second in 0..60u64 {
            let mut taken = 0;
            for i in 0..1000u64 {
                let now = t0 + Duration::from_micros(second * 1_000_000 + i * 1000);
                if t.admit("m", draw((i * 7919) % 1000, 1000), now).is_none() {
                    if second >= 50 {
                        admitted_last_window += 1;
                    }
                    if taken < 100 {
                        taken += 1;
                    } else {
                        t.rejected("m", now);
                    }
                }
            }
        }
        // Steady state: p = (r − K·a)/(r + 1) with a = 100 of r = 1,000 per
        // second, so the backends see about K × 100 = 200 a second.
        assert!(
            (1_800..=2_200).contains(&admitted_last_window),
            "admitted {admitted_last_window} in the last 10 s"
        );
        let state = t.states(t0 + Duration::from_secs(60))[0].1;
        assert!((state.shed_probability - 0.8).abs() < 0.02, "{state:?}");
    }

    #[test]
    fn shedding_stops_when_the_window_forgets_the_overload() {
        let (t, t0) = throttle();
        for i in 0..1000u64 {
            if t.admit("m", draw(i, 1000), t0).is_none() {
                t.rejected("m", t0);
            }
        }
        assert!(t.admit("m", draw(10, 1000), t0).is_some());
        let later = t0 + Duration::from_secs(11);
        assert_eq!(t.admit("m", draw(10, 1000), later), None);
    }

    #[test]
    fn a_few_refusals_at_low_traffic_shed_nothing() {
        let (t, t0) = throttle();
        for _ in 0..20 {
            assert_eq!(t.admit("m", 0, t0), None);
            t.rejected("m", t0);
        }
        // Now the window holds 20 requests, all refused: shed.
        assert!(t.admit("m", 0, t0).is_some());
    }

    #[test]
    fn unknown_models_and_disabled_shedding_admit_all() {
        let (t, t0) = throttle();
        for _ in 0..100 {
            assert_eq!(t.admit("other", 0, t0), None);
        }
        let off = Throttle::new(
            ThrottleConfig {
                enabled: false,
                ..ThrottleConfig::default()
            },
            ["m".to_owned()],
        );
        for _ in 0..100 {
            off.rejected("m", t0);
            assert_eq!(off.admit("m", 0, t0), None);
        }
    }

    #[test]
    fn bad_settings_name_the_key() {
        let bad = |f: ThrottleFile| f.validate().unwrap_err().0;
        assert_eq!(
            bad(ThrottleFile {
                k: 0.5,
                ..ThrottleFile::default()
            }),
            "k"
        );
        assert_eq!(
            bad(ThrottleFile {
                window_ms: 5,
                ..ThrottleFile::default()
            }),
            "window_ms"
        );
        assert_eq!(
            ThrottleFile::default().validate(),
            Ok(ThrottleConfig::default())
        );
    }
}
