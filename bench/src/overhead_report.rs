//! The pure half of `switchyard-bench overhead`: the results' types, the
//! added latency of each path against its baseline, issue 4's targets and
//! the Markdown page. No I/O here; `overhead.rs` measures and fills these in.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;
use switchyard_loadgen::LatencySummary;
use switchyard_loadgen::plot::{Line, Panel, xy_svg};

use crate::machine::Machine;
use crate::overhead::Plan;

/// Issue 4's targets for the container path.
pub const CONTAINER_ADDED_P50_TARGET_US: i64 = 150;
pub const CONTAINER_ADDED_P99_TARGET_US: i64 = 1_000;
pub const CONTAINER_COLD_START_P50_TARGET_MS: f64 = 500.0;

/// One path at one rate, its rounds merged.
#[derive(Debug, Clone, Serialize)]
pub struct Cell {
    pub path: String,
    pub rate_per_s: f64,
    pub rounds: usize,
    pub requests: u64,
    /// Requests that did not succeed.
    pub errors: u64,
    /// The same by outcome (`429`, `5xx`, `timeout`, `conn-err`, `dropped`...).
    pub errors_by_outcome: BTreeMap<String, u64>,
    /// 2xx latency from the intended send time (per call for the raw loop), µs.
    pub latency_us: LatencySummary,
    /// Cores the whole machine was busy on during each round of the cell.
    pub machine_busy_cores: Vec<f64>,
    /// CPU time of the proxy in front of the backend (the gateway, or
    /// nginx), per request due, over the measured rounds (warm-ups left
    /// out); `None` for a path with no proxy process of its own.
    pub proxy_cpu_us_per_request: Option<f64>,
}

impl Cell {
    pub fn new(
        path: &str,
        rate_per_s: f64,
        rounds: usize,
        requests: u64,
        errors: &BTreeMap<&str, u64>,
        latency: &Histogram<u64>,
        machine_busy_cores: &[f64],
    ) -> Self {
        Self {
            path: path.to_owned(),
            rate_per_s,
            rounds,
            requests,
            errors: errors.values().sum(),
            errors_by_outcome: errors.iter().map(|(k, v)| ((*k).to_owned(), *v)).collect(),
            latency_us: LatencySummary::of(latency),
            machine_busy_cores: machine_busy_cores.to_vec(),
            proxy_cpu_us_per_request: None,
        }
    }
}

/// A path against its baseline at one rate.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    pub path: String,
    pub baseline: String,
    pub rate_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub baseline_p50_us: u64,
    pub baseline_p99_us: u64,
    pub added_p50_us: i64,
    pub added_p99_us: i64,
    /// Path over baseline.
    pub ratio_p50: f64,
    pub ratio_p99: f64,
    /// Failed requests of the path and of the baseline, in % of requests.
    pub errors_percent: f64,
    pub baseline_errors_percent: f64,
}

fn error_percent(cell: &Cell) -> f64 {
    if cell.requests == 0 {
        0.0
    } else {
        cell.errors as f64 / cell.requests as f64 * 100.0
    }
}

/// Latency percentiles of a handful of cold starts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ColdStarts {
    pub what: String,
    pub samples_ms: Vec<f64>,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

/// Nearest-rank quantile of sorted values (0 when empty).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

impl ColdStarts {
    pub fn of(what: &str, samples: &[Duration]) -> Self {
        let samples_ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        let mut sorted = samples_ms.clone();
        sorted.sort_by(f64::total_cmp);
        Self {
            what: what.to_owned(),
            p50_ms: quantile(&sorted, 0.5),
            p99_ms: quantile(&sorted, 0.99),
            max_ms: sorted.last().copied().unwrap_or(0.0),
            samples_ms,
        }
    }
}

/// Everything measured for one backend.
#[derive(Debug, Clone, Serialize)]
pub struct BackendSection {
    pub backend: String,
    /// What was compared with what.
    pub setup: String,
    /// Why the section could not be measured, if it could not.
    pub error: Option<String>,
    /// `/proc/loadavg` when the section started.
    pub load_average_before: String,
    pub cells: Vec<Cell>,
    pub comparisons: Vec<Comparison>,
    pub cold_start: Option<ColdStarts>,
}

