//! The `switchyard` command: `serve` runs the gateway, `worker` serves a
//! model repository locally (the program inside a worker container), and
//! `check-config` validates a configuration file without starting anything;
//! `sim` replays a load schedule against simulated backends in virtual time.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use switchyard_backends::affinity;
use switchyard_scheduler::config::{MAX_IO_THREADS, WorkerSettings};
use switchyard_scheduler::{Config, Gateway, telemetry};
use switchyard_scheduler::{policy_check, sim};

/// mimalloc instead of the system allocator: a request allocates and frees
/// many small buffers (headers, tensors, labels) across threads, and glibc's
/// malloc was 12% of the gateway's CPU at saturation. Measured here, this
/// binary against the same one on glibc's allocator, 64 connections closed
/// loop, alternating rounds: digits 1.13x the requests/s (4 rounds each);
/// fashion_cnn, whose time is ONNX Runtime's, 1.03x (6 rounds, within the
/// noise); at 200 requests/s the p50 did not move beyond the noise.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "switchyard",
    version,
    about = "Resource-aware inference placement gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the Open Inference Protocol (v2) on HTTP.
    Serve {
        /// Configuration file (TOML); the embedded default when omitted.
        #[arg(long, short)]
        config: Option<PathBuf>,
        /// Address to listen on, overriding `server.listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Serve every model of a repository on the v2 API with the local
    /// backend only: the program inside a worker container.
    Worker {
        /// The model repository.
        #[arg(long, default_value = "models/repository")]
        repository: PathBuf,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:8000")]
        listen: std::net::SocketAddr,
        /// Worker threads (sessions) per model.
        #[arg(long, default_value_t = 1)]
        workers: usize,
        /// ONNX Runtime intra-op threads per session.
        #[arg(long, default_value_t = 1)]
        intra_op_threads: usize,
        /// Requests that may wait per model before new ones get 429.
        #[arg(long, default_value_t = 256)]
        queue_capacity: usize,
        /// Run a request on the HTTP thread when its model's pool is idle and
        /// a one-row run takes at most this many µs (0: never).
        #[arg(long, default_value_t = switchyard_scheduler::config::DEFAULT_INLINE_MAX_COMPUTE_US)]
        inline_max_compute_us: u64,
        /// As it starts, send one empty UDP datagram to the default
        /// gateway's discard port so the network learns this worker's
        /// address. The container pool sets it for its containers, whose
        /// gateway on Docker's bridge is the gateway's own host; leave it
        /// off anywhere else.
        #[arg(long)]
        announce: bool,
        /// Log format.
        #[arg(long, value_enum, default_value = "text")]
        log_format: LogFormat,
    },
    /// Placement policy files.
    Policy {
        #[command(subcommand)]
        command: PolicyCommand,
    },
    /// Check a configuration file (and the model repository it names) and exit.
    CheckConfig {
        /// Configuration file (TOML).
        file: PathBuf,
    },
    /// Simulate placement policies against models of the backends, in
    /// virtual time: a load schedule, one run per policy, side by side.
    Sim(SimArgs),
}

