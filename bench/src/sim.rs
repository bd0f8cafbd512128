//! `switchyard-bench sim`: the placement policies side by side in the
//! simulator (`switchyard sim`), against the local-only, container-only
//! and Lambda-only baselines, on the paper's ramp and on a Poisson burst
//! pattern; plus the simulator's own speed (wall time per simulated
//! request). Writes `sim.md`, `sim.json` and an SVG plot per scenario.
//!
//! Every run of a scenario replays the same arrivals (same seed) against
//! the same profile, so the columns differ only by policy.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_loadgen::{Phase, Phases};
use switchyard_scheduler::sim::{PolicyRun, Profile, SimOptions, SimOutput, SimReport};

use crate::error::BenchError;
use crate::local::progress;
use crate::machine::{Machine, utc_now};

/// What to run.
#[derive(Debug, Clone)]
pub struct SimBenchOptions {
    pub quick: bool,
    pub profile: Option<PathBuf>,
    pub out: PathBuf,
    pub command: String,
}

/// One workload.
#[derive(Debug, Clone)]
struct Scenario {
    name: &'static str,
    what: String,
    phases: Phases,
    poisson: bool,
    model: &'static str,
}

/// The Poisson burst pattern: a quiet base rate of xception requests with
/// two bursts, the second beyond what Lambda's reserved concurrency alone
/// can carry.
fn burst_phases() -> Result<Phases, BenchError> {
    scaled_burst_phases(1.0, 1.0)
}

/// [`burst_phases`] with every rate times `rate_factor` and every phase
/// `time_factor` as long (the live burst bench fits it to this machine).
pub(crate) fn scaled_burst_phases(
    rate_factor: f64,
    time_factor: f64,
) -> Result<Phases, BenchError> {
    let s = |seconds: f64| Duration::from_secs_f64(seconds * time_factor);
    let r = |rate: f64| rate * rate_factor;
    Ok(Phases::new(vec![
        Phase::rate("quiet", s(60.0), r(5.0)),
        Phase::rate("burst 1", s(30.0), r(60.0)),
        Phase::rate("quiet", s(60.0), r(5.0)),
        Phase::rate("burst 2", s(20.0), r(120.0)),
        Phase::rate("quiet", s(30.0), r(5.0)),
    ])?)
}

/// How one policy did against the targets.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub policy: String,
    /// Failures ≤ 1%.
    pub failures_at_most_1_percent: bool,
    /// p99 ≤ the policy's SLO for the model.
    pub p99_within_slo: Option<bool>,
    pub slo_p99_ms: Option<f64>,
    /// local-only fails ≥ 20% here (the situation the target is about).
    pub local_only_fails_20_percent: bool,
    /// Cost < half of Lambda-only's.
    pub under_half_lambda_cost: bool,
    /// Against straightline: better / worse on failure rate, p99 and cost.
    pub vs_straightline: Vec<(String, &'static str)>,
    /// Better on at least two and worse on none.
    pub beats_straightline: bool,
}

/// One scenario's results.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    pub name: String,
    pub what: String,
    pub output: SimOutput,
    pub verdicts: Vec<Verdict>,
    /// The same scenario replayed with other seeds: how often each target
    /// held, so that one lucky or unlucky draw of the 1% tail decides
    /// nothing.
    pub seeds: Vec<SeedTally>,
}

/// How one policy did against the targets over several seeds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SeedTally {
    pub policy: String,
    pub seeds: u32,
    pub failures_at_most_1_percent: u32,
    pub p99_within_slo: u32,
    pub under_half_lambda_cost: u32,
    pub beats_straightline: u32,
    /// Lowest and highest p99 ÷ straightline's p99 of the same seed.
    pub p99_vs_straightline: (f64, f64),
    /// Lowest and highest cost ÷ Lambda-only's cost of the same seed.
    pub cost_vs_lambda_only: (f64, f64),
}

