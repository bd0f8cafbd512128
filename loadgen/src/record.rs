//! Recording a run and reporting it.
//!
//! The [`Recorder`] keeps HDR histograms (µs resolution, 3 significant
//! digits) of latency from the intended send time, per outcome, for the
//! whole run and for each slice of it ([`Group`]): per phase, per mix entry
//! (summed per model in the report) and per `switchyard-backend` header
//! value. Beside them: how late requests went out, the server's own timing
//! headers, a [`TimeSeries`] of one-second buckets, and optionally every
//! request's [`Sample`].
//!
//! The [`Report`] is the serialisable summary, written by `--report` as
//! JSON; its schema is documented on the type and in `loadgen/README.md`,
//! and versioned by [`SCHEMA_VERSION`].

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::LoadgenError;
use crate::client::Exchange;
use crate::mix::MixEntry;
use crate::phases::{PhaseLoad, Process};

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

    /// Position in [`Outcome::ALL`].
    pub fn index(self) -> usize {
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
/// 24 bytes: the backend is an index into [`Recorder::backend_names`],
/// not a string per request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Sample {
    /// Intended send time, from the start of the run.
    pub intended_offset_us: u64,
    /// From intended send time to the end of the response (0 if dropped).
    pub latency_us: u64,
    pub outcome: Outcome,
    /// The `switchyard-backend` header of the answer, as an index into
    /// [`Recorder::backend_names`]; `None` without one (or without an answer).
    pub backend: Option<BackendId>,
}

/// A backend name interned by the [`Recorder`] of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BackendId(pub u16);

impl Sample {
    /// The backend that answered, by name, from the run's `names`
    /// ([`Recorder::backend_names`]).
    pub fn backend_name<'a>(&self, names: &'a [String]) -> Option<&'a str> {
        self.backend
            .and_then(|id| names.get(usize::from(id.0)))
            .map(String::as_str)
    }
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
    /// Index of the phase it was due in (0 in a closed loop).
    pub phase: usize,
    /// Index of its payload-mix entry.
    pub entry: usize,
    pub rows: u64,
    pub exchange: &'a Exchange,
}

/// 1 µs to 1 hour at 3 significant digits; larger values are clamped.
#[allow(clippy::expect_used)]
fn histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts: this cannot fail at run time.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid constant histogram bounds")
}

/// The same range at 2 significant digits (1% resolution, 13 KiB instead
/// of 190 KiB): enough for the per-second percentiles of the time series.
#[allow(clippy::expect_used)]
fn coarse_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid constant histogram bounds")
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

fn add(into: &mut Histogram<u64>, from: &Histogram<u64>) -> Result<(), LoadgenError> {
    into.add(from)
        .map_err(|e| LoadgenError::Internal(format!("cannot merge histograms: {e:?}")))
}

/// Counts and latencies of one slice of a run (the whole run, a phase, a
/// mix entry, a backend). Histograms are made on first use.
#[derive(Debug, Clone, Default)]
pub struct Group {
    counts: [u64; Outcome::ALL.len()],
    /// From the intended send time, per outcome (`Dropped` stays empty).
    latency: [Option<Histogram<u64>>; Outcome::ALL.len()],
    /// Successful requests, from the actual send time.
    service: Option<Histogram<u64>>,
    rows_ok: u64,
}

impl Group {
    fn record(&mut self, outcome: Outcome, latency_us: u64, service_us: u64, rows: u64) {
        self.counts[outcome.index()] += 1;
        self.latency[outcome.index()]
            .get_or_insert_with(histogram)
            .saturating_record(latency_us);
        if outcome == Outcome::Success {
            self.rows_ok += rows;
            self.service
                .get_or_insert_with(histogram)
                .saturating_record(service_us);
        }
    }

    fn record_dropped(&mut self) {
        self.counts[Outcome::Dropped.index()] += 1;
    }

    /// Adds `other`'s requests to these.
    pub fn merge(&mut self, other: &Group) -> Result<(), LoadgenError> {
        for (into, from) in self.counts.iter_mut().zip(other.counts) {
            *into += from;
        }
        for (into, from) in self.latency.iter_mut().zip(&other.latency) {
            if let Some(from) = from {
                add(into.get_or_insert_with(histogram), from)?;
            }
        }
        if let Some(from) = &other.service {
            add(self.service.get_or_insert_with(histogram), from)?;
        }
        self.rows_ok += other.rows_ok;
        Ok(())
    }

