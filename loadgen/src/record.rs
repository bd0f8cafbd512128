//! Recording a run: an HDR histogram of latency per outcome (µs resolution),
//! counts, the backends that served, the server's own timing headers, and
//! optionally every request's sample for plots; and the serialisable
//! [`Report`] summarising them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::LoadgenError;
use crate::client::Exchange;

/// How a request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// A 2xx answer.
    Success,
    /// 429 Too Many Requests.
    Throttled,
    /// Any 5xx.
    ServerError,
    /// Any other non-2xx status (4xx other than 429, 3xx, 1xx).
    OtherStatus,
    /// No complete answer within the request timeout.
    Timeout,
    /// Connecting, writing or reading failed.
    ConnectionError,
    /// Never sent: `max_in_flight` requests were already outstanding when
    /// it was due. Counted, so an overloaded run cannot hide load it did
    /// not offer.
    Dropped,
}

impl Outcome {
    /// Every outcome, in report order.
    pub const ALL: [Outcome; 7] = [
        Outcome::Success,
        Outcome::Throttled,
        Outcome::ServerError,
        Outcome::OtherStatus,
        Outcome::Timeout,
        Outcome::ConnectionError,
        Outcome::Dropped,
    ];

    /// Short name for tables.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Success => "2xx",
            Outcome::Throttled => "429",
            Outcome::ServerError => "5xx",
            Outcome::OtherStatus => "other",
            Outcome::Timeout => "timeout",
            Outcome::ConnectionError => "conn-err",
            Outcome::Dropped => "dropped",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// The server's timing headers of one response, when present.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServerTiming {
    pub queue_us: Option<u64>,
    pub inference_us: Option<u64>,
    pub batch_rows: Option<u64>,
}

/// One request, kept when a run keeps samples (for time-series plots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Intended send time, from the start of the run.
    pub intended_offset_us: u64,
    /// From intended send time to the end of the response (0 if dropped).
    pub latency_us: u64,
    pub outcome: Outcome,
}

/// A finished request as the runner hands it to the recorder.
#[derive(Debug, Clone, Copy)]
pub struct Completed<'a> {
    /// When the schedule said to send it.
    pub intended: Instant,
    /// When the client actually began sending it.
    pub sent: Instant,
    /// When the response was read (or the request failed).
    pub done: Instant,
    pub rows: u64,
    pub exchange: &'a Exchange,
}

/// 1 µs to 1 hour at 3 significant digits; larger values are clamped.
#[allow(clippy::expect_used)]
fn histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts: this cannot fail at run time.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid constant histogram bounds")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Everything measured during a run (or one worker's part of it).
#[derive(Debug, Clone)]
pub struct Recorder {
    start: Instant,
    /// From intended send time, per outcome (the `Dropped` one stays empty).
    latency: Vec<Histogram<u64>>,
    dropped: u64,
    /// Successful requests, from the actual send time.
    service_time: Histogram<u64>,
    /// How late the client sent each request after its intended time.
    send_lag: Histogram<u64>,
    server_queue: Histogram<u64>,
    server_inference: Histogram<u64>,
    batch_rows: Histogram<u64>,
    backends: BTreeMap<String, u64>,
    rows_ok: u64,
    last_done: Option<Instant>,
    samples: Option<Vec<Sample>>,
}

impl Recorder {
    /// An empty recorder for a run that started at `start`.
    pub fn new(start: Instant, keep_samples: bool) -> Self {
        Self {
            start,
            latency: Outcome::ALL.iter().map(|_| histogram()).collect(),
            dropped: 0,
            service_time: histogram(),
            send_lag: histogram(),
            server_queue: histogram(),
            server_inference: histogram(),
            batch_rows: histogram(),
            backends: BTreeMap::new(),
            rows_ok: 0,
            last_done: None,
            samples: keep_samples.then(Vec::new),
        }
    }