impl SeedTally {
    fn add(&mut self, verdict: &Verdict, p99_ratio: f64, cost_ratio: f64) {
        let widen = |(low, high): (f64, f64), x: f64| {
            if self.seeds == 0 {
                (x, x)
            } else {
                (low.min(x), high.max(x))
            }
        };
        self.p99_vs_straightline = widen(self.p99_vs_straightline, p99_ratio);
        self.cost_vs_lambda_only = widen(self.cost_vs_lambda_only, cost_ratio);
        self.seeds += 1;
        self.failures_at_most_1_percent += u32::from(verdict.failures_at_most_1_percent);
        self.p99_within_slo += u32::from(verdict.p99_within_slo == Some(true));
        self.under_half_lambda_cost += u32::from(verdict.under_half_lambda_cost);
        self.beats_straightline += u32::from(verdict.beats_straightline);
    }
}

/// Simulator speed on one workload.
#[derive(Debug, Clone, Serialize)]
pub struct Speed {
    pub workload: String,
    pub policy: String,
    pub requests: u64,
    pub wall_seconds: f64,
    pub microseconds_per_request: f64,
}

/// Everything the bench measured.
#[derive(Debug, Clone, Serialize)]
pub struct SimBenchResults {
    pub date: String,
    pub machine: Machine,
    pub command: String,
    pub profile: String,
    pub quick: bool,
    pub speed: Vec<Speed>,
    pub scenarios: Vec<ScenarioResult>,
}

const POLICY_FILES: [&str; 4] = [
    "config/straightline.toml",
    "config/cost-aware.toml",
    "config/balanced.toml",
    "config/latency-first.toml",
];
const BASELINES: [&str; 3] = ["static:local", "static:container", "static:lambda"];

fn policies(profile: &Profile) -> Result<Vec<PolicyRun>, BenchError> {
    let mut runs = Vec::new();
    for file in POLICY_FILES {
        runs.push(PolicyRun::from_file(Path::new(file), profile).map_err(sim_error)?);
    }
    for spec in BASELINES {
        runs.push(PolicyRun::from_spec(spec, profile).map_err(sim_error)?);
    }
    Ok(runs)
}

fn sim_error(error: switchyard_scheduler::sim::SimError) -> BenchError {
    BenchError::Other(error.to_string())
}

fn options(profile: &Profile, runs: Vec<PolicyRun>, scenario: &Scenario, seed: u64) -> SimOptions {
    SimOptions {
        profile: profile.clone(),
        policies: runs,
        phases: scenario.phases.clone(),
        schedule: scenario.what.clone(),
        poisson: scenario.poisson,
        max_requests: None,
        models: vec![(scenario.model.to_owned(), 1.0)],
        seed,
        bucket: Duration::from_secs(10),
    }
}

/// The simulator profile at `path`, or the built-in default, with the name
/// the reports give it.
pub(crate) fn load_profile(path: Option<&Path>) -> Result<(Profile, String), BenchError> {
    Ok(match path {
        Some(path) => (
            Profile::load(path).map_err(|e| BenchError::Other(e.to_string()))?,
            path.display().to_string(),
        ),
        None => (
            Profile::default_profile().map_err(|e| BenchError::Other(e.to_string()))?,
            "config/profiles/default.toml".to_owned(),
        ),
    })
}

