//! Pinning threads to CPUs (`server.pin_threads`).
//!
//! Why: where the gateway shares its CPUs with its clients (a load
//! generator, a sidecar, worker containers on the same host), an unpinned
//! thread moved between CPUs on most requests and ran its work several
//! times slower, apparently woken on its waker's busy CPU. A thread pinned
//! to one CPU is woken on its own.
//! Measured on a 2-core VM (2026-12-06, alternating rounds with and
//! without): a digits request at 50 per second took 0.41x the p50 and its
//! ONNX Runtime call 0.31x the time; digits at saturation kept 0.97x the
//! throughput with 0.36x the p99. The async runtime's work stealing and the
//! local backend's shared queues still spread the work over every CPU.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use nix::sched::{CpuSet, sched_getaffinity, sched_setaffinity};
use nix::unistd::Pid;

/// The CPUs this process may run on, handed out to threads in turn.
#[derive(Debug)]
pub struct CpuPinning {
    cpus: Vec<usize>,
    next: AtomicUsize,
}

impl CpuPinning {
    /// The CPUs this process may run on (under `taskset` or a cgroup
    /// cpuset, only those), as its main thread's mask says, or `None` when
    /// there are fewer than two (pinning would change nothing) or the
    /// kernel does not say. The main thread itself is never pinned, so this
    /// stays the process's set after threads are pinned.
    pub fn of_process() -> Option<Self> {
        // The process ID is the main thread's ID.
        let set = sched_getaffinity(Pid::this()).ok()?;
        let cpus = (0..CpuSet::count())
            .filter(|&cpu| set.is_set(cpu).unwrap_or(false))
            .collect();
        Self::over(cpus)
    }

    /// Pinning over `cpus`; `None` when there are fewer than two.
    pub fn over(cpus: Vec<usize>) -> Option<Self> {
        (cpus.len() >= 2).then(|| Self {
            cpus,
            next: AtomicUsize::new(0),
        })
    }

    /// The CPUs threads are pinned to, in the order they are handed out.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// The CPU the `index`-th thread gets: the list in turn.
    pub fn cpu_for(&self, index: usize) -> usize {
        self.cpus[index % self.cpus.len()]
    }

    /// The next CPU in turn.
    pub fn next_cpu(&self) -> usize {
        self.cpu_for(self.next.fetch_add(1, Ordering::Relaxed))
    }

    /// Lets the calling thread run on every CPU of the process again. A
    /// thread starts with its creator's mask, so a thread that a pinned
    /// thread starts (the async runtime's blocking pool grows from its
    /// workers) would otherwise be pinned too. A refusal is logged.
    pub fn unpin_current(&self) {
        set_current(&self.cpus);
    }
}

/// An async runtime whose workers [`pin_runtime_workers`] pins.
#[derive(Debug)]
pub struct PinnedRuntime {
    cpus: Vec<usize>,
    workers: usize,
    /// Threads of the runtime that have placed themselves so far.
    placed: Arc<AtomicUsize>,
}

impl PinnedRuntime {
    /// The CPUs the workers are pinned to, in turn.
    pub fn cpus(&self) -> &[usize] {
        &self.cpus
    }

    /// Waits (at most `timeout`) until the runtime's workers have started
    /// and pinned themselves, so that no blocking-pool thread started later
    /// takes a worker's turn and nothing is served before they are placed.
    pub fn wait(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.placed.load(Ordering::Acquire) < self.workers && Instant::now() < deadline {
            std::thread::sleep(Duration::from_micros(200));
        }
    }
}

/// Pins an async runtime's worker threads to the process's CPUs in turn;
/// `None` when there is nothing to pin (one CPU). The workers are the
/// first `workers` threads the runtime starts (it launches them as it is
/// built); the blocking pool's threads that come later run on any CPU of
/// the process. Call [`PinnedRuntime::wait`] once the runtime is built.
pub fn pin_runtime_workers(
    builder: &mut tokio::runtime::Builder,
    workers: usize,
) -> Option<PinnedRuntime> {
    let pinning = CpuPinning::of_process()?;
    let cpus = pinning.cpus().to_vec();
    let assigned = AtomicUsize::new(0);
    let placed = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&placed);
    builder.on_thread_start(move || {
        let index = assigned.fetch_add(1, Ordering::AcqRel);
        if index < workers {
            pin_current(pinning.cpu_for(index));
        } else {
            // Started by a pinned worker, it would be pinned to that
            // worker's CPU.
            pinning.unpin_current();
        }
        counter.fetch_add(1, Ordering::AcqRel);
    });
    Some(PinnedRuntime {
        cpus,
        workers,
        placed,
    })
}

/// Pins the calling thread to `cpu`; `None` when the kernel refuses (the
/// thread keeps its CPUs), which is logged.
pub fn pin_current(cpu: usize) -> Option<usize> {
    set_current(&[cpu]).then_some(cpu)
}

