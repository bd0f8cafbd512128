//! The handler core: what one function instance holds (the loaded model
//! sessions, loaded once at init, outside the handler) and what it does
//! with one event. No Lambda runtime here, so the gateway's benchmark can
//! call the very same handler in-process to measure the emulator's cost.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use switchyard_models::{ModelError, ModelRepository, ModelSession, SessionOptions, TensorSpecs};
use switchyard_protocol::{InferResponse, validate_inputs};

use crate::event::{EventError, HandlerTiming, InstanceReport, InvokeEvent, InvokeResponse};

/// How an instance is set up; read from the environment by the binary.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSettings {
    /// The model repository inside the package.
    pub repository: PathBuf,
    /// Models to load; `None` loads every model of the repository.
    pub models: Option<Vec<String>>,
    /// ONNX Runtime intra-op threads per session.
    pub intra_op_threads: usize,
    /// The function's memory size, reported back for cost accounting.
    pub memory_mb: Option<u64>,
}

impl FunctionSettings {
    /// Reads `SWITCHYARD_MODEL_REPOSITORY` (default `$LAMBDA_TASK_ROOT/models`
    /// on Lambda, `models/repository` elsewhere), `SWITCHYARD_LAMBDA_MODELS`
    /// (`all` or a comma-separated list), `SWITCHYARD_INTRA_OP_THREADS`
    /// (default 1) and `AWS_LAMBDA_FUNCTION_MEMORY_SIZE`.
    pub fn from_env() -> Self {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let repository = var("SWITCHYARD_MODEL_REPOSITORY")
            .map(PathBuf::from)
            .or_else(|| var("LAMBDA_TASK_ROOT").map(|root| PathBuf::from(root).join("models")))
            .unwrap_or_else(|| PathBuf::from("models/repository"));
        let models = var("SWITCHYARD_LAMBDA_MODELS")
            .filter(|list| list.trim() != "all")
            .map(|list| {
                list.split(',')
                    .map(|m| m.trim().to_owned())
                    .filter(|m| !m.is_empty())
                    .collect()
            });
        Self {
            repository,
            models,
            intra_op_threads: var("SWITCHYARD_INTRA_OP_THREADS")
                .and_then(|v| v.parse().ok())
                .unwrap_or(1),
            memory_mb: var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").and_then(|v| v.parse().ok()),
        }
    }
}

/// Why an invocation failed; the runtime reports it as a function error
/// whose `errorType` is [`HandlerError::error_type`].
#[derive(Debug, thiserror::Error)]
pub enum HandlerError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("model {model:?} version {version} is not loaded in this function (it has {loaded:?})")]
    NotServed {
        model: String,
        version: u64,
        loaded: Vec<String>,
    },
    #[error("invalid request for model {model:?}: {message}")]
    Invalid { model: String, message: String },
    #[error(transparent)]
    Inference(ModelError),
}

impl HandlerError {
    /// A stable name for the Lambda `errorType` field.
    pub fn error_type(&self) -> &'static str {
        match self {
            HandlerError::Event(_) => "Switchyard.BadEvent",
            HandlerError::NotServed { .. } => "Switchyard.ModelNotServed",
            HandlerError::Invalid { .. } => "Switchyard.InvalidRequest",
            HandlerError::Inference(_) => "Switchyard.InferenceFailed",
        }
    }
}

struct LoadedModel {
    max_batch_size: Option<u64>,
    specs: std::sync::Arc<TensorSpecs>,
    /// One event at a time runs in an instance, so the lock is never
    /// contended on Lambda; it only makes the handler `Sync`.
    session: Mutex<ModelSession>,
}

/// One function instance: its sessions and its invocation count.
pub struct Function {
    id: String,
    init_ms: f64,
    memory_mb: Option<u64>,
    models: HashMap<(String, u64), LoadedModel>,
    invocations: AtomicU64,
}

impl std::fmt::Debug for Function {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Function")
            .field("id", &self.id)
            .field("init_ms", &self.init_ms)
            .field("models", &self.loaded())
            .finish_non_exhaustive()
    }
}

