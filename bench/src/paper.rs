//! `switchyard-bench paper`: the StraightLine paper's experiments in
//! shape, scaled to this machine.
//!
//! The paper ramps Artillery from 10 to 7,000 requests per 180 s against
//! Xception deployed on a local Flask server, Docker and AWS Lambda. Here
//! the same ramp (`Phases::paper()`, its rates scaled and its 180 s
//! compressed so a run fits the time budget) drives the release gateway,
//! started once per placement as a child process:
//!
//! - `local-only`, `container-only`, `lambda-only`: one tier each, set up as
//!   `config/local-only.toml`, `config/container-only.toml` and
//!   `config/lambda-only.toml` do;
//! - `straightline` (`config/straightline.toml`, the paper's Algorithm 1)
//!   and `adaptive` (`config/cost-aware.toml`) over all three tiers.
//!
//! The container tier runs real worker containers (image built by the
//! gateway, own scope and image name so nothing of another user's is
//! touched); the Lambda tier is the `cargo lambda` emulator with function
//! instances of the workspace's function binary. Every request is kept
//! (intended send time, latency, outcome) and bucketed along the ramp
//! (`paper_report.rs`). Beside the live runs, the simulator replays the
//! paper's ramp at full scale with the same five placements.
//!
//! Clean-up: gateways and emulator processes are killed when their handles
//! drop (also on error), and the containers and images of the `paper`
//! scope are removed at the end whatever happened.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_backend_container::bollard::Docker;
use switchyard_backend_container::bollard::query_parameters::{
    ListImagesOptions, RemoveImageOptions,
};
use switchyard_backend_container::engine;
use switchyard_backend_lambda::emulator::{ChildProcess, LocalEmulator, function_binary};
use switchyard_loadgen::{
    HttpClient, Load, PayloadSpec, Phase, Phases, Process, Recording, RunSettings, Target,
    http_client, run,
};
use switchyard_scheduler::sim::report::{Bucket, LatencyMs, SimReport};
use switchyard_scheduler::sim::{PolicyRun, Profile, SimOptions, SimOutput};

use crate::error::BenchError;
use crate::gateway_process::GatewayProcess;
use crate::local::progress;
use crate::machine::{Machine, Settled, load_average, utc_now, wait_until_idle};
use crate::paper_report::{
    ContainerDeaths, ModelResults, PaperResults, PlacementRun, Scale, SimReplay, backends_cost,
    container_deaths, median_from, saturation, saturation_point, sim_buckets,
};
use crate::sim::load_profile;

/// The container scope label and image name prefix of one benchmark: its
/// clean-up removes exactly these, and nothing of another user's.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ContainerScope {
    pub(crate) scope: &'static str,
    pub(crate) image_prefix: &'static str,
}

/// This benchmark's containers and images.
const PAPER_SCOPE: ContainerScope = ContainerScope {
    scope: "paper",
    image_prefix: "switchyard-worker-paper",
};
/// Per-request deadline, client and gateway: 10 x xception's SLO.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// Pause before each gateway run, so one run's tail does not load the
/// next: at least this long, then until the machine is idle.
pub(crate) const SETTLE: Duration = Duration::from_secs(2);
/// Longest wait for an idle machine, beyond [`SETTLE`], before one run
/// starts anyway.
pub(crate) const SETTLE_MAX: Duration = Duration::from_secs(30);
/// Longest wait beyond [`SETTLE`] over a whole benchmark, so that a busy
/// machine cannot stretch it past its time bound.
pub(crate) const SETTLE_BUDGET: Duration = Duration::from_secs(60);
/// Busy cores (every process, over one second) below which the machine
/// counts as idle.
pub(crate) const IDLE_CORES: f64 = 0.3;
/// Warm-up before each ramp: one request at a time, at most 20.
const WARM_UP: Duration = Duration::from_secs(1);
/// The policy file of the `adaptive` placement.
pub(crate) const ADAPTIVE_POLICY: &str = "config/cost-aware.toml";

/// What to run.
#[derive(Debug, Clone)]
pub struct PaperOptions {
    pub quick: bool,
    pub gateway_bin: PathBuf,
    pub profile: Option<PathBuf>,
    /// Only these models / placements (all when empty).
    pub models: Vec<String>,
    pub placements: Vec<String>,
    /// Where to keep each placement's gateway config, log and decision log.
    pub keep_logs: Option<PathBuf>,
    pub command: String,
}