/// Runs the benchmark and writes its files.
pub fn run_sim_bench(options_in: &SimBenchOptions) -> Result<SimBenchResults, BenchError> {
    let machine = Machine::describe();
    let (profile, profile_name) = load_profile(options_in.profile.as_deref())?;
    let mut scenarios = vec![
        Scenario {
            name: "paper",
            what: "the paper's ramp at full scale, 10 -> 7,000 requests per 180 s (0.06 -> 38.9/s)"
                .into(),
            phases: Phases::paper(),
            poisson: false,
            model: "xception",
        },
        Scenario {
            name: "burst",
            what: "Poisson bursts: 5/s, 30 s at 60/s, 5/s, 20 s at 120/s, 5/s (200 s)".into(),
            phases: burst_phases()?,
            poisson: true,
            model: "xception",
        },
    ];
    if !options_in.quick {
        scenarios.push(Scenario {
            name: "paper-x3",
            what:
                "the paper's ramp x3 (0.17 -> 117/s): near the capacity of all three tiers together"
                    .into(),
            phases: Phases::paper().scaled(3.0)?,
            poisson: true,
            model: "xception",
        });
    }
    let mut results = Vec::new();
    for scenario in &scenarios {
        progress(&format!("simulating {}: {}", scenario.name, scenario.what));
        let output = options(&profile, policies(&profile)?, scenario, 1)
            .run()
            .map_err(sim_error)?;
        let verdicts = verdicts(&output.runs, &profile, scenario.model)?;
        let plot = options_in.out.join(format!("sim-{}.svg", scenario.name));
        switchyard_scheduler::sim::plot::write_svg(&output, &plot).map_err(sim_error)?;
        progress(&format!("wrote {}", plot.display()));
        let seeds = if options_in.quick { 3 } else { SEEDS };
        let seeds = tally_seeds(&profile, scenario, (&output, &verdicts), seeds)?;
        results.push(ScenarioResult {
            name: scenario.name.to_owned(),
            what: scenario.what.clone(),
            output,
            verdicts,
            seeds,
        });
    }
    let speed = measure_speed(&profile, options_in.quick)?;
    Ok(SimBenchResults {
        date: utc_now(),
        machine,
        command: options_in.command.clone(),
        profile: profile_name,
        quick: options_in.quick,
        speed,
        scenarios: results,
    })
}

/// Seeds each scenario is replayed with for the tally (1 is the main run).
const SEEDS: u64 = 10;

/// Counts, per policy, the seeds in which each target held: seed 1 from
/// `first` (the main run, with its `verdicts`), seeds 2 to `seeds` replayed.
fn tally_seeds(
    profile: &Profile,
    scenario: &Scenario,
    first: (&SimOutput, &[Verdict]),
    seeds: u64,
) -> Result<Vec<SeedTally>, BenchError> {
    let mut tallies: Vec<SeedTally> = Vec::new();
    tally_run(&mut tallies, first.0, first.1);
    for seed in 2..=seeds {
        let output = options(profile, policies(profile)?, scenario, seed)
            .run()
            .map_err(sim_error)?;
        let verdicts = verdicts(&output.runs, profile, scenario.model)?;
        tally_run(&mut tallies, &output, &verdicts);
    }
    Ok(tallies)
}

/// Adds one seed's run of every policy to `tallies`.
fn tally_run(tallies: &mut Vec<SeedTally>, output: &SimOutput, verdicts: &[Verdict]) {
    let find = |label: &str| output.runs.iter().find(|r| r.label == label);
    let (Some(straightline), Some(lambda)) = (find("straightline"), find("lambda-only")) else {
        return;
    };
    for verdict in verdicts {
        let Some(run) = find(&verdict.policy) else {
            continue;
        };
        let p99_ratio = run.latency_ms.p99 / straightline.latency_ms.p99;
        let cost_ratio = run.cost_dollars / lambda.cost_dollars;
        let index = match tallies.iter().position(|t| t.policy == verdict.policy) {
            Some(index) => index,
            None => {
                tallies.push(SeedTally {
                    policy: verdict.policy.clone(),
                    ..SeedTally::default()
                });
                tallies.len() - 1
            }
        };
        tallies[index].add(verdict, p99_ratio, cost_ratio);
    }
}

