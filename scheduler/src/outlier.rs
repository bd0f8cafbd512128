//! Outlier ejection (circuit breaking) per backend.
//!
//! A backend that keeps failing is taken out of placement for a while, as
//! Envoy's outlier detection does, so requests go elsewhere at once instead
//! of each paying for the failure (fail fast):
//!
//! - **consecutive failures**: `consecutive_failures` failed answers in a
//!   row eject the backend;
//! - **failure rate**: over the last `interval`, at least
//!   `failure_rate_min_requests` answers of which a share of at least
//!   `failure_rate_threshold` failed eject it;
//! - **a hang**: a request that reached its deadline after the backend held
//!   it for at least `timeout_ejection`, with no request answered by the
//!   backend meanwhile, ejects it at once, so the next placement avoids a
//!   backend that stopped answering rather than feeding it more requests to
//!   hang. A backend that answered others while this one waited is not
//!   hung but behind (overload, a long queue): its timeout is an ordinary
//!   failure for the two rules above.
//!
//! An ejection lasts `base_ejection` × the number of ejections in a row
//! (capped at `max_ejection`). When it ends the backend is *half-open*: one
//! request (the probe) may go to it; if it succeeds the backend is back, if
//! it fails the backend is ejected again for longer. The count of ejections
//! in a row is forgotten once the backend has stayed healthy for
//! `max_ejection`.
//!
//! What counts: a failure is an answer that shows the backend broken (it
//! failed the inference, could not be reached, or hung past the deadline).
//! A refusal for load (429) is not: overload is placement's business, and
//! the failover and the shedding handle it.
//!
//! An ejected backend appears to the policies as not ready, with the reason,
//! so every policy skips it without knowing about ejection. When every
//! backend of a model is ejected, the gateway places its requests as if none
//! were (`panic_when_all_ejected`, as Envoy's panic threshold does): with
//! nowhere else to go, a backend that may answer serves more than a refusal
//! of everything.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

/// Settings of outlier ejection (`[placement.outlier_detection]`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct OutlierConfig {
    /// Off: no backend is ever ejected.
    pub enabled: bool,
    pub consecutive_failures: u32,
    pub failure_rate_threshold: f64,
    pub failure_rate_min_requests: u32,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection: Duration,
    pub timeout_ejection: Duration,
    /// Place on ejected backends when all of a model's are ejected.
    pub panic_when_all_ejected: bool,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            consecutive_failures: 5,
            failure_rate_threshold: 0.5,
            failure_rate_min_requests: 20,
            interval: Duration::from_secs(10),
            base_ejection: Duration::from_secs(1),
            max_ejection: Duration::from_secs(30),
            timeout_ejection: Duration::from_secs(1),
            panic_when_all_ejected: true,
        }
    }
}

/// `[placement.outlier_detection]` as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierFile {
    enabled: bool,
    consecutive_failures: u32,
    failure_rate_threshold: f64,
    failure_rate_min_requests: u32,
    interval_ms: u64,
    base_ejection_ms: u64,
    max_ejection_ms: u64,
    timeout_ejection_ms: u64,
    panic_when_all_ejected: bool,
}

impl Default for OutlierFile {
    fn default() -> Self {
        let d = OutlierConfig::default();
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Self {
            enabled: d.enabled,
            consecutive_failures: d.consecutive_failures,
            failure_rate_threshold: d.failure_rate_threshold,
            failure_rate_min_requests: d.failure_rate_min_requests,
            interval_ms: ms(d.interval),
            base_ejection_ms: ms(d.base_ejection),
            max_ejection_ms: ms(d.max_ejection),
            timeout_ejection_ms: ms(d.timeout_ejection),
            panic_when_all_ejected: d.panic_when_all_ejected,
        }
    }
}

