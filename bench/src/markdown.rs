//! The Markdown form of a `local` run: written to `bench/results/local.md`
//! and, for full runs, into `bench/README.md` between two markers.

use std::fmt::Write;
use std::path::Path;

use crate::error::BenchError;
use crate::local::{FloorRun, GatewayRun, LeanMeasured, LocalResults, Plan};

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
         process ({} runtime thread), binary tensors in and out, batch-1 requests (multi-row \
         ones where a table says so)",
        results.gateway_config, plan.client_threads
    );
    let _ = writeln!(
        out,
        "- Durations: raw loops {} s each, saturation {} s at each of {} connections \
         (closed loop; the best counts), the same for each multi-row size, low load {} s at \
         each of {} req/s (open loop, constant spacing){}",
        plan.raw_duration_s,
        plan.saturation_duration_s,
        plan.saturation_connections
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", "),
        plan.low_load_duration_s,
        rates(plan),
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

    let floors = |run: fn(&FloorRun) -> &GatewayRun| {
        results
            .http_floors
            .iter()
            .map(|f| {
                let r = &run(f).report;
                format!(
                    "{} / {} µs at {} req/s",
                    r.latency_us.p50, r.latency_us.p99, f.rate_per_s
                )
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "- HTTP floors, p50 / p99 from intended send: gateway `GET /v2/health/live` {}; \
         trivial server (hyper on tokio, nothing else, its own process{}) `GET /` {}",
        floors(|f| &f.run),
        if results.trivial_pinned {
            ", its two threads pinned as the gateway's are"
        } else {
            ""
        },
        floors(|f| &f.trivial)
    );
    let lean_floors = |run: fn(&FloorRun) -> &LeanMeasured| {
        results
            .http_floors
            .iter()
            .map(|f| {
                let r = &run(f).run.latency_us;
                format!("{} / {} µs at {} req/s", r.p50, r.p99, f.rate_per_s)
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let _ = writeln!(
        out,
        "- The same floors through the lean client: gateway {}; trivial server {}",
        lean_floors(|f| &f.lean),
        lean_floors(|f| &f.lean_trivial)
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

    multi_row_table(&mut out, results);

    let _ = writeln!(out, "\n### Latency at low load\n");
    let _ = writeln!(
        out,
        "| model | rate/s | raw batch 1 p50 µs | gateway p50 / p99 µs (from intended send) | added at p50 µs (from send) | ≤ {} µs | raw paced p50 µs | added vs paced raw µs | HTTP floor p50 µs: gateway / trivial | over the gateway's floor µs | over the trivial floor µs | server inference p50 µs |",
        crate::local::ADDED_LATENCY_TARGET_US
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|"
    );
    for model in &results.models {
        for point in &model.low_load {
            let low = &point.gateway.report;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} / {} | {} ({}) | {} | {} | {} | {} / {} | {} | {} | {} |",
                model.model,
                point.rate_per_s,
                point.raw_batch1_p50_us,
                low.latency_us.p50,
                low.latency_us.p99,
                point.added_p50_us,
                point.added_p50_from_send_us,
                met(point.added_latency_target_met),
                point.raw_paced.latency_us.p50,
                point.added_p50_vs_paced_raw_us,
                point.http_floor_p50_us,
                point.trivial_floor_p50_us,
                point.inference_path_p50_us,
                point.over_trivial_floor_p50_us,
                low.server_timing.inference_us.p50
            );
        }
    }

    let _ = writeln!(
        out,
        "\nThe same rates through the lean client (one thread, one connection, blocking \
         reads; see `bench/src/lean_client.rs`), each run right after the load generator's:\n"
    );
    let _ = writeln!(
        out,
        "| model | rate/s | raw batch 1 p50 µs | gateway p50 / p99 µs (from intended send) | errors / unsent | added at p50 µs | ≤ {} µs | HTTP floor p50 µs: gateway / trivial | over the gateway's floor µs | server inference p50 µs | other work (cores) |",
        crate::local::ADDED_LATENCY_TARGET_US
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|"
    );
    for model in &results.models {
        for point in &model.low_load {
            let lean = &point.lean;
            let run = &lean.run.run;
            let _ = writeln!(
                out,
                "| {} | {} | {} | {} / {} | {} / {} | {} | {} | {} / {} | {} | {} | {:.2} |",
                model.model,
                point.rate_per_s,
                point.raw_batch1_p50_us,
                run.latency_us.p50,
                run.latency_us.p99,
                run.errors,
                run.unsent,
                lean.added_p50_us,
                met(lean.added_latency_target_met),
                lean.http_floor_p50_us,
                lean.trivial_floor_p50_us,
                i128::from(run.latency_us.p50) - i128::from(lean.http_floor_p50_us),
                run.server_inference_us.p50,
                lean.run.other_cores
            );
        }
    }

    let _ = writeln!(out, "\n### Raw ONNX Runtime loop\n");
    let _ = writeln!(
        out,
        "| model | batch | threads × intra-op | calls/s | items/s | p50 µs/call | p99 µs/call | CPU µs/item | other work (cores) |"
    );
    let _ = writeln!(out, "|---|---|---|---:|---:|---:|---:|---:|---:|");
    for model in &results.models {
        for raw in model
            .raw
            .iter()
            .chain(model.low_load.iter().map(|p| &p.raw_paced))
        {
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
        "| model | run | req/s | errors | p50 / p99 µs | server queue p50 µs | server inference p50 µs | batch rows mean | server CPU µs/req | client CPU µs/req | other work (cores) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    let mut runs: Vec<(&str, String, &GatewayRun)> = Vec::new();
    for model in &results.models {
        runs.push((
            &model.model,
            "saturation (best)".into(),
            &model.gateway_saturation,
        ));
        for point in &model.low_load {
            runs.push((
                &model.model,
                format!("low load, {}/s", point.rate_per_s),
                &point.gateway,
            ));
        }
    }
    for floor in &results.http_floors {
        runs.push((
            "HTTP floor",
            format!("GET /v2/health/live, {}/s", floor.rate_per_s),
            &floor.run,
        ));
        runs.push((
            "trivial server",
            format!("GET /, {}/s", floor.rate_per_s),
            &floor.trivial,
        ));
    }
    for (model, name, run) in runs {
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
        for point in &model.multi_row {
            let _ = writeln!(
                out,
                "- {}, {} rows per request: gateway {}; client {}",
                model.model,
                point.rows,
                cores_list(&point.gateway_threads),
                cores_list(&point.client_threads)
            );
        }
    }
    let _ = writeln!(
        out,
        "\n*Raw paced*: one batch-1 call at each low-load rate on one thread, the machine \
         idle in between, as the gateway's calls are at low load. The added latency the \
         issue defines is against the back-to-back raw p50; against the paced p50 it leaves \
         out what a cold call costs anyway. The longer the gap between requests, the colder \
         the call: compare the rates."
    );
    let _ = writeln!(
        out,
        "\nRatios compare runs made minutes apart on the same machine; absolute numbers drift \
         between runs and machines. The raw loop has the whole machine; the gateway shares it \
         with the load generator (its CPU is in the last column)."
    );
    out
}

/// The closed-loop runs of multi-row requests beside the raw loop.
fn multi_row_table(out: &mut String, results: &LocalResults) {
    if results.models.iter().all(|m| m.multi_row.is_empty()) {
        return;
    }
    let _ = writeln!(
        out,
        "\nThe gateway with multi-row requests (closed loop, about {} rows in flight, at least {} \
         connections), beside the raw loop at the same batch: the part of the gap each \
         request's round trip causes, and the part each row's work does:\n",
        results.plan.multi_row_rows_in_flight, results.plan.multi_row_min_connections
    );
    let _ = writeln!(
        out,
        "| model | rows per request | connections | req/s | gateway items/s | raw items/s at that batch | gateway ÷ raw same batch | gateway ÷ raw best | p50 / p99 µs | errors | mean batch rows | gateway CPU µs/item | other work (cores) |"
    );
    let _ = writeln!(
        out,
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for model in &results.models {
        for point in &model.multi_row {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} | {} / {} | {} | {:.1} | {:.2} | {:.2} |",
                model.model,
                point.rows,
                point.connections,
                point.requests_per_s,
                point.items_per_s,
                point.raw_items_per_s,
                point.ratio_vs_raw_same_batch,
                point.ratio_vs_raw_best,
                point.p50_us,
                point.p99_us,
                point.errors,
                point.batch_rows_mean,
                point.gateway_cpu_us_per_item,
                point.other_cores
            );
        }
    }
}

/// The low-load rates, e.g. `50, 200, 1000`.
fn rates(plan: &Plan) -> String {
    plan.low_load_rates_per_s
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
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
                .chain(m.low_load.iter().map(|p| &p.raw_paced))
                .map(|r| r.other_cores)
                .chain(m.saturation_sweep.iter().map(|p| p.other_cores))
                .chain(m.multi_row.iter().map(|p| p.other_cores))
                .chain(m.low_load.iter().map(|p| p.gateway.other_cores))
                .chain(m.low_load.iter().map(|p| p.lean.run.other_cores))
        })
        .chain(results.http_floors.iter().flat_map(|f| {
            [
                f.run.other_cores,
                f.trivial.other_cores,
                f.lean.other_cores,
                f.lean_trivial.other_cores,
            ]
        }))
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