/// Where requests may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Placement {
    LocalOnly,
    ContainerOnly,
    LambdaOnly,
    Straightline,
    Adaptive,
}

impl Placement {
    pub const ALL: [Placement; 5] = [
        Placement::LocalOnly,
        Placement::ContainerOnly,
        Placement::LambdaOnly,
        Placement::Straightline,
        Placement::Adaptive,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Placement::LocalOnly => "local-only",
            Placement::ContainerOnly => "container-only",
            Placement::LambdaOnly => "lambda-only",
            Placement::Straightline => "straightline",
            Placement::Adaptive => "adaptive",
        }
    }

    /// The baseline config whose `[placement]` a single-tier run takes, or
    /// the policy file of a multi-tier one.
    pub(crate) fn source(self) -> &'static str {
        match self {
            Placement::LocalOnly => "config/local-only.toml",
            Placement::ContainerOnly => "config/container-only.toml",
            Placement::LambdaOnly => "config/lambda-only.toml",
            Placement::Straightline => "config/straightline.toml",
            Placement::Adaptive => ADAPTIVE_POLICY,
        }
    }

    fn uses_local(self) -> bool {
        !matches!(self, Placement::ContainerOnly | Placement::LambdaOnly)
    }

    pub(crate) fn uses_container(self) -> bool {
        !matches!(self, Placement::LocalOnly | Placement::LambdaOnly)
    }

    fn uses_lambda(self) -> bool {
        !matches!(self, Placement::LocalOnly | Placement::ContainerOnly)
    }

    /// The same placement in the simulator.
    pub(crate) fn sim_run(self, profile: &Profile) -> Result<PolicyRun, BenchError> {
        let mut run = match self {
            Placement::LocalOnly => PolicyRun::from_spec("static:local", profile),
            Placement::ContainerOnly => PolicyRun::from_spec("static:container", profile),
            Placement::LambdaOnly => PolicyRun::from_spec("static:lambda", profile),
            Placement::Straightline | Placement::Adaptive => {
                PolicyRun::from_file(Path::new(self.source()), profile)
            }
        }
        .map_err(|e| BenchError::Other(e.to_string()))?;
        run.label = self.name().to_owned();
        Ok(run)
    }
}

/// The ramp of each model. Rates: the paper's times `rate_factor`;
/// duration: 180 s compressed to `ramp_s` (see bench/README.md for how
/// these were chosen from measurements on this machine).
fn scales(quick: bool) -> Vec<Scale> {
    let paper_from = 10.0 / 180.0;
    let paper_to = 7000.0 / 180.0;
    let scale = |model: &str, rate_factor: f64, ramp_s: f64, slo: f64, buckets: usize| Scale {
        model: model.to_owned(),
        rate_factor,
        ramp_s,
        from_per_s: paper_from * rate_factor,
        to_per_s: paper_to * rate_factor,
        expected_requests: (paper_from + paper_to) / 2.0 * rate_factor * ramp_s,
        slo_p99_ms: slo,
        buckets,
    };
    if quick {
        vec![scale("xception", 0.2, 12.0, 1000.0, 4)]
    } else {
        vec![
            scale("xception", 0.75, 45.0, 1000.0, 10),
            scale("fashion_cnn", 30.0, 25.0, 50.0, 10),
        ]
    }
}

fn placements(options: &PaperOptions) -> Result<Vec<Placement>, BenchError> {
    let quick = [Placement::LocalOnly, Placement::LambdaOnly];
    chosen_placements(
        &options.placements,
        if options.quick {
            &quick
        } else {
            &Placement::ALL
        },
    )
}

/// The placements `names` asks for (`--placement`), or `default` when it
/// names none.
pub(crate) fn chosen_placements(
    names: &[String],
    default: &[Placement],
) -> Result<Vec<Placement>, BenchError> {
    if names.is_empty() {
        return Ok(default.to_vec());
    }
    names
        .iter()
        .map(|name| {
            Placement::ALL
                .into_iter()
                .find(|p| p.name() == name)
                .ok_or_else(|| {
                    BenchError::Other(format!(
                        "--placement {name}: not one of {}",
                        Placement::ALL.map(Placement::name).join(", ")
                    ))
                })
        })
        .collect()
}

