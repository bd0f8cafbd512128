//! Load generation for Open Inference Protocol (v2) endpoints: the client
//! side of Switchyard's benchmarks, usable as a library and as the
//! `switchyard-loadgen` command.
//!
//! A run has a [`Target`] (a loopback endpoint and a payload mix: models and
//! batch sizes by weight, with request bodies encoded in advance from each
//! model's metadata), [`RunSettings`] (an open loop driven by arrival
//! [`Phases`], constant or Poisson, or a closed loop with N workers; always
//! bounded in duration and count) and produces a [`Recording`]: HDR
//! histograms per outcome, phase, model and backend, a one-second time
//! series, and a serialisable [`Report`]. Open-loop latency is measured
//! from each request's intended send time (no coordinated omission).
//!
//! ```no_run
//! # async fn example() -> Result<(), switchyard_loadgen::LoadgenError> {
//! use std::{sync::Arc, time::Duration};
//! use switchyard_loadgen::*;
//! let client = http_client(64);
//! let endpoint = Endpoint::parse("http://127.0.0.1:8000", false)?;
//! let mix = MixSpec::from_cli(&["digits:3".into(), "fashion_cnn:1".into()], Some("1:8,8:1"))?;
//! let target = Target::prepare_mix(&client, endpoint, &mix, &PayloadSpec::default()).await?;
//! let load = Load::Open {
//!     phases: Phases::preset("paper")?.scaled(2.0)?,
//!     process: Process::Poisson { seed: 1 },
//!     max_in_flight: 256,
//! };
//! let settings = RunSettings::new(load, Duration::from_secs(5));
//! let recording = run(&client, &Arc::new(target), &settings).await?;
//! println!("p99 {} µs", recording.report.latency_us.p99);
//! # Ok(()) }
//! ```

pub mod client;
mod error;
pub mod mix;
pub mod payload;
pub mod phases;
pub mod plot;
pub mod progress;
pub mod record;
pub mod rng;
pub mod runfile;
pub mod runner;
pub mod summary;
pub mod target;
pub mod units;

pub use client::{HttpClient, http_client};
pub use error::LoadgenError;
pub use mix::{MixEntry, MixSpec};
pub use payload::{PayloadSpec, RequestBody};
pub use phases::{Due, Phase, PhaseLoad, Phases, Process};
pub use record::{BackendId, LatencySummary, Outcome, Recorder, Report, SCHEMA_VERSION, Sample};
pub use runfile::RunFile;
pub use runner::{Live, Load, Recording, RunSettings, run, run_observed};
pub use summary::summary_table;
pub use target::{Endpoint, Target, TargetEntry};
