//! How busy the gateway's machine is: the share of all its CPUs' time spent
//! running anything (user, system, interrupts, and steal by the hypervisor),
//! from the kernel's `/proc/stat`: the higher of the share over the last
//! reading's interval (a quarter of a second) and over the last second.
//! The short span sees a burst saturate the host within about a quarter
//! second; the long one keeps the host saturated through a brief lull. On
//! a burst after a quiet spell, the one-second span alone let `adaptive`
//! send the first second of the burst's overflow to a container on the
//! same cores (14 xception requests in one measured burst of 28/s, each
//! 3-4 s, while the local tier ran the rest).
//!
//! Placement reads it for backends that share this machine's CPU (the local
//! tier, worker containers of a local Docker engine, a Lambda emulator on
//! loopback): when the host is saturated, sending work to another tier on
//! it brings no CPU, it takes CPU from the tier already running there (see
//! the `adaptive` policy).
//!
//! Sampling is lazy: a request that finds the reading older than
//! [`SAMPLE_INTERVAL`] reads `/proc/stat` again (one small file read, by
//! one request at a time), so an idle gateway does no work for it and no
//! thread wakes on a timer.

use std::collections::VecDeque;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How old a reading may get before a request refreshes it.
pub const SAMPLE_INTERVAL: Duration = Duration::from_millis(250);
/// The span the busy share is measured over.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Cumulative CPU time of all CPUs, in the kernel's clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuTimes {
    /// Ticks spent running something (all but idle and I/O wait).
    pub busy: u64,
    /// All ticks.
    pub total: u64,
}

