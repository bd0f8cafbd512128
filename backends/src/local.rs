//! The local backend: ONNX Runtime sessions inside the gateway process.
//!
//! Each served model version has a pool of worker threads, each owning one
//! session (`Session::run` takes `&mut self`). Requests reach the pool
//! through one bounded queue; when it is full the request is refused at
//! once rather than queued without bound. The async server never blocks on
//! inference: it enqueues and awaits a oneshot reply.
//!
//! Batching is opportunistic. A worker takes the next request; if more
//! compatible requests are already queued it merges them (up to the model's
//! `max_batch_size`), and only then, because the queue shows load, keeps
//! taking arrivals for at most `max_queue_delay_us` (0 by default: no
//! waiting), and only while they keep coming (a 50 µs silence ends the
//! wait). A request arriving at an idle pool runs at once: batching costs
//! nothing at low load and raises throughput at high load.
//!
//! The inline path. Handing a request to a worker thread and its answer
//! back costs two thread wake-ups, and on a virtual machine an idle CPU
//! takes 50-150 µs to wake, far more than a small model's run. So when a
//! pool is idle (nothing queued or running) and its measured one-row run
//! takes at most `inline_max_compute_us`, the request runs on the calling
//! (async) thread with one of the pool's idle sessions. Sessions therefore
//! live behind a mutex each: a worker locks its own for a batch, the inline
//! path takes any free one with `try_lock` and falls back to the queue
//! when there is none. Under load the pool is never idle, so every request
//! goes through the queue and batching is unchanged.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use switchyard_models::batch;
use switchyard_models::repository::RepositoryModel;
use switchyard_models::{ModelError, ModelRepository, ModelSession, SessionOptions, TensorSpecs};
use switchyard_protocol::Tensor;
use tokio::sync::oneshot;

use crate::affinity::{self, CpuPinning};
use crate::{
    Backend, BackendError, BackendFuture, BackendKind, BackendSnapshot, InferenceJob,
    InferenceResult, ModelInfo, Timing,
};

/// How one model is served locally.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalModelConfig {
    pub model: String,
    /// Worker threads, each with its own session.
    pub workers: usize,
    /// ONNX Runtime intra-op threads per session.
    pub intra_op_threads: usize,
    /// Requests that may wait for a worker before new ones are refused.
    pub queue_capacity: usize,
    /// Run a request on the calling thread when the pool is idle and a
    /// one-row run has been measured at most this long (zero: never).
    pub inline_max_compute: Duration,
}

/// The local backend's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    pub name: String,
    pub models: Vec<LocalModelConfig>,
    /// Pin each worker thread to one of the process's CPUs, in turn over
    /// every model's workers (`server.pin_threads`; see [`crate::affinity`]).
    pub pin_threads: bool,
}

/// A request waiting for a worker.
struct Job {
    inputs: Vec<Tensor>,
    deadline: Instant,
    enqueued: Instant,
    reply: oneshot::Sender<Result<InferenceResult, BackendError>>,
}

/// The queue and workers of one model version.
#[derive(Debug)]
struct VersionPool {
    sender: Sender<Job>,
    workers: usize,
    queue_capacity: usize,
    shared: Arc<PoolShared>,
    _threads: Vec<JoinHandle<()>>,
}

/// What a pool's worker threads and its inline path share.
#[derive(Debug)]
struct PoolShared {
    backend: String,
    model: String,
    version: u64,
    /// One session per worker; worker `i` runs its batches on `sessions[i]`.
    sessions: Vec<Mutex<ModelSession>>,
    /// Requests of this pool waiting in the queue or running.
    active: AtomicUsize,
    /// Moving average of a one-row run's compute time, ns (0: not measured).
    one_row_ns: AtomicU64,
    inline_max_compute: Duration,
    /// How long the pool must have been idle for the inline path
    /// ([`INLINE_QUIET`]).
    inline_quiet: Duration,
    /// When the pool last became idle, ns since `epoch`; [`NEVER_ACTIVE`]
    /// before its first request.
    idle_since_ns: AtomicU64,
    epoch: Instant,
    /// Requests that took the inline path.
    inline_runs: AtomicU64,
    /// Metric handles, taken at first use (the labels are fixed): a run
    /// then looks nothing up in the metrics registry.
    metrics: OnceLock<PoolMetrics>,
    inline_requests: OnceLock<metrics::Counter>,
}

#[derive(Debug)]
struct PoolMetrics {
    batch_size: metrics::Histogram,
    compute_seconds: metrics::Histogram,
}

/// The inline path is for a pool that has been idle this long, not one
/// that is idle for a moment between requests. Under saturation a fast
/// model's pool empties between batches many times a millisecond; a
/// request run inline there forgoes batching and holds an HTTP thread
/// (measured with digits at 64 connections: 0.78-0.81x the requests/s of
/// the path turned off, in alternating rounds). A pool under saturation
/// is seldom idle even this long (digits at 64 connections: 0.45% of its
/// requests ran inline; fashion_cnn at 256: 0.02%), while at 1,000 and
/// 2,500 requests/s the gaps (1 ms and 400 µs, less the request itself)
/// are: against a 1 ms window, that gave 0.66x the p50 and 0.56-0.61x
/// the gateway's CPU per request for both models in 5 of 5 alternating
/// rounds, with saturation throughput within the noise (digits 0.96x,
/// fashion_cnn 0.98x, each lower in 3 of 5; bench README, "Inline path").
const INLINE_QUIET: Duration = Duration::from_micros(200);

