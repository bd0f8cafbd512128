//! `adaptive`: meet a per-model p99 latency SLO at the least cost.
//!
//! For each candidate the policy predicts this request's p99 latency:
//!
//! ```text
//! base   = observed peak-EWMA service time of the backend for this model:
//!          each answer's latency minus the queue time the backend
//!          reported for it; before its first answer, the fastest service
//!          time another backend measured for the model, or
//!          prior_latency_ms of the kind if that is higher
//! where this request would run:
//!   a free slot (in_flight < concurrency)      ahead = 0, cold = 0
//!   behind others on a ready slot              ahead = in_flight - concurrency + 1,
//!     (the local workers' queue; a worker      cold = 0
//!     container with room, which the pool
//!     gives the request while it starts
//!     another in the background)
//!   a new slot (a Lambda invocation when no    ahead = 0,
//!     warm instance is idle; a container       cold = the cold-start time
//!     being started when every ready one
//!     is full)
//! p99    = tail_factor * base * (1 + ahead / concurrency) + cold
//! ```
//!
//! Parameters (policy file): `slo_p99_ms`, the target; `tail_factor`, how
//! much slower than the recent peak service time a p99 answer is assumed
//! to be; `max_failure_rate`; `prior_latency_ms` and `cold_start_ms` per
//! kind, used until measured; `costs`; `prewarm`.
//!
//! `base` leaves the queue out because `ahead` puts in the queue there is
//! now. The end-to-end latency (which the gateway also tracks, for
//! `least_loaded` and the stats) has the queue each answer waited in: a
//! base made of it counted a past queue again on top of the present one,
//! so one answer that had waited lifted the prediction of an idle backend
//! far over the SLO until the peak-EWMA decayed. On the paper's ramp that
//! took the free local tier from all of the traffic to 10-17% of it. The
//! queue time is what each backend reports in its `Timing`: the local
//! backend's wait for a worker; the container pool's wait for a container
//! with room (or one that is starting) plus the worker's own queue; for
//! Lambda all but the function's compute (the invoke overhead and, on a
//! cold start, the init, which `cold` accounts for). The simulator's tier
//! models report the same, and both feed one
//! [`ObservedTracker`](crate::placement::ObservedTracker).
//!
//! The cold start is the one the backend measured (the mean of its recent
//! ones, [`BackendSnapshot::cold_start_ms`]: a container's create → ready, a
//! Lambda instance's extra round trip on its cold invocation); the
//! configured `cold_start_ms` of the kind is only the prior until the
//! backend has measured one (and what the simulator starts from too, whose
//! tier models measure theirs the same way). Lambda GB-seconds are priced
//! at the memory size the backend reports ([`BackendSnapshot::memory_mb`],
//! its `memory_mb` or what its instances say); `costs.lambda_memory_mb` is
//! the fallback for a backend that reports none.
//!
//! [`BackendSnapshot::cold_start_ms`]: switchyard_backends::BackendSnapshot::cold_start_ms
//! [`BackendSnapshot::memory_mb`]: switchyard_backends::BackendSnapshot::memory_mb
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
//! would cause it.
//!
//! **When nothing fits the SLO**, a backend that can scale out and would
//! fit once its new slot is warm (`tail_factor × base <= SLO`) is scaled
//! out, the cheapest of them, even though this request pays the cold start;
//! only when there is none does the fastest prediction win. The SLO is a
//! 99th percentile: one request in a hundred may be slow. A cold start is
//! paid once, by one request, and the slot then stays warm for the
//! requests after it (a Lambda instance for minutes, a container until its
//! pool has been idle), while a queue over the SLO makes every request
//! slow for as long as the load lasts. Choosing the queue because it beats
//! the cold start for this one request repeats that choice for every next
//! request, and the capacity that would end it is never started. The
//! simulator showed it on the paper's ramp with a 200 ms SLO: requests kept
//! queueing behind the one local xception worker (212 to 300 ms) rather
//! than pay Lambda's 700 ms start once, and in 2 of 10 seeds that queue made
//! the run's p99 (up to 228 ms) about 60% worse than straightline's.
//!
//! **Pre-warming.** Reacting to load means the first requests of a burst
//! pay the cold starts. The policy also looks ahead: from the model's rate
//! and its trend (see `measure`) it predicts the rate `horizon_s` ahead.
//! When the trend is rising, it fills that predicted rate with the
//! candidates that meet the SLO when warm, cheapest per request first.
//! A slot of a backend sustains `ρ × 1000 / base` requests/s, where the
//! planned utilisation `ρ = min(utilization, 1 − tail_factor × base / SLO)`
//! is the highest at which the queue model above keeps the SLO (waiting
//! grows as 1 / (1 − ρ)): a loose SLO lets the free local tier run fuller
//! before anything paid is warmed. A container is ranked by what a slot
//! costs per request when kept at that utilisation (its price per second
//! over the requests it serves per second), Lambda by its price per
//! request. A backend that cannot grow (the local tier) takes what its
//! ready slots sustain; the first that can grow is asked for the slots the
//! rest needs ([`Policy::prewarm`]), held for the horizon. The gateway then
//! starts containers or warms Lambda instances before the requests arrive.
//! But only when a cold start would break the SLO (`tail_factor × base +
//! cold_start > SLO`): otherwise scaling out on demand keeps the SLO
//! anyway and costs less than capacity held ahead of time. The simulator
//! showed both sides: on the paper's ramp, pre-warming containers cut the
//! latency-first policy's p99 by a third, and made the cost-aware one (SLO
//! 1 s, which a container cold start fits) pay 60% more for containers
//! kept warm than the Lambda invocations they replaced.
//!
//! **Failing backends.** A candidate failing more than `max_failure_rate`
//! of its recent requests is left out while another has room. When every
//! candidate with room is failing (under overload, timeouts count as
//! failures everywhere), they compete as usual instead: refusing every
//! request serves no one, and the one that still answers most of them
//! wins on its prediction.
//!
//! **One host's CPU.** Tiers that run on the gateway's own machine (the
//! local tier, containers of a local Docker engine, a Lambda emulator on
//! loopback: [`BackendSnapshot::shares_host_cpu`]) draw on the same CPUs.
//! While the host has idle CPU, overflowing from one to another uses it.
//! Once the host is saturated (its recent busy share, the
//! request's `host_cpu_busy`, is above `host_saturation`, 0.9 by default),
//! overflow brings no capacity: a request sent to a container instead of
//! the local queue runs on the cores the local tier was using, and costs
//! more CPU there (an HTTP hop, a second copy of the model, no batching
//! with the local queue). So on a saturated host only the most efficient
//! ready kind on it (local, then container, then Lambda) is a candidate
//! (ready, not healthy: the failure rate counts refusals for load, and a
//! tier that is really broken is ejected),
//! and nothing on it once one of its backends refused the request for
//! load (the gateway's failover says so in `refused_on_host`): the request
//! queues on that tier or is refused there with 429, as a local-only
//! gateway's would be. Backends elsewhere (Lambda itself, a remote Docker
//! engine) compete as before. Pre-warming skips the held-back tiers of the
//! host as it will be at the predicted rate: its busy share grown with the
//! model's rate (see `growth`). Checked against the busy share now, as it
//! was before, pre-warm started three containers six seconds into a live
//! burst of xception on a 2-core machine while the local tier was
//! queueing: their cold starts loaded the model on the cores serving the
//! burst, and they answered none of its requests before idling out.
//! On the paper's ramp on one 2-core machine, every live run before this
//! rule had the policy spread xception over all three tiers once the
//! local tier's queue passed the SLO, and fail more requests than
//! local-only did (`bench/paper-discussion.md`).
//!
//! [`BackendSnapshot::shares_host_cpu`]: switchyard_backends::BackendSnapshot::shares_host_cpu
//!
//! The simulator (`switchyard sim`, `bench/results/sim.md`) found why the
//! scale-out term matters: without it, bursts made the policy prefer
//! containers over Lambda for their small per-request occupancy price, and
//! the pool's idle containers then cost more than the invocations saved.

