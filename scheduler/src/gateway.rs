//! The gateway's state and its data path, independent of HTTP:
//! validate → measure → place → dispatch with a deadline → record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use metrics_exporter_prometheus::PrometheusHandle;
use switchyard_backend_container::ContainerBackend;
use switchyard_backend_lambda::LambdaBackend;
use switchyard_backends::local::LocalBackend;
use switchyard_backends::{
    Backend, BackendError, BackendSnapshot, InferenceJob, ModelInfo, Timing,
};
use switchyard_models::TensorSpecs;
use switchyard_protocol::{InferRequest, InferResponse, validate_inputs};

use crate::config::{Config, ServerConfig};
use crate::decision_log::{DecisionLog, DecisionLogCounts, DecisionRecord};
use crate::error::GatewayError;
use crate::host_cpu::HostCpu;
use crate::measure::RateMeter;
use crate::outlier::{Admission, Answer, OutlierDetector};
use crate::placement::{
    AnswerTime, Observations, Policies, PolicySource, Random, ReloadError, RetryBudget,
};
use crate::policy::{BackendView, Policy, RequestFeatures};
use crate::prewarm::{self, Prewarmer};
use crate::stats::{Outcome, SeriesKey, SeriesRecorder, Stats};
use crate::throttle::Throttle;

/// How long shutdown waits for the decision log's writer to write out what
/// is queued.
const DECISION_LOG_FLUSH: Duration = Duration::from_secs(5);

/// A model the gateway serves and the backends that serve it.
#[derive(Debug)]
pub struct CatalogModel {
    pub info: Arc<ModelInfo>,
    /// Indices into the gateway's backends.
    pub backends: Vec<usize>,
    /// The stats and metrics recorder of each series of this model, by
    /// backend index (`None` when none was chosen) and policy: found
    /// without building a key.
    recorders: DashMap<(Option<usize>, &'static str), Arc<SeriesRecorder>>,
}

/// A successful inference and how it was served.
#[derive(Debug)]
pub struct Served {
    pub response: InferResponse,
    pub backend: String,
    pub placement: String,
    pub timing: Timing,
}

/// How one attempt ended, for stats and the decision log.
struct Attempted {
    /// The backend's index and name; `None` and "none" before one is chosen.
    index: Option<usize>,
    backend: String,
    policy: &'static str,
    reason: String,
    attempts: u32,
}

impl Attempted {
    /// Under `policy`, before any backend is chosen.
    fn none(policy: &'static str) -> Self {
        Self {
            index: None,
            backend: "none".into(),
            policy,
            reason: String::new(),
            attempts: 0,
        }
    }
}

/// An attempt on a backend until its answer is in. If the request is
/// dropped first (its client went away), the outlier detector hears a
/// neutral answer, which proves nothing about the backend but frees its
/// probe slot: a backend back from ejection takes one probe at a time, and
/// a probe whose client gave up would otherwise hold that slot, and keep
/// the backend ejected, for good.
struct Unanswered<'a> {
    outliers: &'a OutlierDetector,
    index: usize,
    answered: bool,
}

impl Drop for Unanswered<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.outliers
                .record(self.index, Answer::Neutral, Instant::now());
        }
    }
}

/// A request from the start of [`Gateway::infer`] to its answer. If the
/// request's future is dropped before that (the HTTP server drops it when
/// the client closes its connection, as a client does at its own timeout),
/// the request is recorded as `cancelled` in the series it had reached:
/// without this, requests their clients gave up on would be in no count.
struct Pending<'a> {
    gateway: &'a Gateway,
    model: &'a str,
    payload_bytes: u64,
    received: Instant,
    /// The request's random draw (placement, decision-log sampling).
    random: u64,
    /// The model's request rate over the window as measured for this
    /// request; 0 until measured.
    rate_per_second: f64,
    /// The host's CPU busy share placement read for it, if any.
    host_cpu_busy: Option<f64>,
    attempted: Attempted,
    /// Where an answered request's time went in its backend.
    timing: Option<Timing>,
    finished: bool,
}