const NEVER_ACTIVE: u64 = u64::MAX;

/// The one-row estimate after a run of `sample_ns` (`old_ns` 0: none yet).
///
/// The estimate is of what the model costs, so it follows fast runs and
/// is wary of slow ones: a run is slower than that when something else
/// had the CPU. A plain eighth-weight average let a few such runs decide:
/// in one CI run, with twenty tests sharing two cores, it stood at 3.5 ms
/// after twelve one-row fashion_cnn requests (0.3-0.6 ms each on an idle
/// machine), and only two had run inline under a limit of 5 ms. So
/// a faster run moves the estimate halfway to itself, and a slower one an
/// eighth of the way, counted as at most twice the estimate: one outlier
/// raises it by at most 12.5%, while a model that really is slower (a
/// machine busy for good) still lifts it 12.5% a run until it is half
/// way, then an eighth of the rest: a tenfold change shows at 90% within
/// 30 runs.
fn next_one_row_estimate(old_ns: u64, sample_ns: u64) -> u64 {
    let next = if old_ns == 0 {
        sample_ns
    } else if sample_ns < old_ns {
        old_ns - (old_ns - sample_ns) / 2
    } else {
        old_ns + (sample_ns - old_ns).min(old_ns) / 8
    };
    next.max(1)
}