/// Wall time of the paper's ramp and of about a million requests, with
/// the policy that does the most work per request (adaptive).
fn measure_speed(profile: &Profile, quick: bool) -> Result<Vec<Speed>, BenchError> {
    let adaptive =
        PolicyRun::from_file(Path::new("config/cost-aware.toml"), profile).map_err(sim_error)?;
    let straightline =
        PolicyRun::from_file(Path::new("config/straightline.toml"), profile).map_err(sim_error)?;
    // fashion_cnn's ramp scaled so that all tiers together can carry it:
    // a million requests that are mostly served, not refused.
    let million = if quick { 29.0 } else { 286.0 };
    let workloads = [
        (
            "paper ramp, xception (3,505 requests)",
            Phases::paper(),
            "xception",
            false,
        ),
        (
            if quick {
                "paper ramp x29, fashion_cnn (~100,000 requests)"
            } else {
                "paper ramp x286, fashion_cnn (~1,000,000 requests)"
            },
            Phases::paper().scaled(million)?,
            "fashion_cnn",
            true,
        ),
    ];
    let mut speed = Vec::new();
    for (what, phases, model, poisson) in workloads {
        for policy in [&adaptive, &straightline] {
            let scenario = Scenario {
                name: "speed",
                what: what.to_owned(),
                phases: phases.clone(),
                poisson,
                model,
            };
            let opts = options(profile, vec![policy.clone()], &scenario, 1);
            // Best of three: the machine is shared.
            let mut best: Option<(u64, f64)> = None;
            for _ in 0..3 {
                let started = Instant::now();
                let output = opts.run().map_err(sim_error)?;
                let wall = started.elapsed().as_secs_f64();
                let requests = output.runs.iter().map(|r| r.requests).sum();
                if best.is_none_or(|(_, w)| wall < w) {
                    best = Some((requests, wall));
                }
            }
            if let Some((requests, wall)) = best {
                progress(&format!(
                    "speed: {what}, {}: {requests} requests in {wall:.3} s",
                    policy.label
                ));
                speed.push(Speed {
                    workload: what.to_owned(),
                    policy: policy.label.clone(),
                    requests,
                    wall_seconds: wall,
                    microseconds_per_request: wall / requests.max(1) as f64 * 1e6,
                });
            }
        }
    }
    Ok(speed)
}

/// Tolerance under which two numbers count as a tie: 2% relative, or
/// 0.1 percentage point of failure rate.
fn compare(ours: f64, theirs: f64, absolute: f64) -> &'static str {
    let margin = (theirs.abs() * 0.02).max(absolute);
    if ours < theirs - margin {
        "better"
    } else if ours > theirs + margin {
        "worse"
    } else {
        "tie"
    }
}

/// What the targets judge of one run, live or simulated.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RunOutcome<'a> {
    pub(crate) label: &'a str,
    pub(crate) failure_rate: f64,
    pub(crate) p99_ms: f64,
    pub(crate) cost_dollars: f64,
}

fn verdicts(
    runs: &[SimReport],
    profile: &Profile,
    model: &str,
) -> Result<Vec<Verdict>, BenchError> {
    let outcomes: Vec<RunOutcome<'_>> = runs.iter().map(RunOutcome::simulated).collect();
    judge(&outcomes, |label| slo_of(label, profile, model))
}

impl<'a> RunOutcome<'a> {
    /// What the targets judge of a simulated run.
    pub(crate) fn simulated(run: &'a SimReport) -> Self {
        Self {
            label: &run.label,
            failure_rate: run.failure_rate,
            p99_ms: run.latency_ms.p99,
            cost_dollars: run.cost_dollars,
        }
    }
}

