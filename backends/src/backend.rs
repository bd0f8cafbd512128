//! The `Backend` trait and the values that cross it.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_models::TensorSpecs;
use switchyard_protocol::{InferRequest, Tensor};

/// The kinds of place a request can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendKind {
    /// ONNX Runtime sessions inside the gateway process.
    Local,
    /// Worker containers managed by the gateway.
    Container,
    /// A Lambda function.
    Lambda,
}

impl BackendKind {
    /// The lower-case name used in headers, metrics and config.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendKind::Local => "local",
            BackendKind::Container => "container",
            BackendKind::Lambda => "lambda",
        }
    }
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A model as a backend serves it: its versions with their tensor specs.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelInfo {
    pub name: String,
    pub platform: String,
    /// Largest batch per request, `None` without a batch dimension.
    pub max_batch_size: Option<u64>,
    /// Specs by version; the highest version is the default.
    pub versions: BTreeMap<u64, Arc<TensorSpecs>>,
}

impl ModelInfo {
    /// The version a request without one goes to.
    pub fn latest_version(&self) -> Option<u64> {
        self.versions.keys().next_back().copied()
    }
}

/// One validated request on its way to a backend.
#[derive(Debug)]
pub struct InferenceJob {
    pub model: String,
    pub version: u64,
    pub request: InferRequest,
    /// When the client stops waiting; a backend drops work past it.
    pub deadline: Instant,
}

/// Where the time of one inference went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Timing {
    /// Waiting in the backend's queue.
    pub queue: Duration,
    /// Running the model (for the whole batch the request was part of).
    pub compute: Duration,
    /// Rows in the batch the request ran in.
    pub batch_rows: u64,
}

/// The outputs of one request.
#[derive(Debug)]
pub struct InferenceResult {
    pub outputs: Vec<Tensor>,
    pub timing: Timing,
}

/// Why a backend did not produce a result. The gateway maps each to an
/// HTTP status in one place.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum BackendError {
    /// The backend is at capacity and refused the request at once.
    #[error("{backend} is overloaded: {reason}")]
    Overloaded { backend: String, reason: String },
    /// The backend cannot take requests now (starting, stopped, broken).
    #[error("{backend} is unavailable: {reason}")]
    Unavailable { backend: String, reason: String },
    /// The request's deadline passed before it ran.
    #[error("deadline exceeded after {waited:?} in {backend}")]
    DeadlineExceeded { backend: String, waited: Duration },
    /// The backend does not serve this model or version.
    #[error("{backend} does not serve model {model:?} version {version}")]
    NotServed {
        backend: String,
        model: String,
        version: u64,
    },
    /// The model ran and failed.
    #[error("inference failed in {backend}: {message}")]
    Failed { backend: String, message: String },
}

/// A boxed future, so that `Backend` can be used as a trait object.
pub type BackendFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A point-in-time view of a backend for the placement policy.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendSnapshot {
    pub name: String,
    pub kind: BackendKind,
    pub ready: bool,
    /// Requests accepted and not yet answered.
    pub in_flight: u64,
    /// Of those, the ones waiting in a queue.
    pub queued: u64,
    /// Requests it can run at once without queueing.
    pub concurrency: u64,
    /// Requests it accepts in total before refusing (running + queued).
    /// Where that number is not fixed, what it holds now plus what it
    /// would take at once, so that [`Self::has_capacity`] is exact: the
    /// local tier's batching workers take a varying number of requests out
    /// of its queue (one multi-row request, or many single-row ones) and it
    /// refuses only when the queue is full, so it reports `in_flight` plus
    /// the places free in its queue.
    pub capacity: u64,
    /// Further requests it could take by scaling out (starting containers,
    /// Lambda instances below the concurrency limit); 0 for a fixed pool.
    pub headroom: u64,
    /// Largest request payload in bytes it accepts (Lambda's 6 MB limit),
    /// `None` when unlimited. Placement never sends a larger one.
    pub max_payload_bytes: Option<u64>,
    /// Why it is not ready, for `/v2/health/ready` and the logs.
    pub unready_reason: Option<String>,
    /// Measured time a new slot takes to serve: a container's create →
    /// ready, the extra round trip of a Lambda instance's cold invocation;
    /// mean of the recent ones, ms. `None` before one was measured and for
    /// a fixed pool. Placement prefers it to its configured prior.
    pub cold_start_ms: Option<f64>,
    /// Memory of one instance in MB where it is billed by memory (a Lambda
    /// function's memory size), `None` otherwise. Placement prices Lambda
    /// GB-seconds with it.
    pub memory_mb: Option<u64>,
    /// It runs on the gateway's own machine and so shares its CPU: the
    /// local tier, worker containers of a local Docker engine, a Lambda
    /// endpoint on loopback (the emulator). Work placed on it takes CPU
    /// from every other backend on the host rather than bringing its own.
    pub shares_host_cpu: bool,
}

impl BackendSnapshot {
    /// Whether one more request would be accepted now.
    pub fn has_capacity(&self) -> bool {
        self.ready && self.in_flight < self.capacity
    }
}

/// Everything the gateway knows about a backend.
pub trait Backend: Send + Sync + fmt::Debug {
    /// Its configured name, unique in the gateway (`local`, `container`...).
    fn name(&self) -> &str;
    /// What kind of backend it is.
    fn kind(&self) -> BackendKind;
    /// The models it serves.
    fn models(&self) -> Vec<Arc<ModelInfo>>;
    /// Whether it can take requests now.
    fn ready(&self) -> bool;
    /// Load and capacity over all its models, for stats and metrics.
    fn snapshot(&self) -> BackendSnapshot;
    /// Load and capacity for a request of `model`, which is what placement
    /// asks: [`Backend::snapshot`] narrowed to the model where the backend
    /// keeps models apart. The local tier runs each model on its own worker
    /// threads behind its own queue, so another model's idle workers are no
    /// room for this one. The default is the backend-wide snapshot (a
    /// container or a Lambda instance runs any of its models).
    fn snapshot_for(&self, model: &str) -> BackendSnapshot {
        let _ = model;
        self.snapshot()
    }
    /// Runs one request. Must not block the async runtime.
    fn infer(&self, job: InferenceJob) -> BackendFuture<'_, Result<InferenceResult, BackendError>>;
    /// Backend-specific state for `/v2/switchyard/stats` (pool sizes, cold
    /// starts, costs). Default: nothing beyond the snapshot.
    fn details(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// Gets `slots` request slots of `model` ready ahead of demand (start
    /// containers, warm function instances) and keeps them for at least
    /// `hold`, because placement predicts load the ready slots cannot take.
    /// Resolves to the slots it set out to add (0 when enough were ready
    /// already); the slots themselves may become ready later. Default:
    /// nothing to warm (a fixed pool is always warm).
    fn prewarm(&self, model: String, slots: u64, hold: Duration) -> BackendFuture<'_, u64> {
        let _ = (model, slots, hold);
        Box::pin(async { 0 })
    }
    /// Releases what the backend started (containers, emulators); called
    /// once after the gateway has drained. Default: nothing to release.
    fn shutdown(&self) -> BackendFuture<'_, ()> {
        Box::pin(async {})
    }
}
