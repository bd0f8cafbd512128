//! The Lambda backend: each request becomes one synchronous invocation of
//! the Switchyard function (`backends/lambda-function`) through the Lambda
//! Invoke API, on AWS or on the local `cargo lambda` emulator.
//!
//! - [`config`]: the `[backends.lambda]` section;
//! - [`invoke`]: one Invoke call and what its answer means;
//! - [`sign`]: SigV4 signing with credentials from the environment;
//! - [`cost`]: price of an invocation from memory and billed duration;
//! - [`activity`]: cold starts, throttles, instances and cost so far;
//! - [`emulator`]: the local emulator and function instances as child
//!   processes (tests and benchmark).
//!
//! The gateway enforces what the emulator does not (so behaviour is the
//! same on both): reserved concurrency (a semaphore; beyond it a request
//! is refused at once, as Lambda would throttle it) and the 6 MB payload
//! limit (reported to placement as `max_payload_bytes` and checked again on
//! the encoded event). When the Invoke API cannot be reached the backend
//! reports itself down for `retry_down_after_ms`, then lets one request try
//! again, so placement routes around it without hanging on it.

pub mod activity;
pub mod config;
pub mod cost;
pub mod emulator;
pub mod invoke;
pub mod sign;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchyard_backends::{
    Backend, BackendError, BackendFuture, BackendKind, BackendSnapshot, InferenceJob,
    InferenceResult, ModelInfo, Timing,
};
// The event format, for clients that invoke the function themselves (the
// benchmarks call it directly to measure the gateway against).
pub use switchyard_lambda_function::{InvokeEvent, InvokeResponse};
use switchyard_models::{ModelRepository, ModelSession, SessionOptions, TensorSpecs};
use switchyard_protocol::InferRequest;
use tokio::sync::Semaphore;

pub use activity::LambdaStats;
pub use config::{LambdaConfig, LambdaFile, SYNC_PAYLOAD_LIMIT_BYTES};
use invoke::{InvokeOutcome, Invoker};

/// Why the backend could not start.
#[derive(Debug, thiserror::Error)]
#[error("lambda backend: {0}")]
pub struct StartError(pub String);

/// When the backend was found down and why.
#[derive(Debug, Clone)]
struct Down {
    until: Instant,
    reason: String,
}

/// The Lambda backend.
#[derive(Debug)]
pub struct LambdaBackend {
    config: Arc<LambdaConfig>,
    invoker: Invoker,
    models: BTreeMap<String, Arc<ModelInfo>>,
    permits: Arc<Semaphore>,
    activity: activity::Activity,
    down: Mutex<Option<Down>>,
    /// No pre-warm starts before this (one at a time, at most one per hold).
    next_prewarm: Mutex<Instant>,
}

impl LambdaBackend {
    /// Reads the served models' tensor specs from their ONNX files, sets
    /// up the Invoke client (signed with credentials from the environment
    /// when there are any; required for real AWS) and checks that the
    /// endpoint accepts connections: if not, the backend starts marked
    /// down rather than failing the gateway, and tries again later.
    pub async fn start(
        config: LambdaConfig,
        repository: &ModelRepository,
    ) -> Result<Self, StartError> {
        let signer = sign::Signer::from_env(&config.region);
        if signer.is_none() && !config.endpoint.overridden {
            return Err(StartError(format!(
                "no AWS credentials for region {}: set AWS_ACCESS_KEY_ID and \
                 AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary credentials), or \
                 set backends.lambda.endpoint to a local emulator",
                config.region
            )));
        }
        let models = read_model_infos(&config, repository).await?;
        let invoker = Invoker::new(config.invoke_url(), signer, config.connect_timeout)
            .map_err(StartError)?;
        let backend = Self {
            permits: Arc::new(Semaphore::new(
                usize::try_from(config.reserved_concurrency).unwrap_or(usize::MAX),
            )),
            activity: activity::Activity::new(&config),
            config: Arc::new(config),
            invoker,
            models,
            down: Mutex::new(None),
            next_prewarm: Mutex::new(Instant::now()),
        };
        if let Err(cause) = backend.probe().await {
            backend.mark_down(format!(
                "cannot reach the Lambda Invoke API at {}: {cause}",
                backend.config.endpoint.base_url
            ));
        }
        tracing::info!(backend = %backend.config.name, url = %backend.invoker.url(),
            models = ?backend.models.keys().collect::<Vec<_>>(),
            reserved_concurrency = backend.config.reserved_concurrency,
            signed = backend.invoker.is_signed(),
            "lambda backend started");
        Ok(backend)
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &LambdaConfig {
        &self.config
    }

    /// Invocations, cold starts, throttles and cost so far.
    pub fn stats(&self) -> LambdaStats {
        self.activity.stats(self.in_flight())
    }

    /// Whether a TCP connection to the endpoint can be opened.
    async fn probe(&self) -> Result<(), String> {
        let url = reqwest::Url::parse(&self.config.endpoint.base_url).map_err(|e| e.to_string())?;
        let host = url.host_str().ok_or("the endpoint has no host")?.to_owned();
        let port = url
            .port_or_known_default()
            .ok_or("the endpoint has no port")?;
        match tokio::time::timeout(
            self.config.connect_timeout,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error.to_string()),
            Err(_) => Err(format!(
                "no connection within {} ms",
                self.config.connect_timeout.as_millis()
            )),
        }
    }

