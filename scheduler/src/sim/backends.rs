//! Models of the three tiers, each reporting the same [`BackendSnapshot`]
//! its real backend reports, so policies see what they would see live.
//!
//! - [`LocalSim`]: per model, `workers` slots and a bounded FIFO queue; an
//!   arrival to a full queue is refused (429). A worker that frees takes
//!   the next request and, with batching, every other waiting one up to the
//!   model's largest batch, and runs them as one batch (latency by batch
//!   size from the profile).
//! - [`ContainerSim`]: the pool of `backends/container`: containers with
//!   `workers` slots each and up to `max_in_flight` requests; a request
//!   goes to the container with the fewest outstanding. The pool starts
//!   containers (each after a drawn cold start) when in-flight requests
//!   exceed `target_in_flight` per container, checked on each request and
//!   every `scale_interval`, and retires one after `idle_timeout` of
//!   over-provisioning. A request that finds every container full waits for
//!   a starting one; when none can start it is refused (429).
//! - [`LambdaSim`]: at most `reserved_concurrency` invocations at once
//!   (beyond: a throttle, 429). An invocation reuses the most recently idle
//!   warm instance or starts a new one and pays its cold start; idle
//!   instances are reclaimed after `instance_idle`. Each invocation costs
//!   the request price plus GB-seconds of its billed duration (the init
//!   included on a cold start).

use std::collections::VecDeque;

use switchyard_backends::{BackendError, BackendKind, BackendSnapshot, RecentColdStarts};

use super::dist::{BatchLatency, Stream};
use super::events::{Answer, Event, Events, Offer, RequestId, Time, nanos};
use super::profile::{ContainerProfile, LambdaModel, LambdaProfile, LocalProfile};

fn overloaded(backend: &str, reason: String) -> BackendError {
    BackendError::Overloaded {
        backend: backend.to_owned(),
        reason,
    }
}

fn not_served(backend: &str, model: usize) -> BackendError {
    BackendError::NotServed {
        backend: backend.to_owned(),
        model: format!("#{model}"),
        version: 1,
    }
}

fn snapshot(name: &str, kind: BackendKind) -> BackendSnapshot {
    BackendSnapshot {
        name: name.to_owned(),
        kind,
        ready: true,
        in_flight: 0,
        queued: 0,
        concurrency: 0,
        capacity: 0,
        headroom: 0,
        max_payload_bytes: None,
        unready_reason: None,
        cold_start_ms: None,
        memory_mb: None,
        // Each simulated tier brings its own CPU.
        shares_host_cpu: false,
    }
}

/// One model's workers and queue on the local tier.
#[derive(Debug)]
struct LocalPool {
    workers: u64,
    queue_capacity: u64,
    max_batch: u64,
    latency: BatchLatency,
    idle: Vec<u32>,
    /// The batch each worker runs (empty when idle), with the time each
    /// request waited in the queue.
    running: Vec<Vec<(RequestId, Time)>>,
    running_requests: u64,
    /// Waiting requests and when they arrived.
    queue: VecDeque<(RequestId, Time)>,
}

impl LocalPool {
    /// Adds this pool's requests to `snapshot`, and as its capacity what
    /// it holds plus the requests [`LocalSim::offer`] would still take (an
    /// idle worker, a free place in the queue), as the real backend
    /// reports it: a worker running a batch holds several requests, so a
    /// fixed capacity would call the pool full while its queue has room.
    fn add_to(&self, snapshot: &mut BackendSnapshot) {
        let queued = self.queue.len() as u64;
        let in_flight = queued + self.running_requests;
        let room = self.idle.len() as u64 + self.queue_capacity.saturating_sub(queued);
        snapshot.in_flight += in_flight;
        snapshot.queued += queued;
        snapshot.capacity += in_flight + room;
    }
}

/// The local tier.
#[derive(Debug)]
pub struct LocalSim {
    name: String,
    pub cost_per_second: f64,
    pools: Vec<Option<LocalPool>>,
    stream: Stream,
    snapshot: BackendSnapshot,
}

impl LocalSim {
    pub fn new(profile: &LocalProfile, max_batch: &[u64], stream: Stream) -> Self {
        let pools = profile
            .models
            .iter()
            .zip(max_batch)
            .map(|(model, &max_batch)| {
                model.as_ref().map(|m| LocalPool {
                    workers: m.workers,
                    queue_capacity: m.queue_capacity,
                    max_batch: if profile.batching { max_batch } else { 1 },
                    latency: m.latency.clone(),
                    idle: (0..u32::try_from(m.workers).unwrap_or(u32::MAX))
                        .rev()
                        .collect(),
                    running: vec![Vec::new(); usize::try_from(m.workers).unwrap_or(0)],
                    running_requests: 0,
                    queue: VecDeque::new(),
                })
            })
            .collect::<Vec<_>>();
        let mut snapshot = snapshot(&profile.name, BackendKind::Local);
        snapshot.concurrency = pools.iter().flatten().map(|p| p.workers).sum();
        Self {
            name: profile.name.clone(),
            cost_per_second: profile.cost_per_second,
            pools,
            stream,
            snapshot,
        }
    }

    pub fn serves(&self, model: usize) -> bool {
        self.pools.get(model).is_some_and(Option::is_some)
    }

    /// The snapshot (over all models, as the real backend reports it).
    pub fn snapshot(&self) -> BackendSnapshot {
        let mut s = self.snapshot.clone();
        for pool in self.pools.iter().flatten() {
            pool.add_to(&mut s);
        }
        s
    }

