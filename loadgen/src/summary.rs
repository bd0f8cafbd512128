//! The human-readable summary of a [`Report`], as the command prints it.

use std::fmt::Write;

use crate::record::{LatencySummary, LoadDescription, Outcome, Report};

/// A multi-line table: what ran, the counts, throughput and percentiles.
pub fn summary_table(report: &Report) -> String {
    let mut out = String::new();
    let load = match &report.load {
        LoadDescription::OpenLoop {
            arrival,
            rate_per_s,
            max_in_flight,
        } => format!("open loop, {arrival} {rate_per_s}/s (max {max_in_flight} in flight)"),
        LoadDescription::ClosedLoop { concurrency } => {
            format!("closed loop, {concurrency} concurrent")
        }
    };
    let _ = writeln!(
        out,
        "{load} for {:.1} s: {} model {} (batch {}, {} inputs, {} outputs)",
        report.duration_s,
        report.url,
        report.model,
        report.batch_size,
        if report.binary { "binary" } else { "JSON" },
        if report.binary_output {
            "binary"
        } else {
            "JSON"
        }
    );
    let c = &report.counts;
    let _ = writeln!(
        out,
        "requests   scheduled {}  sent {}  2xx {}  429 {}  5xx {}  other {}  timeout {}  conn-err {}  dropped {}",
        report.scheduled,
        report.sent,
        c.success,
        c.throttled,
        c.server_error,
        c.other_status,
        c.timeout,
        c.connection_error,
        c.dropped
    );
    let _ = writeln!(
        out,
        "throughput {:.1} req/s ({:.1} items/s) over {:.2} s; offered {:.1} req/s",
        report.throughput_per_s, report.items_per_s, report.elapsed_s, report.offered_per_s
    );
    let _ = writeln!(
        out,
        "\n{:<28}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10}",
        "latency (µs)", "count", "p50", "p90", "p99", "p99.9", "max", "mean"
    );
    let mut row = |name: &str, s: &LatencySummary| {
        let _ = writeln!(
            out,
            "{name:<28}{:>9}{:>9}{:>9}{:>9}{:>9}{:>9}{:>10.1}",
            s.count, s.p50, s.p90, s.p99, s.p999, s.max, s.mean
        );
    };
    for (outcome, summary) in &report.latency_by_outcome_us {
        row(&format!("{} from intended", outcome.label()), summary);
    }
    if !report.latency_by_outcome_us.contains_key(&Outcome::Success) {
        row("2xx from intended", &report.latency_us);
    }
    row("2xx service (from send)", &report.service_time_us);
    row("send lag", &report.send_lag_us);
    let server = &report.server_timing;
    if server.inference_us.count > 0 {
        row("server queue", &server.queue_us);
        row("server inference", &server.inference_us);
        row("server batch rows", &server.batch_rows);
    }
    if !report.backends.is_empty() {
        let backends: Vec<String> = report
            .backends
            .iter()
            .map(|(name, count)| format!("{name}={count}"))
            .collect();
        let _ = writeln!(out, "\nbackends   {}", backends.join("  "));
    }
    out
}