impl PoolShared {
    fn session(&self, index: usize) -> Option<MutexGuard<'_, ModelSession>> {
        // A run that panicked leaves the session as ONNX Runtime left it,
        // which is usable: poisoning is ignored.
        self.sessions
            .get(index)
            .map(|m| m.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Runs `inputs` on `session` and records the run in the metrics.
    fn run(
        &self,
        session: &mut ModelSession,
        inputs: Vec<Tensor>,
        rows: u64,
    ) -> (Result<Vec<Tensor>, String>, Duration) {
        let started = Instant::now();
        let outputs = session.run(inputs).map_err(|e| e.to_string());
        let compute = started.elapsed();
        self.record(rows, compute);
        (outputs, compute)
    }

    fn metrics(&self) -> &PoolMetrics {
        self.metrics.get_or_init(|| PoolMetrics {
            batch_size: metrics::histogram!("switchyard_batch_size", "model" => self.model.clone()),
            compute_seconds: metrics::histogram!("switchyard_inference_compute_seconds", "backend" => self.backend.clone(), "model" => self.model.clone()),
        })
    }

    fn record(&self, rows: u64, compute: Duration) {
        let metrics = self.metrics();
        metrics.batch_size.record(rows as f64);
        metrics.compute_seconds.record(compute.as_secs_f64());
        if rows == 1 {
            // Workers update it without coordination; a lost update only
            // delays the estimate.
            let sample = u64::try_from(compute.as_nanos()).unwrap_or(u64::MAX);
            let old = self.one_row_ns.load(Ordering::Relaxed);
            self.one_row_ns
                .store(next_one_row_estimate(old, sample), Ordering::Relaxed);
        }
    }

    /// Whether a request of `rows` rows may take the inline path: the model
    /// is known to run them fast enough (one row's time × rows) and the
    /// pool is idle. On `true` the caller counts as active and must call
    /// [`PoolShared::leave`].
    fn enter_inline(&self, rows: u64) -> bool {
        let measured = self.one_row_ns.load(Ordering::Relaxed);
        measured != 0
            && u128::from(measured) * u128::from(rows.max(1)) <= self.inline_max_compute.as_nanos()
            && self.quiet()
            && self
                .active
                .compare_exchange(0, 1, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
    }

    /// The inline path: runs `inputs` on any idle session, or gives them
    /// back (`Err`) when every session is busy.
    #[allow(clippy::type_complexity)]
    fn run_inline(
        &self,
        inputs: Vec<Tensor>,
    ) -> Result<Result<InferenceResult, BackendError>, Vec<Tensor>> {
        let Some(mut session) = self.sessions.iter().find_map(|m| match m.try_lock() {
            Ok(guard) => Some(guard),
            Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => None,
        }) else {
            return Err(inputs);
        };
        let rows = batch::batch_size(&inputs);
        let (outputs, compute) = self.run(&mut session, inputs, rows);
        drop(session);
        self.inline_runs.fetch_add(1, Ordering::Relaxed);
        self.inline_requests
            .get_or_init(|| {
                metrics::counter!("switchyard_local_inline_requests_total", "model" => self.model.clone())
            })
            .increment(1);
        Ok(match outputs {
            Ok(outputs) => Ok(InferenceResult {
                outputs,
                timing: Timing {
                    queue: Duration::ZERO,
                    compute,
                    batch_rows: rows,
                },
            }),
            Err(message) => Err(self.failed(message)),
        })
    }

    /// The error every request of a failed run gets (logged once, here).
    fn failed(&self, message: String) -> BackendError {
        tracing::warn!(backend = %self.backend, model = %self.model, version = self.version, %message, "inference failed");
        BackendError::Failed {
            backend: self.backend.clone(),
            message,
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(NEVER_ACTIVE - 1)
    }

    /// Whether the pool has had nothing to do for [`INLINE_QUIET`] (or
    /// never had anything). A request that leaves between another's check
    /// and its store can make one check see an older idle time: at worst
    /// one more request runs inline.
    fn quiet(&self) -> bool {
        let since = self.idle_since_ns.load(Ordering::Relaxed);
        since == NEVER_ACTIVE
            || u128::from(self.now_ns().saturating_sub(since)) >= self.inline_quiet.as_nanos()
    }

    fn leave(&self) {
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.idle_since_ns.store(self.now_ns(), Ordering::Relaxed);
        }
    }
}

#[derive(Debug)]
struct LocalModel {
    info: Arc<ModelInfo>,
    pools: BTreeMap<u64, VersionPool>,
}

/// ONNX Runtime sessions in this process.
#[derive(Debug)]
pub struct LocalBackend {
    name: String,
    models: HashMap<String, LocalModel>,
    in_flight: Arc<AtomicU64>,
    concurrency: u64,
}

impl LocalBackend {
    /// Loads every configured model from `repository` and starts its
    /// workers. Blocks until every session is loaded (or one fails).
    pub fn start(config: &LocalConfig, repository: &ModelRepository) -> Result<Self, ModelError> {
        let pinning = if config.pin_threads {
            CpuPinning::of_process()
        } else {
            None
        };
        let mut models = HashMap::new();
        for model_config in &config.models {
            let model = repository.models.get(&model_config.model).ok_or_else(|| {
                ModelError::Repository {
                    path: repository.root.clone(),
                    message: format!(
                        "backend {:?} serves model {:?}, which the repository does not have \
                         (it has {:?})",
                        config.name,
                        model_config.model,
                        repository.models.keys().collect::<Vec<_>>()
                    ),
                }
            })?;
            models.insert(
                model_config.model.clone(),
                start_model(&config.name, model_config, model, pinning.as_ref())?,
            );
        }
        let concurrency = models
            .values()
            .flat_map(|m| m.pools.values())
            .map(|p| p.workers as u64)
            .sum();
        Ok(Self {
            name: config.name.clone(),
            models,
            in_flight: Arc::new(AtomicU64::new(0)),
            concurrency,
        })
    }

    fn pools(&self) -> impl Iterator<Item = &VersionPool> {
        self.models.values().flat_map(|m| m.pools.values())
    }
}

/// Requests waiting in `pools`' queues, and the places free in them.
fn queues<'a>(pools: impl Iterator<Item = &'a VersionPool>) -> (u64, u64) {
    pools.fold((0, 0), |(queued, free), pool| {
        let waiting = pool.sender.len();
        (
            queued + waiting as u64,
            free + pool.queue_capacity.saturating_sub(waiting) as u64,
        )
    })
}

fn start_model(
    backend: &str,
    config: &LocalModelConfig,
    model: &RepositoryModel,
    pinning: Option<&CpuPinning>,
) -> Result<LocalModel, ModelError> {
    let name = &model.config.name;
    let batching = Batching {
        max_rows: model.config.batch_limit().unwrap_or(1),
        max_delay: model.config.dynamic_batching.map_or(Duration::ZERO, |b| {
            Duration::from_micros(b.max_queue_delay_us)
        }),
        enabled: model.config.dynamic_batching.is_some(),
    };
    let mut pools = BTreeMap::new();
    let mut versions = BTreeMap::new();
    for version in &model.versions {
        let options = SessionOptions {
            intra_op_threads: config.intra_op_threads,
        };
        let sessions = load_sessions(name, &version.path, options, config.workers.max(1))?;
        let specs = sessions
            .first()
            .map(|s| Arc::clone(s.specs()))
            .ok_or_else(|| ModelError::Load {
                model: name.clone(),
                path: version.path.clone(),
                message: "no worker loaded the model".into(),
            })?;
        let shared = Arc::new(PoolShared {
            backend: backend.to_owned(),
            model: name.clone(),
            version: version.version,
            sessions: sessions.into_iter().map(Mutex::new).collect(),
            active: AtomicUsize::new(0),
            one_row_ns: AtomicU64::new(0),
            inline_max_compute: config.inline_max_compute,
            inline_quiet: INLINE_QUIET,
            idle_since_ns: AtomicU64::new(NEVER_ACTIVE),
            epoch: Instant::now(),
            inline_runs: AtomicU64::new(0),
            metrics: OnceLock::new(),
            inline_requests: OnceLock::new(),
        });
        let queue_capacity = config.queue_capacity.max(1);
        let (sender, receiver) = crossbeam_channel::bounded(queue_capacity);
        let mut threads = Vec::with_capacity(shared.sessions.len());
        for worker in 0..shared.sessions.len() {
            let worker_ctx = WorkerContext {
                shared: Arc::clone(&shared),
                index: worker,
                receiver: receiver.clone(),
                batching,
            };
            // Taken here, not in the thread, so each worker's CPU follows
            // the configured order of models and workers.
            let cpu = pinning.map(|p| p.next_cpu());
            let thread = std::thread::Builder::new()
                .name(format!("ort-{name}-{worker}"))
                .spawn(move || {
                    if let Some(cpu) = cpu {
                        affinity::pin_current(cpu);
                    }
                    worker_ctx.run();
                })
                .map_err(|e| ModelError::Load {
                    model: name.clone(),
                    path: version.path.clone(),
                    message: format!("cannot start a worker thread: {e}"),
                })?;
            threads.push(thread);
        }
        validate_batch_dimension(name, &specs, model.config.max_batch_size > 0)?;
        versions.insert(version.version, specs);
        pools.insert(
            version.version,
            VersionPool {
                sender,
                workers: threads.len(),
                queue_capacity,
                shared,
                _threads: threads,
            },
        );
    }
    tracing::info!(backend, model = %name, versions = ?versions.keys().collect::<Vec<_>>(),
        workers = config.workers, intra_op_threads = config.intra_op_threads, "model loaded");
    Ok(LocalModel {
        info: Arc::new(ModelInfo {
            name: name.clone(),
            platform: model.config.platform.clone(),
            max_batch_size: model.config.batch_limit(),
            versions,
        }),
        pools,
    })
}

/// Loads `count` sessions of one model file, in parallel (loading is
/// mostly graph optimisation, one core each).
fn load_sessions(
    model: &str,
    path: &std::path::Path,
    options: SessionOptions,
    count: usize,
) -> Result<Vec<ModelSession>, ModelError> {
    std::thread::scope(|scope| {
        let loads: Vec<_> = (0..count)
            .map(|_| scope.spawn(|| ModelSession::load(model, path, options)))
            .collect();
        loads
            .into_iter()
            .map(|load| {
                load.join().unwrap_or_else(|_| {
                    Err(ModelError::Load {
                        model: model.to_owned(),
                        path: path.to_owned(),
                        message: "loading the session panicked".into(),
                    })
                })
            })
            .collect()
    })
}

/// A model with a batch dimension must have it dynamic on every tensor.
fn validate_batch_dimension(
    model: &str,
    specs: &TensorSpecs,
    batched: bool,
) -> Result<(), ModelError> {
    if !batched {
        return Ok(());
    }
    match specs
        .inputs
        .iter()
        .chain(&specs.outputs)
        .find(|spec| spec.shape.first().is_none_or(|&d| d >= 0))
    {
        Some(spec) => Err(ModelError::Unsupported {
            model: model.to_owned(),
            message: format!(
                "max_batch_size > 0 but tensor {:?} has shape {:?} without a dynamic first \
                 dimension; set max_batch_size = 0 in its config.toml",
                spec.name, spec.shape
            ),
        }),
        None => Ok(()),
    }
}

/// How long a forming batch waits for the next arrival before it runs.
const ARRIVAL_GAP: Duration = Duration::from_micros(50);

#[derive(Debug, Clone, Copy)]
struct Batching {
    enabled: bool,
    max_rows: u64,
    max_delay: Duration,
}

/// What one worker thread needs besides its session.
struct WorkerContext {
    shared: Arc<PoolShared>,
    /// This worker's session in `shared.sessions`.
    index: usize,
    receiver: Receiver<Job>,
    batching: Batching,
}

impl WorkerContext {
    /// Serves jobs until every sender is gone (the backend was dropped).
    fn run(self) {
        let mut carried: Option<Job> = None;
        loop {
            let first = match carried.take() {
                Some(job) => job,
                None => match self.receiver.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
            };
            let Some(first) = self.admit(first) else {
                continue;
            };
            let (batch, next) = self.collect(first);
            carried = next;
            self.execute(batch);
        }
    }