impl OutlierFile {
    /// Checks the ranges; an error is `(key, message)` with the key relative
    /// to the section.
    pub fn validate(self) -> Result<OutlierConfig, (&'static str, String)> {
        if self.consecutive_failures == 0 {
            return Err((
                "consecutive_failures",
                "must be at least 1 (set enabled = false to turn ejection off)".into(),
            ));
        }
        if !(self.failure_rate_threshold > 0.0 && self.failure_rate_threshold <= 1.0) {
            return Err((
                "failure_rate_threshold",
                "must be a share above 0 and at most 1, e.g. 0.5".into(),
            ));
        }
        if self.failure_rate_min_requests == 0 {
            return Err(("failure_rate_min_requests", "must be at least 1".into()));
        }
        for (key, value) in [
            ("interval_ms", self.interval_ms),
            ("base_ejection_ms", self.base_ejection_ms),
            ("max_ejection_ms", self.max_ejection_ms),
            ("timeout_ejection_ms", self.timeout_ejection_ms),
        ] {
            if value == 0 || value > 86_400_000 {
                return Err((key, "must be between 1 and 86400000 ms".into()));
            }
        }
        if self.max_ejection_ms < self.base_ejection_ms {
            return Err((
                "max_ejection_ms",
                "must be at least base_ejection_ms".into(),
            ));
        }
        Ok(OutlierConfig {
            enabled: self.enabled,
            consecutive_failures: self.consecutive_failures,
            failure_rate_threshold: self.failure_rate_threshold,
            failure_rate_min_requests: self.failure_rate_min_requests,
            interval: Duration::from_millis(self.interval_ms),
            base_ejection: Duration::from_millis(self.base_ejection_ms),
            max_ejection: Duration::from_millis(self.max_ejection_ms),
            timeout_ejection: Duration::from_millis(self.timeout_ejection_ms),
            panic_when_all_ejected: self.panic_when_all_ejected,
        })
    }
}

/// How an attempt on a backend ended, as ejection sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    Success,
    /// The backend is broken: it failed the request or could not be reached.
    Failure,
    /// The deadline passed while the backend held the request this long.
    Timeout {
        held: Duration,
    },
    /// Refused for load, or for a model it does not serve: not its fault.
    Neutral,
}

/// Whether placement may use a backend now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Open,
    /// Half-open: one probe may go.
    Probe,
    /// Ejected, with the reason for the policies and the client.
    Ejected(String),
}

/// Where one backend stands, for stats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct EjectionState {
    pub ejected: bool,
    /// Ejections in a row (1 for the first).
    pub ejections: u32,
    pub total_ejections: u64,
    pub consecutive_failures: u32,
    /// Why the backend was last ejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
}

/// Outcome counts of a sliding window kept in a few buckets.
#[derive(Debug, Clone, Copy, Default)]
struct Bucket {
    /// Start of the bucket's slice of time, in bucket units since `origin`.
    slot: u64,
    answers: u32,
    failures: u32,
}

const BUCKETS: usize = 10;

#[derive(Debug)]
struct State {
    consecutive: u32,
    buckets: [Bucket; BUCKETS],
    /// Ejected until then (half-open after).
    ejected_until: Option<Instant>,
    probe_in_flight: bool,
    /// Ejections in a row, for the back-off.
    ejections: u32,
    total_ejections: u64,
    /// When the backend last came back (probe succeeded).
    healthy_since: Option<Instant>,
    /// When it last answered a request successfully.
    last_success: Option<Instant>,
    last_reason: Option<String>,
}

/// Ejection state of every backend, by index.
#[derive(Debug)]
pub struct OutlierDetector {
    config: OutlierConfig,
    origin: Instant,
    backends: Vec<Mutex<State>>,
}

impl OutlierDetector {
    pub fn new(config: OutlierConfig, backends: usize) -> Self {
        Self {
            config,
            origin: Instant::now(),
            backends: (0..backends)
                .map(|_| {
                    Mutex::new(State {
                        consecutive: 0,
                        buckets: [Bucket::default(); BUCKETS],
                        ejected_until: None,
                        probe_in_flight: false,
                        ejections: 0,
                        total_ejections: 0,
                        healthy_since: None,
                        last_success: None,
                        last_reason: None,
                    })
                })
                .collect(),
        }
    }

    fn slot(&self, now: Instant) -> u64 {
        let width = self.config.interval.as_nanos() / BUCKETS as u128;
        u64::try_from(now.saturating_duration_since(self.origin).as_nanos() / width.max(1))
            .unwrap_or(u64::MAX)
    }

    /// Whether a model whose backends are all ejected places on them anyway.
    pub fn panic_when_all_ejected(&self) -> bool {
        self.config.enabled && self.config.panic_when_all_ejected
    }

    /// May `backend` take a request now?
    pub fn admission(&self, backend: usize, now: Instant) -> Admission {
        if !self.config.enabled {
            return Admission::Open;
        }
        let Some(Ok(state)) = self.backends.get(backend).map(Mutex::lock) else {
            return Admission::Open;
        };
        match state.ejected_until {
            None => Admission::Open,
            Some(until) if now < until => Admission::Ejected(format!(
                "ejected: {}; back in {} ms",
                state.last_reason.as_deref().unwrap_or("failing"),
                until.saturating_duration_since(now).as_millis()
            )),
            Some(_) if state.probe_in_flight => Admission::Ejected(format!(
                "ejected: {}; a probe request is testing it",
                state.last_reason.as_deref().unwrap_or("failing")
            )),
            Some(_) => Admission::Probe,
        }
    }