    fn in_flight(&self) -> u64 {
        self.config
            .reserved_concurrency
            .saturating_sub(self.permits.available_permits() as u64)
    }

    fn down_reason(&self) -> Option<String> {
        let down = self.down.lock().ok()?;
        down.as_ref()
            .filter(|d| Instant::now() < d.until)
            .map(|d| d.reason.clone())
    }

    fn mark_down(&self, reason: String) {
        tracing::warn!(backend = %self.config.name, %reason, retry_after_ms = self.config.retry_down_after.as_millis() as u64, "lambda backend down");
        if let Ok(mut down) = self.down.lock() {
            *down = Some(Down {
                until: Instant::now() + self.config.retry_down_after,
                reason,
            });
        }
    }

    fn mark_up(&self) {
        if let Ok(mut down) = self.down.lock()
            && down.take().is_some()
        {
            tracing::info!(backend = %self.config.name, "lambda backend reachable again");
        }
    }

    fn error_unavailable(&self, reason: String) -> BackendError {
        BackendError::Unavailable {
            backend: self.config.name.clone(),
            reason,
        }
    }

    fn error_failed(&self, message: String) -> BackendError {
        BackendError::Failed {
            backend: self.config.name.clone(),
            message,
        }
    }

    async fn run(&self, job: InferenceJob) -> Result<InferenceResult, BackendError> {
        let started = Instant::now();
        let info = self
            .models
            .get(&job.model)
            .filter(|info| info.versions.contains_key(&job.version))
            .ok_or_else(|| BackendError::NotServed {
                backend: self.config.name.clone(),
                model: job.model.clone(),
                version: job.version,
            })?;
        if let Some(reason) = self.down_reason() {
            return Err(self.error_unavailable(reason));
        }
        let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
            self.activity
                .record_throttle(&job.model, "reserved_concurrency");
            return Err(BackendError::Overloaded {
                backend: self.config.name.clone(),
                reason: format!(
                    "its reserved concurrency of {} invocations is in use",
                    self.config.reserved_concurrency
                ),
            });
        };
        let payload = InvokeEvent::new(&info.name, job.version, &job.request)
            .and_then(|event| event.to_payload())
            .map_err(|e| self.error_failed(format!("cannot build the Lambda event: {e}")))?;
        drop(job.request);
        if payload.len() as u64 > self.config.payload_limit_bytes {
            return Err(self.error_failed(format!(
                "the Lambda event would be {} bytes, over the synchronous Invoke limit of {} \
                 bytes; send it to another backend",
                payload.len(),
                self.config.payload_limit_bytes
            )));
        }
        let remaining = job.deadline.saturating_duration_since(started);
        if remaining.is_zero() {
            return Err(BackendError::DeadlineExceeded {
                backend: self.config.name.clone(),
                waited: Duration::ZERO,
            });
        }
        let timeout = remaining.min(self.config.timeout);
        let outcome = self.invoker.invoke(payload, timeout).await;
        let latency = started.elapsed();
        drop(permit);
        let outcome = outcome.map_err(|e| self.error_failed(e))?;
        if !matches!(outcome, InvokeOutcome::Unreachable { .. }) {
            self.mark_up();
        }
        match outcome {
            InvokeOutcome::Response(body) => self.finish(&job.model, &body, latency),
            InvokeOutcome::FunctionError {
                kind,
                error_type,
                message,
            } => {
                self.activity.record_function_error(&job.model);
                Err(self.error_failed(format!(
                    "function {} failed ({kind}): {error_type}: {message}",
                    self.config.function_name
                )))
            }
            InvokeOutcome::Throttled { reason } => {
                self.activity.record_throttle(&job.model, "lambda");
                Err(BackendError::Overloaded {
                    backend: self.config.name.clone(),
                    reason: format!("Lambda throttled the invocation: {reason}"),
                })
            }
            InvokeOutcome::TimedOut => {
                if Instant::now() >= job.deadline {
                    Err(BackendError::DeadlineExceeded {
                        backend: self.config.name.clone(),
                        waited: latency,
                    })
                } else {
                    Err(self.error_failed(format!(
                        "function {} did not answer within its timeout of {} ms",
                        self.config.function_name,
                        self.config.timeout.as_millis()
                    )))
                }
            }
            InvokeOutcome::Unreachable { cause } => {
                let reason = format!(
                    "cannot reach the Lambda Invoke API at {}: {cause}",
                    self.config.endpoint.base_url
                );
                self.mark_down(reason.clone());
                Err(self.error_unavailable(reason))
            }
            InvokeOutcome::ServiceError {
                status,
                error_type,
                message,
            } => {
                let hint = match status {
                    401 | 403 => "; check the AWS credentials and the function's permissions",
                    404 => "; check backends.lambda.function_name and region",
                    _ => "",
                };
                Err(self.error_unavailable(format!(
                    "the Lambda service answered {status} {error_type}: {message}{hint}"
                )))
            }
        }
    }

    /// Decodes a successful invocation and accounts for it.
    fn finish(
        &self,
        model: &str,
        body: &[u8],
        latency: Duration,
    ) -> Result<InferenceResult, BackendError> {
        let response = InvokeResponse::from_payload(body).map_err(|e| {
            self.error_failed(format!("the function's response is not usable: {e}"))
        })?;
        let decoded = response.decode().map_err(|e| {
            self.error_failed(format!("the function's response is not usable: {e}"))
        })?;
        self.activity
            .record_invocation(model, &response.instance, &response.timing, latency);
        let compute = Duration::from_micros(response.timing.compute_us);
        Ok(InferenceResult {
            outputs: decoded.outputs,
            timing: Timing {
                // Everything that was not the model running: the network,
                // the Lambda service and, when cold, the instance's init.
                queue: latency.saturating_sub(compute),
                compute,
                batch_rows: 1,
            },
        })
    }
}

