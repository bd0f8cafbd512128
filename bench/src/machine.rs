//! Facts about the machine and the clock that a benchmark table must carry
//! (CPU count and model, load average, date), and per-process CPU time from
//! `/proc`, which shows where the cycles of a run went.

use std::collections::{BTreeMap, HashMap};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

/// The machine a run was measured on.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPUs this process may use (what `nproc` prints).
    pub nproc: usize,
    /// The first `model name` of `/proc/cpuinfo`.
    pub cpu_model: String,
    pub kernel: String,
    /// `/proc/loadavg` when the run started: other work on the machine.
    pub load_average_at_start: String,
}

impl Machine {
    /// Reads the machine's facts; unknown ones are `"unknown"`.
    pub fn describe() -> Self {
        let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|text| {
                text.lines()
                    .find(|line| line.starts_with("model name"))
                    .and_then(|line| line.split_once(':'))
                    .map(|(_, value)| value.trim().to_owned())
            })
            .unwrap_or_else(|| "unknown".into());
        Self {
            nproc: std::thread::available_parallelism().map_or(1, usize::from),
            cpu_model,
            kernel: read_trimmed("/proc/sys/kernel/osrelease"),
            load_average_at_start: load_average(),
        }
    }
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path).map_or_else(|_| "unknown".into(), |s| s.trim().to_owned())
}

/// The whole machine's CPU counters (`/proc/stat`), in clock ticks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineCpu {
    /// user + nice + system + irq + softirq, over every CPU.
    busy_ticks: u64,
}

impl MachineCpu {
    /// Reads the counters, `None` if `/proc/stat` cannot be read.
    pub fn read() -> Option<Self> {
        let stat = std::fs::read_to_string("/proc/stat").ok()?;
        parse_machine_busy(&stat).map(|busy_ticks| Self { busy_ticks })
    }

    /// Cores the machine was busy on average between `self` and `later`.
    pub fn busy_cores_until(&self, later: &MachineCpu, elapsed: Duration) -> f64 {
        let ticks = later.busy_ticks.saturating_sub(self.busy_ticks) as f64;
        ticks / clock_ticks_per_second() as f64 / elapsed.as_secs_f64().max(1e-9)
    }
}

/// Busy ticks from the aggregate `cpu` line of `/proc/stat`: user, nice,
/// system, irq and softirq (not idle, iowait or time stolen by the host).
fn parse_machine_busy(stat: &str) -> Option<u64> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().ok())
        .collect::<Option<Vec<u64>>>()?;
    let field = |index: usize| fields.get(index).copied().unwrap_or(0);
    Some(field(0) + field(1) + field(2) + field(5) + field(6))
}

/// Every process's CPU time (user + system, `/proc/<pid>/stat`), by pid.
///
/// This, not [`MachineCpu`], is what other work is measured from. The
/// kernel keeps each process's counters to its exact run time, while the
/// machine's counters in `/proc/stat` are sampled at each timer tick: a run
/// paced at a rate that divides the tick rate (1,000/s against 250 ticks a
/// second) keeps the same phase against the ticks, and the machine's busy
/// time then reads far above or below what was used (bench/README.md, "The
/// other-work flag and tick sampling").
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProcessesCpu {
    ticks: HashMap<u32, u64>,
}

impl ProcessesCpu {
    /// Reads every process's counters, `None` if `/proc` cannot be listed.
    pub fn read() -> Option<Self> {
        let mut ticks = HashMap::new();
        for entry in std::fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse().ok()) else {
                continue;
            };
            // A process may end between the listing and the read.
            let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
                continue;
            };
            if let Some(used) = parse_cpu_ticks(&stat) {
                ticks.insert(pid, used);
            }
        }
        Some(Self { ticks })
    }

    /// CPU seconds all processes used between `self` and `later`: one alive
    /// at both readings by its difference, one started in between by all its
    /// time. One that ended in between is missed.
    pub fn used_until(&self, later: &ProcessesCpu) -> f64 {
        let ticks: u64 = later
            .ticks
            .iter()
            .map(|(pid, &after)| {
                self.ticks
                    .get(pid)
                    .map_or(after, |&before| after.saturating_sub(before))
            })
            .sum();
        ticks as f64 / clock_ticks_per_second() as f64
    }
}