fn io_error(context: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> BenchError {
    let path = path.to_owned();
    move |source| BenchError::Io {
        context,
        path,
        source,
    }
}

fn read_table(path: &str) -> Result<toml::Table, BenchError> {
    let text = std::fs::read_to_string(path)
        .map_err(io_error("cannot read the config", Path::new(path)))?;
    text.parse::<toml::Table>()
        .map_err(|e| BenchError::Config(format!("{path}: {e}")))
}

/// The table at `path` inside `table`, cloned.
fn table_at(table: &toml::Table, path: &[&str], file: &str) -> Result<toml::Table, BenchError> {
    let mut current = table;
    for key in path {
        current = current
            .get(*key)
            .and_then(toml::Value::as_table)
            .ok_or_else(|| BenchError::Config(format!("{file}: no [{}] table", path.join("."))))?;
    }
    Ok(current.clone())
}

fn string(text: &str) -> toml::Value {
    toml::Value::String(text.to_owned())
}

fn one_model(model: &str) -> toml::Value {
    toml::Value::Array(vec![string(model)])
}

/// Everything a gateway config needs besides the placement.
pub(crate) struct Tiers<'a> {
    pub(crate) model: &'a str,
    pub(crate) gateway_bin: &'a Path,
    pub(crate) lambda_endpoint: Option<&'a str>,
    pub(crate) containers: ContainerScope,
}

/// A gateway config table as a file, with a comment saying where it came from.
pub(crate) fn config_text(
    placement: Placement,
    model: &str,
    config: &toml::Table,
) -> Result<String, BenchError> {
    Ok(format!(
        "# Written by switchyard-bench: {} for {model}.\n{}",
        placement.name(),
        toml::to_string(config).map_err(|e| BenchError::Config(e.to_string()))?
    ))
}

