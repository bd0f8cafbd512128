//! The two ways to offer load, bounded in time and in count.
//!
//! **Open loop**: requests are due at the times the [`Phases`] give
//! ([`Phases::arrivals`]), whether or not earlier ones have been answered,
//! and each latency is measured from its *intended* send time, so a server
//! that stalls is charged for every request that waited behind the stall
//! (no coordinated omission). A dedicated pacer thread sleeps to each due
//! time (finishing with a short spin, because tokio's timer wheel has 1 ms
//! granularity and would add up to a millisecond of fake latency) and hands
//! the request to the tokio runtime, where many keep-alive connections
//! share a few threads. The hand-off happens a little early and the task
//! yields until the due time, because waking an idle runtime thread takes
//! tens of microseconds that would otherwise be charged to the server. At
//! most `max_in_flight` requests are outstanding (lower during a phase with
//! its own `max_in_flight`, Artillery's `maxVusers`); a request due while
//! that many are is not sent and counts as `dropped`, rather than silently
//! shifting the schedule.
//!
//! **Closed loop**: `concurrency` workers each send their next request as
//! soon as the previous one is answered, for maximum-throughput runs.
//!
//! Every run is bounded: no request is due (or started) at or after
//! `max_duration`, at most `max_requests` are, and the whole run ends by
//! then plus the request timeout and a second.
//!
//! While a run goes on, [`run_observed`] hands a [`Live`] snapshot to an
//! observer a few times a second (the command's progress line).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{Semaphore, oneshot};

use crate::LoadgenError;
use crate::client::{Exchange, HttpClient, exchange, exchange_untimed};
use crate::mix::MixEntry;
use crate::phases::{Phases, Process};
use crate::record::{Completed, Mode, Outcome, PhaseInfo, Recorder, Report, RunInfo, Settings};
use crate::target::Target;

/// Time between setting up an open-loop run and its first due request, so
/// the pacer thread is running before the schedule starts.
const START_LEAD: Duration = Duration::from_millis(2);
/// Longest busy-wait before a due time (also capped at a tenth of the
/// smallest mean gap, so pacing costs at most ~10% of one core at any rate).
const MAX_SPIN: Duration = Duration::from_micros(100);
/// Extra time, beyond the request timeout, allowed for in-flight requests
/// to finish after the schedule ends.
const DRAIN_MARGIN: Duration = Duration::from_secs(1);
/// How often the observer of [`run_observed`] is called.
const OBSERVE_EVERY: Duration = Duration::from_millis(250);

/// How load is offered.
#[derive(Debug, Clone, PartialEq)]
pub enum Load {
    Open {
        phases: Phases,
        process: Process,
        /// Requests outstanding at once; more are dropped.
        max_in_flight: usize,
    },
    Closed {
        /// Workers, each with one request outstanding at a time.
        concurrency: usize,
        /// No request starts after this.
        duration: Duration,
    },
}

impl Load {
    /// Open loop at one constant rate (requests per second) for `duration`:
    /// the `--rate R --duration D` shorthand.
    pub fn constant_rate(
        rate: f64,
        duration: Duration,
        max_in_flight: usize,
    ) -> Result<Self, LoadgenError> {
        Ok(Load::Open {
            phases: Phases::constant(rate, duration)?,
            process: Process::Constant,
            max_in_flight,
        })
    }

    /// How long load is offered before the maximum duration cuts it.
    pub fn planned_duration(&self) -> Duration {
        match self {
            Load::Open { phases, .. } => phases.total_duration(),
            Load::Closed { duration, .. } => *duration,
        }
    }
}

/// Everything a run needs besides the target.
#[derive(Debug, Clone, PartialEq)]
pub struct RunSettings {
    pub load: Load,
    /// No request is due or started at or after this offset.
    pub max_duration: Duration,
    /// At most this many requests, if set.
    pub max_requests: Option<u64>,
    /// Per-request timeout; a request still unanswered then is a timeout.
    pub timeout: Duration,
    /// Keep every request's [`crate::Sample`]; costs 24 bytes each.
    pub keep_samples: bool,
}

