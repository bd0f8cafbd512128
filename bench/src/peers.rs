//! `switchyard-bench peers`: Switchyard against the servers its users would
//! pick instead, on the same machine, in the same run, with the same client.
//!
//! The peers: Flask + gunicorn + ONNX Runtime (the StraightLine paper's
//! local server), MLServer with an ONNX Runtime model class, Ray Serve with
//! ONNX Runtime behind v2 routes (all three from PyPI, in virtualenvs the
//! bench makes from `bench/peers/requirements*.txt`), and the raw
//! in-process ONNX Runtime loop of [`crate::raw`], the physical limit.
//! Every HTTP server gets the same pre-encoded JSON request bodies from the
//! `switchyard-loadgen` library, open loop, latency from the intended send
//! time. For each model the bench finds each server's highest rate whose
//! p99 is within 50 ms with no error ([`search`]), then runs every server at
//! one rate all of them sustained (half the weakest one's maximum), and
//! reports the ratios the issue sets targets for.
//!
//! Servers are started one after the other, each measured on its own, and
//! kept running (idle) until the fixed-rate runs at the end; the slowest to
//! start, Ray, goes last so that its idle cluster sits beside no search
//! but its own.

mod search;
mod servers;

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_loadgen::payload::build_bodies;
use switchyard_loadgen::plot::{Line, Panel, xy_svg};
use switchyard_loadgen::target::fetch_metadata;
use switchyard_loadgen::{
    Endpoint, HttpClient, Load, PayloadSpec, RequestBody, RunSettings, Target, http_client, run,
};
use switchyard_models::{ModelSession, SessionOptions};
use switchyard_scheduler::Config;

pub use self::search::{Probed, SearchPlan, passes, search_max_rate};
use self::servers::{PEERS_DIR, PeerProcess, VenvSpec, ensure_venv, free_port};
use crate::error::BenchError;
use crate::gateway_process::{GatewayProcess, LOCAL_ONLY_CONFIG};
use crate::local::{LocalOptions, ModelSetup, gateway_binary, model_setups, progress};
use crate::machine::{Machine, MachineCpu, load_average, utc_now};
use crate::raw::{RawPlan, RawResult, run_raw};

/// The latency limit of "max throughput".
pub const P99_LIMIT_US: u64 = 50_000;
/// The targets: Switchyard's max throughput over each peer's.
pub const TARGET_VS_FLASK: f64 = 5.0;
pub const TARGET_VS_MLSERVER: f64 = 3.0;
pub const TARGET_VS_RAW: f64 = 0.9;

/// A server under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Server {
    Switchyard,
    /// The same gateway process, with binary tensors in and out.
    SwitchyardBinary,
    Flask,
    Mlserver,
    RayServe,
}

impl Server {
    pub fn label(self) -> &'static str {
        match self {
            Server::Switchyard => "Switchyard",
            Server::SwitchyardBinary => "Switchyard, binary tensors",
            Server::Flask => "Flask + gunicorn",
            Server::Mlserver => "MLServer",
            Server::RayServe => "Ray Serve",
        }
    }

    fn binary(self) -> bool {
        self == Server::SwitchyardBinary
    }
}

/// The order servers are started and searched in (see the module docs).
const START_ORDER: [Server; 4] = [
    Server::Flask,
    Server::Mlserver,
    Server::Switchyard,
    Server::RayServe,
];

/// Every duration and bound of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub quick: bool,
    pub models: Vec<String>,
    pub search: SearchPlan,
    /// Each search step, open loop at one constant rate.
    pub step_s: f64,
    /// Unmeasured, at the start rate, before a server's first step per model.
    pub warmup_s: f64,
    /// After a failed step: pause this long, then probe (a few requests at
    /// `drain_probe_rate`) until the server answers within the limit again,
    /// for at most `drain_max_s`, so that a backlog the failed step left
    /// (Ray Serve queues without bound) does not fail the next step.
    pub settle_s: f64,
    pub drain_probe_rate: f64,
    pub drain_max_s: f64,
    /// No search step starts later than this after the servers' start (the
    /// rest of that search, and of the searches after it, is cut and the
    /// table says so); start-ups count.
    pub search_budget_s: f64,
    /// Also measure Switchyard with binary tensors (full runs).
    pub binary_row: bool,
    /// The fixed rate is this fraction of the weakest server's maximum.
    pub fixed_fraction: f64,
    /// Each fixed-rate run lasts this long, or longer (up to
    /// `fixed_max_s`) until `fixed_min_requests` were due, so that a low
    /// rate still has a p99 worth the name.
    pub fixed_s: f64,
    pub fixed_max_s: f64,
    pub fixed_min_requests: u64,
    pub raw_warmup_s: f64,
    pub raw_s: f64,
    pub request_timeout_s: f64,
    /// Requests outstanding at once; more are dropped (and fail the step).
    pub max_in_flight: usize,
    /// Threads of the client's async runtime.
    pub client_threads: usize,
    /// gunicorn workers, MLServer parallel workers, Ray replicas and raw
    /// threads: one per core.
    pub workers: usize,
    pub p99_limit_us: u64,
    pub startup_limit_s: f64,
}

impl Plan {
    pub fn new(quick: bool, cores: usize) -> Self {
        let models = if quick {
            vec!["fashion_cnn".to_owned()]
        } else {
            crate::local::MODELS
                .iter()
                .map(|m| (*m).to_owned())
                .collect()
        };
        Self {
            quick,
            models,
            search: SearchPlan {
                start_rate: 200.0,
                growth: if quick { 4.0 } else { 2.0 },
                max_rate: 64_000.0,
                min_rate: 10.0,
                refine_steps: if quick { 1 } else { 3 },
                tolerance: 0.05,
                max_steps: if quick { 4 } else { 16 },
                confirm_failures: !quick,
            },
            step_s: if quick { 0.8 } else { 2.5 },
            warmup_s: if quick { 0.3 } else { 1.0 },
            settle_s: if quick { 0.2 } else { 0.5 },
            drain_probe_rate: 10.0,
            drain_max_s: if quick { 1.5 } else { 6.0 },
            search_budget_s: if quick { 38.0 } else { 420.0 },
            binary_row: !quick,
            fixed_fraction: 0.5,
            fixed_s: if quick { 1.0 } else { 5.0 },
            fixed_max_s: if quick { 1.0 } else { 10.0 },
            fixed_min_requests: 200,
            raw_warmup_s: if quick { 0.2 } else { 1.0 },
            raw_s: if quick { 1.0 } else { 5.0 },
            request_timeout_s: 0.5,
            max_in_flight: 1024,
            client_threads: 1,
            workers: cores.max(1),
            p99_limit_us: P99_LIMIT_US,
            startup_limit_s: 120.0,
        }
    }