/// The gateway config of `placement`: each tier as its baseline file sets
/// it up, serving only `model`, with this benchmark's container scope and
/// image name and the emulator's endpoint; `[placement]` from the baseline
/// file, or the policy file for straightline and adaptive. A table, for
/// callers that change it further ([`config_text`] writes it out).
pub(crate) fn gateway_table(
    placement: Placement,
    tiers: &Tiers<'_>,
) -> Result<toml::Table, BenchError> {
    let model = tiers.model;
    let mut server = toml::Table::new();
    let timeout_ms = i64::try_from(REQUEST_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
    server.insert(
        "request_timeout_ms".into(),
        toml::Value::Integer(timeout_ms),
    );
    server.insert("drain_timeout_ms".into(), toml::Value::Integer(5000));
    let mut config = toml::Table::new();
    config.insert("server".into(), toml::Value::Table(server));
    let local_file = "config/local-only.toml";
    let local = read_table(local_file)?;
    config.insert(
        "models".into(),
        toml::Value::Table(table_at(&local, &["models"], local_file)?),
    );
    let placement_table = if placement.uses_local() && placement.uses_lambda() {
        let mut table = toml::Table::new();
        table.insert("policy_file".into(), string(placement.source()));
        table
    } else {
        table_at(
            &read_table(placement.source())?,
            &["placement"],
            placement.source(),
        )?
    };
    config.insert("placement".into(), toml::Value::Table(placement_table));

    let mut backends = toml::Table::new();
    if placement.uses_local() {
        let mut tier = table_at(&local, &["backends", "local"], local_file)?;
        tier.insert("models".into(), one_model(model));
        if let Some(toml::Value::Table(overrides)) = tier.get_mut("overrides") {
            overrides.retain(|name, _| name == model);
        }
        backends.insert("local".into(), toml::Value::Table(tier));
    }
    if placement.uses_container() {
        let file = "config/container-only.toml";
        let mut tier = table_at(&read_table(file)?, &["backends", "container"], file)?;
        tier.insert("models".into(), one_model(model));
        tier.insert("scope".into(), string(tiers.containers.scope));
        // One image per model: the gateway removes other tags of its image
        // name as stale, so models sharing one name would rebuild each time.
        tier.insert(
            "image".into(),
            string(&format!(
                "{}-{}",
                tiers.containers.image_prefix,
                model.replace('_', "-")
            )),
        );
        tier.insert(
            "worker_binary".into(),
            string(&tiers.gateway_bin.display().to_string()),
        );
        backends.insert("container".into(), toml::Value::Table(tier));
    }
    if placement.uses_lambda() {
        let file = "config/lambda-only.toml";
        let mut tier = table_at(&read_table(file)?, &["backends", "lambda"], file)?;
        tier.insert("models".into(), one_model(model));
        let endpoint = tiers
            .lambda_endpoint
            .ok_or_else(|| BenchError::Other("the Lambda emulator is not running".into()))?;
        tier.insert("endpoint".into(), string(endpoint));
        backends.insert("lambda".into(), toml::Value::Table(tier));
    }
    config.insert("backends".into(), toml::Value::Table(backends));
    Ok(config)
}

/// The `[backends.lambda]` reserved concurrency and memory of the
/// baseline: how many function instances to start, and their size.
pub(crate) fn lambda_instances() -> Result<(u64, u64), BenchError> {
    let file = "config/lambda-only.toml";
    let tier = table_at(&read_table(file)?, &["backends", "lambda"], file)?;
    let number = |key: &str, default: i64| {
        tier.get(key)
            .and_then(toml::Value::as_integer)
            .unwrap_or(default)
            .max(1)
            .unsigned_abs()
    };
    Ok((number("reserved_concurrency", 4), number("memory_mb", 1024)))
}

/// The processes of the Lambda tier: the emulator and, per model, as many
/// function instances as the reserved concurrency (all killed on drop).
#[derive(Debug, Default)]
pub(crate) struct LambdaTier {
    emulator: Option<LocalEmulator>,
    instances: Vec<ChildProcess>,
    model: Option<String>,
}

impl LambdaTier {
    /// The emulator, started on first use (with no function instance).
    pub(crate) fn emulator(&mut self, root: &Path) -> Result<&LocalEmulator, BenchError> {
        if self.emulator.is_none() {
            self.emulator = Some(LocalEmulator::start(root).map_err(BenchError::Other)?);
        }
        self.emulator
            .as_ref()
            .ok_or_else(|| BenchError::Other("the Lambda emulator did not start".into()))
    }

    /// The endpoint, with instances of `model` running.
    pub(crate) fn ready_for(&mut self, root: &Path, model: &str) -> Result<String, BenchError> {
        if self.model.as_deref() != Some(model) {
            self.instances.clear();
            let function = function_path()?;
            let (count, memory_mb) = lambda_instances()?;
            let emulator = self.emulator(root)?;
            let mut instances = Vec::new();
            for _ in 0..count {
                instances.push(
                    emulator
                        .instance(&function, model, memory_mb)
                        .map_err(BenchError::Other)?,
                );
            }
            self.instances = instances;
            self.model = Some(model.to_owned());
        }
        Ok(self.emulator(root)?.endpoint())
    }
}

/// The workspace's function binary, beside this executable.
pub(crate) fn function_path() -> Result<PathBuf, BenchError> {
    let exe = std::env::current_exe().map_err(io_error(
        "cannot find this executable",
        Path::new("switchyard-bench"),
    ))?;
    function_binary(&exe).map_err(BenchError::Other)
}

/// Runs the benchmark from the repository root.
pub fn run_paper(options: &PaperOptions) -> Result<PaperResults, BenchError> {
    run_scoped(PAPER_SCOPE, |root, docker| async move {
        paper_async(options, &root, docker.as_ref()).await
    })
}

/// Runs `work` from the repository root on a two-thread runtime, with the
/// Docker engine if it answers; then removes the containers and images of
/// `scope`, also when `work` failed or Ctrl-C or SIGTERM came (the child
/// processes are killed as their handles drop).
pub(crate) fn run_scoped<T, Work>(
    scope: ContainerScope,
    work: impl FnOnce(PathBuf, Option<Docker>) -> Work,
) -> Result<T, BenchError>
where
    Work: Future<Output = Result<T, BenchError>>,
{
    let root = std::env::current_dir().map_err(io_error(
        "cannot read the current directory",
        Path::new("."),
    ))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Other(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async {
        let docker =
            Docker::connect_with_unix("/var/run/docker.sock", 120, &engine::API_VERSION).ok();
        let result = tokio::select! {
            result = work(root, docker.clone()) => result,
            () = switchyard_scheduler::server::shutdown_signal() => {
                Err(BenchError::Other("interrupted".into()))
            }
        };
        if let Some(docker) = &docker {
            remove_created(docker, scope).await;
        }
        result
    })
}

/// Removes the containers of `scope` and its images, and says so.
pub(crate) async fn remove_created(docker: &Docker, scope: ContainerScope) {
    let containers = remove_containers(docker, scope).await;
    let images = remove_images(docker, scope).await;
    progress(&format!(
        "clean-up: removed {containers} container(s) and {images} image(s) of scope {:?}",
        scope.scope
    ));
}

/// Removes the containers of `scope`; how many.
pub(crate) async fn remove_containers(docker: &Docker, scope: ContainerScope) -> usize {
    let listed = engine::list_labelled(
        docker,
        &[
            (engine::LABEL_MANAGED, "true"),
            (engine::LABEL_SCOPE, scope.scope),
        ],
    )
    .await
    .unwrap_or_default();
    let mut removed = 0;
    for id in listed.into_iter().filter_map(|c| c.id) {
        if engine::remove(docker, &id).await.is_ok() {
            removed += 1;
        }
    }
    removed
}

async fn remove_images(docker: &Docker, scope: ContainerScope) -> usize {
    let prefix = scope.image_prefix;
    let filters = HashMap::from([
        (
            "label".to_owned(),
            vec![format!("{}=true", engine::LABEL_MANAGED)],
        ),
        ("reference".to_owned(), vec![format!("{prefix}*")]),
    ]);
    let listed = docker
        .list_images(Some(ListImagesOptions {
            filters: Some(filters),
            ..Default::default()
        }))
        .await
        .unwrap_or_default();
    let mut removed = 0;
    for image in listed {
        for tag in image.repo_tags.iter().filter(|t| t.starts_with(prefix)) {
            let options = RemoveImageOptions {
                force: true,
                noprune: false,
            };
            if docker.remove_image(tag, Some(options), None).await.is_ok() {
                removed += 1;
            }
        }
    }
    removed
}

async fn paper_async(
    options: &PaperOptions,
    root: &Path,
    docker: Option<&Docker>,
) -> Result<PaperResults, BenchError> {
    let started = Instant::now();
    let machine = Machine::describe();
    let placements = placements(options)?;
    let (profile, profile_name) = load_profile(options.profile.as_deref())?;
    if placements.iter().any(|p| p.uses_container()) {
        match docker {
            Some(docker) => {
                // Containers of this scope left by an earlier, killed run.
                let containers = remove_containers(docker, PAPER_SCOPE).await;
                if containers > 0 {
                    progress(&format!(
                        "removed {containers} container(s) left by an earlier run"
                    ));
                }
            }
            None => {
                progress("no Docker engine: the container placements will be reported as not run")
            }
        }
    }
    let client = http_client(1024);
    let mut lambda = LambdaTier::default();
    let mut idle_budget = SETTLE_BUDGET;
    let mut models = Vec::new();
    for scale in scales(options.quick)
        .into_iter()
        .filter(|s| options.models.is_empty() || options.models.contains(&s.model))
    {
        let mut runs = Vec::new();
        for &placement in &placements {
            let settled = settle(&mut idle_budget).await;
            progress(&format!(
                "{} / {}: ramp {:.2} -> {:.1} requests/s over {:.0} s",
                scale.model,
                placement.name(),
                scale.from_per_s,
                scale.to_per_s,
                scale.ramp_s
            ));
            let run = run_placement(options, root, &client, &mut lambda, placement, &scale).await;
            let mut run = match run {
                Ok(run) => run,
                Err(error) => {
                    progress(&format!(
                        "{} / {}: not run: {error}",
                        scale.model,
                        placement.name()
                    ));
                    PlacementRun::failed(placement.name(), load_average(), error.to_string())
                }
            };
            run.busy_cores_before = settled.busy_cores;
            progress(&format!(
                "{} / {}: {} requests, {} failed, p50 {:?} ms, p99 {:?} ms",
                scale.model, run.placement, run.due, run.failed, run.p50_ms, run.p99_ms
            ));
            runs.push(run);
        }
        let sim = sim_replay(&scale, &profile, &profile_name)?;
        models.push(model_results(scale, runs, Some(sim)));
    }
    drop(lambda);
    Ok(PaperResults {
        date: utc_now(),
        machine,
        load_average_at_end: load_average(),
        command: options.command.clone(),
        quick: options.quick,
        wall_seconds: started.elapsed().as_secs_f64(),
        models,
    })
}

/// Waits for the machine to be idle before a run (see [`SETTLE`]), taking
/// what it waited beyond `SETTLE` from `budget`, and says so when that took
/// long or never came.
pub(crate) async fn settle(budget: &mut Duration) -> Settled {
    let max = settle_limit(*budget);
    let settled = wait_until_idle(SETTLE, max, Duration::from_secs(1), IDLE_CORES).await;
    *budget = budget.saturating_sub(settled.waited.saturating_sub(SETTLE));
    let busy = settled
        .busy_cores
        .map_or_else(|| "unknown".to_owned(), |busy| format!("{busy:.2}"));
    if !settled.is_idle(IDLE_CORES) {
        progress(&format!(
            "the machine is still busy after {:.0} s ({busy} cores); starting anyway",
            settled.waited.as_secs_f64()
        ));
    } else if settled.waited > SETTLE + Duration::from_secs(2) {
        progress(&format!(
            "waited {:.0} s for the machine to go idle ({busy} busy cores)",
            settled.waited.as_secs_f64()
        ));
    }
    settled
}

/// The longest one run's wait may be, with `budget` left of the whole
/// benchmark's.
fn settle_limit(budget: Duration) -> Duration {
    SETTLE + SETTLE_MAX.min(budget)
}

/// Lambda-only's median under load and local-only's saturation point.
fn model_results(scale: Scale, runs: Vec<PlacementRun>, sim: Option<SimReplay>) -> ModelResults {
    let local = runs
        .iter()
        .find(|r| r.placement == Placement::LocalOnly.name() && r.error.is_none());
    let local_saturation = local.and_then(|r| {
        r.saturation_bucket
            .and_then(|i| saturation_point(&r.buckets, i, &scale))
    });
    let from_s = local_saturation
        .as_ref()
        .map_or(scale.ramp_s / 2.0, |p| p.from_s);
    let lambda = runs
        .iter()
        .find(|r| r.placement == Placement::LambdaOnly.name() && r.error.is_none());
    let lambda_median =
        lambda.and_then(|r| r.samples.as_deref().and_then(|s| median_from(s, from_s)));
    ModelResults {
        model: scale.model.clone(),
        lambda_median_under_load_ms: lambda_median,
        lambda_median_from_s: lambda.map(|_| from_s),
        local_saturation,
        scale,
        runs,
        sim,
    }
}

async fn run_placement(
    options: &PaperOptions,
    root: &Path,
    client: &HttpClient,
    lambda: &mut LambdaTier,
    placement: Placement,
    scale: &Scale,
) -> Result<PlacementRun, BenchError> {
    let phases = Phases::new(vec![Phase::ramp(
        format!(
            "paper ramp x{} over {:.0} s",
            scale.rate_factor, scale.ramp_s
        ),
        Duration::from_secs_f64(scale.ramp_s),
        scale.from_per_s,
        scale.to_per_s,
    )])?;
    let schedule = Schedule {
        model: &scale.model,
        phases,
        process: Process::Constant,
        containers: PAPER_SCOPE,
        logs: options.keep_logs.as_deref(),
    };
    let driven = drive(
        &options.gateway_bin,
        root,
        client,
        lambda,
        placement,
        &schedule,
    )
    .await?;
    let samples = driven.recording.recorder.samples().unwrap_or_default();
    let mut run = PlacementRun::measured(
        placement.name(),
        driven.load_before,
        &samples,
        driven.recording.recorder.backend_names(),
        driven.recording.report,
        scale,
    );
    run.samples = Some(samples);
    run.cost_dollars = driven.cost_dollars;
    run.container_deaths = driven.container_deaths;
    Ok(run)
}

/// What one live run offers: a model, its arrival phases and process, the
/// container scope its gateway's containers take, and where to keep the
/// gateway's files.
pub(crate) struct Schedule<'a> {
    pub(crate) model: &'a str,
    pub(crate) phases: Phases,
    pub(crate) process: Process,
    /// Keep the gateway's config, log and decision log (every decision
    /// kept) in this folder (`--keep-logs`).
    pub(crate) logs: Option<&'a Path>,
    pub(crate) containers: ContainerScope,
}

