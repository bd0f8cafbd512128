//! Pinning threads to CPUs (`server.pin_threads`).
//!
//! Why: where the gateway shares its CPUs with its clients (a load
//! generator, a sidecar, worker containers on the same host), the kernel
//! wakes a thread that a loopback socket woke on the waker's CPU, where it
//! waits for the waker. A thread pinned to one CPU is woken on its own.
//! Measured on a 2-core VM (2026-12-06, alternating rounds with and
//! without): a digits request at 50 per second took 0.41x the p50 and its
//! ONNX Runtime call 0.31x the time; digits at saturation kept 0.97x the
//! throughput with 0.36x the p99. The async runtime's work stealing and the
//! local backend's shared queues still spread the work over every CPU.

use std::sync::atomic::{AtomicUsize, Ordering};

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
    /// kernel does not say (not Linux). The main thread itself is never
    /// pinned, so this stays the process's set after threads are pinned.
    pub fn of_process() -> Option<Self> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        Self::over(allowed_cpus_from_status(&status)?)
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

    /// Pins the calling thread to the next CPU in turn and returns it, or
    /// `None` (the thread stays unpinned) when the kernel refuses, which is
    /// logged.
    pub fn pin_next(&self) -> Option<usize> {
        pin_current(self.next_cpu())
    }
}

/// Pins the calling thread to `cpu`; `None` when the kernel refuses (the
/// thread keeps its CPUs), which is logged.
pub fn pin_current(cpu: usize) -> Option<usize> {
    if core_affinity::set_for_current(core_affinity::CoreId { id: cpu }) {
        Some(cpu)
    } else {
        tracing::warn!(
            cpu,
            thread = std::thread::current().name().unwrap_or("unnamed"),
            "cannot pin a thread to its CPU; it runs on any CPU"
        );
        None
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
                    let pinned = pinning.pin_next();
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
    }
}
