//! The `[backends.container]` section: [`ContainerFile`] as written (serde,
//! unknown keys rejected) and [`ContainerConfig`], the checked settings the
//! backend runs with. Every key is documented in `config/container-only.toml`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use switchyard_models::toml_config::TomlError;
use switchyard_models::{ModelRepository, ModelSelection};

/// The `[backends.container]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerFile {
    #[serde(default = "default_name")]
    name: String,
    #[serde(default)]
    models: ModelSelection,
    #[serde(default = "default_endpoint")]
    endpoint: String,
    #[serde(default)]
    tls: Option<TlsFile>,
    #[serde(default = "default_route")]
    route: String,
    #[serde(default)]
    shares_host_cpu: Option<bool>,
    #[serde(default = "default_api_timeout_ms")]
    api_timeout_ms: u64,
    #[serde(default = "default_image")]
    image: String,
    #[serde(default = "default_worker_binary")]
    worker_binary: PathBuf,
    #[serde(default)]
    onnxruntime: Option<PathBuf>,
    #[serde(default = "default_scope")]
    scope: String,
    #[serde(default = "one")]
    min_containers: usize,
    #[serde(default = "default_max_containers")]
    max_containers: usize,
    #[serde(default = "default_target_in_flight")]
    target_in_flight: u64,
    #[serde(default = "default_max_in_flight")]
    max_in_flight: u64,
    #[serde(default = "one")]
    workers: usize,
    #[serde(default = "one")]
    intra_op_threads: usize,
    #[serde(default = "default_cpus")]
    cpus: f64,
    #[serde(default = "default_memory_mb")]
    memory_mb: u64,
    #[serde(default = "default_start_timeout_ms")]
    start_timeout_ms: u64,
    #[serde(default = "default_idle_timeout_ms")]
    idle_timeout_ms: u64,
    #[serde(default = "default_scale_interval_ms")]
    scale_interval_ms: u64,
    #[serde(default = "default_health_interval_ms")]
    health_interval_ms: u64,
    #[serde(default = "default_retry_interval_ms")]
    retry_interval_ms: u64,
    #[serde(default = "default_max_attempts")]
    max_attempts: u32,
    #[serde(default)]
    pricing: PricingFile,
}

/// `[backends.container.pricing]`: what a running container costs.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PricingFile {
    container_second_dollars: f64,
}

impl Default for PricingFile {
    fn default() -> Self {
        Self {
            container_second_dollars: DEFAULT_CONTAINER_SECOND_DOLLARS,
        }
    }
}

/// One container of one vCPU, per second: on-demand capacity at about
/// $0.045 per vCPU-hour (the simulator's default profile uses the same).
pub const DEFAULT_CONTAINER_SECOND_DOLLARS: f64 = 0.000_012_5;

/// Client certificate files for a Docker engine reached over TCP + TLS.
/// `Debug` does not show the paths.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TlsFile {
    ca: PathBuf,
    cert: PathBuf,
    key: PathBuf,
}

impl std::fmt::Debug for TlsFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TlsFile { <redacted> }")
    }
}

fn default_name() -> String {
    "container".into()
}
fn default_endpoint() -> String {
    "unix:///var/run/docker.sock".into()
}
fn default_route() -> String {
    "auto".into()
}
fn default_api_timeout_ms() -> u64 {
    120_000
}
fn default_image() -> String {
    "switchyard-worker".into()
}
fn default_worker_binary() -> PathBuf {
    PathBuf::from("target/release/switchyard")
}
fn default_scope() -> String {
    "default".into()
}
fn one() -> usize {
    1
}
fn default_max_containers() -> usize {
    4
}
fn default_target_in_flight() -> u64 {
    4
}
fn default_max_in_flight() -> u64 {
    64
}
fn default_cpus() -> f64 {
    1.0
}
/// A worker holding every model of the repository and a full queue of
/// xception requests (64 in flight, max batch 8) peaked at 1.08 GiB of
/// resident memory (measured 2026-12-06, `switchyard worker` at 25
/// xception requests/s); at 1 GiB the kernel killed such containers under
/// load.
fn default_memory_mb() -> u64 {
    2048
}
fn default_start_timeout_ms() -> u64 {
    30_000
}
fn default_idle_timeout_ms() -> u64 {
    60_000
}
fn default_scale_interval_ms() -> u64 {
    250
}
fn default_health_interval_ms() -> u64 {
    1_000
}
fn default_retry_interval_ms() -> u64 {
    2_000
}
fn default_max_attempts() -> u32 {
    3
}