/// A finished live run of one placement.
pub(crate) struct Driven {
    /// `/proc/loadavg` just before the load started.
    pub(crate) load_before: String,
    /// Every request kept (samples) and the load generator's report.
    pub(crate) recording: Recording,
    /// The paid tiers' cost over the gateway's life, from its stats.
    pub(crate) cost_dollars: Option<f64>,
    /// Its container tier's replaced workers, from its stats.
    pub(crate) container_deaths: Option<ContainerDeaths>,
}

/// Runs `placement` live: a gateway set up as [`gateway_table`] says (the
/// Lambda tier's instances started for the model first), a short warm-up,
/// then `schedule`'s phases, open loop; its cost read from the gateway's
/// stats before it is stopped.
pub(crate) async fn drive(
    gateway_bin: &Path,
    root: &Path,
    client: &HttpClient,
    lambda: &mut LambdaTier,
    placement: Placement,
    schedule: &Schedule<'_>,
) -> Result<Driven, BenchError> {
    let lambda_endpoint = if placement.uses_lambda() {
        Some(lambda.ready_for(root, schedule.model)?)
    } else {
        None
    };
    let mut table = gateway_table(
        placement,
        &Tiers {
            model: schedule.model,
            gateway_bin,
            lambda_endpoint: lambda_endpoint.as_deref(),
            containers: schedule.containers,
        },
    )?;
    let kept = schedule
        .logs
        .map(|dir| KeptFiles::new(dir, schedule.model, placement))
        .transpose()?;
    if let Some(kept) = &kept {
        kept.log_decisions(&mut table)?;
    }
    let text = config_text(placement, schedule.model, &table)?;
    // A kept config is the one the gateway runs with; otherwise a
    // temporary file, removed after the run.
    let config_path = match &kept {
        Some(kept) => kept.config.clone(),
        None => std::env::temp_dir().join(format!(
            "switchyard-{}-{}-{}.toml",
            schedule.containers.scope,
            std::process::id(),
            placement.name()
        )),
    };
    std::fs::write(&config_path, text)
        .map_err(io_error("cannot write the gateway config", &config_path))?;
    let log = kept.as_ref().map(|k| k.log.as_path());
    let result = measure(gateway_bin, client, &config_path, placement, schedule, log).await;
    if kept.is_none() {
        let _ = std::fs::remove_file(&config_path);
    }
    result
}

