//! The `switchyard-loadgen` command: one open-loop or closed-loop run
//! against a v2 endpoint, a summary table on stdout and, optionally, the
//! report as JSON and every request as CSV.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use switchyard_loadgen::units::parse_duration;
use switchyard_loadgen::{
    Arrival, Endpoint, Load, LoadgenError, PayloadSpec, Recording, RunSettings, Target,
    http_client, run, summary_table,
};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard-loadgen",
    version,
    about = "Open-loop (or closed-loop) load generator for Open Inference Protocol v2 endpoints",
    group(ArgGroup::new("load").required(true).args(["rate", "concurrency"]))
)]
struct Cli {
    /// Base URL of the server (loopback only unless --allow-remote).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Model to send requests to.
    #[arg(long)]
    model: String,
    /// Open loop: requests per second (constant spacing unless --poisson).
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop: Poisson arrivals (exponential gaps) instead of constant ones.
    #[arg(long, requires = "rate")]
    poisson: bool,
    /// Closed loop: this many workers sending back to back.
    #[arg(long)]
    concurrency: Option<usize>,
    /// How long to offer load (e.g. 10s, 500ms, 2m).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    duration: Duration,
    /// Stop after this many requests.
    #[arg(long)]
    max_requests: Option<u64>,
    /// Open loop: requests outstanding at once; requests due beyond it are dropped.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Rows per request (dynamic dimensions of the inputs).
    #[arg(long, default_value_t = 1)]
    batch: u64,
    /// Binary tensor extension for the inputs instead of JSON tensors.
    #[arg(long)]
    binary: bool,
    /// Ask for the outputs in binary form too (`binary_data_output`).
    #[arg(long)]
    binary_output: bool,
    /// Distinct random request bodies to cycle through.
    #[arg(long, default_value_t = 8)]
    variants: usize,
    /// Seed of the Poisson arrivals and the random inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads of the client's async runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Allow a target that is not on this machine.
    #[arg(long)]
    allow_remote: bool,
    /// Write the report as JSON to this file.
    #[arg(long)]
    json_report: Option<PathBuf>,
    /// Write every request (intended offset, latency, outcome) as CSV to this file.
    #[arg(long)]
    samples_csv: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match execute(&cli) {
        Ok(recording) => {
            show(&summary_table(&recording.report));
            match write_outputs(&cli, &recording) {
                Ok(()) => ExitCode::SUCCESS,
                Err(message) => fail(&message),
            }
        }
        Err(error) => fail(&error.to_string()),
    }
}

fn execute(cli: &Cli) -> Result<Recording, LoadgenError> {
    let endpoint = Endpoint::parse(&cli.url, cli.allow_remote)?;
    let load = match (cli.rate, cli.concurrency) {
        (Some(rate), _) => Load::Open {
            arrival: if cli.poisson {
                Arrival::Poisson {
                    rate,
                    seed: cli.seed,
                }
            } else {
                Arrival::Constant { rate }
            },
            max_in_flight: cli.max_in_flight,
        },
        (None, Some(concurrency)) => Load::Closed { concurrency },
        (None, None) => {
            return Err(LoadgenError::Settings(
                "give --rate (open loop) or --concurrency (closed loop)".into(),
            ));
        }
    };
    let settings = RunSettings {
        load,
        duration: cli.duration,
        max_requests: cli.max_requests,
        timeout: cli.timeout,
        keep_samples: cli.samples_csv.is_some(),
    };
    let payload = PayloadSpec {
        batch_size: cli.batch,
        binary: cli.binary,
        binary_output: cli.binary_output,
        variants: cli.variants,
        seed: cli.seed,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(cli.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| LoadgenError::Internal(format!("cannot start the async runtime: {e}")))?;
    let pool = match load {
        Load::Open { max_in_flight, .. } => max_in_flight,
        Load::Closed { concurrency } => concurrency,
    };
    runtime.block_on(async {
        let client = http_client(pool);
        let target = Target::prepare(&client, endpoint, &cli.model, &payload).await?;
        run(&client, &Arc::new(target), &settings).await
    })
}

fn write_outputs(cli: &Cli, recording: &Recording) -> Result<(), String> {
    if let Some(path) = &cli.json_report {
        let json = serde_json::to_string_pretty(&recording.report).map_err(|e| e.to_string())?;
        std::fs::write(path, json + "\n")
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    if let Some(path) = &cli.samples_csv {
        let mut csv = String::from("intended_offset_us,latency_us,outcome\n");
        for sample in recording.recorder.samples().unwrap_or_default() {
            csv.push_str(&format!(
                "{},{},{}\n",
                sample.intended_offset_us,
                sample.latency_us,
                sample.outcome.label()
            ));
        }
        std::fs::write(path, csv).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    }
    Ok(())
}

#[allow(clippy::print_stdout)]
fn show(text: &str) {
    print!("{text}");
}

#[allow(clippy::print_stderr)]
fn fail(message: &str) -> ExitCode {
    eprintln!("switchyard-loadgen: error: {message}");
    ExitCode::FAILURE
}
