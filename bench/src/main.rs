//! `switchyard-bench`: Switchyard's reproducible benchmarks, one command
//! each, each writing a table. `local` compares the gateway with the raw
//! ONNX Runtime loop on this machine (`make bench-local`); `loadgen`
//! compares the load generator with `wrk` (`make bench-loadgen`); `sim`
//! compares the placement policies in the simulator (`make bench-sim`);
//! `soak` runs the paper's ramp with faults injected (`make soak`); `peers`
//! compares the gateway with Flask, MLServer, Ray Serve and the raw loop
//! (`make bench-peers`); `paper` reproduces the StraightLine paper's
//! experiments, scaled to this machine, beside the simulator's replay at
//! full scale (`make bench-paper`); `overhead` measures what the gateway
//! adds in front of each backend against going direct, and cold starts
//! (`make bench-overhead`); `burst` runs the placements through Poisson
//! bursts, live and in the simulator (`make bench-burst`); `codec` times
//! reading request bodies against a generic JSON parse (`make bench-codec`).

mod burst;
mod codec;
mod error;
mod gateway_process;
mod lean_client;
mod loadgen_wrk;
mod local;
mod machine;
mod markdown;
mod overhead;
mod overhead_report;
mod paper;
mod paper_report;
mod peers;
mod profile;
mod raw;
mod sim;
mod soak;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::BenchError;
use crate::loadgen_wrk::{LoadgenBenchOptions, run_loadgen_bench};
use crate::local::{LocalOptions, progress, run_local};

