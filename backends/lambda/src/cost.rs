//! What an invocation costs on Lambda: the request price plus memory size
//! times billed duration (GB-seconds). Duration is billed in whole
//! milliseconds (`billing_granularity_ms`), and for a cold start it
//! includes the instance's init phase (always billed for custom runtimes
//! such as `provided.al2023`, which this function uses).

use serde::Serialize;

/// Prices, by default AWS's current list prices for x86 in us-east-1
/// (first pricing tier): $0.0000166667 per GB-second, $0.20 per million
/// requests. For arm64 use 0.0000133334 per GB-second.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Pricing {
    pub gb_second_dollars: f64,
    pub request_dollars: f64,
    pub billing_granularity_ms: u64,
}

impl Default for Pricing {
    fn default() -> Self {
        Self {
            gb_second_dollars: 0.000_016_666_7,
            request_dollars: 0.000_000_2,
            billing_granularity_ms: 1,
        }
    }
}

/// The cost of one invocation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct InvocationCost {
    /// Billed duration in milliseconds (rounded up to the granularity).
    pub billed_ms: u64,
    /// Memory size times billed duration.
    pub gb_seconds: f64,
    /// Request price plus compute price.
    pub dollars: f64,
}

impl Pricing {
    /// Duration `duration_us` rounded up to the billing granularity.
    pub fn billed_ms(&self, duration_us: u64) -> u64 {
        let step_us = self.billing_granularity_ms.max(1).saturating_mul(1000);
        duration_us.div_ceil(step_us).max(1) * self.billing_granularity_ms.max(1)
    }

    /// The cost of an invocation that ran `duration_us` on an instance of
    /// `memory_mb` (1 GB = 1024 MB, as AWS bills).
    pub fn cost(&self, memory_mb: u64, duration_us: u64) -> InvocationCost {
        let billed_ms = self.billed_ms(duration_us);
        let gb_seconds = memory_mb as f64 / 1024.0 * billed_ms as f64 / 1000.0;
        InvocationCost {
            billed_ms,
            gb_seconds,
            dollars: self.request_dollars + gb_seconds * self.gb_second_dollars,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() <= 1e-15 + 1e-9 * b.abs()
    }

    #[test]
    fn duration_is_billed_in_whole_milliseconds_rounded_up() {
        let pricing = Pricing::default();
        assert_eq!(pricing.billed_ms(1), 1);
        assert_eq!(
            pricing.billed_ms(0),
            1,
            "every invocation bills at least 1 ms"
        );
        assert_eq!(pricing.billed_ms(1_000), 1);
        assert_eq!(pricing.billed_ms(1_001), 2);
        let coarse = Pricing {
            billing_granularity_ms: 100,
            ..pricing
        };
        assert_eq!(coarse.billed_ms(101_000), 200);
    }

    #[test]
    fn cost_is_request_price_plus_gb_seconds_at_the_list_price() {
        let pricing = Pricing::default();
        // 1024 MB for 100 ms: 0.1 GB-s.
        let cost = pricing.cost(1024, 99_500);
        assert_eq!(cost.billed_ms, 100);
        assert!(close(cost.gb_seconds, 0.1), "{cost:?}");
        assert!(
            close(cost.dollars, 0.000_000_2 + 0.1 * 0.000_016_666_7),
            "{cost:?}"
        );
        // A million 128 MB, 1 ms invocations: $0.20 + 125 GB-s.
        let one = pricing.cost(128, 1_000);
        let million = one.dollars * 1e6;
        assert!(close(million, 0.2 + 125.0 * 0.000_016_666_7), "{million}");
        // The AWS pricing page's example: 3 M requests, 120 ms, 1536 MB
        // → 540,000 GB-s → $9.00 compute (before free tier) + $0.60 requests.
        let example = pricing.cost(1536, 120_000);
        assert!(close(example.gb_seconds * 3e6, 540_000.0));
        assert!((example.dollars * 3e6 - (9.000_018 + 0.6)).abs() < 1e-6);
    }
}