    /// Drops a job whose client is gone or whose deadline passed.
    fn admit(&self, job: Job) -> Option<Job> {
        if job.reply.is_closed() {
            return None;
        }
        let now = Instant::now();
        if now >= job.deadline {
            let waited = now - job.enqueued;
            let _ = job.reply.send(Err(BackendError::DeadlineExceeded {
                backend: self.shared.backend.clone(),
                waited,
            }));
            return None;
        }
        Some(job)
    }

    /// Forms a batch starting with `first`; returns it and an incompatible
    /// job to start the next batch with, if one was taken from the queue.
    fn collect(&self, first: Job) -> (Vec<Job>, Option<Job>) {
        let mut rows = batch::batch_size(&first.inputs);
        let mut jobs = vec![first];
        if !self.batching.enabled {
            return (jobs, None);
        }
        let mut wait_until: Option<Instant> = None;
        while rows < self.batching.max_rows {
            let next = match self.receiver.try_recv() {
                Ok(job) => job,
                Err(_) => {
                    // The queue is empty. Wait for more only if it just had
                    // work in it (requests are arriving faster than one at a
                    // time), and only while they keep coming: a silence of
                    // ARRIVAL_GAP ends the wait, so a few clients with one
                    // request each outstanding never stall a batch for the
                    // whole delay. The delay bounds the wait overall.
                    if jobs.len() < 2 || self.batching.max_delay.is_zero() {
                        break;
                    }
                    let until = *wait_until
                        .get_or_insert_with(|| jobs[0].enqueued + self.batching.max_delay);
                    let gap_end = Instant::now() + ARRIVAL_GAP;
                    match self.receiver.recv_deadline(until.min(gap_end)) {
                        Ok(job) => job,
                        Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => break,
                    }
                }
            };
            let Some(next) = self.admit(next) else {
                continue;
            };
            let next_rows = batch::batch_size(&next.inputs);
            if rows + next_rows > self.batching.max_rows
                || !batch::compatible(&jobs[0].inputs, &next.inputs)
            {
                return (jobs, Some(next));
            }
            rows += next_rows;
            jobs.push(next);
        }
        (jobs, None)
    }