/// The backends that could not be measured, as "backend: why".
pub fn not_run(sections: &[BackendSection]) -> Vec<String> {
    sections
        .iter()
        .filter_map(|section| {
            section
                .error
                .as_ref()
                .map(|error| format!("{}: {error}", section.backend))
        })
        .collect()
}

impl BackendSection {
    /// A backend that could not be measured.
    pub fn failed(backend: &str, error: String) -> Self {
        Self {
            backend: backend.to_owned(),
            setup: String::new(),
            error: Some(error),
            load_average_before: String::new(),
            cells: Vec::new(),
            comparisons: Vec::new(),
            cold_start: None,
        }
    }

    /// A measured backend; `pairs` are the (path, baseline) comparisons.
    pub fn measured(backend: &str, setup: &str, cells: Vec<Cell>, pairs: &[(&str, &str)]) -> Self {
        let comparisons = compare(&cells, pairs);
        Self {
            backend: backend.to_owned(),
            setup: setup.to_owned(),
            error: None,
            load_average_before: String::new(),
            cells,
            comparisons,
            cold_start: None,
        }
    }

    /// The comparison of `path` with `baseline` at `rate`.
    pub fn comparison(&self, path: &str, baseline: &str, rate: f64) -> Option<&Comparison> {
        self.comparisons
            .iter()
            .find(|c| c.path == path && c.baseline == baseline && c.rate_per_s == rate)
    }
}

#[allow(clippy::cast_possible_wrap)]
fn added(path: u64, baseline: u64) -> i64 {
    path as i64 - baseline as i64
}

fn ratio(path: u64, baseline: u64) -> f64 {
    if baseline == 0 {
        0.0
    } else {
        path as f64 / baseline as f64
    }
}

/// Each (path, baseline) pair at every rate both were measured at with at
/// least one success.
pub fn compare(cells: &[Cell], pairs: &[(&str, &str)]) -> Vec<Comparison> {
    let mut out = Vec::new();
    for (path, baseline) in pairs {
        for cell in cells.iter().filter(|c| c.path == *path) {
            let Some(base) = cells
                .iter()
                .find(|c| c.path == *baseline && c.rate_per_s == cell.rate_per_s)
            else {
                continue;
            };
            if cell.latency_us.count == 0 || base.latency_us.count == 0 {
                continue;
            }
            let (p, b) = (&cell.latency_us, &base.latency_us);
            out.push(Comparison {
                path: (*path).to_owned(),
                baseline: (*baseline).to_owned(),
                rate_per_s: cell.rate_per_s,
                p50_us: p.p50,
                p99_us: p.p99,
                baseline_p50_us: b.p50,
                baseline_p99_us: b.p99,
                added_p50_us: added(p.p50, b.p50),
                added_p99_us: added(p.p99, b.p99),
                ratio_p50: ratio(p.p50, b.p50),
                ratio_p99: ratio(p.p99, b.p99),
                errors_percent: error_percent(cell),
                baseline_errors_percent: error_percent(base),
            });
        }
    }
    out
}

/// One of issue 4's targets against what was measured.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct TargetCheck {
    pub target: String,
    pub measured: String,
    /// `None` when it could not be measured.
    pub met: Option<bool>,
}

/// Failed share (%) above which a comparison says nothing about latency:
/// the percentiles are then of the survivors only.
pub const COMPARABLE_ERRORS_PERCENT: f64 = 1.0;