    /// How long a fixed-rate run at `rate` lasts.
    #[allow(clippy::cast_precision_loss)]
    pub fn fixed_seconds(&self, rate: f64) -> f64 {
        let for_requests = self.fixed_min_requests as f64 / rate.max(1e-3);
        self.fixed_s.max(for_requests).min(self.fixed_max_s)
    }

    /// The longest the measurements can take: the search budget (start-ups
    /// included), one failed step and its drain past it, the fixed-rate
    /// runs and the raw loops.
    pub fn worst_case_s(&self) -> f64 {
        let runs = if self.binary_row { 5.0 } else { 4.0 };
        let models = self.models.len() as f64;
        let overrun = self.step_s + self.request_timeout_s + 1.0 + self.drain_max_s;
        let fixed = models * runs * (self.fixed_max_s + self.request_timeout_s + 1.0);
        let raw = models * (self.raw_warmup_s + self.raw_s);
        self.search_budget_s + overrun + fixed + raw
    }
}

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct PeersOptions {
    pub quick: bool,
    pub gateway: LocalOptions,
}

/// One open-loop run at one rate.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub rate_per_s: f64,
    /// Successful requests per second.
    pub achieved_per_s: f64,
    pub sent: u64,
    pub successes: u64,
    /// Errors, timeouts and dropped requests.
    pub errors: u64,
    /// From the intended send time, successful requests.
    pub p50_us: u64,
    pub p99_us: u64,
    /// The whole machine's busy cores meanwhile (the client, the server and
    /// any other work).
    pub machine_busy_cores: f64,
    pub passed: bool,
}

impl Probed for Step {
    fn rate(&self) -> f64 {
        self.rate_per_s
    }
    fn passed(&self) -> bool {
        self.passed
    }
}

/// How a server was set up and started.
#[derive(Debug, Clone, Serialize)]
pub struct ServerSetup {
    pub server: Server,
    pub label: &'static str,
    /// Processes, workers and threads, in words.
    pub setup: String,
    pub startup_s: Option<f64>,
    /// Why it could not be measured (install, start-up or metadata error).
    pub unavailable: Option<String>,
}

/// One server on one model.
#[derive(Debug, Clone, Serialize)]
pub struct ServerRun {
    pub server: Server,
    pub label: &'static str,
    pub steps: Vec<Step>,
    /// The passing step with the highest rate.
    pub best: Option<Step>,
    /// The run at the model's fixed rate.
    pub fixed: Option<Step>,
    pub unavailable: Option<String>,
    /// The search was cut by the time budget.
    pub cut_short: bool,
}

impl ServerRun {
    fn unavailable(server: Server, reason: &str) -> Self {
        Self {
            server,
            label: server.label(),
            steps: Vec::new(),
            best: None,
            fixed: None,
            unavailable: Some(reason.to_owned()),
            cut_short: false,
        }
    }

    /// Successful requests per second at the best passing rate.
    pub fn max_throughput(&self) -> Option<f64> {
        self.best.as_ref().map(|s| s.achieved_per_s)
    }
}

/// A ratio of max throughputs and its target.
#[derive(Debug, Clone, Serialize)]
pub struct Ratio {
    pub name: String,
    pub value: Option<f64>,
    pub target: Option<f64>,
    pub met: Option<bool>,
    /// Why there is no value, when there is none.
    pub note: String,
}

/// Everything measured on one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelPeers {
    pub model: String,
    /// Batch 1, one thread per core, back to back.
    pub raw: Option<RawResult>,
    pub raw_error: Option<String>,
    pub runs: Vec<ServerRun>,
    pub fixed_rate_per_s: Option<f64>,
    pub ratios: Vec<Ratio>,
}

/// The whole run, as written to `peers.json`.
#[derive(Debug, Clone, Serialize)]
pub struct PeersResults {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub load_average_at_end: String,
    pub elapsed_s: f64,
    pub plan: Plan,
    pub client: String,
    pub servers: Vec<ServerSetup>,
    pub models: Vec<ModelPeers>,
}

/// What the measurement phase needs, prepared before it.
struct Context {
    plan: Plan,
    gateway_bin: PathBuf,
    setups: Vec<ModelSetup>,
    /// Per model: JSON bodies, then binary ones.
    bodies: Vec<(Vec<RequestBody>, Vec<RequestBody>)>,
    /// `bin/` of the Flask + MLServer virtualenv, or why it is missing.
    python: Result<PathBuf, String>,
    ray_python: Result<PathBuf, String>,
    root: PathBuf,
    temp: TempDir,
}