impl RunSettings {
    /// `load` bounded by its own duration, with no request cap.
    pub fn new(load: Load, timeout: Duration) -> Self {
        Self {
            max_duration: load.planned_duration(),
            load,
            max_requests: None,
            timeout,
            keep_samples: false,
        }
    }
}

/// A finished run: everything recorded, and its summary.
#[derive(Debug, Clone)]
pub struct Recording {
    pub recorder: Recorder,
    pub report: Report,
}

/// A snapshot of a run in progress.
#[derive(Debug, Clone, PartialEq)]
pub struct Live {
    pub elapsed: Duration,
    /// The phase running now (name, index, number of phases).
    pub phase: String,
    pub phase_index: usize,
    pub phases: usize,
    /// Requests due per second over about the last second.
    pub offered_per_s: f64,
    /// 2xx answers per second over about the last second.
    pub achieved_per_s: f64,
    /// 2xx latency of the last complete second, from the intended send time.
    pub p50_us: Option<u64>,
    pub p99_us: Option<u64>,
    /// Requests that did not succeed so far (dropped included).
    pub errors: u64,
    pub in_flight: u64,
    pub sent: u64,
}

/// Runs `settings` against `target`. The whole run takes at most the
/// maximum duration plus the request timeout (plus a second of margin).
pub async fn run(
    client: &HttpClient,
    target: &Arc<Target>,
    settings: &RunSettings,
) -> Result<Recording, LoadgenError> {
    run_observed(client, target, settings, |_| {}).await
}

/// [`run`], calling `observe` with a [`Live`] snapshot every 250 ms.
pub async fn run_observed(
    client: &HttpClient,
    target: &Arc<Target>,
    settings: &RunSettings,
    mut observe: impl FnMut(&Live),
) -> Result<Recording, LoadgenError> {
    check(settings)?;
    let (phase_infos, planned) = plan(settings);
    let shared = Arc::new(Shared::new(settings.keep_samples));
    let work = async {
        match &settings.load {
            Load::Open {
                phases,
                process,
                max_in_flight,
            } => open_loop(
                client,
                target,
                &shared,
                OpenPlan {
                    phases: phases.clone(),
                    process: *process,
                    max_in_flight: *max_in_flight,
                },
                settings,
            )
            .await
            .map(|()| shared.start_at()),
            Load::Closed {
                concurrency,
                duration,
            } => closed_loop(client, target, &shared, *concurrency, *duration, settings).await,
        }
    };
    tokio::pin!(work);
    let mut ticker = tokio::time::interval(OBSERVE_EVERY);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut window = RateWindow::default();
    let start = loop {
        tokio::select! {
            result = &mut work => break result?,
            _ = ticker.tick() => {
                if let Some(live) = shared.live(&phase_infos, &mut window) {
                    observe(&live);
                }
            }
        }
    };
    let mut recorder = shared.take_recorder(start);
    recorder.finish();
    let end = recorder.last_done().unwrap_or_else(Instant::now);
    let info = RunInfo {
        settings: describe(target, settings),
        phases: phase_infos,
        planned,
        elapsed: end.saturating_duration_since(start),
    };
    let report = Report::new(&recorder, info)?;
    Ok(Recording { recorder, report })
}

fn check(settings: &RunSettings) -> Result<(), LoadgenError> {
    if settings.timeout.is_zero() {
        return Err(LoadgenError::Settings(
            "the request timeout must be > 0".into(),
        ));
    }
    if settings.max_duration.is_zero() {
        return Err(LoadgenError::Settings(
            "the maximum duration must be greater than zero".into(),
        ));
    }
    if settings.max_requests == Some(0) {
        return Err(LoadgenError::Settings(
            "the maximum number of requests must be at least 1".into(),
        ));
    }
    match settings.load {
        Load::Open { max_in_flight, .. } => {
            if max_in_flight == 0 || max_in_flight >= Semaphore::MAX_PERMITS.min(u32::MAX as usize)
            {
                return Err(LoadgenError::Settings(format!(
                    "max_in_flight must be between 1 and {}, not {max_in_flight}",
                    u32::MAX - 1
                )));
            }
        }
        Load::Closed {
            concurrency,
            duration,
        } => {
            if concurrency == 0 {
                return Err(LoadgenError::Settings(
                    "concurrency must be at least 1".into(),
                ));
            }
            if duration.is_zero() {
                return Err(LoadgenError::Settings(
                    "the duration must be greater than zero".into(),
                ));
            }
        }
    }
    Ok(())
}

