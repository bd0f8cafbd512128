//! `switchyard-bench overhead`: what the gateway adds in front of each
//! backend, measured against going direct in the same run, and what a
//! cold start costs.
//!
//! For `fashion_cnn` at batch 1, open loop at 200 and 2,000 requests/s
//! (latency from the intended send time, the load generator's library):
//!
//! - **local**: the gateway (local-only) against the raw in-process ONNX
//!   Runtime call paced at the same rate, and against the HTTP floor
//!   (`GET /v2/health/live` on the same gateway);
//! - **container**: the gateway (container-only, one worker container)
//!   against the same worker container direct, with nginx as a keep-alive
//!   reverse proxy in front of that worker beside it;
//! - **Lambda**: the gateway (Lambda-only) against a direct Invoke of the
//!   same function on the same `cargo lambda` emulator.
//!
//! Each backend's paths are measured in rounds, the order of the paths
//! reversed every other round (the two rates in opposite orders), so
//! drift in the machine's load favours none. For each path with a proxy
//! process of its own (the gateway, nginx) its CPU time per request is
//! recorded too.
//! Cold starts: container create → ready over 20 starts (as the pool
//! measures it), and the first Invoke of a fresh Lambda function instance.
//!
//! Clean-up: the gateways, nginx, the emulator and its instances are
//! killed when their handles drop (also on error or Ctrl-C), and the
//! containers and images of the `overhead` scope are removed at the end
//! whatever happened.

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use http::Method;
use serde::Serialize;
use switchyard_backend_container::bollard::Docker;
use switchyard_backend_container::{ContainerBackend, ContainerFile, engine};
use switchyard_backend_lambda::InvokeEvent;
use switchyard_backend_lambda::emulator::FUNCTION;
use switchyard_loadgen::payload::random_inputs;
use switchyard_loadgen::rng::SplitMix64;
use switchyard_loadgen::{
    Endpoint, HttpClient, Load, Outcome, PayloadSpec, RequestBody, RunSettings, Target,
    TargetEntry, http_client, run,
};
use switchyard_models::toml_config::from_toml;
use switchyard_models::{ModelRepository, ModelSession, SessionOptions};
use switchyard_protocol::InferRequest;
use switchyard_scheduler::Config;

use crate::error::BenchError;
use crate::gateway_process::GatewayProcess;
use crate::local::{model_setups, progress};
use crate::machine::{Machine, MachineCpu, load_average, process_cpu_time, utc_now};
use crate::overhead_report::{BackendSection, Cell, ColdStarts, OverheadResults, target_checks};
use crate::paper::{
    ContainerScope, LambdaTier, Placement, Tiers, config_text, function_path, gateway_table,
    lambda_instances, remove_containers, run_scoped,
};
use crate::raw::{RawPlan, histogram, run_raw};

/// This benchmark's containers and images.
const CONTAINERS: ContainerScope = ContainerScope {
    scope: "overhead",
    image_prefix: "switchyard-worker-overhead",
};
/// The model measured.
pub const MODEL: &str = "fashion_cnn";
/// The open-loop rates, requests per second.
pub const RATES: [f64; 2] = [200.0, 2_000.0];
/// The backends, in the order they run.
pub const BACKENDS: [&str; 3] = ["local", "container", "lambda"];

/// How long each step runs.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub quick: bool,
    /// Rounds over every path and rate; each round reverses the order of
    /// the paths at each rate.
    pub rounds: usize,
    /// Measured seconds per path, rate and round.
    pub cell_s: f64,
    /// Unmeasured load before each measured cell.
    pub warm_up_s: f64,
    pub container_cold_starts: usize,
    pub lambda_cold_starts: usize,
    pub request_timeout_s: f64,
    pub max_in_flight: usize,
}