    /// Records a request that was sent.
    pub fn record(&mut self, completed: &Completed<'_>) {
        let outcome = completed.exchange.outcome;
        let latency = micros(completed.done.saturating_duration_since(completed.intended));
        self.latency[outcome.index()].saturating_record(latency);
        self.send_lag.saturating_record(micros(
            completed.sent.saturating_duration_since(completed.intended),
        ));
        if outcome == Outcome::Success {
            self.rows_ok += completed.rows;
            self.service_time.saturating_record(micros(
                completed.done.saturating_duration_since(completed.sent),
            ));
            let server = completed.exchange.server;
            for (histogram, value) in [
                (&mut self.server_queue, server.queue_us),
                (&mut self.server_inference, server.inference_us),
                (&mut self.batch_rows, server.batch_rows),
            ] {
                if let Some(value) = value {
                    histogram.saturating_record(value);
                }
            }
        }
        if let Some(backend) = &completed.exchange.backend {
            match self.backends.get_mut(backend) {
                Some(count) => *count += 1,
                None => {
                    self.backends.insert(backend.clone(), 1);
                }
            }
        }
        self.last_done = Some(
            self.last_done
                .map_or(completed.done, |t| t.max(completed.done)),
        );
        self.push_sample(completed.intended, latency, outcome);
    }

    /// Records a request that was due at `intended` but not sent.
    pub fn record_dropped(&mut self, intended: Instant) {
        self.dropped += 1;
        self.push_sample(intended, 0, Outcome::Dropped);
    }

    fn push_sample(&mut self, intended: Instant, latency_us: u64, outcome: Outcome) {
        let start = self.start;
        if let Some(samples) = &mut self.samples {
            samples.push(Sample {
                intended_offset_us: micros(intended.saturating_duration_since(start)),
                latency_us,
                outcome,
            });
        }
    }

    /// Adds another recorder's measurements (from the same run) to this one.
    pub fn merge(&mut self, other: &Recorder) -> Result<(), LoadgenError> {
        let add = |into: &mut Histogram<u64>, from: &Histogram<u64>| {
            into.add(from)
                .map_err(|e| LoadgenError::Internal(format!("cannot merge histograms: {e:?}")))
        };
        for (into, from) in self.latency.iter_mut().zip(&other.latency) {
            add(into, from)?;
        }
        add(&mut self.service_time, &other.service_time)?;
        add(&mut self.send_lag, &other.send_lag)?;
        add(&mut self.server_queue, &other.server_queue)?;
        add(&mut self.server_inference, &other.server_inference)?;
        add(&mut self.batch_rows, &other.batch_rows)?;
        self.dropped += other.dropped;
        self.rows_ok += other.rows_ok;
        for (backend, count) in &other.backends {
            *self.backends.entry(backend.clone()).or_default() += count;
        }
        self.last_done = match (self.last_done, other.last_done) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
        if let (Some(into), Some(from)) = (&mut self.samples, &other.samples) {
            into.extend_from_slice(from);
        }
        Ok(())
    }

    /// Requests that ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Dropped => self.dropped,
            other => self.latency[other.index()].len(),
        }
    }

    /// Requests sent (every outcome except dropped).
    pub fn sent(&self) -> u64 {
        Outcome::ALL
            .iter()
            .filter(|&&o| o != Outcome::Dropped)
            .map(|&o| self.count(o))
            .sum()
    }

    /// Latency from intended send time, in µs, of requests with `outcome`.
    pub fn latency(&self, outcome: Outcome) -> &Histogram<u64> {
        &self.latency[outcome.index()]
    }

    /// Service time (from actual send) of successful requests, in µs.
    pub fn service_time(&self) -> &Histogram<u64> {
        &self.service_time
    }

    /// How late requests were sent after their intended time, in µs.
    pub fn send_lag(&self) -> &Histogram<u64> {
        &self.send_lag
    }

    /// Requests per backend (from the `switchyard-backend` header).
    pub fn backends(&self) -> &BTreeMap<String, u64> {
        &self.backends
    }

    /// Items (rows) carried by successful requests.
    pub fn rows_ok(&self) -> u64 {
        self.rows_ok
    }

    /// When the last request ended.
    pub fn last_done(&self) -> Option<Instant> {
        self.last_done
    }

    /// Every request's sample, ordered by intended time, if kept.
    pub fn samples(&self) -> Option<Vec<Sample>> {
        self.samples.as_ref().map(|samples| {
            let mut sorted = samples.clone();
            sorted.sort_by_key(|s| s.intended_offset_us);
            sorted
        })
    }

    fn server_timing(&self) -> ServerTimingReport {
        ServerTimingReport {
            queue_us: LatencySummary::of(&self.server_queue),
            inference_us: LatencySummary::of(&self.server_inference),
            batch_rows: LatencySummary::of(&self.batch_rows),
        }
    }
}

