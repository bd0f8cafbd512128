//! `switchyard-bench burst`: the placements side by side, live, through
//! Poisson bursts of xception requests, beside the simulator's replay of
//! the same bursts at full scale.
//!
//! The pattern is the simulator bench's `burst` scenario (5/s, 30 s at
//! 60/s, 5/s, 20 s at 120/s, 5/s), its rates and durations scaled to fit
//! one 2-core machine and the time budget. Each placement of the paper
//! bench (local-only, container-only, Lambda-only, straightline, adaptive)
//! runs it through its own gateway process, set up by the same code as
//! the paper bench's (`paper::drive`), with the same seed, so every
//! placement gets the same arrivals. Reported per placement: failures,
//! p50/p99, cost as the gateway estimates it, the backends that served,
//! each phase apart, and the targets; then the simulator's replay.
//!
//! What one machine cannot show: the tiers share its two cores, so adding
//! a tier adds no capacity here, and a burst beyond what the CPU carries
//! fails whatever the placement. The simulator is where the tiers are as
//! large as their profiles say.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_loadgen::{Process, Report, http_client};
use switchyard_scheduler::sim::{SimOptions, SimOutput};

use crate::error::BenchError;
use crate::local::progress;
use crate::machine::{Machine, load_average, utc_now};
use crate::paper::{
    ADAPTIVE_POLICY, ContainerScope, LambdaTier, Placement, SETTLE_BUDGET, Schedule,
    chosen_placements, drive, remove_containers, run_scoped, settle,
};
use crate::paper_report::{ContainerDeaths, container_deaths_line, served_by};
use crate::sim::{RunOutcome, Verdict, judge, load_profile, scaled_burst_phases, verdict_table};

/// This benchmark's containers and images.
const BURST_SCOPE: ContainerScope = ContainerScope {
    scope: "burst",
    image_prefix: "switchyard-worker-burst",
};

const MODEL: &str = "xception";
/// Seed of the Poisson arrivals, live and simulated.
const SEED: u64 = 1;

/// What to run.
#[derive(Debug, Clone)]
pub struct BurstOptions {
    pub quick: bool,
    pub gateway_bin: PathBuf,
    pub profile: Option<PathBuf>,
    /// Only these placements (all when empty).
    pub placements: Vec<String>,
    /// Where to keep each placement's gateway config, log and decision log.
    pub keep_logs: Option<PathBuf>,
    pub command: String,
}

/// The live pattern: the simulator's rates times `rate_factor`, its
/// phases `time_factor` as long.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct LiveScale {
    pub rate_factor: f64,
    pub time_factor: f64,
}

impl LiveScale {
    /// 1 → 12 → 24 requests/s over 50 s: the first burst near what the
    /// local tier alone carries here (about 17/s), the second beyond what
    /// the machine's two cores carry at all. `--quick`: 20 s.
    fn of(quick: bool) -> Self {
        Self {
            rate_factor: 0.2,
            time_factor: if quick { 0.1 } else { 0.25 },
        }
    }
}

/// One phase of one placement's run.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseRow {
    pub name: String,
    pub offered_per_s: f64,
    pub due: u64,
    pub failed: u64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

/// One placement's live run.
#[derive(Debug, Clone, Serialize)]
pub struct BurstRun {
    pub placement: String,
    /// Why the run could not be made, if it could not.
    pub error: Option<String>,
    pub load_average_before: String,
    pub due: u64,
    pub failed: u64,
    pub failure_rate: f64,
    /// Successful requests, from the intended send time.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub cost_dollars: Option<f64>,
    /// The container tier's replaced workers, when the placement has one.
    pub container_deaths: Option<ContainerDeaths>,
    /// Successful requests by the backend that answered.
    pub served_by: Vec<(String, u64)>,
    pub phases: Vec<PhaseRow>,
    /// The load generator's whole report.
    pub report: Option<Report>,
}

/// The placements that could not be run, as "placement: why".
pub fn not_run(runs: &[BurstRun]) -> Vec<String> {
    runs.iter()
        .filter_map(|run| {
            run.error
                .as_ref()
                .map(|error| format!("{}: {error}", run.placement))
        })
        .collect()
}

impl BurstRun {
    fn failed(placement: Placement, error: String) -> Self {
        Self {
            placement: placement.name().to_owned(),
            error: Some(error),
            load_average_before: load_average(),
            due: 0,
            failed: 0,
            failure_rate: 0.0,
            p50_ms: None,
            p99_ms: None,
            cost_dollars: None,
            container_deaths: None,
            served_by: Vec::new(),
            phases: Vec::new(),
            report: None,
        }
    }