/// Tensor specs of every served model version, read from the ONNX files
/// with the model core (on a blocking thread: it loads the sessions).
async fn read_model_infos(
    config: &LambdaConfig,
    repository: &ModelRepository,
) -> Result<BTreeMap<String, Arc<ModelInfo>>, StartError> {
    let selected: Vec<_> = config
        .models
        .iter()
        .filter_map(|name| repository.models.get(name).cloned())
        .collect();
    tokio::task::spawn_blocking(move || {
        selected
            .into_iter()
            .map(|model| {
                let mut versions: BTreeMap<u64, Arc<TensorSpecs>> = BTreeMap::new();
                for version in &model.versions {
                    let session = ModelSession::load(
                        &model.config.name,
                        &version.path,
                        SessionOptions::default(),
                    )
                    .map_err(|e| StartError(e.to_string()))?;
                    versions.insert(version.version, Arc::clone(session.specs()));
                }
                let info = ModelInfo {
                    name: model.config.name.clone(),
                    platform: model.config.platform.clone(),
                    max_batch_size: model.config.batch_limit(),
                    versions,
                };
                Ok((info.name.clone(), Arc::new(info)))
            })
            .collect()
    })
    .await
    .map_err(|e| StartError(format!("reading the models failed: {e}")))?
}

impl Backend for LambdaBackend {
    fn details(&self) -> serde_json::Value {
        serde_json::to_value(self.stats()).unwrap_or(serde_json::Value::Null)
    }

