//! Latency and outcome statistics per backend, model and policy, kept in HDR
//! histograms (microsecond resolution, 3 significant digits) and served as
//! JSON at `GET /v2/switchyard/stats`. Prometheus metrics carry the same
//! facts in bucketed form; these give exact percentiles. Each series'
//! [`SeriesRecorder`] records a request into both.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use hdrhistogram::Histogram;
use serde::Serialize;

/// How a request ended, as recorded in stats and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Success,
    ClientError,
    Overloaded,
    Unavailable,
    Timeout,
    /// The client went away (closed its connection, e.g. at its own
    /// timeout) before the answer; nginx logs these as 499.
    Cancelled,
    Error,
}

impl Outcome {
    /// How many outcomes there are (`Error` is the last).
    const COUNT: usize = Outcome::Error as usize + 1;

    /// The `outcome` label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ClientError => "client_error",
            Outcome::Overloaded => "overloaded",
            Outcome::Unavailable => "unavailable",
            Outcome::Timeout => "timeout",
            Outcome::Cancelled => "cancelled",
            Outcome::Error => "error",
        }
    }

    /// Whether the backend failed the request. Client errors are not the
    /// backend's failure, nor is a request its client gave up on before
    /// the backend had answered or failed it (counted as `cancelled`).
    pub fn is_failure(self) -> bool {
        !matches!(
            self,
            Outcome::Success | Outcome::ClientError | Outcome::Cancelled
        )
    }
}

/// Which series a request belongs to.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SeriesKey {
    pub backend: String,
    pub model: String,
    pub policy: String,
}

#[derive(Debug)]
struct Series {
    latency_us: Histogram<u64>,
    outcomes: BTreeMap<Outcome, u64>,
}

impl Series {
    fn new() -> Self {
        Self {
            latency_us: latency_histogram(),
            outcomes: BTreeMap::new(),
        }
    }
}

/// 1 µs to 1 hour at 3 significant digits; larger values are clamped.
#[allow(clippy::expect_used)]
fn latency_histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts: this cannot fail at run time.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid constant histogram bounds")
}

/// Where one series' requests are recorded: its statistics, and its
/// handles on the Prometheus metrics (`switchyard_requests_total`,
/// `switchyard_request_duration_seconds`, `switchyard_request_payload_bytes`).
/// Made at the series' first request and kept, so that recording a request
/// builds no label strings and looks nothing up in the metrics registry.
/// Each handle is taken at its first use, as the metrics macros would
/// (a series shows in `/metrics` only once it has something to show).
#[derive(Debug)]
pub struct SeriesRecorder {
    key: SeriesKey,
    series: Mutex<Series>,
    requests: [OnceLock<metrics::Counter>; Outcome::COUNT],
    duration: OnceLock<metrics::Histogram>,
    payload: OnceLock<metrics::Histogram>,
}

impl SeriesRecorder {
    fn new(key: SeriesKey) -> Self {
        Self {
            key,
            series: Mutex::new(Series::new()),
            requests: Default::default(),
            duration: OnceLock::new(),
            payload: OnceLock::new(),
        }
    }

    /// Records one request's outcome and, for a success, its latency and
    /// payload size.
    pub fn record(&self, outcome: Outcome, latency: Duration, payload_bytes: u64) {
        if let Ok(mut series) = self.series.lock() {
            *series.outcomes.entry(outcome).or_insert(0) += 1;
            if outcome == Outcome::Success {
                let micros = u64::try_from(latency.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                series.latency_us.saturating_record(micros);
            }
        }
        let key = &self.key;
        self.requests[outcome as usize]
            .get_or_init(|| {
                metrics::counter!("switchyard_requests_total", "model" => key.model.clone(), "backend" => key.backend.clone(), "outcome" => outcome.as_str())
            })
            .increment(1);
        if outcome == Outcome::Success {
            self.duration
                .get_or_init(|| {
                    metrics::histogram!("switchyard_request_duration_seconds", "model" => key.model.clone(), "backend" => key.backend.clone())
                })
                .record(latency.as_secs_f64());
            self.payload
                .get_or_init(|| {
                    metrics::histogram!("switchyard_request_payload_bytes", "model" => key.model.clone())
                })
                .record(payload_bytes as f64);
        }
    }
}

/// Statistics of every series since the gateway started.
#[derive(Debug)]
pub struct Stats {
    started: Instant,
    series: DashMap<SeriesKey, Arc<SeriesRecorder>>,
}

impl Default for Stats {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            series: DashMap::new(),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// One series in the stats report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SeriesReport {
    pub backend: String,
    pub model: String,
    pub policy: String,
    pub requests: u64,
    pub failures: u64,
    pub failure_rate: f64,
    pub outcomes: BTreeMap<Outcome, u64>,
    /// Over successful requests.
    pub latency: Option<LatencySummary>,
}

/// The whole stats report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct StatsReport {
    pub uptime_seconds: f64,
    /// One entry per backend, over all models and policies.
    pub backends: Vec<SeriesReport>,
    /// One entry per backend, model and policy.
    pub series: Vec<SeriesReport>,
}