    /// Runs a batch and answers its requests. The session is held for the
    /// run alone, so it is free for the inline path before anyone hears
    /// back.
    fn execute(&self, mut jobs: Vec<Job>) {
        let started = Instant::now();
        let sizes: Vec<u64> = jobs.iter().map(|j| batch::batch_size(&j.inputs)).collect();
        let rows: u64 = sizes.iter().sum();
        let Some(mut guard) = self.shared.session(self.index) else {
            return;
        };
        let session = &mut *guard;
        let (outcome, compute) = if jobs.len() == 1 {
            let inputs = std::mem::take(&mut jobs[0].inputs);
            let (outputs, compute) = self.shared.run(session, inputs, rows);
            (outputs.map(|outputs| vec![outputs]), compute)
        } else {
            let parts: Vec<&[Tensor]> = jobs.iter().map(|j| j.inputs.as_slice()).collect();
            match batch::merge(&parts) {
                Some(merged) => {
                    let (outputs, compute) = self.shared.run(session, merged, rows);
                    (
                        outputs.and_then(|outputs| batch::split(outputs, &sizes)),
                        compute,
                    )
                }
                None => (
                    Err("internal error: incompatible requests were batched".to_owned()),
                    Duration::ZERO,
                ),
            }
        };
        drop(guard);
        match outcome {
            Ok(per_job) => {
                for (job, outputs) in jobs.into_iter().zip(per_job) {
                    let timing = Timing {
                        queue: started.saturating_duration_since(job.enqueued),
                        compute,
                        batch_rows: rows,
                    };
                    let _ = job.reply.send(Ok(InferenceResult { outputs, timing }));
                }
            }
            Err(message) => {
                let error = self.shared.failed(message);
                for job in jobs {
                    let _ = job.reply.send(Err(error.clone()));
                }
            }
        }
    }
}

/// Counts a request as active in its pool until it ends, however it ends.
struct Active<'a>(&'a PoolShared);

impl<'a> Active<'a> {
    fn enter(pool: &'a PoolShared) -> Self {
        pool.active.fetch_add(1, Ordering::AcqRel);
        Self(pool)
    }

    /// For a request that [`PoolShared::enter_inline`] already counted.
    fn entered(pool: &'a PoolShared) -> Self {
        Self(pool)
    }
}

impl Drop for Active<'_> {
    fn drop(&mut self) {
        self.0.leave();
    }
}

/// Decrements the in-flight count when a request ends, however it ends.
struct InFlight(Arc<AtomicU64>);

impl InFlight {
    fn enter(counter: &Arc<AtomicU64>) -> Self {
        counter.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(counter))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Backend for LocalBackend {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Local
    }

    fn models(&self) -> Vec<Arc<ModelInfo>> {
        self.models.values().map(|m| Arc::clone(&m.info)).collect()
    }

    fn ready(&self) -> bool {
        !self.models.is_empty()
    }

    /// A request is refused only when its queue is full, however many
    /// requests the workers have taken out of it (a batching worker holds
    /// a batch of one multi-row request or of many single-row ones, and the
    /// request that starts the next batch). So the capacity reported is
    /// what the pools hold now plus the places free in their queues, and
    /// [`BackendSnapshot::has_capacity`] says exactly whether a queue takes
    /// one more.
    fn snapshot(&self) -> BackendSnapshot {
        let in_flight = self.in_flight.load(Ordering::Relaxed);
        let (queued, free) = queues(self.pools());
        BackendSnapshot {
            name: self.name.clone(),
            kind: BackendKind::Local,
            ready: self.ready(),
            in_flight,
            queued,
            concurrency: self.concurrency,
            capacity: in_flight + free,
            headroom: 0,
            max_payload_bytes: None,
            unready_reason: None,
            cold_start_ms: None,
            memory_mb: None,
            shares_host_cpu: true,
        }
    }

    fn snapshot_for(&self, model: &str) -> BackendSnapshot {
        let mut snapshot = self.snapshot();
        if let Some(m) = self.models.get(model) {
            let pools = || m.pools.values();
            let sum = |f: fn(&VersionPool) -> usize| pools().map(f).sum::<usize>() as u64;
            let (queued, free) = queues(pools());
            snapshot.in_flight = sum(|p| p.shared.active.load(Ordering::Relaxed));
            snapshot.queued = queued;
            snapshot.concurrency = sum(|p| p.workers);
            snapshot.capacity = snapshot.in_flight + free;
        }
        snapshot
    }

