//! `switchyard sim`: a discrete-event simulator that runs the gateway's own
//! placement policies against models of the three tiers, in virtual time.
//!
//! The policies are the objects the gateway builds, from the same policy
//! files, through [`PolicySet::build`]. For every simulated request the
//! engine measures the model's rate with the gateway's [`RateMeter`], builds
//! the same [`BackendView`](crate::policy::BackendView)s (a
//! [`BackendSnapshot`](switchyard_backends::BackendSnapshot) per tier and
//! the peak-EWMA [`Observed`](crate::policy::Observed) latency and failure
//! rate the gateway would have measured), asks the policy, offers the
//! request to the chosen tier model, and fails over on a refusal within the
//! deadline and the gateway's [`RetryBudget`](crate::placement::RetryBudget).
//! There are no threads and no sleeping: a binary heap of timed events
//! drives the run, so the paper's 3,505-request ramp takes milliseconds and
//! a run is reproducible from its seed.
//!
//! - [`profile`]: the profile file (latency per tier, model and batch size,
//!   capacity, cold starts, prices);
//! - [`dist`]: log-normal latencies fitted to p50/p99, seeded streams;
//! - [`backends`]: the tier models;
//! - [`events`], [`engine`]: virtual time and the event loop;
//! - [`report`], [`plot`]: the Markdown table, JSON and SVG plot.
//!
//! What the models leave out: tiers do not share a CPU (a simulated local
//! tier and containers do not slow each other down, as they would on one
//! machine: the simulator shows placement beyond one machine); a request
//! that times out still occupies its worker, container slot or Lambda
//! instance until its work would have finished; local batching does not
//! wait for a batch to fill (it merges what is already queued).

pub mod backends;
pub mod dist;
pub mod engine;
pub mod events;
pub mod plot;
pub mod profile;
pub mod report;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_loadgen::Phases;

use crate::policy::spec::{PolicyFile, PolicySet, PolicySpec};

pub use engine::{Workload, simulate, simulate_with};
pub use profile::{Profile, ProfileError, ProfileFile};
pub use report::SimReport;

/// Why a simulation could not run.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error(transparent)]
    Profile(#[from] ProfileError),
    #[error("{0}")]
    Policy(String),
    #[error("{0}")]
    Settings(String),
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot draw the plot: {0}")]
    Plot(String),
}

/// One policy set to simulate, and its name in reports.
#[derive(Debug, Clone)]
pub struct PolicyRun {
    pub label: String,
    pub set: PolicySet,
    /// The tiers deployed for this run; `None`: every tier of the profile.
    /// A `static:BACKEND` baseline deploys only its tier, as
    /// `config/local-only.toml` and its siblings do, so it pays for no
    /// other tier and has nowhere to fail over to.
    pub tiers: Option<Vec<String>>,
}

impl PolicyRun {
    /// The policies of a policy file, named after the file.
    pub fn from_file(path: &Path, profile: &Profile) -> Result<Self, SimError> {
        let name = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| SimError::Policy(format!("cannot read policy file {name}: {e}")))?;
        let file =
            PolicyFile::parse(&text).map_err(|e| SimError::Policy(format!("{name}: {e}")))?;
        let label = path
            .file_stem()
            .map_or_else(|| name.clone(), |s| s.to_string_lossy().into_owned());
        Self::build(&file, &label, &name, profile)
    }

    /// A policy written on the command line: `static:BACKEND` (named
    /// `BACKEND-only`), `round_robin`, `least_loaded`, or
    /// `ordered[:A,B,...]`.
    pub fn from_spec(spec: &str, profile: &Profile) -> Result<Self, SimError> {
        let (kind, argument) = match spec.split_once(':') {
            Some((kind, argument)) => (kind, Some(argument)),
            None => (spec, None),
        };
        let (policy, label, tiers) = match (kind, argument) {
            ("static", Some(backend)) => (
                PolicySpec::Static {
                    backend: backend.to_owned(),
                },
                format!("{backend}-only"),
                Some(vec![backend.to_owned()]),
            ),
            ("round_robin", None) => (PolicySpec::RoundRobin {}, spec.to_owned(), None),
            ("least_loaded", None) => (PolicySpec::LeastLoaded {}, spec.to_owned(), None),
            ("ordered", order) => (
                PolicySpec::Ordered {
                    order: order.map(|o| o.split(',').map(|s| s.trim().to_owned()).collect()),
                },
                spec.to_owned(),
                None,
            ),
            _ => {
                return Err(SimError::Policy(format!(
                    "--policy {spec:?}: give static:BACKEND, round_robin, least_loaded or \
                     ordered[:A,B,...]; for straightline or adaptive use a --policy-file"
                )));
            }
        };
        let file = PolicyFile {
            default: Some(policy),
            models: Default::default(),
        };
        let mut run = Self::build(&file, &label, &format!("--policy {spec}"), profile)?;
        run.tiers = tiers;
        Ok(run)
    }

    /// The profile with only this run's tiers.
    pub fn profile(&self, profile: &Profile) -> Profile {
        match &self.tiers {
            None => profile.clone(),
            Some(tiers) => profile.only(tiers),
        }
    }

    fn build(
        file: &PolicyFile,
        label: &str,
        source: &str,
        profile: &Profile,
    ) -> Result<Self, SimError> {
        let set = PolicySet::build(
            file,
            &profile.backend_names(),
            &profile.model_names(),
            source,
        )
        .map_err(|e| {
            SimError::Policy(format!(
                "{source}: {e} (the backends and models are the profile's)"
            ))
        })?;
        Ok(Self {
            label: label.to_owned(),
            set,
            tiers: None,
        })
    }
}

