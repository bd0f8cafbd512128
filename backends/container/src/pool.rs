//! The pool of worker containers and the supervisor that keeps it right.
//!
//! Requests pick a container by least outstanding requests among two drawn
//! at random (power of two choices) and wait for one only while the pool is
//! growing; a full pool that cannot grow refuses at once (429). A request
//! whose container breaks mid-request is sent to another (inference is
//! idempotent), so a dying container costs latency, not errors.
//!
//! One supervisor task owns every change to the set of containers:
//! reaching the engine (with retries, so a gateway starts without one),
//! removing orphans, ensuring the image, starting containers up to the
//! demand (`ceil(in-flight / target_in_flight)` within the min/max), retiring
//! one after the pool has been over-provisioned for `idle_timeout`, and
//! replacing dead ones, found by Docker `die` events or failed health checks.
//! Before removing a dead container the supervisor asks the engine why it
//! stopped, so a container the kernel killed at its memory limit is logged
//! and counted as that, not as a failed health check.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerState, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, EventsOptions, LogsOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use serde::Serialize;
use switchyard_backends::{BackendError, InferenceJob, InferenceResult, RecentColdStarts};
use switchyard_models::ModelRepository;
use tokio::sync::{Notify, watch};

use crate::client::{CallError, EncodedRequest, WorkerClient};
use crate::config::{ContainerConfig, Endpoint, Route};
use crate::engine::{self, Identity};
use crate::image::{ImagePlan, WORKER_PORT};

const READY: u8 = 0;
/// A request to it broke; out of rotation until a health check decides.
const SUSPECT: u8 = 1;
/// Being retired: no new requests, removed once idle.
const DRAINING: u8 = 2;
const DEAD: u8 = 3;

/// Which way the gateway's requests reach a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum WorkerRoute {
    /// Straight to the container's address on its Docker network.
    Network,
    /// Through the port published on 127.0.0.1 (the engine's forwarding).
    Published,
}

/// One running worker container.
#[derive(Debug)]
pub struct Worker {
    pub id: String,
    pub name: String,
    pub address: SocketAddr,
    pub route: WorkerRoute,
    outstanding: AtomicU64,
    state: AtomicU8,
    health_failures: AtomicU32,
}

impl Worker {
    fn state(&self) -> u8 {
        self.state.load(Ordering::Acquire)
    }

    fn outstanding(&self) -> u64 {
        self.outstanding.load(Ordering::Acquire)
    }
}

/// Counts and timings of the pool's life, served in stats.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PoolStats {
    pub ready: u64,
    pub starting: u64,
    /// Containers started and ready (create → ready measured for each).
    pub cold_starts: u64,
    pub cold_start_p50_seconds: f64,
    pub cold_start_p99_seconds: f64,
    pub cold_start_max_seconds: f64,
    pub cold_start_last_seconds: f64,
    pub start_failures: u64,
    /// Containers found dead (died or failed health) and replaced.
    pub deaths: u64,
    /// Of `deaths`, those the kernel killed at their memory limit
    /// (`memory_mb`): a sign the limit is too low for the models and queue.
    pub out_of_memory_kills: u64,
    /// Containers removed because the pool was idle.
    pub retired: u64,
    /// Request attempts moved to another container after one failed.
    pub failovers: u64,
    /// Pre-warms that started containers ahead of demand.
    pub prewarms: u64,
    /// Containers a pre-warm in force keeps running (0: none in force).
    pub prewarm_floor: u64,
    /// The image this gateway runs, once known.
    pub image: Option<String>,
    /// Whether this gateway built that image (false: it was there already,
    /// or another gateway on this machine built it meanwhile).
    pub image_built: bool,
    /// Seconds of every container this instance created, each from its
    /// creation to its removal (a start and an idle container count).
    pub container_seconds: f64,
    /// What those cost at `pricing.container_second_dollars`.
    pub cost_dollars: f64,
    /// The containers the pool holds, starting ones left out.
    pub containers: Vec<ContainerView>,
}

/// One container in stats.
#[derive(Debug, Clone, Serialize)]
pub struct ContainerView {
    pub name: String,
    /// Where the gateway sends its requests.
    pub address: SocketAddr,
    pub route: WorkerRoute,
    /// `ready`, `suspect` (a request to it broke; checked before it gets
    /// more), `draining` (being retired) or `dead`.
    pub state: &'static str,
    pub in_flight: u64,
}

/// Cold starts kept for the percentiles in stats.
const RECENT_COLD_STARTS: usize = 1024;

/// The longest wait between two readiness polls of a starting container:
/// the pool learns a container is ready at most this late. A poll of a
/// worker that is not listening yet fails at once (a refused or closed
/// connection).
const READY_POLL_MAX: Duration = Duration::from_millis(10);

/// How long one readiness probe of a starting container may take, and how
/// many may be waiting at once (a new one starts every poll interval).
const READY_PROBE_TIMEOUT: Duration = Duration::from_millis(500);
const MAX_READY_PROBES: usize = 64;

/// How long a ready container's network address gets to answer before
/// `route = "auto"` settles for the published port.
const NETWORK_PROBE_TIMEOUT: Duration = Duration::from_millis(250);

/// How often a starting container that does not answer yet is asked for
/// through the engine, to tell one that exited from one still loading.
const EXIT_CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// How long a dead container that still shows as running is asked about
/// again before it counts as unresponsive.
const DEATH_SETTLE: Duration = Duration::from_secs(2);

/// Why a container the pool lost stopped serving, as the engine tells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum DeathCause {
    /// The kernel killed it at its memory limit.
    OutOfMemory,
    /// Its worker exited: crashed, or killed from outside the pool.
    Exited(i64),
    /// Still running, but it failed its health checks.
    Unresponsive,
    /// The engine no longer knows it, or could not be asked.
    Unknown,
}

impl DeathCause {
    fn of(state: Option<&ContainerState>) -> Self {
        let Some(state) = state else {
            return Self::Unknown;
        };
        if state.oom_killed == Some(true) {
            Self::OutOfMemory
        } else if state.running == Some(true) {
            Self::Unresponsive
        } else {
            Self::Exited(state.exit_code.unwrap_or_default())
        }
    }

    /// The `cause` label of `switchyard_container_deaths_total`.
    fn label(self) -> &'static str {
        match self {
            Self::OutOfMemory => "out_of_memory",
            Self::Exited(_) => "exited",
            Self::Unresponsive => "unresponsive",
            Self::Unknown => "unknown",
        }
    }
}

#[derive(Debug)]
struct Counters {
    cold_starts: u64,
    /// The latest cold starts in seconds, oldest first.
    recent_cold_starts: VecDeque<f64>,
    /// The last few, for placement.
    placement_cold_starts: RecentColdStarts,
    start_failures: u64,
    deaths: u64,
    out_of_memory_kills: u64,
    retired: u64,
}