/// Runs the whole benchmark.
pub fn run_peers(options: &PeersOptions) -> Result<PeersResults, BenchError> {
    let started = Instant::now();
    let machine = Machine::describe();
    let plan = Plan::new(options.quick, machine.nproc);
    let date = utc_now();
    let root = std::env::current_dir().map_err(|source| BenchError::Io {
        context: "cannot read the current directory",
        path: PathBuf::from("."),
        source,
    })?;
    let config = Config::load(Path::new(LOCAL_ONLY_CONFIG))
        .map_err(|e| BenchError::Config(e.to_string()))?;
    let setups: Vec<ModelSetup> = model_setups(&config)?
        .into_iter()
        .filter(|s| plan.models.contains(&s.model))
        .collect();
    let gateway_bin = gateway_binary(&options.gateway)?;

    let python = set_up_venv(&root, ".venv-peers", "requirements.txt");
    let ray_python = set_up_venv(&root, ".venv-peers-ray", "requirements-ray.txt");

    let mut bodies = Vec::new();
    let mut raw = Vec::new();
    for setup in &setups {
        bodies.push(request_bodies(setup)?);
        progress(&format!(
            "raw ONNX Runtime loop: {} batch 1, {} threads x 1 intra-op, {:.1} s",
            setup.model, plan.workers, plan.raw_s
        ));
        let result = run_raw(&RawPlan {
            model: setup.model.clone(),
            path: setup.path.clone(),
            threads: plan.workers,
            intra_op_threads: 1,
            batch: 1,
            warmup: Duration::from_secs_f64(plan.raw_warmup_s),
            duration: Duration::from_secs_f64(plan.raw_s),
            max_calls: 100_000_000,
            paced_rate: None,
        });
        if let Ok(r) = &result {
            progress(&format!(
                "  {:.0} items/s, p50 {} µs, p99 {} µs per call",
                r.items_per_s, r.latency_us.p50, r.latency_us.p99
            ));
        }
        raw.push(result.map_err(|e| e.to_string()));
    }

    progress(&format!(
        "measuring: at most {:.0} s of load plus the servers' start-ups",
        plan.worst_case_s()
    ));
    let context = Context {
        plan: plan.clone(),
        gateway_bin,
        setups,
        bodies,
        python,
        ray_python,
        root,
        temp: TempDir::new()?,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.client_threads)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Other(format!("cannot start the async runtime: {e}")))?;
    let (servers, runs) = runtime.block_on(async {
        tokio::select! {
            result = measure_servers(&context) => result,
            // Ctrl-C or SIGTERM: every server is stopped on the way out.
            () = switchyard_scheduler::server::shutdown_signal() => Err(BenchError::Other("interrupted; the servers were stopped".into())),
        }
    })?;

    let models = context
        .setups
        .iter()
        .zip(raw)
        .zip(runs)
        .map(|((setup, raw), runs)| {
            let (raw, raw_error) = match raw {
                Ok(r) => (Some(r), None),
                Err(e) => (None, Some(e)),
            };
            let fixed_rate_per_s = fixed_rate(&runs, plan.fixed_fraction);
            let ratios = ratios(&runs, raw.as_ref());
            ModelPeers {
                model: setup.model.clone(),
                raw,
                raw_error,
                runs,
                fixed_rate_per_s,
                ratios,
            }
        })
        .collect();
    Ok(PeersResults {
        date,
        command: options.gateway.command.clone(),
        machine,
        load_average_at_end: load_average(),
        elapsed_s: started.elapsed().as_secs_f64(),
        client: format!(
            "switchyard-loadgen library in the bench process ({} runtime thread), open loop at constant spacing, \
             latency from each request's intended send time; the same {} pre-encoded JSON bodies (batch 1) for every server; \
             request timeout {} s, at most {} in flight",
            plan.client_threads,
            PayloadSpec::default().variants,
            plan.request_timeout_s,
            plan.max_in_flight
        ),
        plan,
        servers,
        models,
    })
}

fn set_up_venv(root: &Path, dir: &str, requirements: &str) -> Result<PathBuf, String> {
    let spec = VenvSpec {
        dir: root.join("bench").join(dir),
        requirements: root.join(PEERS_DIR).join(requirements),
    };
    let result = ensure_venv(&spec);
    if let Err(error) = &result {
        progress(&format!("set-up of {} failed: {error}", spec.dir.display()));
    }
    result
}

/// The model's batch-1 request bodies, JSON and binary, from the ONNX
/// file's own input specs (so no server's metadata shapes them).
fn request_bodies(setup: &ModelSetup) -> Result<(Vec<RequestBody>, Vec<RequestBody>), BenchError> {
    let session = ModelSession::load(
        &setup.model,
        &setup.path,
        SessionOptions {
            intra_op_threads: 1,
        },
    )?;
    let inputs = &session.specs().inputs;
    let encode = |binary: bool| {
        build_bodies(
            inputs,
            &PayloadSpec {
                binary,
                binary_output: binary,
                ..PayloadSpec::default()
            },
        )
        .map_err(BenchError::Other)
    };
    Ok((encode(false)?, encode(true)?))
}

/// A server that is up, and what stops it when dropped.
struct Running {
    server: Server,
    endpoint: Endpoint,
    _process: Process,
}

enum Process {
    Gateway(GatewayProcess),
    Peer(PeerProcess),
}

