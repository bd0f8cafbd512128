//! The pure half of `switchyard-bench paper`: the results' types, the
//! requests of a run bucketed into load levels along the ramp, the point
//! where a placement starts failing, and the Markdown page. No I/O here;
//! `paper.rs` runs the gateways and fills these in.

use std::fmt::Write as _;

use hdrhistogram::Histogram;
use serde::Serialize;
use switchyard_loadgen::{Outcome, Report, Sample};
use switchyard_scheduler::sim::SimOutput;

use crate::machine::Machine;
use crate::paper::{IDLE_CORES, SETTLE, SETTLE_BUDGET, SETTLE_MAX};
use crate::raw::histogram;

/// Failure share above which a load level counts as failing (the issue's
/// "starts failing").
pub const FAILING_SHARE: f64 = 0.01;

/// One load level: the requests due in `[start_s, end_s)` of the ramp.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct LoadBucket {
    pub start_s: f64,
    pub end_s: f64,
    /// Requests due in the bucket (by intended send time).
    pub due: u64,
    /// Requests due per second of the bucket.
    pub offered_per_s: f64,
    pub succeeded: u64,
    /// Every request that did not get a 2xx: refused (429), 5xx, timed
    /// out, broken, or dropped by the client.
    pub failed: u64,
    pub failure_rate: f64,
    /// Latency of the 2xx, from the intended send time; `None` when none.
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    /// The 2xx by the backend that served them (the `switchyard-backend`
    /// header), in order of the backend's first answer in the run.
    pub served_by: Vec<(String, u64)>,
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

/// Splits `[0, span_s)` into `count` equal buckets and puts each request
/// into the bucket of its intended send time (late ones into the last).
/// `backends` names the samples' backend ids
/// ([`switchyard_loadgen::Recorder::backend_names`]).
pub fn bucket_samples(
    samples: &[Sample],
    backends: &[String],
    span_s: f64,
    count: usize,
) -> Vec<LoadBucket> {
    let count = count.max(1);
    let width = span_s.max(1e-9) / count as f64;
    let mut due = vec![0_u64; count];
    let mut succeeded = vec![0_u64; count];
    let mut served = vec![vec![0_u64; backends.len()]; count];
    let mut latency: Vec<Histogram<u64>> = (0..count).map(|_| histogram()).collect();
    for sample in samples {
        let at = sample.intended_offset_us as f64 / 1e6;
        let index = ((at / width) as usize).min(count - 1);
        due[index] += 1;
        if sample.outcome == Outcome::Success {
            succeeded[index] += 1;
            latency[index].saturating_record(sample.latency_us.max(1));
            if let Some(slot) = sample
                .backend
                .and_then(|id| served[index].get_mut(usize::from(id.0)))
            {
                *slot += 1;
            }
        }
    }
    (0..count)
        .map(|i| {
            let failed = due[i] - succeeded[i];
            let h = &latency[i];
            LoadBucket {
                start_s: width * i as f64,
                end_s: width * (i + 1) as f64,
                due: due[i],
                offered_per_s: due[i] as f64 / width,
                succeeded: succeeded[i],
                failed,
                failure_rate: if due[i] == 0 {
                    0.0
                } else {
                    failed as f64 / due[i] as f64
                },
                p50_ms: (!h.is_empty()).then(|| ms(h.value_at_quantile(0.5))),
                p99_ms: (!h.is_empty()).then(|| ms(h.value_at_quantile(0.99))),
                served_by: backends
                    .iter()
                    .zip(&served[i])
                    .filter(|(_, n)| **n > 0)
                    .map(|(name, n)| (name.clone(), *n))
                    .collect(),
            }
        })
        .collect()
}

/// The first bucket (with requests) whose failure rate is over 1% or
/// whose p99 is over `slo_p99_ms`: where the placement starts failing.
pub fn saturation(buckets: &[LoadBucket], slo_p99_ms: f64) -> Option<usize> {
    buckets.iter().position(|b| {
        b.due > 0 && (b.failure_rate > FAILING_SHARE || b.p99_ms.is_some_and(|p| p > slo_p99_ms))
    })
}

/// Median latency (ms) of the 2xx due at or after `from_s`.
pub fn median_from(samples: &[Sample], from_s: f64) -> Option<f64> {
    let mut h = histogram();
    for s in samples {
        if s.outcome == Outcome::Success && s.intended_offset_us as f64 / 1e6 >= from_s {
            h.saturating_record(s.latency_us.max(1));
        }
    }
    (!h.is_empty()).then(|| ms(h.value_at_quantile(0.5)))
}

/// The buckets of a simulated run, in the live runs' terms.
pub fn sim_buckets(run: &switchyard_scheduler::sim::SimReport) -> Vec<LoadBucket> {
    run.buckets
        .iter()
        .map(|b| {
            let succeeded = b.served.iter().sum::<u64>();
            LoadBucket {
                start_s: b.start_s,
                end_s: b.end_s,
                due: b.arrivals,
                offered_per_s: b.offered_per_s,
                succeeded,
                failed: b.failed,
                failure_rate: b.failure_rate,
                p50_ms: (succeeded > 0).then_some(b.p50_ms),
                p99_ms: (succeeded > 0).then_some(b.p99_ms),
                served_by: run
                    .backends
                    .iter()
                    .zip(&b.served)
                    .filter(|(_, n)| **n > 0)
                    .map(|(backend, n)| (backend.name.clone(), *n))
                    .collect(),
            }
        })
        .collect()
}

/// How the paper's ramp was scaled for one model.
#[derive(Debug, Clone, Serialize)]
pub struct Scale {
    pub model: String,
    /// The paper's rates are multiplied by this.
    pub rate_factor: f64,
    /// The paper ramps over 180 s; this run over this many seconds.
    pub ramp_s: f64,
    pub from_per_s: f64,
    pub to_per_s: f64,
    pub expected_requests: f64,
    /// The p99 target a bucket is judged by (the model's SLO in
    /// config/cost-aware.toml).
    pub slo_p99_ms: f64,
    pub buckets: usize,
}

impl Scale {
    /// A rate of this run as the paper's x axis counts it: sessions per
    /// 180 s at the unscaled rate.
    pub fn paper_sessions(&self, rate_per_s: f64) -> f64 {
        rate_per_s / self.rate_factor * 180.0
    }
}