impl Plan {
    /// The full run (about five minutes) or the quick one (under one).
    pub fn new(quick: bool) -> Self {
        Self {
            quick,
            rounds: if quick { 1 } else { 3 },
            cell_s: if quick { 0.8 } else { 4.0 },
            warm_up_s: if quick { 0.2 } else { 0.5 },
            container_cold_starts: if quick { 10 } else { 20 },
            lambda_cold_starts: if quick { 5 } else { 20 },
            request_timeout_s: 2.0,
            max_in_flight: 512,
        }
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct OverheadOptions {
    pub quick: bool,
    pub gateway_bin: PathBuf,
    /// Only these backends (all when empty).
    pub backends: Vec<String>,
    pub command: String,
}

/// The backends chosen, in run order.
pub fn chosen_backends(options: &OverheadOptions) -> Result<Vec<&'static str>, BenchError> {
    chosen("--backend", &options.backends, &BACKENDS)
}

/// The names of `all` that `given` picks (all of them when it is empty),
/// in `all`'s order; an error names an unknown one and the `flag` it came
/// with.
pub(crate) fn chosen(
    flag: &str,
    given: &[String],
    all: &[&'static str],
) -> Result<Vec<&'static str>, BenchError> {
    if let Some(name) = given.iter().find(|n| !all.contains(&n.as_str())) {
        return Err(BenchError::Other(format!(
            "{flag} {name}: not one of {}",
            all.join(", ")
        )));
    }
    Ok(all
        .iter()
        .copied()
        .filter(|a| given.is_empty() || given.iter().any(|n| n == a))
        .collect())
}

/// Runs the benchmark from the repository root.
pub fn run_overhead(options: &OverheadOptions) -> Result<OverheadResults, BenchError> {
    run_scoped(CONTAINERS, |root, docker| async move {
        overhead_async(options, &root, docker.as_ref()).await
    })
}

/// Everything a backend's section needs.
struct Context<'a> {
    options: &'a OverheadOptions,
    plan: &'a Plan,
    root: &'a Path,
    client: &'a HttpClient,
    temp: &'a Path,
}

async fn overhead_async(
    options: &OverheadOptions,
    root: &Path,
    docker: Option<&Docker>,
) -> Result<OverheadResults, BenchError> {
    let started = Instant::now();
    let machine = Machine::describe();
    let plan = Plan::new(options.quick);
    let backends = chosen_backends(options)?;
    let temp = TempDir::new("overhead")?;
    let client = http_client(plan.max_in_flight);
    let context = Context {
        options,
        plan: &plan,
        root,
        client: &client,
        temp: &temp.0,
    };
    let mut sections = Vec::new();
    for backend in backends {
        let load_before = load_average();
        progress(&format!("{backend}: load average {load_before}"));
        let section = match backend {
            "local" => local_section(&context).await,
            "container" => container_section(&context, docker).await,
            _ => lambda_section(&context).await,
        };
        let section = section.unwrap_or_else(|error| {
            progress(&format!("{backend}: not run: {error}"));
            BackendSection::failed(backend, error.to_string())
        });
        sections.push(BackendSection {
            load_average_before: load_before,
            ..section
        });
    }
    let checks = target_checks(&sections);
    Ok(OverheadResults {
        date: utc_now(),
        command: options.command.clone(),
        machine,
        load_average_at_end: load_average(),
        wall_seconds: started.elapsed().as_secs_f64(),
        plan,
        model: MODEL,
        sections,
        targets: checks,
    })
}