/// Starts, searches and keeps each server, then runs them all at the fixed
/// rate; every server is stopped when this returns or is dropped.
async fn measure_servers(
    context: &Context,
) -> Result<(Vec<ServerSetup>, Vec<Vec<ServerRun>>), BenchError> {
    let plan = &context.plan;
    let client = http_client(plan.max_in_flight);
    let models: Vec<&str> = context.setups.iter().map(|s| s.model.as_str()).collect();
    let mut setups = Vec::new();
    let mut runs: Vec<Vec<ServerRun>> = vec![Vec::new(); models.len()];
    let mut running: Vec<Running> = Vec::new();
    let search_deadline = Instant::now() + Duration::from_secs_f64(plan.search_budget_s);
    for server in START_ORDER {
        let variants: &[Server] = if server == Server::Switchyard && plan.binary_row {
            &[Server::Switchyard, Server::SwitchyardBinary]
        } else {
            &[server]
        };
        progress(&format!("starting {}", server.label()));
        let begun = Instant::now();
        let started = start(server, context, &client, &models).await;
        let mut setup = ServerSetup {
            server,
            label: server.label(),
            setup: describe_setup(server, context),
            startup_s: None,
            unavailable: None,
        };
        let process = match started {
            Ok(process) => process,
            Err(error) => {
                let reason = error.to_string();
                progress(&format!("  {} is not measured: {reason}", server.label()));
                for &variant in variants {
                    for model_runs in &mut runs {
                        model_runs.push(ServerRun::unavailable(variant, &reason));
                    }
                }
                setup.unavailable = Some(reason);
                setups.push(setup);
                continue;
            }
        };
        setup.startup_s = Some(begun.elapsed().as_secs_f64());
        progress(&format!(
            "  ready after {:.1} s",
            begun.elapsed().as_secs_f64()
        ));
        let endpoint = match &process {
            Process::Gateway(gateway) => gateway.endpoint()?,
            Process::Peer(peer) => peer.endpoint()?,
        };
        setups.push(setup);
        for &variant in variants {
            for (index, model) in models.iter().enumerate() {
                let target = Arc::new(target_for(context, index, variant, &endpoint)?);
                progress(&format!("{} on {model}: rate search", variant.label()));
                let run = search_one(&client, &target, variant, plan, search_deadline).await?;
                runs[index].push(run);
            }
        }
        running.push(Running {
            server,
            endpoint,
            _process: process,
        });
    }

    for (index, model) in models.iter().enumerate() {
        let Some(rate) = fixed_rate(&runs[index], plan.fixed_fraction) else {
            progress(&format!(
                "{model}: no server passed any rate; no fixed-rate runs"
            ));
            continue;
        };
        for server_run in &mut runs[index] {
            let variant = server_run.server;
            let base = if variant == Server::SwitchyardBinary {
                Server::Switchyard
            } else {
                variant
            };
            let Some(up) = running.iter().find(|r| r.server == base) else {
                continue;
            };
            let target = Arc::new(target_for(context, index, variant, &up.endpoint)?);
            let seconds = plan.fixed_seconds(rate);
            progress(&format!(
                "{} on {model}: fixed rate {rate:.0}/s, {seconds:.1} s",
                variant.label()
            ));
            let step = step(&client, &target, rate, seconds, plan).await?;
            progress(&format!(
                "  p50 {} µs, p99 {} µs, errors {}",
                step.p50_us, step.p99_us, step.errors
            ));
            server_run.fixed = Some(step);
        }
    }
    progress("stopping the servers");
    drop(running);
    Ok((setups, runs))
}

fn target_for(
    context: &Context,
    index: usize,
    server: Server,
    endpoint: &Endpoint,
) -> Result<Target, BenchError> {
    let (json, binary) = &context.bodies[index];
    let bodies = if server.binary() { binary } else { json };
    Ok(Target::new(
        endpoint.clone(),
        &context.setups[index].model,
        bodies.clone(),
    )?)
}

/// Starts `server`, waits until it and every model are ready, and checks
/// that each model's v2 metadata is served.
async fn start(
    server: Server,
    context: &Context,
    client: &HttpClient,
    models: &[&str],
) -> Result<Process, BenchError> {
    let limit = Duration::from_secs_f64(context.plan.startup_limit_s);
    let process = match server {
        Server::Switchyard | Server::SwitchyardBinary => {
            let mut gateway = GatewayProcess::start(&context.gateway_bin)?;
            gateway.wait_ready(client).await?;
            Process::Gateway(gateway)
        }
        Server::Flask | Server::Mlserver | Server::RayServe => {
            let mut peer = spawn_peer(server, context)?;
            peer.wait_ready(client, models, limit).await?;
            Process::Peer(peer)
        }
    };
    let endpoint = match &process {
        Process::Gateway(gateway) => gateway.endpoint()?,
        Process::Peer(peer) => peer.endpoint()?,
    };
    for model in models {
        fetch_metadata(client, &endpoint, model).await?;
    }
    Ok(process)
}

fn venv_bin(result: &Result<PathBuf, String>) -> Result<PathBuf, BenchError> {
    result
        .clone()
        .map_err(|e| BenchError::Other(format!("set-up failed: {e}")))
}

/// `name=path,...` of the models, as the Python servers read it.
fn peers_models(context: &Context) -> String {
    context
        .setups
        .iter()
        .map(|s| format!("{}={}", s.model, context.root.join(&s.path).display()))
        .collect::<Vec<_>>()
        .join(",")
}

fn spawn_peer(server: Server, context: &Context) -> Result<PeerProcess, BenchError> {
    let port = free_port()?;
    let peers_dir = context.root.join(PEERS_DIR);
    let workers = context.plan.workers.to_string();
    let temp = &context.temp.path;
    let env = vec![
        ("PEERS_MODELS".to_owned(), peers_models(context)),
        ("PYTHONPATH".to_owned(), peers_dir.display().to_string()),
        ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
    ];
    let log = temp.join(format!("{server:?}.log").to_lowercase());
    match server {
        Server::Flask => {
            let bin = venv_bin(&context.python)?;
            let args = [
                "--workers",
                &workers,
                "--worker-class",
                "sync",
                "--threads",
                "1",
                "--bind",
                &format!("127.0.0.1:{port}"),
                "--control-socket",
                &temp.join("gunicorn.ctl").display().to_string(),
                "--chdir",
                &peers_dir.display().to_string(),
                "flask_server:app",
            ]
            .map(str::to_owned);
            PeerProcess::spawn(
                server.label(),
                &bin.join("gunicorn"),
                &args,
                &env,
                temp,
                port,
                log,
            )
        }
        Server::Mlserver => {
            let bin = venv_bin(&context.python)?;
            let folder = write_mlserver_settings(context, port)?;
            PeerProcess::spawn(
                server.label(),
                &bin.join("mlserver"),
                &["start".to_owned(), folder.display().to_string()],
                &env,
                &folder,
                port,
                log,
            )
        }
        Server::RayServe => {
            let bin = venv_bin(&context.ray_python)?;
            let args = [
                peers_dir.join("ray_server.py").display().to_string(),
                port.to_string(),
                workers,
                temp.join("ray").display().to_string(),
            ];
            PeerProcess::spawn(
                server.label(),
                &bin.join("python"),
                &args,
                &env,
                temp,
                port,
                log,
            )
        }
        Server::Switchyard | Server::SwitchyardBinary => {
            Err(BenchError::Other("the gateway is not a Python peer".into()))
        }
    }
}