impl Pending<'_> {
    /// Records how the request ended: its series' stats and metrics, and
    /// the decision log when the request is sampled.
    fn finish(&mut self, outcome: Outcome) {
        self.finished = true;
        let elapsed = self.received.elapsed();
        let gateway = self.gateway;
        gateway
            .recorder(self.model, &self.attempted)
            .record(outcome, elapsed, self.payload_bytes);
        let Some(log) = gateway
            .decision_log
            .as_ref()
            .filter(|log| log.sampled(self.random))
        else {
            return;
        };
        let attempted = &self.attempted;
        log.write(DecisionRecord {
            unix_ms: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis()),
            model: self.model.to_owned(),
            payload_bytes: self.payload_bytes,
            rate_per_second: self.rate_per_second,
            host_cpu_busy: self.host_cpu_busy,
            policy: attempted.policy,
            backend: attempted.backend.clone(),
            reason: attempted.reason.clone(),
            attempts: attempted.attempts,
            outcome: outcome.as_str(),
            latency_ms: elapsed.as_secs_f64() * 1000.0,
            queue_ms: self.timing.map(|t| t.queue.as_secs_f64() * 1000.0),
            compute_ms: self.timing.map(|t| t.compute.as_secs_f64() * 1000.0),
            batch_rows: self.timing.map(|t| t.batch_rows),
        });
    }
}

impl Drop for Pending<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.finish(Outcome::Cancelled);
        }
    }
}

/// Everything a running gateway holds.
#[derive(Debug)]
pub struct Gateway {
    pub server: ServerConfig,
    backends: Vec<Arc<dyn Backend>>,
    catalog: BTreeMap<String, CatalogModel>,
    policies: Policies,
    observations: Observations,
    retry_budget: RetryBudget,
    outliers: OutlierDetector,
    throttle: Throttle,
    decision_log: Option<DecisionLog>,
    random: Random,
    reload_interval: Duration,
    shut_down: std::sync::atomic::AtomicBool,
    rates: RateMeter,
    prewarmer: Prewarmer,
    stats: Stats,
    prometheus: PrometheusHandle,
    host_cpu: HostCpu,
}

/// Why the gateway could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Model(#[from] switchyard_models::ModelError),
    #[error("cannot set up metrics: {0}")]
    Metrics(String),
    #[error("a backend failed while starting: {0}")]
    Join(String),
    #[error("{0}")]
    Backend(String),
    #[error("placement policies: {0}")]
    Policies(#[from] ReloadError),
    #[error("cannot open the decision log: {0}")]
    DecisionLog(std::io::Error),
}

impl Gateway {
    /// Starts every configured backend and builds the model catalog from
    /// what they serve. Model loading runs on a blocking thread.
    pub async fn start(config: &Config) -> Result<Self, StartError> {
        let prometheus = crate::telemetry::prometheus().map_err(StartError::Metrics)?;
        let mut backends: Vec<Arc<dyn Backend>> = Vec::new();
        if let Some(local) = config.local.clone() {
            let repository = config.repository.clone();
            let local =
                tokio::task::spawn_blocking(move || LocalBackend::start(&local, &repository))
                    .await
                    .map_err(|e| StartError::Join(e.to_string()))??;
            backends.push(Arc::new(local));
        }
        if let Some(container) = config.container.clone() {
            let container = ContainerBackend::start(container, &config.repository)
                .await
                .map_err(|e| StartError::Backend(e.to_string()))?;
            backends.push(Arc::new(container));
        }
        if let Some(lambda) = config.lambda.clone() {
            let lambda = LambdaBackend::start(lambda, &config.repository)
                .await
                .map_err(|e| StartError::Backend(e.to_string()))?;
            backends.push(Arc::new(lambda));
        }
        Self::with_backends(config, backends, prometheus)
    }

