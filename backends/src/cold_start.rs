//! The recent cold starts of a backend, as placement sees them: the mean of
//! the last few, so a policy's cold-start estimate follows the machine it
//! runs on (a slow disk, a big model) instead of a configured guess, and
//! forgets old starts as conditions change. The container pool, the Lambda
//! backend and the simulator's models of both keep one and report its mean
//! as [`BackendSnapshot::cold_start_ms`](crate::BackendSnapshot).

use std::collections::VecDeque;

/// Cold starts averaged for placement.
pub const COLD_STARTS_AVERAGED: usize = 8;

/// The last [`COLD_STARTS_AVERAGED`] cold starts, in milliseconds.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RecentColdStarts {
    recent: VecDeque<f64>,
}

impl RecentColdStarts {
    /// Records one cold start of `ms` milliseconds (negative and non-finite
    /// values, which no clock gives, are ignored).
    pub fn record(&mut self, ms: f64) {
        if !ms.is_finite() || ms < 0.0 {
            return;
        }
        if self.recent.len() == COLD_STARTS_AVERAGED {
            self.recent.pop_front();
        }
        self.recent.push_back(ms);
    }

    /// Mean of the recent cold starts, `None` before the first.
    pub fn mean_ms(&self) -> Option<f64> {
        (!self.recent.is_empty())
            .then(|| self.recent.iter().sum::<f64>() / self.recent.len() as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn averages_the_latest_and_forgets_older_ones() {
        let mut starts = RecentColdStarts::default();
        assert_eq!(starts.mean_ms(), None);
        starts.record(1000.0);
        starts.record(f64::NAN);
        starts.record(-1.0);
        assert_eq!(starts.mean_ms(), Some(1000.0));
        for _ in 0..COLD_STARTS_AVERAGED {
            starts.record(100.0);
        }
        assert_eq!(starts.mean_ms(), Some(100.0), "the 1000 ms start fell off");
        starts.record(900.0);
        let expected =
            (100.0 * (COLD_STARTS_AVERAGED - 1) as f64 + 900.0) / COLD_STARTS_AVERAGED as f64;
        assert_eq!(starts.mean_ms(), Some(expected));
    }
}