/// MLServer's settings.json and one model-settings.json per model, in a
/// folder of the run's temporary directory.
fn write_mlserver_settings(context: &Context, port: u16) -> Result<PathBuf, BenchError> {
    let folder = context.temp.path.join("mlserver");
    let write = |path: PathBuf, value: serde_json::Value| {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|source| BenchError::Io {
                context: "cannot create MLServer's settings folder",
                path: parent.to_owned(),
                source,
            })?;
        }
        std::fs::write(&path, value.to_string()).map_err(|source| BenchError::Io {
            context: "cannot write MLServer's settings",
            path,
            source,
        })
    };
    write(
        folder.join("settings.json"),
        serde_json::json!({
            "debug": false,
            "host": "127.0.0.1",
            "http_port": port,
            "grpc_port": free_port()?,
            "metrics_port": free_port()?,
            "metrics_endpoint": null,
            "parallel_workers": context.plan.workers,
            "load_models_at_startup": true,
        }),
    )?;
    for setup in &context.setups {
        write(
            folder.join(&setup.model).join("model-settings.json"),
            serde_json::json!({
                "name": setup.model,
                "implementation": "mlserver_onnx.OnnxRuntimeModel",
                "parameters": {
                    "uri": context.root.join(&setup.path).display().to_string(),
                    "version": "1",
                },
            }),
        )?;
    }
    Ok(folder)
}

fn describe_setup(server: Server, context: &Context) -> String {
    let workers = context.plan.workers;
    match server {
        Server::Switchyard | Server::SwitchyardBinary => {
            let models: Vec<String> = context
                .setups
                .iter()
                .map(|s| {
                    format!(
                        "{} {} worker(s) x {} intra-op",
                        s.model, s.workers, s.intra_op_threads
                    )
                })
                .collect();
            format!(
                "release binary, {LOCAL_ONLY_CONFIG}, one process (tokio runtime, dynamic batching); {}",
                models.join(", ")
            )
        }
        Server::Flask => format!(
            "gunicorn, {workers} sync worker processes x 1 thread, a session per model per worker (1 intra-op thread)"
        ),
        Server::Mlserver => format!(
            "mlserver start, one uvicorn HTTP process + {workers} parallel inference worker processes, custom ONNX Runtime model class (1 intra-op thread)"
        ),
        Server::RayServe => format!(
            "one-node Ray cluster on loopback, Serve HTTP proxy + {workers} replicas (FastAPI ingress, 1 intra-op thread), default max_ongoing_requests"
        ),
    }
}

/// A warm-up, then the search, until `deadline`.
async fn search_one(
    client: &HttpClient,
    target: &Arc<Target>,
    server: Server,
    plan: &Plan,
    deadline: Instant,
) -> Result<ServerRun, BenchError> {
    let cut_short = std::cell::Cell::new(false);
    if Instant::now() < deadline {
        run(
            client,
            target,
            &open_settings(plan.search.start_rate, plan.warmup_s, plan)?,
        )
        .await?;
    }
    let steps = search_max_rate(&plan.search, |rate| {
        let cut_short = &cut_short;
        async move {
            if Instant::now() >= deadline {
                progress("  the time budget of the searches is spent: search cut");
                cut_short.set(true);
                return Ok(None);
            }
            let step = step(client, target, rate, plan.step_s, plan).await?;
            progress(&format!(
                "  {:>7.0}/s offered: {:>7.0}/s ok, p50 {:>6} µs, p99 {:>7} µs, errors {}{}",
                step.rate_per_s,
                step.achieved_per_s,
                step.p50_us,
                step.p99_us,
                step.errors,
                if step.passed { "" } else { "  (fails)" }
            ));
            if !step.passed {
                drain(client, target, plan).await?;
            }
            Ok::<_, BenchError>(Some(step))
        }
    })
    .await?;
    let best = steps
        .iter()
        .filter(|s| s.passed)
        .max_by(|a, b| a.rate_per_s.total_cmp(&b.rate_per_s))
        .cloned();
    Ok(ServerRun {
        server,
        label: server.label(),
        steps,
        best,
        fixed: None,
        unavailable: None,
        cut_short: cut_short.get(),
    })
}

/// After a failed step: waits until a short probe at a low rate passes
/// again (or `drain_max_s` is over); returns the seconds waited.
async fn drain(client: &HttpClient, target: &Arc<Target>, plan: &Plan) -> Result<f64, BenchError> {
    let started = Instant::now();
    let limit = Duration::from_secs_f64(plan.drain_max_s);
    let settle = Duration::from_secs_f64(plan.settle_s);
    // Three requests: p99 is their maximum.
    let probe = open_settings(plan.drain_probe_rate, 3.0 / plan.drain_probe_rate, plan)?;
    loop {
        tokio::time::sleep(settle).await;
        let report = run(client, target, &probe).await?.report;
        let passed = passes(
            report.counts.success,
            report.counts.errors(),
            report.latency_us.max,
            plan.p99_limit_us,
        );
        if passed || started.elapsed() >= limit {
            let waited = started.elapsed().as_secs_f64();
            if waited > 2.0 * plan.settle_s + 1.0 {
                progress(&format!(
                    "  waited {waited:.1} s for the backlog to drain{}",
                    if passed { "" } else { " (still slow)" }
                ));
            }
            return Ok(waited);
        }
    }
}

#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn open_settings(rate: f64, seconds: f64, plan: &Plan) -> Result<RunSettings, BenchError> {
    let duration = Duration::from_secs_f64(seconds);
    Ok(RunSettings {
        load: Load::constant_rate(rate, duration, plan.max_in_flight)?,
        max_duration: duration,
        max_requests: Some((rate * seconds * 1.05) as u64 + 100),
        timeout: Duration::from_secs_f64(plan.request_timeout_s),
        keep_samples: false,
    })
}

async fn step(
    client: &HttpClient,
    target: &Arc<Target>,
    rate: f64,
    seconds: f64,
    plan: &Plan,
) -> Result<Step, BenchError> {
    let settings = open_settings(rate, seconds, plan)?;
    let before = MachineCpu::read();
    let started = Instant::now();
    let recording = run(client, target, &settings).await?;
    let busy = match (before, MachineCpu::read()) {
        (Some(before), Some(after)) => before.busy_cores_until(&after, started.elapsed()),
        _ => 0.0,
    };
    let report = &recording.report;
    let errors = report.counts.errors();
    Ok(Step {
        rate_per_s: rate,
        achieved_per_s: report.throughput_per_s,
        sent: report.sent,
        successes: report.counts.success,
        errors,
        p50_us: report.latency_us.p50,
        p99_us: report.latency_us.p99,
        machine_busy_cores: busy,
        passed: passes(
            report.counts.success,
            errors,
            report.latency_us.p99,
            plan.p99_limit_us,
        ),
    })
}

