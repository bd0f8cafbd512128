//! The human-readable summary of a [`Report`], printed at the end of a run:
//! Artillery's dotted `metric: ..... value` list for the whole run, then one
//! table per phase, per model and per backend.

use std::fmt::Write;

use crate::phases::{PhaseLoad, Process};
use crate::record::{Counts, GroupReport, LatencySummary, Mode, Outcome, Report};

/// Width of the dotted lines.
const WIDTH: usize = 72;

/// The whole summary.
pub fn summary_table(report: &Report) -> String {
    let mut out = String::new();
    header(&mut out, report);
    totals(&mut out, report);
    phases(&mut out, report);
    breakdown(&mut out, "model", report.per_model.iter());
    if !(report.per_backend.len() == 1 && report.per_backend.contains_key("none")) {
        breakdown(&mut out, "backend", report.per_backend.iter());
    }
    out
}

fn header(out: &mut String, report: &Report) {
    let s = &report.settings;
    let load = match s.mode {
        Mode::OpenLoop => {
            let process = match s.process {
                Some(Process::Poisson { seed }) => format!("poisson arrivals, seed {seed}"),
                _ => "constant arrivals".to_owned(),
            };
            format!(
                "open loop, {process}, {} phase{}, max {} in flight",
                report.per_phase.len(),
                if report.per_phase.len() == 1 { "" } else { "s" },
                s.max_in_flight.unwrap_or(0)
            )
        }
        Mode::ClosedLoop => format!("closed loop, {} concurrent", s.concurrency.unwrap_or(0)),
    };
    let mix: Vec<String> = report
        .mix
        .iter()
        .map(|m| {
            format!(
                "{} batch {} ({:.0}%)",
                m.model,
                m.batch,
                m.expected_share * 100.0
            )
        })
        .collect();
    let rule = "-".repeat(WIDTH);
    let _ = writeln!(out, "{rule}");
    let _ = writeln!(
        out,
        "Summary report: {load}, {:.1} s planned",
        report.duration_s
    );
    let _ = writeln!(out, "  target {}", s.url);
    let _ = writeln!(
        out,
        "  mix {} ({} inputs, {} outputs)",
        mix.join(", "),
        if s.binary { "binary" } else { "JSON" },
        if s.binary_output { "binary" } else { "JSON" }
    );
    let _ = writeln!(out, "{rule}");
}

/// `name: ....... value`, Artillery's layout.
fn dotted(out: &mut String, indent: usize, name: &str, value: &str) {
    let used = indent + name.len() + 2 + value.chars().count();
    let dots = WIDTH.saturating_sub(used).max(3);
    let _ = writeln!(
        out,
        "{:indent$}{name}: {} {value}",
        "",
        ".".repeat(dots.saturating_sub(1))
    );
}

fn ms(us: u64) -> String {
    format!("{:.3}", us as f64 / 1000.0)
}

fn totals(out: &mut String, report: &Report) {
    dotted(out, 0, "requests.due", &report.scheduled.to_string());
    dotted(out, 0, "requests.sent", &report.sent.to_string());
    for outcome in Outcome::ALL {
        let count = report.counts.get(outcome);
        // Like Artillery, only the outcomes that happened (and always 2xx).
        if count > 0 || outcome == Outcome::Success {
            dotted(
                out,
                0,
                &format!("responses.{}", outcome.label()),
                &count.to_string(),
            );
        }
    }
    dotted(
        out,
        0,
        "request_rate.offered",
        &format!("{:.1}/s", report.offered_per_s),
    );
    dotted(
        out,
        0,
        "request_rate.achieved (2xx)",
        &format!(
            "{:.1}/s ({:.1} items/s)",
            report.throughput_per_s, report.items_per_s
        ),
    );
    dotted(out, 0, "elapsed", &format!("{:.2} s", report.elapsed_s));
    latency_block(
        out,
        "response_time (ms, 2xx, from intended send)",
        &report.latency_us,
    );
    latency_block(
        out,
        "service_time (ms, 2xx, from actual send)",
        &report.service_time_us,
    );
    let lag = &report.send_lag_us;
    dotted(
        out,
        0,
        "send_lag (ms) median / p99 / max",
        &format!("{} / {} / {}", ms(lag.p50), ms(lag.p99), ms(lag.max)),
    );
    let server = &report.server_timing;
    if server.inference_us.count > 0 {
        dotted(
            out,
            0,
            "server.queue_time (ms) median / p99",
            &format!("{} / {}", ms(server.queue_us.p50), ms(server.queue_us.p99)),
        );
        dotted(
            out,
            0,
            "server.inference_time (ms) median / p99",
            &format!(
                "{} / {}",
                ms(server.inference_us.p50),
                ms(server.inference_us.p99)
            ),
        );
        dotted(
            out,
            0,
            "server.batch_rows mean",
            &format!("{:.1}", server.batch_rows.mean),
        );
    }
}

