//! The profile file: what the simulator knows about each backend and model,
//! measured on a real machine (`switchyard-bench profile` writes one;
//! `config/profiles/default.toml` documents every key).
//!
//! It mirrors the gateway config: `[gateway]` holds the request deadline,
//! rate window, retry budget and the gateway's own overhead;
//! `[models.NAME]` the payload size and largest batch of each model;
//! `[backends.local]`, `[backends.container]` and `[backends.lambda]` the
//! capacity, cold start and prices of each tier, and under
//! `[backends.KIND.models.NAME]` the latency of that model on that tier as
//! p50/p99 per batch size. A tier serves the models listed under it.
//!
//! Parsing is strict (unknown keys are errors) and every range check names
//! the key path and the allowed range.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use switchyard_backends::BackendKind;
use switchyard_models::toml_config::{TomlError, from_toml};

use super::dist::{BatchLatency, LogNormal};

/// The profile that ships with Switchyard (`config/profiles/default.toml`).
pub const DEFAULT_PROFILE: &str = include_str!("../../../config/profiles/default.toml");

/// A percentile pair in milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Latency of a batch of `batch` rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchPoint {
    pub batch: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// `[gateway]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayFile {
    #[serde(default = "default_timeout_ms")]
    pub request_timeout_ms: u64,
    #[serde(default = "default_rate_window_ms")]
    pub rate_window_ms: u64,
    #[serde(default = "default_retry_ratio")]
    pub retry_budget_ratio: f64,
    #[serde(default = "default_retry_floor")]
    pub retry_floor_per_second: f64,
    /// Time the gateway adds around the backend (HTTP, decoding, encoding).
    #[serde(default = "default_overhead")]
    pub overhead: Percentiles,
}

impl Default for GatewayFile {
    fn default() -> Self {
        Self {
            request_timeout_ms: default_timeout_ms(),
            rate_window_ms: default_rate_window_ms(),
            retry_budget_ratio: default_retry_ratio(),
            retry_floor_per_second: default_retry_floor(),
            overhead: default_overhead(),
        }
    }
}

fn default_timeout_ms() -> u64 {
    30_000
}
fn default_rate_window_ms() -> u64 {
    10_000
}
fn default_retry_ratio() -> f64 {
    0.2
}
fn default_retry_floor() -> f64 {
    10.0
}
fn default_overhead() -> Percentiles {
    Percentiles {
        p50_ms: 0.6,
        p99_ms: 0.9,
    }
}

/// `[models.NAME]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelFile {
    /// Bytes of input tensor data in one request (what placement sees).
    pub payload_bytes: u64,
    /// Largest batch the local backend forms.
    #[serde(default = "one_u64")]
    pub max_batch_size: u64,
}

fn one_u64() -> u64 {
    1
}

/// Latency of one model on one tier, as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelLatencyFile {
    /// Local only: worker threads for this model (default: the tier's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<u64>,
    /// Local only: requests that may wait (default: the tier's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_capacity: Option<u64>,
    pub latency: Vec<BatchPoint>,
    /// Lambda only: this model's cold start, when its init (loading the
    /// model) differs from the tier's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cold_start: Option<Percentiles>,
}

/// `[backends.local]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalFile {
    #[serde(default = "local_name")]
    pub name: String,
    #[serde(default = "one_u64")]
    pub workers: u64,
    #[serde(default = "default_queue")]
    pub queue_capacity: u64,
    /// Merge queued requests into batches (up to the model's largest).
    #[serde(default = "yes")]
    pub batching: bool,
    /// Price of the machine per second (0: already paid for).
    #[serde(default)]
    pub cost_per_second: f64,
    pub models: BTreeMap<String, ModelLatencyFile>,
}