/// Each policy run (not a `*-only` baseline, not straightline) against the
/// issue's targets; `slo` gives a run's p99 SLO for the model, if it has
/// one. Empty without the straightline, local-only and Lambda-only runs
/// to compare with.
pub(crate) fn judge(
    runs: &[RunOutcome<'_>],
    slo: impl Fn(&str) -> Result<Option<f64>, BenchError>,
) -> Result<Vec<Verdict>, BenchError> {
    let find = |label: &str| runs.iter().find(|r| r.label == label);
    let (Some(straightline), Some(local), Some(lambda)) = (
        find("straightline"),
        find("local-only"),
        find("lambda-only"),
    ) else {
        return Ok(Vec::new());
    };
    let mut verdicts = Vec::new();
    for run in runs
        .iter()
        .filter(|r| !r.label.ends_with("-only") && r.label != "straightline")
    {
        let slo = slo(run.label)?;
        let vs_straightline = vec![
            (
                "failure rate".to_owned(),
                compare(run.failure_rate, straightline.failure_rate, 0.001),
            ),
            (
                "p99".to_owned(),
                compare(run.p99_ms, straightline.p99_ms, 0.0),
            ),
            (
                "cost".to_owned(),
                compare(run.cost_dollars, straightline.cost_dollars, 0.0),
            ),
        ];
        let better = vs_straightline
            .iter()
            .filter(|(_, v)| *v == "better")
            .count();
        let worse = vs_straightline
            .iter()
            .filter(|(_, v)| *v == "worse")
            .count();
        verdicts.push(Verdict {
            policy: run.label.to_owned(),
            failures_at_most_1_percent: run.failure_rate <= 0.01,
            p99_within_slo: slo.map(|slo| run.p99_ms <= slo),
            slo_p99_ms: slo,
            local_only_fails_20_percent: local.failure_rate >= 0.2,
            under_half_lambda_cost: run.cost_dollars < 0.5 * lambda.cost_dollars,
            vs_straightline,
            beats_straightline: better >= 2 && worse == 0,
        });
    }
    Ok(verdicts)
}

/// The `slo_p99_ms` the policy file gives `model`, if it is adaptive.
fn slo_of(label: &str, profile: &Profile, model: &str) -> Result<Option<f64>, BenchError> {
    let path = POLICY_FILES
        .iter()
        .find(|f| Path::new(f).file_stem().is_some_and(|s| s == label));
    let Some(path) = path else { return Ok(None) };
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        context: "cannot read the policy file",
        path: PathBuf::from(path),
        source,
    })?;
    let file = switchyard_scheduler::policy::spec::PolicyFile::parse(&text)
        .map_err(|e| BenchError::Other(e.to_string()))?;
    let spec = file.models.get(model).or(file.default.as_ref());
    let _ = profile;
    Ok(match spec {
        Some(switchyard_scheduler::policy::spec::PolicySpec::Adaptive { slo_p99_ms, .. }) => {
            Some(*slo_p99_ms)
        }
        _ => None,
    })
}

/// The targets table of `verdicts`, with its heading line.
pub(crate) fn verdict_table(verdicts: &[Verdict]) -> String {
    use std::fmt::Write as _;
    let mut out = String::from(
        "Against the issue's targets (ties within 2%, or 0.1 point of failure rate):\n\n| policy | failures ≤ 1% | p99 within SLO | local-only fails ≥ 20% here | cost < ½ Lambda-only | vs straightline (failure, p99, cost) | beats straightline on two, loses on none |\n|---|---|---|---|---|---|---|\n",
    );
    for v in verdicts {
        let slo = match (v.p99_within_slo, v.slo_p99_ms) {
            (Some(ok), Some(slo)) => format!("{} (SLO {slo:.0} ms)", yes(ok)),
            _ => "no SLO".into(),
        };
        let versus = v
            .vs_straightline
            .iter()
            .map(|(_, r)| *r)
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} | {} |",
            v.policy,
            yes(v.failures_at_most_1_percent),
            slo,
            if v.local_only_fails_20_percent {
                "yes"
            } else {
                "no"
            },
            yes(v.under_half_lambda_cost),
            versus,
            yes(v.beats_straightline)
        );
    }
    out
}

fn yes(ok: bool) -> &'static str {
    if ok { "yes" } else { "**no**" }
}