/// Issue 4's targets for the container path: the gateway adds ≤ 150 µs
/// at p50 and ≤ 1 ms at p99 over the direct worker at each rate, and a
/// cold start is ≤ 500 ms at p50. A rate at which the gateway or the
/// direct path failed more than 1% of requests is not met: it did not
/// carry that rate.
pub fn target_checks(sections: &[BackendSection]) -> Vec<TargetCheck> {
    let Some(container) = sections.iter().find(|s| s.backend == "container") else {
        return Vec::new();
    };
    let mut checks = Vec::new();
    for rate in crate::overhead::RATES {
        let found = container.comparison("switchyard", "direct", rate);
        let failing = found.filter(|c| {
            c.errors_percent > COMPARABLE_ERRORS_PERCENT
                || c.baseline_errors_percent > COMPARABLE_ERRORS_PERCENT
        });
        for (label, limit, value) in [
            (
                "p50",
                CONTAINER_ADDED_P50_TARGET_US,
                found.map(|c| c.added_p50_us),
            ),
            (
                "p99",
                CONTAINER_ADDED_P99_TARGET_US,
                found.map(|c| c.added_p99_us),
            ),
        ] {
            checks.push(TargetCheck {
                target: format!(
                    "container path at {rate:.0}/s: gateway adds ≤ {limit} µs at {label} over the direct worker"
                ),
                measured: match (value, failing) {
                    (Some(v), Some(c)) => format!(
                        "{v} µs, but {:.1}% failed through the gateway, {:.1}% direct",
                        c.errors_percent, c.baseline_errors_percent
                    ),
                    (Some(v), None) => format!("{v} µs"),
                    (None, _) => "not measured".into(),
                },
                met: value.map(|v| v <= limit && failing.is_none()),
            });
        }
    }
    let cold = container
        .cold_start
        .as_ref()
        .filter(|c| !c.samples_ms.is_empty());
    checks.push(TargetCheck {
        target: format!(
            "container cold start (create → ready) ≤ {CONTAINER_COLD_START_P50_TARGET_MS:.0} ms at p50"
        ),
        measured: cold.map_or_else(
            || "not measured".into(),
            |c| format!("{:.0} ms over {} starts", c.p50_ms, c.samples_ms.len()),
        ),
        met: cold.map(|c| c.p50_ms <= CONTAINER_COLD_START_P50_TARGET_MS),
    });
    checks
}

/// The whole run, as written to `overhead.json`.
#[derive(Debug, Clone, Serialize)]
pub struct OverheadResults {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub load_average_at_end: String,
    pub wall_seconds: f64,
    pub plan: Plan,
    pub model: &'static str,
    pub sections: Vec<BackendSection>,
    pub targets: Vec<TargetCheck>,
}

fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "**not met**",
        None => "not measured",
    }
}

fn signed(us: i64) -> String {
    if us > 0 {
        format!("+{us}")
    } else {
        us.to_string()
    }
}

/// Issue 4's targets, met or not.
pub fn targets_table(results: &OverheadResults) -> String {
    if results.targets.is_empty() {
        return "The container backend was not part of this run.\n".into();
    }
    let mut out = String::from("| issue 4 target | measured | |\n|---|---:|---|\n");
    for check in &results.targets {
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            check.target,
            check.measured,
            verdict(check.met)
        );
    }
    out
}

/// Each path against its baseline.
pub fn added_table(results: &OverheadResults) -> String {
    let mut out = String::from(
        "| backend | path | vs | rate/s | p50 µs | p99 µs | baseline p50 / p99 µs | added p50 µs | added p99 µs | × p50 | × p99 | failed: path / baseline |\n\
         |---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n",
    );
    for section in &results.sections {
        for c in &section.comparisons {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {} | {} | {} / {} | {} | {} | {:.2} | {:.2} | {:.1}% / {:.1}% |",
                section.backend,
                c.path,
                c.baseline,
                c.rate_per_s,
                c.p50_us,
                c.p99_us,
                c.baseline_p50_us,
                c.baseline_p99_us,
                signed(c.added_p50_us),
                signed(c.added_p99_us),
                c.ratio_p50,
                c.ratio_p99,
                c.errors_percent,
                c.baseline_errors_percent
            );
        }
    }
    out
}

/// Every path measured, with its errors and the machine's load.
pub fn paths_table(sections: &[BackendSection]) -> String {
    let mut out = String::from(
        "| backend | path | rate/s | requests | failed (by outcome) | p50 µs | p99 µs | p99.9 µs | proxy CPU µs/request | machine busy (cores, per round) |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---|\n",
    );
    for section in sections {
        for cell in &section.cells {
            let busy: Vec<String> = cell
                .machine_busy_cores
                .iter()
                .map(|c| format!("{c:.2}"))
                .collect();
            let by_outcome: Vec<String> = cell
                .errors_by_outcome
                .iter()
                .map(|(outcome, n)| format!("{outcome} {n}"))
                .collect();
            let failed = if by_outcome.is_empty() {
                "0".to_owned()
            } else {
                format!("{} ({})", cell.errors, by_outcome.join(", "))
            };
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} | {failed} | {} | {} | {} | {} | {} |",
                section.backend,
                cell.path,
                cell.rate_per_s,
                cell.requests,
                cell.latency_us.p50,
                cell.latency_us.p99,
                cell.latency_us.p999,
                cell.proxy_cpu_us_per_request
                    .map_or_else(|| "–".to_owned(), |us| format!("{us:.0}")),
                busy.join(" ")
            );
        }
    }
    out
}