/// Where `--keep-logs` keeps one placement's files: `MODEL-PLACEMENT.toml`
/// (the gateway config), `.log` (its log) and `-decisions.jsonl` (its
/// placement decision log, every decision kept).
struct KeptFiles {
    config: PathBuf,
    log: PathBuf,
    decisions: PathBuf,
}

impl KeptFiles {
    fn new(dir: &Path, model: &str, placement: Placement) -> Result<Self, BenchError> {
        std::fs::create_dir_all(dir).map_err(io_error("cannot create the logs folder", dir))?;
        // The gateway runs in the repository root: an absolute path keeps
        // its decision log where the user asked.
        let dir =
            std::path::absolute(dir).map_err(io_error("cannot resolve the logs folder", dir))?;
        let stem = format!("{model}-{}", placement.name());
        Ok(Self {
            config: dir.join(format!("{stem}.toml")),
            log: dir.join(format!("{stem}.log")),
            decisions: dir.join(format!("{stem}-decisions.jsonl")),
        })
    }

    /// Has the gateway log every placement decision to `self.decisions`.
    fn log_decisions(&self, config: &mut toml::Table) -> Result<(), BenchError> {
        let Some(toml::Value::Table(placement)) = config.get_mut("placement") else {
            return Err(BenchError::Config(
                "the gateway config has no [placement] table".into(),
            ));
        };
        let path = self.decisions.to_string_lossy().into_owned();
        placement.insert("decision_log".into(), toml::Value::String(path));
        placement.insert("decision_log_sample".into(), toml::Value::Float(1.0));
        // A run's file holds that run's decisions only.
        let _ = std::fs::remove_file(&self.decisions);
        Ok(())
    }
}

