//! The discrete-event loop: arrivals from the phase schedule, placement by
//! the policy objects of a [`PolicySet`], dispatch to the tier models,
//! failover and the retry budget as the gateway does them, deadlines, and
//! what the gateway observes of each backend (the same
//! [`RateMeter`], [`RetryBudget`] and [`ObservedTracker`] the gateway
//! uses, driven in virtual time: instants are the run's start plus the
//! virtual offset).

use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_backends::{BackendError, BackendKind};
use switchyard_loadgen::{Phases, Process};

use super::backends::{ContainerSim, LambdaSim, LocalSim};
use super::dist::Stream;
use super::events::{Answer, Event, Events, Offer, RequestId, Time, nanos};
use super::profile::Profile;
use super::report::{FailureReason, Recorder, SimReport};
use crate::measure::{RateMeter, RequestRate};
use crate::placement::{AnswerTime, ObservedTracker, RetryBudget};
use crate::policy::spec::PolicySet;
use crate::policy::{BackendView, Policy, RequestFeatures};

/// Independent random streams of one run.
mod stream_id {
    pub const POLICY: u64 = 1;
    pub const MODEL: u64 = 2;
    pub const OVERHEAD: u64 = 3;
    pub const LOCAL: u64 = 4;
    pub const CONTAINER: u64 = 5;
    pub const CONTAINER_COLD: u64 = 6;
    pub const LAMBDA: u64 = 7;
    pub const LAMBDA_COLD: u64 = 8;
    pub const ARRIVALS: u64 = 9;
}

/// The load of one run.
#[derive(Debug, Clone)]
pub struct Workload {
    pub phases: Phases,
    /// Poisson arrivals (seeded from the run's seed) instead of evenly spaced.
    pub poisson: bool,
    pub max_requests: Option<u64>,
    /// Models by index into the profile, with their share of requests.
    pub models: Vec<(usize, f64)>,
    pub seed: u64,
    /// Width of the time buckets of the report.
    pub bucket: Duration,
}

/// A request in flight.
#[derive(Debug, Clone)]
struct Request {
    generation: u32,
    live: bool,
    arrival: Time,
    deadline: Time,
    model: usize,
    random: u64,
    rate: RequestRate,
    /// Backends (by bit) that refused it.
    refused: u32,
    /// The backend of the current attempt and when it started.
    backend: usize,
    attempt_start: Time,
    /// Candidates when the current attempt was placed (failover needs two).
    candidates: usize,
    attempts: u32,
    last_refusal: Option<BackendError>,
}

/// The tiers of the profile, in the order local, container, lambda.
#[derive(Debug)]
enum Tier {
    Local(LocalSim),
    Container(ContainerSim),
    Lambda(LambdaSim),
}

impl Tier {
    fn serves(&self, model: usize) -> bool {
        match self {
            Tier::Local(t) => t.serves(model),
            Tier::Container(t) => t.serves(model),
            Tier::Lambda(t) => t.serves(model),
        }
    }

    fn snapshot(&self, now: Time) -> switchyard_backends::BackendSnapshot {
        match self {
            Tier::Local(t) => t.snapshot(),
            Tier::Container(t) => t.snapshot(),
            Tier::Lambda(t) => t.snapshot(now),
        }
    }

    /// What placement sees for a request of `model` (the gateway asks each
    /// backend's `snapshot_for`).
    fn snapshot_for(&self, model: usize, now: Time) -> switchyard_backends::BackendSnapshot {
        match self {
            Tier::Local(t) => t.snapshot_for(model),
            _ => self.snapshot(now),
        }
    }

    fn offer(&mut self, request: RequestId, model: usize, now: Time, events: &mut Events) -> Offer {
        match self {
            Tier::Local(t) => t.offer(request, model, now, events),
            Tier::Container(t) => t.offer(request, model, now, events),
            Tier::Lambda(t) => t.offer(request, model, now, events),
        }
    }
}