/// Cold starts of every backend that has them.
pub fn cold_table(results: &OverheadResults) -> String {
    if results.sections.iter().all(|s| s.cold_start.is_none()) {
        return "No container or Lambda cold starts in this run.\n".into();
    }
    let mut out =
        String::from("| what | starts | p50 ms | p99 ms | max ms |\n|---|---:|---:|---:|---:|\n");
    for cold in results
        .sections
        .iter()
        .filter_map(|s| s.cold_start.as_ref())
    {
        let _ = writeln!(
            out,
            "| {} | {} | {:.0} | {:.0} | {:.0} |",
            cold.what,
            cold.samples_ms.len(),
            cold.p50_ms,
            cold.p99_ms,
            cold.max_ms
        );
    }
    out
}

/// The run's conditions, one paragraph.
pub fn conditions(results: &OverheadResults) -> String {
    let p = &results.plan;
    format!(
        "{}, {} CPUs ({}), load average {} at the start and {} at the end; `{}`, {:.0} s. `{}` batch 1, binary tensors in and out, open loop at each rate (latency from the intended send time), {} round(s) of {} s per path and rate after a {} s warm-up, the order of the paths reversed every other round (the two rates in opposite orders) so drift favours none. Loopback only, every backend on the same machine: the ratios matter, the absolute numbers drift.",
        results.date,
        results.machine.nproc,
        results.machine.cpu_model,
        results.machine.load_average_at_start,
        results.load_average_at_end,
        results.command,
        results.wall_seconds,
        results.model,
        p.rounds,
        p.cell_s,
        p.warm_up_s
    )
}

/// The tables the README shows.
pub fn readme_section(results: &OverheadResults) -> String {
    format!(
        "{}\n\n{}\n{}\n{}",
        conditions(results),
        targets_table(results),
        added_table(results),
        cold_table(results)
    )
}

/// The panels of `overhead.svg`: one per measured backend, the p50 and
/// p99 of each path (and of its baselines) against the offered rate. A
/// cell whose failures exceed [`COMPARABLE_ERRORS_PERCENT`] is left out:
/// its percentiles are of the survivors only.
pub fn plot_panels(sections: &[BackendSection]) -> Vec<Panel> {
    sections
        .iter()
        .filter(|s| s.error.is_none() && !s.cells.is_empty())
        .map(|section| {
            let mut paths: Vec<&str> = Vec::new();
            for cell in &section.cells {
                if !paths.contains(&cell.path.as_str()) {
                    paths.push(&cell.path);
                }
            }
            let mut lines = Vec::new();
            for quantile in ["p50", "p99"] {
                for path in &paths {
                    let mut points: Vec<(f64, f64)> = section
                        .cells
                        .iter()
                        .filter(|c| c.path == *path && c.latency_us.count > 0)
                        .filter(|c| error_percent(c) <= COMPARABLE_ERRORS_PERCENT)
                        .map(|c| {
                            let us = if quantile == "p50" {
                                c.latency_us.p50
                            } else {
                                c.latency_us.p99
                            };
                            (c.rate_per_s, us as f64 / 1000.0)
                        })
                        .collect();
                    points.sort_by(|a, b| a.0.total_cmp(&b.0));
                    lines.push(Line {
                        name: format!("{path} {quantile}"),
                        points,
                    });
                }
            }
            Panel {
                caption: format!(
                    "{}: latency from intended send time against offered rate",
                    section.backend
                ),
                x_desc: "offered requests/s".into(),
                y_desc: "ms".into(),
                lines,
                limit: None,
            }
        })
        .collect()
}

/// `overhead.svg`, drawn from [`plot_panels`].
pub fn plot(results: &OverheadResults) -> Result<String, crate::error::BenchError> {
    Ok(xy_svg(&plot_panels(&results.sections))?)
}