    /// The snapshot for a request of `model`: its own pool's workers,
    /// queue and requests, as the real backend's `snapshot_for` reports.
    pub fn snapshot_for(&self, model: usize) -> BackendSnapshot {
        let Some(pool) = self.pools.get(model).and_then(Option::as_ref) else {
            return self.snapshot();
        };
        let mut s = self.snapshot.clone();
        s.concurrency = pool.workers;
        pool.add_to(&mut s);
        s
    }

    pub fn offer(
        &mut self,
        request: RequestId,
        model: usize,
        now: Time,
        events: &mut Events,
    ) -> Offer {
        let Some(pool) = self.pools.get_mut(model).and_then(Option::as_mut) else {
            return Offer::Refused(not_served(&self.name, model));
        };
        if let Some(worker) = pool.idle.pop() {
            let done_at = Self::start(
                pool,
                worker,
                vec![(request, 0)],
                model,
                now,
                &mut self.stream,
                events,
            );
            return Offer::Accepted {
                done_at: Some(done_at),
            };
        }
        if pool.queue.len() as u64 >= pool.queue_capacity {
            return Offer::Refused(overloaded(
                &self.name,
                format!("queue is full ({} waiting)", pool.queue_capacity),
            ));
        }
        pool.queue.push_back((request, now));
        Offer::Accepted { done_at: None }
    }

    fn start(
        pool: &mut LocalPool,
        worker: u32,
        batch: Vec<(RequestId, Time)>,
        model: usize,
        now: Time,
        stream: &mut Stream,
        events: &mut Events,
    ) -> Time {
        let rows = batch.len() as u64;
        let done_at = now + pool.latency.for_rows(rows).sample_ns(stream);
        pool.running_requests += rows;
        if let Some(slot) = pool.running.get_mut(worker as usize) {
            *slot = batch;
        }
        events.schedule(
            done_at,
            Event::LocalDone {
                model: u32::try_from(model).unwrap_or(u32::MAX),
                worker,
            },
        );
        done_at
    }