/// Cores used by processes other than the measured ones: every process's
/// CPU minus the measured processes', over the same window.
pub fn other_cores(
    processes: (Option<&ProcessesCpu>, Option<&ProcessesCpu>),
    measured_cpu_s: f64,
    elapsed: Duration,
) -> f64 {
    match processes {
        (Some(before), Some(after)) => {
            let other_s = before.used_until(after) - measured_cpu_s;
            (other_s / elapsed.as_secs_f64().max(1e-9)).max(0.0)
        }
        _ => 0.0,
    }
}

/// What [`wait_until_idle`] found.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Settled {
    /// How long it waited.
    pub waited: Duration,
    /// Busy cores over the last window it measured (`None` if `/proc/stat`
    /// cannot be read, in which case it waited `min` only).
    pub busy_cores: Option<f64>,
}

impl Settled {
    pub fn is_idle(&self, idle_cores: f64) -> bool {
        self.busy_cores.is_some_and(|busy| busy < idle_cores)
    }
}

/// Waits at least `min`, then until the machine was busy on fewer than
/// `idle_cores` cores over one `window`, giving up after `max`. A run can
/// leave work behind that outlives its gateway (a Lambda instance still
/// answering requests whose client gave up, containers being removed); the
/// next run must not start on top of it.
pub async fn wait_until_idle(
    min: Duration,
    max: Duration,
    window: Duration,
    idle_cores: f64,
) -> Settled {
    let started = std::time::Instant::now();
    tokio::time::sleep(min).await;
    let mut busy_cores = None;
    while let Some(before) = MachineCpu::read() {
        let measured = std::time::Instant::now();
        tokio::time::sleep(window).await;
        let Some(after) = MachineCpu::read() else {
            break;
        };
        let busy = before.busy_cores_until(&after, measured.elapsed());
        busy_cores = Some(busy);
        if busy < idle_cores || started.elapsed() >= max {
            break;
        }
    }
    Settled {
        waited: started.elapsed(),
        busy_cores,
    }
}

/// The 1, 5 and 15 minute load averages.
pub fn load_average() -> String {
    let text = read_trimmed("/proc/loadavg");
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

/// CPU seconds used between two readings of a process's CPU time; 0 if
/// either could not be read.
pub fn cpu_between(before: Option<Duration>, after: Option<Duration>) -> f64 {
    match (before, after) {
        (Some(before), Some(after)) => after.saturating_sub(before).as_secs_f64(),
        _ => 0.0,
    }
}

/// Clock ticks per second of `/proc/<pid>/stat` times, asked of `getconf`
/// once: a process started at every reading would be work of its own in
/// the window measured.
fn clock_ticks_per_second() -> u64 {
    static TICKS: OnceLock<u64> = OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|out| String::from_utf8(out.stdout).ok())
            .and_then(|text| text.trim().parse().ok())
            .filter(|&ticks| ticks > 0)
            .unwrap_or(100)
    })
}

/// User plus system CPU time of a process (every thread), or `None` if it
/// cannot be read (not Linux, process gone).
pub fn process_cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_ticks(&stat).map(|ticks| {
        let per_second = clock_ticks_per_second();
        Duration::from_secs_f64(ticks as f64 / per_second as f64)
    })
}

/// CPU time of a process's threads, summed by thread name with any
/// trailing `-<number>` removed (`ort-digits-0` and `ort-digits-1` are one
/// group), with the number of threads in each group.
pub fn thread_cpu_times(pid: u32) -> BTreeMap<String, ThreadGroupCpu> {
    let mut groups: BTreeMap<String, ThreadGroupCpu> = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return groups;
    };
    let per_second = clock_ticks_per_second() as f64;
    for task in tasks.flatten() {
        let dir = task.path();
        let (Ok(comm), Ok(stat)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("stat")),
        ) else {
            continue;
        };
        let Some(ticks) = parse_cpu_ticks(&stat) else {
            continue;
        };
        let group = groups.entry(thread_group(comm.trim())).or_default();
        group.threads += 1;
        group.cpu_s += ticks as f64 / per_second;
    }
    groups
}

/// CPU time of a group of same-named threads.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ThreadGroupCpu {
    pub threads: usize,
    pub cpu_s: f64,
}