/// `[backends.container]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerFile {
    #[serde(default = "container_name")]
    pub name: String,
    #[serde(default = "one_u64")]
    pub min_containers: u64,
    #[serde(default = "four")]
    pub max_containers: u64,
    #[serde(default = "four")]
    pub target_in_flight: u64,
    #[serde(default = "sixty_four")]
    pub max_in_flight: u64,
    /// Inference threads per container.
    #[serde(default = "one_u64")]
    pub workers: u64,
    #[serde(default = "default_idle_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default = "default_scale_ms")]
    pub scale_interval_ms: u64,
    pub cold_start: Percentiles,
    /// Price of one running container per second.
    #[serde(default = "default_container_price")]
    pub cost_per_container_second: f64,
    pub models: BTreeMap<String, ModelLatencyFile>,
}

/// `[backends.lambda]` as written.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaFile {
    #[serde(default = "lambda_name")]
    pub name: String,
    #[serde(default = "default_memory")]
    pub memory_mb: u64,
    #[serde(default = "default_reserved")]
    pub reserved_concurrency: u64,
    #[serde(default = "default_payload_limit")]
    pub payload_limit_bytes: u64,
    /// An idle instance is reclaimed after this long.
    #[serde(default = "default_instance_idle_ms")]
    pub instance_idle_ms: u64,
    /// Extra time of an invocation that starts a new instance (its init).
    pub cold_start: Percentiles,
    #[serde(default = "default_gb_second")]
    pub gb_second_dollars: f64,
    #[serde(default = "default_request_price")]
    pub request_dollars: f64,
    #[serde(default = "one_u64")]
    pub billing_granularity_ms: u64,
    pub models: BTreeMap<String, ModelLatencyFile>,
}

fn local_name() -> String {
    "local".into()
}
fn container_name() -> String {
    "container".into()
}
fn lambda_name() -> String {
    "lambda".into()
}
fn default_queue() -> u64 {
    256
}
fn yes() -> bool {
    true
}
fn four() -> u64 {
    4
}
fn sixty_four() -> u64 {
    64
}
fn default_idle_ms() -> u64 {
    60_000
}
fn default_scale_ms() -> u64 {
    250
}
fn default_container_price() -> f64 {
    0.000_012_5
}
fn default_memory() -> u64 {
    1024
}
fn default_reserved() -> u64 {
    10
}
fn default_payload_limit() -> u64 {
    6 * 1024 * 1024
}
fn default_instance_idle_ms() -> u64 {
    300_000
}
fn default_gb_second() -> f64 {
    0.000_016_666_7
}
fn default_request_price() -> f64 {
    0.000_000_2
}

/// `[backends]` as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendsFile {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local: Option<LocalFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerFile>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lambda: Option<LambdaFile>,
}

/// A profile file as written.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileFile {
    #[serde(default)]
    pub gateway: GatewayFile,
    pub models: BTreeMap<String, ModelFile>,
    pub backends: BackendsFile,
}

impl ProfileFile {
    /// Parses profile TOML.
    pub fn parse(text: &str) -> Result<Self, TomlError> {
        from_toml(text)
    }

    /// Checks every value and builds the runtime profile.
    pub fn validate(&self) -> Result<Profile, TomlError> {
        Profile::build(self)
    }

    /// The file as TOML (for `switchyard-bench profile`).
    pub fn to_toml(&self) -> Result<String, String> {
        toml::to_string_pretty(self).map_err(|e| e.to_string())
    }
}

/// A model of the profile.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelProfile {
    pub name: String,
    pub payload_bytes: u64,
    pub max_batch_size: u64,
}

/// The gateway's settings.
#[derive(Debug, Clone, PartialEq)]
pub struct GatewayProfile {
    pub request_timeout: Duration,
    pub rate_window: Duration,
    pub retry_budget_ratio: f64,
    pub retry_floor_per_second: f64,
    pub overhead: LogNormal,
}

/// One model on the local tier.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalModel {
    pub workers: u64,
    pub queue_capacity: u64,
    pub latency: BatchLatency,
}

