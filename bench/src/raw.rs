//! The physical limit: ONNX Runtime called in a loop in this process, with
//! no HTTP, no queue and no batching logic in between.
//!
//! `threads` threads each own a [`ModelSession`] built with the gateway's own
//! thread settings and run one pre-built input back to back for a fixed
//! time, or, paced, at a fixed low rate with the machine idle in between
//! (what one call costs when caches and cores are cold, as at low load). Each call includes what the gateway's worker also pays per call:
//! moving the tensors into ONNX Runtime and copying the outputs out.

use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde::Serialize;
use switchyard_loadgen::LatencySummary;
use switchyard_loadgen::payload::random_inputs;
use switchyard_loadgen::rng::SplitMix64;
use switchyard_models::{ModelSession, SessionOptions};

use crate::error::BenchError;
use crate::machine::{ProcessesCpu, cpu_between, other_cores, process_cpu_time};

/// One raw-loop measurement.
#[derive(Debug, Clone)]
pub struct RawPlan {
    pub model: String,
    pub path: PathBuf,
    pub threads: usize,
    pub intra_op_threads: usize,
    /// Rows per call.
    pub batch: u64,
    /// Untimed calls first, per thread, so allocations and caches settle.
    pub warmup: Duration,
    pub duration: Duration,
    /// Upper bound on calls per thread, whatever the duration.
    pub max_calls: u64,
    /// Calls per second per thread when paced (one call every `1/rate` s,
    /// the machine idle in between), instead of back to back.
    pub paced_rate: Option<f64>,
}

/// What a raw loop achieved.
#[derive(Debug, Clone, Serialize)]
pub struct RawResult {
    pub batch: u64,
    pub threads: usize,
    pub intra_op_threads: usize,
    /// Set for a paced loop: its calls per second per thread.
    pub paced_rate_per_s: Option<f64>,
    pub calls: u64,
    pub items: u64,
    pub elapsed_s: f64,
    pub calls_per_s: f64,
    pub items_per_s: f64,
    /// Per call, in µs.
    pub latency_us: LatencySummary,
    /// CPU time of this process during the timed window.
    pub cpu_s: f64,
    /// Cores that other processes used during the window (a build, say).
    pub other_cores: f64,
    pub cpu_us_per_item: f64,
    /// Every call's latency, µs, for merging runs.
    #[serde(skip)]
    pub histogram: Histogram<u64>,
}

/// One thread's part of a run.
struct ThreadResult {
    calls: u64,
    histogram: Histogram<u64>,
}

#[allow(clippy::expect_used)]
pub(crate) fn histogram() -> Histogram<u64> {
    // Constant bounds that hdrhistogram accepts: this cannot fail at run time.
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid constant histogram bounds")
}