    fn measured(
        placement: Placement,
        load_average_before: String,
        report: Report,
        cost: Option<f64>,
        container_deaths: Option<ContainerDeaths>,
    ) -> Self {
        let ms = |us: u64, count: u64| (count > 0).then_some(us as f64 / 1000.0);
        let phases = report
            .per_phase
            .iter()
            .map(|p| PhaseRow {
                name: p.name.clone(),
                offered_per_s: p.offered_per_s,
                due: p.stats.due,
                failed: p.stats.due - p.stats.counts.success,
                p50_ms: ms(p.stats.latency_us.p50, p.stats.latency_us.count),
                p99_ms: ms(p.stats.latency_us.p99, p.stats.latency_us.count),
            })
            .collect();
        let due = report.scheduled;
        let failed = due - report.counts.success;
        Self {
            placement: placement.name().to_owned(),
            error: None,
            load_average_before,
            due,
            failed,
            failure_rate: if due == 0 {
                0.0
            } else {
                failed as f64 / due as f64
            },
            p50_ms: ms(report.latency_us.p50, report.latency_us.count),
            p99_ms: ms(report.latency_us.p99, report.latency_us.count),
            cost_dollars: cost,
            container_deaths,
            served_by: served_by(&report),
            phases,
            report: Some(report),
        }
    }

    fn outcome(&self) -> Option<RunOutcome<'_>> {
        if self.error.is_some() {
            return None;
        }
        Some(RunOutcome {
            label: &self.placement,
            failure_rate: self.failure_rate,
            p99_ms: self.p99_ms.unwrap_or(f64::INFINITY),
            cost_dollars: self.cost_dollars.unwrap_or(f64::NAN),
        })
    }
}

/// The simulator's replay at full scale.
#[derive(Debug, Clone, Serialize)]
pub struct SimReplay {
    pub profile: String,
    pub output: SimOutput,
    pub verdicts: Vec<Verdict>,
}

/// Everything the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct BurstResults {
    pub date: String,
    pub machine: Machine,
    pub load_average_at_end: String,
    pub command: String,
    pub quick: bool,
    pub wall_seconds: f64,
    pub model: &'static str,
    pub scale: LiveScale,
    pub slo_p99_ms: Option<f64>,
    pub runs: Vec<BurstRun>,
    pub verdicts: Vec<Verdict>,
    pub sim: SimReplay,
}

/// Runs the benchmark from the repository root.
pub fn run_burst(options: &BurstOptions) -> Result<BurstResults, BenchError> {
    run_scoped(BURST_SCOPE, |root, docker| async move {
        let started = Instant::now();
        let machine = Machine::describe();
        let quick = [Placement::LocalOnly, Placement::LambdaOnly];
        let placements = chosen_placements(
            &options.placements,
            if options.quick {
                &quick
            } else {
                &Placement::ALL
            },
        )?;
        if placements.iter().any(|p| p.uses_container()) {
            match &docker {
                Some(docker) => {
                    let left = remove_containers(docker, BURST_SCOPE).await;
                    if left > 0 {
                        progress(&format!(
                            "removed {left} container(s) left by an earlier run"
                        ));
                    }
                }
                None => progress(
                    "no Docker engine: the container placements will be reported as not run",
                ),
            }
        }
        let scale = LiveScale::of(options.quick);
        let phases = scaled_burst_phases(scale.rate_factor, scale.time_factor)?;
        let client = http_client(1024);
        let mut lambda = LambdaTier::default();
        let mut runs = Vec::new();
        let mut idle_budget = SETTLE_BUDGET;
        for &placement in &placements {
            settle(&mut idle_budget).await;
            progress(&format!(
                "{MODEL} / {}: Poisson bursts, {:.0} s",
                placement.name(),
                phases.total_duration().as_secs_f64()
            ));
            let schedule = Schedule {
                model: MODEL,
                phases: phases.clone(),
                process: Process::Poisson { seed: SEED },
                containers: BURST_SCOPE,
                logs: options.keep_logs.as_deref(),
            };
            let run = match drive(
                &options.gateway_bin,
                &root,
                &client,
                &mut lambda,
                placement,
                &schedule,
            )
            .await
            {
                Ok(driven) => BurstRun::measured(
                    placement,
                    driven.load_before,
                    driven.recording.report,
                    driven.cost_dollars,
                    driven.container_deaths,
                ),
                Err(error) => {
                    progress(&format!("{MODEL} / {}: not run: {error}", placement.name()));
                    BurstRun::failed(placement, error.to_string())
                }
            };
            progress(&format!(
                "{MODEL} / {}: {} requests, {} failed, p50 {:?} ms, p99 {:?} ms, cost {:?}",
                run.placement, run.due, run.failed, run.p50_ms, run.p99_ms, run.cost_dollars
            ));
            runs.push(run);
        }
        drop(lambda);
        let slo = adaptive_slo()?;
        let outcomes: Vec<RunOutcome<'_>> = runs.iter().filter_map(BurstRun::outcome).collect();
        let verdicts = judge_adaptive(&outcomes, slo)?;
        let sim = sim_replay(options, &placements, slo)?;
        Ok(BurstResults {
            date: utc_now(),
            machine,
            load_average_at_end: load_average(),
            command: options.command.clone(),
            quick: options.quick,
            wall_seconds: started.elapsed().as_secs_f64(),
            model: MODEL,
            scale,
            slo_p99_ms: slo,
            runs,
            verdicts,
            sim,
        })
    })
}