    /// Per model and version: the pool, its measured one-row compute time
    /// and how many requests took the inline path.
    fn details(&self) -> serde_json::Value {
        let models: serde_json::Map<String, serde_json::Value> = self
            .models
            .iter()
            .map(|(name, model)| {
                let versions: serde_json::Map<String, serde_json::Value> = model
                    .pools
                    .iter()
                    .map(|(version, pool)| {
                        let shared = &pool.shared;
                        let one_row_ns = shared.one_row_ns.load(Ordering::Relaxed);
                        (
                            version.to_string(),
                            serde_json::json!({
                                "workers": pool.workers,
                                "queue_capacity": pool.queue_capacity,
                                "queued": pool.sender.len(),
                                "active": shared.active.load(Ordering::Relaxed),
                                "one_row_compute_us": (one_row_ns > 0)
                                    .then(|| one_row_ns as f64 / 1000.0),
                                "inline_max_compute_us": shared.inline_max_compute.as_micros(),
                                "inline_requests": shared.inline_runs.load(Ordering::Relaxed),
                            }),
                        )
                    })
                    .collect();
                (name.clone(), serde_json::Value::Object(versions))
            })
            .collect();
        serde_json::json!({ "models": models })
    }

    fn infer(&self, job: InferenceJob) -> BackendFuture<'_, Result<InferenceResult, BackendError>> {
        Box::pin(async move {
            let _in_flight = InFlight::enter(&self.in_flight);
            let pool = self
                .models
                .get(&job.model)
                .and_then(|m| m.pools.get(&job.version))
                .ok_or_else(|| BackendError::NotServed {
                    backend: self.name.clone(),
                    model: job.model.clone(),
                    version: job.version,
                })?;
            let mut inputs = job.request.inputs;
            if pool.shared.enter_inline(batch::batch_size(&inputs)) {
                let _active = Active::entered(&pool.shared);
                if Instant::now() >= job.deadline {
                    return Err(BackendError::DeadlineExceeded {
                        backend: self.name.clone(),
                        waited: Duration::ZERO,
                    });
                }
                match pool.shared.run_inline(inputs) {
                    Ok(result) => return result,
                    // Every session is busy after all: queue it.
                    Err(back) => inputs = back,
                }
            }
            let _active = Active::enter(&pool.shared);
            let (reply, answer) = oneshot::channel();
            let queued = Job {
                inputs,
                deadline: job.deadline,
                enqueued: Instant::now(),
                reply,
            };
            match pool.sender.try_send(queued) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    return Err(BackendError::Overloaded {
                        backend: self.name.clone(),
                        reason: format!(
                            "queue for model {:?} is full ({} waiting)",
                            job.model, pool.queue_capacity
                        ),
                    });
                }
                Err(TrySendError::Disconnected(_)) => {
                    return Err(BackendError::Unavailable {
                        backend: self.name.clone(),
                        reason: format!("workers for model {:?} have stopped", job.model),
                    });
                }
            }
            answer.await.unwrap_or_else(|_| {
                Err(BackendError::Unavailable {
                    backend: self.name.clone(),
                    reason: format!("a worker for model {:?} stopped mid-request", job.model),
                })
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use switchyard_protocol::TensorData;

    use super::*;

    fn job(
        enqueued: Instant,
    ) -> (
        Job,
        oneshot::Receiver<Result<InferenceResult, BackendError>>,
    ) {
        let (reply, answer) = oneshot::channel();
        let inputs = vec![Tensor {
            name: "x".into(),
            shape: vec![1, 2],
            data: TensorData::Fp32(vec![1.0, 2.0]),
        }];
        (
            Job {
                inputs,
                deadline: enqueued + Duration::from_secs(60),
                enqueued,
                reply,
            },
            answer,
        )
    }

    fn pool(inline_max_compute: Duration) -> PoolShared {
        quiet_pool(inline_max_compute, Duration::ZERO)
    }

    fn quiet_pool(inline_max_compute: Duration, inline_quiet: Duration) -> PoolShared {
        PoolShared {
            backend: "local".into(),
            model: "m".into(),
            version: 1,
            sessions: Vec::new(),
            active: AtomicUsize::new(0),
            one_row_ns: AtomicU64::new(0),
            inline_max_compute,
            inline_quiet,
            idle_since_ns: AtomicU64::new(NEVER_ACTIVE),
            epoch: Instant::now(),
            inline_runs: AtomicU64::new(0),
            metrics: OnceLock::new(),
            inline_requests: OnceLock::new(),
        }
    }

    #[test]
    fn a_pool_idle_only_for_a_moment_sends_the_request_to_its_workers() {
        let pool = quiet_pool(Duration::from_micros(200), Duration::from_millis(50));
        pool.record(1, Duration::from_micros(50));
        assert!(pool.enter_inline(1), "never active: quiet");
        pool.leave();
        assert!(
            !pool.enter_inline(1),
            "idle for less than 50 ms: the request batches with the next ones"
        );
        assert_eq!(pool.active.load(Ordering::Relaxed), 0);
        std::thread::sleep(Duration::from_millis(60));
        assert!(pool.enter_inline(1), "idle for 60 ms");
        pool.leave();
    }

    fn worker(receiver: Receiver<Job>, max_delay: Duration) -> WorkerContext {
        WorkerContext {
            shared: Arc::new(pool(Duration::ZERO)),
            index: 0,
            receiver,
            batching: Batching {
                enabled: true,
                max_rows: 64,
                max_delay,
            },
        }
    }

    #[test]
    fn the_inline_path_needs_a_measured_fast_model_and_an_idle_pool() {
        let pool = pool(Duration::from_micros(200));
        assert!(
            !pool.enter_inline(1),
            "nothing measured yet: the first requests go to the workers"
        );
        pool.record(8, Duration::from_micros(50));
        assert!(
            !pool.enter_inline(1),
            "a batch's time says nothing of one row"
        );
        pool.record(1, Duration::from_micros(50));
        assert!(pool.enter_inline(1), "fast and idle");
        assert_eq!(pool.active.load(Ordering::Relaxed), 1, "the caller counts");
        assert!(!pool.enter_inline(1), "one inline request at a time");
        pool.leave();
        assert!(pool.enter_inline(1));
        pool.leave();
        {
            let _queued = Active::enter(&pool);
            assert!(!pool.enter_inline(1), "a queued request: batch with it");
        }
        assert_eq!(pool.active.load(Ordering::Relaxed), 0);
        assert!(pool.enter_inline(1));
        pool.leave();
    }

    #[test]
    fn a_slow_model_or_a_zero_limit_never_runs_inline() {
        let slow = pool(Duration::from_micros(200));
        // Runs of 1 ms lift the estimate from 50 µs past the 200 µs limit
        // within 16 runs (12.5% a run).
        slow.record(1, Duration::from_micros(50));
        for _ in 0..16 {
            slow.record(1, Duration::from_millis(1));
        }
        assert!(slow.one_row_ns.load(Ordering::Relaxed) > 200_000);
        assert!(!slow.enter_inline(1));
        let fast = pool(Duration::from_micros(200));
        fast.record(1, Duration::from_micros(50));
        assert!(!fast.enter_inline(8), "eight rows of 50 µs are 400 µs");
        assert!(fast.enter_inline(4));
        fast.leave();
        let off = pool(Duration::ZERO);
        off.record(1, Duration::from_nanos(500));
        assert!(!off.enter_inline(1));
    }

    #[test]
    fn the_one_row_estimate_shrugs_off_a_preempted_run_and_follows_a_lasting_change() {
        let us = |n: u64| n * 1_000;
        let mut estimate = next_one_row_estimate(0, us(400));
        assert_eq!(estimate, us(400), "the first run sets it");
        estimate = next_one_row_estimate(estimate, us(30_000));
        assert_eq!(estimate, us(450), "one 30 ms run counts as 800 µs");
        estimate = next_one_row_estimate(estimate, us(400));
        assert_eq!(estimate, us(425), "halfway back after one fast run");
        // A first run that was itself slow (a cold session on a busy
        // machine) is forgotten within a few runs: 30 ms, then 400 µs runs
        // are under 5 ms after the fourth.
        let mut cold = next_one_row_estimate(0, us(30_000));
        for _ in 0..3 {
            cold = next_one_row_estimate(cold, us(400));
        }
        assert!(cold > us(4_000) && cold < us(5_000), "{cold}");
        // A model that has become ten times slower lifts it to 90% of its
        // new cost within 30 runs.
        let mut slower = us(400);
        for _ in 0..30 {
            slower = next_one_row_estimate(slower, us(4_000));
        }
        assert!(slower >= us(3_600), "{slower}");
        assert!(
            slower <= us(4_000),
            "never past the runs themselves: {slower}"
        );
        assert_eq!(next_one_row_estimate(0, 0), 1, "0 is kept for 'none yet'");
    }

    #[test]
    fn with_every_session_busy_the_inputs_come_back_for_the_queue() {
        let pool = pool(Duration::from_micros(200));
        let (job, _answer) = job(Instant::now());
        let inputs = job.inputs.clone();
        // No idle session (here: none at all) must hand the request back.
        match pool.run_inline(job.inputs) {
            Err(back) => assert_eq!(back, inputs),
            Ok(_) => panic!("ran without a session"),
        }
    }

    #[test]
    fn a_batch_runs_once_arrivals_stop_instead_of_waiting_the_whole_delay() {
        let (sender, receiver) = crossbeam_channel::bounded(8);
        let now = Instant::now();
        let (first, _a) = job(now);
        let (second, _b) = job(now);
        sender.send(second).expect("queued");
        let started = Instant::now();
        let (batch, carried) = worker(receiver, Duration::from_secs(5)).collect(first);
        assert_eq!(batch.len(), 2, "the queued request joins the batch");
        assert!(carried.is_none());
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "no arrivals: the batch must not wait out the 5 s delay"
        );
    }

    #[test]
    fn a_lone_request_at_an_idle_pool_runs_at_once() {
        let (_sender, receiver) = crossbeam_channel::bounded::<Job>(8);
        let (first, _a) = job(Instant::now());
        let started = Instant::now();
        let (batch, _) = worker(receiver, Duration::from_secs(5)).collect(first);
        assert_eq!(batch.len(), 1);
        assert!(started.elapsed() < Duration::from_secs(2));
    }

    #[test]
    fn incompatible_requests_start_the_next_batch() {
        let (sender, receiver) = crossbeam_channel::bounded(8);
        let now = Instant::now();
        let (first, _a) = job(now);
        let (mut other, _b) = job(now);
        other.inputs[0].shape = vec![1, 1];
        other.inputs[0].data = TensorData::Fp32(vec![1.0]);
        sender.send(other).expect("queued");
        let (batch, carried) = worker(receiver, Duration::from_millis(1)).collect(first);
        assert_eq!(batch.len(), 1);
        assert!(
            carried.is_some(),
            "the incompatible request is kept for the next batch"
        );
    }

    /// A backend serving model "m" with one pool whose `workers` have no
    /// threads: the test takes jobs out of the queue itself, as a worker
    /// forming a batch would.
    fn backend_without_threads(
        workers: usize,
        queue_capacity: usize,
    ) -> (LocalBackend, Receiver<Job>) {
        let (sender, receiver) = crossbeam_channel::bounded(queue_capacity);
        let pool = VersionPool {
            sender,
            workers,
            queue_capacity,
            shared: Arc::new(pool(Duration::ZERO)),
            _threads: Vec::new(),
        };
        let model = LocalModel {
            info: Arc::new(ModelInfo {
                name: "m".into(),
                platform: "onnxruntime_onnx".into(),
                max_batch_size: Some(8),
                versions: BTreeMap::new(),
            }),
            pools: BTreeMap::from([(1, pool)]),
        };
        let backend = LocalBackend {
            name: "local".into(),
            models: HashMap::from([("m".to_owned(), model)]),
            in_flight: Arc::new(AtomicU64::new(0)),
            concurrency: workers as u64,
        };
        (backend, receiver)
    }

    /// A request of `rows` rows of model "m", version 1.
    fn rows(rows: usize) -> InferenceJob {
        InferenceJob {
            model: "m".into(),
            version: 1,
            request: switchyard_protocol::InferRequest {
                inputs: vec![Tensor {
                    name: "x".into(),
                    shape: vec![rows as u64, 2],
                    data: TensorData::Fp32(vec![1.0; rows * 2]),
                }],
                ..Default::default()
            },
            deadline: Instant::now() + Duration::from_secs(60),
        }
    }

    /// Polls a request once: `Some` if the backend answered at once (a
    /// refusal), `None` if it took the request and awaits its answer.
    fn offer<'a>(
        backend: &'a LocalBackend,
        job: InferenceJob,
        taken: &mut Vec<BackendFuture<'a, Result<InferenceResult, BackendError>>>,
    ) -> Option<Result<InferenceResult, BackendError>> {
        let mut future = backend.infer(job);
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        match future.as_mut().poll(&mut context) {
            std::task::Poll::Ready(answer) => Some(answer),
            std::task::Poll::Pending => {
                taken.push(future);
                None
            }
        }
    }