/// One placement's live run.
#[derive(Debug, Clone, Serialize)]
pub struct PlacementRun {
    pub placement: String,
    /// Why the run could not be made, if it could not.
    pub error: Option<String>,
    /// `/proc/loadavg` just before the load started.
    pub load_average_before: String,
    /// Cores the whole machine was busy on over the last second of the wait
    /// for an idle machine before the run (`None` if not measured). Unlike
    /// the load average, which trails by minutes, this is the machine now.
    pub busy_cores_before: Option<f64>,
    pub due: u64,
    pub succeeded: u64,
    pub failed: u64,
    pub failure_rate: f64,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub buckets: Vec<LoadBucket>,
    /// Index of the first failing bucket (see [`saturation`]).
    pub saturation_bucket: Option<usize>,
    /// Successful (2xx) requests by the backend that served them (the
    /// `switchyard-backend` response header).
    pub served_by: Vec<(String, u64)>,
    /// The load generator's whole report (with its 1 s time series).
    pub report: Option<Report>,
    /// What the paid tiers cost over the gateway's life for the run (its
    /// warm-up included), as it estimates it (`cost_dollars` of each
    /// backend in its stats: Lambda's billed invocations, the container
    /// pool's container-seconds), `None` when the stats could not be read.
    pub cost_dollars: Option<f64>,
    /// The container tier's replaced workers, when the placement has one.
    pub container_deaths: Option<ContainerDeaths>,
    /// Every request (kept for the analysis, not written out).
    #[serde(skip)]
    pub samples: Option<Vec<Sample>>,
}

impl PlacementRun {
    /// A run that could not be made.
    pub fn failed(placement: &str, load_average_before: String, error: String) -> Self {
        Self {
            placement: placement.to_owned(),
            error: Some(error),
            load_average_before,
            busy_cores_before: None,
            due: 0,
            succeeded: 0,
            failed: 0,
            failure_rate: 0.0,
            p50_ms: None,
            p99_ms: None,
            buckets: Vec::new(),
            saturation_bucket: None,
            served_by: Vec::new(),
            report: None,
            cost_dollars: None,
            container_deaths: None,
            samples: None,
        }
    }

    /// A finished run from its samples and report.
    pub fn measured(
        placement: &str,
        load_average_before: String,
        samples: &[Sample],
        backends: &[String],
        report: Report,
        scale: &Scale,
    ) -> Self {
        let buckets = bucket_samples(samples, backends, scale.ramp_s, scale.buckets);
        let due = samples.len() as u64;
        let succeeded = samples
            .iter()
            .filter(|s| s.outcome == Outcome::Success)
            .count() as u64;
        let all = median_and_p99(samples);
        Self {
            placement: placement.to_owned(),
            error: None,
            load_average_before,
            busy_cores_before: None,
            due,
            succeeded,
            failed: due - succeeded,
            failure_rate: if due == 0 {
                0.0
            } else {
                (due - succeeded) as f64 / due as f64
            },
            p50_ms: all.map(|(p50, _)| p50),
            p99_ms: all.map(|(_, p99)| p99),
            saturation_bucket: saturation(&buckets, scale.slo_p99_ms),
            buckets,
            served_by: served_by(&report),
            report: Some(report),
            cost_dollars: None,
            container_deaths: None,
            samples: None,
        }
    }
}

/// Successful requests by the backend that served them (the
/// `switchyard-backend` response header), backends that served none left out.
pub(crate) fn served_by(report: &Report) -> Vec<(String, u64)> {
    report
        .per_backend
        .iter()
        .map(|(name, group)| (name.clone(), group.counts.success))
        .filter(|(_, served)| *served > 0)
        .collect()
}

/// What became of a run's worker containers, from the gateway's stats: the
/// `deaths` and `out_of_memory_kills` of each container backend in
/// `backend_details`, summed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct ContainerDeaths {
    /// Containers found dead and replaced.
    pub replaced: u64,
    /// Of those, the ones the kernel killed at their memory limit.
    pub out_of_memory: u64,
}

/// [`ContainerDeaths`] of the gateway whose stats these are; `None` when it
/// has no container backend.
pub fn container_deaths(stats: &serde_json::Value) -> Option<ContainerDeaths> {
    let details = stats.get("backend_details")?.as_object()?;
    let count = |pool: &serde_json::Value, key: &str| {
        pool.get(key)
            .and_then(serde_json::Value::as_u64)
            .unwrap_or(0)
    };
    details
        .values()
        .filter(|pool| pool.get("out_of_memory_kills").is_some())
        .map(|pool| ContainerDeaths {
            replaced: count(pool, "deaths"),
            out_of_memory: count(pool, "out_of_memory_kills"),
        })
        .reduce(|a, b| ContainerDeaths {
            replaced: a.replaced + b.replaced,
            out_of_memory: a.out_of_memory + b.out_of_memory,
        })
}

/// One line under a live table: how many worker containers each placement
/// with a container tier had replaced, and how many of those the kernel
/// killed for memory (whose requests were failed over or failed); `None`
/// when no placement ran containers.
pub fn container_deaths_line<'a>(
    runs: impl IntoIterator<Item = (&'a str, Option<ContainerDeaths>)>,
) -> Option<String> {
    let parts: Vec<String> = runs
        .into_iter()
        .filter_map(|(placement, deaths)| {
            deaths.map(|d| format!("{placement} {} ({})", d.replaced, d.out_of_memory))
        })
        .collect();
    (!parts.is_empty()).then(|| {
        format!(
            "Worker containers replaced during the run (of them, killed at their memory limit): {}.\n",
            parts.join(", ")
        )
    })
}

/// The cost the gateway's stats report: the sum of every backend's
/// `cost_dollars` in `backend_details` (the local tier reports none).
pub fn backends_cost(stats: &serde_json::Value) -> Option<f64> {
    let details = stats.get("backend_details")?.as_object()?;
    // A fold from +0: an empty f64 sum is -0, which prints as "-0".
    Some(
        details
            .values()
            .filter_map(|d| d.get("cost_dollars").and_then(serde_json::Value::as_f64))
            .fold(0.0, |total, cost| total + cost),
    )
}

fn median_and_p99(samples: &[Sample]) -> Option<(f64, f64)> {
    let mut h = histogram();
    for s in samples.iter().filter(|s| s.outcome == Outcome::Success) {
        h.saturating_record(s.latency_us.max(1));
    }
    (!h.is_empty()).then(|| (ms(h.value_at_quantile(0.5)), ms(h.value_at_quantile(0.99))))
}

/// Where local-only started failing.
#[derive(Debug, Clone, Serialize)]
pub struct SaturationPoint {
    pub bucket: usize,
    pub from_s: f64,
    pub offered_per_s: f64,
    /// The same load in the paper's units (sessions per 180 s, unscaled).
    pub paper_sessions_per_180s: f64,
    pub failure_rate: f64,
    pub p99_ms: Option<f64>,
}

/// The simulator's replay of the paper's ramp at full scale.
#[derive(Debug, Clone, Serialize)]
pub struct SimReplay {
    pub profile: String,
    /// Local-only's first failing bucket in the simulation.
    pub local_saturation: Option<SaturationPoint>,
    pub output: SimOutput,
}

