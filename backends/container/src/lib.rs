//! The container backend: the gateway builds, starts, scales and stops its
//! own worker containers through the Docker Engine API (bollard).
//!
//! Each container runs `switchyard worker` over the configured models from a
//! locally built `FROM scratch` image ([`image`]); the gateway talks to it
//! over HTTP/1.1 keep-alive with binary tensors ([`client`]); the pool
//! ([`pool`]) balances, scales, replaces dead containers and fails requests
//! over. The gateway uses [`ContainerFile`] (the `[backends.container]`
//! section), [`ContainerFile::validate`], [`ContainerBackend::start`] and the
//! `Backend` trait.
//!
//! Start-up never waits for Docker: the backend reports itself not ready
//! (with the reason) until the engine answers, the image exists and the
//! minimum number of containers is up, and keeps retrying meanwhile.

pub mod client;
pub mod config;
pub mod engine;
pub mod image;
pub mod pool;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_backends::{
    Backend, BackendError, BackendFuture, BackendKind, BackendSnapshot, InferenceJob,
    InferenceResult, ModelInfo,
};
use switchyard_models::{ModelRepository, ModelSession, SessionOptions};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// The Docker client, for tools and tests that inspect what the backend made.
pub use bollard;
pub use config::{ContainerConfig, ContainerFile, Endpoint};
pub use pool::{PoolStats, PoolStatus};

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
#[error("container backend: {0}")]
pub struct StartError(pub String);

/// The container backend.
#[derive(Debug)]
pub struct ContainerBackend {
    name: String,
    models: HashMap<String, Arc<ModelInfo>>,
    pool: Arc<pool::Pool>,
    stop: watch::Sender<bool>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
}

impl ContainerBackend {
    /// Reads the models' tensor specs, then starts the pool's supervisor in
    /// the background (engine, orphans, image, containers) and returns.
    pub async fn start(
        config: ContainerConfig,
        repository: &ModelRepository,
    ) -> Result<Self, StartError> {
        let models = {
            let config = config.clone();
            let repository = repository.clone();
            tokio::task::spawn_blocking(move || model_infos(&config, &repository))
                .await
                .map_err(|e| StartError(e.to_string()))??
        };
        let name = config.name.clone();
        let pool = Arc::new(pool::Pool::new(config, repository.clone()));
        let (stop, stopped) = watch::channel(false);
        let supervisor = tokio::spawn(Arc::clone(&pool).supervise(stopped));
        tracing::info!(backend = %name, instance = %pool.identity.instance,
            endpoint = %pool.config.endpoint, "container backend started");
        Ok(Self {
            name,
            models,
            pool,
            stop,
            supervisor: Mutex::new(Some(supervisor)),
        })
    }

    /// Cold starts, failures and failovers so far.
    pub fn stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Ready and starting containers, and why the backend is not ready.
    pub fn status(&self) -> PoolStatus {
        self.pool.status()
    }

    /// The containers in rotation.
    pub fn workers(&self) -> Vec<Arc<pool::Worker>> {
        self.pool.workers()
    }

    /// This gateway instance's id, as in the `io.switchyard.instance` label.
    pub fn instance(&self) -> &str {
        &self.pool.identity.instance
    }