/// CPU used by each thread group between two [`thread_cpu_times`] readings,
/// as cores (CPU seconds per second of `elapsed`), busiest first.
pub fn thread_cores(
    before: &BTreeMap<String, ThreadGroupCpu>,
    after: &BTreeMap<String, ThreadGroupCpu>,
    elapsed: Duration,
) -> Vec<ThreadCores> {
    let seconds = elapsed.as_secs_f64().max(1e-9);
    let mut cores: Vec<ThreadCores> = after
        .iter()
        .map(|(name, now)| {
            let earlier = before.get(name).map_or(0.0, |b| b.cpu_s);
            ThreadCores {
                name: name.clone(),
                threads: now.threads,
                cores: ((now.cpu_s - earlier) / seconds).max(0.0),
            }
        })
        .filter(|group| group.cores >= 0.005)
        .collect();
    cores.sort_by(|a, b| b.cores.total_cmp(&a.cores));
    cores
}

/// How busy a thread group was.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ThreadCores {
    pub name: String,
    pub threads: usize,
    /// Average number of cores the group used.
    pub cores: f64,
}

fn thread_group(comm: &str) -> String {
    match comm.rsplit_once('-') {
        Some((stem, suffix))
            if !stem.is_empty()
                && !suffix.is_empty()
                && suffix.bytes().all(|b| b.is_ascii_digit()) =>
        {
            stem.to_owned()
        }
        _ => comm.to_owned(),
    }
}

/// `utime + stime` from a `/proc/<pid>/stat` line. The command name (field
/// 2) may hold spaces and parentheses, so fields are counted after its last
/// `)`: state is the first of them, utime the 12th and stime the 13th.
fn parse_cpu_ticks(stat: &str) -> Option<u64> {
    let (_, rest) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

/// The current time as `YYYY-MM-DD HH:MM UTC`.
/// Installs the Debian `package` with apt-get when `present` says the
/// program is missing and this runs as root (as the benchmarks' set-up does
/// for wrk and nginx); `Err` says how to install it by hand otherwise.
pub fn apt_install(package: &str, present: impl Fn() -> bool) -> Result<(), String> {
    if present() {
        return Ok(());
    }
    let is_root = std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false);
    let how =
        format!("install it with `sudo apt-get install {package}` (Debian package) and rerun");
    if !is_root {
        return Err(format!("{package} is not installed; {how}"));
    }
    crate::local::progress(&format!(
        "{package} is missing: apt-get install -y {package}"
    ));
    // Installing from the cached lists first; if that fails, refreshing them.
    for args in [
        &["install", "-y", "-qq", package][..],
        &["update", "-qq"][..],
        &["install", "-y", "-qq", package][..],
    ] {
        let status = std::process::Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .status();
        if args[0] == "install" && status.is_ok_and(|s| s.success()) {
            break;
        }
    }
    if present() {
        Ok(())
    } else {
        Err(format!("installing {package} failed; {how}"))
    }
}

pub fn utc_now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    format_utc(seconds)
}

fn format_utc(unix_seconds: u64) -> String {
    let days = i64::try_from(unix_seconds / 86_400).unwrap_or(0);
    let (year, month, day) = civil_from_days(days);
    let minutes = (unix_seconds % 86_400) / 60;
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        minutes / 60,
        minutes % 60
    )
}