#[derive(Debug)]
struct State {
    docker: Option<Docker>,
    image: Option<String>,
    /// Whether this instance built `image`.
    image_built: bool,
    workers: Vec<Arc<Worker>>,
    starting: usize,
    /// Every container this instance created and has not removed.
    created: HashSet<String>,
    /// Why the pool cannot serve (engine, image, start failures), if so.
    problem: Option<String>,
    next_connect: Instant,
    next_start: Instant,
    /// Last time the demand needed every live container.
    last_fully_used: Instant,
    last_health_check: Instant,
    /// A pre-warm in force: keep at least this many containers until then.
    prewarm: Option<(usize, Instant)>,
    /// Container-seconds of `created`, for the pool's cost.
    uptime: ContainerTime,
}

/// Container-seconds of a changing set of containers: each counts from its
/// creation to its removal, since that is the time it holds (and a cloud
/// would bill) its CPU and memory, whether it serves or waits.
#[derive(Debug, Clone, Copy)]
struct ContainerTime {
    live: usize,
    seconds: f64,
    since: Instant,
}

impl ContainerTime {
    fn new(now: Instant) -> Self {
        Self {
            live: 0,
            seconds: 0.0,
            since: now,
        }
    }

    /// `live` containers from `now` on.
    fn set_live(&mut self, live: usize, now: Instant) {
        self.seconds = self.seconds_at(now);
        self.live = live;
        self.since = self.since.max(now);
    }

    fn seconds_at(&self, now: Instant) -> f64 {
        self.seconds + self.live as f64 * now.saturating_duration_since(self.since).as_secs_f64()
    }
}

/// The container pool; shared by the backend, its supervisor and the tasks
/// that start and stop containers.
#[derive(Debug)]
pub struct Pool {
    pub config: ContainerConfig,
    pub identity: Identity,
    repository: ModelRepository,
    client: WorkerClient,
    state: Mutex<State>,
    counters: Mutex<Counters>,
    plan: Mutex<Option<ImagePlan>>,
    /// Bumped whenever the set of usable containers may have changed.
    generation: watch::Sender<u64>,
    wake: Notify,
    stopping: AtomicBool,
    in_flight: AtomicU64,
    waiting: AtomicU64,
    /// Highest in-flight count since the supervisor last looked.
    peak_in_flight: AtomicU64,
    failovers: AtomicU64,
    prewarms: AtomicU64,
    sequence: AtomicU64,
    /// Set once `route = "auto"` found a container's network address
    /// unreachable: later containers go straight to the published port.
    network_unreachable: AtomicBool,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Decrements a counter when dropped (also when the request is cancelled).
struct CountGuard<'a>(&'a AtomicU64);

impl Drop for CountGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

/// A container lent to one request attempt.
struct Lease<'a> {
    worker: Arc<Worker>,
    pool: &'a Pool,
}

impl Drop for Lease<'_> {
    fn drop(&mut self) {
        let before = self.worker.outstanding.fetch_sub(1, Ordering::AcqRel);
        // A full container just got room: requests waiting in `acquire` for
        // one must not wait for the next scale-up or health change.
        if before >= self.pool.config.max_in_flight && self.pool.waiting() > 0 {
            self.pool.changed();
        }
    }
}

enum Pick<'a> {
    Worker(Lease<'a>),
    /// Ready containers exist, all at `max_in_flight`.
    Full,
    /// No ready container.
    Empty,
}

impl Pool {
    pub fn new(config: ContainerConfig, repository: ModelRepository) -> Self {
        let now = Instant::now();
        let identity = Identity::new(&config);
        Self {
            identity,
            repository,
            client: WorkerClient::new(),
            state: Mutex::new(State {
                docker: None,
                image: None,
                image_built: false,
                workers: Vec::new(),
                starting: 0,
                created: HashSet::new(),
                problem: None,
                next_connect: now,
                next_start: now,
                last_fully_used: now,
                last_health_check: now,
                prewarm: None,
                uptime: ContainerTime::new(now),
            }),
            counters: Mutex::new(Counters {
                cold_starts: 0,
                recent_cold_starts: VecDeque::new(),
                placement_cold_starts: RecentColdStarts::default(),
                start_failures: 0,
                deaths: 0,
                out_of_memory_kills: 0,
                retired: 0,
            }),
            plan: Mutex::new(None),
            generation: watch::Sender::new(0),
            wake: Notify::new(),
            stopping: AtomicBool::new(false),
            in_flight: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            peak_in_flight: AtomicU64::new(0),
            failovers: AtomicU64::new(0),
            prewarms: AtomicU64::new(0),
            sequence: AtomicU64::new(0),
            network_unreachable: AtomicBool::new(false),
            config,
        }
    }

    fn changed(&self) {
        self.generation.send_modify(|g| *g = g.wrapping_add(1));
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    // ----- the data path -----

    /// Runs one request on some container, failing over on broken ones.
    pub async fn infer(&self, job: InferenceJob) -> Result<InferenceResult, BackendError> {
        let name = &self.config.name;
        let in_flight = self.in_flight.fetch_add(1, Ordering::AcqRel) + 1;
        let _in_flight = CountGuard(&self.in_flight);
        self.peak_in_flight.fetch_max(in_flight, Ordering::AcqRel);
        let started = Instant::now();
        let deadline = job.deadline;
        let request =
            EncodedRequest::new(&job.model, job.version, job.request).map_err(|message| {
                BackendError::Failed {
                    backend: name.clone(),
                    message: format!("cannot encode the request: {message}"),
                }
            })?;
        let mut attempt = 0;
        loop {
            let asked = Instant::now();
            let lease = self.acquire(deadline, started).await?;
            let waited = asked.elapsed();
            attempt += 1;
            let result = self
                .client
                .infer(lease.worker.address, &request, deadline)
                .await;
            let error = match result {
                Ok(mut result) => {
                    // Waiting here for a container with room (or one that
                    // is starting) is queueing too, before the worker's own.
                    result.timing.queue += waited;
                    return Ok(result);
                }
                Err(error) => error,
            };
            if let CallError::Transport { .. } = error {
                self.suspect(&lease.worker);
            }
            drop(lease);
            if error.retryable() && attempt < self.config.max_attempts && Instant::now() < deadline
            {
                self.failovers.fetch_add(1, Ordering::Relaxed);
                metrics::counter!("switchyard_container_failovers_total", "backend" => name.clone())
                    .increment(1);
                tracing::debug!(backend = %name, attempt, %error, "retrying on another container");
                continue;
            }
            return Err(self.backend_error(error, started));
        }
    }

    fn backend_error(&self, error: CallError, started: Instant) -> BackendError {
        let backend = self.config.name.clone();
        match error {
            CallError::Refused {
                status, message, ..
            } if status.as_u16() == 429 => BackendError::Overloaded {
                backend,
                reason: message,
            },
            CallError::Transport { .. } | CallError::Refused { .. } => BackendError::Unavailable {
                backend,
                reason: error.to_string(),
            },
            CallError::Timeout { .. } => BackendError::DeadlineExceeded {
                backend,
                waited: started.elapsed(),
            },
            CallError::Failed { message, .. } => BackendError::Failed { backend, message },
        }
    }

    /// A container for one attempt: at once if one has room, else after
    /// waiting for the pool to grow (never past `deadline`).
    async fn acquire(
        &self,
        deadline: Instant,
        started: Instant,
    ) -> Result<Lease<'_>, BackendError> {
        let backend = &self.config.name;
        let mut changes = self.generation.subscribe();
        loop {
            changes.borrow_and_update();
            let pick = self.pick();
            let can_grow = {
                let state = lock(&self.state);
                if self.stopping() {
                    return Err(BackendError::Unavailable {
                        backend: backend.clone(),
                        reason: "shutting down".into(),
                    });
                }
                if state.docker.is_none()
                    && let Some(problem) = &state.problem
                {
                    return Err(BackendError::Unavailable {
                        backend: backend.clone(),
                        reason: problem.clone(),
                    });
                }
                let live = state
                    .workers
                    .iter()
                    .filter(|w| w.state() <= SUSPECT)
                    .count();
                live + state.starting < self.config.max_containers || state.starting > 0
            };
            match pick {
                Pick::Worker(lease) => return Ok(lease),
                Pick::Full if !can_grow => {
                    return Err(BackendError::Overloaded {
                        backend: backend.clone(),
                        reason: format!(
                            "all {} containers have {} requests in flight",
                            self.config.max_containers, self.config.max_in_flight
                        ),
                    });
                }
                Pick::Full | Pick::Empty => {}
            }
            self.waiting.fetch_add(1, Ordering::AcqRel);
            let _waiting = CountGuard(&self.waiting);
            // A lease dropped between the pick above and the count did not
            // see this request waiting: look once more before sleeping.
            if let Pick::Worker(lease) = self.pick() {
                return Ok(lease);
            }
            self.wake.notify_one();
            if tokio::time::timeout_at(deadline.into(), changes.changed())
                .await
                .is_err()
            {
                return Err(BackendError::DeadlineExceeded {
                    backend: backend.clone(),
                    waited: started.elapsed(),
                });
            }
        }
    }

