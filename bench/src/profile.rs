//! `switchyard-bench profile`: measures the backends of this machine, by
//! model (and, for the local tier, batch size), and writes a simulator
//! profile (the format of `config/profiles/default.toml`).
//!
//! - **local**: the gateway runs as a child process with
//!   `config/local-only.toml`. For each model and batch size, requests sent
//!   one at a time (so none waits behind another) measure the backend's
//!   time from the gateway's own headers (`switchyard-queue-time-us` +
//!   `switchyard-inference-time-us`, p50 and p99 each); the gateway's
//!   overhead is the client's latency minus that, on batch-1 requests of
//!   the lightest model.
//! - **container**: a container-only gateway per model starts one worker
//!   container (the image built from this checkout); batch-1 requests sent
//!   one at a time straight to the worker's published port measure the
//!   round trip the gateway would see. The cold start is the pool's own
//!   create → ready measure over fresh pools.
//! - **lambda**: the function binary on the Lambda emulator; one warm
//!   instance per model answers batch-1 Invokes sent one at a time; the
//!   cold start is the first Invoke of a freshly started instance minus the
//!   warm median (what the simulator adds to a first invocation).
//!
//! Tiers not measured (`--backend` picks), prices and queue sizes are
//! copied from the template profile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchyard_backend_container::bollard::Docker;
use switchyard_loadgen::{
    Endpoint, HttpClient, Load, PayloadSpec, Report, RunSettings, Target, http_client, run,
};
use switchyard_models::ModelRepository;
use switchyard_scheduler::sim::ProfileFile;
use switchyard_scheduler::sim::profile::{BatchPoint, Percentiles};

use crate::error::BenchError;
use crate::gateway_process::GatewayProcess;
use crate::local::{LocalOptions, gateway_binary, progress};
use crate::machine::{Machine, utc_now};
use crate::overhead::{
    TempDir, chosen, container_cold_start_samples, container_tier, invoke_body, invoke_target,
    one_request, worker_addresses,
};
use crate::overhead_report::ColdStarts;
use crate::paper::{
    ContainerScope, LambdaTier, Placement, Tiers, config_text, function_path, gateway_table,
    lambda_instances, remove_containers, run_scoped,
};

/// This benchmark's containers and images.
const CONTAINERS: ContainerScope = ContainerScope {
    scope: "profile",
    image_prefix: "switchyard-worker-profile",
};

/// The tiers it can measure.
pub const TIERS: [&str; 3] = ["local", "container", "lambda"];

/// What to measure and where to write it.
#[derive(Debug, Clone)]
pub struct ProfileOptions {
    pub quick: bool,
    pub template: PathBuf,
    pub out: PathBuf,
    pub gateway: LocalOptions,
    /// Only these tiers (all when empty).
    pub tiers: Vec<String>,
}

/// The tiers `options` asks for, checked.
fn chosen_tiers(options: &ProfileOptions) -> Result<Vec<&'static str>, BenchError> {
    chosen("--backend", &options.tiers, &TIERS)
}

/// Cold starts measured per model in a full run and a quick one.
fn cold_starts(quick: bool) -> usize {
    if quick { 2 } else { 8 }
}

/// One measured point.
#[derive(Debug, Clone, Copy)]
struct Measured {
    backend: Percentiles,
    client: Percentiles,
}

/// Requests per point.
fn plan(model: &str, quick: bool) -> u64 {
    match (quick, model == "xception") {
        (true, true) => 6,
        (true, false) => 100,
        (false, true) => 30,
        (false, false) => 400,
    }
}