/// `fraction` of the lowest best passing rate among the servers that have
/// one (a server that passed no rate cannot sustain any).
pub fn fixed_rate(runs: &[ServerRun], fraction: f64) -> Option<f64> {
    runs.iter()
        .filter_map(|r| r.best.as_ref().map(|s| s.rate_per_s))
        .min_by(f64::total_cmp)
        .map(|rate| (rate * fraction).max(1.0).round())
}

/// Switchyard's max throughput over each peer's, with the targets.
pub fn ratios(runs: &[ServerRun], raw: Option<&RawResult>) -> Vec<Ratio> {
    let find = |server: Server| runs.iter().find(|r| r.server == server);
    let throughput = |run: Option<&ServerRun>| -> Result<f64, String> {
        let Some(run) = run else {
            return Err("not run".into());
        };
        if let Some(reason) = &run.unavailable {
            return Err(format!("{} not measured: {reason}", run.label));
        }
        run.max_throughput()
            .ok_or_else(|| format!("{} passed no rate down to the lowest tried", run.label))
    };
    let raw_throughput = raw
        .map(|r| r.items_per_s)
        .ok_or_else(|| "raw loop not measured".to_owned());
    let mut ratios = Vec::new();
    for numerator in [Server::Switchyard, Server::SwitchyardBinary] {
        if numerator == Server::SwitchyardBinary && find(numerator).is_none() {
            // Quick runs have no binary-tensor row.
            continue;
        }
        let top = throughput(find(numerator));
        let mut peers: Vec<(String, Result<f64, String>, Option<f64>)> = vec![
            (
                Server::Flask.label().to_owned(),
                throughput(find(Server::Flask)),
                Some(TARGET_VS_FLASK),
            ),
            (
                Server::Mlserver.label().to_owned(),
                throughput(find(Server::Mlserver)),
                Some(TARGET_VS_MLSERVER),
            ),
            (
                Server::RayServe.label().to_owned(),
                throughput(find(Server::RayServe)),
                None,
            ),
            (
                "raw ONNX Runtime loop".to_owned(),
                raw_throughput.clone(),
                Some(TARGET_VS_RAW),
            ),
        ];
        if numerator == Server::SwitchyardBinary {
            // The binary row is extra: its ratios are shown, the targets
            // are the JSON row's.
            for peer in &mut peers {
                peer.2 = None;
            }
        }
        for (peer, bottom, target) in peers {
            let name = format!("{} ÷ {peer}", numerator.label());
            let (value, note) = match (&top, &bottom) {
                (Ok(top), Ok(bottom)) if *bottom > 0.0 => (Some(top / bottom), String::new()),
                (Err(e), _) | (_, Err(e)) => (None, e.clone()),
                _ => (None, "zero denominator".into()),
            };
            ratios.push(Ratio {
                name,
                value,
                target,
                met: value.zip(target).map(|(v, t)| v >= t),
                note,
            });
        }
    }
    ratios
}

/// The run's temporary folder (logs, MLServer's settings, Ray's session
/// files), removed when dropped.
#[derive(Debug)]
struct TempDir {
    path: PathBuf,
}