    /// Least outstanding requests of two ready containers drawn at random.
    fn pick(&self) -> Pick<'_> {
        let state = lock(&self.state);
        let ready: Vec<&Arc<Worker>> = state
            .workers
            .iter()
            .filter(|w| w.state() == READY)
            .collect();
        if ready.is_empty() {
            return Pick::Empty;
        }
        let max = self.config.max_in_flight;
        let chosen = match ready.len() {
            1 => ready[0],
            n => {
                let a = fastrand::usize(..n);
                let b = (a + 1 + fastrand::usize(..n - 1)) % n;
                if ready[b].outstanding() < ready[a].outstanding() {
                    ready[b]
                } else {
                    ready[a]
                }
            }
        };
        // The drawn pair may both be full while another is not.
        let chosen = if chosen.outstanding() < max {
            chosen
        } else {
            match ready.iter().min_by_key(|w| w.outstanding()) {
                Some(w) if w.outstanding() < max => w,
                _ => return Pick::Full,
            }
        };
        chosen.outstanding.fetch_add(1, Ordering::AcqRel);
        let lease = Lease {
            worker: Arc::clone(chosen),
            pool: self,
        };
        let live = state
            .workers
            .iter()
            .filter(|w| w.state() <= SUSPECT)
            .count() as u64;
        drop(ready);
        drop(state);
        // Over the target: scale up now rather than at the next tick.
        if self.in_flight.load(Ordering::Acquire) > live * self.config.target_in_flight {
            self.wake.notify_one();
        }
        Pick::Worker(lease)
    }

    /// A request to `worker` broke: take it out of rotation until the
    /// supervisor has checked it.
    fn suspect(&self, worker: &Worker) {
        if worker
            .state
            .compare_exchange(READY, SUSPECT, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            tracing::info!(backend = %self.config.name, container = %worker.name, "a request to the container broke; checking it");
            self.changed();
            self.wake.notify_one();
        }
    }

    /// Marks the container `id` dead (it exited).
    fn mark_dead(&self, id: &str, why: &str) {
        let state = lock(&self.state);
        if let Some(worker) = state.workers.iter().find(|w| w.id == id)
            && worker.state.swap(DEAD, Ordering::AcqRel) != DEAD
        {
            // The supervisor logs why it stopped once the engine has said.
            tracing::info!(backend = %self.config.name, container = %worker.name, "container {why}; replacing it");
            drop(state);
            self.changed();
            self.wake.notify_one();
        }
    }

    // ----- what the backend reports -----

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Acquire)
    }

    pub fn waiting(&self) -> u64 {
        self.waiting.load(Ordering::Acquire)
    }

    /// Mean create → ready time of the latest containers, ms (`None`
    /// before the first was ready).
    pub fn recent_cold_start_ms(&self) -> Option<f64> {
        lock(&self.counters).placement_cold_starts.mean_ms()
    }

    /// Keeps at least `containers` (within the pool's maximum) running for
    /// `hold` from now, starting the missing ones at the supervisor's next
    /// tick. While one pre-warm is in force a second only raises or extends
    /// it. Returns how many containers it adds to the live and starting ones.
    pub fn prewarm(&self, containers: usize, hold: Duration) -> usize {
        let containers = containers.min(self.config.max_containers);
        let now = Instant::now();
        let mut state = lock(&self.state);
        let until = now + hold;
        state.prewarm = Some(match state.prewarm {
            Some((current, current_until)) if now < current_until => {
                (current.max(containers), current_until.max(until))
            }
            _ => (containers, until),
        });
        let live = state
            .workers
            .iter()
            .filter(|w| w.state() <= SUSPECT)
            .count();
        let adds = containers.saturating_sub(live + state.starting);
        drop(state);
        if adds > 0 {
            self.prewarms.fetch_add(1, Ordering::Relaxed);
            tracing::info!(backend = %self.config.name, containers, adds, hold_ms = hold.as_millis() as u64, "pre-warming containers");
            self.wake.notify_one();
        }
        adds
    }

    /// (ready containers, starting containers, whether more can start, why not ready).
    pub fn status(&self) -> PoolStatus {
        // Read before the state lock: the two are never held together here.
        let served_before = lock(&self.counters).cold_starts > 0;
        let state = lock(&self.state);
        let ready = state.workers.iter().filter(|w| w.state() == READY).count();
        let live = state
            .workers
            .iter()
            .filter(|w| w.state() <= SUSPECT)
            .count();
        let operational = state.docker.is_some() && state.image.is_some() && !self.stopping();
        let can_start = if operational {
            self.config
                .max_containers
                .saturating_sub(live + state.starting)
        } else {
            0
        };
        let unready_reason = if self.stopping() {
            Some("shutting down".to_owned())
        } else if ready > 0
            || (operational && self.config.min_containers == 0)
            || (operational && served_before && state.problem.is_none())
        {
            // A pool that has served, with the engine answering and no
            // start failing, is replacing a container that died (or adding
            // one): requests wait for it within their deadline, as they do
            // for a pool scaling up from zero, instead of being refused.
            None
        } else if let Some(problem) = &state.problem {
            Some(problem.clone())
        } else if state.docker.is_none() {
            Some(format!(
                "connecting to the Docker engine at {}",
                self.config.endpoint
            ))
        } else if state.image.is_none() {
            Some("preparing the worker image".to_owned())
        } else {
            Some(format!(
                "starting containers ({} starting, {ready} ready)",
                state.starting
            ))
        };
        PoolStatus {
            ready,
            starting: state.starting,
            can_start,
            unready_reason,
        }
    }

    pub fn stats(&self) -> PoolStats {
        let status = self.status();
        let (image, image_built, prewarm_floor, container_seconds, containers) = {
            let state = lock(&self.state);
            let now = Instant::now();
            let floor = state
                .prewarm
                .filter(|&(_, until)| now < until)
                .map_or(0, |(containers, _)| containers as u64);
            let containers: Vec<ContainerView> = state
                .workers
                .iter()
                .map(|worker| ContainerView {
                    name: worker.name.clone(),
                    address: worker.address,
                    route: worker.route,
                    state: match worker.state() {
                        READY => "ready",
                        SUSPECT => "suspect",
                        DRAINING => "draining",
                        _ => "dead",
                    },
                    in_flight: worker.outstanding(),
                })
                .collect();
            (
                state.image.clone(),
                state.image_built,
                floor,
                state.uptime.seconds_at(now),
                containers,
            )
        };
        let counters = lock(&self.counters);
        let mut sorted: Vec<f64> = counters.recent_cold_starts.iter().copied().collect();
        sorted.sort_by(f64::total_cmp);
        PoolStats {
            ready: status.ready as u64,
            starting: status.starting as u64,
            cold_starts: counters.cold_starts,
            cold_start_p50_seconds: quantile(&sorted, 0.5),
            cold_start_p99_seconds: quantile(&sorted, 0.99),
            cold_start_max_seconds: sorted.last().copied().unwrap_or_default(),
            cold_start_last_seconds: counters
                .recent_cold_starts
                .back()
                .copied()
                .unwrap_or_default(),
            start_failures: counters.start_failures,
            deaths: counters.deaths,
            out_of_memory_kills: counters.out_of_memory_kills,
            retired: counters.retired,
            failovers: self.failovers.load(Ordering::Relaxed),
            prewarms: self.prewarms.load(Ordering::Relaxed),
            prewarm_floor,
            image,
            image_built,
            container_seconds,
            cost_dollars: container_seconds * self.config.container_second_dollars,
            containers,
        }
    }

    /// The containers in rotation (for tests and tools).
    pub fn workers(&self) -> Vec<Arc<Worker>> {
        lock(&self.state)
            .workers
            .iter()
            .filter(|w| w.state() == READY)
            .cloned()
            .collect()
    }

    // ----- the supervisor -----

    /// Runs until shutdown: connects, then keeps the pool reconciled.
    pub async fn supervise(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        loop {
            if self.stopping() {
                return;
            }
            self.tick().await;
            tokio::select! {
                () = tokio::time::sleep(self.config.scale_interval) => {}
                () = self.wake.notified() => {}
                _ = stop.changed() => return,
            }
        }
    }

    async fn tick(self: &Arc<Self>) {
        let (docker, next_connect) = {
            let state = lock(&self.state);
            (state.docker.clone(), state.next_connect)
        };
        let Some(docker) = docker else {
            if Instant::now() >= next_connect {
                self.connect().await;
            }
            return;
        };
        self.reap(&docker);
        self.check_health(&docker).await;
        self.scale(&docker);
        self.publish_cost();
    }

    /// The pool's container-seconds and cost so far, as gauges (cumulative
    /// dollars are not integers, so not a counter; as the Lambda backend's).
    fn publish_cost(&self) {
        let seconds = lock(&self.state).uptime.seconds_at(Instant::now());
        let backend = self.config.name.clone();
        metrics::gauge!("switchyard_container_seconds_total", "backend" => backend.clone())
            .set(seconds);
        metrics::gauge!("switchyard_container_cost_dollars_total", "backend" => backend)
            .set(seconds * self.config.container_second_dollars);
    }

    /// Reaches the engine, removes orphans and ensures the image.
    async fn connect(self: &Arc<Self>) {
        match self.prepare().await {
            Ok((docker, image, built, orphans)) => {
                tracing::info!(backend = %self.config.name, endpoint = %self.config.endpoint,
                    %image, built, orphans_removed = orphans, "Docker engine ready");
                {
                    let mut state = lock(&self.state);
                    state.docker = Some(docker.clone());
                    state.image = Some(image);
                    state.image_built = built;
                    state.problem = None;
                }
                tokio::spawn(Arc::clone(self).watch_events(docker));
                self.changed();
                self.wake.notify_one();
            }
            Err(_) if self.stopping() => {}
            Err(problem) => {
                let mut state = lock(&self.state);
                if state.problem.as_deref() != Some(&problem) {
                    tracing::warn!(backend = %self.config.name, "{problem}; retrying every {:?}", self.config.retry_interval);
                }
                state.problem = Some(problem);
                state.next_connect = Instant::now() + self.config.retry_interval;
                drop(state);
                // Waiting requests must learn that the engine is unreachable.
                self.changed();
            }
        }
    }

    async fn prepare(&self) -> Result<(Docker, String, bool, usize), String> {
        let docker = engine::connect(&self.config)
            .await
            .map_err(|e| format!("the Docker engine is unreachable: {e}"))?;
        let orphans = engine::remove_orphans(&docker, &self.identity)
            .await
            .map_err(|e| format!("cannot remove orphaned containers: {e}"))?;
        let plan = lock(&self.plan).clone();
        let plan = match plan {
            Some(plan) => plan,
            None => {
                let config = self.config.clone();
                let repository = self.repository.clone();
                let plan =
                    tokio::task::spawn_blocking(move || ImagePlan::new(&config, &repository))
                        .await
                        .map_err(|e| format!("cannot plan the worker image: {e}"))?
                        .map_err(|e| format!("cannot plan the worker image: {e}"))?;
                *lock(&self.plan) = Some(plan.clone());
                plan
            }
        };
        let built = self
            .unless_stopped(plan.ensure(&docker, &self.identity, self.config.api_timeout))
            .await
            .ok_or_else(|| "the pool is stopping".to_owned())?
            .map_err(|e| format!("cannot prepare the worker image: {e}"))?;
        Ok((docker, plan.reference, built, orphans))
    }

    /// Runs `work` unless the pool starts stopping first: then `work` is
    /// dropped (an image build or a wait for another gateway's build is
    /// abandoned, so a shutdown does not wait for it) and `None` returned.
    async fn unless_stopped<T>(&self, work: impl Future<Output = T>) -> Option<T> {
        let mut changes = self.generation.subscribe();
        let mut work = std::pin::pin!(work);
        loop {
            if self.stopping() {
                return None;
            }
            tokio::select! {
                done = &mut work => return Some(done),
                changed = changes.changed() => {
                    if changed.is_err() {
                        return Some(work.await);
                    }
                }
            }
        }
    }

    /// Follows `die` events of this instance's containers.
    async fn watch_events(self: Arc<Self>, docker: Docker) {
        let filters = HashMap::from([
            ("type".to_owned(), vec!["container".to_owned()]),
            ("event".to_owned(), vec!["die".to_owned()]),
            (
                "label".to_owned(),
                vec![format!(
                    "{}={}",
                    engine::LABEL_INSTANCE,
                    self.identity.instance
                )],
            ),
        ]);
        let mut stop = self.generation.subscribe();
        while !self.stopping() {
            let mut events = docker.events(Some(EventsOptions {
                filters: Some(filters.clone()),
                ..Default::default()
            }));
            loop {
                tokio::select! {
                    event = events.next() => match event {
                        Some(Ok(event)) => {
                            if let Some(id) = event.actor.and_then(|a| a.id) {
                                self.mark_dead(&id, "exited");
                            }
                        }
                        Some(Err(error)) => {
                            tracing::debug!(backend = %self.config.name, %error, "Docker event stream failed");
                            break;
                        }
                        None => break,
                    },
                    _ = stop.changed() => {
                        if self.stopping() {
                            return;
                        }
                    }
                }
            }
            // Health checks still find dead containers meanwhile.
            tokio::time::sleep(self.config.retry_interval).await;
        }
    }

    /// Removes dead containers from the pool and the engine.
    fn reap(self: &Arc<Self>, docker: &Docker) {
        let dead: Vec<Arc<Worker>> = {
            let mut state = lock(&self.state);
            let (dead, alive) = state.workers.drain(..).partition(|w| w.state() == DEAD);
            state.workers = alive;
            dead
        };
        if dead.is_empty() {
            return;
        }
        lock(&self.counters).deaths += dead.len() as u64;
        for worker in dead {
            let pool = Arc::clone(self);
            let docker = docker.clone();
            tokio::spawn(async move {
                pool.record_death(&docker, &worker).await;
                pool.remove(&docker, &worker.id).await;
            });
        }
        self.changed();
    }

    /// Asks the engine why a dead container stopped, then logs and counts
    /// that. A container found dead by a broken request can still show as
    /// running for a moment while the engine handles its exit, so a
    /// running one is asked again for up to [`DEATH_SETTLE`] before it
    /// counts as unresponsive.
    async fn record_death(&self, docker: &Docker, worker: &Worker) {
        let settle = Instant::now() + DEATH_SETTLE;
        let cause = loop {
            let state = docker
                .inspect_container(
                    &worker.id,
                    None::<bollard::query_parameters::InspectContainerOptions>,
                )
                .await
                .ok()
                .and_then(|inspect| inspect.state);
            let cause = DeathCause::of(state.as_ref());
            if cause != DeathCause::Unresponsive || Instant::now() >= settle || self.stopping() {
                break cause;
            }
            tokio::time::sleep(EXIT_CHECK_INTERVAL).await;
        };
        let name = &self.config.name;
        match cause {
            DeathCause::OutOfMemory => {
                lock(&self.counters).out_of_memory_kills += 1;
                tracing::warn!(
                    backend = %name,
                    container = %worker.name,
                    "container was killed for running out of memory at its limit of {} MiB; \
                     raise backends.container.memory_mb, or lower its workers or max_in_flight",
                    self.config.memory_bytes >> 20
                );
            }
            DeathCause::Exited(code) => {
                tracing::warn!(backend = %name, container = %worker.name, exit_code = code, "container exited; replaced");
            }
            DeathCause::Unresponsive => {
                tracing::warn!(backend = %name, container = %worker.name, "container stopped answering its health checks; removed and replaced");
            }
            DeathCause::Unknown => {
                tracing::warn!(backend = %name, container = %worker.name, "container is gone from the engine; replaced");
            }
        }
        metrics::counter!(
            "switchyard_container_deaths_total",
            "backend" => name.clone(),
            "cause" => cause.label()
        )
        .increment(1);
    }

    async fn remove(&self, docker: &Docker, id: &str) {
        match engine::remove(docker, id).await {
            Ok(()) => {
                let mut state = lock(&self.state);
                state.created.remove(id);
                let live = state.created.len();
                state.uptime.set_live(live, Instant::now());
            }
            Err(error) => {
                tracing::warn!(backend = %self.config.name, %error, "cannot remove a container");
            }
        }
    }

    /// Checks `/v2/health/ready` of every container in rotation (each
    /// `health_interval`) and of suspects (at once).
    async fn check_health(&self, _docker: &Docker) {
        let workers = {
            let mut state = lock(&self.state);
            let due = state.last_health_check.elapsed() >= self.config.health_interval;
            if due {
                state.last_health_check = Instant::now();
            }
            let workers: Vec<Arc<Worker>> = state
                .workers
                .iter()
                .filter(|w| w.state() == SUSPECT || (due && w.state() == READY))
                .cloned()
                .collect();
            workers
        };
        if workers.is_empty() {
            return;
        }
        // A busy container answers health checks late; give it time.
        let timeout = self
            .config
            .health_interval
            .clamp(Duration::from_millis(500), Duration::from_secs(5));
        let checks = workers
            .iter()
            .map(|w| self.client.ready(w.address, timeout));
        let results = futures_util::future::join_all(checks).await;
        let mut changed = false;
        for (worker, ok) in workers.iter().zip(results) {
            if ok {
                worker.health_failures.store(0, Ordering::Release);
                changed |= worker
                    .state
                    .compare_exchange(SUSPECT, READY, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok();
                continue;
            }
            let failures = worker.health_failures.fetch_add(1, Ordering::AcqRel) + 1;
            if worker.state() == SUSPECT || failures >= 3 {
                self.mark_dead(&worker.id, "failed its health check");
            }
        }
        if changed {
            self.changed();
        }
    }

    /// Starts containers up to the demand, or retires one after the pool
    /// has been bigger than needed for `idle_timeout`.
    fn scale(self: &Arc<Self>, docker: &Docker) {
        let config = &self.config;
        let peak = self
            .peak_in_flight
            .swap(self.in_flight.load(Ordering::Acquire), Ordering::AcqRel)
            .max(self.in_flight.load(Ordering::Acquire));
        let demand = usize::try_from(peak.div_ceil(config.target_in_flight)).unwrap_or(usize::MAX);
        let mut state = lock(&self.state);
        let now = Instant::now();
        let floor = state
            .prewarm
            .filter(|&(_, until)| now < until)
            .map_or(0, |(containers, _)| containers);
        let desired = demand
            .max(floor)
            .clamp(config.min_containers, config.max_containers);
        // Checked under the lock that `shutdown` takes to count starts.
        if self.stopping() {
            return;
        }
        let Some(image) = state.image.clone() else {
            return;
        };
        let live = state
            .workers
            .iter()
            .filter(|w| w.state() <= SUSPECT)
            .count();
        if desired >= live {
            state.last_fully_used = now;
        }
        if live + state.starting < desired {
            if now < state.next_start {
                return;
            }
            let count = desired - live - state.starting;
            state.starting += count;
            drop(state);
            tracing::info!(backend = %config.name, count, live, desired, "starting containers");
            for _ in 0..count {
                tokio::spawn(Arc::clone(self).start_container(docker.clone(), image.clone()));
            }
            self.changed();
            return;
        }
        if live > desired
            && state.starting == 0
            && now.duration_since(state.last_fully_used) >= config.idle_timeout
        {
            let victim = state
                .workers
                .iter()
                .filter(|w| w.state() == READY)
                .min_by_key(|w| w.outstanding())
                .cloned();
            if let Some(victim) = victim
                && victim
                    .state
                    .compare_exchange(READY, DRAINING, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                // The next one goes only after another idle period.
                state.last_fully_used = now;
                drop(state);
                tracing::info!(backend = %config.name, container = %victim.name, live, desired, "retiring an idle container");
                tokio::spawn(Arc::clone(self).retire(docker.clone(), victim));
                self.changed();
            }
        }
    }

    /// Starts one container and adds it to the pool once ready.
    async fn start_container(self: Arc<Self>, docker: Docker, image: String) {
        let started = Instant::now();
        let result = self.create_and_wait(&docker, &image, started).await;
        let name = self.config.name.clone();
        let outcome = match result {
            Ok(worker) if !self.stopping() => {
                let cold_start = started.elapsed();
                {
                    let mut counters = lock(&self.counters);
                    counters.cold_starts += 1;
                    if counters.recent_cold_starts.len() == RECENT_COLD_STARTS {
                        counters.recent_cold_starts.pop_front();
                    }
                    counters
                        .recent_cold_starts
                        .push_back(cold_start.as_secs_f64());
                    counters
                        .placement_cold_starts
                        .record(cold_start.as_secs_f64() * 1e3);
                }
                metrics::histogram!("switchyard_container_cold_start_seconds", "backend" => name.clone())
                    .record(cold_start.as_secs_f64());
                tracing::info!(backend = %name, container = %worker.name, address = %worker.address, route = ?worker.route,
                    cold_start_ms = cold_start.as_secs_f64() * 1e3, "container ready");
                let mut state = lock(&self.state);
                state.starting -= 1;
                state.workers.push(worker);
                state.problem = None;
                "ready"
            }
            Ok(worker) => {
                self.remove(&docker, &worker.id).await;
                lock(&self.state).starting -= 1;
                "cancelled"
            }
            Err(problem) => {
                tracing::warn!(backend = %name, "{problem}");
                lock(&self.counters).start_failures += 1;
                let mut state = lock(&self.state);
                state.starting -= 1;
                state.problem = Some(problem);
                state.next_start = Instant::now() + self.config.retry_interval;
                "failed"
            }
        };
        metrics::counter!("switchyard_container_starts_total", "backend" => name, "outcome" => outcome)
            .increment(1);
        self.changed();
        self.wake.notify_one();
    }

    async fn create_and_wait(
        &self,
        docker: &Docker,
        image: &str,
        started: Instant,
    ) -> Result<Arc<Worker>, String> {
        let config = &self.config;
        let sequence = self.sequence.fetch_add(1, Ordering::Relaxed);
        let name = format!(
            "switchyard-{}-{}-{sequence}",
            self.identity.scope,
            &self.identity.instance[..8.min(self.identity.instance.len())]
        );
        let port = format!("{WORKER_PORT}/tcp");
        let body = ContainerCreateBody {
            image: Some(image.to_owned()),
            cmd: Some(vec![
                "--workers".into(),
                config.workers.to_string(),
                "--intra-op-threads".into(),
                config.intra_op_threads.to_string(),
                "--queue-capacity".into(),
                config.max_in_flight.to_string(),
                // The container's address becomes known to this host at
                // once (see `switchyard worker --help`).
                "--announce".into(),
            ]),
            labels: Some(self.identity.container_labels()),
            exposed_ports: Some(HashMap::from([(port.clone(), HashMap::new())])),
            stop_timeout: Some(10),
            host_config: Some(HostConfig {
                // Loopback only, an ephemeral host port chosen by the engine.
                port_bindings: Some(HashMap::from([(
                    port.clone(),
                    Some(vec![PortBinding {
                        host_ip: Some(Ipv4Addr::LOCALHOST.to_string()),
                        host_port: Some(String::new()),
                    }]),
                )])),
                nano_cpus: Some(config.nano_cpus),
                memory: Some(config.memory_bytes),
                memory_swap: Some(config.memory_bytes),
                readonly_rootfs: Some(true),
                security_opt: Some(vec!["no-new-privileges:true".into()]),
                cap_drop: Some(vec!["ALL".into()]),
                tmpfs: Some(HashMap::from([(
                    "/tmp".to_owned(),
                    "rw,nosuid,nodev,noexec,size=64m".to_owned(),
                )])),
                pids_limit: Some(1024),
                ..Default::default()
            }),
            ..Default::default()
        };
        let created = docker
            .create_container(
                Some(CreateContainerOptions {
                    name: Some(name.clone()),
                    ..Default::default()
                }),
                body,
            )
            .await
            .map_err(|e| format!("cannot create container {name}: {e}"))?;
        let id = created.id;
        {
            let mut state = lock(&self.state);
            state.created.insert(id.clone());
            let live = state.created.len();
            state.uptime.set_live(live, Instant::now());
        }
        let result = self.run_until_ready(docker, &id, &name, started).await;
        if result.is_err() {
            self.remove(docker, &id).await;
        }
        result
    }

    async fn run_until_ready(
        &self,
        docker: &Docker,
        id: &str,
        name: &str,
        started: Instant,
    ) -> Result<Arc<Worker>, String> {
        let deadline = started + self.config.start_timeout;
        docker
            .start_container(id, None::<bollard::query_parameters::StartContainerOptions>)
            .await
            .map_err(|e| format!("cannot start container {name}: {e}"))?;
        let inspect = docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .map_err(|e| format!("cannot inspect container {name}: {e}"))?;
        let settings = inspect.network_settings.unwrap_or_default();
        let published = settings
            .ports
            .and_then(|mut ports| ports.remove(&format!("{WORKER_PORT}/tcp")))
            .flatten()
            .and_then(|bindings| bindings.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse::<u16>().ok())
            .map(|port| SocketAddr::from((Ipv4Addr::LOCALHOST, port)));
        let network = settings
            .networks
            .unwrap_or_default()
            .into_values()
            .find_map(|endpoint| endpoint.ip_address?.parse::<IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, WORKER_PORT));
        let (address, route) = match self.config.route {
            Route::Network => (
                network.ok_or_else(|| {
                    format!(
                        "container {name} has no address on a Docker network (route = \"network\")"
                    )
                })?,
                WorkerRoute::Network,
            ),
            Route::Auto | Route::Published => (
                published.ok_or_else(|| format!("container {name} has no published port"))?,
                WorkerRoute::Published,
            ),
        };
        // Probes overlap: one that hangs (a SYN sent before the
        // container's network was up, or the port forwarding waiting on
        // it) does not hold back the next, which would add up to its
        // whole timeout to the cold start.
        let mut probes = FuturesUnordered::new();
        let mut interval = Duration::from_millis(2);
        let mut next_probe = Instant::now();
        let mut last_exit_check = Instant::now();
        loop {
            let now = Instant::now();
            if now >= next_probe {
                if probes.len() < MAX_READY_PROBES {
                    probes.push(self.client.ready(address, READY_PROBE_TIMEOUT));
                }
                next_probe = now + interval;
                interval = (interval * 2).min(READY_POLL_MAX);
            }
            tokio::select! {
                Some(ready) = probes.next() => {
                    if ready {
                        break;
                    }
                }
                () = tokio::time::sleep_until(next_probe.into()) => {}
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "container {name} was not ready within {:?}{}",
                    self.config.start_timeout,
                    self.exit_detail(docker, id).await.unwrap_or_default()
                ));
            }
            if last_exit_check.elapsed() >= EXIT_CHECK_INTERVAL {
                last_exit_check = Instant::now();
                if let Some(detail) = self.exit_detail(docker, id).await {
                    return Err(format!(
                        "container {name} stopped before it was ready{detail}"
                    ));
                }
            }
        }
        // Probes still waiting are dropped, their connections closed.
        drop(probes);
        let (address, route) = match network {
            Some(network) if route == WorkerRoute::Published => self
                .try_network_route(name, network)
                .await
                .map_or((address, route), |network| (network, WorkerRoute::Network)),
            _ => (address, route),
        };
        Ok(Arc::new(Worker {
            id: id.to_owned(),
            name: name.to_owned(),
            address,
            route,
            outstanding: AtomicU64::new(0),
            state: AtomicU8::new(READY),
            health_failures: AtomicU32::new(0),
        }))
    }

    /// With `route = "auto"` and the engine on this machine: `network` if
    /// the ready container answers there too. Requests then skip the
    /// engine's port forwarding (a userland proxy process by default, two
    /// more hand-offs per request). The first container that does not
    /// answer on its network address (a rootless engine's network, say)
    /// turns the probe off for the pool's life.
    async fn try_network_route(&self, name: &str, network: SocketAddr) -> Option<SocketAddr> {
        if self.config.route != Route::Auto
            || !matches!(self.config.endpoint, Endpoint::Unix(_))
            || self.network_unreachable.load(Ordering::Relaxed)
        {
            return None;
        }
        if self.client.ready(network, NETWORK_PROBE_TIMEOUT).await {
            return Some(network);
        }
        if !self.network_unreachable.swap(true, Ordering::Relaxed) {
            tracing::warn!(backend = %self.config.name, container = %name, %network,
                "the container does not answer on its Docker network address; requests go \
                 through the published port (route = \"published\" skips this probe)");
        }
        None
    }

    /// If the container has stopped: its exit code and last log lines.
    async fn exit_detail(&self, docker: &Docker, id: &str) -> Option<String> {
        let inspect = docker
            .inspect_container(
                id,
                None::<bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .ok()?;
        let state = inspect.state?;
        if state.running == Some(true) {
            return None;
        }
        let mut logs = docker.logs(
            id,
            Some(LogsOptions {
                stdout: true,
                stderr: true,
                tail: "20".into(),
                ..Default::default()
            }),
        );
        let mut text = String::new();
        while let Some(Ok(line)) = logs.next().await {
            text.push_str(&line.to_string());
        }
        Some(format!(
            " (exit code {}{}); its last output: {}",
            state.exit_code.unwrap_or_default(),
            if state.oom_killed == Some(true) {
                ", out of memory"
            } else {
                ""
            },
            text.trim()
        ))
    }

    /// Waits for a draining container to finish its requests, then stops it.
    async fn retire(self: Arc<Self>, docker: Docker, worker: Arc<Worker>) {
        let deadline = Instant::now() + self.config.start_timeout;
        let mut changes = self.generation.subscribe();
        while worker.outstanding() > 0 && Instant::now() < deadline {
            // Requests finishing do not bump the generation; poll briefly.
            let _ = tokio::time::timeout(Duration::from_millis(20), changes.changed()).await;
        }
        lock(&self.state)
            .workers
            .retain(|w| !Arc::ptr_eq(w, &worker));
        let _ = docker
            .stop_container(
                &worker.id,
                Some(StopContainerOptions {
                    t: Some(5),
                    ..Default::default()
                }),
            )
            .await;
        self.remove(&docker, &worker.id).await;
        lock(&self.counters).retired += 1;
        metrics::counter!("switchyard_container_retired_total", "backend" => self.config.name.clone())
            .increment(1);
        self.changed();
    }

    /// Stops the supervisor's work and removes every container of this
    /// instance. Waits (bounded) for containers being started.
    pub async fn shutdown(&self) {
        self.stopping.store(true, Ordering::Release);
        self.changed();
        let deadline = Instant::now() + self.config.start_timeout;
        let mut changes = self.generation.subscribe();
        while lock(&self.state).starting > 0 && Instant::now() < deadline {
            let _ = tokio::time::timeout_at(deadline.into(), changes.changed()).await;
        }
        let (docker, workers) = {
            let mut state = lock(&self.state);
            (state.docker.clone(), std::mem::take(&mut state.workers))
        };
        let Some(docker) = docker else {
            return;
        };
        let ids: HashSet<String> = workers
            .iter()
            .map(|w| w.id.clone())
            .chain(lock(&self.state).created.iter().cloned())
            .collect();
        futures_util::future::join_all(ids.iter().map(|id| self.remove(&docker, id))).await;
        match engine::remove_instance(&docker, &self.identity).await {
            Ok(0) => {}
            Ok(n) => {
                tracing::info!(backend = %self.config.name, removed = n, "removed remaining containers")
            }
            Err(error) => {
                tracing::warn!(backend = %self.config.name, %error, "cannot list containers to remove")
            }
        }
        // A copy of the image that lost its tag to another gateway's build
        // of the same content while these containers used it is free now.
        let plan = lock(&self.plan).clone();
        if let Some(plan) = plan {
            plan.remove_untagged_copies(&docker).await;
        }
        tracing::info!(backend = %self.config.name, removed = ids.len(), "container pool stopped");
        self.changed();
    }
}