    /// Builds a gateway over backends that are already running.
    pub fn with_backends(
        config: &Config,
        backends: Vec<Arc<dyn Backend>>,
        prometheus: PrometheusHandle,
    ) -> Result<Self, StartError> {
        let mut catalog: BTreeMap<String, CatalogModel> = BTreeMap::new();
        for (index, backend) in backends.iter().enumerate() {
            for info in backend.models() {
                catalog
                    .entry(info.name.clone())
                    .or_insert_with(|| CatalogModel {
                        info: Arc::clone(&info),
                        backends: Vec::new(),
                        recorders: DashMap::new(),
                    })
                    .backends
                    .push(index);
            }
        }
        let placement = &config.placement;
        let names: Vec<String> = backends.iter().map(|b| b.name().to_owned()).collect();
        let policies = Policies::new(PolicySource::new(
            placement.policy_file.clone(),
            placement.inline.clone(),
            names,
            config.repository.models.keys().cloned().collect(),
        ))?;
        let decision_log = placement
            .decision_log
            .as_deref()
            .map(|path| DecisionLog::open(path, placement.decision_log_sample))
            .transpose()
            .map_err(StartError::DecisionLog)?;
        let outliers = OutlierDetector::new(placement.outlier, backends.len());
        let throttle = Throttle::new(placement.throttle, catalog.keys().cloned());
        let prewarmer = Prewarmer::new(backends.len(), prewarm::CHECK_INTERVAL);
        Ok(Self {
            prewarmer,
            outliers,
            throttle,
            server: config.server.clone(),
            backends,
            catalog,
            policies,
            observations: Observations::default(),
            retry_budget: RetryBudget::new(
                placement.retry_budget_ratio,
                placement.retry_floor_per_second,
                Instant::now(),
            ),
            decision_log,
            random: Random::default(),
            reload_interval: placement.reload_interval,
            shut_down: std::sync::atomic::AtomicBool::new(false),
            rates: RateMeter::new(placement.rate_window, Instant::now()),
            stats: Stats::default(),
            prometheus,
            host_cpu: HostCpu::from_proc(),
        })
    }

    /// Measures the host's CPU with `host_cpu` instead of `/proc/stat`
    /// (tests; embedders that measure it elsewhere).
    pub fn with_host_cpu(mut self, host_cpu: HostCpu) -> Self {
        self.host_cpu = host_cpu;
        self
    }

    /// The policies in force and their reload control.
    pub fn policies(&self) -> &Policies {
        &self.policies
    }