impl TempDir {
    fn new() -> Result<Self, BenchError> {
        let path = std::env::temp_dir().join(format!("switchyard-peers-{}", std::process::id()));
        std::fs::create_dir_all(&path).map_err(|source| BenchError::Io {
            context: "cannot create the temporary folder",
            path: path.clone(),
            source,
        })?;
        Ok(Self { path })
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// The p99 of every search step against the offered rate, a panel per model.
pub fn plot(results: &PeersResults) -> Result<String, BenchError> {
    let panels: Vec<Panel> = results
        .models
        .iter()
        .map(|model| Panel {
            caption: format!(
                "{}: p99 from intended send time against offered rate",
                model.model
            ),
            x_desc: "offered requests/s".into(),
            y_desc: "p99 ms".into(),
            lines: model
                .runs
                .iter()
                .filter(|r| r.unavailable.is_none())
                .map(|r| {
                    let mut points: Vec<(f64, f64)> = r
                        .steps
                        .iter()
                        .filter(|s| s.successes > 0)
                        .map(|s| (s.rate_per_s, s.p99_us as f64 / 1000.0))
                        .collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    Line {
                        name: r.label.to_owned(),
                        points,
                    }
                })
                .collect(),
            limit: Some((
                format!("p99 limit {} ms", results.plan.p99_limit_us / 1000),
                results.plan.p99_limit_us as f64 / 1000.0,
            )),
        })
        .collect();
    Ok(xy_svg(&panels)?)
}

fn ms(us: u64) -> String {
    format!("{:.2}", us as f64 / 1000.0)
}

fn verdict(ratio: &Ratio) -> String {
    match (ratio.met, ratio.target) {
        (Some(true), _) => "met".into(),
        (Some(false), _) => "**not met**".into(),
        (None, Some(_)) => "**not measured**".into(),
        (None, None) => "(no target)".into(),
    }
}

/// The results tables (without the document title).
pub fn tables(results: &PeersResults) -> String {
    let plan = &results.plan;
    let mut out = String::new();
    let _ = writeln!(out, "- Date: {}", results.date);
    let _ = writeln!(
        out,
        "- Machine: {} CPUs (`nproc`), {}, Linux {}; load average at start {} / at end {}",
        results.machine.nproc,
        results.machine.cpu_model,
        results.machine.kernel,
        results.machine.load_average_at_start,
        results.load_average_at_end
    );
    let _ = writeln!(
        out,
        "- Command: `{}` ({:.0} s in all)",
        results.command, results.elapsed_s
    );
    let _ = writeln!(out, "- Client: {}", results.client);
    let _ = writeln!(
        out,
        "- Search: steps of {} s, from {}/s ×{} while p99 ≤ {} ms with no error, then {} bisection(s); {}at most {} steps; {} s warm-up per server and model; after a failed step, a wait until {} requests at {}/s pass again (at most {} s); no step starts more than {} s after the first server's start",
        plan.step_s,
        plan.search.start_rate,
        plan.search.growth,
        plan.p99_limit_us / 1000,
        plan.search.refine_steps,
        if plan.search.confirm_failures {
            "a failed step is run again at the same rate and counts as failed only if it fails twice (one stall of the shared machine can put a step's p99 over the limit); "
        } else {
            ""
        },
        plan.search.max_steps,
        plan.warmup_s,
        3,
        plan.drain_probe_rate,
        plan.drain_max_s,
        plan.search_budget_s
    );
    let _ = writeln!(
        out,
        "- Fixed rate: {}% of the weakest server's maximum, {} s per server (longer, up to {} s, until {} requests were due)",
        plan.fixed_fraction * 100.0,
        plan.fixed_s,
        plan.fixed_max_s,
        plan.fixed_min_requests
    );
    out.push_str("\nServers:\n\n| server | set-up | start-up s | status |\n|---|---|---:|---|\n");
    let _ = writeln!(
        out,
        "| raw ONNX Runtime loop | in the bench process, {} threads x 1 intra-op, batch 1 back to back, no HTTP | | measured |",
        plan.workers
    );
    for server in &results.servers {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} |",
            server.label,
            server.setup,
            server
                .startup_s
                .map_or_else(String::new, |s| format!("{s:.1}")),
            server.unavailable.as_ref().map_or_else(
                || "measured".to_owned(),
                |e| format!(
                    "**not measured**: {}",
                    e.replace('\n', " ").replace('|', "\\|")
                )
            )
        );
    }
    for model in &results.models {
        let _ = writeln!(out, "\n### {}\n", model.model);
        let fixed = model
            .fixed_rate_per_s
            .map_or_else(|| "—".to_owned(), |r| format!("{r:.0}"));
        let _ = writeln!(
            out,
            "| server | max req/s at p99 ≤ {} ms | p50 / p99 ms there | steps | p50 / p99 ms at {fixed}/s | errors at {fixed}/s |",
            plan.p99_limit_us / 1000
        );
        out.push_str("|---|---:|---:|---:|---:|---:|\n");
        match (&model.raw, &model.raw_error) {
            (Some(raw), _) => {
                let _ = writeln!(
                    out,
                    "| raw ONNX Runtime loop (items/s, per call) | {:.0} | {} / {} | | | |",
                    raw.items_per_s,
                    ms(raw.latency_us.p50),
                    ms(raw.latency_us.p99)
                );
            }
            (None, error) => {
                let _ = writeln!(
                    out,
                    "| raw ONNX Runtime loop | **not measured**: {} | | | | |",
                    error.as_deref().unwrap_or("")
                );
            }
        }
        for run in &model.runs {
            if run.unavailable.is_some() {
                let _ = writeln!(
                    out,
                    "| {} | **not measured** (see Servers) | | | | |",
                    run.label
                );
                continue;
            }
            let (max, at) = match &run.best {
                Some(best) => (
                    format!("{:.0}", best.achieved_per_s),
                    format!("{} / {}", ms(best.p50_us), ms(best.p99_us)),
                ),
                None => (
                    format!("**none** (fails at {}/s)", plan.search.min_rate),
                    String::new(),
                ),
            };
            let (fixed_latency, fixed_errors) = match &run.fixed {
                Some(step) => (
                    format!("{} / {}", ms(step.p50_us), ms(step.p99_us)),
                    step.errors.to_string(),
                ),
                None => (String::new(), String::new()),
            };
            let cut = if run.cut_short {
                " (cut: time budget)"
            } else {
                ""
            };
            let _ = writeln!(
                out,
                "| {} | {max} | {at} | {}{cut} | {fixed_latency} | {fixed_errors} |",
                run.label,
                run.steps.len()
            );
        }
        out.push_str("\n| ratio of max throughputs | value | target | |\n|---|---:|---:|---|\n");
        for ratio in &model.ratios {
            let value = ratio
                .value
                .map_or_else(|| format!("— ({})", ratio.note), |v| format!("{v:.2}"));
            let target = ratio.target.map_or_else(String::new, |t| format!("≥ {t}"));
            let _ = writeln!(
                out,
                "| {} | {value} | {target} | {} |",
                ratio.name,
                verdict(ratio)
            );
        }
    }
    out
}

/// Every search step, for the record.
fn steps_table(results: &PeersResults) -> String {
    let mut out = String::from(
        "| model | server | offered/s | ok/s | p50 ms | p99 ms | errors | machine busy cores | passed |\n|---|---|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for model in &results.models {
        for run in &model.runs {
            let fixed = run.fixed.iter().map(|s| (s, " (fixed rate)"));
            for (step, note) in run.steps.iter().map(|s| (s, "")).chain(fixed) {
                let _ = writeln!(
                    out,
                    "| {} | {}{note} | {:.0} | {:.0} | {} | {} | {} | {:.2} | {} |",
                    model.model,
                    run.label,
                    step.rate_per_s,
                    step.achieved_per_s,
                    ms(step.p50_us),
                    ms(step.p99_us),
                    step.errors,
                    step.machine_busy_cores,
                    if step.passed { "yes" } else { "no" }
                );
            }
        }
    }
    out
}