    /// A worker finished: its batch is answered, and it takes the next one.
    pub fn done(
        &mut self,
        model: u32,
        worker: u32,
        now: Time,
        events: &mut Events,
        live: &impl Fn(RequestId) -> bool,
        answers: &mut Vec<Answer>,
    ) {
        let Some(pool) = self.pools.get_mut(model as usize).and_then(Option::as_mut) else {
            return;
        };
        let Some(slot) = pool.running.get_mut(worker as usize) else {
            return;
        };
        let finished = std::mem::take(slot);
        pool.running_requests -= finished.len() as u64;
        answers.extend(
            finished
                .into_iter()
                .map(|(request, queue)| Answer::Served(request, queue)),
        );
        // Requests whose deadline passed while queued are dropped, as the
        // local backend drops them when a worker takes them.
        let mut batch = Vec::new();
        while (batch.len() as u64) < pool.max_batch {
            match pool.queue.pop_front() {
                Some((request, arrived)) if live(request) => {
                    batch.push((request, now.saturating_sub(arrived)));
                }
                Some(_) => {}
                None => break,
            }
        }
        if batch.is_empty() {
            pool.idle.push(worker);
        } else {
            Self::start(
                pool,
                worker,
                batch,
                model as usize,
                now,
                &mut self.stream,
                events,
            );
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ContainerState {
    Starting,
    Ready,
    Draining,
    Gone,
}

#[derive(Debug)]
struct Container {
    state: ContainerState,
    outstanding: u64,
    busy: u64,
    /// Requests waiting for a worker: model and when the pool got them.
    queue: VecDeque<(RequestId, usize, Time)>,
    created: Time,
    removed: Option<Time>,
}

/// What the container pool did over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ContainerActivity {
    pub cold_starts: u64,
    pub retired: u64,
    pub peak_containers: u64,
}

/// The container tier.
#[derive(Debug)]
pub struct ContainerSim {
    config: ContainerProfile,
    containers: Vec<Container>,
    in_flight: u64,
    peak_in_flight: u64,
    /// Requests waiting for a container: model and when the pool got them.
    waiting: VecDeque<(RequestId, usize, Time)>,
    ready: u64,
    starting: u64,
    last_fully_used: Time,
    /// A pre-warm in force: at least this many containers until then.
    prewarm: Option<(u64, Time)>,
    service: Stream,
    cold: Stream,
    /// Create -> ready of the latest containers, as the pool measures it.
    cold_starts: RecentColdStarts,
    pub activity: ContainerActivity,
}

impl ContainerSim {
    /// The pool at the start of a run: `min_containers` already running.
    pub fn new(config: &ContainerProfile, service: Stream, cold: Stream) -> Self {
        let containers = (0..config.min_containers)
            .map(|_| Container {
                state: ContainerState::Ready,
                outstanding: 0,
                busy: 0,
                queue: VecDeque::new(),
                created: 0,
                removed: None,
            })
            .collect();
        Self {
            ready: config.min_containers,
            config: config.clone(),
            containers,
            in_flight: 0,
            peak_in_flight: 0,
            waiting: VecDeque::new(),
            starting: 0,
            last_fully_used: 0,
            prewarm: None,
            service,
            cold,
            cold_starts: RecentColdStarts::default(),
            activity: ContainerActivity {
                peak_containers: config.min_containers,
                ..ContainerActivity::default()
            },
        }
    }

    pub fn serves(&self, model: usize) -> bool {
        self.config.models.get(model).is_some_and(Option::is_some)
    }

    pub fn scale_interval(&self) -> Time {
        nanos(self.config.scale_interval)
    }

    /// Keeps containers enough for `slots` running requests until `now +
    /// hold`, started at the next scaling tick (as the gateway's pool does:
    /// a pre-warm in force is only raised or extended). Returns the slots
    /// that adds.
    pub fn prewarm(&mut self, slots: u64, hold: Time, now: Time) -> u64 {
        let c = &self.config;
        let workers = c.workers.max(1);
        let containers = slots.div_ceil(workers).min(c.max_containers);
        let until = now.saturating_add(hold);
        self.prewarm = Some(match self.prewarm {
            Some((current, current_until)) if now < current_until => {
                (current.max(containers), current_until.max(until))
            }
            _ => (containers, until),
        });
        containers.saturating_sub(self.ready + self.starting) * workers
    }

    pub fn snapshot(&self) -> BackendSnapshot {
        let c = &self.config;
        let mut s = snapshot(&c.name, BackendKind::Container);
        s.ready = self.ready > 0 || c.min_containers == 0;
        if !s.ready {
            s.unready_reason = Some(format!("starting containers ({} starting)", self.starting));
        }
        s.in_flight = self.in_flight;
        s.queued = self.waiting.len() as u64;
        s.concurrency = self.ready * c.workers;
        s.capacity = self.ready * c.max_in_flight;
        s.headroom = c.max_containers.saturating_sub(self.ready + self.starting) * c.max_in_flight;
        s.cold_start_ms = self.cold_starts.mean_ms();
        s
    }

    fn can_grow(&self) -> bool {
        self.ready + self.starting < self.config.max_containers || self.starting > 0
    }

    /// The ready container with the fewest outstanding requests and room.
    fn pick(&self) -> Option<usize> {
        self.containers
            .iter()
            .enumerate()
            .filter(|(_, c)| {
                c.state == ContainerState::Ready && c.outstanding < self.config.max_in_flight
            })
            .min_by_key(|(i, c)| (c.outstanding, *i))
            .map(|(i, _)| i)
    }

    fn assign(
        &mut self,
        index: usize,
        request: RequestId,
        model: usize,
        offered: Time,
        now: Time,
        events: &mut Events,
    ) -> Option<Time> {
        let workers = self.config.workers;
        let container = &mut self.containers[index];
        container.outstanding += 1;
        if container.busy < workers {
            container.busy += 1;
            let latency = self.config.models.get(model).and_then(Option::as_ref)?;
            let done_at = now + latency.for_rows(1).sample_ns(&mut self.service);
            events.schedule(
                done_at,
                Event::ContainerDone {
                    container: u32::try_from(index).unwrap_or(u32::MAX),
                    request,
                    queue: now.saturating_sub(offered),
                },
            );
            Some(done_at)
        } else {
            container.queue.push_back((request, model, offered));
            None
        }
    }

    pub fn offer(
        &mut self,
        request: RequestId,
        model: usize,
        now: Time,
        events: &mut Events,
    ) -> Offer {
        if !self.serves(model) {
            return Offer::Refused(not_served(&self.config.name, model));
        }
        self.in_flight += 1;
        self.peak_in_flight = self.peak_in_flight.max(self.in_flight);
        if let Some(index) = self.pick() {
            let done_at = self.assign(index, request, model, now, now, events);
            // Over the target: scale up now rather than at the next tick.
            if self.in_flight > self.ready * self.config.target_in_flight {
                self.scale(now, events);
            }
            return Offer::Accepted { done_at };
        }
        let any_ready = self.ready > 0;
        if any_ready && !self.can_grow() {
            self.in_flight -= 1;
            return Offer::Refused(self.full());
        }
        self.waiting.push_back((request, model, now));
        self.scale(now, events);
        Offer::Accepted { done_at: None }
    }

    fn full(&self) -> BackendError {
        overloaded(
            &self.config.name,
            format!(
                "all {} containers have {} requests in flight",
                self.config.max_containers, self.config.max_in_flight
            ),
        )
    }

    /// Starts containers up to the demand, or retires one after the pool
    /// has been bigger than needed for the idle timeout.
    pub fn scale(&mut self, now: Time, events: &mut Events) {
        let c = &self.config;
        let peak = self.peak_in_flight.max(self.in_flight);
        self.peak_in_flight = self.in_flight;
        let floor = self
            .prewarm
            .filter(|&(_, until)| now < until)
            .map_or(0, |(containers, _)| containers);
        let desired = peak
            .div_ceil(c.target_in_flight)
            .max(floor)
            .clamp(c.min_containers, c.max_containers);
        let live = self.ready;
        if desired >= live {
            self.last_fully_used = now;
        }
        if live + self.starting < desired {
            for _ in 0..desired - live - self.starting {
                let ready_at = now + c.cold_start.sample_ns(&mut self.cold);
                let index = self.containers.len();
                self.containers.push(Container {
                    state: ContainerState::Starting,
                    outstanding: 0,
                    busy: 0,
                    queue: VecDeque::new(),
                    created: now,
                    removed: None,
                });
                events.schedule(
                    ready_at,
                    Event::ContainerReady {
                        container: u32::try_from(index).unwrap_or(u32::MAX),
                    },
                );
                self.starting += 1;
                self.activity.cold_starts += 1;
            }
            let alive = self.ready + self.starting;
            self.activity.peak_containers = self.activity.peak_containers.max(alive);
            return;
        }
        if live > desired
            && self.starting == 0
            && now.saturating_sub(self.last_fully_used) >= nanos(c.idle_timeout)
        {
            let victim = self
                .containers
                .iter()
                .enumerate()
                .filter(|(_, k)| k.state == ContainerState::Ready)
                .min_by_key(|(i, k)| (k.outstanding, *i))
                .map(|(i, _)| i);
            if let Some(index) = victim {
                self.last_fully_used = now;
                self.ready -= 1;
                self.activity.retired += 1;
                let container = &mut self.containers[index];
                container.state = ContainerState::Draining;
                if container.outstanding == 0 {
                    container.state = ContainerState::Gone;
                    container.removed = Some(now);
                }
            }
        }
    }

    /// A container became ready: waiting requests pick again.
    pub fn ready(
        &mut self,
        index: u32,
        now: Time,
        events: &mut Events,
        live: &impl Fn(RequestId) -> bool,
        answers: &mut Vec<Answer>,
    ) {
        let Some(container) = self.containers.get_mut(index as usize) else {
            return;
        };
        if container.state != ContainerState::Starting {
            return;
        }
        container.state = ContainerState::Ready;
        self.cold_starts
            .record(now.saturating_sub(container.created) as f64 / 1e6);
        self.starting -= 1;
        self.ready += 1;
        let waiting = std::mem::take(&mut self.waiting);
        for (request, model, offered) in waiting {
            if !live(request) {
                self.in_flight -= 1;
                continue;
            }
            match self.pick() {
                Some(i) => {
                    self.assign(i, request, model, offered, now, events);
                }
                None if !self.can_grow() => {
                    self.in_flight -= 1;
                    answers.push(Answer::Refused(request, self.full()));
                }
                None => self.waiting.push_back((request, model, offered)),
            }
        }
    }

    /// A container finished a request (which had waited `queue`) and
    /// starts its next queued one.
    #[allow(clippy::too_many_arguments)] // the engine's context, as in `ready`, plus the answer
    pub fn done(
        &mut self,
        index: u32,
        request: RequestId,
        queue: Time,
        now: Time,
        events: &mut Events,
        live: &impl Fn(RequestId) -> bool,
        answers: &mut Vec<Answer>,
    ) {
        answers.push(Answer::Served(request, queue));
        self.in_flight = self.in_flight.saturating_sub(1);
        let index = index as usize;
        let Some(container) = self.containers.get_mut(index) else {
            return;
        };
        container.outstanding -= 1;
        container.busy -= 1;
        loop {
            let Some(container) = self.containers.get_mut(index) else {
                return;
            };
            match container.queue.pop_front() {
                Some((next, model, offered)) if live(next) => {
                    container.outstanding -= 1;
                    self.assign(index, next, model, offered, now, events);
                    break;
                }
                Some(_) => {
                    container.outstanding -= 1;
                    self.in_flight = self.in_flight.saturating_sub(1);
                }
                None => break,
            }
        }
        if let Some(container) = self.containers.get_mut(index)
            && container.state == ContainerState::Draining
            && container.outstanding == 0
        {
            container.state = ContainerState::Gone;
            container.removed = Some(now);
        }
    }

    /// Dollars for every container's life up to `end`.
    pub fn cost(&self, end: Time) -> f64 {
        let seconds: f64 = self
            .containers
            .iter()
            .map(|c| c.removed.unwrap_or(end).min(end).saturating_sub(c.created) as f64 / 1e9)
            .sum();
        seconds * self.config.cost_per_container_second
    }
}

/// What the Lambda tier did over a run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LambdaActivity {
    pub invocations: u64,
    pub cold_starts: u64,
    pub throttles: u64,
    pub peak_concurrency: u64,
    pub gb_seconds: f64,
    pub cost_dollars: f64,
    /// Invocations made to warm instances ahead of demand (also counted in
    /// `invocations` and the cost).
    pub prewarm_invocations: u64,
}

/// The Lambda tier.
#[derive(Debug)]
pub struct LambdaSim {
    config: LambdaProfile,
    in_flight: u64,
    alive: u64,
    /// Idle warm instances, least recently used first: `(id, idle since)`.
    idle: VecDeque<(u32, Time)>,
    next_instance: u32,
    /// No pre-warm starts before this.
    next_prewarm: Time,
    service: Stream,
    cold: Stream,
    /// Instances on their first (cold) invocation and its init: the
    /// gateway learns a cold start's cost when the invocation answers.
    starting: Vec<(u32, Time)>,
    cold_starts: RecentColdStarts,
    pub activity: LambdaActivity,
}

impl LambdaSim {
    pub fn new(config: &LambdaProfile, service: Stream, cold: Stream) -> Self {
        Self {
            config: config.clone(),
            in_flight: 0,
            alive: 0,
            idle: VecDeque::new(),
            next_instance: 0,
            next_prewarm: 0,
            service,
            cold,
            starting: Vec::new(),
            cold_starts: RecentColdStarts::default(),
            activity: LambdaActivity::default(),
        }
    }