/// The phases as the report describes them (cut at the maximum duration),
/// and how long load is to be offered.
fn plan(settings: &RunSettings) -> (Vec<PhaseInfo>, Duration) {
    let cap = settings.max_duration;
    match &settings.load {
        Load::Open { phases, .. } => {
            let infos: Vec<PhaseInfo> = phases
                .as_slice()
                .iter()
                .zip(phases.starts())
                .take_while(|(_, start)| *start < cap)
                .map(|(phase, start)| PhaseInfo {
                    name: phase.name.clone(),
                    start,
                    duration: phase.duration.min(cap - start),
                    load: Some(phase.load),
                    max_in_flight: phase.max_in_flight,
                })
                .collect();
            (infos, phases.total_duration().min(cap))
        }
        Load::Closed { duration, .. } => {
            let duration = (*duration).min(cap);
            let info = PhaseInfo {
                name: "closed loop".into(),
                start: Duration::ZERO,
                duration,
                load: None,
                max_in_flight: None,
            };
            (vec![info], duration)
        }
    }
}

fn describe(target: &Target, settings: &RunSettings) -> Settings {
    let first = target.entries.first();
    let (mode, process, concurrency, max_in_flight) = match &settings.load {
        Load::Open {
            process,
            max_in_flight,
            ..
        } => (Mode::OpenLoop, Some(*process), None, Some(*max_in_flight)),
        Load::Closed { concurrency, .. } => (Mode::ClosedLoop, None, Some(*concurrency), None),
    };
    Settings {
        url: target.endpoint.base_url(),
        mode,
        process,
        concurrency,
        max_in_flight,
        max_duration_s: settings.max_duration.as_secs_f64(),
        max_requests: settings.max_requests,
        timeout_s: settings.timeout.as_secs_f64(),
        mix: target
            .entries
            .iter()
            .map(|e| MixEntry {
                model: e.model.clone(),
                batch: e.batch,
                weight: e.weight,
            })
            .collect(),
        binary: first.is_some_and(|e| e.body(0).json_length.is_some()),
        binary_output: first.is_some_and(|e| e.body(0).binary_output),
        variants: first.map_or(0, |e| e.bodies.len()),
    }
}

fn lock(recorder: &Mutex<Recorder>) -> MutexGuard<'_, Recorder> {
    // A panic while recording cannot leave the histograms half-updated in a
    // way that matters more than losing the run, so poisoning is ignored.
    recorder.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What the sending side and the observer share.
struct Shared {
    recorder: Mutex<Recorder>,
    /// Requests due (open loop) or started (closed loop) so far.
    due: AtomicU64,
    /// When the run starts; set once the loop knows it.
    start: Mutex<Option<Instant>>,
    keep_samples: bool,
}

impl Shared {
    fn new(keep_samples: bool) -> Self {
        Self {
            recorder: Mutex::new(Recorder::new(Instant::now(), keep_samples)),
            due: AtomicU64::new(0),
            start: Mutex::new(None),
            keep_samples,
        }
    }

    /// Starts the recording at `start`.
    fn begin(&self, start: Instant) {
        *lock(&self.recorder) = Recorder::new(start, self.keep_samples);
        *self.start.lock().unwrap_or_else(PoisonError::into_inner) = Some(start);
    }

    fn start_at(&self) -> Instant {
        self.start
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or_else(Instant::now)
    }

    fn take_recorder(&self, start: Instant) -> Recorder {
        std::mem::replace(&mut *lock(&self.recorder), Recorder::new(start, false))
    }

