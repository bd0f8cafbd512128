//! What a simulated run reports: latency percentiles of the successful
//! requests (HDR histograms, as the gateway and the load generator keep
//! them), failures by reason, cost by tier, and placement shares over time,
//! as JSON and Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use switchyard_backends::{BackendError, BackendKind};

use super::engine::Workload;
use super::events::Time;

/// Why a request failed, named as the gateway's `outcome` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureReason {
    /// Refused by the last backend tried (429), with no failover left.
    Overloaded,
    /// No backend could take it (503).
    Unavailable,
    /// The deadline passed (504).
    Timeout,
    /// The backend failed it (500).
    Error,
}

impl FailureReason {
    /// The outcome a backend error becomes at the gateway.
    pub fn of(error: &BackendError) -> Self {
        match error {
            BackendError::Overloaded { .. } => Self::Overloaded,
            BackendError::Unavailable { .. } | BackendError::NotServed { .. } => Self::Unavailable,
            BackendError::DeadlineExceeded { .. } => Self::Timeout,
            BackendError::Failed { .. } => Self::Error,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Overloaded => "overloaded",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Error => "error",
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencyMs {
    pub count: u64,
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p999: f64,
    pub max: f64,
}

impl LatencyMs {
    fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Self {
            count: histogram.len(),
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// One tier over the run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendSummary {
    pub name: String,
    pub kind: BackendKind,
    /// Requests it answered successfully.
    pub served: u64,
    /// Share of all requests it served.
    pub share: f64,
    /// Requests it refused or failed (including ones that then failed over).
    pub refusals: u64,
    pub latency_ms: LatencyMs,
    pub cost_dollars: f64,
    /// Kind-specific activity: container cold starts and retirements;
    /// Lambda invocations, cold starts, throttles, GB-seconds.
    pub activity: serde_json::Value,
}

/// One time bucket (by arrival time).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Bucket {
    pub start_s: f64,
    pub end_s: f64,
    pub arrivals: u64,
    pub offered_per_s: f64,
    /// Requests served, by tier (in the order of `backends`).
    pub served: Vec<u64>,
    pub failed: u64,
    pub failure_rate: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// The report of one simulated run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SimReport {
    /// The run's name (the policy file or spec).
    pub label: String,
    /// Where its policies came from.
    pub policy_source: String,
    pub models: Vec<String>,
    pub seed: u64,
    pub arrivals: &'static str,
    /// Virtual time from the first arrival to the last answer.
    pub simulated_seconds: f64,
    pub requests: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub failure_rate: f64,
    pub failures: BTreeMap<FailureReason, u64>,
    /// Successful requests, as the client sees them (gateway overhead included).
    pub latency_ms: LatencyMs,
    pub cost_dollars: f64,
    pub cost_per_1000_requests: f64,
    /// Refusals that became a placement elsewhere.
    pub failovers: u64,
    /// Refusals that could have failed over but for the retry budget.
    pub retry_budget_exhausted: u64,
    pub backends: Vec<BackendSummary>,
    pub bucket_seconds: f64,
    pub buckets: Vec<Bucket>,
}

#[derive(Debug, Clone)]
struct BucketTally {
    arrivals: u64,
    served: Vec<u64>,
    failed: u64,
    latency: Histogram<u64>,
}

/// Collects a run's outcomes as they happen.
#[derive(Debug)]
pub struct Recorder {
    names: Vec<String>,
    kinds: Vec<BackendKind>,
    bucket: Time,
    latency: Histogram<u64>,
    by_backend: Vec<(u64, u64, Histogram<u64>)>,
    failures: BTreeMap<FailureReason, u64>,
    buckets: Vec<BucketTally>,
    requests: u64,
    failovers: u64,
    budget_exhausted: u64,
}

/// Microsecond histograms from 1 µs to 1 hour; larger values are clamped.
#[allow(clippy::expect_used)]
fn histogram(significant_figures: u8) -> Histogram<u64> {
    // Constant bounds (and 2 or 3 figures) that hdrhistogram accepts: this
    // cannot fail at run time.
    Histogram::new_with_bounds(1, 3_600_000_000, significant_figures)
        .expect("valid constant histogram bounds")
}

/// At most this many buckets; longer runs get wider ones.
const MAX_BUCKETS: u64 = 400;

impl Recorder {
    pub fn new(names: &[String], kinds: &[BackendKind], bucket: Duration, total: Duration) -> Self {
        let total = super::events::nanos(total).max(1);
        let mut width = super::events::nanos(bucket).max(1_000_000);
        if total.div_ceil(width) > MAX_BUCKETS {
            width = total.div_ceil(MAX_BUCKETS);
        }
        Self {
            names: names.to_vec(),
            kinds: kinds.to_vec(),
            bucket: width,
            latency: histogram(3),
            by_backend: names.iter().map(|_| (0, 0, histogram(2))).collect(),
            failures: BTreeMap::new(),
            buckets: Vec::new(),
            requests: 0,
            failovers: 0,
            budget_exhausted: 0,
        }
    }

    fn tally(&mut self, arrival: Time) -> &mut BucketTally {
        let index = usize::try_from(arrival / self.bucket)
            .unwrap_or(usize::MAX)
            .min(1 << 20);
        while self.buckets.len() <= index {
            self.buckets.push(BucketTally {
                arrivals: 0,
                served: vec![0; self.names.len()],
                failed: 0,
                latency: histogram(2),
            });
        }
        &mut self.buckets[index]
    }

    pub fn arrival(&mut self, at: Time) {
        self.requests += 1;
        self.tally(at).arrivals += 1;
    }

    pub fn success(&mut self, arrival: Time, backend: usize, latency: Time) {
        let us = (latency / 1000).max(1);
        self.latency.saturating_record(us);
        if let Some((served, _, histogram)) = self.by_backend.get_mut(backend) {
            *served += 1;
            histogram.saturating_record(us);
        }
        let tally = self.tally(arrival);
        if let Some(served) = tally.served.get_mut(backend) {
            *served += 1;
        }
        tally.latency.saturating_record(us);
    }

    pub fn failure(
        &mut self,
        arrival: Time,
        _backend: Option<usize>,
        reason: FailureReason,
        _elapsed: Time,
    ) {
        *self.failures.entry(reason).or_default() += 1;
        self.tally(arrival).failed += 1;
    }

    pub fn refusal(&mut self, backend: usize) {
        if let Some((_, refusals, _)) = self.by_backend.get_mut(backend) {
            *refusals += 1;
        }
    }

    pub fn failover(&mut self) {
        self.failovers += 1;
    }

    pub fn budget_exhausted(&mut self) {
        self.budget_exhausted += 1;
    }

    #[allow(clippy::too_many_arguments)]
    pub fn report(
        self,
        label: &str,
        source: &str,
        models: Vec<String>,
        workload: &Workload,
        end: Time,
        costs: Vec<f64>,
        details: Vec<serde_json::Value>,
    ) -> SimReport {
        let failed: u64 = self.failures.values().sum();
        let succeeded = self.latency.len();
        let requests = self.requests;
        let ratio = |n: u64| {
            if requests == 0 {
                0.0
            } else {
                n as f64 / requests as f64
            }
        };
        let cost: f64 = costs.iter().sum();
        let width = self.bucket as f64 / 1e9;
        let backends = self
            .names
            .iter()
            .zip(&self.kinds)
            .zip(self.by_backend.iter())
            .zip(costs.iter().zip(details))
            .map(
                |(((name, kind), (served, refusals, latency)), (cost, activity))| BackendSummary {
                    name: name.clone(),
                    kind: *kind,
                    served: *served,
                    share: ratio(*served),
                    refusals: *refusals,
                    latency_ms: LatencyMs::of(latency),
                    cost_dollars: *cost,
                    activity,
                },
            )
            .collect();
        let buckets = self
            .buckets
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let summary = LatencyMs::of(&b.latency);
                Bucket {
                    start_s: i as f64 * width,
                    end_s: (i + 1) as f64 * width,
                    arrivals: b.arrivals,
                    offered_per_s: b.arrivals as f64 / width,
                    served: b.served.clone(),
                    failed: b.failed,
                    failure_rate: if b.arrivals == 0 {
                        0.0
                    } else {
                        b.failed as f64 / b.arrivals as f64
                    },
                    p50_ms: summary.p50,
                    p99_ms: summary.p99,
                }
            })
            .collect();
        SimReport {
            label: label.to_owned(),
            policy_source: source.to_owned(),
            models,
            seed: workload.seed,
            arrivals: if workload.poisson {
                "poisson"
            } else {
                "constant"
            },
            simulated_seconds: end as f64 / 1e9,
            requests,
            succeeded,
            failed,
            failure_rate: ratio(failed),
            failures: self.failures,
            latency_ms: LatencyMs::of(&self.latency),
            cost_dollars: cost,
            cost_per_1000_requests: if requests == 0 {
                0.0
            } else {
                cost / requests as f64 * 1000.0
            },
            failovers: self.failovers,
            retry_budget_exhausted: self.budget_exhausted,
            backends,
            bucket_seconds: width,
            buckets,
        }
    }
}

/// `12.3%`, with more digits for small shares.
pub fn percent(share: f64) -> String {
    let p = share * 100.0;
    if p == 0.0 {
        "0%".into()
    } else if p < 0.1 {
        format!("{p:.3}%")
    } else if p < 10.0 {
        format!("{p:.2}%")
    } else {
        format!("{p:.1}%")
    }
}

/// Dollars with enough digits to compare small runs.
pub fn dollars(d: f64) -> String {
    if d == 0.0 {
        "$0".into()
    } else if d < 0.01 {
        format!("${d:.6}")
    } else {
        format!("${d:.4}")
    }
}

fn failures_text(report: &SimReport) -> String {
    if report.failures.is_empty() {
        return "none".into();
    }
    report
        .failures
        .iter()
        .map(|(reason, n)| format!("{} {n}", reason.as_str()))
        .collect::<Vec<_>>()
        .join(", ")
}

fn shares_text(report: &SimReport) -> String {
    report
        .backends
        .iter()
        .map(|b| format!("{} {}", b.name, percent(b.share)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The side-by-side table of several runs of one workload.
pub fn summary_table(reports: &[SimReport]) -> String {
    let mut out = String::from(
        "| policy | requests | failed | failures by reason | p50 ms | p99 ms | cost | $ per 1k | served by | failovers |\n\
         |---|---:|---:|---|---:|---:|---:|---:|---|---:|\n",
    );
    for r in reports {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {} | {} | {} | {} |",
            r.label,
            r.requests,
            percent(r.failure_rate),
            failures_text(r),
            r.latency_ms.p50,
            r.latency_ms.p99,
            dollars(r.cost_dollars),
            dollars(r.cost_per_1000_requests),
            shares_text(r),
            r.failovers
        );
    }
    out
}

/// The letter of a tier in the shares table.
fn symbol(kind: BackendKind) -> &'static str {
    match kind {
        BackendKind::Local => "L",
        BackendKind::Container => "C",
        BackendKind::Lambda => "λ",
    }
}

/// Placement shares over time: one row per bucket, one column per run,
/// each cell the share served by each tier (and failed), and the bucket's
/// p99.
pub fn shares_table(reports: &[SimReport]) -> String {
    let mut out = String::from(
        "Placement over time (share of each bucket's requests in %: L = local, C = container, λ = lambda, F = failed; p99 in ms):\n\n| time s | offered req/s |",
    );
    for r in reports {
        let _ = write!(out, " {} |", r.label);
    }
    out.push_str("\n|---|---:|");
    for _ in reports {
        out.push_str("---|");
    }
    out.push('\n');
    let rows = reports.iter().map(|r| r.buckets.len()).max().unwrap_or(0);
    for i in 0..rows {
        let Some(bucket) = reports.iter().find_map(|r| r.buckets.get(i)) else {
            continue;
        };
        let _ = write!(
            out,
            "| {:.0}–{:.0} | {:.1} |",
            bucket.start_s, bucket.end_s, bucket.offered_per_s
        );
        for r in reports {
            let cell = match r.buckets.get(i) {
                Some(b) if b.arrivals > 0 => {
                    let mut parts: Vec<String> = b
                        .served
                        .iter()
                        .zip(&r.backends)
                        .filter(|(n, _)| **n > 0)
                        .map(|(n, backend)| {
                            format!(
                                "{} {:.0}",
                                symbol(backend.kind),
                                *n as f64 / b.arrivals as f64 * 100.0
                            )
                        })
                        .collect();
                    if b.failed > 0 {
                        parts.push(format!("F {:.0}", b.failure_rate * 100.0));
                    }
                    format!("{} · p99 {:.0}", parts.join(" "), b.p99_ms)
                }
                _ => "–".into(),
            };
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}