/// The first (`cpu `, all CPUs) line of `/proc/stat`: user nice system idle
/// iowait irq softirq steal [guest guest_nice]. Guest time is already in
/// user and nice, so it is not added again. `None` if the line is missing
/// or malformed.
pub fn parse_proc_stat(text: &str) -> Option<CpuTimes> {
    let line = text.lines().find(|l| l.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .take(8)
        .map(str::parse)
        .collect::<Result<_, _>>()
        .ok()?;
    if fields.len() < 4 {
        return None;
    }
    let total: u64 = fields.iter().sum();
    let idle = fields[3] + fields.get(4).copied().unwrap_or(0);
    Some(CpuTimes {
        busy: total.saturating_sub(idle),
        total,
    })
}

/// The busy share to report when `latest` is read: the higher of the share
/// since the newest earlier reading and since the oldest one kept (the
/// newest at least [`WINDOW`] old). `None` without an earlier reading.
pub fn recent_busy(readings: &VecDeque<(Instant, CpuTimes)>, latest: CpuTimes) -> Option<f64> {
    let since = |reading: Option<&(Instant, CpuTimes)>| {
        reading.and_then(|&(_, earlier)| busy_between(earlier, latest))
    };
    match (since(readings.back()), since(readings.front())) {
        (Some(short), Some(long)) => Some(short.max(long)),
        (short, long) => short.or(long),
    }
}

/// The busy share between two readings, `None` when no tick passed.
pub fn busy_between(earlier: CpuTimes, later: CpuTimes) -> Option<f64> {
    let total = later.total.checked_sub(earlier.total)?;
    let busy = later.busy.checked_sub(earlier.busy)?;
    (total > 0).then(|| (busy as f64 / total as f64).clamp(0.0, 1.0))
}

/// Where readings come from.
#[derive(Debug)]
enum Source {
    /// `/proc/stat`, with the readings of the last window.
    Proc(Mutex<VecDeque<(Instant, CpuTimes)>>),
    /// A fixed share (tests, and embedders that measure elsewhere).
    Fixed,
}

/// The host's CPU busy share, shared by all requests.
#[derive(Debug)]
pub struct HostCpu {
    source: Source,
    started: Instant,
    /// The latest busy share as `f64` bits; `u64::MAX` while unknown.
    busy: AtomicU64,
    /// When the reading was last refreshed, µs since `started`.
    refreshed_us: AtomicU64,
}

const UNKNOWN: u64 = u64::MAX;

impl HostCpu {
    /// Reads `/proc/stat` (unknown where there is none).
    pub fn from_proc() -> Self {
        let host = Self {
            source: Source::Proc(Mutex::new(VecDeque::new())),
            started: Instant::now(),
            busy: AtomicU64::new(UNKNOWN),
            refreshed_us: AtomicU64::new(0),
        };
        host.refresh(Instant::now());
        host
    }

    /// Always reports `busy` (clamped to 0–1); `None` reports unknown.
    pub fn fixed(busy: Option<f64>) -> Self {
        let host = Self {
            source: Source::Fixed,
            started: Instant::now(),
            busy: AtomicU64::new(UNKNOWN),
            refreshed_us: AtomicU64::new(0),
        };
        host.set(busy);
        host
    }

    /// Sets the share a fixed source reports (ignored for `/proc/stat`).
    pub fn set(&self, busy: Option<f64>) {
        if matches!(self.source, Source::Fixed) {
            let bits = busy.map_or(UNKNOWN, |b| b.clamp(0.0, 1.0).to_bits());
            self.busy.store(bits, Ordering::Relaxed);
        }
    }

    /// The share of the host's CPU time busy recently (see the module
    /// documentation), refreshed first if the reading is older than [`SAMPLE_INTERVAL`];
    /// `None` until two readings exist or where `/proc/stat` is missing.
    pub fn busy(&self, now: Instant) -> Option<f64> {
        if matches!(self.source, Source::Proc(_)) {
            let since = self.micros(now);
            let last = self.refreshed_us.load(Ordering::Relaxed);
            if since.saturating_sub(last) >= SAMPLE_INTERVAL.as_micros() as u64 {
                self.refresh(now);
            }
        }
        self.last()
    }

    /// The reading as it is, without refreshing it (stats).
    pub fn last(&self) -> Option<f64> {
        let bits = self.busy.load(Ordering::Relaxed);
        (bits != UNKNOWN).then(|| f64::from_bits(bits))
    }

    fn micros(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.started).as_micros()).unwrap_or(u64::MAX)
    }

    /// Takes a reading and measures the busy share against the readings
    /// kept ([`recent_busy`]). Another request already refreshing is left
    /// to it.
    fn refresh(&self, now: Instant) {
        let Source::Proc(readings) = &self.source else {
            return;
        };
        let Ok(mut readings) = readings.try_lock() else {
            return;
        };
        self.refreshed_us.store(self.micros(now), Ordering::Relaxed);
        let Some(times) = std::fs::read_to_string("/proc/stat")
            .ok()
            .as_deref()
            .and_then(parse_proc_stat)
        else {
            return;
        };
        // Keep the newest reading at least WINDOW old as the base.
        while readings.len() >= 2
            && readings
                .get(1)
                .is_some_and(|(at, _)| now.saturating_duration_since(*at) >= WINDOW)
        {
            readings.pop_front();
        }
        if let Some(busy) = recent_busy(&readings, times) {
            self.busy.store(busy.to_bits(), Ordering::Relaxed);
            metrics::gauge!("switchyard_host_cpu_busy_ratio").set(busy);
        }
        readings.push_back((now, times));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn the_all_cpus_line_gives_busy_and_total_ticks() {
        let text = "cpu  100 5 50 800 20 3 2 10 7 0\ncpu0 50 2 25 400 10 1 1 5 0 0\nintr 1 2\n";
        let times = parse_proc_stat(text).unwrap();
        // guest (7) is inside user already: the first eight fields count.
        assert_eq!(times.total, 100 + 5 + 50 + 800 + 20 + 3 + 2 + 10);
        assert_eq!(times.busy, times.total - 800 - 20);
        // Old kernels have only the first four fields.
        let old = parse_proc_stat("cpu 10 0 10 80\n").unwrap();
        assert_eq!((old.busy, old.total), (20, 100));
    }

    #[test]
    fn malformed_text_is_no_reading() {
        for text in ["", "cpu0 1 2 3 4\n", "cpu  1 2 x 4\n", "cpu  1 2\n"] {
            assert_eq!(parse_proc_stat(text), None, "{text:?}");
        }
    }

    #[test]
    fn busy_share_between_readings() {
        let a = CpuTimes {
            busy: 100,
            total: 1000,
        };
        let b = CpuTimes {
            busy: 250,
            total: 1200,
        };
        assert_eq!(busy_between(a, b), Some(0.75));
        assert_eq!(busy_between(a, a), None);
        // A counter that went backwards (a different machine) is no reading.
        assert_eq!(busy_between(b, a), None);
    }

    #[test]
    fn a_burst_counts_at_once_and_a_lull_only_after_the_window() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let times = |busy: u64, total: u64| CpuTimes { busy, total };
        // Idle for a second, then 250 ms fully busy: the short span says
        // saturated while the second-long one is still mostly idle.
        let mut readings = VecDeque::from([(at(0), times(0, 0)), (at(1000), times(10, 200))]);
        let burst = recent_busy(&readings, times(60, 250)).expect("busy");
        assert_eq!(burst, 1.0);
        // Busy for a second, then a 250 ms lull: the second-long span
        // keeps the host saturated.
        readings = VecDeque::from([(at(0), times(0, 0)), (at(1000), times(200, 200))]);
        let lull = recent_busy(&readings, times(200, 250)).expect("busy");
        assert!((lull - 0.8).abs() < 1e-9, "{lull}");
        // One earlier reading only: the share since it.
        readings = VecDeque::from([(at(0), times(0, 0))]);
        assert_eq!(recent_busy(&readings, times(25, 100)), Some(0.25));
        assert_eq!(recent_busy(&VecDeque::new(), times(25, 100)), None);
    }

    #[test]
    fn a_fixed_source_reports_what_it_is_set_to() {
        let host = HostCpu::fixed(Some(0.5));
        assert_eq!(host.busy(Instant::now()), Some(0.5));
        host.set(Some(1.5));
        assert_eq!(host.busy(Instant::now()), Some(1.0));
        host.set(None);
        assert_eq!(host.busy(Instant::now()), None);
    }

    #[test]
    fn proc_stat_readings_measure_this_machine() {
        if parse_proc_stat(&std::fs::read_to_string("/proc/stat").unwrap_or_default()).is_none() {
            return; // not Linux: nothing to read
        }
        let host = HostCpu::from_proc();
        let start = Instant::now();
        // Keep one CPU busy for the window so the share cannot be zero.
        let mut spins = 0u64;
        let mut reading = None;
        while start.elapsed() < Duration::from_millis(600) {
            spins = std::hint::black_box(spins.wrapping_add(1));
            if start.elapsed() >= SAMPLE_INTERVAL {
                reading = host.busy(Instant::now()).or(reading);
            }
        }
        let busy = reading.expect("two readings over 600 ms");
        assert!(busy > 0.0 && busy <= 1.0, "{busy}");
        assert_eq!(host.last(), Some(busy));
    }
}
