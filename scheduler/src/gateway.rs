//! The gateway's state and its data path, independent of HTTP:
//! validate → measure → place → dispatch with a deadline → record.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use metrics_exporter_prometheus::PrometheusHandle;
use switchyard_backend_container::ContainerBackend;
use switchyard_backend_lambda::LambdaBackend;
use switchyard_backends::local::LocalBackend;
use switchyard_backends::{Backend, BackendSnapshot, InferenceJob, ModelInfo, Timing};
use switchyard_models::TensorSpecs;
use switchyard_protocol::{InferRequest, InferResponse, validate_inputs};

use crate::config::{Config, ServerConfig};
use crate::error::GatewayError;
use crate::measure::RateMeter;
use crate::policy::{Ordered, Policy, RequestFeatures};
use crate::stats::{Outcome, SeriesKey, Stats};

/// A model the gateway serves and the backends that serve it.
#[derive(Debug)]
pub struct CatalogModel {
    pub info: Arc<ModelInfo>,
    /// Indices into the gateway's backends.
    pub backends: Vec<usize>,
}

/// A successful inference and how it was served.
#[derive(Debug)]
pub struct Served {
    pub response: InferResponse,
    pub backend: String,
    pub placement: String,
    pub timing: Timing,
}

/// Everything a running gateway holds.
#[derive(Debug)]
pub struct Gateway {
    pub server: ServerConfig,
    backends: Vec<Arc<dyn Backend>>,
    catalog: BTreeMap<String, CatalogModel>,
    policy: Box<dyn Policy>,
    rates: RateMeter,
    stats: Stats,
    prometheus: PrometheusHandle,
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
        Ok(Self::with_backends(config, backends, prometheus))
    }

    /// Builds a gateway over backends that are already running.
    pub fn with_backends(
        config: &Config,
        backends: Vec<Arc<dyn Backend>>,
        prometheus: PrometheusHandle,
    ) -> Self {
        let mut catalog: BTreeMap<String, CatalogModel> = BTreeMap::new();
        for (index, backend) in backends.iter().enumerate() {
            for info in backend.models() {
                catalog
                    .entry(info.name.clone())
                    .or_insert_with(|| CatalogModel {
                        info: Arc::clone(&info),
                        backends: Vec::new(),
                    })
                    .backends
                    .push(index);
            }
        }
        Self {
            server: config.server.clone(),
            backends,
            catalog,
            policy: Box::new(Ordered {
                order: config.placement.order.clone(),
            }),
            rates: RateMeter::new(config.placement.rate_window),
            stats: Stats::default(),
            prometheus,
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
        !self.catalog.is_empty() && self.backends.iter().all(|b| b.ready())
    }

    /// Releases what the backends started (containers, ...). Called once the
    /// server has drained.
    pub async fn shutdown(&self) {
        for backend in &self.backends {
            backend.shutdown().await;
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
        let model_label = name.to_owned();
        let result = self
            .place_and_run(name, version, request, received, timeout)
            .await;
        let (backend, outcome) = match &result {
            Ok(served) => (served.backend.clone(), Outcome::Success),
            Err((backend, error)) => (backend.clone(), error.outcome()),
        };
        let elapsed = received.elapsed();
        self.stats.record(
            &SeriesKey {
                backend: backend.clone(),
                model: model_label.clone(),
                policy: self.policy.name().to_owned(),
            },
            outcome,
            elapsed,
        );
        metrics::counter!("switchyard_requests_total", "model" => model_label.clone(), "backend" => backend.clone(), "outcome" => outcome.as_str())
            .increment(1);
        if outcome == Outcome::Success {
            metrics::histogram!("switchyard_request_duration_seconds", "model" => model_label.clone(), "backend" => backend)
                .record(elapsed.as_secs_f64());
            metrics::histogram!("switchyard_request_payload_bytes", "model" => model_label)
                .record(payload_bytes as f64);
        }
        result.map_err(|(_, error)| error)
    }

    /// The data path; errors carry the backend label they are recorded under.
    async fn place_and_run(
        &self,
        name: &str,
        version: Option<&str>,
        request: InferRequest,
        received: Instant,
        timeout: Duration,
    ) -> Result<Served, (String, GatewayError)> {
        let none = |e: GatewayError| ("none".to_owned(), e);
        let (model, version, specs) = self.resolve(name, version).map_err(none)?;
        validate_inputs(
            &specs.inputs,
            &specs.outputs,
            model.info.max_batch_size,
            &request,
        )
        .map_err(|e| none(e.into()))?;
        let features = RequestFeatures {
            model: name,
            payload_bytes: request.payload_bytes() as u64,
            rate: self.rates.record(name, received),
        };
        let snapshots: Vec<BackendSnapshot> = model
            .backends
            .iter()
            .map(|&i| self.backends[i].snapshot())
            .collect();
        let decision = self.policy.place(&features, &snapshots).ok_or_else(|| {
            none(GatewayError::NoBackend {
                model: name.to_owned(),
            })
        })?;
        let backend = &self.backends[model.backends[decision.backend]];
        let label = backend.name().to_owned();
        let deadline = received + timeout;
        let wanted: Vec<String> = request.outputs.iter().map(|o| o.name.clone()).collect();
        let id = request.id.clone();
        let job = InferenceJob {
            model: name.to_owned(),
            version,
            request,
            deadline,
        };
        let result = tokio::time::timeout_at(deadline.into(), backend.infer(job)).await;
        let result = match result {
            Ok(Ok(result)) => result,
            Ok(Err(error)) => return Err((label, error.into())),
            Err(_) => {
                return Err((
                    label.clone(),
                    GatewayError::Deadline {
                        backend: label,
                        deadline_ms: timeout.as_millis(),
                    },
                ));
            }
        };
        let outputs = if wanted.is_empty() {
            result.outputs
        } else {
            result
                .outputs
                .into_iter()
                .filter(|t| wanted.contains(&t.name))
                .collect()
        };
        Ok(Served {
            response: InferResponse {
                model_name: name.to_owned(),
                model_version: Some(version.to_string()),
                id,
                outputs,
            },
            backend: label,
            placement: decision.reason,
            timing: result.timing,
        })
    }

    /// The stats report as served at `/v2/switchyard/stats`.
    pub fn stats_report(&self) -> serde_json::Value {
        let report = self.stats.report();
        serde_json::json!({
            "uptime_seconds": report.uptime_seconds,
            "policy": self.policy.name(),
            "backends": report.backends,
            "series": report.series,
            "backend_state": self.snapshots(),
        })
    }

    /// Prometheus text, with backend gauges refreshed first.
    pub fn render_metrics(&self) -> String {
        for snapshot in self.snapshots() {
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