/// The local tier.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalProfile {
    pub name: String,
    pub batching: bool,
    pub cost_per_second: f64,
    /// Per model of the profile (by index), `None` when not served here.
    pub models: Vec<Option<LocalModel>>,
}

/// The container tier.
#[derive(Debug, Clone, PartialEq)]
pub struct ContainerProfile {
    pub name: String,
    pub min_containers: u64,
    pub max_containers: u64,
    pub target_in_flight: u64,
    pub max_in_flight: u64,
    pub workers: u64,
    pub idle_timeout: Duration,
    pub scale_interval: Duration,
    pub cold_start: LogNormal,
    pub cost_per_container_second: f64,
    pub models: Vec<Option<BatchLatency>>,
}

/// The Lambda tier.
#[derive(Debug, Clone, PartialEq)]
pub struct LambdaProfile {
    pub name: String,
    pub memory_mb: u64,
    pub reserved_concurrency: u64,
    /// Largest tensor payload that fits the Invoke limit once base64-encoded.
    pub max_payload_bytes: u64,
    pub instance_idle: Duration,
    pub cold_start: LogNormal,
    pub gb_second_dollars: f64,
    pub request_dollars: f64,
    pub billing_granularity_ms: u64,
    pub models: Vec<Option<LambdaModel>>,
}

/// One model on the Lambda tier.
#[derive(Debug, Clone, PartialEq)]
pub struct LambdaModel {
    pub latency: BatchLatency,
    pub cold_start: LogNormal,
}

/// A checked profile, ready to simulate.
#[derive(Debug, Clone, PartialEq)]
pub struct Profile {
    pub gateway: GatewayProfile,
    pub models: Vec<ModelProfile>,
    pub local: Option<LocalProfile>,
    pub container: Option<ContainerProfile>,
    pub lambda: Option<LambdaProfile>,
}

/// Why a profile could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("profile {path}: {error}")]
    Invalid { path: String, error: TomlError },
}

impl Profile {
    /// The shipped default profile.
    pub fn default_profile() -> Result<Self, ProfileError> {
        Self::parse(DEFAULT_PROFILE, "config/profiles/default.toml (built in)")
    }