/// Lets the calling thread run on `cpus` only; `false` (logged) when the
/// kernel refuses.
fn set_current(cpus: &[usize]) -> bool {
    let mut set = CpuSet::new();
    let applied = cpus
        .iter()
        .try_for_each(|&cpu| set.set(cpu))
        .and_then(|()| sched_setaffinity(Pid::from_raw(0), &set));
    match applied {
        Ok(()) => true,
        Err(error) => {
            tracing::warn!(
                ?cpus,
                %error,
                thread = std::thread::current().name().unwrap_or("unnamed"),
                "cannot set a thread's CPUs; it keeps the ones it had"
            );
            false
        }
    }
}

/// The CPUs the calling thread may run on, from `/proc/thread-self/status`
/// (`Cpus_allowed_list`, e.g. `0-3,6`), for tests and diagnostics.
pub fn allowed_cpus_of_current_thread() -> std::io::Result<Vec<usize>> {
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    allowed_cpus_from_status(&status).ok_or_else(|| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "no readable Cpus_allowed_list in /proc/thread-self/status",
        )
    })
}

/// The `Cpus_allowed_list` of a `/proc/.../status` text.
pub fn allowed_cpus_from_status(status: &str) -> Option<Vec<usize>> {
    let list = status
        .lines()
        .find_map(|line| line.strip_prefix("Cpus_allowed_list:"))?
        .trim();
    let mut cpus = Vec::new();
    for part in list.split(',').filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((first, last)) => {
                let (first, last) = (first.parse::<usize>().ok()?, last.parse::<usize>().ok()?);
                if first > last {
                    return None;
                }
                cpus.extend(first..=last);
            }
            None => cpus.push(part.parse().ok()?),
        }
    }
    Some(cpus)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_cpu_is_not_worth_pinning() {
        assert!(CpuPinning::over(vec![]).is_none());
        assert!(CpuPinning::over(vec![3]).is_none());
        assert!(CpuPinning::over(vec![0, 1]).is_some());
    }

    #[test]
    fn threads_get_the_cpus_in_turn() {
        let pinning = CpuPinning::over(vec![2, 5, 7]).unwrap();
        let handed: Vec<usize> = (0..7).map(|i| pinning.cpu_for(i)).collect();
        assert_eq!(handed, [2, 5, 7, 2, 5, 7, 2]);
    }

    #[test]
    fn allowed_lists_are_read_with_ranges() {
        let status =
            "Name:\tx\nCpus_allowed:\tff\nCpus_allowed_list:\t0-2,5,8-9\nMems_allowed:\t1\n";
        assert_eq!(
            allowed_cpus_from_status(status),
            Some(vec![0, 1, 2, 5, 8, 9])
        );
        assert_eq!(
            allowed_cpus_from_status("Cpus_allowed_list:\t3\n"),
            Some(vec![3])
        );
        assert_eq!(allowed_cpus_from_status("Cpus_allowed_list:\t4-2\n"), None);
        assert_eq!(allowed_cpus_from_status("Cpus_allowed_list:\tx\n"), None);
        assert_eq!(allowed_cpus_from_status("Name:\tx\n"), None);
    }

    /// A pinned thread may run on its CPU only; the kernel says so. Skipped
    /// (with a message) on a machine or cpuset with one CPU.
    #[test]
    fn a_pinned_thread_runs_on_its_cpu_only() {
        let Some(pinning) = CpuPinning::of_process() else {
            eprintln!("skipped: this process may use fewer than two CPUs");
            return;
        };
        let allowed = allowed_cpus_of_current_thread().unwrap();
        assert_eq!(pinning.cpus(), allowed.as_slice(), "the process's CPUs");
        let pinning = std::sync::Arc::new(pinning);
        let seen: Vec<(Option<usize>, Vec<usize>)> = (0..2)
            .map(|_| {
                let pinning = pinning.clone();
                std::thread::spawn(move || {
                    let pinned = pin_current(pinning.next_cpu());
                    (pinned, allowed_cpus_of_current_thread().unwrap())
                })
                .join()
                .unwrap()
            })
            .collect();
        let cpus = pinning.cpus();
        assert_eq!(seen[0], (Some(cpus[0]), vec![cpus[0]]));
        assert_eq!(seen[1], (Some(cpus[1]), vec![cpus[1]]));
        // The thread that made the pinning keeps every CPU.
        assert_eq!(allowed_cpus_of_current_thread().unwrap(), allowed);
        // A thread started by a pinned thread starts pinned, until it is
        // let go.
        let pinning_for_child = pinning.clone();
        let (inherited, released) = std::thread::spawn(move || {
            pin_current(pinning_for_child.cpus()[0]).unwrap();
            std::thread::spawn(move || {
                let inherited = allowed_cpus_of_current_thread().unwrap();
                pinning_for_child.unpin_current();
                (inherited, allowed_cpus_of_current_thread().unwrap())
            })
            .join()
            .unwrap()
        })
        .join()
        .unwrap();
        assert_eq!(inherited, vec![cpus[0]]);
        assert_eq!(released, allowed);
    }
}