    /// Requests that ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.counts[outcome.index()]
    }

    /// Requests sent (every outcome but `Dropped`).
    pub fn sent(&self) -> u64 {
        self.due() - self.count(Outcome::Dropped)
    }

    /// Requests due: sent or dropped.
    pub fn due(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Latency from the intended send time of requests with `outcome`, in
    /// µs (`None` when there were none).
    pub fn latency(&self, outcome: Outcome) -> Option<&Histogram<u64>> {
        self.latency[outcome.index()].as_ref()
    }

    /// Service time (from the actual send) of successful requests, in µs.
    pub fn service_time(&self) -> Option<&Histogram<u64>> {
        self.service.as_ref()
    }

    /// Items (rows) carried by successful requests.
    pub fn rows_ok(&self) -> u64 {
        self.rows_ok
    }

    /// Latency of every request sent that did not succeed.
    fn error_latency(&self) -> Result<Option<Histogram<u64>>, LoadgenError> {
        let mut merged: Option<Histogram<u64>> = None;
        for outcome in Outcome::ALL {
            if outcome == Outcome::Success {
                continue;
            }
            if let Some(h) = self.latency(outcome) {
                add(merged.get_or_insert_with(histogram), h)?;
            }
        }
        Ok(merged)
    }
}

/// One second of a run.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Second {
    /// Requests due in this second (by intended send time).
    pub due: u64,
    /// Requests that ended in this second, by outcome (dropped ones end
    /// when they were due).
    pub ended: [u64; Outcome::ALL.len()],
    /// 2xx latency percentiles of the requests that ended in this second,
    /// set once the second is closed.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
}

/// Seconds whose latency histogram stays open for late recordings: two, so
/// a completion timed just before a second boundary but recorded just
/// after the next completion still lands in its own second.
const OPEN_SECONDS: usize = 2;
/// Longest time series kept (a day and a half: the longest run plus any
/// timeout); later seconds are folded into the last one.
const MAX_SECONDS: usize = 36 * 3600;

/// One-second buckets: requests due, outcomes of the requests that ended,
/// and the 2xx latency percentiles of that second. Only the last
/// [`OPEN_SECONDS`] keep a histogram; older ones keep their percentiles,
/// so memory grows by a few dozen bytes per second of run.
#[derive(Debug, Clone, Default)]
pub struct TimeSeries {
    seconds: Vec<Second>,
    /// (second, its 2xx latency histogram), oldest first.
    open: VecDeque<(usize, Histogram<u64>)>,
}

impl TimeSeries {
    fn second(&mut self, index: usize) -> &mut Second {
        let index = index.min(MAX_SECONDS);
        if self.seconds.len() <= index {
            self.seconds.resize(index + 1, Second::default());
        }
        &mut self.seconds[index]
    }

    fn record_due(&mut self, second: usize) {
        self.second(second).due += 1;
    }

    fn record_end(&mut self, second: usize, outcome: Outcome, latency_us: u64) {
        let second = second.min(MAX_SECONDS);
        self.second(second).ended[outcome.index()] += 1;
        if outcome != Outcome::Success {
            return;
        }
        let newest = self.open.back().map(|(s, _)| *s);
        if newest.is_none_or(|newest| second > newest) {
            // Close the seconds that can no longer receive anything, and
            // reuse the last closed histogram's allocation.
            let mut spare = None;
            while let Some(&(oldest, _)) = self.open.front() {
                if self.open.len() < OPEN_SECONDS && oldest + OPEN_SECONDS > second {
                    break;
                }
                spare = self.close_oldest();
            }
            let mut h = spare.unwrap_or_else(coarse_histogram);
            h.reset();
            h.saturating_record(latency_us);
            self.open.push_back((second, h));
        } else if let Some((_, h)) = self.open.iter_mut().find(|(s, _)| *s == second) {
            h.saturating_record(latency_us);
        } else if let Some((oldest, h)) = self.open.front_mut()
            && second < *oldest
        {
            // Recorded more than a second late: counted in its own second
            // above, but its latency joins the oldest open second.
            h.saturating_record(latency_us);
        } else {
            // A second between open ones that had no 2xx yet.
            let position = self
                .open
                .iter()
                .position(|(s, _)| *s > second)
                .unwrap_or(self.open.len());
            let mut h = coarse_histogram();
            h.saturating_record(latency_us);
            self.open.insert(position, (second, h));
        }
    }