    /// Claims the half-open backend's single probe; false when another
    /// request got it first (or the backend was ejected again).
    pub fn claim_probe(&self, backend: usize, now: Instant) -> bool {
        let Some(Ok(mut state)) = self.backends.get(backend).map(Mutex::lock) else {
            return true;
        };
        match state.ejected_until {
            None => true,
            Some(until) if now >= until && !state.probe_in_flight => {
                state.probe_in_flight = true;
                true
            }
            Some(_) => false,
        }
    }

    /// Records how an attempt on `backend` ended. Returns the reason when
    /// this answer ejected it.
    pub fn record(&self, backend: usize, answer: Answer, now: Instant) -> Option<String> {
        if !self.config.enabled {
            return None;
        }
        let slot = self.slot(now);
        let config = self.config;
        let Some(Ok(mut state)) = self.backends.get(backend).map(Mutex::lock) else {
            return None;
        };
        let failed = match answer {
            Answer::Success => false,
            Answer::Failure | Answer::Timeout { .. } => true,
            Answer::Neutral => {
                // A refused probe proves nothing: let another request try.
                state.probe_in_flight = false;
                return None;
            }
        };
        let bucket = &mut state.buckets[(slot % BUCKETS as u64) as usize];
        if bucket.slot != slot {
            *bucket = Bucket {
                slot,
                answers: 0,
                failures: 0,
            };
        }
        bucket.answers += 1;
        bucket.failures += u32::from(failed);
        let was_probe = state.probe_in_flight;
        state.probe_in_flight = false;
        if !failed {
            state.consecutive = 0;
            state.last_success = Some(now);
            // The probe succeeded (or, after the ejection ran out, some
            // request did): the backend is back. A request placed before
            // the ejection that succeeds during it does not end it.
            if was_probe || state.ejected_until.is_some_and(|until| now >= until) {
                state.ejected_until = None;
                state.healthy_since = Some(now);
            }
            if state
                .healthy_since
                .is_some_and(|since| now.saturating_duration_since(since) >= config.max_ejection)
            {
                state.ejections = 0;
                state.healthy_since = None;
            }
            return None;
        }
        state.consecutive = state.consecutive.saturating_add(1);
        if state.ejected_until.is_some_and(|until| now < until) {
            // Already out: answers of requests placed before the ejection.
            return None;
        }
        let reason = if was_probe && state.ejected_until.is_some() {
            Some("the probe request failed".to_owned())
        } else if let Answer::Timeout { held } = answer
            && held >= config.timeout_ejection
            && state
                .last_success
                .is_none_or(|at| now.saturating_duration_since(at) >= held)
        {
            Some(format!(
                "a request hung for {} ms, and the backend answered no request meanwhile",
                held.as_millis()
            ))
        } else if state.consecutive >= config.consecutive_failures {
            Some(format!("{} failures in a row", state.consecutive))
        } else {
            let oldest = slot.saturating_sub(BUCKETS as u64 - 1);
            let (answers, failures) = state
                .buckets
                .iter()
                .filter(|b| b.slot >= oldest && b.slot <= slot)
                .fold((0u32, 0u32), |(a, f), b| (a + b.answers, f + b.failures));
            let share = f64::from(failures) / f64::from(answers.max(1));
            (answers >= config.failure_rate_min_requests && share >= config.failure_rate_threshold)
                .then(|| {
                    format!(
                        "{failures} of its last {answers} answers failed ({:.0}%)",
                        share * 100.0
                    )
                })
        };
        let reason = reason?;
        state.ejections = state.ejections.saturating_add(1);
        state.total_ejections += 1;
        state.healthy_since = None;
        let backoff = config
            .base_ejection
            .saturating_mul(state.ejections)
            .min(config.max_ejection);
        state.ejected_until = Some(now + backoff);
        state.consecutive = 0;
        state.buckets = [Bucket::default(); BUCKETS];
        state.last_reason = Some(reason.clone());
        Some(format!("{reason}; ejected for {} ms", backoff.as_millis()))
    }

