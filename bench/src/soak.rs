//! The soak: the paper's ramp through all three tiers while faults are
//! injected, counting that every request got exactly one answer.
//!
//! The gateway runs as the release binary with local, container and Lambda
//! backends (the Lambda tier through the real emulator and function
//! binary), placing `fashion_cnn` with the `straightline` policy. The load is
//! the paper's ramp (10 → 7,000 requests per 180 s over 180 s), scaled so it
//! crosses the straightline threshold and overloads the local tier. On a
//! timeline the soak:
//!
//! - kills a worker container (20% of the run, and again at 75%);
//! - freezes the Lambda function (SIGSTOP) for 3 s at 35%, so its
//!   invocations hang;
//! - stops the Lambda service at 50% and starts it again at 60%;
//! - at the end, sends SIGTERM and expects a clean drain (exit 0, no
//!   container left).
//!
//! It reports requests sent, answered (any HTTP status), errors by kind,
//! lost (sent but never answered: timeouts and broken connections, which
//! must be 0) and the gateway's peak resident memory (VmHWM).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_backend_container::bollard::Docker;
use switchyard_backend_container::bollard::query_parameters::KillContainerOptions;
use switchyard_backend_container::engine;
use switchyard_backend_lambda::emulator::{ChildProcess, LocalEmulator, function_binary};
use switchyard_loadgen::{
    Load, PayloadSpec, Phases, Process, Report, RunSettings, Target, http_client, run,
};

use crate::error::BenchError;
use crate::gateway_process::GatewayProcess;
use crate::machine::Machine;

/// Container scope label of the soak's pool.
const SCOPE: &str = "soak";

/// What one soak run looked like.
#[derive(Debug, Serialize)]
pub struct SoakResults {
    pub machine: Machine,
    pub quick: bool,
    pub load: String,
    pub duration_s: f64,
    pub faults: Vec<FaultEvent>,
    pub sent: u64,
    pub answered: u64,
    pub succeeded: u64,
    pub throttled_429: u64,
    pub server_errors_5xx: u64,
    pub other_status: u64,
    pub timeouts: u64,
    pub connection_errors: u64,
    /// Sent but never answered (timeouts and broken connections).
    pub lost: u64,
    /// Due while the client had its maximum in flight: never sent.
    pub dropped: u64,
    pub per_backend: Vec<(String, u64)>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub peak_rss_mib: Option<f64>,
    pub drained_exit_ok: bool,
    pub containers_left: usize,
    pub report: Report,
}

/// A fault the soak injected, and when.
#[derive(Debug, Clone, Serialize)]
pub struct FaultEvent {
    pub at_s: f64,
    pub fault: String,
}

/// Options of `switchyard-bench soak`.
#[derive(Debug)]
pub struct SoakOptions {
    pub quick: bool,
    pub gateway_bin: PathBuf,
}

fn config(endpoint: &str) -> String {
    format!(
        r#"# Written by switchyard-bench soak.
[models]
repository = "models/repository"

[placement.default]
policy = "straightline"
# Above 20 requests/s small requests go to the serverless tier (the paper's F).
frequency_threshold = 20.0
data_size_threshold_bytes = 65536

[backends.local]
models = ["fashion_cnn"]
workers = 1
queue_capacity = 64

[backends.container]
models = ["fashion_cnn"]
image = "switchyard-worker-soak"
scope = "{SCOPE}"
min_containers = 1
max_containers = 2
health_interval_ms = 500

[backends.lambda]
endpoint = "{endpoint}"
models = ["fashion_cnn"]
reserved_concurrency = 4
retry_down_after_ms = 1000
"#
    )
}

fn signal(pid: u32, name: &str) {
    let _ = std::process::Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status();
}

/// Peak resident memory of a process, from `/proc/PID/status` (VmHWM).
fn peak_rss_mib(pid: u32) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}

async fn pool_containers(docker: &Docker) -> Vec<String> {
    engine::list_labelled(
        docker,
        &[
            (engine::LABEL_MANAGED, "true"),
            (engine::LABEL_SCOPE, SCOPE),
        ],
    )
    .await
    .unwrap_or_default()
    .into_iter()
    .filter_map(|c| c.id)
    .collect()
}