/// Percentiles of a histogram (µs for latencies).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub count: u64,
    pub min: u64,
    pub mean: f64,
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

impl LatencySummary {
    /// Summarises `histogram`; all zeros when it is empty.
    pub fn of(histogram: &Histogram<u64>) -> Self {
        if histogram.is_empty() {
            return Self::default();
        }
        Self {
            count: histogram.len(),
            min: histogram.min(),
            mean: histogram.mean(),
            p50: histogram.value_at_quantile(0.5),
            p90: histogram.value_at_quantile(0.9),
            p99: histogram.value_at_quantile(0.99),
            p999: histogram.value_at_quantile(0.999),
            max: histogram.max(),
        }
    }
}

/// Requests by outcome.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub success: u64,
    pub throttled: u64,
    pub server_error: u64,
    pub other_status: u64,
    pub timeout: u64,
    pub connection_error: u64,
    pub dropped: u64,
}

impl Counts {
    fn of(recorder: &Recorder) -> Self {
        Self {
            success: recorder.count(Outcome::Success),
            throttled: recorder.count(Outcome::Throttled),
            server_error: recorder.count(Outcome::ServerError),
            other_status: recorder.count(Outcome::OtherStatus),
            timeout: recorder.count(Outcome::Timeout),
            connection_error: recorder.count(Outcome::ConnectionError),
            dropped: recorder.count(Outcome::Dropped),
        }
    }

    /// Every request that did not succeed.
    pub fn errors(&self) -> u64 {
        self.throttled
            + self.server_error
            + self.other_status
            + self.timeout
            + self.connection_error
            + self.dropped
    }
}

/// The server's timing headers over successful requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ServerTimingReport {
    /// `switchyard-queue-time-us`.
    pub queue_us: LatencySummary,
    /// `switchyard-inference-time-us` (the batch's compute time).
    pub inference_us: LatencySummary,
    /// `switchyard-batch-rows`.
    pub batch_rows: LatencySummary,
}

/// How the load was offered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum LoadDescription {
    OpenLoop {
        arrival: &'static str,
        rate_per_s: f64,
        max_in_flight: usize,
    },
    ClosedLoop {
        concurrency: usize,
    },
}

/// The summary of a run, as printed and written to JSON.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub url: String,
    pub model: String,
    pub load: LoadDescription,
    /// Rows per request.
    pub batch_size: u64,
    /// Inputs in the binary tensor extension (else JSON tensors).
    pub binary: bool,
    /// Outputs asked for in binary form.
    pub binary_output: bool,
    /// The configured duration.
    pub duration_s: f64,
    /// From the start to the end of the last response.
    pub elapsed_s: f64,
    /// Requests due (open loop) or started (closed loop).
    pub scheduled: u64,
    pub sent: u64,
    pub counts: Counts,
    /// Requests due per second of the configured duration.
    pub offered_per_s: f64,
    /// Successful requests per second of elapsed time.
    pub throughput_per_s: f64,
    /// Items (rows) of successful requests per second.
    pub items_per_s: f64,
    /// Successful requests, from the intended send time.
    pub latency_us: LatencySummary,
    /// Every outcome that occurred (dropped requests have no latency).
    pub latency_by_outcome_us: BTreeMap<Outcome, LatencySummary>,
    /// Successful requests, from the actual send time.
    pub service_time_us: LatencySummary,
    /// How late requests went out after their intended time.
    pub send_lag_us: LatencySummary,
    /// Requests per `switchyard-backend` header value.
    pub backends: BTreeMap<String, u64>,
    pub server_timing: ServerTimingReport,
}