    /// Watches the policy file and reloads it when it changes, until
    /// `stop` resolves.
    pub async fn watch_policies(&self, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                () = tokio::time::sleep(self.reload_interval) => self.policies.reload_if_changed(),
                () = &mut stop => return,
            }
        }
    }

    /// The served models, by name.
    pub fn catalog(&self) -> &BTreeMap<String, CatalogModel> {
        &self.catalog
    }

    /// A model and the version a request names (or the latest).
    pub fn resolve(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<(&CatalogModel, u64, Arc<TensorSpecs>), GatewayError> {
        let model = self
            .catalog
            .get(name)
            .ok_or_else(|| GatewayError::UnknownModel {
                name: name.to_owned(),
            })?;
        let unknown_version = || GatewayError::UnknownVersion {
            name: name.to_owned(),
            version: version.unwrap_or("latest").to_owned(),
            available: model.info.versions.keys().copied().collect(),
        };
        let number = match version {
            Some(v) => v.parse::<u64>().map_err(|_| unknown_version())?,
            None => model.info.latest_version().ok_or_else(unknown_version)?,
        };
        let specs = model
            .info
            .versions
            .get(&number)
            .ok_or_else(unknown_version)?;
        Ok((model, number, Arc::clone(specs)))
    }

    /// Whether any backend serving `model` is ready.
    pub fn model_ready(&self, model: &CatalogModel) -> bool {
        model.backends.iter().any(|&i| self.backends[i].ready())
    }

    /// Whether the gateway can serve: every backend ready and some model.
    pub fn ready(&self) -> bool {
        self.readiness().0
    }

    /// [`Gateway::ready`], with the backend snapshots it was decided on
    /// (for `/v2/health/ready`'s body).
    pub fn readiness(&self) -> (bool, Vec<BackendSnapshot>) {
        let snapshots = self.snapshots();
        let ready = !self.catalog.is_empty() && snapshots.iter().all(|s| s.ready);
        (ready, snapshots)
    }

    /// Releases what the backends started (containers, ...), once; `run`
    /// calls it after draining, and later calls do nothing.
    pub async fn shutdown(&self) {
        if self
            .shut_down
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        for backend in &self.backends {
            backend.shutdown().await;
        }
        if let Some(log) = &self.decision_log {
            let flushed = log.flush(DECISION_LOG_FLUSH).await;
            let DecisionLogCounts {
                written,
                dropped,
                failed,
            } = log.counts();
            if flushed {
                tracing::info!(written, dropped, failed, "decision log written out");
            } else {
                tracing::warn!(written, dropped, failed, limit = ?DECISION_LOG_FLUSH,
                    "the decision log's writer did not catch up before exit; its last records may be lost");
            }
        }
    }

    /// Snapshots of every backend (for stats and metrics).
    pub fn snapshots(&self) -> Vec<BackendSnapshot> {
        self.backends.iter().map(|b| b.snapshot()).collect()
    }

    /// The effective deadline: the client's, capped, or the default.
    pub fn deadline_for(&self, requested: Option<Duration>) -> Duration {
        requested.map_or(self.server.request_timeout, |d| {
            d.min(self.server.max_request_timeout)
        })
    }

    /// Runs one decoded request end to end and records how it went.
    pub async fn infer(
        &self,
        name: &str,
        version: Option<&str>,
        request: InferRequest,
        received: Instant,
        timeout: Duration,
    ) -> Result<Served, GatewayError> {
        let payload_bytes = request.payload_bytes() as u64;
        let random = self.random.next();
        let mut pending = Pending {
            gateway: self,
            model: name,
            payload_bytes,
            received,
            random,
            rate_per_second: 0.0,
            host_cpu_busy: None,
            // Its policy is set by `place_and_run` before its first await,
            // or for a shed.
            attempted: Attempted::none("none"),
            timing: None,
            finished: false,
        };
        let result = match self.throttle.admit(name, random, received) {
            Some(probability) => {
                metrics::counter!("switchyard_shed_requests_total", "model" => name.to_owned())
                    .increment(1);
                let error = GatewayError::Shed {
                    model: name.to_owned(),
                    percent: probability * 100.0,
                };
                pending.attempted.policy = "shed";
                pending.attempted.reason = error.to_string();
                Err(error)
            }
            None => {
                self.place_and_run(&mut pending, version, request, timeout)
                    .await
            }
        };
        let outcome = match &result {
            Ok(served) => {
                pending.timing = Some(served.timing);
                Outcome::Success
            }
            Err(error) => error.outcome(),
        };
        if matches!(
            &result,
            Err(e) if !matches!(e, GatewayError::Shed { .. })
                && matches!(outcome, Outcome::Overloaded | Outcome::Unavailable | Outcome::Timeout)
        ) {
            self.throttle.rejected(name, Instant::now());
        }
        pending.finish(outcome);
        result
    }

    /// The stats and metrics recorder of the series a request ended in.
    fn recorder(&self, model: &str, attempted: &Attempted) -> Arc<SeriesRecorder> {
        let catalog = self.catalog.get(model);
        let slot = (attempted.index, attempted.policy);
        if let Some(recorder) = catalog.and_then(|m| m.recorders.get(&slot)) {
            return Arc::clone(&recorder);
        }
        let recorder = self.stats.series(&SeriesKey {
            backend: attempted.backend.clone(),
            model: model.to_owned(),
            policy: attempted.policy.to_owned(),
        });
        if let Some(catalog) = catalog {
            catalog.recorders.insert(slot, Arc::clone(&recorder));
        }
        recorder
    }

    /// Validates, places, and runs the request, failing over to the policy's
    /// next choice when a backend refuses (overloaded, unavailable), within
    /// the deadline and the retry budget. What it tries is kept in
    /// `pending.attempted` as it goes, for the stats of a request dropped
    /// on the way.
    async fn place_and_run(
        &self,
        pending: &mut Pending<'_>,
        version: Option<&str>,
        request: InferRequest,
        timeout: Duration,
    ) -> Result<Served, GatewayError> {
        let (name, received, random) = (pending.model, pending.received, pending.random);
        let attempted = &mut pending.attempted;
        let policies = self.policies.current();
        let policy = policies.for_model(name);
        attempted.policy = policy.name();
        let (model, version, specs) = match self.resolve(name, version) {
            Ok(resolved) => resolved,
            Err(error) => return Err(error),
        };
        if let Err(error) = validate_inputs(
            &specs.inputs,
            &specs.outputs,
            model.info.max_batch_size,
            &request,
        ) {
            return Err(error.into());
        }
        let rate = self.rates.record(name, received);
        pending.rate_per_second = rate.window_per_second;
        let mut features = RequestFeatures {
            model: name,
            payload_bytes: request.payload_bytes() as u64,
            rate,
            random,
            host_cpu_busy: self.host_cpu.busy(received),
            refused_on_host: false,
        };
        pending.host_cpu_busy = features.host_cpu_busy;
        self.retry_budget.deposit();
        let deadline = received + timeout;
        let mut refused: Vec<usize> = Vec::new();
        let mut failover_note = String::new();
        let mut last_error = None;
        let mut request = Some(request);
        loop {
            let candidates: Vec<usize> = model
                .backends
                .iter()
                .copied()
                .filter(|i| !refused.contains(i))
                .collect();
            let now = Instant::now();
            let admissions: Vec<Admission> = candidates
                .iter()
                .map(|&i| self.outliers.admission(i, now))
                .collect();
            // With every backend of the model ejected (the candidates and
            // those that refused this request), place as if none were
            // (Envoy's panic mode): refusing all serves no one.
            let ejected = |admission: &Admission| matches!(admission, Admission::Ejected(_));
            let panic = self.outliers.panic_when_all_ejected()
                && !admissions.is_empty()
                && admissions.iter().all(ejected)
                && refused
                    .iter()
                    .all(|&i| ejected(&self.outliers.admission(i, now)));
            let views: Vec<BackendView> = candidates
                .iter()
                .zip(admissions)
                .map(|(&i, admission)| {
                    let mut snapshot = self.backends[i].snapshot_for(name);
                    if !panic && let Admission::Ejected(reason) = admission {
                        snapshot.ready = false;
                        snapshot.unready_reason = Some(reason);
                    }
                    BackendView {
                        snapshot,
                        observed: self.observations.get(i, name, now),
                    }
                })
                .collect();
            if refused.is_empty() {
                self.prewarm(policy.as_ref(), &features, &views, &candidates, now);
            }
            let Some(decision) = policy.place(&features, &views) else {
                let error = last_error.unwrap_or_else(|| {
                    let detail = unfit_detail(&views, &features);
                    // A full backend makes this an overload (429, retry
                    // later), not a missing backend.
                    let full = views.iter().any(|v| v.can_take(&features) && !v.has_room());
                    if full {
                        GatewayError::AllBusy {
                            model: name.to_owned(),
                            detail,
                        }
                    } else {
                        GatewayError::NoBackend {
                            model: name.to_owned(),
                            detail,
                        }
                    }
                });
                // With nothing tried, the log and stats say why nothing was.
                if attempted.attempts == 0 {
                    attempted.reason = format!("{}: {error}", policy.name());
                }
                return Err(error);
            };
            let index = candidates[decision.backend];
            let on_host = views[decision.backend].snapshot.shares_host_cpu;
            // A backend back from ejection takes one probe request at a
            // time; a request that loses the race places again without it.
            if !panic && !self.outliers.claim_probe(index, now) {
                refused.push(index);
                continue;
            }
            let mut unanswered = Unanswered {
                outliers: &self.outliers,
                index,
                answered: false,
            };
            let backend = &self.backends[index];
            attempted.index = Some(index);
            attempted.backend = backend.name().to_owned();
            attempted.reason = format!("{}{failover_note}", decision.reason);
            if panic {
                attempted
                    .reason
                    .push_str("; every backend of the model is ejected: placed anyway");
                metrics::counter!("switchyard_outlier_panic_requests_total", "model" => name.to_owned())
                    .increment(1);
            }
            attempted.attempts += 1;
            // Keep a copy for a possible failover only when one could happen.
            let Some(current) = request.take() else {
                return Err(GatewayError::NoBackend {
                    model: name.to_owned(),
                    detail: String::new(),
                });
            };
            if candidates.len() > 1 {
                request = Some(current.clone());
            }
            let wanted: Vec<String> = current.outputs.iter().map(|o| o.name.clone()).collect();
            let id = current.id.clone();
            let job = InferenceJob {
                model: name.to_owned(),
                version,
                request: current,
                deadline,
            };
            let started = Instant::now();
            let outcome = tokio::time::timeout_at(deadline.into(), backend.infer(job)).await;
            // Every path from here records the answer with the outlier
            // detector.
            unanswered.answered = true;
            let error = match outcome {
                Ok(Ok(result)) => {
                    self.outliers.record(index, Answer::Success, Instant::now());
                    // The policies' service-time estimate leaves out what
                    // the backend says the request waited in its queue.
                    let time = AnswerTime {
                        latency: started.elapsed(),
                        queue: result.timing.queue,
                    };
                    self.observations
                        .record(index, name, Some(time), false, Instant::now());
                    let outputs = if wanted.is_empty() {
                        result.outputs
                    } else {
                        result
                            .outputs
                            .into_iter()
                            .filter(|t| wanted.contains(&t.name))
                            .collect()
                    };
                    let served = Served {
                        response: InferResponse {
                            model_name: name.to_owned(),
                            model_version: Some(version.to_string()),
                            id,
                            outputs,
                        },
                        backend: attempted.backend.clone(),
                        placement: attempted.reason.clone(),
                        timing: result.timing,
                    };
                    return Ok(served);
                }
                Ok(Err(error)) => GatewayError::from(error),
                Err(_) => GatewayError::Deadline {
                    backend: attempted.backend.clone(),
                    deadline_ms: timeout.as_millis(),
                },
            };
            self.observations
                .record(index, name, None, true, Instant::now());
            let answer = match &error {
                GatewayError::Backend(
                    BackendError::Overloaded { .. } | BackendError::NotServed { .. },
                ) => Answer::Neutral,
                GatewayError::Backend(BackendError::DeadlineExceeded { .. })
                | GatewayError::Deadline { .. } => Answer::Timeout {
                    held: started.elapsed(),
                },
                _ => Answer::Failure,
            };
            if let Some(why) = self.outliers.record(index, answer, Instant::now()) {
                tracing::warn!(backend = %attempted.backend, reason = %why, "backend ejected");
                metrics::counter!("switchyard_backend_ejections_total", "backend" => attempted.backend.clone())
                    .increment(1);
            }
            let refusal = matches!(
                &error,
                GatewayError::Backend(
                    BackendError::Overloaded { .. }
                        | BackendError::Unavailable { .. }
                        | BackendError::NotServed { .. }
                )
            );
            let can_retry = refusal
                && request.is_some()
                && Instant::now() < deadline
                && self.retry_budget.try_withdraw(Instant::now());
            if !can_retry {
                return Err(error);
            }
            tracing::debug!(model = name, backend = %attempted.backend, %error, "failing over");
            failover_note.push_str(&format!(
                "; failover from {} ({})",
                attempted.backend,
                error.status().as_u16()
            ));
            metrics::counter!("switchyard_failovers_total", "model" => name.to_owned(), "backend" => attempted.backend.clone())
                .increment(1);
            refused.push(index);
            if on_host
                && matches!(
                    &error,
                    GatewayError::Backend(BackendError::Overloaded { .. })
                )
            {
                features.refused_on_host = true;
            }
            last_error = Some(error);
        }
    }

    /// Asks the policy, at most once per check interval per model, which
    /// backends to warm ahead of demand, and starts those pre-warms.
    fn prewarm(
        &self,
        policy: &dyn Policy,
        features: &RequestFeatures<'_>,
        views: &[BackendView],
        candidates: &[usize],
        now: Instant,
    ) {
        if !self.prewarmer.due(features.model, now) {
            return;
        }
        for advice in policy.prewarm(features, views) {
            if let Some(&index) = candidates.get(advice.backend) {
                self.prewarmer
                    .launch(index, &self.backends[index], features.model, &advice);
            }
        }
    }

    /// The stats report as served at `/v2/switchyard/stats`.
    pub fn stats_report(&self) -> serde_json::Value {
        let report = self.stats.report();
        serde_json::json!({
            "uptime_seconds": report.uptime_seconds,
            // The async runtime's worker threads (`server.io_threads`).
            "io_threads": tokio::runtime::Handle::try_current()
                .ok()
                .map(|runtime| runtime.metrics().num_workers()),
            // The host's recent CPU busy share (host_cpu.rs), as
            // placement last read it (`null` where not measured).
            "host_cpu_busy": self.host_cpu.last(),
            "policies": self.policies.describe(),
            "policy_reloads": self.policies.reload_count(),
            // Where the decision log is and what became of its records
            // (`null` without one).
            "decision_log": self.decision_log.as_ref().map(DecisionLog::report),
            "backends": report.backends,
            "series": report.series,
            "backend_state": self.snapshots(),
            "ejection": self
                .backends
                .iter()
                .zip(self.outliers.states(Instant::now()))
                .map(|(b, state)| (b.name().to_owned(), serde_json::json!(state)))
                .collect::<serde_json::Map<_, _>>(),
            "prewarm": self
                .backends
                .iter()
                .zip(self.prewarmer.records(Instant::now()))
                .map(|(b, record)| (b.name().to_owned(), serde_json::json!(record)))
                .collect::<serde_json::Map<_, _>>(),
            "load_shedding": self
                .throttle
                .states(Instant::now())
                .into_iter()
                .map(|(model, state)| (model, serde_json::json!(state)))
                .collect::<serde_json::Map<_, _>>(),
            "backend_details": self
                .backends
                .iter()
                .map(|b| (b.name().to_owned(), b.details()))
                .filter(|(_, d)| !d.is_null())
                .collect::<serde_json::Map<_, _>>(),
        })
    }

    /// Prometheus text, with backend gauges refreshed first.
    pub fn render_metrics(&self) -> String {
        let ejections = self.outliers.states(Instant::now());
        for (snapshot, ejection) in self.snapshots().into_iter().zip(ejections) {
            metrics::gauge!("switchyard_backend_ejected", "backend" => snapshot.name.clone())
                .set(if ejection.ejected { 1.0 } else { 0.0 });
            let backend = snapshot.name.clone();
            metrics::gauge!("switchyard_backend_in_flight_requests", "backend" => backend.clone())
                .set(snapshot.in_flight as f64);
            metrics::gauge!("switchyard_backend_queued_requests", "backend" => backend.clone())
                .set(snapshot.queued as f64);
            metrics::gauge!("switchyard_backend_ready", "backend" => backend)
                .set(if snapshot.ready { 1.0 } else { 0.0 });
        }
        self.prometheus.render()
    }
}

/// Why no candidate could take the request, for the client's error.
fn unfit_detail(views: &[BackendView], request: &RequestFeatures<'_>) -> String {
    views
        .iter()
        .map(|v| {
            let why = if !v.snapshot.ready {
                v.snapshot
                    .unready_reason
                    .clone()
                    .unwrap_or_else(|| "not ready".into())
            } else if let Some(max) = v
                .snapshot
                .max_payload_bytes
                .filter(|&m| request.payload_bytes > m)
            {
                format!(
                    "payload of {} bytes exceeds its limit of {max} bytes",
                    request.payload_bytes
                )
            } else if !v.has_room() {
                format!(
                    "full, {} of {} requests in flight",
                    v.snapshot.in_flight, v.snapshot.capacity
                )
            } else {
                "refused by the policy".into()
            };
            format!("{}: {why}", v.snapshot.name)
        })
        .collect::<Vec<_>>()
        .join("; ")
}