/// The `q` quantile of sorted values (nearest rank), 0 when empty.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// What the pool can do now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolStatus {
    pub ready: usize,
    pub starting: usize,
    /// Containers that could still be started.
    pub can_start: usize,
    pub unready_reason: Option<String>,
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use crate::config::ContainerFile;
    use std::collections::BTreeMap;
    use std::path::PathBuf;
    use switchyard_models::repository::{ModelConfig, RepositoryModel};
    use switchyard_models::toml_config::from_toml;

    /// A pool with one ready container that takes one request at a time and
    /// room to start a second; no engine is involved.
    fn pool_with_one_worker() -> (Pool, Arc<Worker>) {
        let model = RepositoryModel {
            config: ModelConfig {
                name: "digits".into(),
                platform: "onnxruntime_onnx".into(),
                max_batch_size: 0,
                dynamic_batching: None,
                description: String::new(),
            },
            versions: Vec::new(),
        };
        let repository = ModelRepository {
            root: PathBuf::from("/nowhere"),
            models: BTreeMap::from([("digits".to_owned(), model)]),
        };
        let config = from_toml::<ContainerFile>(
            "models = [\"digits\"]\nmax_containers = 2\nmax_in_flight = 1\ntarget_in_flight = 1\n",
        )
        .unwrap()
        .validate(&repository)
        .unwrap();
        let pool = Pool::new(config, repository);
        let worker = Arc::new(Worker {
            id: "c1".into(),
            name: "worker-1".into(),
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 9)),
            route: WorkerRoute::Published,
            outstanding: AtomicU64::new(0),
            state: AtomicU8::new(READY),
            health_failures: AtomicU32::new(0),
        });
        lock(&pool.state).workers.push(Arc::clone(&worker));
        (pool, worker)
    }

    #[test]
    fn container_seconds_count_each_container_from_creation_to_removal() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let mut uptime = ContainerTime::new(t0);
        uptime.set_live(1, at(1_000));
        uptime.set_live(2, at(3_000));
        assert!((uptime.seconds_at(at(4_000)) - 4.0).abs() < 1e-9);
        uptime.set_live(1, at(5_000));
        uptime.set_live(0, at(6_000));
        // One for 2 s, two for 2 s, then one for 1 s: 2 + 4 + 1.
        assert!((uptime.seconds_at(at(60_000)) - 7.0).abs() < 1e-9);
        // An earlier instant than the last change adds nothing.
        uptime.set_live(1, at(10_000));
        assert!((uptime.seconds_at(at(9_000)) - 7.0).abs() < 1e-9);
    }

    #[tokio::test]
    async fn a_request_waiting_for_room_takes_the_slot_a_finished_request_frees() {
        let (pool, worker) = pool_with_one_worker();
        let first = match pool.pick() {
            Pick::Worker(lease) => lease,
            _ => panic!("the ready container has room"),
        };
        assert!(matches!(pool.pick(), Pick::Full));
        let now = Instant::now();
        // The pool could grow, so the second request waits rather than
        // being refused; nothing starts a container here, so only the
        // first request finishing can let it through before its deadline.
        let deadline = now + Duration::from_secs(10);
        let waiting = pool.acquire(deadline, now);
        tokio::pin!(waiting);
        tokio::select! {
            _ = &mut waiting => panic!("the full container cannot take a second request"),
            () = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        assert_eq!(pool.waiting(), 1);
        drop(first);
        let second = tokio::time::timeout(Duration::from_secs(5), waiting)
            .await
            .expect("the waiting request is woken when the slot frees")
            .expect("it gets the container");
        assert_eq!(second.worker.id, worker.id);
        assert_eq!(worker.outstanding(), 1);
        assert_eq!(pool.waiting(), 0);
        drop(second);
        assert_eq!(worker.outstanding(), 0);
    }

    #[test]
    fn a_prewarm_raises_the_floor_for_its_hold_and_only_counts_missing_containers() {
        let (pool, _) = pool_with_one_worker();
        // One container is live: asking for 5 adds 1 (the maximum is 2).
        assert_eq!(pool.prewarm(5, Duration::from_secs(60)), 1);
        assert_eq!(pool.stats().prewarm_floor, 2);
        assert_eq!(pool.stats().prewarms, 1);
        // Asking again for fewer neither lowers the floor nor counts.
        assert_eq!(pool.prewarm(1, Duration::from_secs(60)), 0);
        assert_eq!(pool.stats().prewarm_floor, 2);
        assert_eq!(pool.stats().prewarms, 1);
        // A hold that has ended keeps nothing.
        let (pool, _) = pool_with_one_worker();
        assert_eq!(pool.prewarm(2, Duration::ZERO), 1);
        assert_eq!(pool.stats().prewarm_floor, 0);
    }

    #[tokio::test]
    async fn a_full_pool_that_cannot_grow_refuses_at_once() {
        let (pool, worker) = pool_with_one_worker();
        lock(&pool.state).workers.push(Arc::new(Worker {
            id: "c2".into(),
            name: "worker-2".into(),
            address: SocketAddr::from((Ipv4Addr::LOCALHOST, 9)),
            route: WorkerRoute::Published,
            outstanding: AtomicU64::new(1),
            state: AtomicU8::new(READY),
            health_failures: AtomicU32::new(0),
        }));
        let _held = match pool.pick() {
            Pick::Worker(lease) => lease,
            _ => panic!("the first container has room"),
        };
        assert_eq!(worker.outstanding(), 1);
        let now = Instant::now();
        let refused = tokio::time::timeout(
            Duration::from_secs(5),
            pool.acquire(now + Duration::from_secs(10), now),
        )
        .await
        .expect("refused without waiting");
        assert!(
            matches!(refused, Err(BackendError::Overloaded { .. })),
            "{:?}",
            refused.err()
        );
    }

    #[test]
    fn the_engine_state_of_a_dead_container_names_its_cause() {
        let state = |running, oom_killed, exit_code| ContainerState {
            running: Some(running),
            oom_killed: Some(oom_killed),
            exit_code: Some(exit_code),
            ..Default::default()
        };
        // The kernel's kill exits with 137, as `docker kill` does: only the
        // engine's flag tells the two apart.
        assert_eq!(
            DeathCause::of(Some(&state(false, true, 137))),
            DeathCause::OutOfMemory
        );
        assert_eq!(
            DeathCause::of(Some(&state(false, false, 137))),
            DeathCause::Exited(137)
        );
        assert_eq!(
            DeathCause::of(Some(&state(false, false, 0))),
            DeathCause::Exited(0)
        );
        assert_eq!(
            DeathCause::of(Some(&state(true, false, 0))),
            DeathCause::Unresponsive
        );
        assert_eq!(DeathCause::of(None), DeathCause::Unknown);
        let labels: HashSet<&str> = [
            DeathCause::OutOfMemory,
            DeathCause::Exited(1),
            DeathCause::Unresponsive,
            DeathCause::Unknown,
        ]
        .into_iter()
        .map(DeathCause::label)
        .collect();
        assert_eq!(labels.len(), 4, "each cause has its own label");
    }
}
