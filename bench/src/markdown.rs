//! The Markdown form of a `local` run: written to `bench/results/local.md`
//! and, for full runs, into `bench/README.md` between two markers.

use std::fmt::Write;
use std::path::Path;

use crate::error::BenchError;
use crate::local::LocalResults;

/// Where the latest table goes in the README.
pub const README_BEGIN: &str = "<!-- bench-local:begin -->";
pub const README_END: &str = "<!-- bench-local:end -->";

fn met(yes: bool) -> &'static str {
    if yes { "met" } else { "**not met**" }
}

/// The tables of a run, without a title.
pub fn tables(results: &LocalResults) -> String {
    let mut out = String::new();
    let m = &results.machine;
    let plan = &results.plan;
    let _ = writeln!(out, "- Date: {}", results.date);
    let _ = writeln!(
        out,
        "- Machine: {} CPUs (`nproc`), {}, Linux {}; load average at start {} / at end {}",
        m.nproc, m.cpu_model, m.kernel, m.load_average_at_start, results.load_average_at_end
    );
    let _ = writeln!(out, "- Command: `{}`", results.command);
    let _ = writeln!(
        out,
        "- Gateway: release binary, {}; client: `switchyard-loadgen` library in the bench \
         process ({} runtime thread), binary tensors in and out, batch-1 requests",
        results.gateway_config, plan.client_threads
    );
    let _ = writeln!(
        out,
        "- Durations: raw loops {} s each, saturation {} s at each of {} connections \
         (closed loop; the best counts), low load {} s at {} req/s (open loop, constant \
         spacing){}",
        plan.raw_duration_s,
        plan.saturation_duration_s,
        plan.saturation_connections
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        plan.low_load_duration_s,
        plan.low_load_rate_per_s,
        if plan.quick { "; **quick run**" } else { "" }
    );

    let other = max_other_cores(results);
    if other > OTHER_WORK_THRESHOLD {
        let _ = writeln!(
            out,
            "- **Other work was running**: other processes used up to {other:.2} cores during \
             a measurement (last column of the run tables); those numbers are pessimistic. \
             Rerun on a quiet machine."
        );
    } else {
        let _ = writeln!(
            out,
            "- Quiet machine: other processes used at most {other:.2} cores during any measurement"
        );
    }
    let _ = writeln!(
        out,
        "- Idle gateway: {:.3} cores with no requests ({:.1} s measured)",
        results.gateway_idle.cores, results.gateway_idle.seconds
    );

    let floor = &results.http_floor.report;
    let _ = writeln!(
        out,
        "- HTTP floor: `GET /v2/health/live` at {} req/s, p50 {} µs, p99 {} µs from intended \
         send ({} µs p50 from send)",
        results.plan.low_load_rate_per_s,
        floor.latency_us.p50,
        floor.latency_us.p99,
        floor.service_time_us.p50
    );

    let _ = writeln!(out, "\n### Throughput at saturation\n");
    let _ = writeln!(
        out,
        "| model | ORT threads | raw batch 1 items/s | raw best items/s (batch) | gateway req/s (connections) | gateway mean batch rows | gateway ÷ raw batch 1 | gateway ÷ raw best | ≥ {} |",
        crate::local::THROUGHPUT_TARGET
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|---|");
    for model in &results.models {
        let c = &model.comparison;
        let _ = writeln!(
            out,
            "| {} | {} × {} | {:.0} | {:.0} ({}) | {:.0} ({}) | {:.1} | {:.2} | {:.2} | vs batch 1: {}; vs best: {} |",
            model.model,
            model.workers,
            model.intra_op_threads,
            c.raw_batch1_items_per_s,
            c.raw_best_items_per_s,
            c.raw_best_batch,
            c.gateway_items_per_s,
            model.saturation_connections,
            model
                .gateway_saturation
                .report
                .server_timing
                .batch_rows
                .mean,
            c.ratio_vs_raw_batch1,
            c.ratio_vs_raw_best,
            met(c.throughput_target_met_vs_batch1),
            met(c.throughput_target_met_vs_best)
        );
    }

    let _ = writeln!(
        out,
        "\nThe gateway's saturation runs, by connection count (closed loop):\n"
    );
    let _ = writeln!(
        out,
        "| model | connections | req/s | p50 / p99 µs | errors | mean batch rows | gateway CPU µs/req | other work (cores) |"
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---:|---:|---:|");
    for model in &results.models {
        for point in &model.saturation_sweep {
            let _ = writeln!(
                out,
                "| {} | {} | {:.0} | {} / {} | {} | {:.1} | {:.1} | {:.2} |",
                model.model,
                point.connections,
                point.requests_per_s,
                point.p50_us,
                point.p99_us,
                point.errors,
                point.batch_rows_mean,
                point.gateway_cpu_us_per_request,
                point.other_cores
            );
        }
    }

    let _ = writeln!(out, "\n### Latency at low load\n");
    let _ = writeln!(
        out,
        "| model | raw batch 1 p50 / p99 µs | gateway p50 / p99 µs (from intended send) | gateway p50 µs (from send) | added at p50 µs | ≤ {} µs | raw paced p50 µs | added vs paced raw µs | over the HTTP floor µs |",
        crate::local::ADDED_LATENCY_TARGET_US
    );
    let _ = writeln!(out, "|---|---:|---:|---:|---:|---|---:|---:|---:|");
    for model in &results.models {
        let c = &model.comparison;
        let raw1 = model.raw.iter().find(|r| r.batch == 1);
        let low = &model.gateway_low_load.report;
        let _ = writeln!(
            out,
            "| {} | {} / {} | {} / {} | {} | {} (from send: {}) | {} | {} | {} | {} |",
            model.model,
            raw1.map_or(0, |r| r.latency_us.p50),
            raw1.map_or(0, |r| r.latency_us.p99),
            low.latency_us.p50,
            low.latency_us.p99,
            low.service_time_us.p50,
            c.added_p50_us,
            c.added_p50_from_send_us,
            met(c.added_latency_target_met),
            c.raw_paced_p50_us,
            c.added_p50_vs_paced_raw_us,
            c.inference_path_p50_us
        );
    }

    let _ = writeln!(out, "\n### Raw ONNX Runtime loop\n");
    let _ = writeln!(
        out,
        "| model | batch | threads × intra-op | calls/s | items/s | p50 µs/call | p99 µs/call | CPU µs/item | other work (cores) |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|");
    for model in &results.models {
        for raw in model.raw.iter().chain([&model.raw_paced]) {
            let batch = match raw.paced_rate_per_s {
                Some(rate) => format!("{} (paced, {rate}/s)", raw.batch),
                None => raw.batch.to_string(),
            };
            let _ = writeln!(
                out,
                "| {} | {batch} | {} × {} | {:.0} | {:.0} | {} | {} | {:.1} | {:.2} |",
                model.model,
                raw.threads,
                raw.intra_op_threads,
                raw.calls_per_s,
                raw.items_per_s,
                raw.latency_us.p50,
                raw.latency_us.p99,
                raw.cpu_us_per_item,
                raw.other_cores
            );
        }
    }

    let _ = writeln!(out, "\n### Gateway runs: where the time and the CPU go\n");
    let _ = writeln!(
        out,
        "| model | run | req/s | errors | p50 / p99 µs | server queue p50 µs | server inference p50 µs | batch rows mean | gateway CPU µs/req | client CPU µs/req | other work (cores) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let floor = (
        "HTTP floor",
        "low load (GET /v2/health/live)",
        &results.http_floor,
    );
    let runs = results.models.iter().flat_map(|model| {
        [
            (
                model.model.as_str(),
                "saturation (best)",
                &model.gateway_saturation,
            ),
            (model.model.as_str(), "low load", &model.gateway_low_load),
        ]
    });
    for (model, name, run) in runs.chain([floor]) {
        let r = &run.report;
        let _ = writeln!(
            out,
            "| {} | {name} | {:.0} | {} | {} / {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.2} |",
            model,
            r.throughput_per_s,
            r.counts.errors(),
            r.latency_us.p50,
            r.latency_us.p99,
            r.server_timing.queue_us.p50,
            r.server_timing.inference_us.p50,
            r.server_timing.batch_rows.mean,
            run.gateway_cpu_us_per_request,
            run.client_cpu_us_per_request,
            run.other_cores
        );
    }
    let _ = writeln!(
        out,
        "\nCores used by thread group during the saturation runs:\n"
    );
    for model in &results.models {
        let run = &model.gateway_saturation;
        let _ = writeln!(
            out,
            "- {}: gateway {}; client {}",
            model.model,
            cores_list(&run.gateway_threads),
            cores_list(&run.client_threads)
        );
    }
    let _ = writeln!(
        out,
        "\n*Raw paced*: one batch-1 call every 1/{} s on one thread, the machine idle in \
         between, as the gateway's calls are at low load. The added latency the issue \
         defines is against the back-to-back raw p50; against the paced p50 it leaves out \
         what a cold call costs anyway.",
        plan.low_load_rate_per_s
    );
    let _ = writeln!(
        out,
        "\nRatios compare runs made minutes apart on the same machine; absolute numbers drift \
         between runs and machines. The raw loop has the whole machine; the gateway shares it \
         with the load generator (its CPU is in the last column)."
    );
    out
}

/// Other processes' CPU above which a run is flagged as disturbed.
const OTHER_WORK_THRESHOLD: f64 = 0.1;

fn max_other_cores(results: &LocalResults) -> f64 {
    results
        .models
        .iter()
        .flat_map(|m| {
            m.raw
                .iter()
                .chain([&m.raw_paced])
                .map(|r| r.other_cores)
                .chain(m.saturation_sweep.iter().map(|p| p.other_cores))
                .chain([m.gateway_low_load.other_cores])
        })
        .chain([results.http_floor.other_cores])
        .fold(0.0, f64::max)
}

fn cores_list(groups: &[crate::machine::ThreadCores]) -> String {
    if groups.is_empty() {
        return "(not measured)".into();
    }
    groups
        .iter()
        .map(|g| format!("`{}`×{} {:.2}", g.name, g.threads, g.cores))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The whole `local.md`.
pub fn document(results: &LocalResults) -> String {
    format!(
        "# Local benchmark: gateway vs raw ONNX Runtime\n\n{}",
        tables(results)
    )
}

/// Replaces the README's section between the markers with `section`.
pub fn update_readme(path: &Path, section: &str) -> Result<bool, BenchError> {
    update_readme_between(path, (README_BEGIN, README_END), section)
}

/// Replaces the README's section between the `begin` and `end` marker
/// lines with `section`; `false` when the README has no such markers.
pub fn update_readme_between(
    path: &Path,
    (begin_marker, end_marker): (&str, &str),
    section: &str,
) -> Result<bool, BenchError> {
    let text = std::fs::read_to_string(path).map_err(|source| BenchError::Io {
        context: "cannot read the README",
        path: path.to_owned(),
        source,
    })?;
    let (Some(begin), Some(end)) = (text.find(begin_marker), text.find(end_marker)) else {
        return Ok(false);
    };
    if end < begin {
        return Ok(false);
    }
    let updated = format!(
        "{}{begin_marker}\n{section}{}",
        &text[..begin],
        &text[end..]
    );
    std::fs::write(path, updated).map_err(|source| BenchError::Io {
        context: "cannot write the README",
        path: path.to_owned(),
        source,
    })?;
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readme_section_is_replaced_between_markers() {
        let dir = std::env::temp_dir().join(format!("bench-md-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("README.md");
        std::fs::write(
            &path,
            format!("intro\n{README_BEGIN}\nold\n{README_END}\nrest\n"),
        )
        .unwrap();
        assert!(update_readme(&path, "new\n").unwrap());
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            format!("intro\n{README_BEGIN}\nnew\n{README_END}\nrest\n")
        );
        std::fs::write(&path, "no markers\n").unwrap();
        assert!(!update_readme(&path, "new\n").unwrap());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
