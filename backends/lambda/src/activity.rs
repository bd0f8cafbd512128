//! What the backend has seen: invocations (cold or warm, as each instance
//! reports), throttles, function errors, instances recently alive and the
//! estimated cost. Feeds the `switchyard_lambda_*` metrics as it goes, the
//! snapshot's concurrency and headroom, and [`LambdaStats`].

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_backends::RecentColdStarts;
use switchyard_lambda_function::{HandlerTiming, InstanceReport};

use crate::config::LambdaConfig;
use crate::cost::Pricing;

/// Most events kept for the recent window; older ones fall off first.
const RECENT_CAP: usize = 100_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Event {
    Cold,
    Warm,
    Throttle,
}

#[derive(Debug, Default)]
struct Totals {
    invocations: u64,
    cold_starts: u64,
    throttles: u64,
    function_errors: u64,
    billed_ms: u64,
    gb_seconds: f64,
    cost_dollars: f64,
    cold_latency_total: Duration,
    prewarms: u64,
    prewarm_invocations: u64,
    prewarm_failures: u64,
}

#[derive(Debug, Default)]
struct State {
    totals: Totals,
    recent: VecDeque<(Instant, Event)>,
    /// Instance id → when it last answered.
    instances: HashMap<String, Instant>,
    /// What the latest cold starts added to an invocation's round trip.
    cold_starts: RecentColdStarts,
    /// Memory size the latest instance reported, MB.
    reported_memory_mb: Option<u64>,
}

/// Shared activity record of one backend.
#[derive(Debug)]
pub struct Activity {
    backend: String,
    memory_mb: u64,
    pricing: Pricing,
    window: Duration,
    idle: Duration,
    reserved_concurrency: u64,
    state: Mutex<State>,
}

/// The backend's activity as served in stats.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LambdaStats {
    pub invocations: u64,
    pub cold_starts: u64,
    pub throttles: u64,
    pub function_errors: u64,
    /// Mean round trip of cold invocations, milliseconds.
    pub mean_cold_start_ms: Option<f64>,
    pub billed_ms: u64,
    pub gb_seconds: f64,
    /// Estimated cost of every invocation so far.
    pub cost_dollars: f64,
    pub cost_per_invocation_dollars: Option<f64>,
    /// Invocations in flight and the limit.
    pub concurrency_in_use: u64,
    pub reserved_concurrency: u64,
    /// Instances that answered within the idle window.
    pub warm_instances: u64,
    pub recent_window_seconds: f64,
    pub recent_throttles: u64,
    /// Share of the window's invocations that were cold starts.
    pub recent_cold_start_rate: f64,
    /// Pre-warms run, and their invocations (counted in `invocations` and
    /// the cost too); failed ones apart.
    pub prewarms: u64,
    pub prewarm_invocations: u64,
    pub prewarm_failures: u64,
}

impl Activity {
    /// An empty record for the backend of `config`.
    pub fn new(config: &LambdaConfig) -> Self {
        describe();
        Self {
            backend: config.name.clone(),
            memory_mb: config.memory_mb,
            pricing: config.pricing,
            window: config.recent_window,
            idle: config.instance_idle,
            reserved_concurrency: config.reserved_concurrency,
            state: Mutex::new(State::default()),
        }
    }

    /// Publishes the window's throttles and cold-start share as gauges.
    fn publish_recent(&self, state: &State) {
        let count = |kind: Event| state.recent.iter().filter(|(_, e)| *e == kind).count();
        let (cold, warm) = (count(Event::Cold), count(Event::Warm));
        let rate = if cold + warm == 0 {
            0.0
        } else {
            cold as f64 / (cold + warm) as f64
        };
        metrics::gauge!("switchyard_lambda_recent_cold_start_ratio", "backend" => self.backend.clone())
            .set(rate);
        metrics::gauge!("switchyard_lambda_recent_throttles", "backend" => self.backend.clone())
            .set(count(Event::Throttle) as f64);
    }