/// A temporary folder for configs (and nginx's files), removed when dropped.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    /// `switchyard-NAME-PID` in the system's temporary folder.
    pub(crate) fn new(name: &str) -> Result<Self, BenchError> {
        let path = std::env::temp_dir().join(format!("switchyard-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|source| BenchError::Io {
            context: "cannot create a temporary folder",
            path: path.clone(),
            source,
        })?;
        Ok(Self(path))
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// One way to reach the model.
enum Probe {
    /// Requests over loopback HTTP.
    Http(Arc<Target>),
    /// The same, with at most this many requests outstanding: the emulator
    /// queues Invokes beyond its instances without limit (real Lambda
    /// throttles), so a direct Invoke gets the gateway's reserved
    /// concurrency, or a backlog would outlive the cell.
    Bounded(Arc<Target>, usize),
    /// The ONNX Runtime call in this process, paced at the rate.
    Raw(RawPlan),
}

/// A path measured, with its name in the tables.
struct Variant {
    name: &'static str,
    probe: Probe,
    /// The processes of the proxy in front of the backend on this path
    /// (the gateway, nginx), whose CPU time per request is reported.
    proxy: Vec<u32>,
}

/// The gateway of `placement` for [`MODEL`], on a free loopback port, with
/// `edit` applied to its config first.
async fn start_gateway(
    context: &Context<'_>,
    placement: Placement,
    lambda_endpoint: Option<&str>,
    edit: impl FnOnce(&mut toml::Table),
) -> Result<GatewayProcess, BenchError> {
    let tiers = Tiers {
        model: MODEL,
        gateway_bin: &context.options.gateway_bin,
        lambda_endpoint,
        containers: CONTAINERS,
    };
    let mut table = gateway_table(placement, &tiers)?;
    edit(&mut table);
    let path = context.temp.join(format!("{}.toml", placement.name()));
    std::fs::write(&path, config_text(placement, MODEL, &table)?).map_err(|source| {
        BenchError::Io {
            context: "cannot write the gateway config",
            path: path.clone(),
            source,
        }
    })?;
    progress(&format!("starting the gateway: {}", placement.name()));
    let mut gateway = tokio::task::block_in_place(|| {
        GatewayProcess::start_with_config(&context.options.gateway_bin, &path)
    })?;
    gateway.wait_ready(context.client).await?;
    Ok(gateway)
}

/// Stops a gateway with SIGTERM so it drains and cleans up after itself
/// (it is killed if it takes longer).
fn stop(mut gateway: GatewayProcess) {
    tokio::task::block_in_place(|| gateway.terminate(Duration::from_secs(15)));
}

/// Binary tensors in and out, as the gateway's users would send them.
fn payload() -> PayloadSpec {
    PayloadSpec {
        batch_size: 1,
        binary: true,
        binary_output: true,
        variants: 8,
        seed: 3,
    }
}

async fn infer_target(client: &HttpClient, endpoint: Endpoint) -> Result<Variant, BenchError> {
    let target = Target::prepare(client, endpoint, MODEL, &payload()).await?;
    Ok(Variant {
        name: "",
        probe: Probe::Http(Arc::new(target)),
        proxy: Vec::new(),
    })
}

fn named(name: &'static str, variant: Variant) -> Variant {
    Variant { name, ..variant }
}

/// `variant` with the CPU time of `processes` counted.
fn proxied(processes: Vec<u32>, variant: Variant) -> Variant {
    Variant {
        proxy: processes,
        ..variant
    }
}

async fn local_section(context: &Context<'_>) -> Result<BackendSection, BenchError> {
    let config = Config::load(Path::new(Placement::LocalOnly.source()))
        .map_err(|e| BenchError::Config(e.to_string()))?;
    let setup = model_setups(&config)?
        .into_iter()
        .find(|s| s.model == MODEL)
        .ok_or_else(|| BenchError::Config(format!("the local backend does not serve {MODEL}")))?;
    let gateway = start_gateway(context, Placement::LocalOnly, None, |_| {}).await?;
    let endpoint = gateway.endpoint()?;
    let raw = RawPlan {
        model: setup.model.clone(),
        path: setup.path.clone(),
        threads: 1,
        intra_op_threads: setup.intra_op_threads,
        batch: 1,
        warmup: Duration::from_secs_f64(context.plan.warm_up_s),
        duration: Duration::from_secs_f64(context.plan.cell_s),
        max_calls: 100_000_000,
        paced_rate: None,
    };
    let variants = vec![
        Variant {
            name: "raw ort",
            probe: Probe::Raw(raw),
            proxy: Vec::new(),
        },
        proxied(
            vec![gateway.pid()],
            named(
                "switchyard",
                infer_target(context.client, endpoint.clone()).await?,
            ),
        ),
        Variant {
            name: "HTTP floor",
            probe: Probe::Http(Arc::new(Target::probe(endpoint, "/v2/health/live")?)),
            proxy: vec![gateway.pid()],
        },
    ];
    let cells = rounds(context, "local", &variants).await?;
    stop(gateway);
    Ok(BackendSection::measured(
        "local",
        "gateway (local-only) vs the raw in-process ONNX Runtime call at the same pace, and vs GET /v2/health/live on the same gateway",
        cells,
        &[("switchyard", "raw ort"), ("switchyard", "HTTP floor")],
    ))
}

/// The `[backends.container]` table of a gateway config, if it has one.
pub(crate) fn container_tier(table: &mut toml::Table) -> Option<&mut toml::Table> {
    table
        .get_mut("backends")
        .and_then(|b| b.get_mut("container"))
        .and_then(toml::Value::as_table_mut)
}

/// When the gateway takes the container's network address: a second
/// gateway on the published loopback port of its own container, and that
/// port direct.
const PUBLISHED_GATEWAY: &str = "switchyard (published route)";
const PUBLISHED: &str = "direct (published port)";

async fn container_section(
    context: &Context<'_>,
    docker: Option<&Docker>,
) -> Result<BackendSection, BenchError> {
    let docker = docker.ok_or_else(|| BenchError::Other("no Docker engine".into()))?;
    let left = remove_containers(docker, CONTAINERS).await;
    if left > 0 {
        progress(&format!(
            "removed {left} container(s) left by an earlier run"
        ));
    }
    let one_container = |table: &mut toml::Table| {
        if let Some(tier) = container_tier(table) {
            tier.insert("min_containers".into(), toml::Value::Integer(1));
            tier.insert("max_containers".into(), toml::Value::Integer(1));
        }
    };
    let cold = container_cold_starts(context, &one_container).await?;
    let gateway = start_gateway(context, Placement::ContainerOnly, None, one_container).await?;
    let worker = worker_addresses(&gateway, context.client, docker, CONTAINERS).await?;
    progress(&format!(
        "the gateway reaches its worker at {} ({} route); its published port is {}",
        worker.used, worker.route, worker.published
    ));
    // nginx and the direct baseline take the gateway's route, so the
    // comparisons measure the proxies and not the way to the container.
    let nginx = Nginx::start(context.temp, worker.used)?;
    let mut variants = vec![
        named(
            "direct",
            infer_target(context.client, worker.used_endpoint()?).await?,
        ),
        proxied(
            vec![gateway.pid()],
            named(
                "switchyard",
                infer_target(context.client, gateway.endpoint()?).await?,
            ),
        ),
    ];
    let mut pairs = vec![("switchyard", "direct"), ("nginx", "direct")];
    // When the gateway skips the published port, the same gateway on it
    // (route = "published", a container of its own) measures what that
    // is worth, and the published port direct is its baseline.
    let mut published_gateway = None;
    if worker.used != worker.published {
        let gateway = start_gateway(context, Placement::ContainerOnly, None, |table| {
            one_container(table);
            if let Some(tier) = container_tier(table) {
                tier.insert("route".into(), toml::Value::String("published".into()));
            }
        })
        .await?;
        let other = worker_addresses(&gateway, context.client, docker, CONTAINERS).await?;
        progress(&format!(
            "a second gateway reaches its own worker at {} ({} route)",
            other.used, other.route
        ));
        variants.push(named(
            PUBLISHED,
            infer_target(
                context.client,
                Endpoint::parse(&format!("http://{}", other.published), false)?,
            )
            .await?,
        ));
        variants.push(proxied(
            vec![gateway.pid()],
            named(
                PUBLISHED_GATEWAY,
                infer_target(context.client, gateway.endpoint()?).await?,
            ),
        ));
        pairs.push((PUBLISHED_GATEWAY, PUBLISHED));
        pairs.push(("switchyard", PUBLISHED_GATEWAY));
        published_gateway = Some(gateway);
    }
    if let Some(nginx) = &nginx {
        variants.push(proxied(
            nginx.processes(),
            named(
                "nginx",
                infer_target(
                    context.client,
                    Endpoint::parse(&format!("http://{}", nginx.address), false)?,
                )
                .await?,
            ),
        ));
    }
    let cells = rounds(context, "container", &variants).await?;
    drop(nginx);
    // SIGTERM: the gateways drain and remove their worker containers
    // themselves.
    stop(gateway);
    if let Some(gateway) = published_gateway {
        stop(gateway);
    }
    let mut section = BackendSection::measured(
        "container",
        &format!(
            "gateway (container-only, one worker container, which it reaches on the {} route) vs \
             the same worker container direct on that route; nginx in front of the same worker, \
             on the same route, beside it{}",
            worker.route,
            if worker.used == worker.published {
                ""
            } else {
                "; and a second gateway on the published loopback port of its own container (route = \"published\") against that port direct, the way a client reaches a container without a gateway"
            }
        ),
        cells,
        &pairs,
    );
    section.cold_start = Some(cold);
    Ok(section)
}

/// Create → ready of one worker container, `plan.container_cold_starts`
/// times, each a fresh pool as the gateway's config sets it up.
async fn container_cold_starts(
    context: &Context<'_>,
    one_container: &impl Fn(&mut toml::Table),
) -> Result<ColdStarts, BenchError> {
    let samples = container_cold_start_samples(
        context.root,
        &context.options.gateway_bin,
        CONTAINERS,
        MODEL,
        context.plan.container_cold_starts,
        one_container,
    )
    .await?;
    Ok(ColdStarts::of(
        "container create → ready (the pool's own measure)",
        &samples,
    ))
}

/// Create → ready of one worker container of the container-only config for
/// `model` (after `edit`), `count` times, each a fresh pool: the pool's own
/// measure. The image is built before the first, and not counted.
pub(crate) async fn container_cold_start_samples(
    root: &Path,
    gateway_bin: &Path,
    scope: ContainerScope,
    model: &str,
    count: usize,
    edit: &impl Fn(&mut toml::Table),
) -> Result<Vec<Duration>, BenchError> {
    let tiers = Tiers {
        model,
        gateway_bin,
        lambda_endpoint: None,
        containers: scope,
    };
    let mut table = gateway_table(Placement::ContainerOnly, &tiers)?;
    edit(&mut table);
    let tier = table
        .get("backends")
        .and_then(|b| b.get("container"))
        .ok_or_else(|| BenchError::Config("no [backends.container] table".into()))?;
    let text = toml::to_string(tier).map_err(|e| BenchError::Config(e.to_string()))?;
    let repository = ModelRepository::load(&root.join("models/repository"))?;
    let mut samples = Vec::new();
    for i in 0..count {
        let file: ContainerFile =
            from_toml(&text).map_err(|e| BenchError::Config(e.to_string()))?;
        let config = file
            .validate(&repository)
            .map_err(|e| BenchError::Config(e.to_string()))?;
        let took =
            ContainerBackend::measure_cold_start(config, &repository, Duration::from_secs(120))
                .await
                .map_err(|e| BenchError::Other(e.to_string()))?;
        progress(&format!(
            "{model}: container cold start {}: {:.1} ms",
            i + 1,
            took.as_secs_f64() * 1e3
        ));
        samples.push(took);
    }
    Ok(samples)
}

/// How a gateway reaches its one worker container, and the container's
/// published loopback port.
pub(crate) struct WorkerAddresses {
    /// Where the gateway sends its requests, as its stats report it.
    pub used: SocketAddr,
    /// `network` (the container's own address) or `published`.
    pub route: String,
    /// The port the engine publishes on 127.0.0.1 for the container.
    pub published: SocketAddr,
}

impl WorkerAddresses {
    /// The endpoint of the address the gateway uses, for going direct on
    /// the same route (a container's network address is not loopback, but
    /// it is on this machine).
    pub fn used_endpoint(&self) -> Result<Endpoint, BenchError> {
        Ok(Endpoint::parse(
            &format!("http://{}", self.used),
            self.route == "network",
        )?)
    }
}

/// The addresses of the one worker container `gateway` runs (in `scope`,
/// where other gateways may run theirs).
pub(crate) async fn worker_addresses(
    gateway: &GatewayProcess,
    client: &HttpClient,
    docker: &Docker,
    scope: ContainerScope,
) -> Result<WorkerAddresses, BenchError> {
    let stats = gateway.stats(client).await?;
    let container = stats
        .pointer("/backend_details/container/containers/0")
        .ok_or_else(|| BenchError::Gateway("the gateway's stats list no container".into()))?;
    let used = container
        .get("address")
        .and_then(serde_json::Value::as_str)
        .and_then(|a| a.parse::<SocketAddr>().ok())
        .ok_or_else(|| BenchError::Gateway(format!("no container address in {container}")))?;
    let route = container
        .get("route")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let name = container
        .get("name")
        .and_then(serde_json::Value::as_str)
        .unwrap_or_default();
    // Docker lists names with a leading slash.
    let named = format!("/{name}");
    let port = engine::list_labelled(
        docker,
        &[
            (engine::LABEL_MANAGED, "true"),
            (engine::LABEL_SCOPE, scope.scope),
        ],
    )
    .await
    .map_err(|e| BenchError::Other(format!("cannot list the worker containers: {e}")))?
    .into_iter()
    .filter(|c| c.names.as_ref().is_some_and(|n| n.contains(&named)))
    .flat_map(|c| c.ports.unwrap_or_default())
    .find_map(|p| p.public_port)
    .ok_or_else(|| BenchError::Other(format!("no container {name} with a published port")))?;
    Ok(WorkerAddresses {
        used,
        route,
        published: SocketAddr::from(([127, 0, 0, 1], port)),
    })
}

async fn lambda_section(context: &Context<'_>) -> Result<BackendSection, BenchError> {
    let repository = ModelRepository::load(&context.root.join("models/repository"))?;
    let (version, path) = repository
        .models
        .get(MODEL)
        .and_then(|m| m.latest())
        .map(|v| (v.version, v.path.clone()))
        .ok_or_else(|| BenchError::Config(format!("no {MODEL} in the repository")))?;
    let body = invoke_body(MODEL, &path, version)?;
    let mut lambda = LambdaTier::default();
    let emulator = lambda.emulator(context.root)?;
    let invoke = Endpoint::parse(&emulator.endpoint(), false)?;
    let (_, memory_mb) = lambda_instances()?;
    let function = function_path()?;
    // Cold first, while no other instance could take the invocation.
    let target = Arc::new(invoke_target(&invoke, body)?);
    let mut cold = Vec::new();
    for i in 0..context.plan.lambda_cold_starts {
        let instance = emulator
            .instance(&function, MODEL, memory_mb)
            .map_err(BenchError::Other)?;
        let took = one_request(context.client, &target).await?;
        drop(instance);
        progress(&format!(
            "Lambda cold invoke {}: {:.1} ms",
            i + 1,
            took.as_secs_f64() * 1e3
        ));
        cold.push(took);
    }
    let endpoint = lambda.ready_for(context.root, MODEL)?;
    let gateway = start_gateway(context, Placement::LambdaOnly, Some(&endpoint), |_| {}).await?;
    let (reserved, _) = lambda_instances()?;
    let variants = vec![
        Variant {
            name: "direct invoke",
            probe: Probe::Bounded(target, usize::try_from(reserved).unwrap_or(1)),
            proxy: Vec::new(),
        },
        proxied(
            vec![gateway.pid()],
            named(
                "switchyard",
                infer_target(context.client, gateway.endpoint()?).await?,
            ),
        ),
    ];
    let cells = rounds(context, "lambda", &variants).await?;
    stop(gateway);
    drop(lambda);
    let mut section = BackendSection::measured(
        "lambda",
        "gateway (Lambda-only) vs a direct Invoke of the same function on the same emulator",
        cells,
        &[("switchyard", "direct invoke")],
    );
    section.cold_start = (!cold.is_empty())
        .then(|| ColdStarts::of("Lambda first invoke of a fresh instance", &cold));
    Ok(section)
}

/// The Invoke event of one batch-1 request of `model` with random inputs,
/// in the format the gateway sends, for the model version at `path`.
pub(crate) fn invoke_body(
    model: &str,
    path: &Path,
    version: u64,
) -> Result<RequestBody, BenchError> {
    let session = ModelSession::load(model, path, SessionOptions::default())?;
    let mut rng = SplitMix64::new(3);
    let inputs = random_inputs(&session.specs().inputs, 1, &mut rng).map_err(BenchError::Other)?;
    let request = InferRequest {
        inputs,
        binary_data_output: true,
        ..InferRequest::default()
    };
    let bytes = InvokeEvent::new(model, version, &request)
        .and_then(|event| event.to_payload())
        .map_err(|e| BenchError::Other(format!("cannot build the Invoke event: {e}")))?;
    Ok(RequestBody {
        bytes: bytes.into(),
        json_length: None,
        rows: 1,
        binary_output: true,
    })
}

/// `POST /2015-03-31/functions/NAME/invocations` with `body`.
pub(crate) fn invoke_target(endpoint: &Endpoint, body: RequestBody) -> Result<Target, BenchError> {
    let entry = TargetEntry::new(
        "invoke",
        1,
        1.0,
        Method::POST,
        endpoint.uri(&format!("/2015-03-31/functions/{FUNCTION}/invocations"))?,
        vec![body],
    )?;
    Ok(Target::from_entries(endpoint.clone(), vec![entry], 0)?)
}

/// One request, its latency; an error unless it succeeded.
pub(crate) async fn one_request(
    client: &HttpClient,
    target: &Arc<Target>,
) -> Result<Duration, BenchError> {
    let mut settings = RunSettings::new(
        Load::Closed {
            concurrency: 1,
            duration: Duration::from_secs(60),
        },
        Duration::from_secs(60),
    );
    settings.max_requests = Some(1);
    let recording = run(client, target, &settings).await?;
    match recording.recorder.latency(Outcome::Success) {
        Some(h) if !h.is_empty() => Ok(Duration::from_micros(h.max())),
        _ => Err(BenchError::Other(format!(
            "the request to {} failed",
            target.endpoint.base_url()
        ))),
    }
}

/// What one path at one rate gave, over all rounds.
#[derive(Default)]
struct Tally {
    latency: Option<Histogram<u64>>,
    requests: u64,
    errors: BTreeMap<&'static str, u64>,
    busy_cores: Vec<f64>,
    /// The proxy's CPU time over the rounds, with the requests due in them.
    proxy_cpu: Option<(Duration, u64)>,
}

/// One measured cell: the 2xx latencies, the requests due and the ones
/// that failed, by outcome.
struct Measured {
    latency: Histogram<u64>,
    requests: u64,
    errors: BTreeMap<&'static str, u64>,
    /// CPU time of the variant's proxy processes while it was recorded.
    proxy_cpu: Option<Duration>,
}

/// Every path of `variants` at every rate, `plan.rounds` times, in
/// [`round_order`]; the rounds merged.
async fn rounds(
    context: &Context<'_>,
    backend: &str,
    variants: &[Variant],
) -> Result<Vec<Cell>, BenchError> {
    let plan = context.plan;
    let mut tallies: BTreeMap<(usize, usize), Tally> = BTreeMap::new();
    for round in 0..plan.rounds {
        for (r, &rate) in RATES.iter().enumerate() {
            let order = round_order(variants.len(), round, r);
            for v in order {
                let variant = &variants[v];
                let before = MachineCpu::read();
                let started = Instant::now();
                let Measured {
                    latency,
                    requests,
                    errors,
                    proxy_cpu,
                } = measure(context, variant, rate).await?;
                let busy = match (before, MachineCpu::read()) {
                    (Some(a), Some(b)) => a.busy_cores_until(&b, started.elapsed()),
                    _ => 0.0,
                };
                progress(&format!(
                    "{backend} / {} at {rate:.0}/s, round {}: p50 {} µs, p99 {} µs, {} errors of {requests}, machine busy {busy:.2} cores",
                    variant.name,
                    round + 1,
                    latency.value_at_quantile(0.5),
                    latency.value_at_quantile(0.99),
                    errors.values().sum::<u64>(),
                ));
                let tally = tallies.entry((v, r)).or_default();
                if let Some(merged) = tally.latency.as_mut() {
                    merged.add(&latency).map_err(|e| {
                        BenchError::Other(format!("cannot merge histograms: {e:?}"))
                    })?;
                } else {
                    tally.latency = Some(latency);
                }
                tally.requests += requests;
                for (outcome, n) in errors {
                    *tally.errors.entry(outcome).or_default() += n;
                }
                tally.busy_cores.push(busy);
                if let Some(cpu) = proxy_cpu {
                    let (sum, due) = tally.proxy_cpu.get_or_insert((Duration::ZERO, 0));
                    *sum += cpu;
                    *due += requests;
                }
            }
        }
    }
    Ok(tallies
        .into_iter()
        .map(|((v, r), tally)| {
            let latency = tally.latency.unwrap_or_else(histogram);
            let mut cell = Cell::new(
                variants[v].name,
                RATES[r],
                plan.rounds,
                tally.requests,
                &tally.errors,
                &latency,
                &tally.busy_cores,
            );
            cell.proxy_cpu_us_per_request = tally
                .proxy_cpu
                .filter(|&(_, due)| due > 0)
                .map(|(cpu, due)| cpu.as_secs_f64() * 1e6 / due as f64);
            cell
        })
        .collect())
}

/// The order of `paths` paths in `round` at rate number `rate`: reversed
/// every other round, and the two rates of a round in opposite orders, so
/// that each path runs early and late as often at every rate.
fn round_order(paths: usize, round: usize, rate: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..paths).collect();
    if (round + rate) % 2 == 1 {
        order.reverse();
    }
    order
}