/// Everything `switchyard sim` was asked to do.
#[derive(Debug, Clone)]
pub struct SimOptions {
    pub profile: Profile,
    pub policies: Vec<PolicyRun>,
    pub phases: Phases,
    /// A description of the schedule for the report.
    pub schedule: String,
    pub poisson: bool,
    pub max_requests: Option<u64>,
    /// `(model, weight)` by name.
    pub models: Vec<(String, f64)>,
    pub seed: u64,
    pub bucket: Duration,
}

/// Runs of every policy on one workload, with their wall time.
#[derive(Debug, Clone, Serialize)]
pub struct SimOutput {
    pub schedule: String,
    pub expected_requests: f64,
    pub runs: Vec<SimReport>,
    /// Wall-clock seconds each run took (not part of the reports, which
    /// are deterministic).
    pub wall_seconds: Vec<f64>,
}

impl SimOptions {
    /// The workload: models resolved against the profile.
    pub fn workload(&self) -> Result<Workload, SimError> {
        let mut models = Vec::new();
        for (name, weight) in &self.models {
            let index = self.profile.model_index(name).ok_or_else(|| {
                SimError::Settings(format!(
                    "--model {name}: not in the profile; its models are {:?}",
                    self.profile.model_names()
                ))
            })?;
            if !(weight.is_finite() && *weight > 0.0) {
                return Err(SimError::Settings(format!(
                    "--model {name}={weight}: the weight must be a positive number"
                )));
            }
            models.push((index, *weight));
        }
        if models.is_empty() {
            let default = self.profile.model_index("xception").unwrap_or(0);
            models.push((default, 1.0));
        }
        Ok(Workload {
            phases: self.phases.clone(),
            poisson: self.poisson,
            max_requests: self.max_requests,
            models,
            seed: self.seed,
            bucket: self.bucket,
        })
    }

    /// Simulates every policy on the workload.
    pub fn run(&self) -> Result<SimOutput, SimError> {
        let workload = self.workload()?;
        let mut runs = Vec::with_capacity(self.policies.len());
        let mut wall_seconds = Vec::with_capacity(self.policies.len());
        for policy in &self.policies {
            let started = Instant::now();
            let profile = policy.profile(&self.profile);
            runs.push(simulate(&profile, &policy.set, &policy.label, &workload));
            wall_seconds.push(started.elapsed().as_secs_f64());
        }
        Ok(SimOutput {
            schedule: self.schedule.clone(),
            expected_requests: self.phases.expected_requests(),
            runs,
            wall_seconds,
        })
    }
}

impl SimOutput {
    /// The Markdown report: the side-by-side table and shares over time.
    pub fn markdown(&self) -> String {
        let requests: u64 = self.runs.iter().map(|r| r.requests).sum();
        let wall: f64 = self.wall_seconds.iter().sum();
        let models = self
            .runs
            .first()
            .map(|r| r.models.join(", "))
            .unwrap_or_default();
        let arrivals = self.runs.first().map_or("constant", |r| r.arrivals);
        format!(
            "Simulated: {} ({arrivals} arrivals), model {models}\n\n{}\n{}\nSimulated {requests} requests in {:.3} s of wall time ({:.2} µs per request).\n",
            self.schedule,
            report::summary_table(&self.runs),
            report::shares_table(&self.runs),
            wall,
            if requests == 0 {
                0.0
            } else {
                wall / requests as f64 * 1e6
            },
        )
    }

    /// Writes the JSON report.
    pub fn write_json(&self, path: &Path) -> Result<(), SimError> {
        let text = serde_json::to_string_pretty(self).map_err(|e| SimError::Write {
            path: path.to_owned(),
            source: std::io::Error::other(e),
        })?;
        std::fs::write(path, text + "\n").map_err(|source| SimError::Write {
            path: path.to_owned(),
            source,
        })
    }
}

/// Parses `NAME` or `NAME=WEIGHT`.
pub fn parse_model_weight(text: &str) -> Result<(String, f64), String> {
    match text.split_once('=') {
        None => Ok((text.to_owned(), 1.0)),
        Some((name, weight)) => weight
            .parse::<f64>()
            .map(|w| (name.to_owned(), w))
            .map_err(|_| format!("{text:?}: the weight after `=` must be a number")),
    }
}