fn batches(model: &str, max_batch: u64, quick: bool) -> Vec<u64> {
    let mut list: Vec<u64> = [1, 8, max_batch]
        .into_iter()
        .filter(|&b| b <= max_batch)
        .collect();
    if quick && model == "xception" {
        list.truncate(1);
    }
    list.dedup();
    list
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn point(report: &Report) -> Result<Measured, BenchError> {
    if report.counts.success == 0 || report.counts.errors() > 0 {
        return Err(BenchError::Other(format!(
            "{}: {} of {} requests failed; is the machine busy?",
            report
                .per_model
                .keys()
                .next()
                .map_or("the model", String::as_str),
            report.counts.errors(),
            report.scheduled
        )));
    }
    let t = &report.server_timing;
    let p50 = (ms(t.queue_us.p50 + t.inference_us.p50)).max(0.001);
    let p99 = (ms(t.queue_us.p99 + t.inference_us.p99)).max(p50);
    Ok(Measured {
        backend: Percentiles {
            p50_ms: p50,
            p99_ms: p99,
        },
        client: Percentiles {
            p50_ms: ms(report.latency_us.p50).max(p50),
            p99_ms: ms(report.latency_us.p99).max(p99),
        },
    })
}

/// Round trips of one model on a remote tier, batch 1.
#[derive(Debug, Clone, Copy)]
struct RemoteModel {
    latency: Percentiles,
    /// Lambda: the first Invoke of a fresh instance minus the warm median.
    cold_start: Option<Percentiles>,
}

/// What was measured of the container or the Lambda tier.
#[derive(Debug, Clone, Default)]
struct RemoteTier {
    models: Vec<(String, RemoteModel)>,
    /// The container pool's create → ready.
    cold_start: Option<Percentiles>,
}

/// Everything measured.
#[derive(Debug, Default)]
struct Measurements {
    local: Vec<(String, Points)>,
    container: Option<RemoteTier>,
    lambda: Option<RemoteTier>,
}

/// The names of the models a tier of the template serves, or an error
/// naming the missing table.
fn tier_models(
    template: &Path,
    tier: &str,
    models: Option<Vec<String>>,
) -> Result<Vec<String>, BenchError> {
    models.ok_or_else(|| {
        BenchError::Config(format!(
            "{}: the template has no [backends.{tier}] to measure",
            template.display()
        ))
    })
}

/// Measures and writes the profile; returns its text.
pub fn run_profile(options: &ProfileOptions) -> Result<String, BenchError> {
    let text = std::fs::read_to_string(&options.template).map_err(|source| BenchError::Io {
        context: "cannot read the template profile",
        path: options.template.clone(),
        source,
    })?;
    let mut file = ProfileFile::parse(&text)
        .map_err(|e| BenchError::Config(format!("{}: {e}", options.template.display())))?;
    let tiers = chosen_tiers(options)?;
    let binary = gateway_binary(&options.gateway)?;
    let template = options.template.as_path();
    let mut local_models: Vec<(String, u64)> = Vec::new();
    if tiers.contains(&"local") {
        let local = file.backends.local.as_ref().ok_or_else(|| {
            BenchError::Config(format!(
                "{}: the template has no [backends.local] to measure",
                template.display()
            ))
        })?;
        local_models = local
            .models
            .keys()
            .filter_map(|name| {
                file.models
                    .get(name)
                    .map(|m| (name.clone(), m.max_batch_size))
            })
            .collect();
    }
    let container_models = if tiers.contains(&"container") {
        tier_models(
            template,
            "container",
            file.backends
                .container
                .as_ref()
                .map(|c| c.models.keys().cloned().collect()),
        )?
    } else {
        Vec::new()
    };
    let lambda_models = if tiers.contains(&"lambda") {
        tier_models(
            template,
            "lambda",
            file.backends
                .lambda
                .as_ref()
                .map(|l| l.models.keys().cloned().collect()),
        )?
    } else {
        Vec::new()
    };
    let quick = options.quick;
    let measured = run_scoped(CONTAINERS, |root, docker| {
        let binary = binary.clone();
        async move {
            let mut all = Measurements::default();
            if !local_models.is_empty() {
                all.local = measure(&binary, &local_models, quick).await?;
            }
            if !container_models.is_empty() {
                let docker = docker.ok_or_else(|| {
                    BenchError::Other(
                        "the container tier needs the Docker engine, which does not answer \
                         (or leave it out: --backend local --backend lambda)"
                            .into(),
                    )
                })?;
                all.container = Some(
                    measure_containers(&root, &docker, &binary, &container_models, quick).await?,
                );
            }
            if !lambda_models.is_empty() {
                all.lambda = Some(measure_lambda(&root, &lambda_models, quick).await?);
            }
            Ok(all)
        }
    })?;
    let mut overhead: Option<Percentiles> = None;
    for (model, points) in &measured.local {
        if let Some(entry) = file
            .backends
            .local
            .as_mut()
            .and_then(|l| l.models.get_mut(model))
        {
            entry.latency = points
                .iter()
                .map(|(batch, m)| BatchPoint {
                    batch: *batch,
                    p50_ms: m.backend.p50_ms,
                    p99_ms: m.backend.p99_ms,
                })
                .collect();
        }
        // The overhead from the lightest model's batch-1 requests.
        if let Some((_, m)) = points.iter().find(|(b, _)| *b == 1) {
            let candidate = Percentiles {
                p50_ms: (m.client.p50_ms - m.backend.p50_ms).max(0.001),
                p99_ms: (m.client.p99_ms - m.backend.p99_ms)
                    .max(m.client.p50_ms - m.backend.p50_ms)
                    .max(0.001),
            };
            if overhead.is_none_or(|o| candidate.p50_ms < o.p50_ms) {
                overhead = Some(candidate);
            }
        }
    }
    if let Some(o) = overhead {
        file.gateway.overhead = o;
    }
    if let (Some(tier), Some(measured)) = (file.backends.container.as_mut(), &measured.container) {
        for (model, m) in &measured.models {
            if let Some(entry) = tier.models.get_mut(model) {
                entry.latency = vec![batch_one(m.latency)];
            }
        }
        if let Some(cold) = measured.cold_start {
            tier.cold_start = cold;
        }
    }
    if let (Some(tier), Some(measured)) = (file.backends.lambda.as_mut(), &measured.lambda) {
        for (model, m) in &measured.models {
            if let Some(entry) = tier.models.get_mut(model) {
                entry.latency = vec![batch_one(m.latency)];
                entry.cold_start = m.cold_start;
            }
        }
        // The tier's own cold start (for models given none): the lightest
        // model's, the least that loading a model adds.
        if let Some(cold) = measured
            .models
            .iter()
            .filter_map(|(_, m)| m.cold_start)
            .min_by(|a, b| a.p50_ms.total_cmp(&b.p50_ms))
        {
            tier.cold_start = cold;
        }
    }
    // The result must be a valid profile.
    file.validate()
        .map_err(|e| BenchError::Other(format!("the measured profile is invalid: {e}")))?;
    let body = file.to_toml().map_err(BenchError::Other)?;
    let machine = Machine::describe();
    let header = format!(
        "# Simulator profile written by `switchyard-bench profile{}` on {}.\n\
         # Machine: {} CPUs, {}, load average at start {}.\n\
         # Measured on this machine: {}. Everything else is copied from\n\
         # {}. config/profiles/default.toml documents every key.\n\n",
        if options.quick { " --quick" } else { "" },
        utc_now(),
        machine.nproc,
        machine.cpu_model,
        machine.load_average_at_start,
        measured_tiers(&tiers),
        options.template.display()
    );
    let text = header + &body;
    write(&options.out, &text)?;
    progress(&format!("wrote {}", options.out.display()));
    Ok(text)
}

/// What the header says was measured.
fn measured_tiers(tiers: &[&str]) -> String {
    let mut parts = Vec::new();
    if tiers.contains(&"local") {
        parts.push(
            "[backends.local] latencies and [gateway] overhead (through the gateway, \
             config/local-only.toml)",
        );
    }
    if tiers.contains(&"container") {
        parts.push(
            "[backends.container] latencies (straight to one worker container) and \
             cold start (the pool's create -> ready)",
        );
    }
    if tiers.contains(&"lambda") {
        parts.push(
            "[backends.lambda] latencies and cold starts (the function on the Lambda \
             emulator, Invokes sent directly)",
        );
    }
    parts.join(";\n# ")
}

fn batch_one(latency: Percentiles) -> BatchPoint {
    BatchPoint {
        batch: 1,
        p50_ms: latency.p50_ms,
        p99_ms: latency.p99_ms,
    }
}

/// Requests one at a time: none ever waits behind another, whatever the
/// model's speed.
fn one_at_a_time(count: u64) -> RunSettings {
    RunSettings {
        load: Load::Closed {
            concurrency: 1,
            duration: Duration::from_secs(120),
        },
        max_duration: Duration::from_secs(120),
        max_requests: Some(count),
        timeout: Duration::from_secs(30),
        keep_samples: false,
    }
}

/// The client's p50 and p99 of `report`, in ms; an error if any failed.
fn round_trip(report: &Report, what: &str) -> Result<Percentiles, BenchError> {
    if report.counts.success == 0 || report.counts.errors() > 0 {
        return Err(BenchError::Other(format!(
            "{what}: {} of {} requests failed; is the machine busy?",
            report.counts.errors(),
            report.scheduled
        )));
    }
    let p50 = ms(report.latency_us.p50).max(0.001);
    Ok(Percentiles {
        p50_ms: p50,
        p99_ms: ms(report.latency_us.p99).max(p50),
    })
}

/// p50 and p99 of a handful of durations, ms (nearest rank).
fn percentiles(samples: &[Duration]) -> Option<Percentiles> {
    let cold = ColdStarts::of("", samples);
    (!cold.samples_ms.is_empty()).then_some(Percentiles {
        p50_ms: cold.p50_ms,
        p99_ms: cold.p99_ms,
    })
}

/// `edit` for one worker container of `models`, in an image of its own.
fn one_container(models: &[String], image: Option<&str>) -> impl Fn(&mut toml::Table) {
    let models: Vec<toml::Value> = models
        .iter()
        .map(|m| toml::Value::String(m.clone()))
        .collect();
    let image = image.map(str::to_owned);
    move |table: &mut toml::Table| {
        if let Some(tier) = container_tier(table) {
            tier.insert("min_containers".into(), toml::Value::Integer(1));
            tier.insert("max_containers".into(), toml::Value::Integer(1));
            tier.insert("models".into(), toml::Value::Array(models.clone()));
            if let Some(image) = &image {
                tier.insert("image".into(), toml::Value::String(image.clone()));
            }
        }
    }
}

/// Per model, a container-only gateway with one worker container, and
/// batch-1 requests straight to the worker; then the pool's cold start with
/// every model in the image, as a deployment of the tier would run it.
async fn measure_containers(
    root: &Path,
    docker: &Docker,
    binary: &Path,
    models: &[String],
    quick: bool,
) -> Result<RemoteTier, BenchError> {
    let left = remove_containers(docker, CONTAINERS).await;
    if left > 0 {
        progress(&format!(
            "removed {left} container(s) left by an earlier run"
        ));
    }
    let temp = TempDir::new("profile")?;
    let client = http_client(4);
    let mut tier = RemoteTier::default();
    for model in models {
        let tiers = Tiers {
            model,
            gateway_bin: binary,
            lambda_endpoint: None,
            containers: CONTAINERS,
        };
        let mut table = gateway_table(Placement::ContainerOnly, &tiers)?;
        one_container(std::slice::from_ref(model), None)(&mut table);
        let path = temp.0.join(format!("container-{model}.toml"));
        let text = config_text(Placement::ContainerOnly, model, &table)?;
        std::fs::write(&path, text).map_err(|source| BenchError::Io {
            context: "cannot write the gateway config",
            path: path.clone(),
            source,
        })?;
        progress(&format!(
            "profile: {model}: starting a container-only gateway"
        ));
        let mut gateway =
            tokio::task::block_in_place(|| GatewayProcess::start_with_config(binary, &path))?;
        gateway.wait_ready(&client).await?;
        // The route the gateway itself takes to the container.
        let endpoint = worker_addresses(&gateway, &client, docker, CONTAINERS)
            .await?
            .used_endpoint()?;
        let measured = direct_round_trip(&client, endpoint, model, quick).await;
        // SIGTERM: the gateway drains and removes its worker container itself.
        tokio::task::block_in_place(|| gateway.terminate(Duration::from_secs(15)));
        let latency = measured?;
        progress(&format!(
            "profile: {model} container: round trip p50 {:.3} ms, p99 {:.3} ms",
            latency.p50_ms, latency.p99_ms
        ));
        tier.models.push((
            model.clone(),
            RemoteModel {
                latency,
                cold_start: None,
            },
        ));
    }
    let image = format!("{}-all", CONTAINERS.image_prefix);
    let first = models
        .first()
        .ok_or_else(|| BenchError::Config("no container models to measure".into()))?;
    let samples = container_cold_start_samples(
        root,
        binary,
        CONTAINERS,
        first,
        cold_starts(quick),
        &one_container(models, Some(&image)),
    )
    .await?;
    tier.cold_start = percentiles(&samples);
    Ok(tier)
}

/// Batch-1 requests of `model` one at a time to `endpoint` (a worker).
async fn direct_round_trip(
    client: &HttpClient,
    endpoint: Endpoint,
    model: &str,
    quick: bool,
) -> Result<Percentiles, BenchError> {
    let payload = PayloadSpec {
        batch_size: 1,
        binary: true,
        binary_output: true,
        ..PayloadSpec::default()
    };
    let target = Arc::new(Target::prepare(client, endpoint, model, &payload).await?);
    run(client, &target, &one_at_a_time(3)).await?;
    let recording = run(client, &target, &one_at_a_time(plan(model, quick))).await?;
    round_trip(&recording.report, model)
}

/// Per model: cold Invokes of freshly started instances, then warm ones of
/// one instance, all sent straight to the emulator.
async fn measure_lambda(
    root: &Path,
    models: &[String],
    quick: bool,
) -> Result<RemoteTier, BenchError> {
    let repository = ModelRepository::load(&root.join("models/repository"))?;
    let mut lambda = LambdaTier::default();
    let emulator = lambda.emulator(root)?;
    let invoke = Endpoint::parse(&emulator.endpoint(), false)?;
    let (_, memory_mb) = lambda_instances()?;
    let function = function_path()?;
    let client = http_client(4);
    let mut tier = RemoteTier::default();
    for model in models {
        let (version, path) = repository
            .models
            .get(model)
            .and_then(|m| m.latest())
            .map(|v| (v.version, v.path.clone()))
            .ok_or_else(|| BenchError::Config(format!("no {model} in the repository")))?;
        let target = Arc::new(invoke_target(&invoke, invoke_body(model, &path, version)?)?);
        // Cold first, while no instance of the model could take the Invoke.
        let mut cold = Vec::new();
        for _ in 0..cold_starts(quick) {
            let instance = emulator
                .instance(&function, model, memory_mb)
                .map_err(BenchError::Other)?;
            cold.push(one_request(&client, &target).await?);
            drop(instance);
        }
        let instance = emulator
            .instance(&function, model, memory_mb)
            .map_err(BenchError::Other)?;
        run(&client, &target, &one_at_a_time(3)).await?;
        let recording = run(&client, &target, &one_at_a_time(plan(model, quick))).await;
        drop(instance);
        let latency = round_trip(&recording?.report, model)?;
        let cold = percentiles(&cold).map(|c| Percentiles {
            p50_ms: (c.p50_ms - latency.p50_ms).max(0.0),
            p99_ms: (c.p99_ms - latency.p50_ms)
                .max(c.p50_ms - latency.p50_ms)
                .max(0.0),
        });
        progress(&format!(
            "profile: {model} lambda: warm p50 {:.3} ms, p99 {:.3} ms; cold start adds p50 {:.1} ms",
            latency.p50_ms,
            latency.p99_ms,
            cold.map_or(0.0, |c| c.p50_ms)
        ));
        tier.models.push((
            model.clone(),
            RemoteModel {
                latency,
                cold_start: cold,
            },
        ));
    }
    Ok(tier)
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|source| BenchError::Io {
        context: "cannot write the profile",
        path: path.to_owned(),
        source,
    })
}