    pub fn serves(&self, model: usize) -> bool {
        self.config.models.get(model).is_some_and(Option::is_some)
    }

    /// Warm instances at `now` (busy, or idle and not yet reclaimed).
    fn warm(&self, now: Time) -> u64 {
        let ttl = nanos(self.config.instance_idle);
        let expired = self
            .idle
            .iter()
            .take_while(|(_, since)| since.saturating_add(ttl) <= now)
            .count() as u64;
        self.alive - expired
    }

    pub fn snapshot(&self, now: Time) -> BackendSnapshot {
        let c = &self.config;
        let warm = self.warm(now).min(c.reserved_concurrency);
        let mut s = snapshot(&c.name, BackendKind::Lambda);
        s.in_flight = self.in_flight;
        s.concurrency = warm;
        s.capacity = c.reserved_concurrency;
        s.headroom = c.reserved_concurrency - warm;
        s.max_payload_bytes = Some(c.max_payload_bytes);
        s.cold_start_ms = self.cold_starts.mean_ms();
        s.memory_mb = Some(c.memory_mb);
        s
    }

    pub fn offer(
        &mut self,
        request: RequestId,
        model: usize,
        now: Time,
        events: &mut Events,
    ) -> Offer {
        let Some(LambdaModel {
            latency,
            cold_start,
        }) = self.config.models.get(model).and_then(Option::as_ref)
        else {
            return Offer::Refused(not_served(&self.config.name, model));
        };
        if self.in_flight >= self.config.reserved_concurrency {
            self.activity.throttles += 1;
            return Offer::Refused(overloaded(
                &self.config.name,
                format!(
                    "its reserved concurrency of {} invocations is in use",
                    self.config.reserved_concurrency
                ),
            ));
        }
        let ttl = nanos(self.config.instance_idle);
        while self
            .idle
            .front()
            .is_some_and(|(_, since)| since.saturating_add(ttl) <= now)
        {
            self.idle.pop_front();
            self.alive -= 1;
        }
        let handler = latency.for_rows(1).sample_ns(&mut self.service);
        let (instance, init) = match self.idle.pop_back() {
            Some((instance, _)) => (instance, 0),
            None => {
                let instance = self.next_instance;
                self.next_instance = self.next_instance.wrapping_add(1);
                self.alive += 1;
                self.activity.cold_starts += 1;
                let init = cold_start.sample_ns(&mut self.cold);
                self.starting.push((instance, init));
                (instance, init)
            }
        };
        let duration = handler + init;
        self.bill(duration);
        self.in_flight += 1;
        self.activity.peak_concurrency = self.activity.peak_concurrency.max(self.in_flight);
        let done_at = now + duration;
        events.schedule(done_at, Event::LambdaDone { instance, request });
        Offer::Accepted {
            done_at: Some(done_at),
        }
    }

