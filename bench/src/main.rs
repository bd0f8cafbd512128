//! `switchyard-bench`: Switchyard's reproducible benchmarks, one command
//! each, each writing a table. `local` compares the gateway with the raw
//! ONNX Runtime loop on this machine (`make bench-local`).

mod error;
mod gateway_process;
mod local;
mod machine;
mod markdown;
mod raw;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::BenchError;
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
        /// A short run (< 40 s) to check that everything works; numbers are noisier.
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
        } => {
            let options = LocalOptions {
                quick,
                build_gateway: !no_build && gateway_bin.is_none(),
                gateway_bin,
                command,
            };
            match local(&options, &out, &readme) {
                Ok(()) => ExitCode::SUCCESS,
                Err(error) => fail(&error),
            }
        }
    }
}

fn local(options: &LocalOptions, out: &Path, readme: &Path) -> Result<(), BenchError> {
    let results = run_local(options)?;
    std::fs::create_dir_all(out).map_err(|source| BenchError::Io {
        context: "cannot create the results folder",
        path: out.to_owned(),
        source,
    })?;
    let json = serde_json::to_string_pretty(&results)
        .map_err(|e| BenchError::Other(format!("cannot encode the results: {e}")))?;
    let document = markdown::document(&results);
    for (name, text) in [("local.json", json + "\n"), ("local.md", document.clone())] {
        let path = out.join(name);
        std::fs::write(&path, text).map_err(|source| BenchError::Io {
            context: "cannot write results",
            path: path.clone(),
            source,
        })?;
        progress(&format!("wrote {}", path.display()));
    }
    if !options.quick
        && readme.is_file()
        && markdown::update_readme(readme, &markdown::tables(&results))?
    {
        progress(&format!("updated the table in {}", readme.display()));
    }
    show(&document);
    Ok(())
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
