//! Carries out the pre-warms placement policies ask for
//! ([`crate::policy::Policy::prewarm`]).
//!
//! A policy's advice is pure: "backend B should have S slots ready for the
//! next H seconds". Asking for it on every request would cost a little
//! arithmetic each time and, worse, could start a warm-up per request, so
//! the gateway asks at most once per `interval` per model, runs at most one
//! pre-warm per backend at a time (in a task of its own: the request that
//! triggered it does not wait), and keeps what happened for stats.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde::Serialize;
use switchyard_backends::Backend;

use crate::policy::Prewarm;

/// How often the gateway asks a model's policy for pre-warm advice.
pub const CHECK_INTERVAL: Duration = Duration::from_millis(250);

/// What pre-warming did on one backend, for stats.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct PrewarmRecord {
    /// Pre-warms started (the backend was asked).
    pub started: u64,
    /// Slots the backend set out to add over all of them.
    pub slots_added: u64,
    /// The latest advice carried out.
    pub last_model: Option<String>,
    pub last_slots: u64,
    pub last_reason: Option<String>,
    /// Seconds since the latest one started.
    pub last_seconds_ago: Option<f64>,
}

#[derive(Debug, Default)]
struct BackendState {
    busy: Arc<AtomicBool>,
    record: Arc<Mutex<(PrewarmRecord, Option<Instant>)>>,
}

/// Per-gateway pre-warm coordination.
#[derive(Debug)]
pub struct Prewarmer {
    interval: Duration,
    next_check: DashMap<String, Instant>,
    backends: Vec<BackendState>,
}

impl Prewarmer {
    pub fn new(backends: usize, interval: Duration) -> Self {
        Self {
            interval,
            next_check: DashMap::new(),
            backends: (0..backends).map(|_| BackendState::default()).collect(),
        }
    }

    /// Whether `model`'s policy should be asked now; if so, the next time
    /// is one interval away.
    pub fn due(&self, model: &str, now: Instant) -> bool {
        if let Some(mut next) = self.next_check.get_mut(model) {
            if now < *next {
                return false;
            }
            *next = now + self.interval;
            return true;
        }
        self.next_check
            .insert(model.to_owned(), now + self.interval);
        true
    }

    /// Starts `advice` on `backend` (number `index` in the gateway) unless a
    /// pre-warm is running there already. Returns whether it started. Needs
    /// a Tokio runtime.
    pub fn launch(
        &self,
        index: usize,
        backend: &Arc<dyn Backend>,
        model: &str,
        advice: &Prewarm,
    ) -> bool {
        let Some(state) = self.backends.get(index) else {
            return false;
        };
        if state.busy.swap(true, Ordering::AcqRel) {
            return false;
        }
        let busy = Arc::clone(&state.busy);
        let record = Arc::clone(&state.record);
        let backend = Arc::clone(backend);
        let model = model.to_owned();
        let slots = advice.slots;
        let reason = advice.reason.clone();
        let hold = Duration::from_secs_f64(advice.hold_s.clamp(0.0, 3600.0));
        tokio::spawn(async move {
            let started = Instant::now();
            let added = backend.prewarm(model.clone(), slots, hold).await;
            if added > 0 {
                tracing::info!(backend = %backend.name(), %model, slots, added, %reason, "pre-warmed");
                metrics::counter!("switchyard_prewarm_total", "backend" => backend.name().to_owned(), "model" => model.clone())
                    .increment(1);
                let mut record = record.lock().unwrap_or_else(PoisonError::into_inner);
                record.0.started += 1;
                record.0.slots_added += added;
                record.0.last_model = Some(model);
                record.0.last_slots = slots;
                record.0.last_reason = Some(reason);
                record.1 = Some(started);
            }
            busy.store(false, Ordering::Release);
        });
        true
    }

    /// Per backend (in the gateway's order), what pre-warming did.
    pub fn records(&self, now: Instant) -> Vec<PrewarmRecord> {
        self.backends
            .iter()
            .map(|state| {
                let record = state.record.lock().unwrap_or_else(PoisonError::into_inner);
                let mut out = record.0.clone();
                out.last_seconds_ago = record
                    .1
                    .map(|at| now.saturating_duration_since(at).as_secs_f64());
                out
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_is_checked_at_most_once_per_interval() {
        let prewarmer = Prewarmer::new(1, Duration::from_millis(250));
        let t0 = Instant::now();
        assert!(prewarmer.due("m", t0));
        assert!(!prewarmer.due("m", t0 + Duration::from_millis(100)));
        assert!(prewarmer.due("other", t0 + Duration::from_millis(100)));
        assert!(prewarmer.due("m", t0 + Duration::from_millis(250)));
        assert!(!prewarmer.due("m", t0 + Duration::from_millis(400)));
    }
}
