//! The `switchyard-loadgen` command: one open-loop run through arrival
//! phases (or one closed-loop run) against a v2 endpoint, a live progress
//! line on a terminal, an Artillery-like summary on stdout and, optionally,
//! the report as JSON, a plot as SVG and every request as CSV.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{ArgGroup, Parser};
use switchyard_loadgen::progress::ProgressLine;
use switchyard_loadgen::units::parse_duration;
use switchyard_loadgen::{
    Endpoint, Load, LoadgenError, MixSpec, PayloadSpec, Phases, Process, Recording, RunFile,
    RunSettings, Target, http_client, plot, run_observed, summary_table,
};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard-loadgen",
    version,
    about = "Open-loop (or closed-loop) load generator for Open Inference Protocol v2 endpoints",
    group(ArgGroup::new("load").required(true).args(["rate", "phases", "preset", "concurrency"]))
)]
struct Cli {
    /// Base URL of the server (loopback only unless --allow-remote).
    #[arg(long, default_value = "http://127.0.0.1:8000")]
    url: String,
    /// Model to send requests to, with an optional weight; repeat for a mix
    /// (e.g. --model digits:3 --model fashion_cnn:1).
    #[arg(long = "model", value_name = "NAME[:WEIGHT]")]
    models: Vec<String>,
    /// Rows per request, with optional weights (e.g. 1:8,8:1 for batch 1
    /// eight times as often as batch 8). Default 1.
    #[arg(long, value_name = "SIZE[:WEIGHT],...")]
    batch: Option<String>,
    /// Open loop at one constant rate (requests per second) for --duration.
    #[arg(long)]
    rate: Option<f64>,
    /// Open loop through the phases of a file: an Artillery script
    /// (.yml/.yaml, its config.phases) or TOML ([[phase]] tables and,
    /// optionally, the payload mix as [[mix]] tables).
    #[arg(long, value_name = "FILE")]
    phases: Option<PathBuf>,
    /// Open loop through a named phase preset: `paper` (the StraightLine
    /// paper's ramp, 10 to 7,000 requests per 180 s over 180 s).
    #[arg(long)]
    preset: Option<String>,
    /// Multiply every phase's rate (and count) by this factor.
    #[arg(long)]
    scale: Option<f64>,
    /// Poisson arrivals (exponential gaps) instead of evenly spaced ones.
    #[arg(long)]
    poisson: bool,
    /// Closed loop: this many workers sending back to back, for --duration.
    #[arg(long)]
    concurrency: Option<usize>,
    /// With --rate or --concurrency: how long to offer load (e.g. 10s, 2m).
    #[arg(long, value_parser = parse_duration)]
    duration: Option<Duration>,
    /// Cut any run here: no request is due or started after it.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    max_duration: Duration,
    /// Stop after this many requests.
    #[arg(long, default_value_t = 10_000_000)]
    max_requests: u64,
    /// Open loop: requests outstanding at once; requests due beyond it are
    /// dropped (and counted). A phase's max_in_flight/maxVusers lowers it.
    #[arg(long, default_value_t = 1024)]
    max_in_flight: usize,
    /// Per-request timeout.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
    /// Binary tensor extension for the inputs instead of JSON tensors.
    #[arg(long)]
    binary: bool,
    /// Ask for the outputs in binary form too (`binary_data_output`).
    #[arg(long)]
    binary_output: bool,
    /// Distinct random request bodies per mix entry, cycled.
    #[arg(long, default_value_t = 8)]
    variants: usize,
    /// Seed of the Poisson arrivals, the mix choices and the random inputs.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Threads of the client's async runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Allow a target that is not on this machine.
    #[arg(long)]
    allow_remote: bool,
    /// Write the report as JSON to this file.
    #[arg(long, visible_alias = "json-report", value_name = "FILE.json")]
    report: Option<PathBuf>,
    /// Draw latency and outcomes over time as SVG to this file.
    #[arg(long, value_name = "FILE.svg")]
    plot: Option<PathBuf>,
    /// Write every request (intended offset, latency, outcome) as CSV to this file.
    #[arg(long, value_name = "FILE.csv")]
    samples_csv: Option<PathBuf>,
    /// No progress line (it is only drawn on a terminal anyway).
    #[arg(long, short)]
    quiet: bool,
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

/// The load and the mix the flags describe, checked.
fn plan(cli: &Cli) -> Result<(Load, MixSpec), LoadgenError> {
    let settings = |m: &str| Err(LoadgenError::Settings(m.to_owned()));
    let file = cli.phases.as_deref().map(RunFile::load).transpose()?;
    let open_loop = cli.concurrency.is_none();
    if !open_loop && (cli.poisson || cli.scale.is_some()) {
        return settings(
            "--poisson and --scale shape open-loop arrivals; --concurrency runs a closed loop",
        );
    }
    if cli.duration.is_some() && cli.rate.is_none() && cli.concurrency.is_none() {
        return settings(
            "--duration goes with --rate or --concurrency; phases carry their own durations (cut a run short with --max-duration)",
        );
    }
    let duration = cli.duration.unwrap_or(Duration::from_secs(10));
    let load = if let Some(concurrency) = cli.concurrency {
        Load::Closed {
            concurrency,
            duration,
        }
    } else {
        let phases = match (cli.rate, &file, &cli.preset) {
            (Some(rate), _, _) => Phases::constant(rate, duration)?,
            (_, Some(file), _) => file.phases.clone().ok_or_else(|| {
                LoadgenError::Settings(format!(
                    "{}: the file has no [[phase]] tables",
                    path_text(cli.phases.as_deref())
                ))
            })?,
            (_, _, Some(name)) => Phases::preset(name)?,
            _ => return settings("give --rate, --phases, --preset or --concurrency"),
        };
        let phases = match cli.scale {
            Some(factor) => phases.scaled(factor)?,
            None => phases,
        };
        Load::Open {
            phases,
            process: if cli.poisson {
                Process::Poisson { seed: cli.seed }
            } else {
                Process::Constant
            },
            max_in_flight: cli.max_in_flight,
        }
    };
    let file_mix = file.and_then(|f| f.mix);
    let mix = match file_mix {
        Some(_) if !cli.models.is_empty() || cli.batch.is_some() => {
            return settings(
                "the run file has a [[mix]]; leave out --model and --batch, or remove the [[mix]] tables",
            );
        }
        Some(mix) => mix,
        None => MixSpec::from_cli(&cli.models, cli.batch.as_deref())?,
    };
    Ok((load, mix))
}

fn path_text(path: Option<&Path>) -> String {
    path.map_or_else(String::new, |p| p.display().to_string())
}

fn execute(cli: &Cli) -> Result<Recording, LoadgenError> {
    let endpoint = Endpoint::parse(&cli.url, cli.allow_remote)?;
    let (load, mix) = plan(cli)?;
    let pool = match &load {
        Load::Open { max_in_flight, .. } => *max_in_flight,
        Load::Closed { concurrency, .. } => *concurrency,
    };
    let settings = RunSettings {
        load,
        max_duration: cli.max_duration,
        max_requests: Some(cli.max_requests),
        timeout: cli.timeout,
        keep_samples: cli.samples_csv.is_some(),
    };
    let payload = PayloadSpec {
        batch_size: 1,
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
    let progress = ProgressLine::stderr(!cli.quiet);
    let result = runtime.block_on(async {
        let client = http_client(pool);
        let target = Target::prepare_mix(&client, endpoint, &mix, &payload).await?;
        run_observed(&client, &Arc::new(target), &settings, |live| {
            progress.update(live);
        })
        .await
    });
    progress.finish();
    result
}

fn write_outputs(cli: &Cli, recording: &Recording) -> Result<(), String> {
    let write = |path: &Path, text: String| {
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
    };
    if let Some(path) = &cli.report {
        let json = serde_json::to_string_pretty(&recording.report).map_err(|e| e.to_string())?;
        write(path, json + "\n")?;
    }
    if let Some(path) = &cli.plot {
        let svg = plot::svg(&recording.report).map_err(|e| e.to_string())?;
        write(path, svg)?;
    }
    if let Some(path) = &cli.samples_csv {
        let mut csv = String::from("intended_offset_us,latency_us,outcome,backend\n");
        let names = recording.recorder.backend_names();
        for sample in recording.recorder.samples().unwrap_or_default() {
            csv.push_str(&format!(
                "{},{},{},{}\n",
                sample.intended_offset_us,
                sample.latency_us,
                sample.outcome.label(),
                sample.backend_name(names).unwrap_or("")
            ));
        }
        write(path, csv)?;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn cli(args: &[&str]) -> Cli {
        Cli::try_parse_from(std::iter::once("switchyard-loadgen").chain(args.iter().copied()))
            .unwrap()
    }

    #[test]
    fn rate_and_duration_are_one_constant_phase() {
        let (load, mix) =
            plan(&cli(&["--model", "m", "--rate", "50", "--duration", "3s"])).unwrap();
        let Load::Open {
            phases, process, ..
        } = load
        else {
            panic!("open loop expected")
        };
        assert_eq!(process, Process::Constant);
        assert_eq!(phases.total_duration(), Duration::from_secs(3));
        assert!((phases.expected_requests() - 150.0).abs() < 1e-9);
        assert_eq!(mix.entries().len(), 1);
    }

    #[test]
    fn preset_scales_and_poisson_uses_the_seed() {
        let (load, _) = plan(&cli(&[
            "--model",
            "m",
            "--preset",
            "paper",
            "--scale",
            "2",
            "--poisson",
            "--seed",
            "9",
        ]))
        .unwrap();
        let Load::Open {
            phases, process, ..
        } = load
        else {
            panic!("open loop expected")
        };
        assert_eq!(process, Process::Poisson { seed: 9 });
        assert!((phases.expected_requests() - 7010.0).abs() < 1e-6);
    }

    #[test]
    fn contradictory_flags_are_refused() {
        for args in [
            vec!["--model", "m", "--rate", "5", "--preset", "paper"],
            vec!["--model", "m"],
        ] {
            let parsed = Cli::try_parse_from(std::iter::once("switchyard-loadgen").chain(args));
            assert!(parsed.is_err());
        }
        for (args, expected) in [
            (
                vec!["--model", "m", "--concurrency", "4", "--poisson"],
                "--poisson",
            ),
            (
                vec!["--model", "m", "--preset", "paper", "--duration", "5s"],
                "--duration goes with",
            ),
            (vec!["--rate", "5"], "give at least one model"),
            (
                vec!["--model", "m", "--preset", "nope"],
                "unknown phase preset",
            ),
        ] {
            let error = plan(&cli(&args)).unwrap_err().to_string();
            assert!(error.contains(expected), "{args:?}: {error}");
        }
    }
}