    /// Reads and checks a profile file.
    pub fn load(path: &Path) -> Result<Self, ProfileError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: name.clone(),
            source,
        })?;
        Self::parse(&text, &name)
    }

    /// Parses and checks profile TOML; `name` is used in errors.
    pub fn parse(text: &str, name: &str) -> Result<Self, ProfileError> {
        ProfileFile::parse(text)
            .and_then(|file| file.validate())
            .map_err(|error| ProfileError::Invalid {
                path: name.to_owned(),
                error,
            })
    }

    /// Names of the tiers, in the order local, container, lambda.
    pub fn backend_names(&self) -> Vec<String> {
        let mut names = Vec::new();
        if let Some(b) = &self.local {
            names.push(b.name.clone());
        }
        if let Some(b) = &self.container {
            names.push(b.name.clone());
        }
        if let Some(b) = &self.lambda {
            names.push(b.name.clone());
        }
        names
    }

    /// The profile with only the tiers named in `tiers`.
    pub fn only(&self, tiers: &[String]) -> Self {
        let keep = |name: &str| tiers.iter().any(|t| t == name);
        Self {
            gateway: self.gateway.clone(),
            models: self.models.clone(),
            local: self.local.clone().filter(|b| keep(&b.name)),
            container: self.container.clone().filter(|b| keep(&b.name)),
            lambda: self.lambda.clone().filter(|b| keep(&b.name)),
        }
    }

    /// Names of the models.
    pub fn model_names(&self) -> Vec<String> {
        self.models.iter().map(|m| m.name.clone()).collect()
    }

    /// Index of the model called `name`.
    pub fn model_index(&self, name: &str) -> Option<usize> {
        self.models.iter().position(|m| m.name == name)
    }

    /// The kind of the tier called `name`.
    pub fn kind_of(&self, name: &str) -> Option<BackendKind> {
        if self.local.as_ref().is_some_and(|b| b.name == name) {
            Some(BackendKind::Local)
        } else if self.container.as_ref().is_some_and(|b| b.name == name) {
            Some(BackendKind::Container)
        } else if self.lambda.as_ref().is_some_and(|b| b.name == name) {
            Some(BackendKind::Lambda)
        } else {
            None
        }
    }

    fn build(file: &ProfileFile) -> Result<Self, TomlError> {
        let error = |key: String, message: String| TomlError { key, message };
        let g = &file.gateway;
        let gateway = GatewayProfile {
            request_timeout: Duration::from_millis(int_range(
                "gateway.request_timeout_ms",
                g.request_timeout_ms,
                1,
                3_600_000,
            )?),
            rate_window: Duration::from_millis(int_range(
                "gateway.rate_window_ms",
                g.rate_window_ms,
                1,
                3_600_000,
            )?),
            retry_budget_ratio: range(
                "gateway.retry_budget_ratio",
                g.retry_budget_ratio,
                0.0,
                10.0,
            )?,
            retry_floor_per_second: range(
                "gateway.retry_floor_per_second",
                g.retry_floor_per_second,
                0.0,
                1e6,
            )?,
            overhead: fit("gateway.overhead", g.overhead, 0.0)?,
        };
        if file.models.is_empty() {
            return Err(error(
                "models".into(),
                "no model is described; add a [models.NAME] table with payload_bytes".into(),
            ));
        }
        let mut models = Vec::new();
        for (name, m) in &file.models {
            let key = format!("models.{name}");
            models.push(ModelProfile {
                name: name.clone(),
                payload_bytes: int_range(
                    &format!("{key}.payload_bytes"),
                    m.payload_bytes,
                    1,
                    1 << 40,
                )?,
                max_batch_size: int_range(
                    &format!("{key}.max_batch_size"),
                    m.max_batch_size,
                    1,
                    4096,
                )?,
            });
        }
        let b = &file.backends;
        if b.local.is_none() && b.container.is_none() && b.lambda.is_none() {
            return Err(error(
                "backends".into(),
                "no backend is described; add [backends.local], [backends.container] or [backends.lambda]"
                    .into(),
            ));
        }
        let names: Vec<&str> = [
            b.local.as_ref().map(|x| x.name.as_str()),
            b.container.as_ref().map(|x| x.name.as_str()),
            b.lambda.as_ref().map(|x| x.name.as_str()),
        ]
        .into_iter()
        .flatten()
        .collect();
        for (i, name) in names.iter().enumerate() {
            if name.is_empty() || names[..i].contains(name) {
                return Err(error(
                    "backends".into(),
                    format!(
                        "backend name {name:?} is empty or used twice; give each tier its own `name`"
                    ),
                ));
            }
        }
        let local = b
            .local
            .as_ref()
            .map(|l| {
                let key = "backends.local";
                let workers = int_range(&format!("{key}.workers"), l.workers, 1, 1024)?;
                let queue = int_range(
                    &format!("{key}.queue_capacity"),
                    l.queue_capacity,
                    1,
                    1 << 24,
                )?;
                let per_model = per_model(key, &l.models, &models, |mkey, spec, model| {
                    if spec.cold_start.is_some() {
                        return Err(TomlError {
                            key: format!("{mkey}.cold_start"),
                            message: "the local tier has no cold start; remove the key".into(),
                        });
                    }
                    Ok(LocalModel {
                        workers: int_range(
                            &format!("{mkey}.workers"),
                            spec.workers.unwrap_or(workers),
                            1,
                            1024,
                        )?,
                        queue_capacity: int_range(
                            &format!("{mkey}.queue_capacity"),
                            spec.queue_capacity.unwrap_or(queue),
                            1,
                            1 << 24,
                        )?,
                        latency: latency(mkey, &spec.latency, model.max_batch_size)?,
                    })
                })?;
                Ok::<_, TomlError>(LocalProfile {
                    name: l.name.clone(),
                    batching: l.batching,
                    cost_per_second: range(
                        &format!("{key}.cost_per_second"),
                        l.cost_per_second,
                        0.0,
                        1e3,
                    )?,
                    models: per_model,
                })
            })
            .transpose()?;
        let container = b
            .container
            .as_ref()
            .map(|c| {
                let key = "backends.container";
                let max_containers = int_range(
                    &format!("{key}.max_containers"),
                    c.max_containers,
                    1,
                    100_000,
                )?;
                let min_containers = int_range(
                    &format!("{key}.min_containers"),
                    c.min_containers,
                    0,
                    max_containers,
                )?;
                let max_in_flight =
                    int_range(&format!("{key}.max_in_flight"), c.max_in_flight, 1, 1 << 20)?;
                Ok::<_, TomlError>(ContainerProfile {
                    name: c.name.clone(),
                    min_containers,
                    max_containers,
                    target_in_flight: int_range(
                        &format!("{key}.target_in_flight"),
                        c.target_in_flight,
                        1,
                        max_in_flight,
                    )?,
                    max_in_flight,
                    workers: int_range(&format!("{key}.workers"), c.workers, 1, max_in_flight)?,
                    idle_timeout: Duration::from_millis(int_range(
                        &format!("{key}.idle_timeout_ms"),
                        c.idle_timeout_ms,
                        0,
                        86_400_000,
                    )?),
                    scale_interval: Duration::from_millis(int_range(
                        &format!("{key}.scale_interval_ms"),
                        c.scale_interval_ms,
                        1,
                        3_600_000,
                    )?),
                    cold_start: fit(&format!("{key}.cold_start"), c.cold_start, 0.0)?,
                    cost_per_container_second: range(
                        &format!("{key}.cost_per_container_second"),
                        c.cost_per_container_second,
                        0.0,
                        1e3,
                    )?,
                    models: per_model(key, &c.models, &models, |mkey, spec, _| {
                        single_request_only(mkey, spec)?;
                        if spec.cold_start.is_some() {
                            return Err(TomlError {
                                key: format!("{mkey}.cold_start"),
                                message: "a container's cold start is the tier's \
                                          (backends.container.cold_start); remove the key"
                                    .into(),
                            });
                        }
                        latency(mkey, &spec.latency, 1)
                    })?,
                })
            })
            .transpose()?;
        let lambda = b
            .lambda
            .as_ref()
            .map(|l| {
                let key = "backends.lambda";
                let limit = int_range(
                    &format!("{key}.payload_limit_bytes"),
                    l.payload_limit_bytes,
                    65_537,
                    1 << 40,
                )?;
                let tier_cold_start = fit(&format!("{key}.cold_start"), l.cold_start, 0.0)?;
                Ok::<_, TomlError>(LambdaProfile {
                    name: l.name.clone(),
                    memory_mb: int_range(&format!("{key}.memory_mb"), l.memory_mb, 128, 10_240)?,
                    reserved_concurrency: int_range(
                        &format!("{key}.reserved_concurrency"),
                        l.reserved_concurrency,
                        1,
                        1_000_000,
                    )?,
                    // As the Lambda backend computes it: tensor data travels
                    // base64-encoded, and the JSON header needs room.
                    max_payload_bytes: (limit - 64 * 1024) / 4 * 3,
                    instance_idle: Duration::from_millis(int_range(
                        &format!("{key}.instance_idle_ms"),
                        l.instance_idle_ms,
                        0,
                        86_400_000,
                    )?),
                    cold_start: tier_cold_start,
                    gb_second_dollars: range(
                        &format!("{key}.gb_second_dollars"),
                        l.gb_second_dollars,
                        0.0,
                        1.0,
                    )?,
                    request_dollars: range(
                        &format!("{key}.request_dollars"),
                        l.request_dollars,
                        0.0,
                        1.0,
                    )?,
                    billing_granularity_ms: int_range(
                        &format!("{key}.billing_granularity_ms"),
                        l.billing_granularity_ms,
                        1,
                        60_000,
                    )?,
                    models: per_model(key, &l.models, &models, |mkey, spec, _| {
                        single_request_only(mkey, spec)?;
                        Ok(LambdaModel {
                            latency: latency(mkey, &spec.latency, 1)?,
                            cold_start: match spec.cold_start {
                                Some(p) => fit(&format!("{mkey}.cold_start"), p, 0.0)?,
                                None => tier_cold_start,
                            },
                        })
                    })?,
                })
            })
            .transpose()?;
        Ok(Self {
            gateway,
            models,
            local,
            container,
            lambda,
        })
    }
}