/// Everything measured for one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelResults {
    pub model: String,
    pub scale: Scale,
    pub runs: Vec<PlacementRun>,
    pub local_saturation: Option<SaturationPoint>,
    /// Lambda-only's median from local-only's saturation point on (the
    /// upper half of the ramp if local-only never failed).
    pub lambda_median_under_load_ms: Option<f64>,
    pub lambda_median_from_s: Option<f64>,
    pub sim: Option<SimReplay>,
}

/// The whole benchmark.
#[derive(Debug, Clone, Serialize)]
pub struct PaperResults {
    pub date: String,
    pub machine: Machine,
    pub load_average_at_end: String,
    pub command: String,
    pub quick: bool,
    pub wall_seconds: f64,
    pub models: Vec<ModelResults>,
}

/// The runs that could not be made, as "model / placement: why".
pub fn not_run(models: &[ModelResults]) -> Vec<String> {
    models
        .iter()
        .flat_map(|model| {
            model.runs.iter().filter_map(|run| {
                run.error
                    .as_ref()
                    .map(|error| format!("{} / {}: {error}", model.model, run.placement))
            })
        })
        .collect()
}

/// The saturation point of `run`'s buckets, in both units.
pub fn saturation_point(
    buckets: &[LoadBucket],
    index: usize,
    scale: &Scale,
) -> Option<SaturationPoint> {
    let b = buckets.get(index)?;
    Some(SaturationPoint {
        bucket: index,
        from_s: b.start_s,
        offered_per_s: b.offered_per_s,
        paper_sessions_per_180s: scale.paper_sessions(b.offered_per_s),
        failure_rate: b.failure_rate,
        p99_ms: b.p99_ms,
    })
}

fn opt_ms(value: Option<f64>) -> String {
    match value {
        Some(v) if v >= 100.0 => format!("{v:.0}"),
        Some(v) if v >= 10.0 => format!("{v:.1}"),
        Some(v) => format!("{v:.2}"),
        None => "–".into(),
    }
}

fn percent(share: f64) -> String {
    if share == 0.0 {
        "0%".into()
    } else if share < 0.001 {
        "<0.1%".into()
    } else {
        format!("{:.1}%", share * 100.0)
    }
}

/// Who served the 2xx, as shares of all the run's requests (the rest
/// failed).
fn served_shares(run: &PlacementRun) -> String {
    let mut parts: Vec<String> = run
        .served_by
        .iter()
        .filter(|(_, n)| *n > 0)
        .map(|(name, n)| format!("{name} {}", percent(*n as f64 / run.due.max(1) as f64)))
        .collect();
    if run.failed > 0 {
        parts.push(format!("failed {}", percent(run.failure_rate)));
    }
    parts.join(", ")
}

/// The summary table of one model's live runs.
pub fn summary_table(model: &ModelResults) -> String {
    let mut out = String::from(
        "| placement | requests | failed | p50 ms | p99 ms | cost | starts failing at (bucket: offered/s, ≈ paper sessions/180 s) | served by (share of all requests) |\n|---|---:|---:|---:|---:|---:|---|---|\n",
    );
    for run in &model.runs {
        if let Some(error) = &run.error {
            let _ = writeln!(
                out,
                "| {} | – | – | – | – | – | not run: {} | – |",
                run.placement,
                error.replace('|', "/").lines().next().unwrap_or("")
            );
            continue;
        }
        let starts = match run
            .saturation_bucket
            .and_then(|i| saturation_point(&run.buckets, i, &model.scale))
        {
            Some(p) => format!(
                "#{} ({:.1}/s, ≈{:.0})",
                p.bucket + 1,
                p.offered_per_s,
                p.paper_sessions_per_180s
            ),
            None => "never".into(),
        };
        let shares = served_shares(run);
        let cost = run
            .cost_dollars
            .map_or_else(|| "–".to_owned(), |c| format!("${c:.6}"));
        let _ = writeln!(
            out,
            "| {} | {} | {} ({}) | {} | {} | {} | {} | {} |",
            run.placement,
            run.due,
            run.failed,
            percent(run.failure_rate),
            opt_ms(run.p50_ms),
            opt_ms(run.p99_ms),
            cost,
            starts,
            shares
        );
    }
    if let Some(line) = container_deaths_line(
        model
            .runs
            .iter()
            .map(|run| (run.placement.as_str(), run.container_deaths)),
    ) {
        out.push('\n');
        out.push_str(&line);
    }
    out
}

/// A table along the ramp with one column per placement that ran: `head`
/// and `align` are the leading columns, `row` writes them for a bucket,
/// `cell` a placement's cell for bucket `i`.
fn per_placement_table(
    model: &ModelResults,
    (head, align): (&str, &str),
    row: impl Fn(usize, &LoadBucket) -> String,
    cell: impl Fn(&PlacementRun, usize, &LoadBucket) -> String,
) -> String {
    let runs: Vec<&PlacementRun> = model.runs.iter().filter(|r| r.error.is_none()).collect();
    let mut out = String::from(head);
    for run in &runs {
        let _ = write!(out, " {} |", run.placement);
    }
    out.push('\n');
    out.push_str(align);
    for _ in &runs {
        out.push_str("---|");
    }
    out.push('\n');
    let Some(first) = runs.first() else {
        return out;
    };
    for (i, bucket) in first.buckets.iter().enumerate() {
        out.push_str(&row(i, bucket));
        for run in &runs {
            let text = run
                .buckets
                .get(i)
                .map_or_else(|| "–".to_owned(), |b| cell(run, i, b));
            let _ = write!(out, " {text} |");
        }
        out.push('\n');
    }
    out
}

/// Response time and failures along the ramp, one column per placement.
pub fn ramp_table(model: &ModelResults) -> String {
    per_placement_table(
        model,
        (
            "| bucket | s | offered/s | ≈ paper sessions/180 s |",
            "|---:|---|---:|---:|",
        ),
        |i, bucket| {
            format!(
                "| {} | {:.0}–{:.0} | {:.1} | {:.0} |",
                i + 1,
                bucket.start_s,
                bucket.end_s,
                bucket.offered_per_s,
                model.scale.paper_sessions(bucket.offered_per_s)
            )
        },
        |run, i, b| {
            let mark = if run.saturation_bucket == Some(i) {
                " **←**"
            } else {
                ""
            };
            format!(
                "{} / {} · {}{mark}",
                opt_ms(b.p50_ms),
                opt_ms(b.p99_ms),
                percent(b.failure_rate)
            )
        },
    )
}