struct Engine<'a> {
    profile: &'a Profile,
    policies: Vec<Arc<dyn Policy>>,
    base: Instant,
    now: Time,
    events: Events,
    requests: Vec<Request>,
    free: Vec<u32>,
    pending: u64,
    tiers: Vec<Tier>,
    /// Index `backend * models + model`.
    observed: Vec<ObservedTracker>,
    rates: RateMeter,
    budget: RetryBudget,
    timeout: Time,
    policy_stream: Stream,
    model_stream: Stream,
    overhead_stream: Stream,
    recorder: Recorder,
    answers: Vec<Answer>,
    views: Vec<BackendView>,
    candidates: Vec<usize>,
    arrivals_done: bool,
    /// Per model: when its policy may next be asked for pre-warm advice.
    next_prewarm_check: Vec<Time>,
}

/// Runs `workload` against the tiers of `profile`, placing every request
/// with `policies`, and reports what happened. The run is a pure function
/// of its inputs: the same inputs give the same report.
pub fn simulate(
    profile: &Profile,
    policies: &PolicySet,
    label: &str,
    workload: &Workload,
) -> SimReport {
    simulate_with(
        profile,
        &|model| Arc::clone(policies.for_model(model)),
        label,
        &policies.source,
        workload,
    )
}

/// [`simulate`] with the policy of each model given by `policy_for`
/// (tests wrap the real policies to watch their decisions).
pub fn simulate_with(
    profile: &Profile,
    policy_for: &dyn Fn(&str) -> Arc<dyn Policy>,
    label: &str,
    source: &str,
    workload: &Workload,
) -> SimReport {
    let base = Instant::now();
    let seed = workload.seed;
    let model_count = profile.models.len();
    let max_batch: Vec<u64> = profile.models.iter().map(|m| m.max_batch_size).collect();
    let mut tiers = Vec::new();
    if let Some(local) = &profile.local {
        tiers.push(Tier::Local(LocalSim::new(
            local,
            &max_batch,
            Stream::new(seed, stream_id::LOCAL),
        )));
    }
    if let Some(container) = &profile.container {
        tiers.push(Tier::Container(ContainerSim::new(
            container,
            Stream::new(seed, stream_id::CONTAINER),
            Stream::new(seed, stream_id::CONTAINER_COLD),
        )));
    }
    if let Some(lambda) = &profile.lambda {
        tiers.push(Tier::Lambda(LambdaSim::new(
            lambda,
            Stream::new(seed, stream_id::LAMBDA),
            Stream::new(seed, stream_id::LAMBDA_COLD),
        )));
    }
    let names = profile.backend_names();
    let kinds: Vec<BackendKind> = tiers
        .iter()
        .map(|t| match t {
            Tier::Local(_) => BackendKind::Local,
            Tier::Container(_) => BackendKind::Container,
            Tier::Lambda(_) => BackendKind::Lambda,
        })
        .collect();
    let g = &profile.gateway;
    let mut engine = Engine {
        profile,
        policies: profile.models.iter().map(|m| policy_for(&m.name)).collect(),
        base,
        now: 0,
        events: Events::default(),
        requests: Vec::new(),
        free: Vec::new(),
        pending: 0,
        observed: vec![ObservedTracker::new(base); tiers.len() * model_count],
        tiers,
        rates: RateMeter::new(g.rate_window, base),
        budget: RetryBudget::new(g.retry_budget_ratio, g.retry_floor_per_second, base),
        timeout: nanos(g.request_timeout),
        policy_stream: Stream::new(seed, stream_id::POLICY),
        model_stream: Stream::new(seed, stream_id::MODEL),
        overhead_stream: Stream::new(seed, stream_id::OVERHEAD),
        recorder: Recorder::new(
            &names,
            &kinds,
            workload.bucket,
            workload.phases.total_duration(),
        ),
        answers: Vec::new(),
        views: Vec::new(),
        candidates: Vec::new(),
        arrivals_done: false,
        next_prewarm_check: vec![0; profile.models.len()],
    };
    if let Some(Tier::Container(pool)) = engine
        .tiers
        .iter()
        .find(|t| matches!(t, Tier::Container(_)))
    {
        engine
            .events
            .schedule(pool.scale_interval(), Event::ContainerTick);
    }
    let process = if workload.poisson {
        Process::Poisson {
            seed: Stream::new(seed, stream_id::ARRIVALS).next_u64(),
        }
    } else {
        Process::Constant
    };
    let total_weight: f64 = workload.models.iter().map(|(_, w)| w).sum();
    let mut arrivals = workload
        .phases
        .arrivals(process, workload.max_requests)
        .peekable();
    loop {
        let next_arrival = arrivals.peek().map(|due| nanos(due.at));
        let next_event = engine.events.next_time();
        match (next_arrival, next_event) {
            (None, _) if engine.pending == 0 => break,
            (None, None) => break,
            // Events due at the same instant as an arrival go first.
            (Some(a), Some(e)) if e <= a => engine.step_event(),
            (None, Some(_)) => engine.step_event(),
            (Some(_), _) => {
                if let Some(due) = arrivals.next() {
                    let model =
                        pick_model(&workload.models, total_weight, &mut engine.model_stream);
                    engine.arrive(nanos(due.at), model);
                }
                if arrivals.peek().is_none() {
                    engine.arrivals_done = true;
                }
            }
        }
    }
    let end = engine.now.max(nanos(workload.phases.total_duration()));
    engine.finish_report(label, source, workload, end)
}