async fn kill_one_container(docker: &Docker) -> String {
    match pool_containers(docker).await.first() {
        Some(id) => match docker
            .kill_container(id, None::<KillContainerOptions>)
            .await
        {
            Ok(()) => format!("killed worker container {}", &id[..12.min(id.len())]),
            Err(e) => format!("could not kill a worker container: {e}"),
        },
        None => "no worker container to kill".into(),
    }
}

/// Runs the soak from the repository root.
pub fn soak(options: &SoakOptions) -> Result<SoakResults, BenchError> {
    let root = std::env::current_dir().map_err(|source| BenchError::Io {
        context: "cannot read the current directory",
        path: PathBuf::from("."),
        source,
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Other(format!("cannot start the async runtime: {e}")))?;
    runtime.block_on(soak_async(options, &root))
}

async fn soak_async(options: &SoakOptions, root: &Path) -> Result<SoakResults, BenchError> {
    let docker = Docker::connect_with_unix("/var/run/docker.sock", 120, &engine::API_VERSION)
        .map_err(|e| BenchError::Other(format!("the soak needs the Docker engine: {e}")))?;
    docker.ping().await.map_err(|e| {
        BenchError::Other(format!(
            "the soak needs the Docker engine, which does not answer: {e}"
        ))
    })?;
    let mut emulator = LocalEmulator::start(root).map_err(BenchError::Other)?;
    let exe = std::env::current_exe().map_err(|source| BenchError::Io {
        context: "cannot find this executable",
        path: PathBuf::from("switchyard-bench"),
        source,
    })?;
    let function = function_binary(&exe).map_err(BenchError::Other)?;
    let start_instance = |emulator: &LocalEmulator| -> Result<ChildProcess, BenchError> {
        emulator
            .instance(&function, "fashion_cnn", 1024)
            .map_err(BenchError::Other)
    };
    let mut instance = Some(start_instance(&emulator)?);

    let config_path =
        std::env::temp_dir().join(format!("switchyard-soak-{}.toml", std::process::id()));
    std::fs::write(&config_path, config(&emulator.endpoint())).map_err(|source| {
        BenchError::Io {
            context: "cannot write the soak config",
            path: config_path.clone(),
            source,
        }
    })?;
    let mut gateway = GatewayProcess::start_with_config(&options.gateway_bin, &config_path)?;
    let client = http_client(512);
    gateway.wait_ready(&client).await?;

    let (phases, scale_note) = if options.quick {
        (
            Phases::new(vec![switchyard_loadgen::Phase::ramp(
                "quick ramp",
                Duration::from_secs(40),
                2.0,
                150.0,
            )])?,
            "quick: one 40 s ramp from 2 to 150 requests/s".to_owned(),
        )
    } else {
        (
            Phases::paper().scaled(6.0)?,
            "the paper's ramp (10 -> 7,000 per 180 s over 180 s) x 6: 0.33 -> 233 requests/s"
                .to_owned(),
        )
    };
    let duration = phases.total_duration();
    let payload = PayloadSpec {
        batch_size: 1,
        binary: true,
        binary_output: true,
        variants: 8,
        seed: 7,
    };
    let target =
        Arc::new(Target::prepare(&client, gateway.endpoint()?, "fashion_cnn", &payload).await?);
    let settings = RunSettings::new(
        Load::Open {
            phases,
            process: Process::Poisson { seed: 7 },
            max_in_flight: 512,
        },
        Duration::from_secs(30),
    );

    let started = Instant::now();
    let at = |share: f64| started + duration.mul_f64(share);
    let faults = async {
        let mut events = Vec::new();
        let note = |what: String, events: &mut Vec<FaultEvent>| {
            events.push(FaultEvent {
                at_s: started.elapsed().as_secs_f64(),
                fault: what,
            });
        };
        tokio::time::sleep_until(at(0.20).into()).await;
        note(kill_one_container(&docker).await, &mut events);
        tokio::time::sleep_until(at(0.35).into()).await;
        if let Some(process) = &instance {
            signal(process.id(), "STOP");
            note("froze the Lambda function (SIGSTOP)".into(), &mut events);
            tokio::time::sleep(Duration::from_secs(3)).await;
            signal(process.id(), "CONT");
            note("thawed the Lambda function (SIGCONT)".into(), &mut events);
        }
        tokio::time::sleep_until(at(0.50).into()).await;
        emulator.stop();
        instance.take();
        note("stopped the Lambda service".into(), &mut events);
        tokio::time::sleep_until(at(0.60).into()).await;
        match emulator.restart() {
            Ok(()) => match start_instance(&emulator) {
                Ok(process) => {
                    instance = Some(process);
                    note("restarted the Lambda service".into(), &mut events);
                }
                Err(e) => note(format!("could not restart the function: {e}"), &mut events),
            },
            Err(e) => note(
                format!("could not restart the Lambda service: {e}"),
                &mut events,
            ),
        }
        tokio::time::sleep_until(at(0.75).into()).await;
        note(kill_one_container(&docker).await, &mut events);
        events
    };
    let (recording, events) = tokio::join!(run(&client, &target, &settings), faults);
    let recording = recording?;
    let peak_rss = peak_rss_mib(gateway.pid());
    let exit = tokio::task::block_in_place(|| gateway.terminate(Duration::from_secs(60)));
    drop(gateway);
    drop(instance);
    let _ = std::fs::remove_file(&config_path);
    let containers_left = pool_containers(&docker).await.len();

    let report = recording.report;
    let c = &report.counts;
    let sent = report.sent;
    let answered = c.success + c.throttled + c.server_error + c.other_status;
    let ms = |us: u64| us as f64 / 1000.0;
    Ok(SoakResults {
        machine: Machine::describe(),
        quick: options.quick,
        load: scale_note,
        duration_s: duration.as_secs_f64(),
        faults: events,
        sent,
        answered,
        succeeded: c.success,
        throttled_429: c.throttled,
        server_errors_5xx: c.server_error,
        other_status: c.other_status,
        timeouts: c.timeout,
        connection_errors: c.connection_error,
        lost: c.timeout + c.connection_error,
        dropped: c.dropped,
        per_backend: report
            .per_backend
            .iter()
            .map(|(name, group)| (name.clone(), group.sent))
            .collect(),
        p50_ms: ms(report.latency_us.p50),
        p99_ms: ms(report.latency_us.p99),
        peak_rss_mib: peak_rss,
        drained_exit_ok: exit.is_some_and(|s| s.success()),
        containers_left,
        report,
    })
}

/// The results as a Markdown page.
pub fn markdown(r: &SoakResults) -> String {
    let mut out = String::new();
    out.push_str("# Soak: the paper's ramp with faults injected\n\n");
    out.push_str(&format!(
        "Machine: {} CPUs ({}), load average at start {}. Load: {} (Poisson arrivals, fashion_cnn, binary tensors), {:.0} s; gateway with local, container and Lambda (emulator) tiers, straightline policy.\n\n",
        r.machine.nproc,
        r.machine.cpu_model,
        r.machine.load_average_at_start,
        r.load,
        r.duration_s
    ));
    out.push_str("| fault | at |\n|---|---|\n");
    for f in &r.faults {
        out.push_str(&format!("| {} | {:.1} s |\n", f.fault, f.at_s));
    }
    out.push_str("\n| measure | value |\n|---|---|\n");
    let rows: Vec<(&str, String)> = vec![
        ("requests sent", r.sent.to_string()),
        ("answered (any status)", r.answered.to_string()),
        ("succeeded (2xx)", r.succeeded.to_string()),
        (
            "refused 429 (backend full or shed)",
            r.throttled_429.to_string(),
        ),
        ("5xx", r.server_errors_5xx.to_string()),
        ("other status", r.other_status.to_string()),
        ("timeouts (30 s)", r.timeouts.to_string()),
        ("connection errors", r.connection_errors.to_string()),
        ("**lost** (sent, never answered)", format!("**{}**", r.lost)),
        ("dropped by the client (never sent)", r.dropped.to_string()),
        (
            "p50 / p99 of successes",
            format!("{:.1} ms / {:.1} ms", r.p50_ms, r.p99_ms),
        ),
        (
            "gateway peak RSS",
            r.peak_rss_mib
                .map_or("n/a".into(), |m| format!("{m:.0} MiB")),
        ),
        ("SIGTERM: drained, exit 0", r.drained_exit_ok.to_string()),
        (
            "worker containers left after exit",
            r.containers_left.to_string(),
        ),
    ];
    for (k, v) in rows {
        out.push_str(&format!("| {k} | {v} |\n"));
    }
    out.push_str("\nRequests per answering backend: ");
    let shares: Vec<String> = r
        .per_backend
        .iter()
        .map(|(b, n)| format!("{b} {n}"))
        .collect();
    out.push_str(&shares.join(", "));
    out.push('\n');
    out
}
