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
//! taking arrivals for at most `max_queue_delay_us`, and only while they keep
//! coming (a 50 µs silence ends the wait). A request arriving at an idle
//! pool runs at once: batching costs nothing at low load and raises
//! throughput at high load.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TrySendError};
use switchyard_models::batch;
use switchyard_models::repository::RepositoryModel;
use switchyard_models::{ModelError, ModelRepository, ModelSession, SessionOptions, TensorSpecs};
use switchyard_protocol::Tensor;
use tokio::sync::oneshot;

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
}

/// The local backend's configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalConfig {
    pub name: String,
    pub models: Vec<LocalModelConfig>,
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
    _threads: Vec<JoinHandle<()>>,
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
    capacity: u64,
}

impl LocalBackend {
    /// Loads every configured model from `repository` and starts its
    /// workers. Blocks until every session is loaded (or one fails).
    pub fn start(config: &LocalConfig, repository: &ModelRepository) -> Result<Self, ModelError> {
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
                start_model(&config.name, model_config, model)?,
            );
        }
        let sum = |f: fn(&VersionPool) -> usize| {
            models
                .values()
                .flat_map(|m| m.pools.values())
                .map(f)
                .sum::<usize>() as u64
        };
        let concurrency = sum(|p| p.workers);
        let capacity = concurrency + sum(|p| p.queue_capacity);
        Ok(Self {
            name: config.name.clone(),
            models,
            in_flight: Arc::new(AtomicU64::new(0)),
            concurrency,
            capacity,
        })
    }

    fn queued(&self) -> u64 {
        self.models
            .values()
            .flat_map(|m| m.pools.values())
            .map(|p| p.sender.len() as u64)
            .sum()
    }
}

fn start_model(
    backend: &str,
    config: &LocalModelConfig,
    model: &RepositoryModel,
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
        let (sender, receiver) = crossbeam_channel::bounded(config.queue_capacity.max(1));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let mut threads = Vec::with_capacity(config.workers);
        for worker in 0..config.workers.max(1) {
            let worker_ctx = WorkerContext {
                backend: backend.to_owned(),
                model: name.clone(),
                version: version.version,
                receiver: receiver.clone(),
                batching,
            };
            let path = version.path.clone();
            let options = SessionOptions {
                intra_op_threads: config.intra_op_threads,
            };
            let ready_tx = ready_tx.clone();
            let model_name = name.clone();
            let thread = std::thread::Builder::new()
                .name(format!("ort-{name}-{worker}"))
                .spawn(
                    move || match ModelSession::load(&model_name, &path, options) {
                        Ok(session) => {
                            let _ = ready_tx.send(Ok(Arc::clone(session.specs())));
                            // Start-up waits for one answer per worker; release
                            // the channel before serving for the process's life.
                            drop(ready_tx);
                            worker_ctx.run(session);
                        }
                        Err(error) => {
                            let _ = ready_tx.send(Err(error));
                        }
                    },
                )
                .map_err(|e| ModelError::Load {
                    model: name.clone(),
                    path: version.path.clone(),
                    message: format!("cannot start a worker thread: {e}"),
                })?;
            threads.push(thread);
        }
        drop(ready_tx);
        let mut specs: Option<Arc<TensorSpecs>> = None;
        for _ in 0..threads.len() {
            match ready_rx.recv() {
                Ok(result) => specs = Some(result?),
                // Every sender is gone without an answer: a worker panicked.
                Err(_) => break,
            }
        }
        let specs = specs.ok_or_else(|| ModelError::Load {
            model: name.clone(),
            path: version.path.clone(),
            message: "no worker loaded the model".into(),
        })?;
        validate_batch_dimension(name, &specs, model.config.max_batch_size > 0)?;
        versions.insert(version.version, specs);
        pools.insert(
            version.version,
            VersionPool {
                sender,
                workers: threads.len(),
                queue_capacity: config.queue_capacity.max(1),
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
    backend: String,
    model: String,
    version: u64,
    receiver: Receiver<Job>,
    batching: Batching,
}

impl WorkerContext {
    /// Serves jobs until every sender is gone (the backend was dropped).
    fn run(self, mut session: ModelSession) {
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
            self.execute(&mut session, batch);
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
                backend: self.backend.clone(),
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

    fn execute(&self, session: &mut ModelSession, mut jobs: Vec<Job>) {
        let started = Instant::now();
        let sizes: Vec<u64> = jobs.iter().map(|j| batch::batch_size(&j.inputs)).collect();
        let rows: u64 = sizes.iter().sum();
        let outcome = if jobs.len() == 1 {
            let inputs = std::mem::take(&mut jobs[0].inputs);
            session
                .run(inputs)
                .map(|outputs| vec![outputs])
                .map_err(|e| e.to_string())
        } else {
            let parts: Vec<&[Tensor]> = jobs.iter().map(|j| j.inputs.as_slice()).collect();
            match batch::merge(&parts) {
                Some(merged) => session
                    .run(merged)
                    .map_err(|e| e.to_string())
                    .and_then(|outputs| batch::split(outputs, &sizes)),
                None => Err("internal error: incompatible requests were batched".to_owned()),
            }
        };
        let compute = started.elapsed();
        metrics::histogram!("switchyard_batch_size", "model" => self.model.clone())
            .record(rows as f64);
        metrics::histogram!("switchyard_inference_compute_seconds", "backend" => self.backend.clone(), "model" => self.model.clone())
            .record(compute.as_secs_f64());
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
                tracing::warn!(backend = %self.backend, model = %self.model, version = self.version, %message, "inference failed");
                for job in jobs {
                    let _ = job.reply.send(Err(BackendError::Failed {
                        backend: self.backend.clone(),
                        message: message.clone(),
                    }));
                }
            }
        }
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

    fn snapshot(&self) -> BackendSnapshot {
        BackendSnapshot {
            name: self.name.clone(),
            kind: BackendKind::Local,
            ready: self.ready(),
            in_flight: self.in_flight.load(Ordering::Relaxed),
            queued: self.queued(),
            concurrency: self.concurrency,
            capacity: self.capacity,
            headroom: 0,
            max_payload_bytes: None,
            unready_reason: None,
            cold_start_ms: None,
            memory_mb: None,
        }
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
            let (reply, answer) = oneshot::channel();
            let queued = Job {
                inputs: job.request.inputs,
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

    fn worker(receiver: Receiver<Job>, max_delay: Duration) -> WorkerContext {
        WorkerContext {
            backend: "local".into(),
            model: "m".into(),
            version: 1,
            receiver,
            batching: Batching {
                enabled: true,
                max_rows: 64,
                max_delay,
            },
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
}