    #[allow(clippy::cast_precision_loss)]
    fn live(&self, phases: &[PhaseInfo], window: &mut RateWindow) -> Option<Live> {
        let start = *self.start.lock().unwrap_or_else(PoisonError::into_inner);
        let start = start?;
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(start);
        let due = self.due.load(Ordering::Relaxed);
        let recorder = lock(&self.recorder);
        let ok = recorder.count(Outcome::Success);
        let sent = recorder.sent();
        let ended = recorder.overall().due();
        let errors = ended - ok;
        let last_second = usize::try_from(elapsed.as_secs())
            .unwrap_or(usize::MAX)
            .checked_sub(1);
        let second = last_second.and_then(|s| recorder.series().view(s));
        drop(recorder);
        let (offered_per_s, achieved_per_s) = window.rates(now, due, ok);
        let phase_index = phases.iter().rposition(|p| p.start <= elapsed).unwrap_or(0);
        Some(Live {
            elapsed,
            phase: phases
                .get(phase_index)
                .map_or_else(String::new, |p| p.name.clone()),
            phase_index,
            phases: phases.len(),
            offered_per_s,
            achieved_per_s,
            p50_us: second.and_then(|s| s.p50_us),
            p99_us: second.and_then(|s| s.p99_us),
            errors,
            in_flight: due.saturating_sub(ended),
            sent,
        })
    }
}

/// Counters at recent ticks, for rates over about the last second.
#[derive(Debug, Default)]
struct RateWindow {
    samples: VecDeque<(Instant, u64, u64)>,
}

impl RateWindow {
    #[allow(clippy::cast_precision_loss)]
    fn rates(&mut self, now: Instant, due: u64, ok: u64) -> (f64, f64) {
        self.samples.push_back((now, due, ok));
        while self.samples.len() > 2
            && self.samples.get(1).is_some_and(|(t, _, _)| {
                now.saturating_duration_since(*t) >= Duration::from_secs(1)
            })
        {
            self.samples.pop_front();
        }
        match self.samples.front() {
            Some(&(then, due_then, ok_then)) if now > then => {
                let seconds = now.saturating_duration_since(then).as_secs_f64();
                (
                    due.saturating_sub(due_then) as f64 / seconds,
                    ok.saturating_sub(ok_then) as f64 / seconds,
                )
            }
            _ => (0.0, 0.0),
        }
    }
}

/// Sets a flag when dropped, so the pacer thread stops if the run's future
/// is cancelled.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

struct OpenPlan {
    phases: Phases,
    process: Process,
    max_in_flight: usize,
}

async fn open_loop(
    client: &HttpClient,
    target: &Arc<Target>,
    shared: &Arc<Shared>,
    plan: OpenPlan,
    settings: &RunSettings,
) -> Result<(), LoadgenError> {
    let all_permits = u32::try_from(plan.max_in_flight).map_err(|_| {
        LoadgenError::Settings(format!(
            "max_in_flight must be at most {}, not {}",
            u32::MAX,
            plan.max_in_flight
        ))
    })?;
    let start = Instant::now() + START_LEAD;
    shared.begin(start);
    let permits = Arc::new(Semaphore::new(plan.max_in_flight));
    let stop = Arc::new(AtomicBool::new(false));
    let _stop_on_drop = StopOnDrop(Arc::clone(&stop));
    let peak = plan.phases.peak_rate().max(1e-9);
    let pacer = Pacer {
        runtime: tokio::runtime::Handle::current(),
        client: client.clone(),
        target: Arc::clone(target),
        shared: Arc::clone(shared),
        permits: Arc::clone(&permits),
        max_in_flight: plan.max_in_flight,
        stop,
        start,
        spin: MAX_SPIN.min(Duration::from_secs_f64((0.1 / peak).min(1.0))),
        timeout: settings.timeout,
        max_duration: settings.max_duration,
        max_requests: settings.max_requests,
    };
    let (finished, done) = oneshot::channel();
    std::thread::Builder::new()
        .name("loadgen-pacer".into())
        .spawn(move || {
            pacer.run(&plan.phases, plan.process);
            let _ = finished.send(());
        })
        .map_err(|e| LoadgenError::Internal(format!("cannot start the pacer thread: {e}")))?;
    done.await
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
    Ok(())
}