/// What a report needs besides the recorder.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub url: String,
    pub model: String,
    pub load: LoadDescription,
    pub batch_size: u64,
    pub binary: bool,
    pub binary_output: bool,
    pub duration: Duration,
    pub scheduled: u64,
    pub elapsed: Duration,
}

impl Report {
    /// Builds the report of a finished run.
    #[allow(clippy::cast_precision_loss)]
    pub fn new(recorder: &Recorder, info: RunInfo) -> Self {
        let counts = Counts::of(recorder);
        let elapsed = info.elapsed.as_secs_f64();
        let per_second = |n: u64| {
            if elapsed > 0.0 {
                n as f64 / elapsed
            } else {
                0.0
            }
        };
        let latency_by_outcome_us = Outcome::ALL
            .iter()
            .filter(|&&o| o != Outcome::Dropped && recorder.count(o) > 0)
            .map(|&o| (o, LatencySummary::of(recorder.latency(o))))
            .collect();
        Self {
            url: info.url,
            model: info.model,
            load: info.load,
            batch_size: info.batch_size,
            binary: info.binary,
            binary_output: info.binary_output,
            duration_s: info.duration.as_secs_f64(),
            elapsed_s: elapsed,
            scheduled: info.scheduled,
            sent: recorder.sent(),
            counts,
            offered_per_s: info.scheduled as f64 / info.duration.as_secs_f64().max(1e-9),
            throughput_per_s: per_second(counts.success),
            items_per_s: per_second(recorder.rows_ok()),
            latency_us: LatencySummary::of(recorder.latency(Outcome::Success)),
            latency_by_outcome_us,
            service_time_us: LatencySummary::of(recorder.service_time()),
            send_lag_us: LatencySummary::of(recorder.send_lag()),
            backends: recorder.backends().clone(),
            server_timing: recorder.server_timing(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(outcome: Outcome) -> Exchange {
        Exchange {
            outcome,
            backend: Some("local".into()),
            server: ServerTiming {
                queue_us: Some(5),
                inference_us: Some(50),
                batch_rows: Some(2),
            },
        }
    }

    #[test]
    fn latency_is_from_intended_time_and_merges() {
        let start = Instant::now();
        let mut a = Recorder::new(start, true);
        let mut b = Recorder::new(start, true);
        let ok = exchange(Outcome::Success);
        let intended = start + Duration::from_millis(10);
        a.record(&Completed {
            intended,
            sent: intended + Duration::from_millis(2),
            done: intended + Duration::from_millis(5),
            rows: 4,
            exchange: &ok,
        });
        let throttled = exchange(Outcome::Throttled);
        b.record(&Completed {
            intended,
            sent: intended,
            done: intended + Duration::from_millis(1),
            rows: 4,
            exchange: &throttled,
        });
        b.record_dropped(start);
        a.merge(&b).unwrap();
        assert_eq!(a.count(Outcome::Success), 1);
        assert_eq!(a.count(Outcome::Throttled), 1);
        assert_eq!(a.count(Outcome::Dropped), 1);
        assert_eq!(a.sent(), 2);
        assert_eq!(a.rows_ok(), 4);
        assert!(
            a.latency(Outcome::Success)
                .equivalent(a.latency(Outcome::Success).max(), 5000)
        );
        assert!(a.service_time().equivalent(a.service_time().max(), 3000));
        assert_eq!(a.backends().get("local"), Some(&2));
        let samples = a.samples().unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].outcome, Outcome::Dropped);
    }
}