    fn close_oldest(&mut self) -> Option<Histogram<u64>> {
        let (second, h) = self.open.pop_front()?;
        if !h.is_empty() {
            let row = self.second(second);
            row.p50_us = Some(h.value_at_quantile(0.5));
            row.p99_us = Some(h.value_at_quantile(0.99));
        }
        Some(h)
    }

    /// Closes every open second (at the end of a run).
    pub fn close(&mut self) {
        while self.close_oldest().is_some() {}
    }

    /// The seconds so far (open ones without percentiles).
    pub fn seconds(&self) -> &[Second] {
        &self.seconds
    }

    /// Second `index` with its percentiles, also while it is still open.
    pub fn view(&self, index: usize) -> Option<Second> {
        let mut row = *self.seconds.get(index)?;
        if let Some((_, h)) = self.open.iter().find(|(s, _)| *s == index)
            && !h.is_empty()
        {
            row.p50_us = Some(h.value_at_quantile(0.5));
            row.p99_us = Some(h.value_at_quantile(0.99));
        }
        Some(row)
    }
}

/// Key of requests answered without a `switchyard-backend` header (or not
/// answered at all) in the per-backend breakdown.
pub const NO_BACKEND: &str = "none";

/// Everything measured during a run.
#[derive(Debug, Clone)]
pub struct Recorder {
    start: Instant,
    overall: Group,
    /// How late the client sent each request after its intended time.
    send_lag: Histogram<u64>,
    server_queue: Histogram<u64>,
    server_inference: Histogram<u64>,
    batch_rows: Histogram<u64>,
    phases: Vec<Group>,
    entries: Vec<Group>,
    backends: BTreeMap<String, Group>,
    series: TimeSeries,
    last_done: Option<Instant>,
    samples: Option<Vec<Sample>>,
    /// The backend names samples refer to, in order of first appearance.
    backend_names: Vec<String>,
}

fn slot(groups: &mut Vec<Group>, index: usize) -> &mut Group {
    if groups.len() <= index {
        groups.resize_with(index + 1, Group::default);
    }
    &mut groups[index]
}

impl Recorder {
    /// An empty recorder for a run that started at `start`.
    pub fn new(start: Instant, keep_samples: bool) -> Self {
        Self {
            start,
            overall: Group::default(),
            send_lag: histogram(),
            server_queue: histogram(),
            server_inference: histogram(),
            batch_rows: histogram(),
            phases: Vec::new(),
            entries: Vec::new(),
            backends: BTreeMap::new(),
            series: TimeSeries::default(),
            last_done: None,
            samples: keep_samples.then(Vec::new),
            backend_names: Vec::new(),
        }
    }

    fn second_of(&self, at: Instant) -> usize {
        usize::try_from(at.saturating_duration_since(self.start).as_secs()).unwrap_or(usize::MAX)
    }