/// The open loop's sending side, run on its own thread.
struct Pacer {
    runtime: tokio::runtime::Handle,
    client: HttpClient,
    target: Arc<Target>,
    shared: Arc<Shared>,
    permits: Arc<Semaphore>,
    max_in_flight: usize,
    stop: Arc<AtomicBool>,
    start: Instant,
    spin: Duration,
    timeout: Duration,
    max_duration: Duration,
    max_requests: Option<u64>,
}

impl Pacer {
    /// Sends each request at its due time.
    fn run(self, phases: &Phases, process: Process) {
        let limits: Vec<usize> = phases
            .as_slice()
            .iter()
            .map(|p| {
                p.max_in_flight.map_or(self.max_in_flight, |m| {
                    usize::try_from(m)
                        .unwrap_or(usize::MAX)
                        .min(self.max_in_flight)
                })
            })
            .collect();
        let arrivals = phases
            .arrivals(process, self.max_requests)
            .take_while(|due| due.at < self.max_duration);
        for (index, due) in (0u64..).zip(arrivals) {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let intended = self.start + due.at;
            wait_until(
                intended.checked_sub(self.spin).unwrap_or(intended),
                self.spin,
            );
            self.shared.due.fetch_add(1, Ordering::Relaxed);
            let entry_index = self.target.choose(index);
            let limit = limits.get(due.phase).copied().unwrap_or(self.max_in_flight);
            let in_flight = self.max_in_flight - self.permits.available_permits();
            let permit = if in_flight < limit {
                Arc::clone(&self.permits).try_acquire_owned().ok()
            } else {
                None
            };
            let Some(permit) = permit else {
                lock(&self.shared.recorder).record_dropped(intended, due.phase, entry_index);
                continue;
            };
            let client = self.client.clone();
            let target = Arc::clone(&self.target);
            let shared = Arc::clone(&self.shared);
            let timeout = self.timeout;
            let phase = due.phase;
            self.runtime.spawn(async move {
                while Instant::now() < intended {
                    tokio::task::yield_now().await;
                }
                let sent = Instant::now();
                let entry = &target.entries[entry_index];
                let mut session = client.session();
                let exchange = exchange(&mut session, entry, index, timeout).await;
                drop(session);
                let done = Instant::now();
                lock(&shared.recorder).record(&Completed {
                    intended,
                    sent,
                    done,
                    phase,
                    entry: entry_index,
                    rows: entry.body(index).rows,
                    exchange: &exchange,
                });
                drop(permit);
            });
        }
    }
}