    #[test]
    fn the_snapshot_has_room_exactly_while_the_queue_takes_one_more() {
        let (backend, receiver) = backend_without_threads(1, 4);
        let mut taken = Vec::new();
        let idle = backend.snapshot_for("m");
        assert_eq!((idle.in_flight, idle.capacity), (0, 4), "{idle:?}");
        // Two 4-row requests: the worker takes both as one full batch of 8
        // rows, and the queue is empty again.
        for _ in 0..2 {
            assert!(offer(&backend, rows(4), &mut taken).is_none());
        }
        let held: Vec<Job> = receiver.try_iter().collect();
        assert_eq!(held.len(), 2);
        // Four more fill the queue. The pool holds 6 requests; a count of
        // queue + workers x (max_batch_size + 1) = 13, which single-row
        // requests alone reach, would see room for 7 more.
        for place in 0..4 {
            let before = backend.snapshot_for("m");
            assert!(before.has_capacity(), "place {place} is free: {before:?}");
            assert!(offer(&backend, rows(4), &mut taken).is_none());
        }
        let full = backend.snapshot_for("m");
        assert_eq!(
            (full.in_flight, full.queued, full.capacity),
            (6, 4, 6),
            "{full:?}"
        );
        assert!(!full.has_capacity());
        assert!(
            !backend.snapshot().has_capacity(),
            "{:?}",
            backend.snapshot()
        );
        assert!(
            matches!(
                offer(&backend, rows(1), &mut taken),
                Some(Err(BackendError::Overloaded { .. }))
            ),
            "the full queue refuses, as the snapshot said"
        );
        // The worker takes one more: one place is free, and it is taken.
        let next = receiver.try_recv().expect("a queued request");
        let one_free = backend.snapshot_for("m");
        assert_eq!(
            (one_free.in_flight, one_free.capacity),
            (6, 7),
            "{one_free:?}"
        );
        assert!(one_free.has_capacity());
        assert!(offer(&backend, rows(1), &mut taken).is_none());
        assert!(!backend.snapshot_for("m").has_capacity());
        drop((held, next));
    }
}