/// The letter of a backend in the shares table, as the simulator's table
/// writes its tiers; other names as they are.
fn backend_symbol(name: &str) -> &str {
    match name {
        "local" => "L",
        "container" => "C",
        "lambda" => "λ",
        other => other,
    }
}

/// One bucket's shares: `L 70 C 10 λ 20` (and `F n` for the failed), in %
/// of the bucket's requests; `–` for an empty bucket.
pub fn bucket_shares(bucket: &LoadBucket) -> String {
    if bucket.due == 0 {
        return "–".into();
    }
    let share = |n: u64| n as f64 / bucket.due as f64 * 100.0;
    let mut parts: Vec<String> = bucket
        .served_by
        .iter()
        .map(|(name, n)| format!("{} {:.0}", backend_symbol(name), share(*n)))
        .collect();
    let unnamed = bucket.succeeded - bucket.served_by.iter().map(|(_, n)| n).sum::<u64>();
    if unnamed > 0 {
        parts.push(format!("? {:.0}", share(unnamed)));
    }
    if bucket.failed > 0 {
        parts.push(format!("F {:.0}", share(bucket.failed)));
    }
    parts.join(" ")
}

/// Which backend served each bucket of the live ramp, per placement.
pub fn shares_table(model: &ModelResults) -> String {
    per_placement_table(
        model,
        ("| bucket | offered/s |", "|---:|---:|"),
        |i, bucket| format!("| {} | {:.1} |", i + 1, bucket.offered_per_s),
        |_, _, bucket| bucket_shares(bucket),
    )
}

/// The simulator's replay along the ramp: failure rate and p99 per bucket.
pub fn sim_ramp_table(replay: &SimReplay) -> String {
    let runs = &replay.output.runs;
    let mut out = String::from("| bucket | s | offered/s |");
    for run in runs {
        let _ = write!(out, " {} |", run.label);
    }
    out.push_str("\n|---:|---|---:|");
    for _ in runs {
        out.push_str("---|");
    }
    out.push('\n');
    let Some(first) = runs.first() else {
        return out;
    };
    for (i, bucket) in first.buckets.iter().enumerate() {
        let _ = write!(
            out,
            "| {} | {:.0}–{:.0} | {:.1} |",
            i + 1,
            bucket.start_s,
            bucket.end_s,
            bucket.offered_per_s
        );
        for run in runs {
            let cell = sim_buckets(run).get(i).map_or_else(
                || "–".to_owned(),
                |b| {
                    format!(
                        "{} / {} · {}",
                        opt_ms(b.p50_ms),
                        opt_ms(b.p99_ms),
                        percent(b.failure_rate)
                    )
                },
            );
            let _ = write!(out, " {cell} |");
        }
        out.push('\n');
    }
    out
}

fn find<'a>(model: &'a ModelResults, placement: &str) -> Option<&'a PlacementRun> {
    model
        .runs
        .iter()
        .find(|r| r.placement == placement && r.error.is_none())
}

/// Lowest p50 in the first bucket (the lightest load) among the runs.
fn fastest_at_low_load(model: &ModelResults) -> Option<(&str, f64)> {
    model
        .runs
        .iter()
        .filter(|r| r.error.is_none())
        .filter_map(|r| {
            r.buckets
                .first()
                .and_then(|b| b.p50_ms)
                .map(|p| (r.placement.as_str(), p))
        })
        .min_by(|a, b| a.1.total_cmp(&b.1))
}

/// The measured findings next to the paper's, as sentences.
pub fn findings(model: &ModelResults) -> String {
    let mut out = String::new();
    let scale = &model.scale;
    match &model.local_saturation {
        Some(p) => {
            let _ = writeln!(
                out,
                "- **local-only starts failing** in bucket {} at {:.1} requests/s offered (≈ {:.0} sessions per 180 s in the paper's units; failures {}, p99 {} ms against the {:.0} ms SLO). The paper's local Flask server failed from about 1,200–1,300 sessions per 180 s (≈ 7/s).",
                p.bucket + 1,
                p.offered_per_s,
                p.paper_sessions_per_180s,
                percent(p.failure_rate),
                opt_ms(p.p99_ms),
                scale.slo_p99_ms
            );
        }
        None => {
            let _ = writeln!(
                out,
                "- **local-only never failed** on this ramp (peak {:.1}/s): no bucket over 1% failures or over the {:.0} ms p99 SLO.",
                scale.to_per_s, scale.slo_p99_ms
            );
        }
    }
    if let Some((name, p50)) = fastest_at_low_load(model) {
        let local = find(model, "local-only")
            .and_then(|r| r.buckets.first())
            .and_then(|b| b.p50_ms);
        let _ = writeln!(
            out,
            "- At the lightest load (bucket 1) the fastest median is {name}'s, {} ms{}. The paper: the local Flask API has the lowest response time; Docker and Lambda pay activation overhead.",
            opt_ms(Some(p50)),
            match local {
                Some(l) if name != "local-only" => format!(" (local-only {} ms)", opt_ms(Some(l))),
                _ => String::new(),
            }
        );
    }
    if let Some(lambda) = find(model, "lambda-only") {
        let from = model.lambda_median_from_s.unwrap_or(0.0);
        let _ = writeln!(
            out,
            "- **Lambda-only's median under load** (requests due from {from:.0} s on): {} ms; over the whole run {} ms, failures {}{}. The paper: 300–500 ms median on real Lambda up to 6,000 sessions per 180 s, with up to 60% failures when memory was short.",
            opt_ms(model.lambda_median_under_load_ms),
            opt_ms(lambda.p50_ms),
            percent(lambda.failure_rate),
            lambda
                .saturation_bucket
                .map(|i| format!(", failing from bucket {}", i + 1))
                .unwrap_or_default()
        );
    }
    for name in ["straightline", "adaptive"] {
        let (Some(run), Some(local)) = (find(model, name), find(model, "local-only")) else {
            continue;
        };
        let shares = served_shares(run);
        let _ = writeln!(
            out,
            "- **{name}**: failures {} against local-only's {} (same run), p99 {} ms against {} ms; served by {shares}.",
            percent(run.failure_rate),
            percent(local.failure_rate),
            opt_ms(run.p99_ms),
            opt_ms(local.p99_ms)
        );
    }
    let _ = writeln!(
        out,
        "- Checks against the paper's findings: {}.",
        checks(model)
    );
    out
}

fn yes_no(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "yes",
        Some(false) => "**no**",
        None => "n/a",
    }
}