    /// One cold start, as the benchmarks measure it: starts a pool of
    /// `config` (give it `min_containers = 1`), waits up to `limit` for it to
    /// be ready, stops it (removing its container) and returns the
    /// create → ready time the pool measured.
    pub async fn measure_cold_start(
        config: ContainerConfig,
        repository: &ModelRepository,
        limit: Duration,
    ) -> Result<Duration, StartError> {
        let backend = Self::start(config, repository).await?;
        let deadline = Instant::now() + limit;
        while !backend.ready() {
            if Instant::now() > deadline {
                let reason = backend.status().unready_reason;
                backend.shutdown().await;
                return Err(StartError(format!(
                    "not ready after {limit:?}: {}",
                    reason.unwrap_or_else(|| "no reason given".into())
                )));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seconds = backend.stats().cold_start_last_seconds;
        backend.shutdown().await;
        Ok(Duration::from_secs_f64(seconds.max(0.0)))
    }
}

/// The served models with their specs, read from the ONNX files by the
/// same model core the workers run (so the gateway validates requests
/// exactly as the worker would).
fn model_infos(
    config: &ContainerConfig,
    repository: &ModelRepository,
) -> Result<HashMap<String, Arc<ModelInfo>>, StartError> {
    let mut models = HashMap::new();
    for name in &config.models {
        let model = repository
            .models
            .get(name)
            .ok_or_else(|| StartError(format!("the repository has no model {name:?}")))?;
        let mut versions = BTreeMap::new();
        for version in &model.versions {
            let session = ModelSession::load(name, &version.path, SessionOptions::default())
                .map_err(|e| StartError(e.to_string()))?;
            versions.insert(version.version, Arc::clone(session.specs()));
        }
        models.insert(
            name.clone(),
            Arc::new(ModelInfo {
                name: name.clone(),
                platform: model.config.platform.clone(),
                max_batch_size: model.config.batch_limit(),
                versions,
            }),
        );
    }
    Ok(models)
}

impl Backend for ContainerBackend {
    fn details(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).unwrap_or(serde_json::Value::Null)
    }

    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Container
    }

    fn models(&self) -> Vec<Arc<ModelInfo>> {
        self.models.values().cloned().collect()
    }

    fn ready(&self) -> bool {
        self.pool.status().unready_reason.is_none()
    }

    fn snapshot(&self) -> BackendSnapshot {
        let status = self.pool.status();
        let config = &self.pool.config;
        let ready = status.ready as u64;
        BackendSnapshot {
            name: self.name.clone(),
            kind: BackendKind::Container,
            ready: status.unready_reason.is_none(),
            in_flight: self.pool.in_flight(),
            queued: self.pool.waiting(),
            concurrency: ready * config.workers as u64,
            capacity: ready * config.max_in_flight,
            headroom: status.can_start as u64 * config.max_in_flight,
            max_payload_bytes: None,
            unready_reason: status.unready_reason,
            cold_start_ms: self.pool.recent_cold_start_ms(),
            memory_mb: None,
            shares_host_cpu: config.shares_host_cpu,
        }
    }

    fn infer(&self, job: InferenceJob) -> BackendFuture<'_, Result<InferenceResult, BackendError>> {
        Box::pin(async move {
            let served = self
                .models
                .get(&job.model)
                .is_some_and(|m| m.versions.contains_key(&job.version));
            if !served {
                return Err(BackendError::NotServed {
                    backend: self.name.clone(),
                    model: job.model,
                    version: job.version,
                });
            }
            self.pool.infer(job).await
        })
    }

    /// Containers enough for `slots` requests running at once (each runs
    /// `workers`), started now and kept for `hold`.
    fn prewarm(&self, model: String, slots: u64, hold: Duration) -> BackendFuture<'_, u64> {
        Box::pin(async move {
            if !self.models.contains_key(&model) {
                return 0;
            }
            let workers = (self.pool.config.workers as u64).max(1);
            let containers = usize::try_from(slots.div_ceil(workers)).unwrap_or(usize::MAX);
            self.pool.prewarm(containers, hold) as u64 * workers
        })
    }

    fn shutdown(&self) -> BackendFuture<'_, ()> {
        Box::pin(async move {
            let _ = self.stop.send(true);
            let supervisor = self
                .supervisor
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .take();
            self.pool.shutdown().await;
            if let Some(supervisor) = supervisor {
                // The supervisor returns at its next await on the stop signal.
                let _ = tokio::time::timeout(self.pool.config.api_timeout, supervisor).await;
            }
        })
    }
}