fn latency_block(out: &mut String, title: &str, s: &LatencySummary) {
    let _ = writeln!(out, "{title}:");
    if s.count == 0 {
        dotted(out, 2, "count", "0");
        return;
    }
    for (name, value) in [
        ("min", ms(s.min)),
        ("mean", format!("{:.3}", s.mean / 1000.0)),
        ("median", ms(s.p50)),
        ("p90", ms(s.p90)),
        ("p99", ms(s.p99)),
        ("p999", ms(s.p999)),
        ("max", ms(s.max)),
    ] {
        dotted(out, 2, name, &value);
    }
}

fn counts_cells(c: &Counts) -> String {
    Outcome::ALL
        .iter()
        .map(|&o| format!("{:>9}", c.get(o)))
        .collect()
}

fn counts_header() -> String {
    Outcome::ALL
        .iter()
        .map(|o| format!("{:>9}", o.label()))
        .collect()
}

/// A rate with at most three decimals and no trailing zeros.
fn rate(value: f64) -> String {
    let text = format!("{value:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

fn load_text(load: Option<PhaseLoad>) -> String {
    match load {
        Some(PhaseLoad::Rate { rate: r }) => format!("{}/s", rate(r)),
        Some(PhaseLoad::Ramp { from, to }) => format!("{}->{}/s", rate(from), rate(to)),
        Some(PhaseLoad::Count { count }) => format!("{count} req"),
        Some(PhaseLoad::Pause) => "pause".into(),
        None => "closed".into(),
    }
}

fn phases(out: &mut String, report: &Report) {
    let _ = writeln!(out, "\nper phase (latency ms, 2xx, from intended send):");
    let _ = writeln!(
        out,
        "  {:<3}{:<22}{:>8} {:>18}{:>10}{:>9}{}{:>9}{:>9}",
        "#",
        "phase",
        "secs",
        "offered",
        "achieved",
        "due",
        counts_header(),
        "p50",
        "p99"
    );
    for p in &report.per_phase {
        let _ = writeln!(
            out,
            "  {:<3}{:<22}{:>8.1} {:>18}{:>10.1}{:>9}{}{:>9}{:>9}",
            p.index + 1,
            clip(&p.name, 21),
            p.duration_s,
            load_text(p.load),
            p.stats.throughput_per_s,
            p.stats.due,
            counts_cells(&p.stats.counts),
            ms(p.stats.latency_us.p50),
            ms(p.stats.latency_us.p99)
        );
    }
}

fn breakdown<'a>(
    out: &mut String,
    what: &str,
    groups: impl Iterator<Item = (&'a String, &'a GroupReport)>,
) {
    let _ = writeln!(out, "\nper {what} (latency ms, 2xx, from intended send):");
    let _ = writeln!(
        out,
        "  {:<25}{:>10}{:>9}{}{:>9}{:>9}",
        what,
        "req/s",
        "due",
        counts_header(),
        "p50",
        "p99"
    );
    for (name, g) in groups {
        let _ = writeln!(
            out,
            "  {:<25}{:>10.1}{:>9}{}{:>9}{:>9}",
            clip(name, 24),
            g.throughput_per_s,
            g.due,
            counts_cells(&g.counts),
            ms(g.latency_us.p50),
            ms(g.latency_us.p99)
        );
    }
}

fn clip(text: &str, width: usize) -> String {
    if text.chars().count() <= width {
        text.to_owned()
    } else {
        let mut clipped: String = text.chars().take(width.saturating_sub(1)).collect();
        clipped.push('…');
        clipped
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dotted_lines_line_up() {
        let mut out = String::new();
        dotted(&mut out, 0, "requests.sent", "12");
        dotted(&mut out, 2, "p99", "1.250");
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines[0].chars().count(), lines[1].chars().count());
        assert!(lines[0].starts_with("requests.sent: ..."));
        assert!(lines[1].starts_with("  p99: ..."));
        assert!(lines[1].ends_with(" 1.250"));
    }

    #[test]
    fn rates_print_without_trailing_zeros() {
        assert_eq!(rate(50.0), "50");
        assert_eq!(rate(0.0556), "0.056");
        assert_eq!(
            load_text(Some(PhaseLoad::Ramp {
                from: 50.0,
                to: 400.0
            })),
            "50->400/s"
        );
    }

    #[test]
    fn long_names_are_clipped() {
        assert_eq!(clip("short", 10), "short");
        assert_eq!(clip("a very long phase name", 8), "a very …");
    }
}