#[derive(Debug, Parser)]
#[command(
    name = "switchyard-bench",
    version,
    about = "Switchyard's reproducible benchmarks"
)]
struct Cli {
    #[command(subcommand)]
    command: BenchCommand,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// The gateway vs the raw ONNX Runtime loop, side by side, on this machine.
    /// Run from the repository root after `make setup`.
    Local {
        /// A short run (< 50 s) to check that everything works; numbers are noisier.
        #[arg(long)]
        quick: bool,
        /// Folder for local.md and local.json.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// The gateway binary to test (default: `switchyard` beside this
        /// executable, built first with cargo).
        #[arg(long)]
        gateway_bin: Option<PathBuf>,
        /// Do not run `cargo build -p switchyard` first.
        #[arg(long)]
        no_build: bool,
        /// README whose table (between the bench-local markers) a full run
        /// rewrites; quick runs never touch it.
        #[arg(long, default_value = "bench/README.md")]
        readme: PathBuf,
        /// The gateway's config; its local backend also sets the raw
        /// loop's threads. A run with another config than the default
        /// writes local-STEM.md and local-STEM.json (STEM: the file's name
        /// without `.toml`) and leaves the README alone.
        #[arg(long, default_value = gateway_process::LOCAL_ONLY_CONFIG)]
        config: PathBuf,
    },
    /// switchyard-loadgen against wrk, side by side on the same targets (a
    /// trivial endpoint, then the gateway) at the same connection count.
    /// Run from the repository root after `make setup`.
    Loadgen {
        /// A short run (< 30 s) to check that everything works; numbers are noisier.
        #[arg(long)]
        quick: bool,
        /// Folder for loadgen.md and loadgen.json.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// The gateway binary to test (default: `switchyard` beside this
        /// executable, built first with cargo).
        #[arg(long)]
        gateway_bin: Option<PathBuf>,
        /// Do not run `cargo build -p switchyard` first.
        #[arg(long)]
        no_build: bool,
    },
    /// The paper's ramp through local, container and Lambda tiers with
    /// faults injected (killed containers, a frozen and a stopped Lambda
    /// service, SIGTERM at the end): every request must get one answer.
    /// Needs the Docker engine and `make setup`. Not part of `make test`.
    Soak {
        /// A 40 s ramp instead of the 180 s paper ramp.
        #[arg(long)]
        quick: bool,
        /// Folder for soak.md and soak.json.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// The gateway binary (default: `switchyard` beside this executable).
        #[arg(long)]
        gateway_bin: Option<PathBuf>,
    },
    /// The StraightLine paper's experiments, scaled to this machine: its
    /// ramp against local-only, container-only, Lambda-only, straightline
    /// and adaptive placements, for xception and fashion_cnn, live through
    /// the gateway, beside the simulator's replay at full scale. Needs the
    /// Docker engine and `make setup`; about 10 minutes (`--quick`: < 1).
    Paper {
        /// One model (xception), a 12 s ramp, local-only and Lambda-only.
        #[arg(long)]
        quick: bool,
        /// Folder for paper.md, paper.json and the plots (a quick run
        /// writes paper-quick.*; a run of some models or placements, or one
        /// in which some placements could not run, paper-partial.*; the
        /// latter exits non-zero naming them).
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// The gateway binary (default: `switchyard` beside this executable).
        #[arg(long)]
        gateway_bin: Option<PathBuf>,
        /// The simulator profile (default: config/profiles/default.toml).
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Only this model (repeat for more): xception, fashion_cnn.
        #[arg(long)]
        model: Vec<String>,
        /// Only this placement (repeat for more): local-only,
        /// container-only, lambda-only, straightline, adaptive.
        #[arg(long)]
        placement: Vec<String>,
        /// Keep each placement's gateway config, log and placement decision
        /// log (every decision kept) in this folder, as
        /// MODEL-PLACEMENT.toml, .log and -decisions.jsonl.
        #[arg(long)]
        keep_logs: Option<PathBuf>,
        /// README whose section (between the bench-paper markers) a full
        /// run rewrites.
        #[arg(long, default_value = "bench/README.md")]
        readme: PathBuf,
    },
    /// The placements side by side through Poisson bursts of xception
    /// requests, live (one gateway per placement, real containers, the
    /// Lambda emulator) and in the simulator at full scale. About 5
    /// minutes (`--quick`: < 1).
    Burst {
        /// Local-only and Lambda-only over 20 s.
        #[arg(long)]
        quick: bool,
        /// Folder for burst.md and burst.json (a quick run writes
        /// burst-quick.*; a run of some placements, or one in which some
        /// could not run, burst-partial.*; the latter exits non-zero naming
        /// them).
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// The gateway binary (default: `switchyard` beside this executable).
        #[arg(long)]
        gateway_bin: Option<PathBuf>,
        /// The simulator profile (default: config/profiles/default.toml).
        #[arg(long)]
        profile: Option<PathBuf>,
        /// Only this placement (repeat for more): local-only,
        /// container-only, lambda-only, straightline, adaptive.
        #[arg(long)]
        placement: Vec<String>,
        /// Keep each placement's gateway config, log and placement decision
        /// log (every decision kept) in this folder, as
        /// MODEL-PLACEMENT.toml, .log and -decisions.jsonl.
        #[arg(long)]
        keep_logs: Option<PathBuf>,
    },
    /// What the gateway adds in front of each backend (local, container,
    /// Lambda) against going direct in the same run, nginx beside it, at
    /// 200 and 2,000 requests/s; container and Lambda cold starts. Needs
    /// the Docker engine and `make setup`; about 5 minutes (`--quick`: < 1).
    Overhead {
        /// One short round, 10 container and 5 Lambda cold starts.
        #[arg(long)]
        quick: bool,
        /// Folder for overhead.md and overhead.json (a quick run writes
        /// overhead-quick.*, a run of some backends overhead-BACKEND.*, a
        /// full run in which some backends could not be measured
        /// overhead-partial.*; a run with backends not measured exits
        /// non-zero naming them).
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// The gateway binary (default: `switchyard` beside this executable).
        #[arg(long)]
        gateway_bin: Option<PathBuf>,
        /// Only this backend (repeat for more): local, container, lambda.
        #[arg(long)]
        backend: Vec<String>,
        /// README whose section (between the bench-overhead markers) a
        /// full run rewrites.
        #[arg(long, default_value = "bench/README.md")]
        readme: PathBuf,
    },
    /// What reading a request body costs, by model, batch and encoding (JSON
    /// tensors or binary), against parsing the same JSON into a generic
    /// `serde_json::Value`, in this process. About 25 s (`--quick`: < 1).
    Codec {
        /// Three short rounds per case.
        #[arg(long)]
        quick: bool,
        /// Folder for codec.md and codec.json (codec-quick.* with --quick).
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
    },
    /// The placement policies side by side with the local-only,
    /// container-only and Lambda-only baselines, simulated (`switchyard
    /// sim`) on the paper's ramp and on Poisson bursts, and the simulator's
    /// speed. Run from the repository root.
    Sim {
        /// A shorter run (< 10 s): fewer scenarios, 100,000 requests for speed.
        #[arg(long)]
        quick: bool,
        /// Folder for sim.md, sim.json and the plots.
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// The profile to simulate (default: config/profiles/default.toml).
        #[arg(long)]
        profile: Option<PathBuf>,
    },
    /// Switchyard against Flask + gunicorn, MLServer and Ray Serve (each
    /// with ONNX Runtime, from PyPI, in virtualenvs the bench makes under
    /// bench/) and the raw ONNX Runtime loop: max throughput at p99 ≤ 50 ms
    /// and latency at one fixed rate. Run from the repository root after
    /// `make setup`.
    Peers {
        /// One model, short steps, no binary-tensor row (< 1 minute once
        /// the virtualenvs exist).
        #[arg(long)]
        quick: bool,
        /// Folder for peers.md, peers.json and peers.svg (peers-quick.* with --quick).
        #[arg(long, default_value = "bench/results")]
        out: PathBuf,
        /// The gateway binary to test (default: `switchyard` beside this
        /// executable, built first with cargo).
        #[arg(long)]
        gateway_bin: Option<PathBuf>,
        /// Do not run `cargo build -p switchyard` first.
        #[arg(long)]
        no_build: bool,
    },
    /// Measure the local tier through the gateway, by model and batch
    /// size, and write a simulator profile (`switchyard sim --profile`).
    /// Run from the repository root after `make setup`.
    Profile {
        /// Fewer requests, and xception at batch 1 only (< 30 s).
        #[arg(long)]
        quick: bool,
        /// The profile whose other tiers and settings are kept.
        #[arg(long, default_value = "config/profiles/default.toml")]
        template: PathBuf,
        /// Where to write the measured profile.
        #[arg(long, default_value = "bench/results/profile.toml")]
        out: PathBuf,
        /// The gateway binary (default: `switchyard` beside this
        /// executable, built first with cargo).
        #[arg(long)]
        gateway_bin: Option<PathBuf>,
        /// Do not build the workspace's binaries first.
        #[arg(long)]
        no_build: bool,
        /// Measure only this tier: local, container or lambda (repeat for
        /// several; default all three).
        #[arg(long = "backend")]
        backends: Vec<String>,
    },
    /// The bare HTTP server `local` measures its floors against: hyper on
    /// a two-thread tokio runtime answering every request with 11 bytes,
    /// on 127.0.0.1:0. Prints its address, exits when stdin closes.
    #[command(hide = true)]
    TrivialServer {
        /// Pin the runtime's threads to the process's CPUs in turn, as the
        /// gateway does with `server.pin_threads`.
        #[arg(long)]
        pin_threads: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let command = std::env::args()
        .skip(1)
        .fold(String::from("switchyard-bench"), |line, arg| {
            line + " " + &arg
        });
    match cli.command {
        BenchCommand::Local {
            quick,
            out,
            gateway_bin,
            no_build,
            readme,
            config,
        } => {
            let options = LocalOptions {
                quick,
                build_gateway: !no_build && gateway_bin.is_none(),
                gateway_bin,
                command,
            };
            match local(&options, &config, &out, &readme) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        BenchCommand::Loadgen {
            quick,
            out,
            gateway_bin,
            no_build,
        } => {
            let options = LoadgenBenchOptions {
                quick,
                build_gateway: !no_build && gateway_bin.is_none(),
                gateway_bin,
                command,
            };
            match loadgen(&options, &out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        BenchCommand::TrivialServer { pin_threads } => {
            match loadgen_wrk::serve_trivial_until_stdin_closes(pin_threads) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        BenchCommand::Codec { quick, out } => {
            let options = codec::CodecOptions {
                quick,
                out,
                command,
            };
            match codec_bench(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        BenchCommand::Sim {
            quick,
            out,
            profile,
        } => {
            let options = sim::SimBenchOptions {
                quick,
                profile,
                out,
                command,
            };
            match simulated(&options) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        BenchCommand::Profile {
            quick,
            template,
            out,
            gateway_bin,
            no_build,
            backends,
        } => {
            let options = profile::ProfileOptions {
                quick,
                template,
                out,
                tiers: backends,
                gateway: LocalOptions {
                    quick,
                    build_gateway: !no_build && gateway_bin.is_none(),
                    gateway_bin,
                    command,
                },
            };
            match profile::run_profile(&options) {
                Ok(text) => {
                    show(&text);
                    ExitCode::SUCCESS
                }
                Err(error) => fail(&error),
            }
        }
        BenchCommand::Peers {
            quick,
            out,
            gateway_bin,
            no_build,
        } => {
            let options = peers::PeersOptions {
                quick,
                gateway: LocalOptions {
                    quick,
                    build_gateway: !no_build && gateway_bin.is_none(),
                    gateway_bin,
                    command,
                },
            };
            match peers_bench(&options, &out) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        BenchCommand::Paper {
            quick,
            out,
            gateway_bin,
            profile,
            model,
            placement,
            keep_logs,
            readme,
        } => {
            let run = || -> Result<(), BenchError> {
                let options = paper::PaperOptions {
                    quick,
                    gateway_bin: gateway_binary(gateway_bin)?,
                    profile,
                    models: model,
                    placements: placement,
                    keep_logs,
                    command,
                };
                paper_bench(&options, &out, &readme)
            };
            match run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        BenchCommand::Burst {
            quick,
            out,
            gateway_bin,
            profile,
            placement,
            keep_logs,
        } => {
            let run = || -> Result<(), BenchError> {
                let selected = (!placement.is_empty()).then(|| "burst-partial".to_owned());
                let options = burst::BurstOptions {
                    quick,
                    gateway_bin: gateway_binary(gateway_bin)?,
                    profile,
                    placements: placement,
                    keep_logs,
                    command,
                };
                let results = burst::run_burst(&options)?;
                let not_run = burst::not_run(&results.runs);
                let name = results_name("burst", quick, selected, &not_run);
                publish(&out, &name, &results, &burst::document(&results), None)?;
                require_complete(&not_run, &name)
            };
            match run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        BenchCommand::Overhead {
            quick,
            out,
            gateway_bin,
            backend,
            readme,
        } => {
            let run = || -> Result<(), BenchError> {
                let options = overhead::OverheadOptions {
                    quick,
                    gateway_bin: gateway_binary(gateway_bin)?,
                    backends: backend,
                    command,
                };
                overhead_bench(&options, &out, &readme)
            };
            match run() {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
        BenchCommand::Soak {
            quick,
            out,
            gateway_bin,
        } => match soak_bench(quick, gateway_bin, &out) {
            Ok(()) => ExitCode::SUCCESS,
            Err(error) => fail(&error),
        },
    }
}

/// The gateway binary given, or `switchyard` beside this executable.
fn gateway_binary(given: Option<PathBuf>) -> Result<PathBuf, BenchError> {
    match given {
        Some(path) => Ok(path),
        None => Ok(std::env::current_exe()
            .map_err(|source| BenchError::Io {
                context: "cannot locate this executable",
                path: PathBuf::from("(current exe)"),
                source,
            })?
            .with_file_name("switchyard")),
    }
}

const PAPER_README: (&str, &str) = ("<!-- bench-paper:begin -->", "<!-- bench-paper:end -->");

fn paper_bench(options: &paper::PaperOptions, out: &Path, readme: &Path) -> Result<(), BenchError> {
    let selected = (!options.models.is_empty() || !options.placements.is_empty())
        .then(|| "paper-partial".to_owned());
    let results = paper::run_paper(options)?;
    let not_run = paper_report::not_run(&results.models);
    let name = results_name("paper", options.quick, selected, &not_run);
    std::fs::create_dir_all(out).map_err(|source| BenchError::Io {
        context: "cannot create the results folder",
        path: out.to_owned(),
        source,
    })?;
    let mut plots = Vec::new();
    for model in &results.models {
        let live = format!("{name}-{}.svg", model.model);
        let path = out.join(&live);
        switchyard_scheduler::sim::plot::write_svg(&paper::live_plot_input(model), &path)
            .map_err(|e| BenchError::Other(e.to_string()))?;
        progress(&format!("wrote {}", path.display()));
        let mut simulated = String::new();
        if let Some(replay) = &model.sim {
            simulated = format!("{name}-sim-{}.svg", model.model);
            let path = out.join(&simulated);
            switchyard_scheduler::sim::plot::write_svg(&replay.output, &path)
                .map_err(|e| BenchError::Other(e.to_string()))?;
            progress(&format!("wrote {}", path.display()));
        }
        plots.push((model.model.clone(), live, simulated));
    }
    let section = paper_report::readme_section(&results);
    let discussion = read_discussion(PAPER_DISCUSSION)?;
    publish(
        out,
        &name,
        &results,
        &paper_report::document(&results, &plots, discussion.as_deref()),
        (name == "paper").then_some((readme, PAPER_README, section.as_str())),
    )?;
    require_complete(&not_run, &name)
}

/// The name a run's results are written under: `{base}-quick` for a quick
/// run; `selected`, the name for a run of some parts only, when one was
/// asked for; `{base}-partial` for a full run in which some parts could not
/// be made, so that it does not replace the last complete run's files
/// (nor its table in the README); else `base`.
fn results_name(base: &str, quick: bool, selected: Option<String>, not_run: &[String]) -> String {
    if quick {
        format!("{base}-quick")
    } else if let Some(name) = selected {
        name
    } else if not_run.is_empty() {
        base.to_owned()
    } else {
        format!("{base}-partial")
    }
}

/// After a run's results are written as `name`: an error naming the parts
/// that could not be made, so that a bench which measured less than it was
/// asked to does not exit as if it had succeeded.
fn require_complete(not_run: &[String], name: &str) -> Result<(), BenchError> {
    if not_run.is_empty() {
        return Ok(());
    }
    Err(BenchError::Other(format!(
        "{} part(s) of the run could not be made (results written to {name}.md and {name}.json): {}",
        not_run.len(),
        not_run.join("; ")
    )))
}

/// The written comparison with the paper that `paper.md` ends with.
const PAPER_DISCUSSION: &str = "bench/paper-discussion.md";

/// The file at `path` (from the repository root), or `None` when there is
/// none (a checkout without it, or a run from elsewhere).
fn read_discussion(path: &str) -> Result<Option<String>, BenchError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BenchError::Io {
            context: "cannot read the paper discussion",
            path: path.into(),
            source,
        }),
    }
}

/// Writes a finished run as `name.json` and `name.md`, rewrites the
/// README's section between `markers` when one is given, and shows the page.
fn publish(
    out: &Path,
    name: &str,
    results: &impl serde::Serialize,
    document: &str,
    readme: Option<(&Path, (&str, &str), &str)>,
) -> Result<(), BenchError> {
    let json = serde_json::to_string_pretty(results)
        .map_err(|e| BenchError::Other(format!("cannot encode the results: {e}")))?;
    write_results(
        out,
        &[
            (&format!("{name}.json"), json + "\n"),
            (&format!("{name}.md"), document.to_owned()),
        ],
    )?;
    if let Some((readme, markers, section)) = readme
        && readme.is_file()
        && markdown::update_readme_between(readme, markers, section)?
    {
        progress(&format!(
            "updated the {} section of {}",
            markers.0,
            readme.display()
        ));
    }
    show(document);
    Ok(())
}

const OVERHEAD_README: (&str, &str) = (
    "<!-- bench-overhead:begin -->",
    "<!-- bench-overhead:end -->",
);

fn overhead_bench(
    options: &overhead::OverheadOptions,
    out: &Path,
    readme: &Path,
) -> Result<(), BenchError> {
    let backends = overhead::chosen_backends(options)?;
    let selected = (backends.len() < overhead::BACKENDS.len())
        .then(|| format!("overhead-{}", backends.join("-")));
    let results = overhead::run_overhead(options)?;
    let not_run = overhead_report::not_run(&results.sections);
    let name = results_name("overhead", options.quick, selected, &not_run);
    let section = overhead_report::readme_section(&results);
    let plot_name = format!("{name}.svg");
    write_results(out, &[(&plot_name, overhead_report::plot(&results)?)])?;
    publish(
        out,
        &name,
        &results,
        &overhead_report::document(&results, &plot_name),
        (name == "overhead").then_some((readme, OVERHEAD_README, section.as_str())),
    )?;
    require_complete(&not_run, &name)
}

fn soak_bench(quick: bool, gateway_bin: Option<PathBuf>, out: &Path) -> Result<(), BenchError> {
    let gateway_bin = gateway_binary(gateway_bin)?;
    let results = soak::soak(&soak::SoakOptions { quick, gateway_bin })?;
    let json = serde_json::to_string_pretty(&results)
        .map_err(|e| BenchError::Other(format!("cannot encode the results: {e}")))?;
    let document = soak::markdown(&results);
    let name = if quick { "soak-quick" } else { "soak" };
    write_results(
        out,
        &[
            (&format!("{name}.json"), json + "\n"),
            (&format!("{name}.md"), document.clone()),
        ],
    )?;
    show(&document);
    if results.lost > 0 || !results.drained_exit_ok || results.containers_left > 0 {
        return Err(BenchError::Other(format!(
            "the soak lost {} requests, drained cleanly: {}, containers left: {}",
            results.lost, results.drained_exit_ok, results.containers_left
        )));
    }
    Ok(())
}

fn peers_bench(options: &peers::PeersOptions, out: &Path) -> Result<(), BenchError> {
    let results = peers::run_peers(options)?;
    let json = serde_json::to_string_pretty(&results)
        .map_err(|e| BenchError::Other(format!("cannot encode the results: {e}")))?;
    let name = if options.quick {
        "peers-quick"
    } else {
        "peers"
    };
    let plot_name = format!("{name}.svg");
    let document = peers::document(&results, &plot_name);
    write_results(
        out,
        &[
            (&format!("{name}.json"), json + "\n"),
            (&format!("{name}.md"), document.clone()),
            (&plot_name, peers::plot(&results)?),
        ],
    )?;
    show(&document);
    Ok(())
}

fn loadgen(options: &LoadgenBenchOptions, out: &Path) -> Result<(), BenchError> {
    let results = run_loadgen_bench(options)?;
    let json = serde_json::to_string_pretty(&results)
        .map_err(|e| BenchError::Other(format!("cannot encode the results: {e}")))?;
    let document = format!(
        "# Load generator benchmark: switchyard-loadgen vs wrk\n\n{}",
        loadgen_wrk::markdown(&results)
    );
    write_results(
        out,
        &[
            ("loadgen.json", json + "\n"),
            ("loadgen.md", document.clone()),
        ],
    )?;
    show(&document);
    Ok(())
}

fn codec_bench(options: &codec::CodecOptions) -> Result<(), BenchError> {
    let results = codec::run_codec_bench(options)?;
    let json = serde_json::to_string_pretty(&results)
        .map_err(|e| BenchError::Other(format!("cannot encode the results: {e}")))?;
    let document = codec::document(&results);
    let stem = if options.quick {
        "codec-quick"
    } else {
        "codec"
    };
    write_results(
        &options.out,
        &[
            (&format!("{stem}.json"), json + "\n"),
            (&format!("{stem}.md"), document.clone()),
        ],
    )?;
    show(&document);
    Ok(())
}

fn write_results(out: &Path, files: &[(&str, String)]) -> Result<(), BenchError> {
    std::fs::create_dir_all(out).map_err(|source| BenchError::Io {
        context: "cannot create the results folder",
        path: out.to_owned(),
        source,
    })?;
    for (name, text) in files {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|source| BenchError::Io {
            context: "cannot write results",
            path: path.clone(),
            source,
        })?;
        progress(&format!("wrote {}", path.display()));
    }
    Ok(())
}

fn local(
    options: &LocalOptions,
    config: &Path,
    out: &Path,
    readme: &Path,
) -> Result<(), BenchError> {
    let results = run_local(options, config)?;
    let json = serde_json::to_string_pretty(&results)
        .map_err(|e| BenchError::Other(format!("cannot encode the results: {e}")))?;
    let document = markdown::document(&results);
    let stem = local_results_stem(config, Path::new(gateway_process::LOCAL_ONLY_CONFIG));
    let (json_name, markdown_name) = (format!("{stem}.json"), format!("{stem}.md"));
    write_results(
        out,
        &[
            (json_name.as_str(), json + "\n"),
            (markdown_name.as_str(), document.clone()),
        ],
    )?;
    if !options.quick
        && stem == "local"
        && readme.is_file()
        && markdown::update_readme(readme, &markdown::tables(&results))?
    {
        progress(&format!("updated the table in {}", readme.display()));
    }
    show(&document);
    Ok(())
}

/// The name of a `local` run's results without the extension: `local` for
/// the default config, `local-STEM` for another (`local-nopin` for
/// `nopin.toml`), so that runs on other configs never overwrite the
/// default's results.
fn local_results_stem(config: &Path, default: &Path) -> String {
    let same_file = match (
        std::fs::canonicalize(config),
        std::fs::canonicalize(default),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => config == default,
    };
    if same_file {
        return "local".to_owned();
    }
    let stem = config
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    format!("local-{stem}")
}

#[allow(clippy::print_stdout)]
fn show(text: &str) {
    println!("{text}");
}

#[allow(clippy::print_stderr)]
fn fail(error: &BenchError) -> ExitCode {
    eprintln!("switchyard-bench: error: {error}");
    ExitCode::FAILURE
}

fn simulated(options: &sim::SimBenchOptions) -> Result<(), BenchError> {
    std::fs::create_dir_all(&options.out).map_err(|source| BenchError::Io {
        context: "cannot create the results folder",
        path: options.out.clone(),
        source,
    })?;
    let results = sim::run_sim_bench(options)?;
    let json = serde_json::to_string_pretty(&results)
        .map_err(|e| BenchError::Other(format!("cannot encode the results: {e}")))?;
    let document = sim::document(&results);
    for (name, text) in [("sim.json", json + "\n"), ("sim.md", document.clone())] {
        let path = options.out.join(name);
        std::fs::write(&path, text).map_err(|source| BenchError::Io {
            context: "cannot write results",
            path: path.clone(),
            source,
        })?;
        progress(&format!("wrote {}", path.display()));
    }
    show(&document);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::{local_results_stem, require_complete, results_name};

    #[test]
    fn a_local_run_on_another_config_keeps_its_own_results() {
        let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let default = workspace.join(crate::gateway_process::LOCAL_ONLY_CONFIG);
        assert_eq!(local_results_stem(&default, &default), "local");
        // Spelled another way, it is still the default.
        let roundabout = workspace.join("config/../config/local-only.toml");
        assert_eq!(local_results_stem(&roundabout, &default), "local");
        assert_eq!(
            local_results_stem(Path::new("/tmp/nopin.toml"), &default),
            "local-nopin"
        );
        // The shipped default config is another config too.
        assert_eq!(
            local_results_stem(&workspace.join("config/default.toml"), &default),
            "local-default"
        );
    }

    #[test]
    fn a_full_run_with_parts_not_run_does_not_take_the_full_runs_name() {
        let missing = ["lambda-only: no emulator".to_owned()];
        assert_eq!(results_name("paper", false, None, &[]), "paper");
        assert_eq!(
            results_name("paper", false, None, &missing),
            "paper-partial"
        );
        assert_eq!(results_name("paper", true, None, &missing), "paper-quick");
        let selected = Some("overhead-local".to_owned());
        assert_eq!(
            results_name("overhead", false, selected.clone(), &[]),
            "overhead-local"
        );
        assert_eq!(
            results_name("overhead", false, selected, &missing),
            "overhead-local"
        );
    }

    #[test]
    fn a_run_with_parts_not_run_fails_naming_them_and_its_files() {
        assert!(require_complete(&[], "paper").is_ok());
        let missing = [
            "xception / lambda-only: no emulator".to_owned(),
            "xception / adaptive: no emulator".to_owned(),
        ];
        let error = require_complete(&missing, "paper-partial")
            .expect_err("parts did not run")
            .to_string();
        assert!(
            error.contains("2 part(s)")
                && error.contains("paper-partial.md")
                && error.contains("xception / lambda-only: no emulator; xception / adaptive"),
            "{error}"
        );
    }
}