/// Days since 1970-01-01 to a Gregorian date (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = u32::try_from(doy - (153 * mp + 2) / 5 + 1).unwrap_or(1);
    let month = u32::try_from(if mp < 10 { mp + 3 } else { mp - 9 }).unwrap_or(1);
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runtime() -> tokio::runtime::Runtime {
        match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(runtime) => runtime,
            Err(error) => panic!("no runtime: {error}"),
        }
    }

    #[test]
    fn the_idle_wait_returns_once_the_machine_is_idle_or_the_time_is_up() {
        let runtime = runtime();
        let window = Duration::from_millis(50);
        // Any load counts as idle: one window after the minimum.
        let idle = runtime.block_on(wait_until_idle(
            Duration::from_millis(20),
            Duration::from_secs(30),
            window,
            f64::INFINITY,
        ));
        assert!(idle.is_idle(f64::INFINITY));
        assert!(idle.waited >= Duration::from_millis(70));
        assert!(idle.waited < Duration::from_secs(30));
        // No load counts as idle: it waits until the maximum has passed.
        let busy = runtime.block_on(wait_until_idle(
            Duration::ZERO,
            Duration::from_millis(300),
            window,
            0.0,
        ));
        assert!(!busy.is_idle(0.0));
        assert!(busy.busy_cores.is_some());
        assert!(busy.waited >= Duration::from_millis(300));
    }

    #[test]
    fn dates_format() {
        assert_eq!(format_utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(format_utc(951_782_400), "2000-02-29 00:00 UTC");
        assert_eq!(format_utc(1_767_225_599), "2025-12-31 23:59 UTC");
    }

    #[test]
    fn stat_lines_parse_despite_odd_names() {
        let line = "1234 (a (b) c) S 1 2 3 4 5 6 7 8 9 10 250 50 0 0 20 0 1 0";
        assert_eq!(parse_cpu_ticks(line), Some(300));
        assert_eq!(parse_cpu_ticks("garbage"), None);
    }

    #[test]
    fn machine_busy_ticks_leave_out_idle_iowait_and_steal() {
        let stat = "cpu  100 5 50 9000 40 3 2 7 0 0\ncpu0 50 2 25 4500 20 1 1 3 0 0\n";
        assert_eq!(parse_machine_busy(stat), Some(160));
        assert!(MachineCpu::read().is_some());
    }

    fn processes(ticks: &[(u32, u64)]) -> ProcessesCpu {
        ProcessesCpu {
            ticks: ticks.iter().copied().collect(),
        }
    }

    #[test]
    fn processes_count_what_each_used_between_the_readings() {
        let per_second = clock_ticks_per_second() as f64;
        // Pid 1 used 50 ticks, pid 2 none, pid 4 started and used 30; pid 3
        // ended and is missed.
        let before = processes(&[(1, 100), (2, 50), (3, 10)]);
        let after = processes(&[(1, 150), (2, 50), (4, 30)]);
        assert!((before.used_until(&after) - 80.0 / per_second).abs() < 1e-9);
        assert_eq!(after.used_until(&after), 0.0);
    }

    #[test]
    fn other_cores_are_what_the_measured_processes_did_not_use() {
        let second = clock_ticks_per_second();
        let before = processes(&[(1, 0), (2, 0)]);
        let after = processes(&[(1, second), (2, second / 2)]);
        let window = Duration::from_secs(1);
        // 1.5 s used in all, 1 s of it by the measured process.
        let other = other_cores((Some(&before), Some(&after)), 1.0, window);
        assert!((other - 0.5).abs() < 1e-9, "{other}");
        // Never below zero, and nothing without both readings.
        assert_eq!(other_cores((Some(&before), Some(&after)), 2.0, window), 0.0);
        assert_eq!(other_cores((None, Some(&after)), 0.0, window), 0.0);
    }

    #[test]
    fn processes_cpu_follows_this_process() {
        let me = std::process::id();
        let Some(before) = ProcessesCpu::read() else {
            panic!("/proc cannot be listed");
        };
        assert!(before.ticks.contains_key(&me));
        // Spin until this process has used 0.3 s more CPU (at most 10 s).
        let start = process_cpu_time(me).unwrap_or_default();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while process_cpu_time(me).unwrap_or_default() < start + Duration::from_millis(300)
            && std::time::Instant::now() < deadline
        {
            std::hint::black_box((0..10_000u64).sum::<u64>());
        }
        let Some(after) = ProcessesCpu::read() else {
            panic!("/proc cannot be listed");
        };
        let mine = after.ticks[&me].saturating_sub(before.ticks[&me]);
        assert!(
            mine as f64 / clock_ticks_per_second() as f64 >= 0.25,
            "this process used {mine} ticks"
        );
        assert!(before.used_until(&after) >= mine as f64 / clock_ticks_per_second() as f64);
    }

    #[test]
    fn thread_names_group_without_their_index() {
        assert_eq!(thread_group("ort-digits-0"), "ort-digits");
        assert_eq!(thread_group("ort-fashion_cnn"), "ort-fashion_cnn");
        assert_eq!(thread_group("tokio-runtime-w"), "tokio-runtime-w");
        assert_eq!(thread_group("worker-"), "worker-");
    }

    #[test]
    fn thread_groups_of_this_process_are_read() {
        let groups = thread_cpu_times(std::process::id());
        assert!(groups.values().map(|g| g.threads).sum::<usize>() >= 1);
    }

    #[test]
    fn this_process_has_a_cpu_time() {
        assert!(process_cpu_time(std::process::id()).is_some());
    }
}