use switchyard_backends::BackendKind;

use super::{BackendView, Decision, Policy, Prewarm, RequestFeatures};

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
    /// Lambda function memory in MB, when the backend reports none.
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

/// When and how far ahead [`Adaptive`] warms backends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PrewarmParams {
    /// How far ahead the rate is predicted, seconds; 0 turns pre-warming off.
    pub horizon_s: f64,
    /// Highest share of a slot's measured throughput planned to be used;
    /// the SLO may lower it (see the module documentation).
    pub utilization: f64,
}

impl Default for PrewarmParams {
    fn default() -> Self {
        Self {
            horizon_s: 10.0,
            utilization: 0.9,
        }
    }
}

/// Parameters of [`Adaptive`].
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveParams {
    pub slo_p99_ms: f64,
    pub max_failure_rate: f64,
    pub tail_factor: f64,
    /// Share of the host's CPU busy above which the host counts as
    /// saturated: its on-host tiers then take no overflow from each other
    /// (1.0 never does).
    pub host_saturation: f64,
    /// Assumed latency per kind before anything was measured, ms.
    pub prior_latency_ms: [f64; 3],
    /// Cold-start time per kind, ms, until the backend reports a measured one.
    pub cold_start_ms: [f64; 3],
    pub costs: BackendCosts,
    pub prewarm: PrewarmParams,
}