    fn with_state<T>(&self, f: impl FnOnce(&mut State, Instant) -> T) -> Option<T> {
        let now = Instant::now();
        let mut state = self.state.lock().ok()?;
        let window = self.window;
        while state
            .recent
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) > window)
            || state.recent.len() > RECENT_CAP
        {
            state.recent.pop_front();
        }
        Some(f(&mut state, now))
    }

    /// Accounts for one successful invocation: cold or warm, cost, instance.
    pub fn record_invocation(
        &self,
        model: &str,
        instance: &InstanceReport,
        timing: &HandlerTiming,
        latency: Duration,
    ) {
        let memory_mb = instance.memory_mb.unwrap_or(self.memory_mb);
        // A cold start bills the init phase too (custom runtime).
        let init_us = if instance.cold {
            (instance.init_ms * 1000.0) as u64
        } else {
            0
        };
        let cost = self.pricing.cost(memory_mb, timing.handler_us + init_us);
        self.with_state(|state, now| {
            let totals = &mut state.totals;
            totals.invocations += 1;
            totals.billed_ms += cost.billed_ms;
            totals.gb_seconds += cost.gb_seconds;
            totals.cost_dollars += cost.dollars;
            if instance.cold {
                totals.cold_starts += 1;
                totals.cold_latency_total += latency;
                // What the cold start added: the round trip beyond the
                // handler's own time (a warm call's invoke overhead, well
                // under a millisecond, is counted in too).
                let handler = Duration::from_micros(timing.handler_us);
                state
                    .cold_starts
                    .record(latency.saturating_sub(handler).as_secs_f64() * 1e3);
            }
            if instance.memory_mb.is_some() {
                state.reported_memory_mb = instance.memory_mb;
            }
            state.recent.push_back((
                now,
                if instance.cold {
                    Event::Cold
                } else {
                    Event::Warm
                },
            ));
            state.instances.insert(instance.id.clone(), now);
            self.publish_recent(state);
        });
        let start = if instance.cold { "cold" } else { "warm" };
        let labels = [
            ("backend", self.backend.clone()),
            ("model", model.to_owned()),
        ];
        metrics::counter!("switchyard_lambda_invocations_total", "backend" => self.backend.clone(), "model" => model.to_owned(), "start" => start)
            .increment(1);
        if instance.cold {
            metrics::histogram!("switchyard_lambda_cold_start_seconds", &labels)
                .record(latency.as_secs_f64());
            metrics::histogram!("switchyard_lambda_init_seconds", &labels)
                .record(instance.init_ms / 1000.0);
        }
        metrics::histogram!("switchyard_lambda_billed_duration_seconds", &labels)
            .record(cost.billed_ms as f64 / 1000.0);
        // Cumulative dollars: a gauge, because metrics counters are integers.
        metrics::gauge!("switchyard_lambda_cost_dollars_total", &labels).increment(cost.dollars);
        metrics::gauge!("switchyard_lambda_gb_seconds_total", &labels).increment(cost.gb_seconds);
    }

    /// Accounts for a refused invocation; `source` is `lambda` (429) or
    /// `reserved_concurrency` (refused by the gateway itself).
    pub fn record_throttle(&self, model: &str, source: &'static str) {
        self.with_state(|state, now| {
            state.totals.throttles += 1;
            state.recent.push_back((now, Event::Throttle));
            self.publish_recent(state);
        });
        metrics::counter!("switchyard_lambda_throttles_total", "backend" => self.backend.clone(), "model" => model.to_owned(), "source" => source)
            .increment(1);
    }

    /// Accounts for a pre-warm of `invoked` invocations, `warmed` of which
    /// succeeded (each was accounted for as an invocation already).
    pub fn record_prewarm(&self, model: &str, invoked: u64, warmed: u64) {
        self.with_state(|state, _| {
            state.totals.prewarms += 1;
            state.totals.prewarm_invocations += invoked;
            state.totals.prewarm_failures += invoked.saturating_sub(warmed);
        });
        metrics::counter!("switchyard_lambda_prewarm_invocations_total", "backend" => self.backend.clone(), "model" => model.to_owned())
            .increment(invoked);
    }

    /// Accounts for an invocation the function itself failed.
    pub fn record_function_error(&self, model: &str) {
        self.with_state(|state, _| state.totals.function_errors += 1);
        metrics::counter!("switchyard_lambda_function_errors_total", "backend" => self.backend.clone(), "model" => model.to_owned())
            .increment(1);
    }

    /// Instances that answered within the idle window (and forgets older).
    /// Mean extra round trip of the latest cold invocations, ms (`None`
    /// before the first).
    pub fn recent_cold_start_ms(&self) -> Option<f64> {
        self.with_state(|state, _| state.cold_starts.mean_ms())
            .flatten()
    }

    /// The function's memory size: as its instances report it, else as
    /// configured.
    pub fn memory_mb(&self) -> u64 {
        self.with_state(|state, _| state.reported_memory_mb)
            .flatten()
            .unwrap_or(self.memory_mb)
    }

    pub fn warm_instances(&self) -> u64 {
        let idle = self.idle;
        self.with_state(|state, now| {
            state
                .instances
                .retain(|_, seen| now.duration_since(*seen) <= idle);
            state.instances.len() as u64
        })
        .unwrap_or(0)
    }

    /// Everything so far, with `in_flight` invocations now.
    pub fn stats(&self, in_flight: u64) -> LambdaStats {
        let warm_instances = self.warm_instances();
        self.with_state(|state, _| {
            let t = &state.totals;
            let count =
                |kind: Event| state.recent.iter().filter(|(_, e)| *e == kind).count() as u64;
            let (cold, warm) = (count(Event::Cold), count(Event::Warm));
            LambdaStats {
                invocations: t.invocations,
                cold_starts: t.cold_starts,
                throttles: t.throttles,
                function_errors: t.function_errors,
                mean_cold_start_ms: (t.cold_starts > 0)
                    .then(|| t.cold_latency_total.as_secs_f64() * 1000.0 / t.cold_starts as f64),
                billed_ms: t.billed_ms,
                gb_seconds: t.gb_seconds,
                cost_dollars: t.cost_dollars,
                cost_per_invocation_dollars: (t.invocations > 0)
                    .then(|| t.cost_dollars / t.invocations as f64),
                concurrency_in_use: in_flight,
                reserved_concurrency: self.reserved_concurrency,
                warm_instances,
                recent_window_seconds: self.window.as_secs_f64(),
                recent_throttles: count(Event::Throttle),
                recent_cold_start_rate: if cold + warm == 0 {
                    0.0
                } else {
                    cold as f64 / (cold + warm) as f64
                },
                prewarms: t.prewarms,
                prewarm_invocations: t.prewarm_invocations,
                prewarm_failures: t.prewarm_failures,
            }
        })
        .unwrap_or(LambdaStats {
            invocations: 0,
            cold_starts: 0,
            throttles: 0,
            function_errors: 0,
            mean_cold_start_ms: None,
            billed_ms: 0,
            gb_seconds: 0.0,
            cost_dollars: 0.0,
            cost_per_invocation_dollars: None,
            concurrency_in_use: in_flight,
            reserved_concurrency: self.reserved_concurrency,
            warm_instances,
            recent_window_seconds: self.window.as_secs_f64(),
            recent_throttles: 0,
            recent_cold_start_rate: 0.0,
            prewarms: 0,
            prewarm_invocations: 0,
            prewarm_failures: 0,
        })
    }
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "switchyard_lambda_invocations_total",
        "Successful Lambda invocations by model and start (cold or warm, as the instance reports)"
    );
    describe_histogram!(
        "switchyard_lambda_cold_start_seconds",
        Unit::Seconds,
        "Round trip of cold-start invocations, seen from the gateway"
    );
    describe_histogram!(
        "switchyard_lambda_init_seconds",
        Unit::Seconds,
        "Init phase (process start to models loaded) of new instances, as they report it"
    );
    describe_histogram!(
        "switchyard_lambda_billed_duration_seconds",
        Unit::Seconds,
        "Billed duration per invocation (init included when cold)"
    );
    describe_gauge!(
        "switchyard_lambda_cost_dollars_total",
        "Estimated Lambda cost since start, dollars (cumulative)"
    );
    describe_gauge!(
        "switchyard_lambda_gb_seconds_total",
        "Billed GB-seconds since start (cumulative)"
    );
    describe_counter!(
        "switchyard_lambda_throttles_total",
        "Refused invocations: source=lambda (429) or reserved_concurrency (the gateway's limit)"
    );
    describe_counter!(
        "switchyard_lambda_function_errors_total",
        "Invocations the function itself failed"
    );
    describe_gauge!(
        "switchyard_lambda_recent_cold_start_ratio",
        "Share of cold starts among invocations in the recent window"
    );
    describe_gauge!(
        "switchyard_lambda_recent_throttles",
        "Throttles in the recent window"
    );
}
