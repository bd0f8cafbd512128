//! Placement policies: pure functions from what is known about a request and
//! the candidate backends to a decision with a reason. No I/O happens here:
//! a policy is tested with plain values, and the same code can drive a
//! simulator. Randomness (for power-of-two-choices) comes in with the
//! request, so a decision is reproducible from its inputs.
//!
//! - [`Ordered`], [`Static`], [`RoundRobin`], [`LeastLoaded`]: the classics;
//! - [`Straightline`]: the StraightLine paper's Algorithm 1;
//! - [`Adaptive`]: meets a per-model latency SLO at the least cost.
//!
//! [`spec`] reads policies from TOML (policy files and `[placement]`).

mod adaptive;
mod simple;
pub mod spec;
mod straightline;

use serde::Serialize;
use switchyard_backends::BackendSnapshot;

pub use adaptive::{Adaptive, AdaptiveParams, BackendCosts, PrewarmParams};
pub use simple::{LeastLoaded, Ordered, RoundRobin, Static};
pub use straightline::Straightline;

use crate::measure::RequestRate;

/// What placement knows about one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestFeatures<'a> {
    pub model: &'a str,
    /// Bytes of input tensor data.
    pub payload_bytes: u64,
    /// The model's request rate, this request included.
    pub rate: RequestRate,
    /// A random number drawn for this request (for randomised choices).
    pub random: u64,
    /// Share (0–1) of the gateway host's CPU time busy over about the last
    /// second ([`HostCpu`](crate::host_cpu::HostCpu)); `None` where it is
    /// not measured (the simulator, whose tiers each bring their own CPU).
    pub host_cpu_busy: Option<f64>,
    /// A backend that shares the host's CPU already refused this request
    /// for load (the gateway is asking again without it).
    pub refused_on_host: bool,
}

/// What the gateway has observed of one backend serving one model.
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize)]
pub struct Observed {
    /// Peak-EWMA of end-to-end latency in ms (jumps up to a slow sample at
    /// once, decays slowly), `None` before the first answer. Queueing is
    /// in it: what the load balancers of [`LeastLoaded`] weigh.
    pub latency_ms: Option<f64>,
    /// Peak-EWMA of service time in ms: each answer's latency minus the
    /// queue time its backend reported ([`Timing::queue`]), so the wait
    /// behind other requests is not in it. `None` before the first answer.
    /// While the backend idles it fades to the plain mean of its samples,
    /// not to zero. What [`Adaptive`] predicts from, adding the queue it
    /// sees now.
    ///
    /// [`Timing::queue`]: switchyard_backends::Timing::queue
    pub service_ms: Option<f64>,
    /// EWMA of the failure indicator (1 for a failed request).
    pub failure_rate: f64,
    /// Answers seen.
    pub samples: u64,
}

/// A candidate backend as a policy sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BackendView {
    pub snapshot: BackendSnapshot,
    pub observed: Observed,
}

impl BackendView {
    /// Ready, and allowed to take a payload of this size.
    pub fn can_take(&self, request: &RequestFeatures<'_>) -> bool {
        self.snapshot.ready
            && self
                .snapshot
                .max_payload_bytes
                .is_none_or(|max| request.payload_bytes <= max)
    }

    /// A slot is free now, or the backend can scale out to make one.
    pub fn has_room(&self) -> bool {
        self.snapshot.has_capacity() || (self.snapshot.ready && self.snapshot.headroom > 0)
    }

    fn name(&self) -> &str {
        &self.snapshot.name
    }
}

/// Where a request goes and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Index into the candidates the policy was given.
    pub backend: usize,
    /// One line for the `switchyard-placement` header and the decision log.
    pub reason: String,
}

/// A backend to warm ahead of demand: get `slots` requests' worth of it
/// running at once ready (containers started, function instances warm).
#[derive(Debug, Clone, PartialEq)]
pub struct Prewarm {
    /// Index into the candidates the policy was given.
    pub backend: usize,
    /// Request slots (concurrent requests) it should have ready.
    pub slots: u64,
    /// How long to keep them, seconds.
    pub hold_s: f64,
    /// One line for the log and stats.
    pub reason: String,
}

/// A placement policy.
pub trait Policy: Send + Sync + std::fmt::Debug {
    /// Its name in config, metrics and stats.
    fn name(&self) -> &'static str;
    /// Chooses among `backends` (the ready-or-not backends that serve the
    /// model, minus any that already refused this request); `None` when
    /// none of them can take it.
    fn place(&self, request: &RequestFeatures<'_>, backends: &[BackendView]) -> Option<Decision>;
    /// Backends to warm now because the model's rate trend predicts more
    /// load than the ready ones can take. Default: none (a reactive policy).
    fn prewarm(&self, request: &RequestFeatures<'_>, backends: &[BackendView]) -> Vec<Prewarm> {
        let _ = (request, backends);
        Vec::new()
    }
}

/// Index of the candidate called `name` that can take the request.
fn find(backends: &[BackendView], name: &str, request: &RequestFeatures<'_>) -> Option<usize> {
    backends
        .iter()
        .position(|b| b.name() == name && b.can_take(request))
}

/// Human-readable byte size for reasons.
fn bytes(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64)
    } else if n >= 1 << 10 {
        format!("{:.1} KiB", n as f64 / 1024.0)
    } else {
        format!("{n} B")
    }
}

#[cfg(test)]
pub(crate) mod testing {
    //! Builders of synthetic snapshots for policy tests.
    use switchyard_backends::{BackendKind, BackendSnapshot};

    use super::{BackendView, Observed, RequestFeatures};
    use crate::measure::RequestRate;

    pub fn view(name: &str, kind: BackendKind, in_flight: u64, capacity: u64) -> BackendView {
        BackendView {
            snapshot: BackendSnapshot {
                name: name.into(),
                kind,
                ready: true,
                in_flight,
                queued: in_flight.saturating_sub(capacity.min(1)),
                concurrency: capacity.min(4),
                capacity,
                headroom: 0,
                max_payload_bytes: None,
                unready_reason: None,
                cold_start_ms: None,
                memory_mb: None,
                shares_host_cpu: false,
            },
            observed: Observed::default(),
        }
    }

    pub fn request(rate: f64, payload_bytes: u64) -> RequestFeatures<'static> {
        RequestFeatures {
            model: "m",
            payload_bytes,
            rate: RequestRate::steady(rate),
            random: 7,
            host_cpu_busy: None,
            refused_on_host: false,
        }
    }
}
