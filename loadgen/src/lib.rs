//! Load generation for Open Inference Protocol (v2) endpoints: the client
//! side of Switchyard's benchmarks, usable as a library and as the
//! `switchyard-loadgen` command.
//!
//! A run has a [`Target`] (a loopback endpoint, a model, request bodies
//! encoded in advance from the model's metadata), a [`RunSettings`] (open
//! loop at a constant or Poisson rate, or closed loop with N workers;
//! bounded by duration and count) and produces a [`Recording`]: HDR
//! histograms per [`Outcome`] and a serialisable [`Report`]. Open-loop
//! latency is measured from each request's intended send time.
//!
//! ```no_run
//! # async fn example() -> Result<(), switchyard_loadgen::LoadgenError> {
//! use std::{sync::Arc, time::Duration};
//! use switchyard_loadgen::*;
//! let client = http_client(64);
//! let endpoint = Endpoint::parse("http://127.0.0.1:8000", false)?;
//! let target = Target::prepare(&client, endpoint, "digits", &PayloadSpec::default()).await?;
//! let settings = RunSettings {
//!     load: Load::Open { arrival: Arrival::Constant { rate: 500.0 }, max_in_flight: 256 },
//!     duration: Duration::from_secs(10),
//!     max_requests: None,
//!     timeout: Duration::from_secs(5),
//!     keep_samples: false,
//! };
//! let recording = run(&client, &Arc::new(target), &settings).await?;
//! println!("p99 {} µs", recording.report.latency_us.p99);
//! # Ok(()) }
//! ```

pub mod client;
mod error;
pub mod payload;
pub mod record;
pub mod rng;
pub mod runner;
pub mod schedule;
pub mod summary;
pub mod target;
pub mod units;

pub use client::{HttpClient, http_client};
pub use error::LoadgenError;
pub use payload::{PayloadSpec, RequestBody};
pub use record::{LatencySummary, Outcome, Recorder, Report, Sample};
pub use runner::{Load, Recording, RunSettings, run};
pub use schedule::{Arrival, Schedule};
pub use summary::summary_table;
pub use target::{Endpoint, Target};
