//! The two ways to offer load, bounded in time and in count.
//!
//! **Open loop**: requests are due at the times a [`Schedule`] lists, whether
//! or not earlier ones have been answered, and each latency is measured from
//! its *intended* send time, so a server that stalls is charged for every
//! request that waited behind the stall (no coordinated omission). A
//! dedicated pacer thread sleeps to each due time (finishing with a short
//! spin, because tokio's timer wheel has 1 ms granularity and would add up
//! to a millisecond of fake latency) and hands the request to the tokio
//! runtime, where many keep-alive connections share a few threads. The
//! hand-off happens a little early and the task yields until the due time,
//! because waking an idle runtime thread takes tens of microseconds that
//! would otherwise be charged to the server. At most
//! `max_in_flight` requests are outstanding; a request due while that many
//! are is not sent and counts as `dropped`, rather than silently shifting
//! the schedule.
//!
//! **Closed loop**: `concurrency` workers each send their next request as
//! soon as the previous one is answered, for maximum-throughput runs.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, oneshot};

use crate::LoadgenError;
use crate::client::{HttpClient, exchange};
use crate::record::{Completed, LoadDescription, Recorder, Report, RunInfo};
use crate::schedule::{Arrival, Schedule};
use crate::target::Target;

/// Time between setting up an open-loop run and its first due request, so
/// the pacer thread is running before the schedule starts.
const START_LEAD: Duration = Duration::from_millis(2);
/// Longest busy-wait before a due time (also capped at a tenth of the mean
/// gap, so pacing costs at most ~10% of one core at any rate).
const MAX_SPIN: Duration = Duration::from_micros(100);
/// Extra time, beyond the request timeout, allowed for in-flight requests
/// to finish after the schedule ends.
const DRAIN_MARGIN: Duration = Duration::from_secs(1);

/// How load is offered.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Load {
    Open {
        arrival: Arrival,
        /// Requests outstanding at once; more are dropped.
        max_in_flight: usize,
    },
    Closed {
        /// Workers, each with one request outstanding at a time.
        concurrency: usize,
    },
}

/// Everything a run needs besides the target.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RunSettings {
    pub load: Load,
    /// Open loop: the schedule's length. Closed loop: no request starts
    /// after it.
    pub duration: Duration,
    /// At most this many requests, if set.
    pub max_requests: Option<u64>,
    /// Per-request timeout; a request still unanswered then is a timeout.
    pub timeout: Duration,
    /// Keep every request's [`crate::Sample`] (for plots); costs 24 bytes each.
    pub keep_samples: bool,
}

/// A finished run: everything recorded, and its summary.
#[derive(Debug, Clone)]
pub struct Recording {
    pub recorder: Recorder,
    pub report: Report,
}

/// Runs `settings` against `target`. The whole run takes at most the
/// duration plus the request timeout (plus a second of margin).
pub async fn run(
    client: &HttpClient,
    target: &Arc<Target>,
    settings: &RunSettings,
) -> Result<Recording, LoadgenError> {
    if settings.timeout.is_zero() {
        return Err(LoadgenError::Settings(
            "the request timeout must be > 0".into(),
        ));
    }
    let (recorder, start, scheduled, load) = match settings.load {
        Load::Open {
            arrival,
            max_in_flight,
        } => {
            let schedule = Schedule::new(arrival, settings.duration, settings.max_requests)?;
            let (recorder, start, scheduled) =
                open_loop(client, target, &schedule, max_in_flight, settings).await?;
            let load = LoadDescription::OpenLoop {
                arrival: arrival.name(),
                rate_per_s: arrival.rate(),
                max_in_flight,
            };
            (recorder, start, scheduled, load)
        }
        Load::Closed { concurrency } => {
            let (recorder, start) = closed_loop(client, target, concurrency, settings).await?;
            let scheduled = recorder.sent();
            (
                recorder,
                start,
                scheduled,
                LoadDescription::ClosedLoop { concurrency },
            )
        }
    };
    let end = recorder.last_done().unwrap_or_else(Instant::now);
    let first = target.body(0);
    let info = RunInfo {
        url: target.endpoint.base_url(),
        model: target.model.clone(),
        load,
        batch_size: first.rows,
        binary: first.json_length.is_some(),
        binary_output: first.binary_output,
        duration: settings.duration,
        scheduled,
        elapsed: end.saturating_duration_since(start),
    };
    let report = Report::new(&recorder, info);
    Ok(Recording { recorder, report })
}

