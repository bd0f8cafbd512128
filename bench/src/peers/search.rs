//! The search for a server's maximum throughput under a latency limit, as
//! a pure state machine: [`RateSearch`] says which open-loop rate to try
//! next and learns whether it passed; [`search_max_rate`] drives it with
//! any (async) probe. No clock and no I/O here, so it is tested with plain
//! functions from rate to outcome.
//!
//! The search grows the rate geometrically from `start` while steps pass,
//! shrinks it from `start` while they fail, and once it has a passing rate
//! below a failing one, bisects the bracket (geometric midpoint) a few
//! times. With `confirm_failures`, a failing step is run once more at the
//! same rate and counts as failed only if it fails again: a step's p99 is
//! its slowest 1%, and on a shared machine one stall of the host can put
//! it over the limit at a rate the server carries. It never takes more
//! than `max_steps` steps.

use std::future::Future;

use serde::Serialize;

/// How the search moves.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SearchPlan {
    /// The first rate tried, in requests per second.
    pub start_rate: f64,
    /// Factor between successive rates before a bracket is found (> 1).
    pub growth: f64,
    /// Never offer more than this.
    pub max_rate: f64,
    /// Never go below this; a server that fails here has no passing rate.
    pub min_rate: f64,
    /// Bisections of the bracket at most.
    pub refine_steps: usize,
    /// Stop bisecting once failing ÷ passing rate is at most `1 + tolerance`.
    pub tolerance: f64,
    /// Steps at most, whatever happens.
    pub max_steps: usize,
    /// Run a failing step again before taking it as failed.
    pub confirm_failures: bool,
}

/// Whether a step meets the limit: something succeeded, nothing failed
/// (dropped, timed out or answered with an error) and the p99 from the
/// intended send time is within the limit.
pub fn passes(successes: u64, errors: u64, p99_us: u64, limit_us: u64) -> bool {
    successes > 0 && errors == 0 && p99_us <= limit_us
}

/// Where a search stands.
#[derive(Debug, Clone)]
pub struct RateSearch {
    plan: SearchPlan,
    best_pass: Option<f64>,
    lowest_fail: Option<f64>,
    steps: usize,
    refined: usize,
    /// A rate that failed once and is to be tried again.
    unconfirmed: Option<f64>,
}

impl RateSearch {
    pub fn new(plan: SearchPlan) -> Self {
        Self {
            plan,
            best_pass: None,
            lowest_fail: None,
            steps: 0,
            refined: 0,
            unconfirmed: None,
        }
    }

    /// The rate to try next, or `None` when the search is over.
    pub fn next_rate(&self) -> Option<f64> {
        let plan = &self.plan;
        if self.steps >= plan.max_steps || plan.growth <= 1.0 {
            return None;
        }
        if let Some(rate) = self.unconfirmed {
            return Some(rate);
        }
        match (self.best_pass, self.lowest_fail) {
            (None, None) => Some(plan.start_rate.clamp(plan.min_rate, plan.max_rate)),
            (Some(pass), None) => {
                if pass >= plan.max_rate {
                    None
                } else {
                    Some((pass * plan.growth).min(plan.max_rate))
                }
            }
            (None, Some(fail)) => {
                let rate = fail / plan.growth;
                if fail <= plan.min_rate {
                    None
                } else {
                    Some(rate.max(plan.min_rate))
                }
            }
            (Some(pass), Some(fail)) => {
                if self.refined >= plan.refine_steps || fail <= pass * (1.0 + plan.tolerance) {
                    None
                } else {
                    Some((pass * fail).sqrt())
                }
            }
        }
    }

    /// Records the outcome of a step at `rate`.
    pub fn record(&mut self, rate: f64, passed: bool) {
        if !passed && self.plan.confirm_failures && self.unconfirmed != Some(rate) {
            self.steps += 1;
            self.unconfirmed = Some(rate);
            return;
        }
        self.unconfirmed = None;
        if self.best_pass.is_some() && self.lowest_fail.is_some() {
            self.refined += 1;
        }
        self.steps += 1;
        if passed {
            self.best_pass = Some(self.best_pass.map_or(rate, |best| best.max(rate)));
        } else {
            self.lowest_fail = Some(self.lowest_fail.map_or(rate, |low| low.min(rate)));
        }
    }
}

/// A probed step: the rate offered and whether it passed.
pub trait Probed {
    fn rate(&self) -> f64;
    fn passed(&self) -> bool;
}