impl Function {
    /// Loads every selected model version (the instance's init phase).
    /// `started` is when the process started, so `init_ms` covers runtime
    /// start-up as well as model loading.
    pub fn load(settings: &FunctionSettings, started: Instant) -> Result<Self, ModelError> {
        let repository = ModelRepository::load(&settings.repository)?;
        let selected: Vec<String> = match &settings.models {
            Some(list) => list.clone(),
            None => repository.models.keys().cloned().collect(),
        };
        let options = SessionOptions {
            intra_op_threads: settings.intra_op_threads.max(1),
        };
        let mut models = HashMap::new();
        for name in &selected {
            let model = repository
                .models
                .get(name)
                .ok_or_else(|| ModelError::Repository {
                    path: repository.root.clone(),
                    message: format!(
                        "SWITCHYARD_LAMBDA_MODELS names {name:?}, which the repository does not \
                         have (it has {:?})",
                        repository.models.keys().collect::<Vec<_>>()
                    ),
                })?;
            for version in &model.versions {
                let session = ModelSession::load(name, &version.path, options)?;
                models.insert(
                    (name.clone(), version.version),
                    LoadedModel {
                        max_batch_size: model.config.batch_limit(),
                        specs: std::sync::Arc::clone(session.specs()),
                        session: Mutex::new(session),
                    },
                );
            }
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        Ok(Self {
            id: format!("{}-{nanos:x}", std::process::id()),
            init_ms: started.elapsed().as_secs_f64() * 1000.0,
            memory_mb: settings.memory_mb,
            models,
            invocations: AtomicU64::new(0),
        })
    }

    /// `model:version` of every loaded model, sorted.
    pub fn loaded(&self) -> Vec<String> {
        let mut loaded: Vec<String> = self
            .models
            .keys()
            .map(|(name, version)| format!("{name}:{version}"))
            .collect();
        loaded.sort();
        loaded
    }

    /// Tensor specs of every loaded model version.
    pub fn specs(&self) -> BTreeMap<(String, u64), std::sync::Arc<TensorSpecs>> {
        self.models
            .iter()
            .map(|(key, model)| (key.clone(), std::sync::Arc::clone(&model.specs)))
            .collect()
    }

    /// Handles one event: decode, validate, run, encode. The first call on
    /// an instance is reported as its cold start.
    pub fn handle(&self, event: &InvokeEvent) -> Result<InvokeResponse, HandlerError> {
        let started = Instant::now();
        let invocation = self.invocations.fetch_add(1, Ordering::Relaxed) + 1;
        let request = event.decode()?;
        let decoded = Instant::now();
        let key = (event.model_name.clone(), event.model_version);
        let model = self
            .models
            .get(&key)
            .ok_or_else(|| HandlerError::NotServed {
                model: key.0.clone(),
                version: key.1,
                loaded: self.loaded(),
            })?;
        validate_inputs(
            &model.specs.inputs,
            &model.specs.outputs,
            model.max_batch_size,
            &request,
        )
        .map_err(|e| HandlerError::Invalid {
            model: key.0.clone(),
            message: e.to_string(),
        })?;
        let wanted: Vec<String> = request.outputs.iter().map(|o| o.name.clone()).collect();
        let outputs = {
            // A poisoned lock means an earlier inference panicked; the
            // session itself holds no partial state, so keep using it.
            let mut session = model
                .session
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            session
                .run(request.inputs)
                .map_err(HandlerError::Inference)?
        };
        let computed = Instant::now();
        let outputs = outputs
            .into_iter()
            .filter(|t| wanted.is_empty() || wanted.contains(&t.name))
            .collect();
        let response = InferResponse {
            model_name: key.0.clone(),
            model_version: Some(key.1.to_string()),
            id: request.id,
            outputs,
        };
        let instance = InstanceReport {
            id: self.id.clone(),
            cold: invocation == 1,
            init_ms: self.init_ms,
            invocation,
            memory_mb: self.memory_mb,
        };
        let micros = |d: std::time::Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let mut timing = HandlerTiming {
            decode_us: micros(decoded - started),
            compute_us: micros(computed - decoded),
            handler_us: 0,
        };
        timing.handler_us = micros(started.elapsed());
        Ok(InvokeResponse::new(&response, instance, timing)?)
    }
}