/// Sleeps until `deadline`, spinning (yielding) for at most the last `spin`.
/// Thread sleeps overshoot by tens of microseconds; the spin absorbs that.
/// The open loop's pacer waits with it, and so does the benchmark's
/// blocking client, so that both pace alike.
pub fn wait_until(deadline: Instant, spin: Duration) {
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
    shared: &Arc<Shared>,
    concurrency: usize,
    duration: Duration,
    settings: &RunSettings,
) -> Result<Instant, LoadgenError> {
    let start = Instant::now();
    shared.begin(start);
    let deadline = start + duration.min(settings.max_duration);
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            let client = client.clone();
            let target = Arc::clone(target);
            let shared = Arc::clone(shared);
            let max_requests = settings.max_requests;
            let timeout = settings.timeout;
            tokio::spawn(async move {
                let mut session = client.session();
                // One timer per worker instead of one per request: it is
                // armed at some earlier request's deadline, so it fires no
                // later than the current one's; when it fires early it is
                // re-armed at the current deadline (once per timeout span).
                let watchdog = tokio::time::sleep(timeout);
                tokio::pin!(watchdog);
                while Instant::now() < deadline {
                    let index = shared.due.fetch_add(1, Ordering::Relaxed);
                    if max_requests.is_some_and(|max| index >= max) {
                        shared.due.fetch_sub(1, Ordering::Relaxed);
                        break;
                    }
                    let entry_index = target.choose(index);
                    let entry = &target.entries[entry_index];
                    let sent = Instant::now();
                    let expires = sent + timeout;
                    let exchange = {
                        let round_trip = exchange_untimed(&mut session, entry, index);
                        tokio::pin!(round_trip);
                        loop {
                            tokio::select! {
                                biased;
                                exchange = &mut round_trip => break exchange,
                                () = &mut watchdog => {
                                    if Instant::now() >= expires {
                                        break Exchange::timed_out();
                                    }
                                    watchdog.as_mut().reset(expires.into());
                                }
                            }
                        }
                    };
                    let done = Instant::now();
                    lock(&shared.recorder).record(&Completed {
                        intended: sent,
                        sent,
                        done,
                        phase: 0,
                        entry: entry_index,
                        rows: entry.body(index).rows,
                        exchange: &exchange,
                    });
                    if exchange.outcome == Outcome::ConnectionError {
                        // A refused connection fails in microseconds; without
                        // a pause a dead server would be hammered in a hot loop.
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    } else {
                        // Let the runtime first read every other answer that
                        // is ready, then write the next requests together:
                        // the server wakes once for a burst of them instead
                        // of once per request. wrk does the same (it writes
                        // on the next writable event), and on a VM, where a
                        // wake-up costs 50-150 µs, this is worth 1.2-1.6x
                        // the requests per second of a closed loop.
                        tokio::task::yield_now().await;
                    }
                }
            })
        })
        .collect();
    for worker in workers {
        worker
            .await
            .map_err(|e| LoadgenError::Internal(format!("a worker failed: {e}")))?;
    }
    Ok(start)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::phases::Phase;

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

    #[test]
    fn the_maximum_duration_cuts_the_phases() {
        let phases = Phases::new(vec![
            Phase::rate("a", Duration::from_secs(2), 10.0),
            Phase::rate("b", Duration::from_secs(3), 10.0),
            Phase::rate("c", Duration::from_secs(3), 10.0),
        ])
        .unwrap();
        let mut settings = RunSettings::new(
            Load::Open {
                phases,
                process: Process::Constant,
                max_in_flight: 8,
            },
            Duration::from_secs(1),
        );
        assert_eq!(settings.max_duration, Duration::from_secs(8));
        settings.max_duration = Duration::from_secs(4);
        let (infos, planned) = plan(&settings);
        assert_eq!(planned, Duration::from_secs(4));
        assert_eq!(infos.len(), 2);
        assert_eq!(infos[1].duration, Duration::from_secs(2));
    }

    #[test]
    fn rates_cover_about_the_last_second() {
        let mut window = RateWindow::default();
        let t0 = Instant::now();
        assert_eq!(window.rates(t0, 0, 0), (0.0, 0.0));
        for i in 1..=8u64 {
            let t = t0 + Duration::from_millis(250 * i);
            let (offered, achieved) = window.rates(t, 100 * i, 50 * i);
            assert!((offered - 400.0).abs() < 1e-6, "{offered}");
            assert!((achieved - 200.0).abs() < 1e-6, "{achieved}");
        }
        assert!(window.samples.len() <= 6);
    }

    #[test]
    fn bad_settings_are_refused() {
        let load = Load::constant_rate(10.0, Duration::from_secs(1), 4).unwrap();
        let mut s = RunSettings::new(load, Duration::ZERO);
        assert!(check(&s).is_err());
        s.timeout = Duration::from_secs(1);
        assert!(check(&s).is_ok());
        s.max_requests = Some(0);
        assert!(check(&s).is_err());
        let closed = RunSettings::new(
            Load::Closed {
                concurrency: 0,
                duration: Duration::from_secs(1),
            },
            Duration::from_secs(1),
        );
        assert!(check(&closed).is_err());
        assert!(Load::constant_rate(0.0, Duration::from_secs(1), 4).is_err());
    }
}
