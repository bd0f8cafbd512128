//! The gateway's configuration: one TOML file, or the embedded default.
//!
//! Parsing has two phases. Serde reads the text into `*File` structs that
//! reject unknown keys, naming the key path of any error; [`Config::from_file`]
//! then checks what types cannot (ranges, references between sections) and
//! builds the runtime [`Config`], which cannot be invalid. Every key is
//! documented in `config/example.toml`, which a test parses.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use switchyard_backend_container::{ContainerConfig, ContainerFile};
use switchyard_backend_lambda::{LambdaConfig, LambdaFile};
use switchyard_backends::local::{LocalConfig, LocalModelConfig};
use switchyard_models::{ModelRepository, ModelSelection};

use crate::placement::PolicySource;
use crate::policy::spec::{PolicyFile, PolicySpec};
use switchyard_models::toml_config::from_toml;

/// The configuration `switchyard serve` uses without `--config`.
pub const DEFAULT_CONFIG: &str = include_str!("../../config/default.toml");

/// A configuration error: the key path, what is wrong and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config {source_name}: {key}: {message}")]
pub struct ConfigError {
    /// The file, or `(embedded default)`.
    pub source_name: String,
    pub key: String,
    pub message: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(default)]
    server: ServerFile,
    #[serde(default)]
    models: ModelsFile,
    #[serde(default)]
    placement: PlacementFile,
    #[serde(default)]
    backends: BackendsFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ServerFile {
    listen: String,
    max_request_bytes: u64,
    max_concurrent_requests: usize,
    request_timeout_ms: u64,
    max_request_timeout_ms: u64,
    drain_timeout_ms: u64,
}