    /// Records a request that was sent.
    pub fn record(&mut self, completed: &Completed<'_>) {
        let outcome = completed.exchange.outcome;
        let latency = micros(completed.done.saturating_duration_since(completed.intended));
        let service = micros(completed.done.saturating_duration_since(completed.sent));
        let rows = completed.rows;
        self.overall.record(outcome, latency, service, rows);
        slot(&mut self.phases, completed.phase).record(outcome, latency, service, rows);
        slot(&mut self.entries, completed.entry).record(outcome, latency, service, rows);
        let backend = completed.exchange.backend.as_deref().unwrap_or(NO_BACKEND);
        match self.backends.get_mut(backend) {
            Some(group) => group.record(outcome, latency, service, rows),
            None => {
                let mut group = Group::default();
                group.record(outcome, latency, service, rows);
                self.backends.insert(backend.to_owned(), group);
            }
        }
        self.send_lag.saturating_record(micros(
            completed.sent.saturating_duration_since(completed.intended),
        ));
        if outcome == Outcome::Success {
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
        let due_second = self.second_of(completed.intended);
        let end_second = self.second_of(completed.done);
        self.series.record_due(due_second);
        self.series.record_end(end_second, outcome, latency);
        self.last_done = Some(
            self.last_done
                .map_or(completed.done, |t| t.max(completed.done)),
        );
        let backend = match (&self.samples, &completed.exchange.backend) {
            (Some(_), Some(name)) => self.intern_backend(name),
            _ => None,
        };
        self.push_sample(completed.intended, latency, outcome, backend);
    }

    /// The id of backend `name`, added on first sight. A run sees a handful
    /// of backends; past `u16::MAX` names, further ones get no id.
    fn intern_backend(&mut self, name: &str) -> Option<BackendId> {
        if let Some(index) = self.backend_names.iter().position(|n| n == name) {
            return u16::try_from(index).ok().map(BackendId);
        }
        let id = u16::try_from(self.backend_names.len())
            .ok()
            .map(BackendId)?;
        self.backend_names.push(name.to_owned());
        Some(id)
    }

    /// Records a request that was due at `intended` but not sent.
    pub fn record_dropped(&mut self, intended: Instant, phase: usize, entry: usize) {
        self.overall.record_dropped();
        slot(&mut self.phases, phase).record_dropped();
        slot(&mut self.entries, entry).record_dropped();
        let second = self.second_of(intended);
        self.series.record_due(second);
        self.series.record_end(second, Outcome::Dropped, 0);
        self.push_sample(intended, 0, Outcome::Dropped, None);
    }

    fn push_sample(
        &mut self,
        intended: Instant,
        latency_us: u64,
        outcome: Outcome,
        backend: Option<BackendId>,
    ) {
        let start = self.start;
        if let Some(samples) = &mut self.samples {
            samples.push(Sample {
                intended_offset_us: micros(intended.saturating_duration_since(start)),
                latency_us,
                outcome,
                backend,
            });
        }
    }

    /// Closes the time series; call once the last request has ended.
    pub fn finish(&mut self) {
        self.series.close();
    }

    /// When the run started.
    pub fn start(&self) -> Instant {
        self.start
    }

    /// The whole run.
    pub fn overall(&self) -> &Group {
        &self.overall
    }

    /// Requests that ended with `outcome`.
    pub fn count(&self, outcome: Outcome) -> u64 {
        self.overall.count(outcome)
    }

    /// Requests sent (every outcome except dropped).
    pub fn sent(&self) -> u64 {
        self.overall.sent()
    }

    /// Latency from intended send time, in µs, of requests with `outcome`.
    pub fn latency(&self, outcome: Outcome) -> Option<&Histogram<u64>> {
        self.overall.latency(outcome)
    }

    /// How late requests were sent after their intended time, in µs.
    pub fn send_lag(&self) -> &Histogram<u64> {
        &self.send_lag
    }

    /// Per phase, by phase index.
    pub fn phases(&self) -> &[Group] {
        &self.phases
    }

    /// Per payload-mix entry, by entry index.
    pub fn entries(&self) -> &[Group] {
        &self.entries
    }

    /// Per `switchyard-backend` header value ([`NO_BACKEND`] without one).
    pub fn backends(&self) -> &BTreeMap<String, Group> {
        &self.backends
    }

    /// The one-second buckets.
    pub fn series(&self) -> &TimeSeries {
        &self.series
    }

    /// When the last request ended.
    pub fn last_done(&self) -> Option<Instant> {
        self.last_done
    }

    /// The backend names the samples' [`BackendId`]s index, in order of
    /// first appearance.
    pub fn backend_names(&self) -> &[String] {
        &self.backend_names
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

    /// Summarises a histogram that may not exist (all zeros then).
    pub fn of_option(histogram: Option<&Histogram<u64>>) -> Self {
        histogram.map(Self::of).unwrap_or_default()
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
    /// From counts indexed like [`Outcome::ALL`].
    pub fn from_array(counts: &[u64; Outcome::ALL.len()]) -> Self {
        let c = |o: Outcome| counts[o.index()];
        Self {
            success: c(Outcome::Success),
            throttled: c(Outcome::Throttled),
            server_error: c(Outcome::ServerError),
            other_status: c(Outcome::OtherStatus),
            timeout: c(Outcome::Timeout),
            connection_error: c(Outcome::ConnectionError),
            dropped: c(Outcome::Dropped),
        }
    }

    /// The count of `outcome`.
    pub fn get(&self, outcome: Outcome) -> u64 {
        match outcome {
            Outcome::Success => self.success,
            Outcome::Throttled => self.throttled,
            Outcome::ServerError => self.server_error,
            Outcome::OtherStatus => self.other_status,
            Outcome::Timeout => self.timeout,
            Outcome::ConnectionError => self.connection_error,
            Outcome::Dropped => self.dropped,
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

/// Open or closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    OpenLoop,
    ClosedLoop,
}

/// How a run was set up, as given (in the report's `settings`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Settings {
    pub url: String,
    pub mode: Mode,
    /// Open loop: constant or Poisson arrivals (with its seed).
    pub process: Option<Process>,
    /// Closed loop: the number of workers.
    pub concurrency: Option<usize>,
    /// Open loop: requests outstanding at once (phases may lower it).
    pub max_in_flight: Option<usize>,
    /// The run's bounds: no request is due or started after `max_duration_s`,
    /// and at most `max_requests` are.
    pub max_duration_s: f64,
    pub max_requests: Option<u64>,
    pub timeout_s: f64,
    /// The payload mix.
    pub mix: Vec<MixEntry>,
    /// Inputs in the binary tensor extension (else JSON).
    pub binary: bool,
    /// Outputs asked for in binary.
    pub binary_output: bool,
    /// Distinct bodies per mix entry.
    pub variants: usize,
}

/// A phase as the report describes it.
#[derive(Debug, Clone, PartialEq)]
pub struct PhaseInfo {
    pub name: String,
    pub start: Duration,
    pub duration: Duration,
    /// `None` for the closed loop's single pseudo-phase.
    pub load: Option<PhaseLoad>,
    pub max_in_flight: Option<u64>,
}

/// What a report needs besides the recorder.
#[derive(Debug, Clone, PartialEq)]
pub struct RunInfo {
    pub settings: Settings,
    pub phases: Vec<PhaseInfo>,
    /// How long load was to be offered: the phases (cut at the maximum
    /// duration) or the closed loop's duration.
    pub planned: Duration,
    /// From the start to the end of the last response.
    pub elapsed: Duration,
}

/// One slice of the run in the report (per phase, model or backend).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct GroupReport {
    /// Requests due (open loop) or started (closed loop), dropped included.
    pub due: u64,
    pub sent: u64,
    pub counts: Counts,
    /// 2xx per second (of the phase's duration for a phase, of the run's
    /// elapsed time otherwise).
    pub throughput_per_s: f64,
    /// Rows of 2xx requests per second.
    pub items_per_s: f64,
    /// 2xx, from the intended send time.
    pub latency_us: LatencySummary,
    /// 2xx, from the actual send time.
    pub service_time_us: LatencySummary,
    /// Sent requests that did not succeed, from the intended send time.
    pub error_latency_us: LatencySummary,
}

impl GroupReport {
    #[allow(clippy::cast_precision_loss)]
    fn of(group: &Group, seconds: f64) -> Result<Self, LoadgenError> {
        let per_second = |n: u64| {
            if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            }
        };
        Ok(Self {
            due: group.due(),
            sent: group.sent(),
            counts: Counts::from_array(&group.counts),
            throughput_per_s: per_second(group.count(Outcome::Success)),
            items_per_s: per_second(group.rows_ok()),
            latency_us: LatencySummary::of_option(group.latency(Outcome::Success)),
            service_time_us: LatencySummary::of_option(group.service_time()),
            error_latency_us: LatencySummary::of_option(group.error_latency()?.as_ref()),
        })
    }
}

/// One phase in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PhaseReport {
    pub index: usize,
    pub name: String,
    pub start_s: f64,
    pub duration_s: f64,
    /// What the phase offered (`null` for a closed loop).
    pub load: Option<PhaseLoad>,
    pub max_in_flight: Option<u64>,
    /// Requests due per second of the phase.
    pub offered_per_s: f64,
    #[serde(flatten)]
    pub stats: GroupReport,
}

/// One outcome in the report.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OutcomeReport {
    pub count: u64,
    /// From the intended send time (all zeros for `dropped`: never sent).
    pub latency_us: LatencySummary,
}