    /// Warms instances for `slots` concurrent invocations of `model` as the
    /// gateway's backend does: invocations of a request of zeros, billed,
    /// for the slots not warm or busy, at most half the free reserved
    /// concurrency, at most one pre-warm per `hold`. Returns the
    /// invocations started.
    pub fn prewarm(
        &mut self,
        model: usize,
        slots: u64,
        hold: Time,
        now: Time,
        events: &mut Events,
    ) -> u64 {
        let c = &self.config;
        let Some(LambdaModel {
            latency,
            cold_start,
        }) = c.models.get(model).and_then(Option::as_ref)
        else {
            return 0;
        };
        let free = c.reserved_concurrency.saturating_sub(self.in_flight) / 2;
        let missing = slots
            .min(c.reserved_concurrency)
            .saturating_sub(self.warm(now).max(self.in_flight))
            .min(free);
        if missing == 0 || now < self.next_prewarm {
            return 0;
        }
        self.next_prewarm = now.saturating_add(hold);
        let (latency, cold_start) = (latency.clone(), *cold_start);
        for _ in 0..missing {
            let instance = self.next_instance;
            self.next_instance = self.next_instance.wrapping_add(1);
            self.alive += 1;
            self.activity.cold_starts += 1;
            self.activity.prewarm_invocations += 1;
            let init = cold_start.sample_ns(&mut self.cold);
            self.starting.push((instance, init));
            let duration = latency.for_rows(1).sample_ns(&mut self.service) + init;
            self.bill(duration);
            self.in_flight += 1;
            events.schedule(now + duration, Event::LambdaWarmed { instance });
        }
        self.activity.peak_concurrency = self.activity.peak_concurrency.max(self.in_flight);
        missing
    }

    /// A pre-warm invocation finished: its instance is idle and warm.
    pub fn warmed(&mut self, instance: u32, now: Time) {
        self.answered(instance);
        self.in_flight -= 1;
        self.idle.push_back((instance, now));
    }

    /// Charges one invocation of `duration`.
    fn bill(&mut self, duration: Time) {
        let step = self.config.billing_granularity_ms * 1_000_000;
        let billed_ms = (duration.div_ceil(step).max(1) * step) as f64 / 1e6;
        let gb_seconds = self.config.memory_mb as f64 / 1024.0 * billed_ms / 1000.0;
        self.activity.invocations += 1;
        self.activity.gb_seconds += gb_seconds;
        self.activity.cost_dollars +=
            self.config.request_dollars + gb_seconds * self.config.gb_second_dollars;
    }

    pub fn done(
        &mut self,
        instance: u32,
        request: RequestId,
        now: Time,
        answers: &mut Vec<Answer>,
    ) {
        // The live backend reports all but the function's compute as the
        // queue (the invoke overhead and, when cold, the init); here the
        // handler time stands for the compute, so the init is the queue.
        let init = self.answered(instance);
        self.in_flight -= 1;
        self.idle.push_back((instance, now));
        answers.push(Answer::Served(request, init));
    }