/// How the gateway reaches its worker containers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// The container's own address on its Docker network when the engine
    /// runs on this machine (a Unix socket endpoint) and that address
    /// answers; the published loopback port otherwise.
    Auto,
    /// The port published on 127.0.0.1, through the engine's port
    /// forwarding (its userland proxy: one more process on the way).
    Published,
    /// The container's own address on its Docker network, always.
    Network,
}

impl Route {
    fn parse(text: &str) -> Result<Self, String> {
        match text {
            "auto" => Ok(Self::Auto),
            "published" => Ok(Self::Published),
            "network" => Ok(Self::Network),
            _ => Err(format!(
                "{text:?} is not a route; write \"auto\" (the container's network address when \
                 the engine is local, else the published port), \"published\" or \"network\""
            )),
        }
    }
}

/// Where the Docker engine is. Neither `Debug` nor `Display` shows the TLS
/// file paths, so a logged config or error cannot leak where the client
/// key lives.
#[derive(Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A local Unix socket (the default, `/var/run/docker.sock`).
    Unix(PathBuf),
    /// Plain HTTP over TCP (`tcp://host:2375`): only for a trusted network.
    Tcp(String),
    /// HTTPS over TCP with client certificates (`tcp://host:2376` + `tls`).
    Tls {
        address: String,
        ca: PathBuf,
        cert: PathBuf,
        key: PathBuf,
    },
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => f.debug_tuple("Unix").field(path).finish(),
            Endpoint::Tcp(address) => f.debug_tuple("Tcp").field(address).finish(),
            Endpoint::Tls { address, .. } => f
                .debug_struct("Tls")
                .field("address", address)
                .field("ca, cert, key", &"<redacted>")
                .finish(),
        }
    }
}

impl Endpoint {
    /// Whether the engine, and so its containers, run on this machine.
    pub fn is_on_this_host(&self) -> bool {
        match self {
            Endpoint::Unix(_) => true,
            Endpoint::Tcp(address) | Endpoint::Tls { address, .. } => {
                switchyard_backends::host::is_loopback_authority(address)
            }
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Unix(path) => write!(f, "unix://{}", path.display()),
            Endpoint::Tcp(address) => write!(f, "tcp://{address}"),
            Endpoint::Tls { address, .. } => write!(f, "tcp://{address} (TLS)"),
        }
    }
}

/// The validated configuration of the container backend.
#[derive(Debug, Clone)]
pub struct ContainerConfig {
    /// Backend name in placement, metrics and labels.
    pub name: String,
    /// Models the image carries and the backend serves.
    pub models: Vec<String>,
    pub endpoint: Endpoint,
    /// How requests reach the containers.
    pub route: Route,
    /// The containers run on the gateway's machine: as written, else
    /// whether the engine is (a Unix socket or a loopback address).
    pub shares_host_cpu: bool,
    /// Deadline of one Docker API call (an image build included).
    pub api_timeout: Duration,
    /// Image repository name; the tag is the content hash of what goes in.
    pub image: String,
    /// The `switchyard` binary copied into the image (relative paths are
    /// relative to the current directory).
    pub worker_binary: PathBuf,
    /// The ONNX Runtime library; `None` finds it as the model core does.
    pub onnxruntime: Option<PathBuf>,
    /// Orphan clean-up acts on containers of this scope only: gateways that
    /// share an engine must use different scopes.
    pub scope: String,
    pub min_containers: usize,
    pub max_containers: usize,
    /// Requests in flight per container above which the pool scales up.
    pub target_in_flight: u64,
    /// Requests in flight per container beyond which it gets no more.
    pub max_in_flight: u64,
    /// Worker threads (sessions) per model inside each container.
    pub workers: usize,
    /// ONNX Runtime intra-op threads per session inside each container.
    pub intra_op_threads: usize,
    /// CPU limit per container in CPUs (Docker `nano_cpus` / 1e9).
    pub nano_cpus: i64,
    /// Memory limit per container in bytes (swap disabled).
    pub memory_bytes: i64,
    /// Create → ready deadline of one container.
    pub start_timeout: Duration,
    /// A container without requests for this long is removed (above the minimum).
    pub idle_timeout: Duration,
    /// How often the pool is reconciled (scale, reap, reconnect).
    pub scale_interval: Duration,
    /// How often each container's `/v2/health/ready` is checked.
    pub health_interval: Duration,
    /// Pause between attempts to reach the engine or start a container after a failure.
    pub retry_interval: Duration,
    /// Tries of one request on different containers when one fails mid-request.
    pub max_attempts: u32,
    /// Price of one container for one second, from its creation to its
    /// removal (the pool's cost in stats and metrics).
    pub container_second_dollars: f64,
}

