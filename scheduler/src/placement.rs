//! The placement engine around the pure policies: what the gateway has
//! observed of each backend (peak-EWMA latency and service time, and the
//! failure rate, per backend and model), the policy set (swapped
//! atomically on reload), the retry budget that bounds failover, and the
//! random draws that sample the decision log ([`crate::decision_log`]).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use dashmap::DashMap;

use crate::policy::Observed;
use crate::policy::spec::{PolicyFile, PolicySet};

/// Time constant of the latency peak-EWMA decay.
const LATENCY_DECAY: Duration = Duration::from_secs(5);
/// Weight of each answer in the failure-rate EWMA.
const FAILURE_WEIGHT: f64 = 0.05;
/// Time constant with which a backend's failure rate fades while it gets
/// no requests, so a backend that failed once is tried again.
const FAILURE_DECAY: Duration = Duration::from_secs(10);
/// Weight of each answer in the plain EWMA of service time, the level the
/// service-time peak fades to while a backend is idle.
const SERVICE_MEAN_WEIGHT: f64 = 0.1;

/// How long one successful answer took, split as its backend reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AnswerTime {
    /// Sent to answered, as the gateway (or the simulator) measured it.
    pub latency: Duration,
    /// Of that, the time the backend reports the request waited before it
    /// ran ([`Timing::queue`](switchyard_backends::Timing::queue)).
    pub queue: Duration,
}

impl AnswerTime {
    /// The answer's latency without its queue wait.
    pub fn service(&self) -> Duration {
        self.latency.saturating_sub(self.queue)
    }
}

/// Peak-EWMA update: a slower sample counts at once, a faster one pulls
/// the estimate down with the weight of the `elapsed` time since the last
/// answer over [`LATENCY_DECAY`], so recovery is gradual.
fn peak_ewma(current: Option<f64>, sample: Duration, elapsed: Duration) -> f64 {
    let ms = sample.as_secs_f64() * 1000.0;
    match current {
        Some(current) if ms < current => {
            let weight = 1.0 - (-elapsed.as_secs_f64() / LATENCY_DECAY.as_secs_f64()).exp();
            current + weight * (ms - current)
        }
        _ => ms,
    }
}

/// What answers of one backend for one model looked like recently: the
/// peak-EWMAs of latency and of service time, and the failure-rate EWMA,
/// updated answer by answer. The gateway keeps one per backend and model
/// in [`Observations`]; the simulator keeps its own, so policies see the
/// same numbers in both.
#[derive(Debug, Clone, Copy)]
pub struct ObservedTracker {
    observed: Observed,
    /// Plain EWMA of the service-time samples (no time decay, no peak).
    service_mean_ms: Option<f64>,
    last: Instant,
}

impl ObservedTracker {
    /// Nothing observed yet, as of `now`.
    pub fn new(now: Instant) -> Self {
        Self {
            observed: Observed::default(),
            service_mean_ms: None,
            last: now,
        }
    }

    /// What has been observed, as of `now`. While a backend gets no
    /// answers its estimates fade, so a backend that once looked slow or
    /// broken, and was therefore avoided, is tried again rather than
    /// avoided for good:
    ///
    /// - the end-to-end latency toward zero with the latency time
    ///   constant, as Finagle's and Linkerd's peak-EWMA balancers do: it
    ///   holds the queue the backend had, and an idle backend has none;
    /// - the service time with the same constant, but from its peak down
    ///   to the plain EWMA of its samples, not to zero: how long the
    ///   backend takes to run a request does not shrink while it idles.
    ///   Fading it to zero made a tier idle for ten seconds look seven
    ///   times faster than it had ever answered, so `adaptive` sent a
    ///   burst's first requests to the tier that had been idle longest;
    /// - the failure rate toward zero with [`FAILURE_DECAY`].
    pub fn observed(&self, now: Instant) -> Observed {
        let idle = now.saturating_duration_since(self.last).as_secs_f64();
        let mut observed = self.observed;
        if idle > 0.0 {
            let fade = |tau: Duration| (-idle / tau.as_secs_f64()).exp();
            let latency_fade = fade(LATENCY_DECAY);
            observed.latency_ms = observed.latency_ms.map(|ms| ms * latency_fade);
            observed.service_ms = observed.service_ms.map(|peak| {
                let floor = self.service_mean_ms.map_or(0.0, |mean| mean.min(peak));
                floor + (peak - floor) * latency_fade
            });
            observed.failure_rate *= fade(FAILURE_DECAY);
        }
        observed
    }