async fn measure(
    gateway_bin: &Path,
    client: &HttpClient,
    config_path: &Path,
    placement: Placement,
    schedule: &Schedule<'_>,
    keep_log: Option<&Path>,
) -> Result<Driven, BenchError> {
    let mut gateway = tokio::task::block_in_place(|| {
        GatewayProcess::start_with_config(gateway_bin, config_path)
    })?;
    if let Some(to) = keep_log {
        gateway.keep_log_as(to.to_path_buf());
    }
    gateway.wait_ready(client).await?;
    let payload = PayloadSpec {
        batch_size: 1,
        binary: true,
        binary_output: true,
        variants: 4,
        seed: 7,
    };
    let target =
        Arc::new(Target::prepare(client, gateway.endpoint()?, schedule.model, &payload).await?);
    // A short warm-up, not counted: ONNX Runtime's first run of a session
    // is slow, and a schedule's first seconds hold only a few requests.
    let mut warm_up = RunSettings::new(
        Load::Closed {
            concurrency: 1,
            duration: WARM_UP,
        },
        REQUEST_TIMEOUT,
    );
    warm_up.max_requests = Some(20);
    run(client, &target, &warm_up).await?;
    let mut settings = RunSettings::new(
        Load::Open {
            phases: schedule.phases.clone(),
            process: schedule.process,
            max_in_flight: 1024,
        },
        REQUEST_TIMEOUT,
    );
    settings.keep_samples = true;
    let load_before = load_average();
    let recording = run(client, &target, &settings).await?;
    let (cost_dollars, container_deaths) = match gateway.stats(client).await {
        Ok(stats) => (backends_cost(&stats), container_deaths(&stats)),
        Err(error) => {
            progress(&format!(
                "no cost or container deaths for {}: {error}",
                placement.name()
            ));
            (None, None)
        }
    };
    tokio::task::block_in_place(|| gateway.terminate(Duration::from_secs(15)));
    drop(gateway);
    Ok(Driven {
        load_before,
        recording,
        cost_dollars,
        container_deaths,
    })
}