/// The whole `sim.md`.
pub fn document(results: &SimBenchResults) -> String {
    use std::fmt::Write as _;
    let mut out = String::from("# Simulated placement benchmark\n\n");
    let m = &results.machine;
    let _ = writeln!(out, "- Date: {}", results.date);
    let _ = writeln!(
        out,
        "- Machine: {} CPUs, {}, Linux {}; load average at start {}",
        m.nproc, m.cpu_model, m.kernel, m.load_average_at_start
    );
    let _ = writeln!(out, "- Command: `{}`", results.command);
    let _ = writeln!(
        out,
        "- Profile: `{}`; every policy of a scenario replays the same arrivals (seed 1 in the main tables; the seed tally of each scenario replays it with seeds 1 to 10, 1 to 3 with --quick). Policies: {}; baselines {}",
        results.profile,
        POLICY_FILES.map(|f| format!("`{f}`")).join(", "),
        BASELINES.map(|b| format!("`{b}`")).join(", ")
    );
    out.push_str(
        "- Baselines deploy only their tier (as config/local-only.toml does); the policies run over all three. Costs: Lambda per request and GB-second as billed, containers per second alive (the pool keeps `min_containers` running), the local machine 0 (already paid for).\n\n",
    );
    out.push_str("## Simulator speed\n\n| workload | policy | requests | wall time s | µs per request |\n|---|---|---:|---:|---:|\n");
    for s in &results.speed {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {:.3} | {:.2} |",
            s.workload, s.policy, s.requests, s.wall_seconds, s.microseconds_per_request
        );
    }
    out.push_str("\nBest of three runs each, release build, one thread.\n");
    for scenario in &results.scenarios {
        let _ = write!(
            out,
            "\n## {}: {}\n\nModel {}. Plot: `sim-{}.svg`.\n\n{}",
            scenario.name,
            scenario.what,
            scenario
                .output
                .runs
                .first()
                .map(|r| r.models.join(", "))
                .unwrap_or_default(),
            scenario.name,
            switchyard_scheduler::sim::report::summary_table(&scenario.output.runs)
        );
        out.push('\n');
        out.push_str(&verdict_table(&scenario.verdicts));
        if let Some(first) = scenario.seeds.first() {
            let _ = write!(
                out,
                "\nThe same scenario with seeds 1 to {}: in how many each target held, and the range of the ratios:\n\n| policy | failures ≤ 1% | p99 within SLO | cost < ½ Lambda-only | beats straightline | p99 ÷ straightline's | cost ÷ Lambda-only's |\n|---|---:|---:|---:|---:|---|---|\n",
                first.seeds
            );
            for t in &scenario.seeds {
                let _ = writeln!(
                    out,
                    "| {} | {} of {n} | {} of {n} | {} of {n} | {} of {n} | {:.3} – {:.3} | {:.3} – {:.3} |",
                    t.policy,
                    t.failures_at_most_1_percent,
                    t.p99_within_slo,
                    t.under_half_lambda_cost,
                    t.beats_straightline,
                    t.p99_vs_straightline.0,
                    t.p99_vs_straightline.1,
                    t.cost_vs_lambda_only.0,
                    t.cost_vs_lambda_only.1,
                    n = t.seeds
                );
            }
        }
        let _ = write!(
            out,
            "\n{}",
            switchyard_scheduler::sim::report::shares_table(&scenario.output.runs)
        );
    }
    out.push_str(
        "\nCosts are of the whole run; `$ per 1k` divides by all requests, failed ones included. One machine's worth of load costs little in dollars: compare the ratios.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_tally_counts_the_targets_held_and_spans_the_ratios() {
        let verdict = |beats: bool, slo: bool| Verdict {
            policy: "balanced".into(),
            failures_at_most_1_percent: true,
            p99_within_slo: Some(slo),
            slo_p99_ms: Some(250.0),
            local_only_fails_20_percent: true,
            under_half_lambda_cost: beats,
            vs_straightline: Vec::new(),
            beats_straightline: beats,
        };
        let mut tally = SeedTally::default();
        tally.add(&verdict(true, true), 0.97, 0.47);
        tally.add(&verdict(false, true), 1.01, 0.55);
        tally.add(&verdict(true, false), 0.95, 0.46);
        assert_eq!(tally.seeds, 3);
        assert_eq!(tally.failures_at_most_1_percent, 3);
        assert_eq!(tally.p99_within_slo, 2);
        assert_eq!(tally.beats_straightline, 2);
        assert_eq!(tally.under_half_lambda_cost, 2);
        assert_eq!(tally.p99_vs_straightline, (0.95, 1.01));
        assert_eq!(tally.cost_vs_lambda_only, (0.46, 0.55));
    }

    #[test]
    fn comparisons_tolerate_small_differences() {
        assert_eq!(compare(100.0, 103.0, 0.0), "better");
        assert_eq!(compare(100.0, 101.0, 0.0), "tie");
        assert_eq!(compare(0.0, 0.0, 0.001), "tie");
        assert_eq!(compare(0.05, 0.0, 0.001), "worse");
    }
}