impl Default for AdaptiveParams {
    fn default() -> Self {
        Self {
            slo_p99_ms: 100.0,
            max_failure_rate: 0.2,
            tail_factor: 1.5,
            host_saturation: 0.9,
            prior_latency_ms: [5.0, 10.0, 50.0],
            cold_start_ms: [0.0, 500.0, 150.0],
            costs: BackendCosts::default(),
            prewarm: PrewarmParams::default(),
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
    /// The request would run on a new slot (and pay its cold start).
    scales_out: bool,
    /// The prediction once that slot is warm: without the cold start.
    warm_p99_ms: f64,
}

/// The backends of a saturated host that may take a request.
#[derive(Debug, Clone, Copy)]
struct HostLimit {
    /// The host's busy share.
    busy: f64,
    /// The one kind of on-host backend allowed, `None` for none.
    kind: Option<BackendKind>,
}

impl HostLimit {
    fn allows(limit: Option<&HostLimit>, view: &BackendView) -> bool {
        limit.is_none_or(|l| !view.snapshot.shares_host_cpu || l.kind == Some(view.snapshot.kind))
    }
}

/// The fastest service time any of the model's backends has measured, what
/// one that has not answered the model yet is assumed to take: no less,
/// since the model more than the tier decides how long a request runs, and
/// no more, so that the new backend is still tried when the others queue.
fn fastest_measured(backends: &[BackendView]) -> Option<f64> {
    backends
        .iter()
        .filter_map(|b| b.observed.service_ms)
        .min_by(f64::total_cmp)
}

/// How many times the work on the host grows when the model's rate goes
/// from `current` to `predicted` requests/s, to project the host's busy
/// share: as if all of it grew with this model's rate, which overstates it
/// where other work or off-host tiers take part (so pre-warming on the host
/// errs towards holding back), and 1 where there is no rate to grow from.
fn growth(current: f64, predicted: f64) -> f64 {
    if current > 0.0 {
        (predicted / current).max(1.0)
    } else {
        1.0
    }
}

/// Whether a request that finds every slot busy waits behind others on a
/// ready slot (the local workers' queue, a worker container's) rather than
/// getting a slot of its own (each Lambda invocation runs on an instance,
/// started for it when none is idle).
fn queues_when_busy(kind: BackendKind) -> bool {
    !matches!(kind, BackendKind::Lambda)
}

impl Adaptive {
    /// The backend's latency for this model with no queue: its measured
    /// service time (latency minus the queue time it reported, so that
    /// the `ahead` term does not count a past queue twice). Before it has
    /// answered the model: `measured`, the fastest service time of the
    /// model's other backends ([`fastest_measured`]), or the prior of its
    /// kind if that is higher. The model's cost dominates: a tier that has
    /// not run xception yet will not run it in the 10 ms the container
    /// prior says, and predicting that could send a burst's first dozens
    /// of requests to a container whose first answer was still to come.
    fn base_ms(&self, view: &BackendView, measured: Option<f64>) -> f64 {
        view.observed
            .service_ms
            .unwrap_or_else(|| {
                let prior = self.params.prior_latency_ms[slot(view.snapshot.kind)];
                measured.map_or(prior, |ms| ms.max(prior))
            })
            .max(0.001)
    }

    /// The backend's cold start: as it measured its recent ones, or the
    /// configured prior of its kind before it has measured one.
    fn cold_start_ms(&self, view: &BackendView) -> f64 {
        view.snapshot
            .cold_start_ms
            .unwrap_or(self.params.cold_start_ms[slot(view.snapshot.kind)])
            .max(0.0)
    }

    /// Lambda memory in GB: as the backend reports it, else as configured.
    fn lambda_memory_gb(&self, view: &BackendView) -> f64 {
        view.snapshot
            .memory_mb
            .map_or(self.params.costs.lambda_memory_mb, |mb| mb as f64)
            / 1024.0
    }

    /// Usable at all: can take the request and does not fail too often.
    fn usable(&self, request: &RequestFeatures<'_>, view: &BackendView) -> bool {
        view.can_take(request) && !self.failing(view)
    }

    fn failing(&self, view: &BackendView) -> bool {
        view.observed.failure_rate > self.params.max_failure_rate
    }

    /// On a host `busy` (the request's reading, or a projection of it)
    /// past saturation, which of the backends on it may take the request:
    /// those of its most efficient ready kind; none once a backend on the
    /// host refused the request for load. `None` when the host is not
    /// saturated (or not measured): no limit.
    fn host_limit(
        &self,
        busy: Option<f64>,
        request: &RequestFeatures<'_>,
        backends: &[BackendView],
    ) -> Option<HostLimit> {
        let busy = busy?;
        if busy <= self.params.host_saturation {
            return None;
        }
        // Ready is enough, healthy is not asked: the failure rate counts
        // refusals for load too, so a full local tier would otherwise hand
        // its overflow to the next tier on the host. A broken one is
        // ejected, so not ready.
        let kind = if request.refused_on_host {
            None
        } else {
            backends
                .iter()
                .filter(|b| b.snapshot.shares_host_cpu && b.can_take(request))
                .map(|b| b.snapshot.kind)
                .min_by_key(|&k| slot(k))
        };
        Some(HostLimit { busy, kind })
    }

    fn estimate(&self, index: usize, view: &BackendView, measured: Option<f64>) -> Estimate {
        let p = &self.params;
        let s = &view.snapshot;
        let base = self.base_ms(view, measured);
        let concurrency = s.concurrency.max(1) as f64;
        let busy = s.in_flight >= s.concurrency;
        let queues = queues_when_busy(s.kind) && s.in_flight < s.capacity;
        let scales_out = busy && !queues && s.headroom > 0;
        let ahead = if busy && !scales_out {
            (s.in_flight + 1).saturating_sub(s.concurrency) as f64
        } else {
            0.0
        };
        let cold = if scales_out {
            self.cold_start_ms(view)
        } else {
            0.0
        };
        let warm_p99_ms = p.tail_factor * base * (1.0 + ahead / concurrency);
        let seconds = base / 1000.0;
        let cost = match s.kind {
            BackendKind::Local => p.costs.local_per_second * seconds,
            BackendKind::Container => {
                // A busy pool that can grow starts a container for the
                // load this request adds to, whether or not it waits for it.
                let scale_out = if busy && s.headroom > 0 {
                    p.costs.container_per_second * p.costs.container_min_seconds
                } else {
                    0.0
                };
                p.costs.container_per_second * seconds + scale_out
            }
            BackendKind::Lambda => {
                // Lambda bills whole milliseconds, a cold start's init too.
                let billed = (base + cold).ceil() / 1000.0;
                p.costs.lambda_per_gb_second * self.lambda_memory_gb(view) * billed
                    + p.costs.lambda_per_request
            }
        };
        Estimate {
            index,
            p99_ms: warm_p99_ms + cold,
            cost,
            scales_out,
            warm_p99_ms,
        }
    }
}

impl Policy for Adaptive {
    fn name(&self) -> &'static str {
        "adaptive"
    }

    fn place(&self, request: &RequestFeatures<'_>, backends: &[BackendView]) -> Option<Decision> {
        let limit = self.host_limit(request.host_cpu_busy, request, backends);
        let measured = fastest_measured(backends);
        let open = |b: &BackendView| {
            b.can_take(request) && b.has_room() && HostLimit::allows(limit.as_ref(), b)
        };
        // Backends failing more than max_failure_rate are avoided while
        // another has room; when all that have room fail, they compete
        // (refusing every request serves no one).
        let mut all_failing = false;
        let mut estimates: Vec<Estimate> = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| open(b) && !self.failing(b))
            .map(|(i, b)| self.estimate(i, b, measured))
            .collect();
        if estimates.is_empty() {
            estimates = backends
                .iter()
                .enumerate()
                .filter(|(_, b)| open(b))
                .map(|(i, b)| self.estimate(i, b, measured))
                .collect();
            all_failing = !estimates.is_empty();
        }
        let slo = self.params.slo_p99_ms;
        let cheapest = |a: &&Estimate, b: &&Estimate| {
            a.cost
                .total_cmp(&b.cost)
                .then(a.p99_ms.total_cmp(&b.p99_ms))
        };
        let within = estimates
            .iter()
            .filter(|e| e.p99_ms <= slo)
            .min_by(cheapest);
        let scale_out = || {
            estimates
                .iter()
                .filter(|e| e.scales_out && e.warm_p99_ms <= slo)
                .min_by(cheapest)
        };
        let (chosen, why) = match within {
            Some(e) => (e, format!("cheapest within p99 {slo:.0} ms")),
            None => match scale_out() {
                Some(e) => (
                    e,
                    format!(
                        "none within p99 {slo:.0} ms, scaling out (warm: {:.1} ms)",
                        e.warm_p99_ms
                    ),
                ),
                None => (
                    estimates
                        .iter()
                        .min_by(|a, b| a.p99_ms.total_cmp(&b.p99_ms))?,
                    format!("none within p99 {slo:.0} ms, fastest"),
                ),
            },
        };
        let mut notes = String::new();
        if all_failing {
            notes.push_str(&format!(
                "; every backend with room fails over {:.0}% of requests",
                self.params.max_failure_rate * 100.0
            ));
        }
        if let Some(limit) = limit {
            let held_back: Vec<&str> = backends
                .iter()
                .filter(|b| b.snapshot.shares_host_cpu && !HostLimit::allows(Some(&limit), b))
                .map(|b| b.name())
                .collect();
            if !held_back.is_empty() {
                notes.push_str(&format!(
                    "; host CPU {:.0}% busy: not spreading to {} on the same host",
                    limit.busy * 100.0,
                    held_back.join(", ")
                ));
            }
        }
        Some(Decision {
            backend: chosen.index,
            reason: format!(
                "adaptive: {why} -> {} (predicted p99 {:.1} ms, ${:.3e}/request){notes}",
                backends[chosen.index].snapshot.name, chosen.p99_ms, chosen.cost
            ),
        })
    }