#[derive(Debug, clap::Args)]
struct SimArgs {
    /// A policy file to simulate (repeat for several, side by side).
    #[arg(long = "policy-file")]
    policy_files: Vec<PathBuf>,
    /// A policy given inline: static:BACKEND (e.g. static:local for the
    /// local-only baseline), round_robin, least_loaded, ordered[:A,B,...].
    #[arg(long = "policy")]
    policies: Vec<String>,
    /// Arrival phases: Artillery YAML (.yml/.yaml) or Switchyard TOML.
    #[arg(long, conflicts_with = "preset")]
    phases: Option<PathBuf>,
    /// A named schedule instead of --phases: `paper` (10 -> 7,000
    /// requests per 180 s, the default).
    #[arg(long)]
    preset: Option<String>,
    /// Multiply every rate of the schedule by this factor.
    #[arg(long, default_value_t = 1.0)]
    scale: f64,
    /// The profile of the backends (default: config/profiles/default.toml,
    /// built in).
    #[arg(long)]
    profile: Option<PathBuf>,
    /// Model of the requests, NAME or NAME=WEIGHT for a mix (repeat);
    /// default xception.
    #[arg(long = "model")]
    models: Vec<String>,
    /// Seed of every random draw (arrivals, latencies, cold starts).
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Poisson arrivals instead of evenly spaced ones.
    #[arg(long)]
    poisson: bool,
    /// Stop after this many requests.
    #[arg(long)]
    max_requests: Option<u64>,
    /// Width of the time buckets of the shares table and the plot, seconds.
    #[arg(long, default_value_t = 10.0)]
    bucket_seconds: f64,
    /// Write the reports as JSON here.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Write an SVG plot here.
    #[arg(long)]
    plot: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
enum PolicyCommand {
    /// Validate a policy file and print what it would decide in typical
    /// situations.
    Check {
        /// The policy file (TOML).
        file: PathBuf,
        /// The gateway config whose backends and models the policies must
        /// fit; without it: backends local, container and lambda, and the
        /// models of models/repository.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Serve {
            config,
            listen,
            log_format,
        } => {
            telemetry::init_logging(matches!(log_format, LogFormat::Json));
            serve(config, listen)
        }
        Command::Worker {
            repository,
            listen,
            workers,
            intra_op_threads,
            queue_capacity,
            inline_max_compute_us,
            announce: should_announce,
            log_format,
        } => {
            telemetry::init_logging(matches!(log_format, LogFormat::Json));
            if should_announce {
                announce();
            }
            let settings = WorkerSettings {
                workers,
                intra_op_threads,
                queue_capacity,
                inline_max_compute_us,
            };
            match Config::worker(&repository, listen, settings) {
                Ok(config) => serve_config(config),
                Err(error) => fail(&error.to_string(), 2),
            }
        }
        Command::Policy {
            command: PolicyCommand::Check { file, config },
        } => match policy_check::run(&file, config.as_deref()) {
            Ok(report_text) => {
                report(&report_text);
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error, 2),
        },
        Command::CheckConfig { file } => match Config::load(&file) {
            Ok(config) => {
                report(&format!(
                    "{}: ok ({} models in {}, backends: {})",
                    file.display(),
                    config.repository.models.len(),
                    config.repository.root.display(),
                    config.placement.backends.join(", ")
                ));
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error.to_string(), 2),
        },
        Command::Sim(args) => match sim(&args) {
            Ok(text) => {
                report(&text);
                ExitCode::SUCCESS
            }
            Err(error) => fail(&error.to_string(), 2),
        },
    }
}