impl ContainerFile {
    /// Checks the section against the repository. Error keys are relative
    /// to the section (the gateway prefixes `backends.container.`).
    pub fn validate(self, repository: &ModelRepository) -> Result<ContainerConfig, TomlError> {
        let error = |key: &str, message: String| TomlError {
            key: key.to_owned(),
            message,
        };
        let models = self
            .models
            .resolve(repository)
            .map_err(|m| error("models", m))?;
        if self.name.is_empty() || !self.name.chars().all(label_char) {
            return Err(error(
                "name",
                format!(
                    "{:?} must be non-empty and use only a-z, 0-9, '-', '_'",
                    self.name
                ),
            ));
        }
        if self.scope.is_empty() || !self.scope.chars().all(label_char) {
            return Err(error(
                "scope",
                format!(
                    "{:?} must be non-empty and use only a-z, 0-9, '-', '_'",
                    self.scope
                ),
            ));
        }
        if self.image.is_empty()
            || !self
                .image
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-/".contains(c))
        {
            return Err(error(
                "image",
                format!(
                    "{:?} is not an image repository name; use lower-case letters, digits and \
                     . _ - / (no tag: the tag is the content hash)",
                    self.image
                ),
            ));
        }
        let endpoint = parse_endpoint(&self.endpoint, self.tls)
            .map_err(|message| error("endpoint", message))?;
        let route = Route::parse(&self.route).map_err(|message| error("route", message))?;
        if route == Route::Network && !matches!(endpoint, Endpoint::Unix(_)) {
            return Err(error(
                "route",
                format!(
                    "\"network\" needs the engine on this machine, but endpoint is {endpoint}; \
                     write route = \"published\" or \"auto\" for a remote engine"
                ),
            ));
        }
        let in_range = |key: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                Err(error(
                    key,
                    format!("is {value}; it must be between {min} and {max}"),
                ))
            } else {
                Ok(value)
            }
        };
        in_range("max_containers", self.max_containers as u64, 1, 256)?;
        in_range(
            "min_containers",
            self.min_containers as u64,
            0,
            self.max_containers as u64,
        )?;
        in_range("max_in_flight", self.max_in_flight, 1, 65_536)?;
        in_range(
            "target_in_flight",
            self.target_in_flight,
            1,
            self.max_in_flight,
        )?;
        in_range("workers", self.workers as u64, 1, 64)?;
        in_range("intra_op_threads", self.intra_op_threads as u64, 1, 64)?;
        in_range("memory_mb", self.memory_mb, 64, 1 << 20)?;
        in_range("max_attempts", u64::from(self.max_attempts), 1, 10)?;
        for (key, value) in [
            ("api_timeout_ms", self.api_timeout_ms),
            ("start_timeout_ms", self.start_timeout_ms),
            ("idle_timeout_ms", self.idle_timeout_ms),
            ("scale_interval_ms", self.scale_interval_ms),
            ("health_interval_ms", self.health_interval_ms),
            ("retry_interval_ms", self.retry_interval_ms),
        ] {
            in_range(key, value, 1, 86_400_000)?;
        }
        if !(self.cpus.is_finite() && self.cpus >= 0.01 && self.cpus <= 1024.0) {
            return Err(error(
                "cpus",
                format!("is {}; it must be between 0.01 and 1024", self.cpus),
            ));
        }
        let price = self.pricing.container_second_dollars;
        if !(price.is_finite() && price >= 0.0) {
            return Err(error(
                "pricing.container_second_dollars",
                format!("is {price}; it must be a price ≥ 0 (dollars per container-second)"),
            ));
        }
        let ms = Duration::from_millis;
        let shares_host_cpu = self
            .shares_host_cpu
            .unwrap_or_else(|| endpoint.is_on_this_host());
        Ok(ContainerConfig {
            name: self.name,
            models,
            endpoint,
            route,
            shares_host_cpu,
            api_timeout: ms(self.api_timeout_ms),
            image: self.image,
            worker_binary: self.worker_binary,
            onnxruntime: self.onnxruntime,
            scope: self.scope,
            min_containers: self.min_containers,
            max_containers: self.max_containers,
            target_in_flight: self.target_in_flight,
            max_in_flight: self.max_in_flight,
            workers: self.workers,
            intra_op_threads: self.intra_op_threads,
            nano_cpus: (self.cpus * 1e9).round() as i64,
            memory_bytes: i64::try_from(self.memory_mb.saturating_mul(1 << 20)).unwrap_or(i64::MAX),
            start_timeout: ms(self.start_timeout_ms),
            idle_timeout: ms(self.idle_timeout_ms),
            scale_interval: ms(self.scale_interval_ms),
            health_interval: ms(self.health_interval_ms),
            retry_interval: ms(self.retry_interval_ms),
            max_attempts: self.max_attempts,
            container_second_dollars: price,
        })
    }
}