    /// An invocation of `instance` answered: if it was the instance's
    /// first, its init is now known. Returns that init (0 when warm).
    fn answered(&mut self, instance: u32) -> Time {
        match self.starting.iter().position(|&(id, _)| id == instance) {
            Some(i) => {
                let (_, init) = self.starting.swap_remove(i);
                self.cold_starts.record(init as f64 / 1e6);
                init
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::dist::LogNormal;
    use crate::sim::profile::LocalModel;
    use std::time::Duration;

    const MS: Time = 1_000_000;

    fn id(slot: u32) -> RequestId {
        RequestId {
            slot,
            generation: 0,
        }
    }

    fn fixed(ms: f64) -> BatchLatency {
        BatchLatency::new(vec![(1, ms, ms), (8, 4.0 * ms, 4.0 * ms)], 8)
    }

    fn local(workers: u64, queue_capacity: u64, batching: bool) -> LocalSim {
        let profile = LocalProfile {
            name: "local".into(),
            batching,
            cost_per_second: 0.0,
            models: vec![Some(LocalModel {
                workers,
                queue_capacity,
                latency: fixed(10.0),
            })],
        };
        LocalSim::new(&profile, &[8], Stream::new(1, 1))
    }

    fn accepted(offer: &Offer) -> bool {
        matches!(offer, Offer::Accepted { .. })
    }

    #[test]
    fn local_refuses_when_its_queue_is_full_and_drains_in_batches() {
        let mut sim = local(1, 3, true);
        let mut events = Events::default();
        let offers: Vec<Offer> = (0..5)
            .map(|i| sim.offer(id(i), 0, 0, &mut events))
            .collect();
        assert_eq!(
            offers[0],
            Offer::Accepted {
                done_at: Some(10 * MS)
            }
        );
        assert!(
            offers[1..4]
                .iter()
                .all(|o| *o == Offer::Accepted { done_at: None })
        );
        assert!(
            matches!(&offers[4], Offer::Refused(BackendError::Overloaded { .. })),
            "the fourth waiting request finds the queue full: {:?}",
            offers[4]
        );
        let snapshot = sim.snapshot();
        assert_eq!(
            (snapshot.in_flight, snapshot.queued, snapshot.capacity),
            (4, 3, 4)
        );
        assert!(!snapshot.has_capacity());
        // The worker finishes and takes the three waiting requests as one batch.
        let (at, event) = events.pop().expect("a completion");
        let Event::LocalDone { model, worker } = event else {
            panic!("{event:?}")
        };
        let mut answers = Vec::new();
        sim.done(model, worker, at, &mut events, &|_| true, &mut answers);
        assert_eq!(answers, vec![Answer::Served(id(0), 0)], "it did not wait");
        let (at, _) = events.pop().expect("the batch's completion");
        // Three rows: interpolated between 10 ms (1 row) and 40 ms (8 rows).
        let batch_ms = (at - 10 * MS) as f64 / 1e6;
        assert!(
            (batch_ms - (10.0 + 2.0 / 7.0 * 30.0)).abs() < 1e-3,
            "{batch_ms}"
        );
        sim.done(0, worker, at, &mut events, &|_| true, &mut answers);
        assert_eq!(
            answers[1..],
            [1, 2, 3].map(|i| Answer::Served(id(i), 10 * MS)),
            "the batch waited for the first request, as the backend reports"
        );
        assert_eq!(sim.snapshot().in_flight, 0);
    }

    #[test]
    fn local_snapshot_has_room_exactly_when_an_offer_would_be_taken() {
        // One worker, a queue of 3, batches of up to 8. Once the worker
        // runs the 3 queued requests as one batch, the pool holds 3 and its
        // empty queue takes 3 more, where a capacity of workers + queue (4)
        // saw room for one.
        let mut sim = local(1, 3, true);
        let mut events = Events::default();
        let mut answers = Vec::new();
        let mut next: u32 = 0;
        let mut offer = |sim: &mut LocalSim, events: &mut Events| {
            let room = sim.snapshot_for(0).has_capacity();
            assert_eq!(room, sim.snapshot().has_capacity());
            let taken = accepted(&sim.offer(id(next), 0, 0, events));
            next += 1;
            assert_eq!(
                room,
                taken,
                "request {}: {:?}",
                next - 1,
                sim.snapshot_for(0)
            );
            taken
        };
        assert!((0..4).all(|_| offer(&mut sim, &mut events)));
        assert!(!offer(&mut sim, &mut events), "queue full");
        // The first request is answered; the worker takes the 3 queued ones.
        let (at, Event::LocalDone { model, worker }) = events.pop().expect("a completion") else {
            panic!("not a local completion")
        };
        sim.done(model, worker, at, &mut events, &|_| true, &mut answers);
        let running = sim.snapshot_for(0);
        assert_eq!(
            (running.in_flight, running.queued, running.capacity),
            (3, 0, 6),
            "{running:?}"
        );
        assert!((0..3).all(|_| offer(&mut sim, &mut events)));
        assert!(!offer(&mut sim, &mut events), "queue full again");
    }

    #[test]
    fn local_snapshot_for_a_model_counts_only_its_own_pool() {
        let profile = LocalProfile {
            name: "local".into(),
            batching: false,
            cost_per_second: 0.0,
            models: vec![
                Some(LocalModel {
                    workers: 1,
                    queue_capacity: 4,
                    latency: fixed(10.0),
                }),
                Some(LocalModel {
                    workers: 3,
                    queue_capacity: 2,
                    latency: fixed(10.0),
                }),
            ],
        };
        let mut sim = LocalSim::new(&profile, &[8, 8], Stream::new(1, 1));
        let mut events = Events::default();
        for i in 0..2 {
            assert!(accepted(&sim.offer(id(i), 0, 0, &mut events)));
        }
        let first = sim.snapshot_for(0);
        assert_eq!(
            (
                first.in_flight,
                first.queued,
                first.concurrency,
                first.capacity
            ),
            (2, 1, 1, 5),
            "model 0's one worker is busy and one request waits"
        );
        let other = sim.snapshot_for(1);
        assert_eq!(
            (
                other.in_flight,
                other.queued,
                other.concurrency,
                other.capacity
            ),
            (0, 0, 3, 5),
            "model 1's workers are all free"
        );
        let all = sim.snapshot();
        assert_eq!((all.in_flight, all.concurrency), (2, 4));
    }

    #[test]
    fn local_without_batching_runs_one_at_a_time_and_skips_expired_requests() {
        let mut sim = local(1, 8, false);
        let mut events = Events::default();
        for i in 0..3 {
            assert!(accepted(&sim.offer(id(i), 0, 0, &mut events)));
        }
        let mut answers = Vec::new();
        let (at, _) = events.pop().expect("first");
        // Request 1 timed out while waiting: the worker skips it.
        sim.done(0, 0, at, &mut events, &|r| r.slot != 1, &mut answers);
        let (at, _) = events.pop().expect("second");
        assert_eq!(at, 20 * MS, "one request, not a batch");
        sim.done(0, 0, at, &mut events, &|_| true, &mut answers);
        assert_eq!(
            answers,
            vec![Answer::Served(id(0), 0), Answer::Served(id(2), 10 * MS)]
        );
        assert!(events.pop().is_none());
    }

    fn pool(min: u64, max: u64) -> ContainerSim {
        let profile = ContainerProfile {
            name: "container".into(),
            min_containers: min,
            max_containers: max,
            target_in_flight: 2,
            max_in_flight: 2,
            workers: 1,
            idle_timeout: Duration::from_secs(1),
            scale_interval: Duration::from_millis(250),
            cold_start: LogNormal::from_percentiles(500.0, 500.0),
            cost_per_container_second: 1.0,
            models: vec![Some(fixed(10.0))],
        };
        ContainerSim::new(&profile, Stream::new(1, 2), Stream::new(1, 3))
    }

    #[test]
    fn container_pool_scales_out_with_a_cold_start_and_refuses_when_it_cannot() {
        let mut sim = pool(1, 2);
        let mut events = Events::default();
        assert_eq!(
            sim.offer(id(0), 0, 0, &mut events),
            Offer::Accepted {
                done_at: Some(10 * MS)
            }
        );
        assert_eq!(
            sim.offer(id(1), 0, 0, &mut events),
            Offer::Accepted { done_at: None }
        );
        assert_eq!(sim.snapshot().headroom, 2, "one more container can start");
        // The first container is full (2 in flight): the third request waits
        // for a second container, which starts now.
        assert_eq!(
            sim.offer(id(2), 0, 0, &mut events),
            Offer::Accepted { done_at: None }
        );
        assert_eq!(sim.activity.cold_starts, 1);
        assert_eq!(sim.snapshot().queued, 1);
        // While it starts the pool can still grow, so requests keep waiting...
        assert_eq!(
            sim.offer(id(3), 0, 0, &mut events),
            Offer::Accepted { done_at: None }
        );
        // ...and it becomes ready after its 500 ms cold start.
        let mut answers = Vec::new();
        let mut ready_at = None;
        while let Some((at, event)) = events.pop() {
            match event {
                Event::ContainerReady { container } => {
                    ready_at = Some(at);
                    sim.ready(container, at, &mut events, &|_| true, &mut answers);
                }
                Event::ContainerDone {
                    container,
                    request,
                    queue,
                } => {
                    sim.done(
                        container,
                        request,
                        queue,
                        at,
                        &mut events,
                        &|_| true,
                        &mut answers,
                    );
                }
                other => panic!("{other:?}"),
            }
            if ready_at.is_some() {
                break;
            }
        }
        assert_eq!(ready_at, Some(500 * MS));
        assert_eq!(sim.snapshot().concurrency, 2);
        // The pool reports the cold start it measured, as the real one does.
        assert_eq!(sim.snapshot().cold_start_ms, Some(500.0));
        // The waiting requests went one to each container (the first had
        // finished its two by then). Two more fill them (2 + 2): no more
        // can start, so the next request is refused at once.
        for i in 4..6 {
            assert!(accepted(&sim.offer(id(i), 0, 500 * MS, &mut events)));
        }
        let full = sim.offer(id(6), 0, 500 * MS, &mut events);
        assert!(
            matches!(full, Offer::Refused(BackendError::Overloaded { .. })),
            "{full:?}"
        );
        assert_eq!(
            sim.activity.cold_starts, 1,
            "the cold start was charged once"
        );
    }

    #[test]
    fn an_idle_container_pool_retires_down_to_its_minimum_and_is_billed_for_its_life() {
        let mut sim = pool(0, 2);
        let mut events = Events::default();
        assert!(!sim.snapshot().has_capacity());
        assert!(
            sim.snapshot().ready,
            "a pool with min 0 is ready to scale out"
        );
        assert_eq!(
            sim.offer(id(0), 0, 0, &mut events),
            Offer::Accepted { done_at: None }
        );
        let mut answers = Vec::new();
        while let Some((at, event)) = events.pop() {
            match event {
                Event::ContainerReady { container } => {
                    sim.ready(container, at, &mut events, &|_| true, &mut answers)
                }
                Event::ContainerDone {
                    container,
                    request,
                    queue,
                } => sim.done(
                    container,
                    request,
                    queue,
                    at,
                    &mut events,
                    &|_| true,
                    &mut answers,
                ),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(
            answers,
            vec![Answer::Served(id(0), 500 * MS)],
            "waiting for the container to start is queue time"
        );
        // Served at 510 ms. Idle for the 1 s timeout, then retired.
        sim.scale(1_000 * MS, &mut events);
        assert_eq!(sim.activity.retired, 0, "not idle long enough");
        sim.scale(2_200 * MS, &mut events);
        assert_eq!(sim.activity.retired, 1);
        let cost = sim.cost(10_000 * MS);
        assert!(
            (cost - 2.2).abs() < 1e-9,
            "billed from creation to retirement: {cost}"
        );
    }

    #[test]
    fn a_container_prewarm_starts_containers_at_the_next_tick_and_holds_them() {
        let mut sim = pool(1, 2);
        let mut events = Events::default();
        // pool(1, 2): one container of one worker, at most two.
        assert_eq!(sim.prewarm(5, 10_000 * MS, 0), 1);
        sim.scale(0, &mut events);
        assert_eq!(sim.activity.cold_starts, 1);
        while let Some((at, Event::ContainerReady { container })) = events.pop() {
            sim.ready(container, at, &mut events, &|_| true, &mut Vec::new());
        }
        assert_eq!(sim.snapshot().concurrency, 2);
        // Idle, but held: nothing retires until the hold and then the idle
        // timeout have passed.
        sim.scale(9_000 * MS, &mut events);
        assert_eq!(sim.activity.retired, 0);
        sim.scale(10_000 * MS + 2_000 * MS, &mut events);
        assert_eq!(sim.activity.retired, 1);
    }

    #[test]
    fn a_lambda_prewarm_bills_cold_invocations_and_leaves_warm_instances() {
        let mut sim = lambda(10);
        let mut events = Events::default();
        assert_eq!(sim.prewarm(0, 3, 1_000 * MS, 0, &mut events), 3);
        // Once per hold.
        assert_eq!(sim.prewarm(0, 5, 1_000 * MS, 0, &mut events), 0);
        while let Some((at, event)) = events.pop() {
            if let Event::LambdaWarmed { instance } = event {
                sim.warmed(instance, at);
            }
        }
        assert_eq!(sim.snapshot(200 * MS).concurrency, 3);
        assert_eq!(
            (sim.activity.cold_starts, sim.activity.prewarm_invocations),
            (3, 3)
        );
        // Three cold invocations of 110 ms at 1 GB, billed.
        let expected = 3.0 * (0.5 + 0.110);
        assert!(
            (sim.activity.cost_dollars - expected).abs() < 1e-9,
            "{:?}",
            sim.activity
        );
        // A client's request now starts warm.
        assert_eq!(
            sim.offer(id(0), 0, 200 * MS, &mut events),
            Offer::Accepted {
                done_at: Some(210 * MS)
            }
        );
        assert_eq!(sim.activity.cold_starts, 3);
    }

    fn lambda(reserved: u64) -> LambdaSim {
        let profile = LambdaProfile {
            name: "lambda".into(),
            memory_mb: 1024,
            reserved_concurrency: reserved,
            max_payload_bytes: 1000,
            instance_idle: Duration::from_secs(60),
            cold_start: LogNormal::from_percentiles(100.0, 100.0),
            gb_second_dollars: 1.0,
            request_dollars: 0.5,
            billing_granularity_ms: 1,
            models: vec![Some(LambdaModel {
                latency: fixed(10.0),
                cold_start: LogNormal::from_percentiles(100.0, 100.0),
            })],
        };
        LambdaSim::new(&profile, Stream::new(1, 4), Stream::new(1, 5))
    }

    #[test]
    fn lambda_throttles_at_its_reserved_concurrency_and_charges_cold_starts_once() {
        let mut sim = lambda(2);
        let mut events = Events::default();
        assert_eq!(
            sim.offer(id(0), 0, 0, &mut events),
            Offer::Accepted {
                done_at: Some(110 * MS)
            }
        );
        assert_eq!(
            sim.offer(id(1), 0, 0, &mut events),
            Offer::Accepted {
                done_at: Some(110 * MS)
            }
        );
        let throttled = sim.offer(id(2), 0, 0, &mut events);
        assert!(
            matches!(throttled, Offer::Refused(BackendError::Overloaded { .. })),
            "{throttled:?}"
        );
        assert_eq!(sim.activity.throttles, 1);
        assert_eq!(sim.snapshot(0).headroom, 0);
        assert_eq!(sim.snapshot(0).memory_mb, Some(1024));
        assert_eq!(
            sim.snapshot(0).cold_start_ms,
            None,
            "a cold start is known once its invocation answers"
        );
        let mut answers = Vec::new();
        while let Some((at, Event::LambdaDone { instance, request })) = events.pop() {
            sim.done(instance, request, at, &mut answers);
        }
        assert!(
            answers
                .iter()
                .all(|a| matches!(a, Answer::Served(_, q) if *q == 100 * MS)),
            "a cold invocation's init is reported as its queue time: {answers:?}"
        );
        assert_eq!(sim.snapshot(200 * MS).cold_start_ms, Some(100.0));
        // Warm now: the next invocation pays no cold start.
        assert_eq!(
            sim.offer(id(3), 0, 200 * MS, &mut events),
            Offer::Accepted {
                done_at: Some(210 * MS)
            }
        );
        assert_eq!(sim.activity.cold_starts, 2);
        // Two cold invocations billed 110 ms, one warm 10 ms, at 1 GB.
        let expected = 3.0 * 0.5 + (0.110 * 2.0 + 0.010);
        assert!(
            (sim.activity.cost_dollars - expected).abs() < 1e-9,
            "{:?}",
            sim.activity
        );
        // Instances idle past the timeout are reclaimed: cold again.
        let mut answers = Vec::new();
        while let Some((at, Event::LambdaDone { instance, request })) = events.pop() {
            sim.done(instance, request, at, &mut answers);
        }
        assert_eq!(sim.snapshot(300 * MS).concurrency, 2);
        assert_eq!(sim.snapshot(61_000 * MS).concurrency, 0);
        assert_eq!(
            sim.offer(id(4), 0, 61_000 * MS, &mut events),
            Offer::Accepted {
                done_at: Some(61_110 * MS)
            }
        );
        assert_eq!(sim.activity.cold_starts, 3);
    }
}