    /// Every backend's state, by index.
    pub fn states(&self, now: Instant) -> Vec<EjectionState> {
        self.backends
            .iter()
            .map(|state| match state.lock() {
                Ok(s) => EjectionState {
                    ejected: s.ejected_until.is_some_and(|until| now < until)
                        || (s.ejected_until.is_some() && s.probe_in_flight),
                    ejections: s.ejections,
                    total_ejections: s.total_ejections,
                    consecutive_failures: s.consecutive,
                    last_reason: s.last_reason.clone(),
                },
                Err(_) => EjectionState {
                    ejected: false,
                    ejections: 0,
                    total_ejections: 0,
                    consecutive_failures: 0,
                    last_reason: None,
                },
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn detector() -> (OutlierDetector, Instant) {
        let d = OutlierDetector::new(OutlierConfig::default(), 2);
        let t0 = d.origin;
        (d, t0)
    }

    #[test]
    fn consecutive_failures_eject_and_a_success_resets_the_count() {
        let (d, t0) = detector();
        for _ in 0..4 {
            assert_eq!(d.record(0, Answer::Failure, t0), None);
        }
        assert_eq!(d.record(0, Answer::Success, t0), None);
        for _ in 0..4 {
            assert_eq!(d.record(0, Answer::Failure, t0), None);
        }
        assert_eq!(d.admission(0, t0), Admission::Open);
        let reason = d.record(0, Answer::Failure, t0).unwrap();
        assert!(reason.contains("5 failures in a row"), "{reason}");
        match d.admission(0, t0 + ms(10)) {
            Admission::Ejected(why) => assert!(why.contains("back in 990 ms"), "{why}"),
            other => panic!("{other:?}"),
        }
        // The other backend is untouched.
        assert_eq!(d.admission(1, t0), Admission::Open);
    }

    #[test]
    fn refusals_for_load_are_not_failures() {
        let (d, t0) = detector();
        for _ in 0..100 {
            assert_eq!(d.record(0, Answer::Neutral, t0), None);
        }
        assert_eq!(d.admission(0, t0), Admission::Open);
    }

    #[test]
    fn a_hang_past_the_threshold_ejects_at_once_but_a_short_deadline_does_not() {
        let (d, t0) = detector();
        assert_eq!(d.record(0, Answer::Timeout { held: ms(50) }, t0), None);
        assert_eq!(d.admission(0, t0), Admission::Open);
        let reason = d.record(0, Answer::Timeout { held: ms(1500) }, t0).unwrap();
        assert!(reason.contains("hung for 1500 ms"), "{reason}");
        assert!(matches!(d.admission(0, t0), Admission::Ejected(_)));
    }

    #[test]
    fn a_timeout_while_the_backend_answered_others_is_not_a_hang() {
        let (d, t0) = detector();
        // Answers keep coming (a long queue under load) while one request
        // waits out its 10 s deadline: behind, not hung.
        assert_eq!(d.record(0, Answer::Success, t0 + ms(9_000)), None);
        let late = t0 + ms(10_000);
        assert_eq!(
            d.record(0, Answer::Timeout { held: ms(10_000) }, late),
            None
        );
        assert_eq!(d.admission(0, late), Admission::Open);
        // It still counts as a failure: five in a row eject.
        let mut reason = None;
        for i in 1..=4u64 {
            reason = d.record(0, Answer::Timeout { held: ms(10_000) }, late + ms(i));
        }
        assert!(
            reason
                .as_deref()
                .is_some_and(|r| r.contains("5 failures in a row")),
            "{reason:?}"
        );
        // With nothing answered within the held time it is a hang.
        let (d, t0) = detector();
        assert_eq!(d.record(0, Answer::Success, t0), None);
        let reason = d
            .record(0, Answer::Timeout { held: ms(1_500) }, t0 + ms(2_000))
            .unwrap();
        assert!(reason.contains("answered no request meanwhile"), "{reason}");
    }

    #[test]
    fn the_failure_rate_over_the_window_ejects() {
        let (d, t0) = detector();
        // Alternate success and failure: never 5 in a row, 50% failed.
        let mut ejected = None;
        for i in 0..40u64 {
            let answer = if i % 2 == 0 {
                Answer::Success
            } else {
                Answer::Failure
            };
            if let Some(r) = d.record(0, answer, t0 + ms(i * 10)) {
                ejected = Some((i, r));
                break;
            }
        }
        let (i, reason) = ejected.unwrap();
        // The 20th answer is the first with enough requests.
        assert_eq!(i, 19);
        assert!(
            reason.contains("10 of its last 20 answers failed (50%)"),
            "{reason}"
        );
    }

    #[test]
    fn old_failures_leave_the_window() {
        let (d, t0) = detector();
        for i in 0..15u64 {
            let answer = if i % 2 == 0 {
                Answer::Success
            } else {
                Answer::Failure
            };
            assert_eq!(d.record(0, answer, t0 + ms(i)), None);
        }
        // 11 s later those are forgotten: 15 more at 40% never eject.
        for i in 0..15u64 {
            let answer = if i % 5 < 2 {
                Answer::Failure
            } else {
                Answer::Success
            };
            assert_eq!(d.record(0, answer, t0 + ms(11_000 + i)), None);
        }
    }

    #[test]
    fn half_open_allows_one_probe_whose_outcome_decides() {
        let (d, t0) = detector();
        for _ in 0..5 {
            d.record(0, Answer::Failure, t0);
        }
        let later = t0 + ms(1001);
        assert_eq!(d.admission(0, later), Admission::Probe);
        assert!(d.claim_probe(0, later));
        // A second request does not get a probe while one is out.
        assert!(!d.claim_probe(0, later));
        assert!(matches!(d.admission(0, later), Admission::Ejected(_)));
        // The probe fails: ejected again, for twice as long.
        let reason = d.record(0, Answer::Failure, later).unwrap();
        assert!(
            reason.contains("probe request failed; ejected for 2000 ms"),
            "{reason}"
        );
        assert!(matches!(
            d.admission(0, later + ms(1999)),
            Admission::Ejected(_)
        ));
        let again = later + ms(2000);
        assert_eq!(d.admission(0, again), Admission::Probe);
        assert!(d.claim_probe(0, again));
        // This probe succeeds: open.
        assert_eq!(d.record(0, Answer::Success, again), None);
        assert_eq!(d.admission(0, again), Admission::Open);
        let state = &d.states(again)[0];
        assert!(!state.ejected);
        assert_eq!(state.total_ejections, 2);
    }

    #[test]
    fn a_refused_probe_frees_the_slot_for_another() {
        let (d, t0) = detector();
        for _ in 0..5 {
            d.record(0, Answer::Failure, t0);
        }
        let later = t0 + ms(1001);
        assert!(d.claim_probe(0, later));
        d.record(0, Answer::Neutral, later);
        assert_eq!(d.admission(0, later), Admission::Probe);
    }

    #[test]
    fn the_backoff_is_capped_and_forgotten_after_a_healthy_spell() {
        let config = OutlierConfig {
            consecutive_failures: 1,
            base_ejection: ms(1000),
            max_ejection: ms(3000),
            ..OutlierConfig::default()
        };
        let d = OutlierDetector::new(config, 1);
        let mut now = d.origin;
        let mut lengths = Vec::new();
        for _ in 0..5 {
            let reason = d.record(0, Answer::Failure, now).unwrap();
            lengths.push(reason);
            now += ms(3000);
            assert!(d.claim_probe(0, now));
        }
        assert!(lengths[0].ends_with("ejected for 1000 ms"));
        assert!(lengths[1].ends_with("ejected for 2000 ms"));
        assert!(lengths[4].ends_with("ejected for 3000 ms"));
        // Back, healthy for max_ejection: the next ejection is short again.
        d.record(0, Answer::Success, now);
        d.record(0, Answer::Success, now + ms(3000));
        let reason = d.record(0, Answer::Failure, now + ms(3001)).unwrap();
        assert!(reason.ends_with("ejected for 1000 ms"), "{reason}");
    }

    #[test]
    fn disabled_never_ejects() {
        let d = OutlierDetector::new(
            OutlierConfig {
                enabled: false,
                ..OutlierConfig::default()
            },
            1,
        );
        for _ in 0..50 {
            assert_eq!(d.record(0, Answer::Failure, d.origin), None);
        }
        assert_eq!(d.admission(0, d.origin), Admission::Open);
    }

    #[test]
    fn bad_settings_name_the_key() {
        let bad = |f: OutlierFile| f.validate().unwrap_err().0;
        assert_eq!(
            bad(OutlierFile {
                consecutive_failures: 0,
                ..OutlierFile::default()
            }),
            "consecutive_failures"
        );
        assert_eq!(
            bad(OutlierFile {
                failure_rate_threshold: 1.5,
                ..OutlierFile::default()
            }),
            "failure_rate_threshold"
        );
        assert_eq!(
            bad(OutlierFile {
                max_ejection_ms: 10,
                ..OutlierFile::default()
            }),
            "max_ejection_ms"
        );
        assert_eq!(
            OutlierFile::default().validate(),
            Ok(OutlierConfig::default())
        );
    }
}
