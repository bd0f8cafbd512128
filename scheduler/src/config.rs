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

use crate::outlier::{OutlierConfig, OutlierFile};
use switchyard_protocol::DecodeLimits;

use crate::auth::{AuthConfig, Token};
use crate::placement::PolicySource;
use crate::policy::spec::{PolicyFile, PolicySpec};
use crate::throttle::{ThrottleConfig, ThrottleFile};
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
    max_tensor_elements: u64,
    allow_non_finite_inputs: bool,
    max_header_bytes: u64,
    max_headers: u64,
    max_connections: u64,
    header_read_timeout_ms: u64,
    body_read_timeout_ms: u64,
    io_threads: Option<u64>,
    pin_threads: bool,
    auth: AuthFile,
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
            // The FP32 elements a body of the default size can carry.
            max_tensor_elements: 8 * 1024 * 1024,
            allow_non_finite_inputs: false,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            max_connections: 4096,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 30_000,
            io_threads: None,
            pin_threads: DEFAULT_PIN_THREADS,
            auth: AuthFile::default(),
        }
    }
}

/// `[server.auth]`: each token given inline, in a file, or in an
/// environment variable (at most one of the three).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthFile {
    inference_token: Option<Secret>,
    inference_token_file: Option<PathBuf>,
    inference_token_env: Option<String>,
    admin_token: Option<Secret>,
    admin_token_file: Option<PathBuf>,
    admin_token_env: Option<String>,
}

/// A secret as written in the config file; `Debug` does not show it.
#[derive(Deserialize)]
#[serde(transparent)]
struct Secret(String);

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<redacted>")
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
    /// `[placement.outlier_detection]`.
    outlier_detection: OutlierFile,
    /// `[placement.load_shedding]`.
    load_shedding: ThrottleFile,
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
            outlier_detection: OutlierFile::default(),
            load_shedding: ThrottleFile::default(),
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
    #[serde(default = "default_inline_max_compute_us")]
    inline_max_compute_us: u64,
    #[serde(default)]
    overrides: BTreeMap<String, LocalOverrideFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct LocalOverrideFile {
    workers: Option<usize>,
    intra_op_threads: Option<usize>,
    queue_capacity: Option<usize>,
    inline_max_compute_us: Option<u64>,
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

/// Models whose one-row run takes at most this long (digits, fashion_cnn)
/// run on the HTTP thread when their pool is idle; see the local backend.
/// Measured at low load, where the inline path matters, a run is far slower
/// than in a hot loop (the CPU was idle: fashion_cnn 0.7 ms against 57 µs
/// here), so the limit allows a millisecond; xception (60 ms) never runs
/// inline.
pub const DEFAULT_INLINE_MAX_COMPUTE_US: u64 = 1_000;

/// Beyond a few milliseconds an inline run would hold up every other
/// request on that HTTP thread for longer than a hand-off costs.
const MAX_INLINE_MAX_COMPUTE_US: u64 = 5_000;

fn default_inline_max_compute_us() -> u64 {
    DEFAULT_INLINE_MAX_COMPUTE_US
}

/// Serving settings of `switchyard worker`, for every model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WorkerSettings {
    pub workers: usize,
    pub intra_op_threads: usize,
    pub queue_capacity: usize,
    pub inline_max_compute_us: u64,
}

/// HTTP server settings: address, limits, deadlines and authentication.
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
    /// Most tensor elements one request may declare, all inputs together
    /// (413 above), checked before any tensor data is decoded.
    pub max_tensor_elements: u64,
    /// Whether NaN and infinities are accepted in FP32/FP64 inputs.
    pub allow_non_finite_inputs: bool,
    /// Largest request head (request line and headers) in bytes: HTTP/1's
    /// read buffer and HTTP/2's header list size.
    pub max_header_bytes: usize,
    /// Most header fields in an HTTP/1 request.
    pub max_headers: usize,
    /// Open connections; a connection beyond it is closed at once.
    pub max_connections: usize,
    /// Time to receive a request's head; also how long an idle HTTP/1
    /// keep-alive connection stays open.
    pub header_read_timeout: Duration,
    /// Time to receive a whole request body (408 after).
    pub body_read_timeout: Duration,
    /// Threads of the async runtime that runs HTTP, placement and the
    /// remote backends' clients; `None`: one per CPU. ONNX Runtime's
    /// threads are the local backend's own and not counted here.
    pub io_threads: Option<usize>,
    /// Pin each async runtime thread and each local ONNX Runtime worker to
    /// one of the process's CPUs, in turn
    /// ([`switchyard_backends::affinity`]).
    pub pin_threads: bool,
    /// Bearer tokens for the inference and admin endpoints.
    pub auth: AuthConfig,
}