fn pick_model(models: &[(usize, f64)], total: f64, stream: &mut Stream) -> usize {
    if let [(only, _)] = models {
        return *only;
    }
    let mut x = stream.uniform() * total;
    for &(model, weight) in models {
        if x < weight {
            return model;
        }
        x -= weight;
    }
    models.last().map_or(0, |&(m, _)| m)
}

impl Engine<'_> {
    fn instant(&self, at: Time) -> Instant {
        self.base + Duration::from_nanos(at)
    }

    fn is_live(requests: &[Request], id: RequestId) -> bool {
        requests
            .get(id.slot as usize)
            .is_some_and(|r| r.live && r.generation == id.generation)
    }

    fn arrive(&mut self, at: Time, model: usize) {
        self.now = at;
        let name = &self.profile.models[model].name;
        let rate = self.rates.record(name, self.instant(at));
        self.budget.deposit();
        let request = Request {
            generation: 0,
            live: true,
            arrival: at,
            deadline: at.saturating_add(self.timeout),
            model,
            random: self.policy_stream.next_u64(),
            rate,
            refused: 0,
            backend: 0,
            attempt_start: at,
            candidates: 0,
            attempts: 0,
            last_refusal: None,
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                let entry = &mut self.requests[slot as usize];
                let generation = entry.generation.wrapping_add(1);
                *entry = Request {
                    generation,
                    ..request
                };
                slot
            }
            None => {
                self.requests.push(request);
                u32::try_from(self.requests.len() - 1).unwrap_or(u32::MAX)
            }
        };
        self.pending += 1;
        self.recorder.arrival(at);
        let id = RequestId {
            slot,
            generation: self.requests[slot as usize].generation,
        };
        self.place(id);
    }

    /// Asks the policy for a backend and offers the request to it; on a
    /// refusal, fails over as the gateway does.
    fn place(&mut self, id: RequestId) {
        let now = self.now;
        let Some(request) = self.requests.get(id.slot as usize) else {
            return;
        };
        let model = request.model;
        self.candidates.clear();
        self.candidates.extend(
            (0..self.tiers.len())
                .filter(|&b| request.refused & (1 << b) == 0 && self.tiers[b].serves(model)),
        );
        self.views.clear();
        let models = self.profile.models.len();
        let instant = self.instant(now);
        for &b in &self.candidates {
            self.views.push(BackendView {
                snapshot: self.tiers[b].snapshot_for(model, now),
                observed: self.observed[b * models + model].observed(instant),
            });
        }
        let features = RequestFeatures {
            model: &self.profile.models[model].name,
            payload_bytes: self.profile.models[model].payload_bytes,
            rate: request.rate,
            random: request.random,
            // Each simulated tier brings its own CPU: no shared host.
            host_cpu_busy: None,
            refused_on_host: false,
        };
        if request.attempts == 0 && now >= self.next_prewarm_check[model] {
            self.next_prewarm_check[model] = now + nanos(crate::prewarm::CHECK_INTERVAL);
            for advice in self.policies[model].prewarm(&features, &self.views) {
                let Some(&backend) = self.candidates.get(advice.backend) else {
                    continue;
                };
                let hold = nanos(Duration::from_secs_f64(advice.hold_s.clamp(0.0, 3600.0)));
                match &mut self.tiers[backend] {
                    Tier::Container(pool) => {
                        pool.prewarm(advice.slots, hold, now);
                    }
                    Tier::Lambda(lambda) => {
                        lambda.prewarm(model, advice.slots, hold, now, &mut self.events);
                    }
                    Tier::Local(_) => {}
                }
            }
        }
        let Some(decision) = self.policies[model].place(&features, &self.views) else {
            let reason = match &request.last_refusal {
                Some(error) => FailureReason::of(error),
                None => FailureReason::Unavailable,
            };
            self.finish(id, Err(reason));
            return;
        };
        let Some(&backend) = self.candidates.get(decision.backend) else {
            self.finish(id, Err(FailureReason::Unavailable));
            return;
        };
        let candidates = self.candidates.len();
        if let Some(request) = self.requests.get_mut(id.slot as usize) {
            request.backend = backend;
            request.attempt_start = now;
            request.candidates = candidates;
            request.attempts += 1;
        }
        match self.tiers[backend].offer(id, model, now, &mut self.events) {
            Offer::Accepted { done_at } => {
                let deadline = self.requests[id.slot as usize].deadline;
                if done_at.is_none_or(|done| done > deadline) {
                    self.events
                        .schedule(deadline, Event::Deadline { request: id });
                }
            }
            Offer::Refused(error) => self.refused(id, error),
        }
    }

    /// The current attempt was refused: fail over within the deadline and
    /// the retry budget, or fail.
    fn refused(&mut self, id: RequestId, error: BackendError) {
        let now = self.now;
        let instant = self.instant(now);
        let models = self.profile.models.len();
        let Some(request) = self.requests.get_mut(id.slot as usize) else {
            return;
        };
        self.observed[request.backend * models + request.model].record(None, true, instant);
        self.recorder.refusal(request.backend);
        let refusal = matches!(
            error,
            BackendError::Overloaded { .. }
                | BackendError::Unavailable { .. }
                | BackendError::NotServed { .. }
        );
        let can_retry = refusal
            && request.candidates > 1
            && now < request.deadline
            && self.budget.try_withdraw(instant);
        if !can_retry {
            if refusal && request.candidates > 1 && now < request.deadline {
                self.recorder.budget_exhausted();
            }
            let reason = FailureReason::of(&error);
            self.finish(id, Err(reason));
            return;
        }
        request.refused |= 1 << request.backend;
        request.last_refusal = Some(error);
        self.recorder.failover();
        self.place(id);
    }

    fn step_event(&mut self) {
        let Some((at, event)) = self.events.pop() else {
            return;
        };
        self.now = self.now.max(at);
        let now = self.now;
        let requests = &self.requests;
        let live = |id: RequestId| Self::is_live(requests, id);
        let answers = &mut self.answers;
        match event {
            Event::LocalDone { model, worker } => {
                if let Some(Tier::Local(local)) =
                    self.tiers.iter_mut().find(|t| matches!(t, Tier::Local(_)))
                {
                    local.done(model, worker, now, &mut self.events, &live, answers);
                }
            }
            Event::ContainerDone {
                container,
                request,
                queue,
            } => {
                if let Some(Tier::Container(pool)) = self
                    .tiers
                    .iter_mut()
                    .find(|t| matches!(t, Tier::Container(_)))
                {
                    pool.done(
                        container,
                        request,
                        queue,
                        now,
                        &mut self.events,
                        &live,
                        answers,
                    );
                }
            }
            Event::ContainerReady { container } => {
                if let Some(Tier::Container(pool)) = self
                    .tiers
                    .iter_mut()
                    .find(|t| matches!(t, Tier::Container(_)))
                {
                    pool.ready(container, now, &mut self.events, &live, answers);
                }
            }
            Event::ContainerTick => {
                let running = !self.arrivals_done || self.pending > 0;
                if let Some(Tier::Container(pool)) = self
                    .tiers
                    .iter_mut()
                    .find(|t| matches!(t, Tier::Container(_)))
                {
                    pool.scale(now, &mut self.events);
                    if running {
                        self.events
                            .schedule(now + pool.scale_interval(), Event::ContainerTick);
                    }
                }
            }
            Event::LambdaDone { instance, request } => {
                if let Some(Tier::Lambda(lambda)) =
                    self.tiers.iter_mut().find(|t| matches!(t, Tier::Lambda(_)))
                {
                    lambda.done(instance, request, now, answers);
                }
            }
            Event::LambdaWarmed { instance } => {
                if let Some(Tier::Lambda(lambda)) =
                    self.tiers.iter_mut().find(|t| matches!(t, Tier::Lambda(_)))
                {
                    lambda.warmed(instance, now);
                }
            }
            Event::Deadline { request } => {
                if Self::is_live(&self.requests, request) {
                    let r = &self.requests[request.slot as usize];
                    let models = self.profile.models.len();
                    let instant = self.instant(now);
                    self.observed[r.backend * models + r.model].record(None, true, instant);
                    self.finish(request, Err(FailureReason::Timeout));
                }
            }
        }
        let mut answers = std::mem::take(&mut self.answers);
        for answer in answers.drain(..) {
            match answer {
                Answer::Served(id, queue) => {
                    if Self::is_live(&self.requests, id) {
                        let r = &self.requests[id.slot as usize];
                        let models = self.profile.models.len();
                        let instant = self.instant(now);
                        let time = AnswerTime {
                            latency: Duration::from_nanos(now - r.attempt_start),
                            queue: Duration::from_nanos(queue),
                        };
                        self.observed[r.backend * models + r.model].record(
                            Some(time),
                            false,
                            instant,
                        );
                        self.finish(id, Ok(()));
                    }
                }
                Answer::Refused(id, error) => {
                    if Self::is_live(&self.requests, id) {
                        self.refused(id, error);
                    }
                }
            }
        }
        self.answers = answers;
    }

    /// Ends a request: records it and frees its slot.
    fn finish(&mut self, id: RequestId, outcome: Result<(), FailureReason>) {
        let now = self.now;
        let Some(request) = self.requests.get_mut(id.slot as usize) else {
            return;
        };
        if !request.live || request.generation != id.generation {
            return;
        }
        request.live = false;
        self.pending -= 1;
        self.free.push(id.slot);
        let elapsed = now - request.arrival;
        let backend = (request.attempts > 0).then_some(request.backend);
        match outcome {
            Ok(()) => {
                let overhead = self
                    .profile
                    .gateway
                    .overhead
                    .sample_ns(&mut self.overhead_stream);
                self.recorder
                    .success(request.arrival, backend.unwrap_or(0), elapsed + overhead);
            }
            Err(reason) => self
                .recorder
                .failure(request.arrival, backend, reason, elapsed),
        }
    }

    fn finish_report(self, label: &str, source: &str, workload: &Workload, end: Time) -> SimReport {
        let mut costs = Vec::with_capacity(self.tiers.len());
        let mut details = Vec::with_capacity(self.tiers.len());
        for tier in &self.tiers {
            match tier {
                Tier::Local(t) => {
                    costs.push(t.cost_per_second * end as f64 / 1e9);
                    details.push(serde_json::json!({}));
                }
                Tier::Container(t) => {
                    costs.push(t.cost(end));
                    details.push(serde_json::json!({
                        "cold_starts": t.activity.cold_starts,
                        "retired": t.activity.retired,
                        "peak_containers": t.activity.peak_containers,
                    }));
                }
                Tier::Lambda(t) => {
                    costs.push(t.activity.cost_dollars);
                    details.push(serde_json::json!({
                        "invocations": t.activity.invocations,
                        "cold_starts": t.activity.cold_starts,
                        "throttles": t.activity.throttles,
                        "peak_concurrency": t.activity.peak_concurrency,
                        "gb_seconds": t.activity.gb_seconds,
                    }));
                }
            }
        }
        let models = workload
            .models
            .iter()
            .map(|&(m, _)| self.profile.models[m].name.clone())
            .collect();
        self.recorder
            .report(label, source, models, workload, end, costs, details)
    }
}