/// The paper's three findings, each judged on this model's runs.
fn checks(model: &ModelResults) -> String {
    let local = find(model, "local-only");
    let single_tier: Vec<&PlacementRun> = ["container-only", "lambda-only"]
        .iter()
        .filter_map(|name| find(model, name))
        .collect();
    // Fails first: no single-tier placement failed in an earlier bucket
    // (one that never failed counts as later).
    let fails_first = local.and_then(|l| l.saturation_bucket).map(|at| {
        single_tier
            .iter()
            .all(|r| r.saturation_bucket.is_none_or(|other| other >= at))
    });
    let fastest = local
        .and_then(|l| l.buckets.first().and_then(|b| b.p50_ms))
        .map(|mine| {
            single_tier.iter().all(|r| {
                r.buckets
                    .first()
                    .and_then(|b| b.p50_ms)
                    .is_none_or(|other| mine <= other)
            })
        });
    let lambda_band = model
        .lambda_median_under_load_ms
        .map(|m| (300.0..=500.0).contains(&m));
    format!(
        "local-only is the first single tier to fail: {}; local-only has the lowest median at the lightest load: {}; Lambda-only's median under load is within 300–500 ms: {}",
        yes_no(fails_first),
        yes_no(fastest),
        yes_no(lambda_band)
    )
}

/// The tables of one model, as the README and paper.md show them.
pub fn model_section(model: &ModelResults, plot: &str) -> String {
    let s = &model.scale;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {}: live, the paper's rates × {} over {:.0} s ({:.2} → {:.1} requests/s, ≈ {:.0} requests per placement)\n",
        model.model, s.rate_factor, s.ramp_s, s.from_per_s, s.to_per_s, s.expected_requests
    );
    out.push_str(&summary_table(model));
    let _ = writeln!(
        out,
        "\nAlong the ramp ({} buckets of {:.0} s by intended send time; each cell: p50 / p99 ms of the 2xx · share of requests failed; **←** marks the first bucket over 1% failures or over the {:.0} ms p99 SLO). Plot: `{plot}`.\n",
        s.buckets,
        s.ramp_s / s.buckets as f64,
        s.slo_p99_ms
    );
    out.push_str(&ramp_table(model));
    out.push_str(
        "\nServed by, along the ramp (share of each bucket's requests in %: L = local, C = container, λ = lambda, F = failed):\n\n",
    );
    out.push_str(&shares_table(model));
    out.push('\n');
    out.push_str(&findings(model));
    out
}

/// The simulator section of one model.
pub fn sim_section(model: &ModelResults, plot: &str) -> String {
    let Some(replay) = &model.sim else {
        return String::new();
    };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "### {}: simulated, the paper's ramp at full scale (10 → 7,000 per 180 s over 180 s), profile `{}`\n",
        model.model, replay.profile
    );
    out.push_str(&switchyard_scheduler::sim::report::summary_table(
        &replay.output.runs,
    ));
    out.push('\n');
    out.push_str(&sim_ramp_table(replay));
    let _ = writeln!(
        out,
        "\n{} Plot: `{plot}`.\n",
        match &replay.local_saturation {
            Some(p) => format!(
                "Simulated local-only starts failing in bucket {} at {:.1}/s (≈ {:.0} sessions per 180 s).",
                p.bucket + 1,
                p.offered_per_s,
                p.paper_sessions_per_180s
            ),
            None => "Simulated local-only never fails on this ramp.".into(),
        }
    );
    out.push_str(&switchyard_scheduler::sim::report::shares_table(
        &replay.output.runs,
    ));
    out
}

/// The order in which the placements started failing, as a sentence.
fn failing_order(model: &ModelResults) -> String {
    let mut order: Vec<(usize, &str)> = Vec::new();
    let mut never = Vec::new();
    for run in model.runs.iter().filter(|r| r.error.is_none()) {
        match run.saturation_bucket {
            Some(i) => order.push((i, &run.placement)),
            None => never.push(run.placement.as_str()),
        }
    }
    order.sort_by_key(|(i, _)| *i);
    let mut parts: Vec<String> = order
        .iter()
        .map(|(i, name)| format!("{name} (bucket {})", i + 1))
        .collect();
    if !never.is_empty() {
        parts.push(format!("never: {}", never.join(", ")));
    }
    parts.join(" → ")
}

/// The README section (between its markers): the headline tables.
pub fn readme_section(results: &PaperResults) -> String {
    let mut out = String::new();
    let m = &results.machine;
    let _ = writeln!(
        out,
        "Measured {} on {} CPUs ({}), load average {} at the start and {} at the end (the machine was shared: compare placements within a table, not across runs). `{}`; full results in `bench/results/paper.md`.\n",
        results.date,
        m.nproc,
        m.cpu_model,
        m.load_average_at_start,
        results.load_average_at_end,
        results.command
    );
    for model in &results.models {
        let s = &model.scale;
        let _ = writeln!(
            out,
            "**{}**, live: the paper's rates × {} over {:.0} s ({:.2} → {:.1} requests/s). Order of failing: {}.\n",
            model.model,
            s.rate_factor,
            s.ramp_s,
            s.from_per_s,
            s.to_per_s,
            failing_order(model)
        );
        out.push_str(&summary_table(model));
        out.push('\n');
    }
    out
}