impl ServerConfig {
    /// What the request decoder enforces.
    pub fn decode_limits(&self) -> DecodeLimits {
        DecodeLimits {
            max_elements: self.max_tensor_elements,
            allow_non_finite: self.allow_non_finite_inputs,
        }
    }
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
    /// Ejection of failing backends.
    pub outlier: OutlierConfig,
    /// Shedding of requests the backends would refuse.
    pub throttle: ThrottleConfig,
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
                // The gateway in front has applied its own policy.
                allow_non_finite_inputs: true,
                // Longer than the gateway client's pool idle time (60 s), so
                // the client, not the worker, closes an idle connection and
                // never reuses one the worker is closing.
                header_read_timeout_ms: 120_000,
                // Several workers share one host, and each would hand out
                // the CPUs from the first: their threads would crowd onto
                // the same CPUs while others idled.
                pin_threads: false,
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
                    inline_max_compute_us: settings.inline_max_compute_us,
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
        let server = validate_server(file.server, base_dir, &error)?;
        let repository = ModelRepository::load(&base_dir.join(&file.models.repository))
            .map_err(|e| error("models.repository", e.to_string()))?;
        let local = match file.backends.local {
            Some(local) if local.enabled => Some(validate_local(
                local,
                &repository,
                server.pin_threads,
                &error,
            )?),
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

/// Longest duration setting accepted: a day (a deadline must fit an
/// `Instant` and mean something).
const MAX_DURATION_MS: u64 = 86_400_000;

fn validate_server(
    file: ServerFile,
    base_dir: &Path,
    error: &ErrorFn<'_>,
) -> Result<ServerConfig, ConfigError> {
    let listen = file.listen.parse().map_err(|_| {
        error(
            "server.listen",
            format!(
                "{:?} is not an address; write IP:PORT, e.g. \"127.0.0.1:8000\"",
                file.listen
            ),
        )
    })?;
    let in_range = |key: &str, value: u64, min: u64, max: u64| {
        if (min..=max).contains(&value) {
            Ok(value)
        } else {
            Err(error(
                key,
                format!("is {value}; it must be between {min} and {max}"),
            ))
        }
    };
    let millis =
        |key: &str, value: u64| in_range(key, value, 1, MAX_DURATION_MS).map(Duration::from_millis);
    let size = |key: &str, value: u64, min: u64, max: u64| {
        in_range(key, value, min, max).map(|v| usize::try_from(v).unwrap_or(usize::MAX))
    };
    in_range(
        "server.max_request_bytes",
        file.max_request_bytes,
        1,
        1 << 40,
    )?;
    let max_concurrent_requests = size(
        "server.max_concurrent_requests",
        file.max_concurrent_requests as u64,
        1,
        1 << 20,
    )?;
    let request_timeout = millis("server.request_timeout_ms", file.request_timeout_ms)?;
    let max_request_timeout = millis("server.max_request_timeout_ms", file.max_request_timeout_ms)?;
    if max_request_timeout < request_timeout {
        return Err(error(
            "server.max_request_timeout_ms",
            format!(
                "is {} but request_timeout_ms is {}; the cap must not be below the default",
                file.max_request_timeout_ms, file.request_timeout_ms
            ),
        ));
    }
    if file.drain_timeout_ms > MAX_DURATION_MS {
        return Err(error(
            "server.drain_timeout_ms",
            format!(
                "is {}; it must be at most {MAX_DURATION_MS}",
                file.drain_timeout_ms
            ),
        ));
    }
    let max_tensor_elements = in_range(
        "server.max_tensor_elements",
        file.max_tensor_elements,
        1,
        1 << 40,
    )?;
    // hyper cannot read a request head with a buffer under 8 KiB.
    let max_header_bytes = size(
        "server.max_header_bytes",
        file.max_header_bytes,
        8192,
        16 << 20,
    )?;
    let max_headers = size("server.max_headers", file.max_headers, 1, 10_000)?;
    let max_connections = size("server.max_connections", file.max_connections, 1, 1 << 20)?;
    let header_read_timeout = millis("server.header_read_timeout_ms", file.header_read_timeout_ms)?;
    let body_read_timeout = millis("server.body_read_timeout_ms", file.body_read_timeout_ms)?;
    let io_threads = file
        .io_threads
        .map(|n| size("server.io_threads", n, 1, MAX_IO_THREADS))
        .transpose()?;
    let auth = validate_auth(file.auth, base_dir, error)?;
    Ok(ServerConfig {
        listen,
        max_request_bytes: file.max_request_bytes,
        max_concurrent_requests,
        request_timeout,
        max_request_timeout,
        drain_timeout: Duration::from_millis(file.drain_timeout_ms),
        max_tensor_elements,
        allow_non_finite_inputs: file.allow_non_finite_inputs,
        max_header_bytes,
        max_headers,
        max_connections,
        header_read_timeout,
        body_read_timeout,
        io_threads,
        pin_threads: file.pin_threads,
        auth,
    })
}

/// `server.pin_threads` when the file does not say.
const DEFAULT_PIN_THREADS: bool = false;

/// Most async runtime threads `server.io_threads` (or the
/// `TOKIO_WORKER_THREADS` environment variable) may ask for.
pub const MAX_IO_THREADS: u64 = 1024;

/// Shortest token accepted: a guessable token is no protection.
const MIN_TOKEN_CHARS: usize = 16;
/// Longest token (and token file) accepted.
const MAX_TOKEN_BYTES: usize = 4096;

fn validate_auth(
    file: AuthFile,
    base_dir: &Path,
    error: &ErrorFn<'_>,
) -> Result<AuthConfig, ConfigError> {
    let inference = load_token(
        "inference",
        file.inference_token,
        file.inference_token_file,
        file.inference_token_env,
        base_dir,
        error,
    )?;
    let admin = load_token(
        "admin",
        file.admin_token,
        file.admin_token_file,
        file.admin_token_env,
        base_dir,
        error,
    )?;
    if let (Some(inference), Some(admin)) = (&inference, &admin)
        && inference == admin
    {
        return Err(error(
            "server.auth.admin_token",
            "is the same as the inference token; give the admin endpoints a token of their own"
                .into(),
        ));
    }
    Ok(AuthConfig { inference, admin })
}

/// Reads the `{kind}_token`, `{kind}_token_file` or `{kind}_token_env`
/// setting. Error messages never contain the token.
fn load_token(
    kind: &str,
    literal: Option<Secret>,
    file: Option<PathBuf>,
    env: Option<String>,
    base_dir: &Path,
    error: &ErrorFn<'_>,
) -> Result<Option<Token>, ConfigError> {
    let given =
        usize::from(literal.is_some()) + usize::from(file.is_some()) + usize::from(env.is_some());
    if given > 1 {
        return Err(error(
            &format!("server.auth.{kind}_token"),
            format!(
                "is given more than once; set one of {kind}_token, {kind}_token_file and {kind}_token_env"
            ),
        ));
    }
    let (key, secret) = if let Some(Secret(secret)) = literal {
        (format!("server.auth.{kind}_token"), secret)
    } else if let Some(path) = file {
        let key = format!("server.auth.{kind}_token_file");
        let secret =
            read_token_file(&base_dir.join(&path)).map_err(|message| error(&key, message))?;
        (key, secret)
    } else if let Some(name) = env {
        let key = format!("server.auth.{kind}_token_env");
        let secret = std::env::var(&name).map_err(|_| {
            error(
                &key,
                format!("the environment variable {name:?} is not set (or not UTF-8)"),
            )
        })?;
        (key, secret)
    } else {
        return Ok(None);
    };
    let secret = secret.trim();
    let chars = secret.chars().count();
    if chars < MIN_TOKEN_CHARS || secret.len() > MAX_TOKEN_BYTES {
        return Err(error(
            &key,
            format!(
                "the token has {chars} characters; use {MIN_TOKEN_CHARS} to {MAX_TOKEN_BYTES}, \
                 e.g. one made by `openssl rand -hex 32`"
            ),
        ));
    }
    if !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(error(
            &key,
            "the token must be printable ASCII without spaces (it travels in an HTTP header)"
                .into(),
        ));
    }
    Ok(Some(Token::new(secret)))
}

/// Reads a token file, refusing one too large to be a token (and never
/// reading more than that, whatever the path names).
fn read_token_file(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let describe = |e: std::io::Error| format!("cannot read {}: {e}", path.display());
    let file = std::fs::File::open(path).map_err(describe)?;
    let mut bytes = Vec::new();
    file.take(MAX_TOKEN_BYTES as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(describe)?;
    if bytes.len() > MAX_TOKEN_BYTES {
        return Err(format!(
            "{} is larger than {MAX_TOKEN_BYTES} bytes; it must hold only the token",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|_| format!("{} is not UTF-8 text", path.display()))
}

fn validate_local(
    file: LocalFile,
    repository: &ModelRepository,
    pin_threads: bool,
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
                inline_max_compute: {
                    let us = o
                        .and_then(|o| o.inline_max_compute_us)
                        .unwrap_or(file.inline_max_compute_us);
                    if us > MAX_INLINE_MAX_COMPUTE_US {
                        return Err(error(
                            &key("inline_max_compute_us"),
                            format!(
                                "is {us}; it must be at most {MAX_INLINE_MAX_COMPUTE_US} (a \
                                 longer run would stall the HTTP thread; 0 turns the inline \
                                 path off)"
                            ),
                        ));
                    }
                    Duration::from_micros(us)
                },
            })
        })
        .collect::<Result<Vec<_>, ConfigError>>()?;
    Ok(LocalConfig {
        name: "local".into(),
        models,
        pin_threads,
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
    let outlier = file
        .outlier_detection
        .validate()
        .map_err(|(key, message)| error(&format!("placement.outlier_detection.{key}"), message))?;
    let throttle = file
        .load_shedding
        .validate()
        .map_err(|(key, message)| error(&format!("placement.load_shedding.{key}"), message))?;
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
        outlier,
        throttle,
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

#[cfg(test)]
mod tests {
    use super::*;

    const LOCAL: &str = "[backends.local]\nmodels = [\"digits\"]\n";
    const INFERENCE: &str = "inference-0123456789abcdef";
    const ADMIN: &str = "admin-0123456789abcdef";

    fn workspace() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    fn parse_server(server: &str) -> Result<Config, ConfigError> {
        Config::parse(
            &format!("[server]\n{server}\n{LOCAL}"),
            "(test)",
            &workspace(),
        )
    }

    #[test]
    fn defaults_listen_on_loopback_with_every_limit_set() {
        let config = Config::parse(LOCAL, "(test)", &workspace()).unwrap();
        let server = &config.server;
        assert_eq!(server.listen.to_string(), "127.0.0.1:8000");
        assert!(server.listen.ip().is_loopback());
        assert_eq!(server.max_tensor_elements, 8 * 1024 * 1024);
        assert!(!server.allow_non_finite_inputs);
        assert_eq!(server.max_header_bytes, 65536);
        assert_eq!(server.max_headers, 100);
        assert_eq!(server.max_connections, 4096);
        assert_eq!(server.header_read_timeout, Duration::from_secs(10));
        assert_eq!(server.body_read_timeout, Duration::from_secs(30));
        assert_eq!(server.io_threads, None, "one per CPU unless set");
        assert_eq!(
            parse_server("io_threads = 3").unwrap().server.io_threads,
            Some(3)
        );
        assert!(!server.pin_threads, "threads are pinned only when asked");
        assert!(
            parse_server("pin_threads = true")
                .unwrap()
                .server
                .pin_threads
        );
        let local = |c: &Config| c.local.as_ref().map(|l| l.pin_threads);
        assert_eq!(
            local(&parse_server("pin_threads = true").unwrap()),
            Some(true),
            "the local backend's workers follow server.pin_threads"
        );
        let refused = parse_server("pin_threads = 2").unwrap_err();
        assert_eq!(refused.key, "server.pin_threads", "{refused}");
        assert!(!server.auth.enabled());
        // The worker behind a gateway: loopback by default (its CLI's
        // default too), no tokens, and the gateway's non-finite policy
        // already applied.
        let worker = Config::worker(
            &workspace().join("models/repository"),
            "127.0.0.1:8000".parse().unwrap(),
            WorkerSettings {
                workers: 1,
                intra_op_threads: 1,
                queue_capacity: 4,
                inline_max_compute_us: DEFAULT_INLINE_MAX_COMPUTE_US,
            },
        )
        .unwrap();
        assert!(!worker.server.auth.enabled());
        assert!(worker.server.allow_non_finite_inputs);
        assert_eq!(worker.server.header_read_timeout, Duration::from_secs(120));
        assert!(!worker.server.pin_threads, "worker containers share a host");
    }

    #[test]
    fn server_limits_are_range_checked_naming_the_key() {
        for (setting, key, words) in [
            (
                "max_header_bytes = 4096",
                "server.max_header_bytes",
                "between 8192",
            ),
            ("max_headers = 0", "server.max_headers", "between 1"),
            ("max_connections = 0", "server.max_connections", "between 1"),
            ("io_threads = 0", "server.io_threads", "between 1"),
            ("io_threads = 5000", "server.io_threads", "and 1024"),
            (
                "max_tensor_elements = 0",
                "server.max_tensor_elements",
                "between 1",
            ),
            (
                "max_request_bytes = 0",
                "server.max_request_bytes",
                "between 1",
            ),
            (
                "body_read_timeout_ms = 0",
                "server.body_read_timeout_ms",
                "between 1",
            ),
            (
                "header_read_timeout_ms = 0",
                "server.header_read_timeout_ms",
                "between 1",
            ),
            (
                "max_request_timeout_ms = 18446744073709551615",
                "server.max_request_timeout_ms",
                "between 1 and 86400000",
            ),
            (
                "request_timeout_ms = 5000\nmax_request_timeout_ms = 1000",
                "server.max_request_timeout_ms",
                "must not be below",
            ),
            (
                "drain_timeout_ms = 100000000",
                "server.drain_timeout_ms",
                "at most",
            ),
            ("max_conections = 5", "max_conections", "unknown field"),
        ] {
            let error = parse_server(setting).unwrap_err();
            assert!(error.key.contains(key), "{setting}: {error}");
            assert!(error.message.contains(words), "{setting}: {error}");
        }
    }

    #[test]
    fn tokens_come_inline_or_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("inference.token");
        std::fs::write(&file, format!("{INFERENCE}\n")).unwrap();
        let config = parse_server(&format!(
            "[server.auth]\ninference_token_file = {:?}\nadmin_token = \"{ADMIN}\"",
            file.display().to_string()
        ))
        .unwrap();
        let auth = &config.server.auth;
        assert!(
            auth.inference
                .as_ref()
                .unwrap()
                .matches(INFERENCE.as_bytes())
        );
        assert!(auth.admin.as_ref().unwrap().matches(ADMIN.as_bytes()));
        let shown = format!("{config:?}");
        assert!(
            !shown.contains(INFERENCE) && !shown.contains(ADMIN),
            "{shown}"
        );
    }

    #[test]
    fn bad_tokens_are_refused_naming_the_key_but_not_the_token() {
        let dir = tempfile::tempdir().unwrap();
        let large = dir.path().join("large");
        std::fs::write(&large, "x".repeat(5000)).unwrap();
        let cases = [
            (
                "inference_token = \"short-secret\"".to_owned(),
                "server.auth.inference_token",
                "has 12 characters",
            ),
            (
                "admin_token = \"has a space in it, twenty+\"".to_owned(),
                "server.auth.admin_token",
                "without spaces",
            ),
            (
                format!("inference_token = \"{INFERENCE}\"\ninference_token_env = \"X\""),
                "server.auth.inference_token",
                "more than once",
            ),
            (
                format!("inference_token = \"{INFERENCE}\"\nadmin_token = \"{INFERENCE}\""),
                "server.auth.admin_token",
                "same as the inference token",
            ),
            (
                "admin_token_env = \"SWITCHYARD_TEST_TOKEN_THAT_IS_NOT_SET\"".to_owned(),
                "server.auth.admin_token_env",
                "is not set",
            ),
            (
                "inference_token_file = \"/nonexistent/token\"".to_owned(),
                "server.auth.inference_token_file",
                "cannot read",
            ),
            (
                format!("inference_token_file = {:?}", large.display().to_string()),
                "server.auth.inference_token_file",
                "larger than 4096 bytes",
            ),
            (
                "inference_tokn = \"x\"".to_owned(),
                "inference_tokn",
                "unknown field",
            ),
        ];
        for (auth, key, words) in cases {
            let error = parse_server(&format!("[server.auth]\n{auth}")).unwrap_err();
            assert!(error.key.contains(key), "{auth}: {error}");
            assert!(error.message.contains(words), "{auth}: {error}");
            let shown = error.to_string();
            assert!(
                !shown.contains("short-secret") && !shown.contains(INFERENCE),
                "{shown}"
            );
        }
    }
}
