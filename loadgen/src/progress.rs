//! The live progress line on stderr while a run goes on: elapsed time,
//! current phase, offered and achieved rate, p50/p99 of the last second and
//! errors. Drawn with `indicatif`, only when stderr is a terminal (and not
//! `--quiet`): piped or redirected output gets the final summary only.

use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::runner::Live;

/// A progress line, or nothing.
#[derive(Debug)]
pub struct ProgressLine {
    bar: Option<ProgressBar>,
}

impl ProgressLine {
    /// A line on stderr if `wanted` and stderr is a terminal.
    pub fn stderr(wanted: bool) -> Self {
        if !(wanted && std::io::stderr().is_terminal()) {
            return Self { bar: None };
        }
        let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
        let style = ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner());
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(250));
        Self { bar: Some(bar) }
    }

    /// Shows `live`.
    pub fn update(&self, live: &Live) {
        if let Some(bar) = &self.bar {
            bar.set_message(line(live));
        }
    }

    /// Removes the line (before the summary is printed).
    pub fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

fn millis(us: Option<u64>) -> String {
    us.map_or_else(|| "-".to_owned(), |us| format!("{:.1}", us as f64 / 1000.0))
}

/// The text of the line.
pub fn line(live: &Live) -> String {
    format!(
        "{:>6.1} s | phase {}/{} {} | offered {:.0}/s achieved {:.0}/s | last 1 s p50 {} ms p99 {} ms | errors {} | in flight {}",
        live.elapsed.as_secs_f64(),
        live.phase_index + 1,
        live.phases.max(1),
        live.phase,
        live.offered_per_s,
        live.achieved_per_s,
        millis(live.p50_us),
        millis(live.p99_us),
        live.errors,
        live.in_flight
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_what_a_user_watches() {
        let live = Live {
            elapsed: Duration::from_millis(12_340),
            phase: "ramp".into(),
            phase_index: 1,
            phases: 3,
            offered_per_s: 120.4,
            achieved_per_s: 118.0,
            p50_us: Some(1_260),
            p99_us: None,
            errors: 2,
            in_flight: 5,
            sent: 900,
        };
        let text = line(&live);
        for part in [
            "12.3 s",
            "phase 2/3 ramp",
            "offered 120/s",
            "achieved 118/s",
            "p50 1.3 ms",
            "p99 - ms",
            "errors 2",
            "in flight 5",
        ] {
            assert!(text.contains(part), "{part:?} in {text:?}");
        }
    }

    #[test]
    fn no_line_when_not_wanted() {
        let progress = ProgressLine::stderr(false);
        assert!(progress.bar.is_none());
        progress.update(&Live {
            elapsed: Duration::ZERO,
            phase: String::new(),
            phase_index: 0,
            phases: 1,
            offered_per_s: 0.0,
            achieved_per_s: 0.0,
            p50_us: None,
            p99_us: None,
            errors: 0,
            in_flight: 0,
            sent: 0,
        });
        progress.finish();
    }
}