fn label_char(c: char) -> bool {
    c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_'
}

fn parse_endpoint(text: &str, tls: Option<TlsFile>) -> Result<Endpoint, String> {
    if let Some(path) = text.strip_prefix("unix://") {
        if tls.is_some() {
            return Err("a unix socket takes no `tls` section; remove it".into());
        }
        if !path.starts_with('/') {
            return Err(format!(
                "{text:?}: write an absolute socket path, e.g. unix:///var/run/docker.sock"
            ));
        }
        return Ok(Endpoint::Unix(PathBuf::from(path)));
    }
    if let Some(address) = text.strip_prefix("tcp://") {
        let (host, port) = address.rsplit_once(':').ok_or_else(|| {
            format!("{text:?} has no port; write tcp://HOST:PORT (2376 with TLS)")
        })?;
        if host.is_empty() || port.parse::<u16>().is_err() {
            return Err(format!("{text:?} is not tcp://HOST:PORT"));
        }
        return Ok(match tls {
            Some(tls) => Endpoint::Tls {
                address: address.to_owned(),
                ca: tls.ca,
                cert: tls.cert,
                key: tls.key,
            },
            None => Endpoint::Tcp(address.to_owned()),
        });
    }
    Err(format!(
        "{text:?} is not a Docker endpoint; write unix:///var/run/docker.sock or tcp://HOST:PORT"
    ))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use super::*;
    use std::collections::BTreeMap;
    use switchyard_models::repository::{ModelConfig, RepositoryModel};
    use switchyard_models::toml_config::from_toml;

    fn repository() -> ModelRepository {
        let model = |name: &str| RepositoryModel {
            config: ModelConfig {
                name: name.into(),
                platform: "onnxruntime_onnx".into(),
                max_batch_size: 0,
                dynamic_batching: None,
                description: String::new(),
            },
            versions: Vec::new(),
        };
        ModelRepository {
            root: PathBuf::from("/nowhere"),
            models: BTreeMap::from([
                ("digits".to_owned(), model("digits")),
                ("fashion_cnn".to_owned(), model("fashion_cnn")),
            ]),
        }
    }

    fn validate(text: &str) -> Result<ContainerConfig, TomlError> {
        from_toml::<ContainerFile>(text)?.validate(&repository())
    }

    #[test]
    fn defaults_are_valid() {
        let config = validate("").unwrap();
        assert_eq!(config.name, "container");
        assert_eq!(config.models, ["digits", "fashion_cnn"]);
        assert_eq!(
            config.endpoint,
            Endpoint::Unix(PathBuf::from("/var/run/docker.sock"))
        );
        assert_eq!(config.route, Route::Auto);
        assert_eq!(
            validate("route = \"published\"").unwrap().route,
            Route::Published
        );
        assert_eq!(
            validate("route = \"network\"").unwrap().route,
            Route::Network
        );
        assert_eq!(config.nano_cpus, 1_000_000_000);
        assert_eq!(config.memory_bytes, 2 << 30);
        assert_eq!(
            config.container_second_dollars,
            DEFAULT_CONTAINER_SECOND_DOLLARS
        );
        let priced = validate("[pricing]\ncontainer_second_dollars = 0.00002").unwrap();
        assert_eq!(priced.container_second_dollars, 0.00002);
    }

    #[test]
    fn errors_name_the_key() {
        for (text, key) in [
            ("models = [\"nope\"]", "models"),
            ("min_containers = 5\nmax_containers = 2", "min_containers"),
            ("max_containers = 0", "max_containers"),
            (
                "target_in_flight = 100\nmax_in_flight = 10",
                "target_in_flight",
            ),
            ("endpoint = \"http://x\"", "endpoint"),
            ("endpoint = \"tcp://host\"", "endpoint"),
            ("route = \"bridge\"", "route"),
            (
                "endpoint = \"tcp://docker.internal:2375\"\nroute = \"network\"",
                "route",
            ),
            ("image = \"Worker:latest\"", "image"),
            ("cpus = 0.0", "cpus"),
            ("idle_timeout_ms = 0", "idle_timeout_ms"),
            ("bogus = 1", "bogus"),
            (
                "[pricing]\ncontainer_second_dollars = -1.0",
                "pricing.container_second_dollars",
            ),
            ("[pricing]\nper_hour = 1.0", "pricing.per_hour"),
        ] {
            let error = validate(text).unwrap_err();
            assert_eq!(error.key, key, "{text}: {error}");
        }
    }

    #[test]
    fn tls_file_paths_never_print() {
        let config = validate(
            "endpoint = \"tcp://docker.internal:2376\"\n\
             [tls]\nca = \"/run/secrets/ca.pem\"\ncert = \"/run/secrets/cert.pem\"\nkey = \"/run/secrets/key.pem\"",
        )
        .unwrap();
        let shown = format!("{config:?} {}", config.endpoint);
        assert!(!shown.contains("secrets"), "{shown}");
        assert!(shown.contains("docker.internal:2376"), "{shown}");
        let file: ContainerFile =
            from_toml("[tls]\nca = \"/run/secrets/a\"\ncert = \"b\"\nkey = \"c\"").unwrap();
        assert!(!format!("{file:?}").contains("secrets"));
    }

    #[test]
    fn tls_endpoint() {
        let config = validate(
            "endpoint = \"tcp://docker.internal:2376\"\n\
             [tls]\nca = \"ca.pem\"\ncert = \"cert.pem\"\nkey = \"key.pem\"",
        )
        .unwrap();
        assert!(
            matches!(config.endpoint, Endpoint::Tls { ref address, .. } if address == "docker.internal:2376")
        );
        let error = validate("[tls]\nca = \"a\"\ncert = \"b\"\nkey = \"c\"").unwrap_err();
        assert_eq!(error.key, "endpoint");
    }

    #[test]
    fn containers_share_the_host_cpu_when_the_engine_is_local_unless_told_otherwise() {
        assert!(validate("").unwrap().shares_host_cpu);
        assert!(
            validate("endpoint = \"tcp://127.0.0.1:2375\"")
                .unwrap()
                .shares_host_cpu
        );
        assert!(
            !validate("endpoint = \"tcp://docker.internal:2375\"")
                .unwrap()
                .shares_host_cpu
        );
        assert!(
            validate("endpoint = \"tcp://docker.internal:2375\"\nshares_host_cpu = true")
                .unwrap()
                .shares_host_cpu
        );
        assert!(!validate("shares_host_cpu = false").unwrap().shares_host_cpu);
        assert_eq!(
            validate("shares_host_cpu = \"auto\"").unwrap_err().key,
            "shares_host_cpu"
        );
    }
}
