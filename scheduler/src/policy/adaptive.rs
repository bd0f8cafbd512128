//! `adaptive`: meet a per-model p99 latency SLO at the least cost.
//!
//! For each candidate the policy predicts this request's p99 latency:
//!
//! ```text
//! base   = observed peak-EWMA latency of the backend for this model
//!          (or a per-kind prior before the first answer)
//! ahead  = requests that would wait before this one
//!        = max(0, in_flight - concurrency + 1)
//! cold   = cold-start time of the kind, if no slot is free and the
//!          backend must scale out (start a container, a Lambda instance)
//! p99    = tail_factor * base * (1 + ahead / concurrency) + cold
//! ```
//!
//! The queue term is the M/M/c intuition that each request ahead of ours
//! costs one service time divided among the servers. A candidate that cannot
//! take the payload, has no room (it would refuse), or fails more than
//! `max_failure_rate` of recent requests is excluded. Among the rest, those
//! predicted within the SLO compete on the marginal cost of this request,
//! estimated from the predicted service time:
//!
//! ```text
//! local      local_per_second × base
//! container  container_per_second × base
//!            + container_per_second × container_min_seconds   if it must scale out
//! lambda     lambda_per_request
//!            + lambda_per_gb_second × memory_gb × ⌈base + cold⌉ms   (a cold
//!              start bills the instance's init too)
//! ```
//!
//! A container started for one request stays (and is paid for) until the
//! pool has been idle for its idle timeout, so scaling out costs far more
//! than one request's occupancy: `container_min_seconds` (default 60 s, the
//! pool's default `idle_timeout_ms`) charges that to the request that
//! would cause it. If none is predicted within the SLO, the fastest
//! prediction wins.
//!
//! The simulator (`switchyard sim`, `bench/results/sim.md`) found why the
//! scale-out term matters: without it, bursts made the policy prefer
//! containers over Lambda for their small per-request occupancy price, and
//! the pool's idle containers then cost more than the invocations saved.

use switchyard_backends::BackendKind;

use super::{BackendView, Decision, Policy, RequestFeatures};

/// Prices used to compare backends, in dollars.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BackendCosts {
    /// Local server occupancy, per second (0: already paid for).
    pub local_per_second: f64,
    /// Container occupancy, per second.
    pub container_per_second: f64,
    /// Lambda compute, per GB-second.
    pub lambda_per_gb_second: f64,
    /// Lambda, per request.
    pub lambda_per_request: f64,
    /// Lambda function memory in MB.
    pub lambda_memory_mb: f64,
    /// Seconds a container started for a request is paid for at least.
    pub container_min_seconds: f64,
}

impl Default for BackendCosts {
    fn default() -> Self {
        Self {
            local_per_second: 0.0,
            // One vCPU of on-demand capacity at about $0.045 per hour.
            container_per_second: 0.0000125,
            // AWS Lambda x86 list prices.
            lambda_per_gb_second: 0.0000166667,
            lambda_per_request: 0.0000002,
            lambda_memory_mb: 2048.0,
            container_min_seconds: 60.0,
        }
    }
}

/// Parameters of [`Adaptive`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveParams {
    pub slo_p99_ms: f64,
    pub max_failure_rate: f64,
    pub tail_factor: f64,
    /// Assumed latency per kind before anything was measured, ms.
    pub prior_latency_ms: [f64; 3],
    /// Cold-start time per kind, ms.
    pub cold_start_ms: [f64; 3],
    pub costs: BackendCosts,
}

impl Default for AdaptiveParams {
    fn default() -> Self {
        Self {
            slo_p99_ms: 100.0,
            max_failure_rate: 0.2,
            tail_factor: 1.5,
            prior_latency_ms: [5.0, 10.0, 50.0],
            cold_start_ms: [0.0, 500.0, 150.0],
            costs: BackendCosts::default(),
        }
    }
}

fn slot(kind: BackendKind) -> usize {
    match kind {
        BackendKind::Local => 0,
        BackendKind::Container => 1,
        BackendKind::Lambda => 2,
    }
}

/// The SLO-and-cost policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Adaptive {
    pub params: AdaptiveParams,
}

/// One candidate's prediction.
#[derive(Debug, Clone, Copy)]
struct Estimate {
    index: usize,
    p99_ms: f64,
    cost: f64,
}

impl Adaptive {
    fn estimate(&self, index: usize, view: &BackendView) -> Estimate {
        let p = &self.params;
        let kind = slot(view.snapshot.kind);
        let base = view.observed.latency_ms.unwrap_or(p.prior_latency_ms[kind]);
        let concurrency = view.snapshot.concurrency.max(1) as f64;
        let ahead = (view.snapshot.in_flight + 1).saturating_sub(view.snapshot.concurrency) as f64;
        let must_scale =
            view.snapshot.in_flight >= view.snapshot.concurrency && view.snapshot.headroom > 0;
        let cold = if must_scale {
            p.cold_start_ms[kind]
        } else {
            0.0
        };
        let p99_ms = p.tail_factor * base * (1.0 + ahead / concurrency) + cold;
        let seconds = base / 1000.0;
        let cost = match view.snapshot.kind {
            BackendKind::Local => p.costs.local_per_second * seconds,
            BackendKind::Container => {
                let scale_out = if must_scale {
                    p.costs.container_per_second * p.costs.container_min_seconds
                } else {
                    0.0
                };
                p.costs.container_per_second * seconds + scale_out
            }
            BackendKind::Lambda => {
                // Lambda bills whole milliseconds, a cold start's init too.
                let billed = (base + cold).ceil() / 1000.0;
                p.costs.lambda_per_gb_second * p.costs.lambda_memory_mb / 1024.0 * billed
                    + p.costs.lambda_per_request
            }
        };
        Estimate {
            index,
            p99_ms,
            cost,
        }
    }
}