impl Default for ServerFile {
    fn default() -> Self {
        Self {
            listen: "127.0.0.1:8000".into(),
            max_request_bytes: 32 * 1024 * 1024,
            max_concurrent_requests: 1024,
            request_timeout_ms: 30_000,
            max_request_timeout_ms: 300_000,
            drain_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct ModelsFile {
    repository: PathBuf,
}

impl Default for ModelsFile {
    fn default() -> Self {
        Self {
            repository: PathBuf::from("models/repository"),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PlacementFile {
    rate_window_ms: u64,
    policy_file: Option<PathBuf>,
    reload_interval_ms: u64,
    retry_budget_ratio: f64,
    retry_floor_per_second: f64,
    decision_log: Option<PathBuf>,
    decision_log_sample: f64,
    /// Shorthand for `[placement.default] policy = "ordered"` with this order.
    order: Option<Vec<String>>,
    /// The policy of models without their own (`[placement.default]`).
    default: Option<PolicySpec>,
    /// Per-model policies (`[placement.models.NAME]`).
    models: BTreeMap<String, PolicySpec>,
}

impl Default for PlacementFile {
    fn default() -> Self {
        Self {
            rate_window_ms: 10_000,
            policy_file: None,
            reload_interval_ms: 2_000,
            retry_budget_ratio: 0.2,
            retry_floor_per_second: 10.0,
            decision_log: None,
            decision_log_sample: 0.01,
            order: None,
            default: None,
            models: BTreeMap::new(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct BackendsFile {
    local: Option<LocalFile>,
    container: Option<ContainerFile>,
    lambda: Option<LambdaFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalFile {
    #[serde(default = "yes")]
    enabled: bool,
    #[serde(default)]
    models: ModelSelection,
    #[serde(default = "one")]
    workers: usize,
    #[serde(default = "one")]
    intra_op_threads: usize,
    #[serde(default = "default_queue_capacity")]
    queue_capacity: usize,
    #[serde(default)]
    overrides: BTreeMap<String, LocalOverrideFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalOverrideFile {
    workers: Option<usize>,
    intra_op_threads: Option<usize>,
    queue_capacity: Option<usize>,
}

fn yes() -> bool {
    true
}

fn one() -> usize {
    1
}

fn default_queue_capacity() -> usize {
    256
}

/// Serving settings of `switchyard worker`, for every model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    pub workers: usize,
    pub intra_op_threads: usize,
    pub queue_capacity: usize,
}

/// HTTP server settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted (413 above).
    pub max_request_bytes: u64,
    /// Requests handled at once before new ones get 503.
    pub max_concurrent_requests: usize,
    /// Deadline of a request that does not set one.
    pub request_timeout: Duration,
    /// Upper bound of a deadline a client sets.
    pub max_request_timeout: Duration,
    /// How long shutdown waits for in-flight requests.
    pub drain_timeout: Duration,
}

/// Placement settings.
#[derive(Debug, Clone, PartialEq)]
pub struct PlacementConfig {
    /// Window over which the per-model request rate is counted.
    pub rate_window: Duration,
    /// The policy file, watched and hot-reloaded; `None` for inline policies.
    pub policy_file: Option<PathBuf>,
    /// The policies written in `[placement]` itself.
    pub inline: PolicyFile,
    /// How often the policy file is checked for changes.
    pub reload_interval: Duration,
    /// Retries allowed per original request (failover budget).
    pub retry_budget_ratio: f64,
    /// Retries allowed per second whatever the traffic.
    pub retry_floor_per_second: f64,
    /// Where sampled decisions are logged as JSON lines.
    pub decision_log: Option<PathBuf>,
    /// Share of decisions logged, 0 to 1.
    pub decision_log_sample: f64,
    /// Enabled backend names, in configuration order.
    pub backends: Vec<String>,
}

/// A complete, valid configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub server: ServerConfig,
    pub repository: ModelRepository,
    pub placement: PlacementConfig,
    pub local: Option<LocalConfig>,
    pub container: Option<ContainerConfig>,
    pub lambda: Option<LambdaConfig>,
}

impl Config {
    /// Reads and validates a config file. Relative paths in it are relative
    /// to the current directory, like the paths on the command line.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let source_name = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            source_name: source_name.clone(),
            key: "(file)".into(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text, &source_name, Path::new("."))
    }

    /// The embedded default configuration.
    pub fn embedded_default() -> Result<Self, ConfigError> {
        Self::parse(DEFAULT_CONFIG, "(embedded default)", Path::new("."))
    }

    /// Parses and validates TOML text; `source_name` names it in errors and
    /// relative paths in it are taken relative to `base_dir`.
    pub fn parse(text: &str, source_name: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let error = |key: &str, message: String| ConfigError {
            source_name: source_name.to_owned(),
            key: key.to_owned(),
            message,
        };
        let file: ConfigFile = from_toml(text).map_err(|e| error(&e.key, e.message))?;
        Self::validate(file, source_name, base_dir)
    }

    /// The configuration of `switchyard worker`: the v2 API on `listen`
    /// over every model of `repository`, served locally. This is what runs
    /// inside a worker container.
    pub fn worker(
        repository: &Path,
        listen: SocketAddr,
        settings: WorkerSettings,
    ) -> Result<Self, ConfigError> {
        let file = ConfigFile {
            server: ServerFile {
                listen: listen.to_string(),
                ..ServerFile::default()
            },
            models: ModelsFile {
                repository: repository.to_owned(),
            },
            placement: PlacementFile::default(),
            backends: BackendsFile {
                local: Some(LocalFile {
                    enabled: true,
                    models: ModelSelection::default(),
                    workers: settings.workers,
                    intra_op_threads: settings.intra_op_threads,
                    queue_capacity: settings.queue_capacity,
                    overrides: BTreeMap::new(),
                }),
                container: None,
                lambda: None,
            },
        };
        Self::validate(file, "(worker options)", Path::new("."))
    }

    fn validate(file: ConfigFile, source_name: &str, base_dir: &Path) -> Result<Self, ConfigError> {
        let error = |key: &str, message: String| ConfigError {
            source_name: source_name.to_owned(),
            key: key.to_owned(),
            message,
        };
        let server = validate_server(file.server, &error)?;
        let repository = ModelRepository::load(&base_dir.join(&file.models.repository))
            .map_err(|e| error("models.repository", e.to_string()))?;
        let local = match file.backends.local {
            Some(local) if local.enabled => Some(validate_local(local, &repository, &error)?),
            _ => None,
        };
        let section = |name: &'static str| {
            move |e: switchyard_models::toml_config::TomlError| {
                error(&format!("backends.{name}.{}", e.key), e.message)
            }
        };
        let container = file
            .backends
            .container
            .map(|c| c.validate(&repository).map_err(section("container")))
            .transpose()?;
        let lambda = file
            .backends
            .lambda
            .map(|l| l.validate(&repository).map_err(section("lambda")))
            .transpose()?;
        let configured: Vec<String> = local
            .iter()
            .map(|l| l.name.clone())
            .chain(container.iter().map(|c| c.name.clone()))
            .chain(lambda.iter().map(|l| l.name.clone()))
            .collect();
        if configured.is_empty() {
            return Err(error(
                "backends",
                "no backend is enabled; add a [backends.local], [backends.container] or \
                 [backends.lambda] section"
                    .into(),
            ));
        }
        let placement =
            validate_placement(file.placement, &configured, &repository, base_dir, &error)?;
        Ok(Config {
            server,
            repository,
            placement,
            local,
            container,
            lambda,
        })
    }
}

type ErrorFn<'a> = dyn Fn(&str, String) -> ConfigError + 'a;

fn validate_server(file: ServerFile, error: &ErrorFn<'_>) -> Result<ServerConfig, ConfigError> {
    let listen = file.listen.parse().map_err(|_| {
        error(
            "server.listen",
            format!(
                "{:?} is not an address; write IP:PORT, e.g. \"127.0.0.1:8000\"",
                file.listen
            ),
        )
    })?;
    let positive = |key: &str, value: u64| {
        if value == 0 {
            Err(error(key, "must be greater than 0".into()))
        } else {
            Ok(value)
        }
    };
    positive("server.max_request_bytes", file.max_request_bytes)?;
    positive(
        "server.max_concurrent_requests",
        file.max_concurrent_requests as u64,
    )?;
    positive("server.request_timeout_ms", file.request_timeout_ms)?;
    if file.max_request_timeout_ms < file.request_timeout_ms {
        return Err(error(
            "server.max_request_timeout_ms",
            format!(
                "is {} but request_timeout_ms is {}; the cap must not be below the default",
                file.max_request_timeout_ms, file.request_timeout_ms
            ),
        ));
    }
    Ok(ServerConfig {
        listen,
        max_request_bytes: file.max_request_bytes,
        max_concurrent_requests: file.max_concurrent_requests,
        request_timeout: Duration::from_millis(file.request_timeout_ms),
        max_request_timeout: Duration::from_millis(file.max_request_timeout_ms),
        drain_timeout: Duration::from_millis(file.drain_timeout_ms),
    })
}

fn validate_local(
    file: LocalFile,
    repository: &ModelRepository,
    error: &ErrorFn<'_>,
) -> Result<LocalConfig, ConfigError> {
    let names = file
        .models
        .resolve(repository)
        .and_then(|names| {
            repository
                .check_known(file.overrides.keys())
                .map(|()| names)
        })
        .map_err(|message| error("backends.local.models", message))?;
    let in_range = |key: &str, value: usize, max: usize| {
        if value == 0 || value > max {
            Err(error(
                key,
                format!("is {value}; it must be between 1 and {max}"),
            ))
        } else {
            Ok(value)
        }
    };
    let models = names
        .iter()
        .map(|name| {
            let o = file.overrides.get(name);
            let key = |field: &str| match o {
                Some(_) => format!("backends.local.overrides.{name}.{field}"),
                None => format!("backends.local.{field}"),
            };
            Ok(LocalModelConfig {
                model: name.clone(),
                workers: in_range(
                    &key("workers"),
                    o.and_then(|o| o.workers).unwrap_or(file.workers),
                    64,
                )?,
                intra_op_threads: in_range(
                    &key("intra_op_threads"),
                    o.and_then(|o| o.intra_op_threads)
                        .unwrap_or(file.intra_op_threads),
                    64,
                )?,
                queue_capacity: in_range(
                    &key("queue_capacity"),
                    o.and_then(|o| o.queue_capacity)
                        .unwrap_or(file.queue_capacity),
                    1 << 20,
                )?,
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(LocalConfig {
        name: "local".into(),
        models,
    })
}

fn validate_placement(
    file: PlacementFile,
    configured: &[String],
    repository: &ModelRepository,
    base_dir: &Path,
    error: &ErrorFn<'_>,
) -> Result<PlacementConfig, ConfigError> {
    if file.rate_window_ms == 0 {
        return Err(error(
            "placement.rate_window_ms",
            "must be greater than 0".into(),
        ));
    }
    if file.reload_interval_ms == 0 {
        return Err(error(
            "placement.reload_interval_ms",
            "must be greater than 0".into(),
        ));
    }
    if !(0.0..=10.0).contains(&file.retry_budget_ratio) {
        return Err(error(
            "placement.retry_budget_ratio",
            "must be between 0 and 10 (0.2 = 20% extra load)".into(),
        ));
    }
    if !(0.0..=1e6).contains(&file.retry_floor_per_second) {
        return Err(error(
            "placement.retry_floor_per_second",
            "must be between 0 and 1000000".into(),
        ));
    }
    if !(0.0..=1.0).contains(&file.decision_log_sample) {
        return Err(error(
            "placement.decision_log_sample",
            "must be between 0 and 1".into(),
        ));
    }
    let policy_file = file.policy_file.map(|p| base_dir.join(p));
    let default = match (file.order, file.default) {
        (Some(_), Some(_)) => {
            return Err(error(
                "placement.order",
                "is shorthand for [placement.default] policy = \"ordered\"; give one of them"
                    .into(),
            ));
        }
        (Some(order), None) => Some(PolicySpec::Ordered { order: Some(order) }),
        (None, default) => default,
    };
    let inline = PolicyFile {
        default,
        models: file.models,
    };
    let has_inline = inline != PolicyFile::default();
    if policy_file.is_some() && has_inline {
        return Err(error(
            "placement.policy_file",
            "policies are given both inline and in a file; keep one of them".into(),
        ));
    }
    let placement = PlacementConfig {
        rate_window: Duration::from_millis(file.rate_window_ms),
        policy_file,
        inline,
        reload_interval: Duration::from_millis(file.reload_interval_ms),
        retry_budget_ratio: file.retry_budget_ratio,
        retry_floor_per_second: file.retry_floor_per_second,
        decision_log: file.decision_log.map(|p| base_dir.join(p)),
        decision_log_sample: file.decision_log_sample,
        backends: configured.to_vec(),
    };
    // Build the policies once now, so that a bad one stops the start.
    placement
        .policy_source(repository)
        .build()
        .map_err(|e| match &placement.policy_file {
            Some(_) => error("placement.policy_file", e.to_string()),
            None => error(&format!("placement.{}", e.key), e.message),
        })?;
    Ok(placement)
}

impl PlacementConfig {
    /// The policy source this configuration describes.
    pub fn policy_source(&self, repository: &ModelRepository) -> PolicySource {
        PolicySource::new(
            self.policy_file.clone(),
            self.inline.clone(),
            self.backends.clone(),
            repository.models.keys().cloned().collect(),
        )
    }
}