    /// Records one answer at `now`: how long it took if it succeeded, and
    /// whether the backend failed it.
    pub fn record(&mut self, time: Option<AnswerTime>, failed: bool, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last);
        self.last = now;
        let o = &mut self.observed;
        o.samples += 1;
        o.failure_rate += FAILURE_WEIGHT * (f64::from(u8::from(failed)) - o.failure_rate);
        if let Some(time) = time {
            o.latency_ms = Some(peak_ewma(o.latency_ms, time.latency, elapsed));
            o.service_ms = Some(peak_ewma(o.service_ms, time.service(), elapsed));
            let sample = time.service().as_secs_f64() * 1000.0;
            self.service_mean_ms = Some(
                self.service_mean_ms
                    .map_or(sample, |mean| mean + SERVICE_MEAN_WEIGHT * (sample - mean)),
            );
        }
    }
}

/// Per backend and model: what answers looked like recently.
#[derive(Debug, Default)]
pub struct Observations {
    entries: DashMap<(usize, String), Mutex<ObservedTracker>>,
}

impl Observations {
    /// The view of `backend` serving `model` at `now`.
    pub fn get(&self, backend: usize, model: &str, now: Instant) -> Observed {
        self.entries
            .get(&(backend, model.to_owned()))
            .and_then(|e| e.lock().ok().map(|s| s.observed(now)))
            .unwrap_or_default()
    }

    /// Records one answer: how long it took if it succeeded, and whether
    /// the backend failed it.
    pub fn record(
        &self,
        backend: usize,
        model: &str,
        time: Option<AnswerTime>,
        failed: bool,
        now: Instant,
    ) {
        let update = |state: &Mutex<ObservedTracker>| {
            if let Ok(mut s) = state.lock() {
                s.record(time, failed, now);
            }
        };
        let key = (backend, model.to_owned());
        match self.entries.get(&key) {
            Some(state) => update(&state),
            None => update(
                &self
                    .entries
                    .entry(key)
                    .or_insert_with(|| Mutex::new(ObservedTracker::new(now))),
            ),
        }
    }
}

/// Bounds failover to a share of the traffic, as Envoy and Linkerd do: each
/// original request deposits `ratio` tokens, each retry withdraws one, and a
/// small floor per second lets a quiet gateway still fail over.
#[derive(Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor_per_second: f64,
    cap: f64,
    state: Mutex<(f64, Instant)>,
}

impl RetryBudget {
    /// A budget of `ratio` retries per request plus `floor_per_second`,
    /// starting at `now` (given, not read from the clock, so that the
    /// simulator can run it in virtual time).
    pub fn new(ratio: f64, floor_per_second: f64, now: Instant) -> Self {
        let cap = (floor_per_second * 10.0).max(10.0);
        // Start with one second of the floor, so that a gateway that has
        // just started can fail over as well as one that has been running.
        let initial = floor_per_second.min(cap);
        Self {
            ratio,
            floor_per_second,
            cap,
            state: Mutex::new((initial, now)),
        }
    }