impl Policy for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }

    fn place(&self, request: &RequestFeatures<'_>, backends: &[BackendView]) -> Option<Decision> {
        let estimates: Vec<Estimate> = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| {
                b.can_take(request)
                    && b.has_room()
                    && b.observed.failure_rate <= self.params.max_failure_rate
            })
            .map(|(i, b)| self.estimate(i, b))
            .collect();
        let slo = self.params.slo_p99_ms;
        let within = estimates.iter().filter(|e| e.p99_ms <= slo).min_by(|a, b| {
            a.cost
                .total_cmp(&b.cost)
                .then(a.p99_ms.total_cmp(&b.p99_ms))
        });
        let (chosen, why) = match within {
            Some(e) => (e, format!("cheapest within p99 {slo:.0} ms")),
            None => (
                estimates
                    .iter()
                    .min_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms))?,
                format!("none within p99 {slo:.0} ms, fastest"),
            ),
        };
        Some(Decision {
            backend: chosen.index,
            reason: format!(
                "adaptive: {why} -> {} (predicted p99 {:.1} ms, ${:.3e}/request)",
                backends[chosen.index].snapshot.name, chosen.p99_ms, chosen.cost
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testing::{request, view};

    fn measured(name: &str, kind: BackendKind, in_flight: u64, latency_ms: f64) -> BackendView {
        let mut v = view(name, kind, in_flight, 64);
        v.snapshot.concurrency = 2;
        v.observed.latency_ms = Some(latency_ms);
        v.observed.samples = 100;
        v
    }

    fn adaptive(slo: f64) -> Adaptive {
        Adaptive {
            params: AdaptiveParams {
                slo_p99_ms: slo,
                ..AdaptiveParams::default()
            },
        }
    }

    #[test]
    fn picks_the_cheapest_backend_that_meets_the_slo() {
        let backends = [
            measured("lambda", BackendKind::Lambda, 0, 20.0),
            measured("local", BackendKind::Local, 0, 10.0),
        ];
        let decision = adaptive(100.0)
            .place(&request(1.0, 100), &backends)
            .expect("placed");
        assert_eq!(
            decision.backend, 1,
            "local is free and fast enough: {}",
            decision.reason
        );
    }

    #[test]
    fn queueing_pushes_a_busy_backend_past_the_slo_and_onto_a_paid_one() {
        // Local: 2 slots, 10 busy -> 9 ahead -> 1.5 * 10 * (1 + 4.5) = 82.5 ms.
        let backends = [
            measured("local", BackendKind::Local, 10, 10.0),
            measured("lambda", BackendKind::Lambda, 0, 20.0),
        ];
        let decision = adaptive(50.0)
            .place(&request(1.0, 100), &backends)
            .expect("placed");
        assert_eq!(decision.backend, 1, "{}", decision.reason);
        let decision = adaptive(100.0)
            .place(&request(1.0, 100), &backends)
            .expect("placed");
        assert_eq!(
            decision.backend, 0,
            "with a looser SLO the free backend wins: {}",
            decision.reason
        );
    }

    #[test]
    fn excludes_failing_full_and_too_small_backends_and_falls_back_to_the_fastest() {
        let mut failing = measured("container", BackendKind::Container, 0, 1.0);
        failing.observed.failure_rate = 0.9;
        let mut small = measured("lambda", BackendKind::Lambda, 0, 1.0);
        small.snapshot.max_payload_bytes = Some(10);
        let slow = measured("local", BackendKind::Local, 0, 500.0);
        let backends = [failing, small, slow];
        let decision = adaptive(50.0)
            .place(&request(1.0, 100), &backends)
            .expect("placed");
        assert_eq!(decision.backend, 2);
        assert!(
            decision.reason.contains("none within"),
            "{}",
            decision.reason
        );
    }

    #[test]
    fn cold_start_counts_when_the_backend_must_scale_out() {
        let mut lambda = measured("lambda", BackendKind::Lambda, 2, 10.0);
        lambda.snapshot.headroom = 10;
        let estimate = adaptive(100.0).estimate(0, &lambda);
        // 1 ahead of 2 slots: 1.5 * 10 * 1.5 = 22.5, plus the 150 ms cold start.
        assert!((estimate.p99_ms - 172.5).abs() < 1e-9, "{estimate:?}");
    }

    #[test]
    fn scaling_out_a_container_costs_its_minimum_life() {
        let mut container = measured("container", BackendKind::Container, 0, 100.0);
        let policy = adaptive(1000.0);
        let warm = policy.estimate(0, &container);
        assert!((warm.cost - 0.0000125 * 0.1).abs() < 1e-15, "{warm:?}");
        container.snapshot.in_flight = 2;
        container.snapshot.headroom = 64;
        let scaling = policy.estimate(0, &container);
        assert!(
            (scaling.cost - 0.0000125 * (0.1 + 60.0)).abs() < 1e-12,
            "{scaling:?}"
        );
        // So with a slot-less container pool and an idle Lambda, Lambda wins.
        let lambda = measured("lambda", BackendKind::Lambda, 0, 100.0);
        let decision = policy
            .place(&request(1.0, 100), &[container, lambda])
            .expect("placed");
        assert_eq!(decision.backend, 1, "{}", decision.reason);
    }

    #[test]
    fn lambda_cost_is_gb_seconds_of_billed_time_plus_the_request_price() {
        let lambda = measured("lambda", BackendKind::Lambda, 0, 99.2);
        let estimate = adaptive(100.0).estimate(0, &lambda);
        let expected = 0.0000166667 * 2.0 * 0.100 + 0.0000002;
        assert!((estimate.cost - expected).abs() < 1e-15, "{estimate:?}");
    }
}