/// One payload-mix entry in the report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MixReport {
    pub model: String,
    pub batch: u64,
    pub weight: f64,
    /// The share of requests the weights ask for.
    pub expected_share: f64,
    /// The share of due requests it got.
    pub observed_share: f64,
    pub due: u64,
    pub counts: Counts,
}

/// One second of the time series.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SecondReport {
    /// Seconds since the start: this row covers [second, second + 1).
    pub second: u64,
    /// The phase running at the start of the second.
    pub phase: usize,
    /// Requests due in this second (intended send time).
    pub due: u64,
    /// Of those, sent (not dropped).
    pub sent: u64,
    /// Requests that ended in this second, by outcome.
    pub ended: Counts,
    /// 2xx latency (from intended send) of the requests that ended in this
    /// second; `null` when none did.
    pub latency_p50_us: Option<u64>,
    pub latency_p99_us: Option<u64>,
}

/// Version of the report's JSON schema; raised when a field changes
/// meaning or goes away (new fields do not raise it).
pub const SCHEMA_VERSION: u32 = 1;

/// The summary of a run, as printed and written to JSON. All latencies
/// are in µs; `*_per_s` are per second.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub schema_version: u32,
    /// `switchyard-loadgen <version>`.
    pub generator: String,
    pub settings: Settings,
    /// How long load was to be offered (phases cut at the maximum
    /// duration, or the closed loop's duration).
    pub duration_s: f64,
    /// From the start to the end of the last response.
    pub elapsed_s: f64,
    /// Requests due (open loop) or started (closed loop).
    pub scheduled: u64,
    pub sent: u64,
    pub counts: Counts,
    /// Requests due per second of `duration_s`.
    pub offered_per_s: f64,
    /// Successful requests per second of elapsed time.
    pub throughput_per_s: f64,
    /// Items (rows) of successful requests per second.
    pub items_per_s: f64,
    /// Successful requests, from the intended send time.
    pub latency_us: LatencySummary,
    /// Successful requests, from the actual send time.
    pub service_time_us: LatencySummary,
    /// How late requests went out after their intended time.
    pub send_lag_us: LatencySummary,
    pub server_timing: ServerTimingReport,
    /// Every outcome (always all seven keys).
    pub per_outcome: BTreeMap<Outcome, OutcomeReport>,
    pub per_phase: Vec<PhaseReport>,
    /// Per model (the mix entries of a model summed).
    pub per_model: BTreeMap<String, GroupReport>,
    /// Per `switchyard-backend` response header value; `none` for requests
    /// answered without one or not answered.
    pub per_backend: BTreeMap<String, GroupReport>,
    pub mix: Vec<MixReport>,
    pub time_series: Vec<SecondReport>,
}