/// Builds each model entry of a tier, checking that it names a model of
/// the profile and that the tier serves at least one.
fn per_model<T>(
    key: &str,
    specs: &BTreeMap<String, ModelLatencyFile>,
    models: &[ModelProfile],
    build: impl Fn(&str, &ModelLatencyFile, &ModelProfile) -> Result<T, TomlError>,
) -> Result<Vec<Option<T>>, TomlError> {
    if specs.is_empty() {
        return Err(TomlError {
            key: format!("{key}.models"),
            message: "the tier serves no model; add a [KEY.models.NAME] table with its latency"
                .replace("KEY", key),
        });
    }
    for name in specs.keys() {
        if !models.iter().any(|m| &m.name == name) {
            return Err(TomlError {
                key: format!("{key}.models.{name}"),
                message: format!(
                    "no model {name:?} in [models]; described models are {:?}",
                    models.iter().map(|m| m.name.as_str()).collect::<Vec<_>>()
                ),
            });
        }
    }
    models
        .iter()
        .map(|model| {
            specs
                .get(&model.name)
                .map(|spec| build(&format!("{key}.models.{}", model.name), spec, model))
                .transpose()
        })
        .collect()
}

/// Containers and Lambda run one request at a time per slot here.
fn single_request_only(key: &str, spec: &ModelLatencyFile) -> Result<(), TomlError> {
    if spec.workers.is_some() || spec.queue_capacity.is_some() {
        return Err(TomlError {
            key: key.to_owned(),
            message: "`workers` and `queue_capacity` are settings of the local tier; \
                      set the container's slots with backends.container.workers and max_in_flight"
                .into(),
        });
    }
    Ok(())
}