/// Runs `switchyard sim` and returns the Markdown report.
fn sim(args: &SimArgs) -> Result<String, sim::SimError> {
    use sim::{PolicyRun, Profile, SimError, SimOptions};
    let profile = match &args.profile {
        Some(path) => Profile::load(path)?,
        None => Profile::default_profile()?,
    };
    let settings = |e: switchyard_loadgen::LoadgenError| SimError::Settings(e.to_string());
    let (phases, schedule) = match (&args.phases, &args.preset) {
        (Some(path), _) => (
            switchyard_loadgen::Phases::load(path).map_err(settings)?,
            path.display().to_string(),
        ),
        (None, preset) => {
            let name = preset.as_deref().unwrap_or("paper");
            (
                switchyard_loadgen::Phases::preset(name).map_err(settings)?,
                format!("preset {name}"),
            )
        }
    };
    let phases = if args.scale == 1.0 {
        phases
    } else {
        phases.scaled(args.scale).map_err(settings)?
    };
    let schedule = if args.scale == 1.0 {
        schedule
    } else {
        format!("{schedule} x{}", args.scale)
    };
    let mut policies = Vec::new();
    for path in &args.policy_files {
        policies.push(PolicyRun::from_file(path, &profile)?);
    }
    for spec in &args.policies {
        policies.push(PolicyRun::from_spec(spec, &profile)?);
    }
    if policies.is_empty() {
        return Err(SimError::Settings(
            "give at least one --policy-file or --policy (e.g. --policy-file config/straightline.toml --policy static:local)".into(),
        ));
    }
    if !(args.bucket_seconds.is_finite() && args.bucket_seconds >= 0.001) {
        return Err(SimError::Settings(format!(
            "--bucket-seconds {}: give at least 0.001",
            args.bucket_seconds
        )));
    }
    let models = args
        .models
        .iter()
        .map(|m| sim::parse_model_weight(m).map_err(|e| SimError::Settings(format!("--model {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    let options = SimOptions {
        profile,
        policies,
        phases,
        schedule,
        poisson: args.poisson,
        max_requests: args.max_requests,
        models,
        seed: args.seed,
        bucket: std::time::Duration::from_secs_f64(args.bucket_seconds),
    };
    let output = options.run()?;
    if let Some(path) = &args.report {
        output.write_json(path)?;
    }
    if let Some(path) = &args.plot {
        sim::plot::write_svg(&output, path)?;
    }
    Ok(output.markdown())
}

fn serve(config_path: Option<PathBuf>, listen: Option<std::net::SocketAddr>) -> ExitCode {
    let config = match &config_path {
        Some(path) => Config::load(path),
        None => Config::embedded_default(),
    };
    let mut config = match config {
        Ok(config) => config,
        Err(error) => return fail(&error.to_string(), 2),
    };
    if let Some(listen) = listen {
        config.server.listen = listen;
    }
    serve_config(config)
}

/// The runtime's worker threads when `server.io_threads` is not set, as
/// tokio counts them: `TOKIO_WORKER_THREADS` if set, else one per CPU.
/// Tokio panics on a value of that variable it cannot use; the gateway
/// hands the runtime its count itself and refuses such a value with a
/// message that says how to fix it.
fn default_io_threads() -> Result<usize, String> {
    let cpus = std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get);
    io_threads_from_env(std::env::var("TOKIO_WORKER_THREADS"), cpus)
}

/// [`default_io_threads`] for a given value of `TOKIO_WORKER_THREADS` and
/// CPU count.
fn io_threads_from_env(
    value: Result<String, std::env::VarError>,
    cpus: usize,
) -> Result<usize, String> {
    let shown = match value {
        Err(std::env::VarError::NotPresent) => return Ok(cpus.max(1)),
        Ok(text) => match text.trim().parse::<usize>() {
            Ok(threads)
                if threads > 0 && u64::try_from(threads).is_ok_and(|t| t <= MAX_IO_THREADS) =>
            {
                return Ok(threads);
            }
            _ => format!("{text:?}"),
        },
        Err(std::env::VarError::NotUnicode(raw)) => format!("{raw:?} (not UTF-8)"),
    };
    Err(format!(
        "TOKIO_WORKER_THREADS={shown} is not a whole number of threads \
         from 1 to {MAX_IO_THREADS}: set it to one (e.g. 2), unset it for one thread per CPU, \
         or set server.io_threads in the config, which takes precedence"
    ))
}

/// Starts the gateway for `config` and serves until a shutdown signal.
fn serve_config(config: Config) -> ExitCode {
    let workers = match config.server.io_threads.map_or_else(default_io_threads, Ok) {
        Ok(workers) => workers,
        Err(error) => return fail(&error, 2),
    };
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all().worker_threads(workers);
    let pinned = if config.server.pin_threads {
        affinity::pin_runtime_workers(&mut builder, workers)
    } else {
        None
    };
    if let Some(pinned) = &pinned {
        tracing::info!(cpus = ?pinned.cpus(), io_threads = workers,
            "pinning the async runtime's workers and the local ONNX Runtime workers to these CPUs in turn");
    }
    let runtime = match builder.build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(&format!("cannot start the async runtime: {error}"), 1),
    };
    if let Some(pinned) = pinned {
        pinned.wait(std::time::Duration::from_secs(1));
    }
    runtime.block_on(async move {
        let gateway = match Gateway::start(&config).await {
            Ok(gateway) => Arc::new(gateway),
            Err(error) => return fail(&error.to_string(), 1),
        };
        let listener = match tokio::net::TcpListener::bind(config.server.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                return fail(
                    &format!("cannot listen on {}: {error}", config.server.listen),
                    1,
                );
            }
        };
        let address = listener.local_addr().unwrap_or(config.server.listen);
        tracing::info!(%address, models = ?gateway.catalog().keys().collect::<Vec<_>>(), "serving");
        report(&banner(&address.to_string()));
        switchyard_scheduler::run(listener, gateway, async {
            switchyard_scheduler::server::shutdown_signal().await;
            tracing::info!("shutdown requested");
        })
        .await;
        ExitCode::SUCCESS
    })
}

/// Makes a worker container known on its network as it starts (`switchyard
/// worker --announce`, which the container pool passes): one empty
/// UDP datagram to the default gateway's discard port (on Docker's bridge,
/// the host). To send it the container asks who has the gateway's
/// address, and that request tells the host this container's hardware
/// address. The gateway's first readiness probes of a new container can
/// otherwise wait on the host's own address resolution, which retries
/// once a second: a cold start then took 1.1-1.3 s instead of 0.5-0.6 s.
/// Best effort: without a default route nothing is sent.
fn announce() {
    let Some(gateway) = default_gateway() else {
        return;
    };
    if let Ok(socket) = std::net::UdpSocket::bind((std::net::Ipv4Addr::UNSPECIFIED, 0)) {
        let _ = socket.send_to(&[], (gateway, 9));
    }
}