impl Report {
    /// Builds the report of a finished run (call [`Recorder::finish`] first).
    #[allow(clippy::cast_precision_loss)]
    pub fn new(recorder: &Recorder, info: RunInfo) -> Result<Self, LoadgenError> {
        let overall = recorder.overall();
        let elapsed = info.elapsed.as_secs_f64();
        let planned = info.planned.as_secs_f64();
        let whole = GroupReport::of(overall, elapsed)?;
        let per_outcome = Outcome::ALL
            .iter()
            .map(|&o| {
                let report = OutcomeReport {
                    count: overall.count(o),
                    latency_us: LatencySummary::of_option(overall.latency(o)),
                };
                (o, report)
            })
            .collect();
        let empty = Group::default();
        let per_phase = info
            .phases
            .iter()
            .enumerate()
            .map(|(index, phase)| {
                let group = recorder.phases().get(index).unwrap_or(&empty);
                let seconds = phase.duration.as_secs_f64();
                Ok(PhaseReport {
                    index,
                    name: phase.name.clone(),
                    start_s: phase.start.as_secs_f64(),
                    duration_s: seconds,
                    load: phase.load,
                    max_in_flight: phase.max_in_flight,
                    offered_per_s: if seconds > 0.0 {
                        group.due() as f64 / seconds
                    } else {
                        0.0
                    },
                    stats: GroupReport::of(group, seconds)?,
                })
            })
            .collect::<Result<Vec<_>, LoadgenError>>()?;
        let mut models: BTreeMap<String, Group> = BTreeMap::new();
        for (entry, group) in info.settings.mix.iter().zip(recorder.entries()) {
            models
                .entry(entry.model.clone())
                .or_default()
                .merge(group)?;
        }
        let per_model = models
            .iter()
            .map(|(model, group)| Ok((model.clone(), GroupReport::of(group, elapsed)?)))
            .collect::<Result<_, LoadgenError>>()?;
        let per_backend = recorder
            .backends()
            .iter()
            .map(|(backend, group)| Ok((backend.clone(), GroupReport::of(group, elapsed)?)))
            .collect::<Result<_, LoadgenError>>()?;
        let total_weight: f64 = info.settings.mix.iter().map(|e| e.weight).sum();
        let all_due = overall.due().max(1) as f64;
        let mix = info
            .settings
            .mix
            .iter()
            .enumerate()
            .map(|(i, entry)| {
                let group = recorder.entries().get(i).unwrap_or(&empty);
                MixReport {
                    model: entry.model.clone(),
                    batch: entry.batch,
                    weight: entry.weight,
                    expected_share: entry.weight / total_weight,
                    observed_share: group.due() as f64 / all_due,
                    due: group.due(),
                    counts: Counts::from_array(&group.counts),
                }
            })
            .collect();
        let phase_of = |second: u64| {
            let at = Duration::from_secs(second);
            info.phases.iter().rposition(|p| p.start <= at).unwrap_or(0)
        };
        let time_series = recorder
            .series()
            .seconds()
            .iter()
            .enumerate()
            .map(|(second, row)| {
                let second = second as u64;
                let ended = Counts::from_array(&row.ended);
                SecondReport {
                    second,
                    phase: phase_of(second),
                    due: row.due,
                    sent: row.due.saturating_sub(ended.dropped),
                    ended,
                    latency_p50_us: row.p50_us,
                    latency_p99_us: row.p99_us,
                }
            })
            .collect();
        Ok(Self {
            schema_version: SCHEMA_VERSION,
            generator: format!("switchyard-loadgen {}", env!("CARGO_PKG_VERSION")),
            settings: info.settings,
            duration_s: planned,
            elapsed_s: elapsed,
            scheduled: whole.due,
            sent: whole.sent,
            counts: whole.counts,
            offered_per_s: whole.due as f64 / planned.max(1e-9),
            throughput_per_s: whole.throughput_per_s,
            items_per_s: whole.items_per_s,
            latency_us: whole.latency_us,
            service_time_us: whole.service_time_us,
            send_lag_us: LatencySummary::of(recorder.send_lag()),
            server_timing: recorder.server_timing(),
            per_outcome,
            per_phase,
            per_model,
            per_backend,
            mix,
            time_series,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn exchange(outcome: Outcome, backend: Option<&str>) -> Exchange {
        Exchange {
            outcome,
            backend: backend.map(str::to_owned),
            server: ServerTiming {
                queue_us: Some(5),
                inference_us: Some(50),
                batch_rows: Some(2),
            },
        }
    }

    fn completed(
        intended: Instant,
        sent_ms: u64,
        done_ms: u64,
        phase: usize,
        entry: usize,
        exchange: &Exchange,
    ) -> Completed<'_> {
        Completed {
            intended,
            sent: intended + Duration::from_millis(sent_ms),
            done: intended + Duration::from_millis(done_ms),
            phase,
            entry,
            rows: 4,
            exchange,
        }
    }

    #[test]
    fn requests_are_recorded_per_slice_from_the_intended_time() {
        let start = Instant::now();
        let mut r = Recorder::new(start, true);
        let ok = exchange(Outcome::Success, Some("local"));
        let throttled = exchange(Outcome::Throttled, None);
        let intended = start + Duration::from_millis(10);
        r.record(&completed(intended, 2, 5, 0, 0, &ok));
        r.record(&completed(intended, 0, 1, 1, 1, &throttled));
        r.record_dropped(start, 1, 0);
        r.finish();
        assert_eq!(r.count(Outcome::Success), 1);
        assert_eq!(r.count(Outcome::Throttled), 1);
        assert_eq!(r.count(Outcome::Dropped), 1);
        assert_eq!(r.sent(), 2);
        assert_eq!(r.overall().due(), 3);
        assert_eq!(r.overall().rows_ok(), 4);
        let ok_latency = r.latency(Outcome::Success).unwrap();
        assert!(ok_latency.equivalent(ok_latency.max(), 5000));
        let service = r.overall().service_time().unwrap();
        assert!(service.equivalent(service.max(), 3000));
        assert_eq!(r.phases()[0].due(), 1);
        assert_eq!(r.phases()[1].due(), 2);
        assert_eq!(r.phases()[1].count(Outcome::Dropped), 1);
        assert_eq!(r.entries()[0].due(), 2);
        assert_eq!(r.backends()["local"].count(Outcome::Success), 1);
        assert_eq!(r.backends()[NO_BACKEND].count(Outcome::Throttled), 1);
        let samples = r.samples().unwrap();
        assert_eq!(samples.len(), 3);
        assert_eq!(samples[0].outcome, Outcome::Dropped);
        assert_eq!(samples[0].backend, None);
        let names = r.backend_names();
        let served: Vec<Option<&str>> = samples.iter().map(|s| s.backend_name(names)).collect();
        assert!(served.contains(&Some("local")) && served.contains(&None));
        assert_eq!(names, ["local"]);
        let second = r.series().seconds()[0];
        assert_eq!(second.due, 3);
        assert_eq!(second.ended[Outcome::Success.index()], 1);
        assert!(second.p50_us.is_some_and(|p| (4900..=5100).contains(&p)));
    }

    #[test]
    fn samples_intern_each_backend_once() {
        let start = Instant::now();
        let mut r = Recorder::new(start, true);
        for name in ["lambda", "local", "lambda", "container", "local"] {
            let answer = exchange(Outcome::Success, Some(name));
            r.record(&completed(start, 0, 1, 0, 0, &answer));
        }
        assert_eq!(r.backend_names(), ["lambda", "local", "container"]);
        let ids: Vec<u16> = r
            .samples()
            .unwrap()
            .iter()
            .map(|s| s.backend.unwrap().0)
            .collect();
        let mut sorted = ids.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 0, 1, 1, 2]);
        assert_eq!(std::mem::size_of::<Sample>(), 24);
        // Without samples nothing is interned.
        let mut quiet = Recorder::new(start, false);
        quiet.record(&completed(
            start,
            0,
            1,
            0,
            0,
            &exchange(Outcome::Success, Some("local")),
        ));
        assert!(quiet.backend_names().is_empty());
    }