/// Runs the search, calling `probe` for each rate, and returns every step
/// in the order taken. A probe that answers `None` (its time budget is
/// spent) ends the search there.
pub async fn search_max_rate<S, E, F, Fut>(plan: &SearchPlan, mut probe: F) -> Result<Vec<S>, E>
where
    S: Probed,
    F: FnMut(f64) -> Fut,
    Fut: Future<Output = Result<Option<S>, E>>,
{
    let mut search = RateSearch::new(plan.clone());
    let mut steps = Vec::new();
    while let Some(rate) = search.next_rate() {
        let Some(step) = probe(rate).await? else {
            break;
        };
        search.record(step.rate(), step.passed());
        steps.push(step);
    }
    Ok(steps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, Copy)]
    struct Fake {
        rate: f64,
        passed: bool,
    }

    impl Probed for Fake {
        fn rate(&self) -> f64 {
            self.rate
        }
        fn passed(&self) -> bool {
            self.passed
        }
    }

    fn plan() -> SearchPlan {
        SearchPlan {
            start_rate: 100.0,
            growth: 2.0,
            max_rate: 100_000.0,
            min_rate: 10.0,
            refine_steps: 3,
            tolerance: 0.05,
            max_steps: 20,
            confirm_failures: false,
        }
    }

    /// Runs the search against a server described by `p99_and_errors`.
    fn search(plan: &SearchPlan, mut p99_and_errors: impl FnMut(f64) -> (u64, u64)) -> Vec<Fake> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        runtime
            .block_on(search_max_rate(plan, |rate| {
                let (p99, errors) = p99_and_errors(rate);
                std::future::ready(Ok::<_, ()>(Some(Fake {
                    rate,
                    passed: passes(1, errors, p99, 50_000),
                })))
            }))
            .unwrap()
    }

    fn best(steps: &[Fake]) -> Option<f64> {
        steps
            .iter()
            .filter(|s| s.passed)
            .map(|s| s.rate)
            .fold(None, |best, r| Some(best.map_or(r, |b: f64| b.max(r))))
    }

    #[test]
    fn passes_needs_successes_no_errors_and_p99_within_the_limit() {
        assert!(passes(10, 0, 50_000, 50_000));
        assert!(!passes(10, 0, 50_001, 50_000));
        assert!(!passes(10, 1, 10, 50_000));
        assert!(!passes(0, 0, 0, 50_000));
    }

    #[test]
    fn grows_then_bisects_to_within_the_refinement() {
        // A server whose p99 crosses 50 ms at 1,500 requests/s.
        let steps = search(&plan(), |rate| {
            if rate <= 1_500.0 {
                (5_000, 0)
            } else {
                (200_000, 0)
            }
        });
        let rates: Vec<f64> = steps.iter().map(|s| s.rate).collect();
        assert_eq!(
            &rates[..6],
            &[100.0, 200.0, 400.0, 800.0, 1_600.0, 800.0 * 2f64.sqrt()]
        );
        let best = best(&steps).unwrap();
        // Three bisections of the 800..1600 bracket: within 2^(1/8) of it.
        assert!(
            best <= 1_500.0 && best > 1_500.0 / 2f64.powf(1.0 / 8.0),
            "{best}"
        );
        assert_eq!(steps.len(), 5 + 3);
    }

    #[test]
    fn a_failure_that_does_not_repeat_does_not_end_the_climb() {
        let confirming = SearchPlan {
            confirm_failures: true,
            ..plan()
        };
        // Fails the first time at 400/s only (one stall), and for good
        // above 1,500/s.
        let mut stalled = false;
        let steps = search(&confirming, move |rate| {
            if rate == 400.0 && !stalled {
                stalled = true;
                (200_000, 0)
            } else if rate <= 1_500.0 {
                (5_000, 0)
            } else {
                (200_000, 0)
            }
        });
        let rates: Vec<f64> = steps.iter().map(|s| s.rate).collect();
        // 400 again after its failure, then on; 1,600 fails twice.
        assert_eq!(
            &rates[..7],
            &[100.0, 200.0, 400.0, 400.0, 800.0, 1_600.0, 1_600.0]
        );
        let found = best(&steps).unwrap();
        assert!(
            found <= 1_500.0 && found > 1_500.0 / 2f64.powf(1.0 / 8.0),
            "{found}"
        );
        // Without confirmation the stall at 400/s decides.
        let mut stalled = false;
        let once = search(&plan(), move |rate| {
            if rate == 400.0 && !stalled {
                stalled = true;
                (200_000, 0)
            } else {
                (5_000, 0)
            }
        });
        assert!(best(&once).unwrap() < 400.0);
    }

    #[test]
    fn errors_fail_a_step_even_with_a_low_p99() {
        let steps = search(&plan(), |rate| (1_000, u64::from(rate > 500.0)));
        let best = best(&steps).unwrap();
        assert!((400.0..=500.0).contains(&best), "{best}");
    }

    #[test]
    fn shrinks_when_the_start_fails_and_gives_up_at_the_minimum() {
        let steps = search(&plan(), |rate| if rate <= 30.0 { (1, 0) } else { (1, 5) });
        assert_eq!(steps[0].rate, 100.0);
        assert_eq!(steps[1].rate, 50.0);
        assert_eq!(steps[2].rate, 25.0);
        let best = best(&steps).unwrap();
        assert!(best > 25.0 && best <= 30.0, "{best}");

        let never = search(&plan(), |_| (1, 1));
        assert!(best_of(&never).is_none());
        assert_eq!(never.last().unwrap().rate, 10.0);
    }

    fn best_of(steps: &[Fake]) -> Option<f64> {
        best(steps)
    }

    #[test]
    fn stops_at_the_maximum_rate_and_the_step_budget() {
        let all_pass = search(&plan(), |_| (1, 0));
        assert_eq!(all_pass.last().unwrap().rate, 100_000.0);
        assert!(all_pass.iter().all(|s| s.passed));
        let short = SearchPlan {
            max_steps: 3,
            ..plan()
        };
        assert_eq!(search(&short, |_| (1, 0)).len(), 3);
        // The state machine alone agrees.
        let mut state = RateSearch::new(short);
        for _ in 0..3 {
            let rate = state.next_rate().unwrap();
            state.record(rate, true);
        }
        assert_eq!(state.next_rate(), None);
    }

    #[test]
    fn a_probe_without_a_step_ends_the_search() {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut calls = 0;
        let steps = runtime
            .block_on(search_max_rate(&plan(), |rate| {
                calls += 1;
                let step = (calls <= 2).then_some(Fake { rate, passed: true });
                std::future::ready(Ok::<_, ()>(step))
            }))
            .unwrap();
        assert_eq!(steps.len(), 2);
        assert_eq!(calls, 3);
    }
}