    /// Credits one original request.
    pub fn deposit(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.0 = (s.0 + self.ratio).min(self.cap);
        }
    }

    /// Takes one retry if the budget allows.
    pub fn try_withdraw(&self, now: Instant) -> bool {
        let Ok(mut s) = self.state.lock() else {
            return false;
        };
        let refill = now.saturating_duration_since(s.1).as_secs_f64() * self.floor_per_second;
        s.1 = now;
        s.0 = (s.0 + refill).min(self.cap);
        if s.0 >= 1.0 {
            s.0 -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where the policy set comes from and how to rebuild it.
#[derive(Debug)]
pub struct PolicySource {
    /// The policy file, if policies live in one (hot-reloadable).
    pub path: Option<PathBuf>,
    /// The inline policies of the gateway config, used without a file.
    pub inline: PolicyFile,
    pub backends: Vec<String>,
    pub models: Vec<String>,
    modified: Mutex<Option<SystemTime>>,
}

/// Why a reload did not apply.
#[derive(Debug, thiserror::Error)]
#[error("{source_name}: {key}: {message}")]
pub struct ReloadError {
    pub source_name: String,
    /// Key path inside the source (`(file)` when it cannot be read).
    pub key: String,
    pub message: String,
}

impl PolicySource {
    /// A source over `path` (or the inline policies).
    pub fn new(
        path: Option<PathBuf>,
        inline: PolicyFile,
        backends: Vec<String>,
        models: Vec<String>,
    ) -> Self {
        Self {
            path,
            inline,
            backends,
            models,
            modified: Mutex::new(None),
        }
    }

    /// Builds the policy set from the file (or the inline policies).
    pub fn build(&self) -> Result<PolicySet, ReloadError> {
        let (file, name) = match &self.path {
            Some(path) => {
                let name = path.display().to_string();
                if let (Ok(modified), Ok(mut slot)) = (
                    std::fs::metadata(path).and_then(|m| m.modified()),
                    self.modified.lock(),
                ) {
                    *slot = Some(modified);
                }
                let text = std::fs::read_to_string(path).map_err(|e| ReloadError {
                    source_name: name.clone(),
                    key: "(file)".into(),
                    message: format!("cannot read: {e}"),
                })?;
                let file = PolicyFile::parse(&text).map_err(|e| ReloadError {
                    source_name: name.clone(),
                    key: e.key,
                    message: e.message,
                })?;
                (file, name)
            }
            None => (
                self.inline.clone(),
                "[placement] of the gateway config".to_owned(),
            ),
        };
        PolicySet::build(&file, &self.backends, &self.models, &name).map_err(|e| ReloadError {
            source_name: name,
            key: e.key,
            message: e.message,
        })
    }

    /// Whether the file changed since it was last built.
    pub fn changed(&self) -> bool {
        let Some(path) = &self.path else { return false };
        let current = std::fs::metadata(path).and_then(|m| m.modified()).ok();
        self.modified
            .lock()
            .map(|seen| current.is_some() && *seen != current)
            .unwrap_or(false)
    }
}

/// The policy set in force and how to replace it.
#[derive(Debug)]
pub struct Policies {
    current: ArcSwap<PolicySet>,
    source: PolicySource,
    reloads: AtomicU64,
}

impl Policies {
    /// Builds the initial set; an error here stops the gateway from starting.
    pub fn new(source: PolicySource) -> Result<Self, ReloadError> {
        let set = source.build()?;
        Ok(Self {
            current: ArcSwap::from_pointee(set),
            source,
            reloads: AtomicU64::new(0),
        })
    }

    /// The set in force. Requests keep the set they started with, so a
    /// reload never changes a request midway.
    pub fn current(&self) -> Arc<PolicySet> {
        self.current.load_full()
    }

    /// Rebuilds from the source and swaps the new set in whole, or keeps the
    /// old one and returns why not.
    pub fn reload(&self) -> Result<Arc<PolicySet>, ReloadError> {
        match self.source.build() {
            Ok(set) => {
                let set = Arc::new(set);
                self.current.store(Arc::clone(&set));
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(source = %set.source, "placement policies reloaded");
                Ok(set)
            }
            Err(error) => {
                tracing::warn!(%error, "placement policies not reloaded; keeping the current ones");
                Err(error)
            }
        }
    }

    /// Reloads if the policy file changed on disk.
    pub fn reload_if_changed(&self) {
        if self.source.changed() {
            let _ = self.reload();
        }
    }

    /// Successful reloads so far.
    pub fn reload_count(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// `(model or "*", policy)` rows of the set in force.
    pub fn describe(&self) -> HashMap<String, String> {
        self.current().describe().into_iter().collect()
    }
}

/// A fast, non-cryptographic random source (SplitMix64 over a counter).
#[derive(Debug, Default)]
pub struct Random(AtomicU64);

impl Random {
    /// The next random number.
    pub fn next(&self) -> u64 {
        let mut z = self
            .0
            .fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::Relaxed)
            .wrapping_add(0x9E37_79B9_7F4A_7C15);
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An answer of `ms` with no queue wait.
    fn served(ms: u64) -> Option<AnswerTime> {
        Some(AnswerTime {
            latency: Duration::from_millis(ms),
            queue: Duration::ZERO,
        })
    }

    #[test]
    fn peak_ewma_jumps_up_and_decays_down() {
        let observations = Observations::default();
        let t0 = Instant::now();
        observations.record(0, "m", served(10), false, t0);
        observations.record(0, "m", served(100), false, t0);
        assert_eq!(
            observations.get(0, "m", t0).latency_ms,
            Some(100.0),
            "a slow answer counts at once"
        );
        observations.record(0, "m", served(10), false, t0 + Duration::from_secs(5));
        let after = observations
            .get(0, "m", t0 + Duration::from_secs(5))
            .latency_ms
            .expect("measured");
        // One time constant later: 100 + (1 - 1/e) * (10 - 100) = 43.1
        assert!((after - 43.11).abs() < 0.1, "{after}");
        assert_eq!(observations.get(1, "m", t0), Observed::default());
        // Without answers the estimate fades: one time constant later it
        // is 1/e of itself, so an avoided backend gets tried again.
        let faded = observations
            .get(0, "m", t0 + Duration::from_secs(10))
            .latency_ms
            .expect("measured");
        assert!(
            (faded - after / std::f64::consts::E).abs() < 0.01,
            "{faded}"
        );
    }

    #[test]
    fn service_time_leaves_out_the_queue_wait_latency_keeps_it() {
        let observations = Observations::default();
        let t0 = Instant::now();
        observations.record(0, "m", served(70), false, t0);
        // Waited 300 ms behind others, then ran 75 ms.
        let queued = AnswerTime {
            latency: Duration::from_millis(375),
            queue: Duration::from_millis(300),
        };
        observations.record(0, "m", Some(queued), false, t0);
        let observed = observations.get(0, "m", t0);
        assert_eq!(
            observed.latency_ms,
            Some(375.0),
            "end to end, queue included"
        );
        assert_eq!(observed.service_ms, Some(75.0), "the queue wait left out");
        // A backend reporting more queue than latency (clocks apart) counts
        // as no service time rather than a negative one.
        let skewed = AnswerTime {
            latency: Duration::from_millis(5),
            queue: Duration::from_millis(9),
        };
        assert_eq!(skewed.service(), Duration::ZERO);
    }

    #[test]
    fn an_idle_backends_service_time_fades_to_its_usual_level_not_to_zero() {
        let t0 = Instant::now();
        let mut tracker = ObservedTracker::new(t0);
        // Ten answers of 170 ms, then one slow one of 900 ms.
        for _ in 0..10 {
            tracker.record(served(170), false, t0);
        }
        tracker.record(served(900), false, t0);
        let now = tracker.observed(t0);
        assert_eq!(now.service_ms, Some(900.0), "the peak counts at once");
        // The plain mean: 170 + 0.1 * (900 - 170) = 243.
        let mean = 243.0;
        let after = |secs| tracker.observed(t0 + Duration::from_secs(secs));
        let one_tau = after(5).service_ms.expect("measured");
        let expected = mean + (900.0 - mean) / std::f64::consts::E;
        assert!((one_tau - expected).abs() < 0.01, "{one_tau} vs {expected}");
        // Long idle: the usual service time, not a backend that looks
        // seven times faster than it ever answered.
        let long = after(60).service_ms.expect("measured");
        assert!((long - mean).abs() < 0.01, "{long}");
        // The end-to-end latency, which holds past queues, still fades
        // toward zero for the load balancers.
        let latency = after(60).latency_ms.expect("measured");
        assert!(latency < 1.0, "{latency}");
        // A peak already below the mean (recent answers faster than older
        // ones) stays where it is rather than rising while idle.
        let mut faster = ObservedTracker::new(t0);
        faster.record(served(500), false, t0);
        let t1 = t0 + Duration::from_secs(30);
        faster.record(served(100), false, t1);
        let peak = faster.observed(t1).service_ms.expect("measured");
        assert!(peak < 110.0, "{peak}");
        let idle = faster
            .observed(t1 + Duration::from_secs(30))
            .service_ms
            .expect("measured");
        assert!((idle - peak).abs() < 1e-9, "{idle} vs {peak}");
    }

    #[test]
    fn failure_rate_tracks_failures() {
        let observations = Observations::default();
        let now = Instant::now();
        for _ in 0..100 {
            observations.record(0, "m", None, true, now);
        }
        assert!(observations.get(0, "m", now).failure_rate > 0.99);
        let later = observations
            .get(0, "m", now + Duration::from_secs(20))
            .failure_rate;
        assert!(
            (later - (-2.0f64).exp()).abs() < 0.01,
            "fades while idle: {later}"
        );
        for _ in 0..100 {
            observations.record(0, "m", served(1), false, now);
        }
        assert!(observations.get(0, "m", now).failure_rate < 0.01);
    }

    #[test]
    fn retry_budget_allows_about_a_fifth_of_traffic() {
        let now = Instant::now();
        let budget = RetryBudget::new(0.2, 0.0, now);
        let mut retries = 0;
        for _ in 0..1000 {
            budget.deposit();
            if budget.try_withdraw(now) {
                retries += 1;
            }
        }
        assert!((199..=200).contains(&retries), "{retries}");
        assert!(!budget.try_withdraw(now), "spent");
        let start = Instant::now();
        let floor = RetryBudget::new(0.2, 10.0, start);
        let initial = (0..100).filter(|_| floor.try_withdraw(start)).count();
        assert_eq!(initial, 10, "a new budget holds one second of the floor");
        assert!(
            floor.try_withdraw(start + Duration::from_secs(1)),
            "the floor refills with time"
        );
    }

    #[test]
    fn random_numbers_spread_over_the_range() {
        let random = Random::default();
        let high = (0..10_000).filter(|_| random.next() > u64::MAX / 2).count();
        assert!((4_500..5_500).contains(&high), "{high}");
    }
}