/// The simulator's replay of the paper's ramp at full scale for the same
/// model and placements.
fn sim_replay(
    scale: &Scale,
    profile: &Profile,
    profile_name: &str,
) -> Result<SimReplay, BenchError> {
    let policies = Placement::ALL
        .into_iter()
        .map(|p| p.sim_run(profile))
        .collect::<Result<Vec<_>, _>>()?;
    let options = SimOptions {
        profile: profile.clone(),
        policies,
        phases: Phases::paper(),
        schedule: "the paper's ramp, 10 -> 7,000 requests per 180 s over 180 s".into(),
        poisson: false,
        max_requests: None,
        models: vec![(scale.model.clone(), 1.0)],
        seed: 1,
        bucket: Duration::from_secs(18),
    };
    let output = options
        .run()
        .map_err(|e| BenchError::Other(e.to_string()))?;
    let full = Scale {
        rate_factor: 1.0,
        ramp_s: 180.0,
        ..scale.clone()
    };
    let local_saturation = output
        .runs
        .iter()
        .find(|r| r.label == Placement::LocalOnly.name())
        .and_then(|r| {
            let buckets = sim_buckets(r);
            saturation(&buckets, scale.slo_p99_ms)
                .and_then(|i| saturation_point(&buckets, i, &full))
        });
    Ok(SimReplay {
        profile: profile_name.to_owned(),
        local_saturation,
        output,
    })
}

/// The live runs of a model in the simulator's report shape, so the
/// simulator's plot draws them (offered load, p99 and failures per
/// bucket, side by side). Only those fields are filled: the live runs
/// have no cost; which tier served each bucket is in the shares table
/// (`paper_report::shares_table`), not in the plot.
pub fn live_plot_input(model: &ModelResults) -> SimOutput {
    let runs = model
        .runs
        .iter()
        .filter(|r| r.error.is_none())
        .map(|r| SimReport {
            label: r.placement.clone(),
            policy_source: "live".into(),
            models: vec![model.model.clone()],
            seed: 0,
            arrivals: "constant",
            simulated_seconds: model.scale.ramp_s,
            requests: r.due,
            succeeded: r.succeeded,
            failed: r.failed,
            failure_rate: r.failure_rate,
            failures: Default::default(),
            latency_ms: LatencyMs::default(),
            cost_dollars: 0.0,
            cost_per_1000_requests: 0.0,
            failovers: 0,
            retry_budget_exhausted: 0,
            backends: Vec::new(),
            bucket_seconds: model.scale.ramp_s / model.scale.buckets as f64,
            buckets: r
                .buckets
                .iter()
                .map(|b| Bucket {
                    start_s: b.start_s,
                    end_s: b.end_s,
                    arrivals: b.due,
                    offered_per_s: b.offered_per_s,
                    served: Vec::new(),
                    failed: b.failed,
                    failure_rate: b.failure_rate,
                    p50_ms: b.p50_ms.unwrap_or(0.0),
                    p99_ms: b.p99_ms.unwrap_or(0.0),
                })
                .collect(),
        })
        .collect();
    SimOutput {
        schedule: format!(
            "live, {} at the paper's rates x{} over {:.0} s",
            model.model, model.scale.rate_factor, model.scale.ramp_s
        ),
        expected_requests: model.scale.expected_requests,
        runs,
        wall_seconds: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_idle_wait_shrinks_with_what_is_left_of_the_budget() {
        assert_eq!(settle_limit(Duration::ZERO), SETTLE);
        assert_eq!(
            settle_limit(Duration::from_secs(5)),
            SETTLE + Duration::from_secs(5)
        );
        assert_eq!(settle_limit(SETTLE_BUDGET), SETTLE + SETTLE_MAX);
    }
}