/// The whole page, `overhead.md`.
pub fn document(results: &OverheadResults, plot_name: &str) -> String {
    let mut out = String::from("# Overheads: what the gateway adds in front of each backend\n\n");
    out.push_str(&conditions(results));
    out.push_str("\n\n");
    for section in &results.sections {
        match &section.error {
            Some(error) => {
                let _ = writeln!(out, "- **{}**: not run: {error}", section.backend);
            }
            None => {
                let _ = writeln!(
                    out,
                    "- **{}** (load average {} before): {}.",
                    section.backend, section.load_average_before, section.setup
                );
            }
        }
    }
    out.push_str("\n## Issue 4's targets\n\n");
    out.push_str(&targets_table(results));
    out.push_str("\n## Added latency (path − baseline, same run)\n\n");
    out.push_str(&added_table(results));
    let _ = writeln!(
        out,
        "\nPlot: `{plot_name}` (p50 and p99 of every path against the rate; cells that failed more than 1% left out)."
    );
    out.push_str(
        "\nFor the local tier the raw baseline is one ONNX Runtime call in this process (no HTTP at all), so its \"added\" is the whole HTTP round trip plus the gateway; against the HTTP floor it is what inference through the gateway costs beyond a bare round trip to the same server. Where a path failed more than 1% of its requests (last column), its percentiles are of the requests that got through, and the comparison says more about who refused than about latency.\n",
    );
    out.push_str("\n## Cold starts\n\n");
    out.push_str(&cold_table(results));
    out.push_str(
        "\nContainer: a fresh pool of one worker container each time, create → ready as the pool measures it (the image is built once, before). Lambda: the first Invoke sent to a function instance started at that moment on the emulator (process start, ONNX Runtime and model load, then the call); real Lambda adds its micro-VM start.\n",
    );
    out.push_str("\n## Every path measured\n\n");
    out.push_str(&paths_table(&results.sections));
    out.push_str(
        "\nProxy CPU: user and system CPU time of the process in front of the backend (the gateway; nginx's master and worker) during the measured rounds, warm-ups left out, per request due. At a low rate each request finds the proxy idle, so it costs more CPU than at a high one; the CPU a proxy spends on a request is on that request's path, so set the added p50 beside it.\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(path: &str, rate: f64, p50: u64, p99: u64) -> Cell {
        let mut h = crate::raw::histogram();
        // 98 values at p50 and 2 at p99: the p99 is the upper value.
        for _ in 0..98 {
            h.saturating_record(p50);
        }
        h.saturating_record(p99);
        h.saturating_record(p99);
        Cell::new(path, rate, 1, 100, &BTreeMap::new(), &h, &[0.5])
    }

    fn container(cells: Vec<Cell>, cold_ms: &[u64]) -> BackendSection {
        let mut section = BackendSection::measured(
            "container",
            "test",
            cells,
            &[("switchyard", "direct"), ("nginx", "direct")],
        );
        let samples: Vec<Duration> = cold_ms.iter().map(|&m| Duration::from_millis(m)).collect();
        section.cold_start = Some(ColdStarts::of("container", &samples));
        section
    }

    #[test]
    fn paths_are_compared_with_their_baseline_at_the_same_rate() {
        let section = container(
            vec![
                cell("direct", 200.0, 1000, 3000),
                cell("switchyard", 200.0, 1100, 3500),
                cell("nginx", 200.0, 1300, 2900),
                cell("direct", 2000.0, 900, 2000),
                // No baseline at this rate: no comparison.
                cell("switchyard", 50.0, 1, 1),
            ],
            &[],
        );
        assert_eq!(section.comparisons.len(), 2);
        let ours = section.comparison("switchyard", "direct", 200.0).unwrap();
        assert!((95..=105).contains(&ours.added_p50_us), "{ours:?}");
        assert!((495..=505).contains(&ours.added_p99_us), "{ours:?}");
        assert!((ours.ratio_p50 - 1.1).abs() < 0.01);
        let nginx = section.comparison("nginx", "direct", 200.0).unwrap();
        assert!(nginx.added_p99_us < 0, "{nginx:?}");
    }

    #[test]
    fn the_plot_has_a_panel_per_measured_backend_and_leaves_out_failing_cells() {
        let mut failing = cell("direct", 2000.0, 900, 2000);
        failing.errors = 5;
        let sections = vec![
            container(
                vec![
                    cell("direct", 200.0, 1000, 3000),
                    cell("switchyard", 200.0, 1100, 3500),
                    failing,
                    cell("switchyard", 2000.0, 1200, 4000),
                ],
                &[],
            ),
            BackendSection::failed("lambda", "no emulator".into()),
        ];
        let panels = plot_panels(&sections);
        assert_eq!(panels.len(), 1);
        let names: Vec<&str> = panels[0].lines.iter().map(|l| l.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "direct p50",
                "switchyard p50",
                "direct p99",
                "switchyard p99"
            ]
        );
        // 5% of the direct path failed at 2,000/s: that point is left out.
        assert_eq!(panels[0].lines[0].points.len(), 1);
        let ours = &panels[0].lines[1].points;
        assert_eq!(ours.len(), 2);
        assert!((ours[0].0 - 200.0).abs() < 1e-9 && (ours[0].1 - 1.1).abs() < 0.01);
        assert!(ours[1].0 > ours[0].0, "points are sorted by rate");
        let p99 = &panels[0].lines[3].points;
        assert!((p99[1].1 - 4.0).abs() < 0.01, "{p99:?}");
        let svg = xy_svg(&panels).unwrap();
        assert!(svg.contains("switchyard p99"));
    }

    #[test]
    fn targets_are_met_or_not_met() {
        let section = container(
            vec![
                cell("direct", 200.0, 1000, 3000),
                cell("switchyard", 200.0, 1100, 3500),
                cell("direct", 2000.0, 1000, 3000),
                cell("switchyard", 2000.0, 1300, 3500),
            ],
            &[400, 450, 700],
        );
        let checks = target_checks(std::slice::from_ref(&section));
        let met: Vec<Option<bool>> = checks.iter().map(|c| c.met).collect();
        // 200/s p50, p99; 2,000/s p50 (+300 µs), p99; cold start 450 ms.
        assert_eq!(
            met,
            [Some(true), Some(true), Some(false), Some(true), Some(true)]
        );
        assert!(checks[4].measured.contains("450 ms over 3 starts"));
        // A rate the direct path did not carry meets no latency target.
        let mut failing = section.clone();
        failing.cells[2].errors = 50;
        failing.comparisons = compare(&failing.cells, &[("switchyard", "direct")]);
        let checks = target_checks(&[failing]);
        assert_eq!(checks[3].met, Some(false));
        assert!(
            checks[3].measured.contains("50.0% direct"),
            "{:?}",
            checks[3]
        );
        assert!(target_checks(&[BackendSection::failed("local", "x".into())]).is_empty());
        assert!(not_run(std::slice::from_ref(&section)).is_empty());
        assert_eq!(
            not_run(&[
                section.clone(),
                BackendSection::failed("lambda", "no emulator".into())
            ]),
            ["lambda: no emulator"]
        );
        let unmeasured = target_checks(&[BackendSection::failed("container", "no Docker".into())]);
        assert!(unmeasured.iter().all(|c| c.met.is_none()));
    }

    #[test]
    fn the_paths_table_gives_the_proxy_cpu_where_a_path_has_a_proxy() {
        let mut ours = cell("switchyard", 200.0, 1100, 3500);
        ours.proxy_cpu_us_per_request = Some(181.4);
        let section = container(vec![cell("direct", 200.0, 1000, 3000), ours], &[]);
        let table = paths_table(&[section]);
        let row = |path: &str| {
            table
                .lines()
                .find(|l| l.starts_with(&format!("| container | {path} |")))
                .unwrap()
                .split(" | ")
                .map(str::to_owned)
                .collect::<Vec<_>>()
        };
        let header: Vec<&str> = table.lines().next().unwrap().split(" | ").collect();
        let column = header
            .iter()
            .position(|h| *h == "proxy CPU µs/request")
            .unwrap();
        assert_eq!(row("switchyard")[column], "181");
        assert_eq!(row("direct")[column], "–");
    }

    #[test]
    fn cold_start_quantiles_are_nearest_rank() {
        let samples: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        let cold = ColdStarts::of("x", &samples);
        assert_eq!((cold.p50_ms, cold.p99_ms, cold.max_ms), (10.0, 20.0, 20.0));
        let none = ColdStarts::of("x", &[]);
        assert_eq!((none.p50_ms, none.max_ms), (0.0, 0.0));
    }

    #[test]
    fn verdicts_read_met_or_not_met() {
        assert_eq!(verdict(Some(true)), "met");
        assert_eq!(verdict(Some(false)), "**not met**");
        assert_eq!(signed(5), "+5");
        assert_eq!(signed(-5), "-5");
    }
}