    fn prewarm(&self, request: &RequestFeatures<'_>, backends: &[BackendView]) -> Vec<Prewarm> {
        let p = &self.params;
        let horizon = p.prewarm.horizon_s;
        let rate = &request.rate;
        if horizon <= 0.0 || rate.trend_per_second2 <= 0.0 {
            return Vec::new();
        }
        let predicted = rate.predicted(horizon);
        // A host saturated by then has no CPU for more instances on it:
        // its busy share (now, then).
        let host = request
            .host_cpu_busy
            .map(|now| (now, now * growth(rate.current_per_second, predicted)));
        let limit = self.host_limit(host.map(|(_, then)| then), request, backends);
        let measured = fastest_measured(backends);
        // Candidates that keep the SLO when warm: (index, requests/s one
        // slot sustains, cost per request), cheapest first.
        let mut warm: Vec<(usize, f64, f64, f64)> = backends
            .iter()
            .enumerate()
            .filter(|(_, b)| self.usable(request, b) && HostLimit::allows(limit.as_ref(), b))
            .filter_map(|(i, b)| {
                let base = self.base_ms(b, measured);
                let rho = p
                    .prewarm
                    .utilization
                    .min(1.0 - p.tail_factor * base / p.slo_p99_ms);
                if rho <= 0.0 {
                    return None;
                }
                let per_slot = rho * 1000.0 / base;
                let cost = match b.snapshot.kind {
                    BackendKind::Container => p.costs.container_per_second / per_slot,
                    _ => {
                        let mut idle = b.clone();
                        idle.snapshot.in_flight = 0;
                        self.estimate(i, &idle, measured).cost
                    }
                };
                Some((i, per_slot, cost, base))
            })
            .collect();
        warm.sort_by(|a, b| a.2.total_cmp(&b.2).then(b.1.total_cmp(&a.1)));
        let mut remaining = predicted;
        for (index, per_slot, _, base) in warm {
            let view = &backends[index];
            let ready = view.snapshot.concurrency;
            if view.snapshot.headroom == 0 {
                remaining -= ready as f64 * per_slot;
                if remaining <= 0.0 {
                    break;
                }
                continue;
            }
            let cold = self.cold_start_ms(view);
            if p.tail_factor * base + cold <= p.slo_p99_ms {
                // It can scale out on demand and still keep the SLO.
                break;
            }
            let needed = (remaining / per_slot).ceil().max(0.0) as u64;
            if needed <= ready {
                break;
            }
            return vec![Prewarm {
                backend: index,
                slots: needed,
                hold_s: horizon,
                reason: format!(
                    "adaptive: rate {:.1}/s rising {:.2}/s per s, {predicted:.1}/s expected in \
                     {horizon:.0} s; {} needs {needed} slots for {remaining:.1}/s, has \
                     {ready}{}",
                    rate.current_per_second,
                    rate.trend_per_second2,
                    view.snapshot.name,
                    host.map_or(String::new(), |(now, then)| format!(
                        "; host CPU {:.0}% busy, {:.0}% expected",
                        now * 100.0,
                        then * 100.0
                    ))
                ),
            }];
        }
        Vec::new()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::placement::{AnswerTime, ObservedTracker};
    use crate::policy::testing::{request, view};

    fn measured(name: &str, kind: BackendKind, in_flight: u64, latency_ms: f64) -> BackendView {
        let mut v = view(name, kind, in_flight, 64);
        v.snapshot.concurrency = 2;
        // Answers that did not wait: latency and service time agree.
        v.observed.latency_ms = Some(latency_ms);
        v.observed.service_ms = Some(latency_ms);
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
    fn a_queued_answer_does_not_knock_out_a_local_tier_whose_service_time_fits() {
        // Local answered in 70 ms, then once after 330 ms in its queue. The
        // gateway's tracker keeps the end-to-end peak (400 ms) and the
        // service time (70 ms) apart.
        let t0 = Instant::now();
        let mut tracker = ObservedTracker::new(t0);
        let answer = |latency_ms, queue_ms| AnswerTime {
            latency: Duration::from_millis(latency_ms),
            queue: Duration::from_millis(queue_ms),
        };
        tracker.record(Some(answer(70, 0)), false, t0);
        tracker.record(Some(answer(400, 330)), false, t0);
        let mut local = view("local", BackendKind::Local, 0, 64);
        local.snapshot.concurrency = 2;
        local.observed = tracker.observed(t0);
        assert_eq!(local.observed.latency_ms, Some(400.0));
        let lambda = measured("lambda", BackendKind::Lambda, 0, 100.0);
        let policy = adaptive(150.0);
        // The queue it waited in has drained: 1.5 * 70 = 105 ms fits, and
        // local is free. Predicting from the end-to-end 400 ms would have
        // made it 600 ms and sent the request to Lambda.
        let idle = policy.estimate(0, &local, None);
        assert!((idle.p99_ms - 105.0).abs() < 1e-9, "{idle:?}");
        let decision = policy
            .place(&request(1.0, 100), &[local.clone(), lambda.clone()])
            .expect("placed");
        assert_eq!(decision.backend, 0, "{}", decision.reason);
        // The queue it has now still counts, once: 3 in flight on 2 slots
        // puts 2 ahead, 1.5 * 70 * (1 + 2/2) = 210 ms, over the SLO.
        local.snapshot.in_flight = 3;
        let busy = policy.estimate(0, &local, None);
        assert!((busy.p99_ms - 210.0).abs() < 1e-9, "{busy:?}");
        let decision = policy
            .place(&request(1.0, 100), &[local, lambda])
            .expect("placed");
        assert_eq!(decision.backend, 1, "{}", decision.reason);
    }

    #[test]
    fn a_tier_idle_for_a_while_is_predicted_from_how_fast_it_answered_not_as_free() {
        // A container answered 170 ms requests, then got none for 20 s;
        // it now has one slot with 3 requests queued. Lambda answers in
        // 150 ms. Faded to zero the container's service time would be
        // 170 / e^4 = 3 ms and the queue would look free.
        let t0 = Instant::now();
        let mut tracker = ObservedTracker::new(t0);
        for _ in 0..10 {
            tracker.record(
                Some(AnswerTime {
                    latency: Duration::from_millis(170),
                    queue: Duration::ZERO,
                }),
                false,
                t0,
            );
        }
        let mut container = view("container", BackendKind::Container, 3, 8);
        container.snapshot.concurrency = 1;
        container.observed = tracker.observed(t0 + Duration::from_secs(20));
        let local = measured("local", BackendKind::Local, 64, 100.0);
        let lambda = measured("lambda", BackendKind::Lambda, 0, 150.0);
        let policy = adaptive(500.0);
        // 1.5 * 170 * (1 + 3) = 1020 ms.
        let estimate = policy.estimate(1, &container, None);
        assert!((estimate.p99_ms - 1020.0).abs() < 0.5, "{estimate:?}");
        let decision = policy
            .place(&request(1.0, 100), &[local, container, lambda])
            .expect("placed");
        assert_eq!(decision.backend, 2, "{}", decision.reason);
    }

    #[test]
    fn a_backend_yet_to_answer_the_model_is_assumed_as_fast_as_the_fastest_that_has() {
        // Local has measured the model at 100 ms and has 39 ahead; Lambda
        // 150 ms. A container that has not answered it yet has 12 queued on
        // its one slot.
        let local = measured("local", BackendKind::Local, 40, 100.0);
        let lambda = measured("lambda", BackendKind::Lambda, 0, 150.0);
        let mut container = view("container", BackendKind::Container, 12, 64);
        container.snapshot.concurrency = 1;
        let policy = adaptive(1000.0);
        // At the container prior of 10 ms: 1.5 * 10 * (1 + 12) = 195 ms,
        // inside the SLO. At the fastest measured, 100 ms: 1,950 ms.
        let prior = policy.estimate(1, &container, None);
        assert!((prior.p99_ms - 195.0).abs() < 1e-9, "{prior:?}");
        let backends = [local, container, lambda];
        let decision = policy.place(&request(1.0, 100), &backends).expect("placed");
        assert_eq!(decision.backend, 2, "{}", decision.reason);
        // A prior above what was measured still counts.
        let mut slow_prior = adaptive(1000.0);
        slow_prior.params.prior_latency_ms = [5.0, 400.0, 50.0];
        let estimate = slow_prior.estimate(1, &backends[1], Some(100.0));
        assert!((estimate.p99_ms - 7800.0).abs() < 1e-9, "{estimate:?}");
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
    fn when_every_backend_with_room_fails_they_compete_instead_of_refusing_all() {
        let mut container = measured("container", BackendKind::Container, 0, 100.0);
        container.observed.failure_rate = 0.5;
        let mut local = measured("local", BackendKind::Local, 0, 50.0);
        local.observed.failure_rate = 0.3;
        let decision = adaptive(1000.0)
            .place(&request(1.0, 100), &[container.clone(), local.clone()])
            .expect("placed anyway");
        assert_eq!(decision.backend, 1, "{}", decision.reason);
        assert!(
            decision
                .reason
                .contains("every backend with room fails over 20%"),
            "{}",
            decision.reason
        );
        // A healthy one with room is still preferred to the failing ones,
        // even when it costs more.
        let lambda = measured("lambda", BackendKind::Lambda, 0, 100.0);
        let decision = adaptive(1000.0)
            .place(&request(1.0, 100), &[container, local, lambda])
            .expect("placed");
        assert_eq!(decision.backend, 2, "{}", decision.reason);
    }

    /// A request seeing the host this busy.
    fn on_host_busy(busy: f64) -> RequestFeatures<'static> {
        let mut r = request(1.0, 100);
        r.host_cpu_busy = Some(busy);
        r
    }

    /// Local with its queue past the SLO (2 slots, 10 in flight: 9 ahead,
    /// 1.5 * 100 * 5.5 = 825 ms), an idle container pool on the same host,
    /// and Lambda, on the host too when `lambda_on_host`.
    fn saturating_host(lambda_on_host: bool) -> [BackendView; 3] {
        let mut local = measured("local", BackendKind::Local, 10, 100.0);
        local.snapshot.shares_host_cpu = true;
        let mut container = measured("container", BackendKind::Container, 0, 100.0);
        container.snapshot.shares_host_cpu = true;
        let mut lambda = measured("lambda", BackendKind::Lambda, 0, 100.0);
        lambda.snapshot.shares_host_cpu = lambda_on_host;
        [local, container, lambda]
    }

    #[test]
    fn on_a_saturated_host_the_local_queue_is_not_spread_to_tiers_on_the_same_host() {
        let backends = saturating_host(true);
        let policy = adaptive(500.0);
        // With CPU to spare, the overflow goes to the cheapest tier that
        // keeps the SLO: the container (its slot costs less than Lambda's
        // invocation).
        for busy in [None, Some(0.5), Some(0.9)] {
            let mut r = request(1.0, 100);
            r.host_cpu_busy = busy;
            let decision = policy.place(&r, &backends).expect("placed");
            assert_eq!(decision.backend, 1, "{busy:?}: {}", decision.reason);
            assert!(!decision.reason.contains("host CPU"), "{}", decision.reason);
        }
        // Saturated: the request waits in the local queue, as on a
        // local-only gateway.
        let decision = policy
            .place(&on_host_busy(0.97), &backends)
            .expect("placed");
        assert_eq!(decision.backend, 0, "{}", decision.reason);
        assert!(
            decision
                .reason
                .contains("host CPU 97% busy: not spreading to container, lambda on the same host"),
            "{}",
            decision.reason
        );
        // A Lambda that runs elsewhere brings its own CPU: it takes the
        // overflow, the container on the host does not.
        let decision = policy
            .place(&on_host_busy(0.97), &saturating_host(false))
            .expect("placed");
        assert_eq!(decision.backend, 2, "{}", decision.reason);
        assert!(
            decision.reason.contains("not spreading to container on"),
            "{}",
            decision.reason
        );
        // host_saturation = 1.0 turns the rule off.
        let off = Adaptive {
            params: AdaptiveParams {
                slo_p99_ms: 500.0,
                host_saturation: 1.0,
                ..AdaptiveParams::default()
            },
        };
        let decision = off.place(&on_host_busy(1.0), &backends).expect("placed");
        assert_eq!(decision.backend, 1, "{}", decision.reason);
    }

    #[test]
    fn on_a_saturated_host_a_full_local_tier_is_refused_there_not_spread() {
        let mut backends = saturating_host(true);
        // Local's queue is full: it has no room, but it is the host's most
        // efficient tier, so nothing else on the host takes its overflow.
        backends[0].snapshot.in_flight = 64;
        assert_eq!(adaptive(500.0).place(&on_host_busy(0.97), &backends), None);
        // The gateway asks again after local refused: still nothing on the
        // host, while a remote Lambda takes it.
        let mut refused = on_host_busy(0.97);
        refused.refused_on_host = true;
        let after = &backends[1..];
        assert_eq!(adaptive(500.0).place(&refused, after), None);
        let mut remote = after.to_vec();
        remote[1].snapshot.shares_host_cpu = false;
        let decision = adaptive(500.0).place(&refused, &remote).expect("placed");
        assert_eq!(decision.backend, 1, "{}", decision.reason);
        // Without saturation the refusal fails over to the container.
        let mut idle = on_host_busy(0.4);
        idle.refused_on_host = true;
        let decision = adaptive(500.0).place(&idle, after).expect("placed");
        assert_eq!(decision.backend, 0, "{}", decision.reason);
    }

    #[test]
    fn on_a_saturated_host_an_unready_local_tier_hands_over_to_the_next_tier_on_it() {
        // Refusals for load count in the failure rate: a full local tier
        // that refused most recent requests still holds the host.
        let mut backends = saturating_host(true);
        backends[0].observed.failure_rate = 0.9;
        backends[0].snapshot.in_flight = 64;
        assert_eq!(adaptive(500.0).place(&on_host_busy(0.97), &backends), None);
        // Ejected or down, it hands over.
        backends[0].snapshot.ready = false;
        let decision = adaptive(500.0)
            .place(&on_host_busy(0.97), &backends)
            .expect("placed");
        assert_eq!(decision.backend, 1, "{}", decision.reason);
        assert!(
            decision.reason.contains("not spreading to local, lambda"),
            "{}",
            decision.reason
        );
    }

    #[test]
    fn a_host_saturated_now_or_at_the_predicted_rate_warms_nothing_on_itself() {
        // The rising rate of the prewarm test above warms containers; with
        // the host saturated, now or once the rate has grown, and the pool
        // on it, nothing is warmed, while a remote Lambda still is.
        let mut local = measured("local", BackendKind::Local, 0, 10.0);
        local.snapshot.shares_host_cpu = true;
        let mut container = measured("container", BackendKind::Container, 0, 20.0);
        container.snapshot.concurrency = 1;
        container.snapshot.headroom = 64;
        container.snapshot.shares_host_cpu = true;
        let mut r = rising(100.0, 15.0);
        r.host_cpu_busy = Some(0.3);
        let backends = [local, container];
        let advice = adaptive(100.0).prewarm(&r, &backends);
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert!(
            advice[0].reason.contains("host CPU 30% busy, 75% expected"),
            "{}",
            advice[0].reason
        );
        r.host_cpu_busy = Some(0.95);
        assert_eq!(adaptive(100.0).prewarm(&r, &backends), Vec::new());
        // Half busy now, but the rate is to grow 2.5 times (100/s to
        // 250/s in 10 s): the host will be saturated by then.
        r.host_cpu_busy = Some(0.5);
        assert_eq!(adaptive(100.0).prewarm(&r, &backends), Vec::new());
        let mut lambda = measured("lambda", BackendKind::Lambda, 0, 20.0);
        lambda.snapshot.headroom = 10;
        lambda.snapshot.concurrency = 0;
        let with_lambda = [backends[0].clone(), backends[1].clone(), lambda];
        let advice = adaptive(100.0).prewarm(&r, &with_lambda);
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert_eq!(advice[0].backend, 2, "{}", advice[0].reason);
    }

    #[test]
    fn a_lambda_invocation_with_no_idle_instance_pays_a_cold_start_and_never_queues() {
        let mut lambda = measured("lambda", BackendKind::Lambda, 2, 10.0);
        lambda.snapshot.headroom = 10;
        let estimate = adaptive(100.0).estimate(0, &lambda, None);
        // Both warm instances busy: a new one starts for this request, so
        // 1.5 * 10 plus the 150 ms cold start, and nothing ahead of it.
        assert!((estimate.p99_ms - 165.0).abs() < 1e-9, "{estimate:?}");
        assert!(estimate.scales_out);
        assert!((estimate.warm_p99_ms - 15.0).abs() < 1e-9, "{estimate:?}");
    }

    #[test]
    fn a_busy_container_pool_queues_on_a_ready_container_until_every_one_is_full() {
        // One ready container of one worker holding up to 64 requests; the
        // pool could start more. Two in flight: this request waits behind
        // them on the ready container (the pool starts another in the
        // background), no cold start in its path.
        let mut container = measured("container", BackendKind::Container, 2, 100.0);
        container.snapshot.concurrency = 1;
        container.snapshot.capacity = 64;
        container.snapshot.headroom = 64;
        let policy = adaptive(1000.0);
        let queued = policy.estimate(0, &container, None);
        assert!(
            (queued.p99_ms - 1.5 * 100.0 * 3.0).abs() < 1e-9,
            "{queued:?}"
        );
        assert!(!queued.scales_out);
        // Every ready container full: it waits for a starting one.
        container.snapshot.in_flight = 64;
        let starting = policy.estimate(0, &container, None);
        assert!(
            (starting.p99_ms - (150.0 + 500.0)).abs() < 1e-9,
            "{starting:?}"
        );
        assert!(starting.scales_out);
    }

    #[test]
    fn a_queue_over_the_slo_loses_to_a_scale_out_that_fits_once_warm() {
        // SLO 200 ms. Local: one worker of 60 ms, two in flight: 1.5 * 60 *
        // 3 = 270 ms. Lambda: no idle instance, 700 ms cold start: 1.5 * 60
        // + 700 = 790 ms. Neither fits; the queue is faster for this request,
        // but Lambda fits once its new instance is warm (90 ms), and the
        // cold start is paid once.
        let mut local = measured("local", BackendKind::Local, 2, 60.0);
        local.snapshot.concurrency = 1;
        let mut lambda = measured("lambda", BackendKind::Lambda, 2, 60.0);
        lambda.snapshot.headroom = 8;
        lambda.snapshot.cold_start_ms = Some(700.0);
        let policy = adaptive(200.0);
        let decision = policy
            .place(&request(1.0, 100), &[local.clone(), lambda.clone()])
            .expect("placed");
        assert_eq!(decision.backend, 1, "{}", decision.reason);
        assert!(
            decision.reason.contains("scaling out (warm: 90.0 ms)"),
            "{}",
            decision.reason
        );
        // A Lambda too slow for the SLO even when warm is no way out: the
        // fastest prediction wins, the local queue.
        lambda.observed.service_ms = Some(150.0);
        let decision = policy
            .place(&request(1.0, 100), &[local, lambda])
            .expect("placed");
        assert_eq!(decision.backend, 0, "{}", decision.reason);
        assert!(decision.reason.contains("fastest"), "{}", decision.reason);
    }

    #[test]
    fn scaling_out_a_container_costs_its_minimum_life() {
        let mut container = measured("container", BackendKind::Container, 0, 100.0);
        let policy = adaptive(1000.0);
        let warm = policy.estimate(0, &container, None);
        assert!((warm.cost - 0.0000125 * 0.1).abs() < 1e-15, "{warm:?}");
        container.snapshot.in_flight = 2;
        container.snapshot.headroom = 64;
        let scaling = policy.estimate(0, &container, None);
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

    fn rising(current: f64, trend: f64) -> RequestFeatures<'static> {
        let mut r = request(current, 100);
        r.rate.current_per_second = current;
        r.rate.trend_per_second2 = trend;
        r
    }

    #[test]
    fn a_rising_rate_warms_the_cheapest_backend_that_can_grow_for_what_local_cannot_take() {
        // SLO 100 ms, tail 1.5. Local: 10 ms, planned utilisation
        // min(0.9, 1 - 15/100) = 0.85, so its 2 slots sustain 170/s. In
        // 10 s the rate will be 100 + 15 * 10 = 250/s: 80/s more. Container
        // slots of 20 ms at min(0.9, 1 - 30/100) = 0.7 sustain 35/s each:
        // 3 slots, and it has 1. Per request a container slot costs
        // $0.0000125 / 35, less than a Lambda invocation.
        let local = measured("local", BackendKind::Local, 0, 10.0);
        let mut container = measured("container", BackendKind::Container, 0, 20.0);
        container.snapshot.concurrency = 1;
        container.snapshot.headroom = 64;
        let mut lambda = measured("lambda", BackendKind::Lambda, 0, 20.0);
        lambda.snapshot.headroom = 10;
        let backends = [lambda, local, container];
        let advice = adaptive(100.0).prewarm(&rising(100.0, 15.0), &backends);
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert_eq!(advice[0].backend, 2, "{}", advice[0].reason);
        assert_eq!(advice[0].slots, 3, "{}", advice[0].reason);
        assert_eq!(advice[0].hold_s, 10.0);
        assert!(
            advice[0].reason.contains("250.0/s expected"),
            "{}",
            advice[0].reason
        );

        // A container too slow for the SLO when warm is passed over for
        // Lambda, which has no warm instance.
        let mut slow = backends.clone();
        slow[2].observed.service_ms = Some(90.0);
        slow[0].snapshot.concurrency = 0;
        let advice = adaptive(100.0).prewarm(&rising(100.0, 15.0), &slow);
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert_eq!(advice[0].backend, 0, "{}", advice[0].reason);
        assert_eq!(advice[0].slots, 3, "{}", advice[0].reason);

        // A looser SLO lets every slot run fuller (0.9): local takes 180/s,
        // and 70/s need 2 container slots of 45/s.
        let advice = adaptive(400.0).prewarm(&rising(100.0, 15.0), &backends);
        assert_eq!(advice.len(), 1, "{advice:?}");
        assert_eq!(advice[0].slots, 2, "{}", advice[0].reason);
        assert!(advice[0].reason.contains("70.0/s"), "{}", advice[0].reason);

        // With an SLO a container cold start fits in (1.5 * 20 + 500 ms),
        // the pool scales out on demand: nothing is held ahead.
        assert!(
            adaptive(1000.0)
                .prewarm(&rising(100.0, 15.0), &backends)
                .is_empty()
        );
    }

    #[test]
    fn no_prewarm_for_a_flat_or_falling_rate_enough_ready_slots_or_when_off() {
        let local = measured("local", BackendKind::Local, 0, 10.0);
        let mut container = measured("container", BackendKind::Container, 0, 20.0);
        container.snapshot.headroom = 64;
        let backends = [local, container];
        let policy = adaptive(100.0);
        assert!(policy.prewarm(&rising(500.0, 0.0), &backends).is_empty());
        assert!(policy.prewarm(&rising(500.0, -5.0), &backends).is_empty());
        // Rising, but local's 170/s covers 100 + 1 * 10 = 110/s.
        assert!(policy.prewarm(&rising(100.0, 1.0), &backends).is_empty());
        // 200/s: 30/s over local, 1 slot of container, which has 2 already.
        assert!(policy.prewarm(&rising(100.0, 10.0), &backends).is_empty());
        let mut off = adaptive(100.0);
        off.params.prewarm.horizon_s = 0.0;
        let mut busy = backends.clone();
        busy[1].snapshot.concurrency = 0;
        assert!(off.prewarm(&rising(100.0, 10.0), &busy).is_empty());
        assert_eq!(policy.prewarm(&rising(100.0, 10.0), &busy).len(), 1);
    }

    #[test]
    fn lambda_cost_is_gb_seconds_of_billed_time_plus_the_request_price() {
        let lambda = measured("lambda", BackendKind::Lambda, 0, 99.2);
        let estimate = adaptive(100.0).estimate(0, &lambda, None);
        let expected = 0.0000166667 * 2.0 * 0.100 + 0.0000002;
        assert!((estimate.cost - expected).abs() < 1e-15, "{estimate:?}");
    }

    #[test]
    fn lambda_is_priced_at_the_memory_size_the_backend_reports() {
        let mut lambda = measured("lambda", BackendKind::Lambda, 0, 99.2);
        lambda.snapshot.memory_mb = Some(512);
        let estimate = adaptive(100.0).estimate(0, &lambda, None);
        // 0.5 GB, not the policy file's 2048 MB.
        let expected = 0.0000166667 * 0.5 * 0.100 + 0.0000002;
        assert!((estimate.cost - expected).abs() < 1e-15, "{estimate:?}");
    }

    #[test]
    fn a_measured_cold_start_replaces_the_configured_prior() {
        // Lambda with no idle warm instance must start one: 1.5 * 10 ms plus
        // the cold start.
        let mut lambda = measured("lambda", BackendKind::Lambda, 2, 10.0);
        lambda.snapshot.headroom = 10;
        let policy = adaptive(300.0);
        let prior = policy.estimate(0, &lambda, None);
        assert!((prior.p99_ms - (15.0 + 150.0)).abs() < 1e-9, "{prior:?}");
        lambda.snapshot.cold_start_ms = Some(700.0);
        let measured_cold = policy.estimate(0, &lambda, None);
        assert!(
            (measured_cold.p99_ms - (15.0 + 700.0)).abs() < 1e-9,
            "{measured_cold:?}"
        );
        // It decides: with the prior Lambda fits a 300 ms SLO and beats a
        // busy free local tier that does not; measured, it does not fit
        // either, and is only taken as a scale-out that fits once warm.
        let local = measured("local", BackendKind::Local, 8, 100.0);
        let mut with_prior = lambda.clone();
        with_prior.snapshot.cold_start_ms = None;
        let decision = policy
            .place(&request(1.0, 100), &[local.clone(), with_prior])
            .expect("placed");
        assert_eq!(decision.backend, 1, "{}", decision.reason);
        assert!(
            decision.reason.contains("cheapest within"),
            "{}",
            decision.reason
        );
        let decision = policy
            .place(&request(1.0, 100), &[local, lambda])
            .expect("placed");
        assert_eq!(decision.backend, 1, "{}", decision.reason);
        assert!(
            decision.reason.contains("scaling out"),
            "{}",
            decision.reason
        );
    }
}