    fn name(&self) -> &str {
        &self.config.name
    }

    fn kind(&self) -> BackendKind {
        BackendKind::Lambda
    }

    fn models(&self) -> Vec<Arc<ModelInfo>> {
        self.models.values().cloned().collect()
    }

    fn ready(&self) -> bool {
        self.down_reason().is_none()
    }

    fn snapshot(&self) -> BackendSnapshot {
        let unready_reason = self.down_reason();
        let capacity = self.config.reserved_concurrency;
        let warm = self.activity.warm_instances().min(capacity);
        BackendSnapshot {
            name: self.config.name.clone(),
            kind: BackendKind::Lambda,
            ready: unready_reason.is_none(),
            in_flight: self.in_flight(),
            queued: 0,
            concurrency: warm,
            capacity,
            headroom: capacity - warm,
            max_payload_bytes: Some(self.config.max_tensor_bytes()),
            unready_reason,
            cold_start_ms: self.activity.recent_cold_start_ms(),
            memory_mb: Some(self.activity.memory_mb()),
            shares_host_cpu: self.config.shares_host_cpu,
        }
    }

    fn infer(&self, job: InferenceJob) -> BackendFuture<'_, Result<InferenceResult, BackendError>> {
        Box::pin(self.run(job))
    }

    /// Warms function instances for `slots` concurrent requests: invokes the
    /// function that many times at once, minus the instances already warm or
    /// busy, with a request of zeros (a real inference, billed like one; a
    /// cold instance pays its init there instead of on a client's request).
    /// At most half the free reserved concurrency is used, so clients keep
    /// room, and a pre-warm starts at most once per `hold`.
    fn prewarm(&self, model: String, slots: u64, hold: Duration) -> BackendFuture<'_, u64> {
        Box::pin(async move {
            let Some(info) = self.models.get(&model) else {
                return 0;
            };
            let Some((&version, specs)) = info.versions.iter().next_back() else {
                return 0;
            };
            if self.down_reason().is_some() {
                return 0;
            }
            let busy_or_warm = self.activity.warm_instances().max(self.in_flight());
            let free = self.permits.available_permits() as u64 / 2;
            let missing = slots
                .min(self.config.reserved_concurrency)
                .saturating_sub(busy_or_warm)
                .min(free);
            if missing == 0 {
                return 0;
            }
            let now = Instant::now();
            match self.next_prewarm.lock() {
                Ok(mut next) if now >= *next => *next = now + hold.max(self.config.timeout),
                _ => return 0,
            }
            let Some(inputs) = specs
                .inputs
                .iter()
                .map(|spec| spec.zeros())
                .collect::<Option<Vec<_>>>()
            else {
                return 0;
            };
            let request = InferRequest {
                id: Some("switchyard-prewarm".into()),
                inputs,
                outputs: Vec::new(),
                binary_data_output: true,
                timeout_us: None,
            };
            tracing::info!(backend = %self.config.name, %model, slots, missing, "pre-warming function instances");
            let deadline = now + self.config.timeout;
            let warmed = futures_util::future::join_all((0..missing).map(|_| {
                self.run(InferenceJob {
                    model: model.clone(),
                    version,
                    request: request.clone(),
                    deadline,
                })
            }))
            .await
            .into_iter()
            .filter(Result::is_ok)
            .count() as u64;
            self.activity.record_prewarm(&model, missing, warmed);
            // The next pre-warm may start once this one is done.
            if let Ok(mut next) = self.next_prewarm.lock() {
                *next = (*next).min(Instant::now() + hold);
            }
            missing
        })
    }
}