/// Runs `plan`: loads a session per thread, warms up, then measures.
#[allow(clippy::cast_precision_loss)]
pub fn run_raw(plan: &RawPlan) -> Result<RawResult, BenchError> {
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), BenchError>>();
    let mut go_senders = Vec::with_capacity(plan.threads);
    let mut threads = Vec::with_capacity(plan.threads);
    for index in 0..plan.threads.max(1) {
        let (go_tx, go_rx) = mpsc::channel::<bool>();
        go_senders.push(go_tx);
        let plan = plan.clone();
        let ready_tx = ready_tx.clone();
        let thread = std::thread::Builder::new()
            .name(format!("raw-{}-{index}", plan.model))
            .spawn(move || raw_thread(&plan, index as u64, &ready_tx, &go_rx))
            .map_err(|e| BenchError::Other(format!("cannot start a raw-loop thread: {e}")))?;
        threads.push(thread);
    }
    drop(ready_tx);
    // Every thread reports ready (or its error) before any starts timing, so
    // model loading and warm-up stay out of the window.
    let mut failure = None;
    for _ in 0..threads.len() {
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(error)) => failure = failure.or(Some(error)),
            Err(_) => {
                failure = failure.or(Some(BenchError::Other(
                    "a raw-loop thread stopped before it was ready".into(),
                )));
            }
        }
    }
    let go = failure.is_none();
    let cpu_before = process_cpu_time(std::process::id());
    let processes_before = ProcessesCpu::read();
    let started = Instant::now();
    for sender in &go_senders {
        let _ = sender.send(go);
    }
    let mut merged = histogram();
    let mut calls = 0;
    for thread in threads {
        match thread.join() {
            Ok(Some(result)) => {
                calls += result.calls;
                merged
                    .add(&result.histogram)
                    .map_err(|e| BenchError::Other(format!("cannot merge histograms: {e:?}")))?;
            }
            Ok(None) => {}
            Err(_) => return Err(BenchError::Other("a raw-loop thread panicked".into())),
        }
    }
    let elapsed = started.elapsed();
    let cpu_after = process_cpu_time(std::process::id());
    let processes_after = ProcessesCpu::read();
    if let Some(error) = failure {
        return Err(error);
    }
    let cpu_s = cpu_between(cpu_before, cpu_after);
    let items = calls * plan.batch;
    let seconds = elapsed.as_secs_f64().max(1e-9);
    Ok(RawResult {
        batch: plan.batch,
        threads: plan.threads,
        intra_op_threads: plan.intra_op_threads,
        paced_rate_per_s: plan.paced_rate,
        calls,
        items,
        elapsed_s: seconds,
        calls_per_s: calls as f64 / seconds,
        items_per_s: items as f64 / seconds,
        latency_us: LatencySummary::of(&merged),
        histogram: merged,
        cpu_s,
        other_cores: other_cores(
            (processes_before.as_ref(), processes_after.as_ref()),
            cpu_s,
            elapsed,
        ),
        cpu_us_per_item: if items > 0 {
            cpu_s * 1e6 / items as f64
        } else {
            0.0
        },
    })
}

/// One thread: load, warm up, report ready, wait for the go, measure.
fn raw_thread(
    plan: &RawPlan,
    index: u64,
    ready: &mpsc::Sender<Result<(), BenchError>>,
    go: &mpsc::Receiver<bool>,
) -> Option<ThreadResult> {
    let prepared = (|| {
        let options = SessionOptions {
            intra_op_threads: plan.intra_op_threads,
        };
        let mut session = ModelSession::load(&plan.model, &plan.path, options)?;
        let mut rng = SplitMix64::new(index + 1);
        let inputs = random_inputs(&session.specs().inputs, plan.batch, &mut rng)
            .map_err(BenchError::Other)?;
        let warm_until = Instant::now() + plan.warmup;
        while Instant::now() < warm_until {
            session.run(inputs.clone())?;
        }
        Ok::<_, BenchError>((session, inputs))
    })();
    let (mut session, inputs) = match prepared {
        Ok(prepared) => {
            let _ = ready.send(Ok(()));
            prepared
        }
        Err(error) => {
            let _ = ready.send(Err(error));
            return None;
        }
    };
    if go.recv() != Ok(true) {
        return None;
    }
    let mut histogram = histogram();
    let mut calls = 0;
    let begin = Instant::now();
    let deadline = begin + plan.duration;
    let gap = plan
        .paced_rate
        .filter(|rate| rate.is_finite() && *rate > 0.0)
        .map(|rate| Duration::from_secs_f64(1.0 / rate));
    while calls < plan.max_calls {
        if let Some(gap) = gap {
            let due = begin + gap.saturating_mul(u32::try_from(calls).unwrap_or(u32::MAX));
            let now = Instant::now();
            if due > now {
                std::thread::sleep(due - now);
            }
        }
        let started = Instant::now();
        if started >= deadline {
            break;
        }
        // A failure here would also fail in the warm-up; stop rather than
        // count failed calls as work.
        if session.run(inputs.clone()).is_err() {
            break;
        }
        let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        histogram.saturating_record(micros);
        calls += 1;
    }
    Some(ThreadResult { calls, histogram })
}