/// Checks latency points and builds the per-batch distributions.
fn latency(key: &str, points: &[BatchPoint], max_rows: u64) -> Result<BatchLatency, TomlError> {
    let key = format!("{key}.latency");
    if points.is_empty() {
        return Err(TomlError {
            key,
            message: "give at least one point, e.g. [{ batch = 1, p50_ms = 1.0, p99_ms = 2.0 }]"
                .into(),
        });
    }
    let mut checked = Vec::with_capacity(points.len());
    for (i, point) in points.iter().enumerate() {
        let at = format!("{key}[{i}]");
        let batch = int_range(&format!("{at}.batch"), point.batch, 1, 4096)?;
        if checked.last().is_some_and(|&(b, _, _)| b >= batch) {
            return Err(TomlError {
                key: format!("{at}.batch"),
                message: "batch sizes must be listed in ascending order, each once".into(),
            });
        }
        let dist = fit(
            &at,
            Percentiles {
                p50_ms: point.p50_ms,
                p99_ms: point.p99_ms,
            },
            1e-6,
        )?;
        checked.push((batch, dist.p50_ms(), dist.p99_ms()));
    }
    Ok(BatchLatency::new(checked, max_rows))
}

/// Checks `0 ≤ low < p50 ≤ p99` and fits a log-normal.
fn fit(key: &str, p: Percentiles, low: f64) -> Result<LogNormal, TomlError> {
    let p50 = range(&format!("{key}.p50_ms"), p.p50_ms, low.max(1e-6), 3.6e6)?;
    let p99 = range(&format!("{key}.p99_ms"), p.p99_ms, p50, 3.6e6).map_err(|e| TomlError {
        message: format!("{} (p99 cannot be below p50 = {p50})", e.message),
        ..e
    })?;
    Ok(LogNormal::from_percentiles(p50, p99))
}