/// The CPU time of `processes` so far; `None` if there are none or one
/// cannot be read.
fn cpu_of(processes: &[u32]) -> Option<Duration> {
    if processes.is_empty() {
        return None;
    }
    processes.iter().map(|&pid| process_cpu_time(pid)).sum()
}

/// One measured cell, after its warm-up.
async fn measure(
    context: &Context<'_>,
    variant: &Variant,
    rate: f64,
) -> Result<Measured, BenchError> {
    let plan = context.plan;
    let probe = &variant.probe;
    match probe {
        Probe::Raw(raw) => {
            let paced = RawPlan {
                paced_rate: Some(rate),
                ..raw.clone()
            };
            let result = tokio::task::block_in_place(|| run_raw(&paced))?;
            Ok(Measured {
                latency: result.histogram,
                requests: result.calls,
                errors: BTreeMap::new(),
                proxy_cpu: None,
            })
        }
        Probe::Http(target) | Probe::Bounded(target, _) => {
            let max_in_flight = match probe {
                Probe::Bounded(_, limit) => *limit,
                _ => plan.max_in_flight,
            };
            let settings = |seconds: f64| -> Result<RunSettings, BenchError> {
                let duration = Duration::from_secs_f64(seconds);
                let mut settings = RunSettings::new(
                    Load::constant_rate(rate, duration, max_in_flight)?,
                    Duration::from_secs_f64(plan.request_timeout_s),
                );
                settings.max_requests = Some(10_000_000);
                Ok(settings)
            };
            run(context.client, target, &settings(plan.warm_up_s)?).await?;
            let cpu_before = cpu_of(&variant.proxy);
            let recording = run(context.client, target, &settings(plan.cell_s)?).await?;
            let proxy_cpu = cpu_before
                .zip(cpu_of(&variant.proxy))
                .map(|(before, after)| after.saturating_sub(before));
            let recorder = &recording.recorder;
            Ok(Measured {
                latency: recorder
                    .latency(Outcome::Success)
                    .cloned()
                    .unwrap_or_else(histogram),
                requests: recorder.overall().due(),
                errors: Outcome::ALL
                    .into_iter()
                    .filter(|o| *o != Outcome::Success && recorder.count(*o) > 0)
                    .map(|o| (o.label(), recorder.count(o)))
                    .collect(),
                proxy_cpu,
            })
        }
    }
}