/// The IPv4 default gateway from `/proc/net/route`.
fn default_gateway() -> Option<std::net::Ipv4Addr> {
    default_gateway_in(&std::fs::read_to_string("/proc/net/route").ok()?)
}

/// The default gateway in the text of `/proc/net/route`.
fn default_gateway_in(table: &str) -> Option<std::net::Ipv4Addr> {
    table.lines().skip(1).find_map(|line| {
        let mut fields = line.split_whitespace().skip(1);
        let destination = fields.next()?;
        let gateway = u32::from_str_radix(fields.next()?, 16).ok()?;
        // The kernel prints the address as a native-endian number.
        (destination == "00000000" && gateway != 0)
            .then(|| std::net::Ipv4Addr::from(gateway.to_ne_bytes()))
    })
}

fn banner(address: &str) -> String {
    format!(
        "\nSwitchyard is serving on http://{address}\n\n\
         Try it:\n  curl -s http://{address}/v2/models/digits\n  \
         curl -s -X POST http://{address}/v2/models/digits/infer -H 'content-type: application/json' \\\n    \
         -d '{{\"inputs\":[{{\"name\":\"input\",\"shape\":[1,64],\"datatype\":\"FP32\",\"data\":[0,0,5,13,9,1,0,0,0,0,13,15,10,15,5,0,0,3,15,2,0,11,8,0,0,4,12,0,0,8,8,0,0,5,8,0,0,9,8,0,0,4,11,0,1,12,7,0,0,2,14,5,10,12,0,0,0,0,6,13,10,0,0,0]}}]}}'\n  \
         curl -s http://{address}/v2/switchyard/stats\n  curl -s http://{address}/metrics\n\n\
         Stop with Ctrl-C (in-flight requests finish first).\n"
    )
}

/// Prints to stdout. A closed stdout (the reader went away) must not stop
/// the gateway, so write errors are ignored rather than panicking as
/// `println!` would.
fn report(message: &str) {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{message}").and_then(|()| stdout.flush());
}

/// Reports a fatal error on stderr (ignoring a closed stderr) and gives the
/// exit code.
fn fail(message: &str, code: u8) -> ExitCode {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "switchyard: error: {message}");
    ExitCode::from(code)
}

#[cfg(test)]
mod tests {
    use super::{default_gateway_in, io_threads_from_env};
    use std::env::VarError;
    use std::ffi::OsString;
    use std::net::Ipv4Addr;

    #[test]
    fn io_threads_come_from_tokio_worker_threads_or_the_cpu_count() {
        assert_eq!(io_threads_from_env(Err(VarError::NotPresent), 4), Ok(4));
        assert_eq!(io_threads_from_env(Err(VarError::NotPresent), 0), Ok(1));
        assert_eq!(io_threads_from_env(Ok("3".into()), 4), Ok(3));
        assert_eq!(io_threads_from_env(Ok(" 2\n".into()), 4), Ok(2));
        assert_eq!(io_threads_from_env(Ok("1024".into()), 4), Ok(1024));
    }

    #[test]
    fn an_unusable_tokio_worker_threads_is_refused_saying_how_to_fix_it() {
        let bad = [
            Ok("abc".to_owned()),
            Ok("0".to_owned()),
            Ok("-1".to_owned()),
            Ok(String::new()),
            Ok("1025".to_owned()),
            Ok("99999999999999999999999".to_owned()),
            Err(VarError::NotUnicode(OsString::from("x"))),
        ];
        for value in bad {
            let shown = format!("{value:?}");
            let error = io_threads_from_env(value, 2).expect_err(&shown);
            assert!(
                error.starts_with("TOKIO_WORKER_THREADS=")
                    && error.contains("unset it")
                    && error.contains("server.io_threads"),
                "{shown}: {error}"
            );
        }
    }

    #[test]
    fn default_gateway_is_read_from_the_route_table() {
        let bytes = Ipv4Addr::new(172, 17, 0, 1).octets();
        let table = format!(
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t000011AC\t00000000\t0001\t0\t0\t0\t0000FFFF\t0\t0\t0\n\
             eth0\t00000000\t{:08X}\t0003\t0\t0\t0\t00000000\t0\t0\t0\n",
            u32::from_ne_bytes(bytes)
        );
        assert_eq!(
            default_gateway_in(&table),
            Some(Ipv4Addr::new(172, 17, 0, 1))
        );
        let no_default = table.lines().take(2).collect::<Vec<_>>().join("\n");
        assert_eq!(default_gateway_in(&no_default), None);
        assert_eq!(default_gateway_in(""), None);
    }
}