/// The targets, with `slo` the SLO of the adaptive placement (the only one
/// that has one).
fn judge_adaptive(
    outcomes: &[RunOutcome<'_>],
    slo: Option<f64>,
) -> Result<Vec<Verdict>, BenchError> {
    judge(outcomes, |label| {
        Ok((label == Placement::Adaptive.name())
            .then_some(slo)
            .flatten())
    })
}

/// xception's p99 SLO in the adaptive placement's policy file.
fn adaptive_slo() -> Result<Option<f64>, BenchError> {
    let text = std::fs::read_to_string(ADAPTIVE_POLICY).map_err(|source| BenchError::Io {
        context: "cannot read the policy file",
        path: PathBuf::from(ADAPTIVE_POLICY),
        source,
    })?;
    let file = switchyard_scheduler::policy::spec::PolicyFile::parse(&text)
        .map_err(|e| BenchError::Other(e.to_string()))?;
    Ok(match file.models.get(MODEL).or(file.default.as_ref()) {
        Some(switchyard_scheduler::policy::spec::PolicySpec::Adaptive { slo_p99_ms, .. }) => {
            Some(*slo_p99_ms)
        }
        _ => None,
    })
}

/// The same placements through the full-scale bursts in the simulator.
fn sim_replay(
    options: &BurstOptions,
    placements: &[Placement],
    slo: Option<f64>,
) -> Result<SimReplay, BenchError> {
    let (profile, name) = load_profile(options.profile.as_deref())?;
    let policies = placements
        .iter()
        .map(|p| p.sim_run(&profile))
        .collect::<Result<Vec<_>, _>>()?;
    let output = SimOptions {
        profile: profile.clone(),
        policies,
        phases: scaled_burst_phases(1.0, 1.0)?,
        schedule: "Poisson bursts at full scale: 5/s, 30 s at 60/s, 5/s, 20 s at 120/s, 5/s".into(),
        poisson: true,
        max_requests: None,
        models: vec![(MODEL.to_owned(), 1.0)],
        seed: SEED,
        bucket: Duration::from_secs(10),
    }
    .run()
    .map_err(|e| BenchError::Other(e.to_string()))?;
    let outcomes: Vec<RunOutcome<'_>> = output.runs.iter().map(RunOutcome::simulated).collect();
    let verdicts = judge_adaptive(&outcomes, slo)?;
    Ok(SimReplay {
        profile: name,
        output,
        verdicts,
    })
}

fn ms(value: Option<f64>) -> String {
    value.map_or_else(|| "–".to_owned(), |v| format!("{v:.1}"))
}

fn percent(failed: u64, due: u64) -> String {
    if due == 0 {
        "–".into()
    } else {
        format!("{:.1}%", failed as f64 * 100.0 / due as f64)
    }
}

/// The whole `burst.md`.
pub fn document(results: &BurstResults) -> String {
    use std::fmt::Write as _;
    let m = &results.machine;
    let mut out = String::from("# Bursts: the placements side by side, live and simulated\n\n");
    let _ = writeln!(
        out,
        "- Date: {}\n- Machine: {} CPUs, {}, Linux {}; load average {} at the start, {} at the end; the whole run took {:.0} s\n- Command: `{}`",
        results.date,
        m.nproc,
        m.cpu_model,
        m.kernel,
        m.load_average_at_start,
        results.load_average_at_end,
        results.wall_seconds,
        results.command
    );
    let _ = writeln!(
        out,
        "- Load: `{}`, Poisson arrivals (seed {SEED}, the same for every placement), single-image requests in binary tensors, open loop, latency from the intended send time; the simulator bench's burst pattern with its rates × {} and its phases × {} as long. A request fails when it gets no 2xx. Percentiles are of the 2xx.",
        results.model, results.scale.rate_factor, results.scale.time_factor
    );
    out.push_str("- Placements: as in the paper bench (`bench/src/paper.rs`): one gateway process per placement, the tiers set up as `config/local-only.toml`, `config/container-only.toml` and `config/lambda-only.toml` set them up; `straightline` is `config/straightline.toml`, `adaptive` is `config/cost-aware.toml`. Cost: the gateway's own estimate over its life (warm-up included): Lambda invocations at list prices, container-seconds at $0.0000125.\n");
    out.push_str("- One machine: every tier shares the same two cores, so a tier added is no capacity added, and the second burst is beyond what the CPU carries whatever the placement. The simulator's replay below gives each tier the capacity its profile says.\n\n## Live\n\n");
    out.push_str("| placement | requests | failed | p50 ms | p99 ms | cost | served by |\n|---|---:|---:|---:|---:|---:|---|\n");
    for run in &results.runs {
        if let Some(error) = &run.error {
            let _ = writeln!(
                out,
                "| {} | – | – | – | – | – | not run: {} |",
                run.placement,
                error.replace('|', "/").lines().next().unwrap_or("")
            );
            continue;
        }
        let served: u64 = run.served_by.iter().map(|(_, n)| n).sum();
        let shares = run
            .served_by
            .iter()
            .map(|(name, n)| format!("{name} {:.1}%", *n as f64 * 100.0 / served.max(1) as f64))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | {} | {} ({}) | {} | {} | {} | {} |",
            run.placement,
            run.due,
            run.failed,
            percent(run.failed, run.due),
            ms(run.p50_ms),
            ms(run.p99_ms),
            run.cost_dollars
                .map_or_else(|| "–".to_owned(), |c| format!("${c:.6}")),
            if shares.is_empty() {
                "–".into()
            } else {
                shares
            }
        );
    }
    if let Some(line) = container_deaths_line(
        results
            .runs
            .iter()
            .map(|run| (run.placement.as_str(), run.container_deaths)),
    ) {
        out.push('\n');
        out.push_str(&line);
    }
    if let Some(first) = results.runs.iter().find(|r| r.error.is_none()) {
        out.push_str(
            "\nEach phase (p50 / p99 ms of the 2xx · share failed):\n\n| phase | offered/s |",
        );
        let measured: Vec<&BurstRun> = results.runs.iter().filter(|r| r.error.is_none()).collect();
        for run in &measured {
            let _ = write!(out, " {} |", run.placement);
        }
        out.push_str("\n|---|---:|");
        for _ in &measured {
            out.push_str("---|");
        }
        out.push('\n');
        for (i, phase) in first.phases.iter().enumerate() {
            let _ = write!(
                out,
                "| {} {} | {:.1} |",
                i + 1,
                phase.name,
                phase.offered_per_s
            );
            for run in &measured {
                match run.phases.get(i) {
                    Some(p) => {
                        let _ = write!(
                            out,
                            " {} / {} · {} |",
                            ms(p.p50_ms),
                            ms(p.p99_ms),
                            percent(p.failed, p.due)
                        );
                    }
                    None => out.push_str(" – |"),
                }
            }
            out.push('\n');
        }
    }
    if !results.verdicts.is_empty() {
        out.push('\n');
        out.push_str(&verdict_table(&results.verdicts));
    }
    let _ = write!(
        out,
        "\n## Simulated at full scale\n\nThe same placements in `switchyard sim` (profile `{}`), the bursts at the simulator bench's rates and durations, seed {SEED}.\n\n{}",
        results.sim.profile,
        switchyard_scheduler::sim::report::summary_table(&results.sim.output.runs)
    );
    if !results.sim.verdicts.is_empty() {
        out.push('\n');
        out.push_str(&verdict_table(&results.sim.verdicts));
    }
    let _ = write!(
        out,
        "\n{}",
        switchyard_scheduler::sim::report::shares_table(&results.sim.output.runs)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_live_pattern_is_the_simulated_one_scaled() {
        let full = scaled_burst_phases(1.0, 1.0).unwrap();
        let live = scaled_burst_phases(0.2, 0.25).unwrap();
        assert_eq!(full.total_duration(), Duration::from_secs(200));
        assert_eq!(live.total_duration(), Duration::from_secs(50));
        // Rates x 0.2 over a quarter of the time: 1/20 of the requests.
        let (live, full) = (live.expected_requests(), full.expected_requests());
        assert!((live * 20.0 - full).abs() < 1e-6, "{live} {full}");
    }

    #[test]
    fn a_failed_run_is_not_judged() {
        let run = BurstRun::failed(Placement::Adaptive, "no engine".into());
        assert!(run.outcome().is_none());
        assert_eq!(not_run(&[run]), ["adaptive: no engine"]);
    }
}