/// nginx (the Debian package) as a keep-alive reverse proxy on loopback,
/// its config in the run's temporary folder; stopped when dropped.
struct Nginx {
    child: Child,
    address: SocketAddr,
}

impl Nginx {
    /// `None` (and a note) when nginx is not installed or does not start.
    fn start(dir: &Path, upstream: SocketAddr) -> Result<Option<Self>, BenchError> {
        let find = || {
            ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
                .into_iter()
                .find(|p| Path::new(p).exists())
        };
        if let Err(why) = crate::machine::apt_install("nginx-light", || find().is_some()) {
            progress(&format!("{why}: no nginx rows"));
        }
        let Some(binary) = find() else {
            return Ok(None);
        };
        let listen = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|source| BenchError::Io {
                context: "cannot find a free port for nginx",
                path: PathBuf::from("127.0.0.1:0"),
                source,
            })?;
        let conf = dir.join("nginx.conf");
        let text = format!(
            "worker_processes 1;\npid {dir}/nginx.pid;\nerror_log {dir}/error.log;\n\
             events {{ worker_connections 4096; }}\n\
             http {{\n access_log off;\n client_body_temp_path {dir};\n proxy_temp_path {dir};\n\
             upstream worker {{ server {upstream}; keepalive 256; }}\n\
             server {{ listen {listen}; location / {{ proxy_pass http://worker; proxy_http_version 1.1;\n\
             proxy_set_header Connection \"\"; proxy_buffering off; client_max_body_size 64m; }} }}\n}}\n",
            dir = dir.display(),
        );
        std::fs::write(&conf, text).map_err(|source| BenchError::Io {
            context: "cannot write the nginx config",
            path: conf.clone(),
            source,
        })?;
        let child = Command::new(binary)
            .arg("-c")
            .arg(&conf)
            .args(["-g", "daemon off;"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|source| BenchError::Io {
                context: "cannot start nginx",
                path: PathBuf::from(binary),
                source,
            })?;
        let mut nginx = Self {
            child,
            address: listen,
        };
        // Listening is enough: a broken upstream shows in the first cell's
        // warm-up and errors.
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(listen).is_err() {
            if Instant::now() > deadline || matches!(nginx.child.try_wait(), Ok(Some(_))) {
                progress(&format!(
                    "nginx did not start (see {}/error.log): no nginx rows",
                    dir.display()
                ));
                return Ok(None);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Some(nginx))
    }
}

impl Nginx {
    /// The master and its worker (`worker_processes 1`).
    fn processes(&self) -> Vec<u32> {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        std::iter::once(master)
            .chain(children.split_whitespace().filter_map(|p| p.parse().ok()))
            .collect()
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // SIGTERM: the master stops its worker too (SIGKILL would orphan it).
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rate_alternates_its_order_across_rounds() {
        assert_eq!(round_order(3, 0, 0), [0, 1, 2]);
        assert_eq!(round_order(3, 0, 1), [2, 1, 0]);
        assert_eq!(round_order(3, 1, 0), [2, 1, 0]);
        assert_eq!(round_order(3, 1, 1), [0, 1, 2]);
    }

    #[test]
    fn backends_are_chosen_by_name_in_run_order() {
        let options = |names: &[&str]| OverheadOptions {
            quick: true,
            gateway_bin: PathBuf::new(),
            backends: names.iter().map(|n| (*n).to_owned()).collect(),
            command: String::new(),
        };
        assert_eq!(chosen_backends(&options(&[])).unwrap(), BACKENDS);
        assert_eq!(
            chosen_backends(&options(&["lambda", "local"])).unwrap(),
            ["local", "lambda"]
        );
        assert!(chosen_backends(&options(&["gpu"])).is_err());
    }
}