impl Stats {
    /// The recorder of the series `key`, made at its first request.
    /// Callers on the request path keep it rather than look it up again.
    pub fn series(&self, key: &SeriesKey) -> Arc<SeriesRecorder> {
        if let Some(recorder) = self.series.get(key) {
            return Arc::clone(&recorder);
        }
        let recorder = self
            .series
            .entry(key.clone())
            .or_insert_with(|| Arc::new(SeriesRecorder::new(key.clone())));
        Arc::clone(&recorder)
    }

    /// A consistent-enough copy of everything recorded so far.
    pub fn report(&self) -> StatsReport {
        let mut series: Vec<(SeriesKey, Histogram<u64>, BTreeMap<Outcome, u64>)> = self
            .series
            .iter()
            .filter_map(|entry| {
                let s = entry.value().series.lock().ok()?;
                Some((
                    entry.key().clone(),
                    s.latency_us.clone(),
                    s.outcomes.clone(),
                ))
            })
            .collect();
        series.sort_by(|a, b| a.0.cmp(&b.0));
        let mut per_backend: BTreeMap<String, (Histogram<u64>, BTreeMap<Outcome, u64>)> =
            BTreeMap::new();
        for (key, histogram, outcomes) in &series {
            let entry = per_backend
                .entry(key.backend.clone())
                .or_insert_with(|| (latency_histogram(), BTreeMap::new()));
            let _ = entry.0.add(histogram);
            for (outcome, count) in outcomes {
                *entry.1.entry(*outcome).or_insert(0) += count;
            }
        }
        StatsReport {
            uptime_seconds: self.started.elapsed().as_secs_f64(),
            backends: per_backend
                .into_iter()
                .map(|(backend, (h, o))| summarise(&backend, "*", "*", &h, o))
                .collect(),
            series: series
                .into_iter()
                .map(|(k, h, o)| summarise(&k.backend, &k.model, &k.policy, &h, o))
                .collect(),
        }
    }
}

fn summarise(
    backend: &str,
    model: &str,
    policy: &str,
    latency: &Histogram<u64>,
    outcomes: BTreeMap<Outcome, u64>,
) -> SeriesReport {
    let requests: u64 = outcomes.values().sum();
    let failures: u64 = outcomes
        .iter()
        .filter(|(o, _)| o.is_failure())
        .map(|(_, n)| n)
        .sum();
    let ms = |micros: u64| micros as f64 / 1000.0;
    SeriesReport {
        backend: backend.to_owned(),
        model: model.to_owned(),
        policy: policy.to_owned(),
        requests,
        failures,
        failure_rate: if requests == 0 {
            0.0
        } else {
            failures as f64 / requests as f64
        },
        outcomes,
        latency: (!latency.is_empty()).then(|| LatencySummary {
            p50_ms: ms(latency.value_at_quantile(0.5)),
            p90_ms: ms(latency.value_at_quantile(0.9)),
            p99_ms: ms(latency.value_at_quantile(0.99)),
            p999_ms: ms(latency.value_at_quantile(0.999)),
            max_ms: ms(latency.max()),
            mean_ms: latency.mean() / 1000.0,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_failure_rates_per_series_and_backend() {
        let stats = Stats::default();
        let key = |model: &str| SeriesKey {
            backend: "local".into(),
            model: model.into(),
            policy: "ordered".into(),
        };
        let a = stats.series(&key("a"));
        for ms in 1..=100 {
            a.record(Outcome::Success, Duration::from_millis(ms), 256);
        }
        stats
            .series(&key("a"))
            .record(Outcome::Overloaded, Duration::ZERO, 256);
        stats
            .series(&key("b"))
            .record(Outcome::ClientError, Duration::ZERO, 0);
        let report = stats.report();
        let a = &report.series[0];
        assert_eq!((a.model.as_str(), a.requests, a.failures), ("a", 101, 1));
        let latency = a.latency.as_ref().expect("has successes");
        assert!((latency.p50_ms - 50.0).abs() < 0.1, "{latency:?}");
        assert!((latency.p99_ms - 99.0).abs() < 0.1, "{latency:?}");
        assert!(
            report.series[1].latency.is_none(),
            "client errors have no latency"
        );
        assert_eq!(
            report.series[1].failure_rate, 0.0,
            "client errors are not failures"
        );
        let backend = &report.backends[0];
        assert_eq!((backend.requests, backend.failures), (102, 1));
    }
}