/// The whole `peers.md`.
pub fn document(results: &PeersResults, plot_name: &str) -> String {
    format!(
        "# Peer comparison: Switchyard against Flask, MLServer, Ray Serve and the raw loop\n\n{}\n\
         Plot: `{plot_name}` (p99 against offered rate, every step).\n\n\
         The machine's two cores are shared by the client, the server under test and whatever else runs; \
         the *machine busy cores* column shows it. Ratios compare servers measured minutes apart in one run; \
         absolute numbers drift between runs and machines.\n\n## Every step\n\n{}",
        tables(results),
        steps_table(results)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(rate: f64, p99_us: u64, errors: u64) -> Step {
        Step {
            rate_per_s: rate,
            achieved_per_s: rate * 0.99,
            sent: 100,
            successes: 100 - errors,
            errors,
            p50_us: p99_us / 4,
            p99_us,
            machine_busy_cores: 1.5,
            passed: passes(100 - errors, errors, p99_us, P99_LIMIT_US),
        }
    }

    fn server_run(server: Server, best: Option<f64>) -> ServerRun {
        let steps: Vec<Step> = best
            .map(|rate| vec![step(rate, 10_000, 0), step(rate * 2.0, 90_000, 3)])
            .unwrap_or_else(|| vec![step(10.0, 80_000, 0)]);
        ServerRun {
            server,
            label: server.label(),
            best: steps.iter().find(|s| s.passed).cloned(),
            fixed: Some(step(50.0, 2_000, 0)),
            steps,
            unavailable: None,
            cut_short: false,
        }
    }

    fn results() -> PeersResults {
        let runs = vec![
            server_run(Server::Flask, Some(1_000.0)),
            server_run(Server::Mlserver, Some(400.0)),
            server_run(Server::Switchyard, Some(8_000.0)),
            server_run(Server::SwitchyardBinary, None),
            ServerRun::unavailable(Server::RayServe, "pip install failed"),
        ];
        let ratios = ratios(&runs, None);
        PeersResults {
            date: "2026-11-23 20:00 UTC".into(),
            command: "switchyard-bench peers".into(),
            machine: Machine {
                nproc: 2,
                cpu_model: "test cpu".into(),
                kernel: "6.0".into(),
                load_average_at_start: "1.00 1.00 1.00".into(),
            },
            load_average_at_end: "2.00 1.00 1.00".into(),
            elapsed_s: 300.0,
            plan: Plan::new(false, 2),
            client: "loadgen".into(),
            servers: vec![ServerSetup {
                server: Server::RayServe,
                label: Server::RayServe.label(),
                setup: "ray".into(),
                startup_s: None,
                unavailable: Some("pip install failed | line".into()),
            }],
            models: vec![ModelPeers {
                model: "fashion_cnn".into(),
                raw: None,
                raw_error: Some("no library".into()),
                fixed_rate_per_s: fixed_rate(&runs, 0.5),
                runs,
                ratios,
            }],
        }
    }

    #[test]
    fn the_fixed_rate_is_half_the_weakest_passing_maximum() {
        let runs = results().models.remove(0).runs;
        assert_eq!(fixed_rate(&runs, 0.5), Some(200.0));
        assert_eq!(fixed_rate(&[server_run(Server::Flask, None)], 0.5), None);
    }

    #[test]
    fn ratios_compare_max_throughputs_and_judge_the_targets() {
        let results = results();
        let ratios = &results.models[0].ratios;
        let by_name = |name: &str| ratios.iter().find(|r| r.name == name).unwrap();
        let flask = by_name("Switchyard ÷ Flask + gunicorn");
        assert!((flask.value.unwrap() - 8.0).abs() < 1e-9);
        assert_eq!(flask.met, Some(true));
        let mlserver = by_name("Switchyard ÷ MLServer");
        assert!((mlserver.value.unwrap() - 20.0).abs() < 1e-9);
        let ray = by_name("Switchyard ÷ Ray Serve");
        assert_eq!(ray.value, None);
        assert!(ray.note.contains("pip install failed"), "{}", ray.note);
        let raw = by_name("Switchyard ÷ raw ONNX Runtime loop");
        assert_eq!((raw.value, raw.met), (None, None));
        let binary = by_name("Switchyard, binary tensors ÷ Flask + gunicorn");
        assert_eq!(binary.value, None);
        assert!(binary.note.contains("passed no rate"));
        assert_eq!(binary.target, None);
        let without_binary: Vec<ServerRun> = results.models[0]
            .runs
            .iter()
            .filter(|r| r.server != Server::SwitchyardBinary)
            .cloned()
            .collect();
        assert_eq!(super::ratios(&without_binary, None).len(), 4);
    }

    #[test]
    fn tables_show_every_server_ratio_and_verdict() {
        let results = results();
        let text = document(&results, "peers.svg");
        assert!(
            text.contains("| Switchyard | 7920 | 2.50 / 10.00 | 2 | 0.50 / 2.00 | 0 |"),
            "{text}"
        );
        assert!(
            text.contains("| Switchyard ÷ Flask + gunicorn | 8.00 | ≥ 5 | met |"),
            "{text}"
        );
        assert!(text.contains("| Switchyard ÷ raw ONNX Runtime loop | — (raw loop not measured) | ≥ 0.9 | **not measured** |"), "{text}");
        assert!(text.contains("**none** (fails at 10/s)"), "{text}");
        assert!(
            text.contains("| Ray Serve | **not measured** (see Servers) |"),
            "{text}"
        );
        // A `|` inside an error message would break the table.
        assert!(text.contains("pip install failed \\| line"), "{text}");
        assert!(text.contains("load average at start 1.00 1.00 1.00 / at end 2.00 1.00 1.00"));
        assert!(
            text.contains("| fashion_cnn | Flask + gunicorn (fixed rate) | 50 |"),
            "{text}"
        );
        let svg = plot(&results).unwrap();
        assert!(svg.contains("fashion_cnn: p99"));
    }

    #[test]
    fn fixed_runs_last_long_enough_for_a_p99_within_bounds() {
        let plan = Plan::new(false, 2);
        assert_eq!(plan.fixed_seconds(1_000.0), 5.0);
        assert_eq!(plan.fixed_seconds(25.0), 8.0);
        assert_eq!(plan.fixed_seconds(5.0), 10.0);
    }

    #[test]
    fn both_plans_fit_their_time_budgets() {
        // Model loading for the raw loops, and building, come on top.
        let quick = Plan::new(true, 2);
        assert!(quick.worst_case_s() < 60.0, "{}", quick.worst_case_s());
        let full = Plan::new(false, 2);
        assert!(full.worst_case_s() < 600.0, "{}", full.worst_case_s());
    }
}