type Points = Vec<(u64, Measured)>;

async fn measure(
    binary: &Path,
    models: &[(String, u64)],
    quick: bool,
) -> Result<Vec<(String, Points)>, BenchError> {
    let mut gateway = GatewayProcess::start(binary)?;
    let client = http_client(16);
    gateway.wait_ready(&client).await?;
    let endpoint = gateway.endpoint()?;
    let mut all = Vec::new();
    for (model, max_batch) in models {
        let mut points = Vec::new();
        for batch in batches(model, *max_batch, quick) {
            let payload = PayloadSpec {
                batch_size: batch,
                binary: true,
                ..PayloadSpec::default()
            };
            let target =
                Arc::new(Target::prepare(&client, endpoint.clone(), model, &payload).await?);
            let count = plan(model, quick);
            // A few requests first: the first calls of a session are slow.
            run(&client, &target, &one_at_a_time(3)).await?;
            let recording = run(&client, &target, &one_at_a_time(count)).await?;
            let measured = point(&recording.report)?;
            progress(&format!(
                "profile: {model} batch {batch}: backend p50 {:.3} ms, p99 {:.3} ms; client p50 {:.3} ms",
                measured.backend.p50_ms, measured.backend.p99_ms, measured.client.p50_ms
            ));
            points.push((batch, measured));
        }
        all.push((model.clone(), points));
    }
    drop(gateway);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn options(tiers: &[&str]) -> ProfileOptions {
        ProfileOptions {
            quick: true,
            template: PathBuf::from("config/profiles/default.toml"),
            out: PathBuf::from("profile.toml"),
            gateway: LocalOptions {
                quick: true,
                build_gateway: false,
                gateway_bin: None,
                command: String::new(),
            },
            tiers: tiers.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn tiers_default_to_all_and_an_unknown_one_is_named() {
        assert_eq!(chosen_tiers(&options(&[])).unwrap(), TIERS);
        assert_eq!(
            chosen_tiers(&options(&["lambda", "local"])).unwrap(),
            ["local", "lambda"]
        );
        let error = chosen_tiers(&options(&["gpu"])).unwrap_err().to_string();
        assert!(
            error.contains("--backend gpu") && error.contains("container"),
            "{error}"
        );
    }

    #[test]
    fn cold_start_percentiles_are_nearest_rank() {
        let samples: Vec<Duration> = [400, 380, 520, 410].map(Duration::from_millis).to_vec();
        let p = percentiles(&samples).unwrap();
        assert!((p.p50_ms - 400.0).abs() < 1e-9, "{p:?}");
        assert!((p.p99_ms - 520.0).abs() < 1e-9, "{p:?}");
        assert!(percentiles(&[]).is_none());
    }

    #[test]
    fn one_container_edits_the_pool_and_its_models() {
        let mut table: toml::Table = toml::from_str(
            "[backends.container]\nmin_containers = 2\nmax_containers = 4\nmodels = [\"a\"]\nimage = \"x\"\n",
        )
        .unwrap();
        one_container(&["a".into(), "b".into()], Some("y-all"))(&mut table);
        let tier = &table["backends"]["container"];
        assert_eq!(tier["min_containers"].as_integer(), Some(1));
        assert_eq!(tier["max_containers"].as_integer(), Some(1));
        assert_eq!(tier["models"].as_array().map(Vec::len), Some(2));
        assert_eq!(tier["image"].as_str(), Some("y-all"));
        one_container(&["a".into()], None)(&mut table);
        assert_eq!(
            table["backends"]["container"]["image"].as_str(),
            Some("y-all"),
            "no image given: the config's stays"
        );
    }

    #[test]
    fn batch_sizes_cover_one_eight_and_the_largest() {
        assert_eq!(batches("fashion_cnn", 64, false), vec![1, 8, 64]);
        assert_eq!(batches("xception", 8, false), vec![1, 8]);
        assert_eq!(batches("xception", 8, true), vec![1]);
        assert_eq!(batches("m", 1, false), vec![1]);
    }
}