fn lock(recorder: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    // A panic while recording cannot leave the histograms half-updated in a
    // way that matters more than losing the run, so poisoning is ignored.
    recorder.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Sets a flag when dropped, so the pacer thread stops if the run's future
/// is cancelled.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

async fn open_loop(
    client: &HttpClient,
    target: &Arc<Target>,
    schedule: &Schedule,
    max_in_flight: usize,
    settings: &RunSettings,
) -> Result<(Recorder, Instant, u64), LoadgenError> {
    let all_permits = u32::try_from(max_in_flight)
        .ok()
        .filter(|&n| n > 0 && (n as usize) < Semaphore::MAX_PERMITS)
        .ok_or_else(|| {
            LoadgenError::Settings(format!(
                "max_in_flight must be between 1 and {}, not {max_in_flight}",
                u32::MAX
            ))
        })?;
    let start = Instant::now() + START_LEAD;
    let recorder = Arc::new(Mutex::new(Recorder::new(start, settings.keep_samples)));
    let permits = Arc::new(Semaphore::new(max_in_flight));
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
    let pacer = Pacer {
        runtime: tokio::runtime::Handle::current(),
        client: client.clone(),
        target: Arc::clone(target),
        recorder: Arc::clone(&recorder),
        permits: Arc::clone(&permits),
        stop,
        start,
        spin: MAX_SPIN.min(schedule.mean_gap() / 10),
        timeout: settings.timeout,
    };
    let offsets = schedule.offsets();
    let (finished, scheduled) = oneshot::channel();
    std::thread::Builder::new()
        .name("loadgen-pacer".into())
        .spawn(move || {
            let _ = finished.send(pacer.run(offsets));
        })
        .map_err(|e| LoadgenError::Internal(format!("cannot start the pacer thread: {e}")))?;
    let scheduled = scheduled
        .await
        .map_err(|_| LoadgenError::Internal("the pacer thread stopped unexpectedly".into()))?;
    // Every request gives its permit back when it ends, and each ends within
    // the timeout, so holding all permits means the run is over.
    let drained = tokio::time::timeout(
        settings.timeout + DRAIN_MARGIN,
        permits.acquire_many(all_permits),
    )
    .await;
    if !matches!(drained, Ok(Ok(_))) {
        return Err(LoadgenError::Internal(
            "requests were still in flight after the timeout".into(),
        ));
    }
    let recorder = std::mem::replace(&mut *lock(&recorder), Recorder::new(start, false));
    Ok((recorder, start, scheduled))
}

/// The open loop's sending side, run on its own thread.
struct Pacer {
    runtime: tokio::runtime::Handle,
    client: HttpClient,
    target: Arc<Target>,
    recorder: Arc<Mutex<Recorder>>,
    permits: Arc<Semaphore>,
    stop: Arc<AtomicBool>,
    start: Instant,
    spin: Duration,
    timeout: Duration,
}

impl Pacer {
    /// Sends each request at its due time; returns how many were due.
    fn run(self, offsets: impl Iterator<Item = Duration>) -> u64 {
        let mut due = 0u64;
        for offset in offsets {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let intended = self.start + offset;
            wait_until(
                intended.checked_sub(self.spin).unwrap_or(intended),
                self.spin,
            );
            let index = due;
            due += 1;
            let Ok(permit) = Arc::clone(&self.permits).try_acquire_owned() else {
                lock(&self.recorder).record_dropped(intended);
                continue;
            };
            let client = self.client.clone();
            let target = Arc::clone(&self.target);
            let recorder = Arc::clone(&self.recorder);
            let timeout = self.timeout;
            self.runtime.spawn(async move {
                while Instant::now() < intended {
                    tokio::task::yield_now().await;
                }
                let sent = Instant::now();
                let exchange = exchange(&client, &target, index, timeout).await;
                let done = Instant::now();
                lock(&recorder).record(&Completed {
                    intended,
                    sent,
                    done,
                    rows: target.body(index).rows,
                    exchange: &exchange,
                });
                drop(permit);
            });
        }
        due
    }
}

/// Sleeps until `deadline`, spinning (yielding) for at most the last `spin`.
/// Thread sleeps overshoot by tens of microseconds; the spin absorbs that.
fn wait_until(deadline: Instant, spin: Duration) {
    loop {
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        let left = deadline - now;
        if left > spin {
            std::thread::sleep(left - spin);
        } else {
            std::thread::yield_now();
        }
    }
}

async fn closed_loop(
    client: &HttpClient,
    target: &Arc<Target>,
    concurrency: usize,
    settings: &RunSettings,
) -> Result<(Recorder, Instant), LoadgenError> {
    if concurrency == 0 {
        return Err(LoadgenError::Settings(
            "concurrency must be at least 1".into(),
        ));
    }
    if settings.duration.is_zero() {
        return Err(LoadgenError::Settings(
            "the duration must be greater than zero".into(),
        ));
    }
    let start = Instant::now();
    let deadline = start + settings.duration;
    let issued = Arc::new(AtomicU64::new(0));
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let target = Arc::clone(target);
            let issued = Arc::clone(&issued);
            let settings = *settings;
            tokio::spawn(async move {
                let mut recorder = Recorder::new(start, settings.keep_samples);
                while Instant::now() < deadline {
                    let index = issued.fetch_add(1, Ordering::Relaxed);
                    if settings.max_requests.is_some_and(|max| index >= max) {
                        break;
                    }
                    let sent = Instant::now();
                    let exchange = exchange(&client, &target, index, settings.timeout).await;
                    let done = Instant::now();
                    recorder.record(&Completed {
                        intended: sent,
                        sent,
                        done,
                        rows: target.body(index).rows,
                        exchange: &exchange,
                    });
                    if exchange.outcome == crate::Outcome::ConnectionError {
                        // A refused connection fails in microseconds; without
                        // a pause a dead server would be hammered in a hot loop.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                recorder
            })
        })
        .collect();
    let mut merged = Recorder::new(start, settings.keep_samples);
    for worker in workers {
        let recorder = worker
            .await
            .map_err(|e| LoadgenError::Internal(format!("a worker failed: {e}")))?;
        merged.merge(&recorder)?;
    }
    Ok((merged, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_until_is_never_early() {
        // How late it is depends on the machine's load (the report's send
        // lag shows it); that it is never early is what a test can promise.
        for micros in [0, 50, 300, 2_000] {
            let deadline = Instant::now() + Duration::from_micros(micros);
            wait_until(deadline, MAX_SPIN);
            assert!(Instant::now() >= deadline);
        }
    }
}