/// The whole `paper.md`.
/// The whole page, `paper.md`. `discussion` is the written comparison
/// with the paper (`bench/paper-discussion.md`), placed after the generated
/// findings; it says which run it was written for.
pub fn document(
    results: &PaperResults,
    plots: &[(String, String, String)],
    discussion: Option<&str>,
) -> String {
    let mut out = String::from(
        "# Paper reproduction: the StraightLine experiments, scaled to one 2-core machine\n\n",
    );
    let m = &results.machine;
    let _ = writeln!(
        out,
        "- Date: {}{}",
        results.date,
        if results.quick {
            " (quick run: one model, short ramp, two placements)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "- Machine: {} CPUs, {}, Linux {}; load average {} at the start, {} at the end; the whole run took {:.0} s",
        m.nproc,
        m.cpu_model,
        m.kernel,
        m.load_average_at_start,
        results.load_average_at_end,
        results.wall_seconds
    );
    let _ = writeln!(out, "- Command: `{}`", results.command);
    let first_busy = results
        .models
        .first()
        .and_then(|model| model.runs.first())
        .and_then(|run| run.busy_cores_before);
    out.push_str(&start_condition(first_busy, &m.load_average_at_start));
    out.push_str(
        "Every placement of a model ran back to back in this one run on the same ramp, so compare placements within a table; absolute times are context only.\n\
- Placements: the release gateway, one process per run. `local-only`, `container-only` and `lambda-only` deploy one tier each, set up as `config/local-only.toml`, `config/container-only.toml` and `config/lambda-only.toml` (worker containers of 1 CPU each, 1 to 4 of them; Lambda reserved concurrency 4). `straightline` (`config/straightline.toml`, the paper's Algorithm 1: F = 7 requests/s for xception, 2,000/s for fashion_cnn) and `adaptive` (`config/cost-aware.toml`) place over all three tiers set up the same way. `adaptive` is `cost-aware.toml` rather than `latency-first.toml` because it is the adaptive (SLO- and cost-driven) policy for both models (p99 SLO 1,000 ms for xception, 50 ms otherwise), while `latency-first.toml` runs `least_loaded` for fashion_cnn; its SLO is also the one each bucket is judged by below.\n\
- Lambda is the `cargo lambda` emulator on loopback with one function instance (the workspace's function binary) per unit of reserved concurrency, started before the runs (warm: no cold start in these numbers); containers are real Docker containers built and started by the gateway, one warm at the start.\n\
- Cost: what the gateway's stats estimate the paid tiers cost over its life for the run, the warm-up included: Lambda's billed invocations at list prices, and the container pool's container-seconds (creation to removal, the warm one included) at $0.0000125 per container-second; the local tier counts as already paid for.\n\
",
    );
    let _ = writeln!(
        out,
        "- Each run starts on an idle machine: at least {} s after the one before, then once fewer than {IDLE_CORES} cores were busy over 1 s (waiting up to {} s more for one run and {} s more in all), so that what a run leaves behind (a Lambda instance still answering requests whose client gave up, containers being removed) does not load the next.",
        SETTLE.as_secs(),
        SETTLE_MAX.as_secs(),
        SETTLE_BUDGET.as_secs()
    );
    out.push_str(
        "- Load: after a 1 s warm-up that is not counted (one request at a time, at most 20), open loop, constant spacing, single-image requests in binary tensors, latency from the intended send time (no coordinated omission), client and gateway deadline 10 s. A request fails when it gets no 2xx: refused (429), 5xx, timed out, or dropped by the client.\n\n",
    );
    out.push_str(
        "| model | rates | ramp | requests per placement | SLO (p99) |\n|---|---|---|---:|---:|\n",
    );
    for model in &results.models {
        let s = &model.scale;
        let _ = writeln!(
            out,
            "| {} | the paper's × {} ({:.3} → {:.1}/s) | {:.0} s (the paper: 180 s) | ≈ {:.0} (the paper: 3,505) | {:.0} ms |",
            model.model,
            s.rate_factor,
            s.from_per_s,
            s.to_per_s,
            s.ramp_s,
            s.expected_requests,
            s.slo_p99_ms
        );
    }
    out.push_str("\n## Live runs\n\n");
    for model in &results.models {
        let plot = plots
            .iter()
            .find(|(name, _, _)| *name == model.model)
            .map_or("", |(_, live, _)| live.as_str());
        out.push_str(&model_section(model, plot));
        let loads = model
            .runs
            .iter()
            .map(|r| {
                let busy = r
                    .busy_cores_before
                    .map_or_else(|| "not measured".to_owned(), |busy| format!("{busy:.2}"));
                format!("{} {busy} · {}", r.placement, r.load_average_before)
            })
            .collect::<Vec<_>>()
            .join("; ");
        let _ = writeln!(
            out,
            "\nBefore each run, cores busy over its last idle second · load average: {loads}.\n"
        );
    }
    out.push_str("## The simulator: the same ramp at the paper's full scale\n\n`switchyard sim`'s engine with the gateway's own policies, the same five placements (single-tier baselines deploy only their tier), constant arrivals, 18 s buckets. The simulated tiers do not share a CPU, so this is the shape beyond one machine.\n\n");
    for model in &results.models {
        let plot = plots
            .iter()
            .find(|(name, _, _)| *name == model.model)
            .map_or("", |(_, _, sim)| sim.as_str());
        out.push_str(&sim_section(model, plot));
        out.push('\n');
    }
    out.push_str("## Against the paper\n\n");
    for model in &results.models {
        let _ = writeln!(
            out,
            "**{}**: order of failing {}.\n",
            model.model,
            failing_order(model)
        );
        out.push_str(&findings(model));
        out.push('\n');
    }
    out.push_str(DIFFERENCES);
    if let Some(text) = discussion {
        out.push_str("\n## Discussion\n\n");
        out.push_str(text.trim());
        out.push('\n');
    }
    out
}

/// What the report says of the machine when the run started: from the
/// busy cores measured just before the first run when there are some, else
/// from the load average.
fn start_condition(first_busy: Option<f64>, load_average: &str) -> String {
    match first_busy {
        Some(busy) if busy < IDLE_CORES => format!(
            "- The machine was idle when the run started ({busy:.2} cores busy over the second before the first run; the load averages trail the work before it by minutes). "
        ),
        Some(busy) => format!(
            "- **Noisy numbers.** The machine was busy when the run started ({busy:.2} cores busy over the second before the first run, other processes; each run's own figure is below). "
        ),
        None if busy_at_start(load_average) => "- **Noisy numbers.** The machine was busy when the run started (other processes: see the load averages, and each run's own below). ".to_owned(),
        None => "- The machine was quiet when the run started (1-minute load average below 0.5; the run's own gateway and load generator raise it). ".to_owned(),
    }
}

/// Whether the 1-minute load average (the first field of `/proc/loadavg`
/// as [`Machine`](crate::machine::Machine) records it) says other work was
/// running: 0.5 or more, or unreadable.
fn busy_at_start(load_average: &str) -> bool {
    load_average
        .split_whitespace()
        .next()
        .and_then(|v| v.parse::<f64>().ok())
        .is_none_or(|one_minute| one_minute >= 0.5)
}

/// Why a one-machine reproduction differs from the paper's testbed.
const DIFFERENCES: &str = "What differs, and why:\n\n\
- **One machine.** The paper's Docker and Lambda tiers brought their own CPUs; here every tier shares the same 2 cores (with the load generator and other users). Container-only and Lambda-only therefore cannot carry more than local-only: they saturate at about the same rate, later or earlier depending on how well their extra processes and hops use the CPU. What they can show is overhead (an extra HTTP or Invoke hop, 1 intra-op thread per container or instance) and how each tier fails: local refuses at once (429) when its queue is full, containers queue up to 64 requests each so their latency climbs before they refuse, Lambda refuses beyond its reserved concurrency.\n\
- **Emulated Lambda.** No cold start of a fresh micro-VM (instances are started warm), no network and API Gateway in front (the paper's 300–500 ms median is mostly that and Lambda's own CPU), no memory-size effect on CPU, and no automatic scaling beyond the instances started: reserved concurrency stays fixed.\n\
- **Scaled ramp.** The live ramps are shorter than 180 s and, for fashion_cnn, faster than the paper's rates (the light model does not saturate anything at the paper's rates); the paper-unit column converts back. The simulator runs the unscaled ramp.\n\
- **Xception here is the ONNX export**, 22.9 M parameters as Keras's, running in ONNX Runtime on CPU, not TensorFlow.\n";

#[cfg(test)]
mod tests {
    use super::*;
    use switchyard_loadgen::BackendId;

    fn sample(at_s: f64, latency_ms: u64, outcome: Outcome) -> Sample {
        served(at_s, latency_ms, outcome, None)
    }

    fn served(at_s: f64, latency_ms: u64, outcome: Outcome, backend: Option<u16>) -> Sample {
        Sample {
            intended_offset_us: (at_s * 1e6) as u64,
            latency_us: latency_ms * 1000,
            outcome,
            backend: backend.map(BackendId),
        }
    }

    fn scale() -> Scale {
        Scale {
            model: "xception".into(),
            rate_factor: 0.5,
            ramp_s: 40.0,
            from_per_s: 0.03,
            to_per_s: 19.4,
            expected_requests: 389.0,
            slo_p99_ms: 1000.0,
            buckets: 4,
        }
    }

    #[test]
    fn samples_fall_into_the_bucket_of_their_intended_time() {
        let samples = vec![
            sample(0.5, 10, Outcome::Success),
            sample(9.9, 30, Outcome::Success),
            sample(10.0, 50, Outcome::Throttled),
            sample(25.0, 70, Outcome::Success),
            sample(39.0, 0, Outcome::Dropped),
            // Due at the very end: the last bucket, not a fifth one.
            sample(40.0, 90, Outcome::Success),
        ];
        let buckets = bucket_samples(&samples, &[], 40.0, 4);
        assert_eq!(buckets.len(), 4);
        assert_eq!(
            buckets.iter().map(|b| b.due).collect::<Vec<_>>(),
            [2, 1, 1, 2]
        );
        assert_eq!(buckets[0].failed, 0);
        assert_eq!(buckets[1].failed, 1);
        assert_eq!(buckets[1].failure_rate, 1.0);
        assert_eq!(buckets[1].p50_ms, None);
        assert_eq!(buckets[3].failure_rate, 0.5);
        assert!((buckets[0].offered_per_s - 0.2).abs() < 1e-9);
        assert_eq!((buckets[2].start_s, buckets[2].end_s), (20.0, 30.0));
        let p50 = buckets[0].p50_ms.unwrap();
        assert!((9.9..=10.1).contains(&p50), "{p50}");
        let p99 = buckets[0].p99_ms.unwrap();
        assert!((29.9..=30.1).contains(&p99), "{p99}");
    }

    #[test]
    fn the_start_is_judged_by_busy_cores_when_they_were_measured() {
        assert!(start_condition(Some(0.02), "3.00 2.00 1.00").contains("was idle"));
        assert!(start_condition(Some(1.20), "0.00 0.00 0.00").contains("**Noisy numbers.**"));
        assert!(start_condition(None, "3.00 2.00 1.00").contains("**Noisy numbers.**"));
        assert!(start_condition(None, "0.10 0.20 0.30").contains("was quiet"));
    }

    #[test]
    fn a_busy_start_is_told_from_a_quiet_one() {
        assert!(!busy_at_start("0.12 0.30 0.45"));
        assert!(busy_at_start("0.50 0.30 0.45"));
        assert!(busy_at_start("5.90 5.88 5.84"));
        assert!(busy_at_start(""));
    }

    #[test]
    fn no_samples_give_empty_buckets() {
        let buckets = bucket_samples(&[], &[], 10.0, 5);
        assert_eq!(buckets.len(), 5);
        assert!(buckets.iter().all(|b| b.due == 0 && b.failure_rate == 0.0));
        assert_eq!(saturation(&buckets, 50.0), None);
    }

    fn bucket(failure_rate: f64, p99_ms: Option<f64>) -> LoadBucket {
        LoadBucket {
            start_s: 0.0,
            end_s: 1.0,
            due: 100,
            offered_per_s: 100.0,
            succeeded: 100,
            failed: 0,
            failure_rate,
            p50_ms: p99_ms,
            p99_ms,
            served_by: Vec::new(),
        }
    }

    #[test]
    fn buckets_count_who_served_each_request() {
        let names = [
            "local".to_owned(),
            "lambda".to_owned(),
            "container".to_owned(),
        ];
        let samples = vec![
            served(1.0, 5, Outcome::Success, Some(0)),
            served(2.0, 5, Outcome::Success, Some(0)),
            served(3.0, 5, Outcome::Success, Some(1)),
            served(4.0, 5, Outcome::Throttled, Some(0)),
            served(12.0, 5, Outcome::Success, Some(2)),
            served(13.0, 5, Outcome::Success, Some(1)),
            served(14.0, 5, Outcome::Success, None),
            served(15.0, 0, Outcome::Dropped, None),
            // An id the names do not cover is not counted for anyone.
            served(16.0, 5, Outcome::Success, Some(9)),
        ];
        let buckets = bucket_samples(&samples, &names, 20.0, 2);
        assert_eq!(
            buckets[0].served_by,
            [("local".to_owned(), 2), ("lambda".to_owned(), 1)]
        );
        // A failed request is not served, whoever answered it.
        assert_eq!(buckets[0].failed, 1);
        assert_eq!(bucket_shares(&buckets[0]), "L 50 λ 25 F 25");
        assert_eq!(
            buckets[1].served_by,
            [("lambda".to_owned(), 1), ("container".to_owned(), 1)]
        );
        assert_eq!(bucket_shares(&buckets[1]), "λ 20 C 20 ? 40 F 20");
        assert_eq!(bucket_shares(&bucket_samples(&[], &names, 1.0, 1)[0]), "–");
    }

    #[test]
    fn saturation_is_the_first_bucket_over_one_percent_or_the_slo() {
        let ok = bucket(0.0, Some(100.0));
        let failing = bucket(0.02, Some(100.0));
        let slow = bucket(0.0, Some(1500.0));
        let edge = bucket(0.01, Some(1000.0));
        assert_eq!(
            saturation(&[ok.clone(), edge.clone(), failing.clone()], 1000.0),
            Some(2)
        );
        assert_eq!(saturation(&[ok.clone(), slow, failing], 1000.0), Some(1));
        assert_eq!(saturation(&[ok.clone(), edge], 1000.0), None);
        // All refused: no latency at all, but failing.
        assert_eq!(saturation(&[ok, bucket(1.0, None)], 1000.0), Some(1));
        // An empty bucket is not a failing one.
        let mut empty = bucket(0.0, None);
        empty.due = 0;
        assert_eq!(saturation(&[empty], 1000.0), None);
    }

    #[test]
    fn lambda_median_counts_only_later_successes() {
        let samples = vec![
            sample(1.0, 5, Outcome::Success),
            sample(20.0, 400, Outcome::Success),
            sample(21.0, 10_000, Outcome::Timeout),
            sample(22.0, 500, Outcome::Success),
            sample(23.0, 300, Outcome::Success),
        ];
        let median = median_from(&samples, 20.0).unwrap();
        assert!((399.0..=401.0).contains(&median), "{median}");
        assert_eq!(median_from(&samples, 30.0), None);
    }

    fn run(placement: &str, outcomes: &[(f64, u64, Outcome)]) -> PlacementRun {
        let samples: Vec<Sample> = outcomes.iter().map(|&(t, l, o)| sample(t, l, o)).collect();
        let buckets = bucket_samples(&samples, &[], 40.0, 4);
        let succeeded = samples
            .iter()
            .filter(|s| s.outcome == Outcome::Success)
            .count() as u64;
        PlacementRun {
            placement: placement.into(),
            error: None,
            load_average_before: "1.00 1.00 1.00".into(),
            busy_cores_before: Some(0.05),
            due: samples.len() as u64,
            succeeded,
            failed: samples.len() as u64 - succeeded,
            failure_rate: 1.0 - succeeded as f64 / samples.len() as f64,
            p50_ms: median_and_p99(&samples).map(|m| m.0),
            p99_ms: median_and_p99(&samples).map(|m| m.1),
            saturation_bucket: saturation(&buckets, 1000.0),
            buckets,
            served_by: vec![("local".into(), succeeded)],
            report: None,
            cost_dollars: None,
            container_deaths: None,
            samples: None,
        }
    }

    #[test]
    fn the_cost_sums_what_each_backend_reports() {
        let stats = serde_json::json!({
            "backend_details": {
                "local": { "pools": [] },
                "container": { "container_seconds": 40.0, "cost_dollars": 0.0005 },
                "lambda": { "invocations": 10, "cost_dollars": 0.00002 }
            }
        });
        let cost = backends_cost(&stats).unwrap();
        assert!((cost - 0.00052).abs() < 1e-12, "{cost}");
        assert_eq!(backends_cost(&serde_json::json!({})), None);
        let none = backends_cost(&serde_json::json!({ "backend_details": {} })).unwrap();
        assert!(none == 0.0 && none.is_sign_positive(), "{none}");
    }

    #[test]
    fn container_deaths_come_from_each_container_pool_and_show_under_the_table() {
        let stats = serde_json::json!({
            "backend_details": {
                "local": { "pools": [] },
                "container": { "deaths": 3, "out_of_memory_kills": 2, "cost_dollars": 0.1 },
                "lambda": { "invocations": 10 }
            }
        });
        let deaths = container_deaths(&stats);
        assert_eq!(
            deaths,
            Some(ContainerDeaths {
                replaced: 3,
                out_of_memory: 2
            })
        );
        let local_only = serde_json::json!({ "backend_details": { "local": { "pools": [] } } });
        assert_eq!(container_deaths(&local_only), None);
        let line = container_deaths_line([
            ("local-only", None),
            ("container-only", deaths),
            ("adaptive", Some(ContainerDeaths::default())),
        ])
        .unwrap();
        assert_eq!(
            line,
            "Worker containers replaced during the run (of them, killed at their memory limit): \
             container-only 3 (2), adaptive 0 (0).\n"
        );
        assert_eq!(container_deaths_line([("local-only", None)]), None);
    }

    #[test]
    fn tables_show_every_placement_and_bucket() {
        let local = run(
            "local-only",
            &[
                (1.0, 60, Outcome::Success),
                (15.0, 80, Outcome::Success),
                (25.0, 2000, Outcome::Success),
                (35.0, 0, Outcome::Throttled),
            ],
        );
        let lambda = run(
            "lambda-only",
            &[
                (1.0, 120, Outcome::Success),
                (15.0, 130, Outcome::Success),
                (25.0, 150, Outcome::Success),
                (35.0, 170, Outcome::Success),
            ],
        );
        let mut model = ModelResults {
            model: "xception".into(),
            scale: scale(),
            runs: vec![
                local,
                lambda,
                PlacementRun::failed("adaptive", "0 0 0".into(), "no Docker | here".into()),
            ],
            local_saturation: None,
            lambda_median_under_load_ms: Some(150.0),
            lambda_median_from_s: Some(20.0),
            sim: None,
        };
        model.local_saturation = saturation_point(&model.runs[0].buckets, 2, &model.scale);
        let summary = summary_table(&model);
        assert!(
            summary.contains("| local-only | 4 | 1 (25.0%) |"),
            "{summary}"
        );
        assert!(summary.contains("#3 (0.1/s, ≈36)"), "{summary}");
        assert!(
            summary.contains("| lambda-only | 4 | 0 (0%) |"),
            "{summary}"
        );
        assert!(summary.contains("never"), "{summary}");
        assert!(summary.contains("not run: no Docker / here"), "{summary}");
        assert_eq!(
            not_run(std::slice::from_ref(&model)),
            ["xception / adaptive: no Docker | here"]
        );
        let mut complete = model.clone();
        complete.runs.pop();
        assert!(not_run(&[complete]).is_empty());
        let ramp = ramp_table(&model);
        assert_eq!(ramp.lines().count(), 2 + 4, "{ramp}");
        assert!(
            ramp.lines()
                .next()
                .unwrap()
                .contains("| local-only | lambda-only |")
        );
        assert!(
            !ramp.contains("adaptive"),
            "a run that failed has no column"
        );
        // HDR keeps 3 significant digits: 2 s reads back as 2001 ms.
        assert!(ramp.contains("2001 / 2001 · 0% **←**"), "{ramp}");
        assert!(ramp.contains("– / – · 100.0%"), "{ramp}");
        let shares = shares_table(&model);
        assert_eq!(shares.lines().count(), 2 + 4, "{shares}");
        assert!(shares.contains("| 4 | 0.1 | F 100 | ? 100 |"), "{shares}");
        let text = findings(&model);
        assert!(
            text.contains("local-only starts failing** in bucket 3"),
            "{text}"
        );
        assert!(
            text.contains("Lambda-only's median under load** (requests due from 20 s on): 150 ms"),
            "{text}"
        );
        assert!(
            text.contains("fastest median is local-only's, 60.0 ms"),
            "{text}"
        );
        assert!(
            text.contains("first single tier to fail: yes; local-only has the lowest median at the lightest load: yes; Lambda-only's median under load is within 300–500 ms: **no**"),
            "{text}"
        );
    }

    #[test]
    fn paper_units_undo_the_rate_factor() {
        let s = scale();
        assert!((s.paper_sessions(7.0) - 2520.0).abs() < 1e-9);
    }
}