fn range(key: &str, value: f64, low: f64, high: f64) -> Result<f64, TomlError> {
    if value.is_finite() && (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(TomlError {
            key: key.to_owned(),
            message: format!("is {value}; it must be between {low} and {high}"),
        })
    }
}

fn int_range(key: &str, value: u64, low: u64, high: u64) -> Result<u64, TomlError> {
    if (low..=high).contains(&value) {
        Ok(value)
    } else {
        Err(TomlError {
            key: key.to_owned(),
            message: format!("is {value}; it must be between {low} and {high}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_profile_parses_and_serves_every_model_locally() {
        let profile = Profile::default_profile().expect("the default profile is valid");
        assert_eq!(profile.backend_names(), ["local", "container", "lambda"]);
        let local = profile.local.as_ref().expect("local tier");
        for (i, model) in profile.models.iter().enumerate() {
            assert!(
                local.models[i].is_some(),
                "{} is served locally",
                model.name
            );
        }
        assert!(profile.model_index("xception").is_some());
    }

    #[test]
    fn the_shipped_profile_round_trips_through_toml() {
        let file = ProfileFile::parse(DEFAULT_PROFILE).expect("parses");
        let text = file.to_toml().expect("serialises");
        assert_eq!(ProfileFile::parse(&text).expect("parses again"), file);
    }

    #[test]
    fn errors_name_the_key_path_and_the_fix() {
        let base = r#"
[models.m]
payload_bytes = 100

[backends.local.models.m]
latency = [{ batch = 1, p50_ms = 1.0, p99_ms = 2.0 }]
"#;
        assert!(Profile::parse(base, "t").is_ok());
        let cases = [
            (
                base.replace("p99_ms = 2.0", "p99_ms = 0.5"),
                "backends.local.models.m.latency[0].p99_ms",
                "cannot be below",
            ),
            (
                base.replace("payload_bytes = 100", "payload_bytes = 100\nsize = 3"),
                "models.m.size",
                "unknown field",
            ),
            (
                base.replace("[backends.local.models.m]", "[backends.local.models.n]"),
                "backends.local.models.n",
                "no model \"n\"",
            ),
            (
                base.replace(
                    "latency = [{ batch = 1, p50_ms = 1.0, p99_ms = 2.0 }]",
                    "latency = []",
                ),
                "backends.local.models.m.latency",
                "at least one point",
            ),
            (
                format!(
                    "{base}\n[backends.container]\ncold_start = {{ p50_ms = 400.0, p99_ms = 500.0 }}\nmin_containers = 9\n[backends.container.models.m]\nlatency = [{{ batch = 1, p50_ms = 1.0, p99_ms = 2.0 }}]\n"
                ),
                "backends.container.min_containers",
                "between 0 and 4",
            ),
            (
                format!("{base}\n[gateway]\nretry_budget_ratio = -1.0\n"),
                "gateway.retry_budget_ratio",
                "between",
            ),
        ];
        for (text, key, message) in cases {
            let error = match Profile::parse(&text, "t") {
                Err(ProfileError::Invalid { error, .. }) => error,
                other => panic!("{text}: expected an invalid profile, got {other:?}"),
            };
            assert_eq!(error.key, key, "{text}");
            assert!(error.message.contains(message), "{text}: {}", error.message);
        }
    }
}