    #[test]
    fn time_series_closes_seconds_and_keeps_their_percentiles() {
        let start = Instant::now();
        let mut r = Recorder::new(start, false);
        let ok = exchange(Outcome::Success, None);
        // Seconds 0, 1, 2 and 5: second s gets latencies s+1 ms.
        for s in [0u64, 1, 2, 5] {
            for _ in 0..10 {
                let intended = start + Duration::from_millis(s * 1000 + 100);
                r.record(&completed(intended, 0, s + 1, 0, 0, &ok));
            }
        }
        // Second 0 was closed when second 2 began; 5 is still open.
        assert!(r.series().seconds()[0].p50_us.is_some());
        assert!(r.series().seconds()[5].p50_us.is_none());
        assert!(r.series().view(5).unwrap().p50_us.is_some());
        r.finish();
        let seconds = r.series().seconds();
        assert_eq!(seconds.len(), 6);
        for s in [0usize, 1, 2, 5] {
            let p50 = seconds[s].p50_us.unwrap();
            let expected = (s as u64 + 1) * 1000;
            assert!(p50.abs_diff(expected) <= expected / 100, "{s}: {p50}");
            assert_eq!(seconds[s].due, 10);
        }
        assert_eq!(seconds[3], Second::default());
    }

    #[test]
    fn report_sums_entries_per_model_and_lists_every_outcome() {
        let start = Instant::now();
        let mut r = Recorder::new(start, false);
        let ok = exchange(Outcome::Success, Some("local"));
        for entry in [0, 1, 2, 2] {
            r.record(&completed(start, 0, 1, 0, entry, &ok));
        }
        r.finish();
        let mix = vec![
            MixEntry {
                model: "a".into(),
                batch: 1,
                weight: 1.0,
            },
            MixEntry {
                model: "a".into(),
                batch: 8,
                weight: 1.0,
            },
            MixEntry {
                model: "b".into(),
                batch: 1,
                weight: 2.0,
            },
        ];
        let info = RunInfo {
            settings: Settings {
                url: "http://127.0.0.1:1".into(),
                mode: Mode::ClosedLoop,
                process: None,
                concurrency: Some(1),
                max_in_flight: None,
                max_duration_s: 1.0,
                max_requests: None,
                timeout_s: 1.0,
                mix,
                binary: false,
                binary_output: false,
                variants: 1,
            },
            phases: vec![PhaseInfo {
                name: "closed loop".into(),
                start: Duration::ZERO,
                duration: Duration::from_secs(1),
                load: None,
                max_in_flight: None,
            }],
            planned: Duration::from_secs(1),
            elapsed: Duration::from_secs(2),
        };
        let report = Report::new(&r, info).unwrap();
        assert_eq!(report.per_model["a"].due, 2);
        assert_eq!(report.per_model["b"].due, 2);
        assert_eq!(report.per_outcome.len(), Outcome::ALL.len());
        assert_eq!(report.per_outcome[&Outcome::Success].count, 4);
        assert!((report.mix[2].expected_share - 0.5).abs() < 1e-12);
        assert!((report.mix[2].observed_share - 0.5).abs() < 1e-12);
        assert!((report.throughput_per_s - 2.0).abs() < 1e-12);
        assert_eq!(report.per_phase[0].stats.counts.success, 4);
        assert_eq!(report.time_series.len(), 1);
    }
}
