//! The local `cargo lambda` emulator and function instances as child
//! processes, for the end-to-end tests and the benchmark. The emulator runs
//! with `--only-lambda-apis` (it must not run cargo: `cargo test` holds the
//! build lock) and instances are started here, each polling the emulator's
//! Runtime API for the function. Every process is killed when its handle is
//! dropped, also when a test fails.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The function's name: the emulator knows it as the workspace binary.
pub const FUNCTION: &str = "switchyard-lambda";

/// A child process, killed and reaped on drop. Its output goes to a file
/// in the temporary folder (removed on drop), so that a test or benchmark
/// it fails can say what the process printed before it went away.
#[derive(Debug)]
pub struct ChildProcess {
    child: Child,
    what: String,
    log: Option<PathBuf>,
}

/// The most of a child's output [`ChildProcess::report`] quotes: its end.
const REPORT_TAIL_BYTES: u64 = 4096;

impl ChildProcess {
    /// Starts `command` with no stdin, its stdout and stderr written to a
    /// log file (discarded if the file cannot be made).
    pub fn spawn(command: &mut Command, what: &str) -> Result<Self, String> {
        static SPAWNED: AtomicU64 = AtomicU64::new(0);
        let path = std::env::temp_dir().join(format!(
            "switchyard-child-{}-{}.log",
            std::process::id(),
            SPAWNED.fetch_add(1, Ordering::Relaxed)
        ));
        let log = File::create(&path).and_then(|out| Ok((out.try_clone()?, out)));
        let (stdout, stderr, log) = match log {
            Ok((out, err)) => (Stdio::from(out), Stdio::from(err), Some(path)),
            Err(_) => (Stdio::null(), Stdio::null(), None),
        };
        match command
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr)
            .spawn()
        {
            Ok(child) => Ok(Self {
                child,
                what: what.to_owned(),
                log,
            }),
            Err(e) => {
                if let Some(path) = log {
                    let _ = std::fs::remove_file(path);
                }
                Err(format!("cannot start {what}: {e}"))
            }
        }
    }

    /// Its process id (to signal it, e.g. SIGSTOP to make it hang).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Whether it still runs or how it exited, and the end of its output:
    /// for the message of a test or benchmark that it failed.
    pub fn report(&mut self) -> String {
        let state = match self.exited() {
            Some(status) => format!("has exited ({status})"),
            // Linux says whether it runs, sleeps or is stopped.
            None => std::fs::read_to_string(format!("/proc/{}/status", self.id()))
                .ok()
                .and_then(|status| {
                    status
                        .lines()
                        .find_map(|line| line.strip_prefix("State:"))
                        .map(|state| format!("is alive, state {}", state.trim()))
                })
                .unwrap_or_else(|| "is alive".to_owned()),
        };
        let output = match &self.log {
            Some(path) => tail(path, REPORT_TAIL_BYTES)
                .unwrap_or_else(|e| format!("(cannot read {}: {e})", path.display())),
            None => "(not kept)".to_owned(),
        };
        format!(
            "{} (pid {}) {state}; its output ends:\n{output}",
            self.what,
            self.id()
        )
    }
}

/// The last `bytes` of the file at `path`, as (lossy) text.
fn tail(path: &Path, bytes: u64) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let length = file.metadata()?.len();
    file.seek(SeekFrom::Start(length.saturating_sub(bytes)))?;
    let mut end = Vec::new();
    file.read_to_end(&mut end)?;
    Ok(String::from_utf8_lossy(&end).into_owned())
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(path) = &self.log {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port: {e}"))
}

/// Polls until something listens on `port`, `process` exits or `limit`
/// passes.
pub fn wait_listening(
    port: u16,
    process: &mut ChildProcess,
    limit: Duration,
    what: &str,
) -> Result<(), String> {
    let deadline = Instant::now() + limit;
    loop {
        if process.exited().is_some() {
            return Err(format!("{what} did not start: {}", process.report()));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what} did not listen on port {port} within {limit:?}: {}",
                process.report()
            ));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The release function binary beside `exe` (a test in `deps/`, or a
/// binary in the target folder), unless `SWITCHYARD_LAMBDA_FUNCTION_BIN`
/// names one.
pub fn function_binary(exe: &Path) -> Result<PathBuf, String> {
    if let Some(path) = std::env::var_os("SWITCHYARD_LAMBDA_FUNCTION_BIN") {
        return Ok(PathBuf::from(path));
    }
    exe.ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(FUNCTION))
        .find(|candidate| candidate.is_file())
        .ok_or_else(|| {
            format!(
                "no {FUNCTION} binary near {}: build it in the same profile, `cargo build \
                 --profile suite -p switchyard-lambda-function` beside the tests (`make test` \
                 does) or `--release` beside the release binaries, or set \
                 SWITCHYARD_LAMBDA_FUNCTION_BIN",
                exe.display()
            )
        })
}

/// `cargo lambda watch --only-lambda-apis` on a free loopback port.
#[derive(Debug)]
pub struct LocalEmulator {
    root: PathBuf,
    port: u16,
    process: Option<ChildProcess>,
}

impl LocalEmulator {
    /// Starts the emulator of the repository at `root` (its
    /// `.venv/bin/cargo-lambda`) and waits until it listens.
    pub fn start(root: &Path) -> Result<Self, String> {
        let binary = root.join(".venv/bin/cargo-lambda");
        if !binary.is_file() {
            return Err(format!(
                "{} is missing: run `make setup` (it installs backends/lambda/requirements.txt)",
                binary.display()
            ));
        }
        let port = free_port()?;
        let mut emulator = Self {
            root: root.to_owned(),
            port,
            process: None,
        };
        emulator.restart()?;
        Ok(emulator)
    }

    /// Starts the emulator again on the same port after [`Self::stop`]
    /// (function instances must be started again too).
    pub fn restart(&mut self) -> Result<(), String> {
        let binary = self.root.join(".venv/bin/cargo-lambda");
        let port = self.port;
        let mut process = ChildProcess::spawn(
            Command::new(&binary)
                .args(["lambda", "watch", "--only-lambda-apis", "-A", "127.0.0.1"])
                .args(["-P", &port.to_string()])
                .current_dir(&self.root),
            &format!("the Lambda emulator on port {port}"),
        )?;
        wait_listening(
            port,
            &mut process,
            Duration::from_secs(20),
            "the Lambda emulator",
        )?;
        self.process = Some(process);
        Ok(())
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The endpoint to configure in `[backends.lambda]`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Starts one instance of the function `binary`, loading `models`
    /// (comma-separated or `all`) and reporting `memory_mb`.
    ///
    /// The instance leads a process group of its own, because tests and
    /// the soak benchmark freeze it with SIGSTOP. Left in its parent's
    /// group, a stopped instance makes that group subject to the kernel's
    /// orphaned-group rule: when the last process linking the group to its
    /// session exits (say the shell that ran the tests in the background),
    /// every member gets SIGHUP and SIGCONT. The frozen function then
    /// wakes mid-test and answers a request meant to hang, and SIGHUP ends
    /// the emulator and the test run unless they ignore it. In its own
    /// group, linked by the process that started it, the instance is
    /// resumed only by whoever stopped it; if that process dies first,
    /// the same rule ends a stopped instance rather than leaving it frozen.
    /// A Ctrl-C at the terminal no longer reaches the instance itself: it
    /// stops the emulator, and a running instance exits when its poll of
    /// the emulator fails (both were gone within 2 s of SIGINT or SIGTERM
    /// to the emulator here).
    pub fn instance(
        &self,
        binary: &Path,
        models: &str,
        memory_mb: u64,
    ) -> Result<ChildProcess, String> {
        let mut command = Command::new(binary);
        #[cfg(unix)]
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        ChildProcess::spawn(
            command
                .env(
                    "AWS_LAMBDA_RUNTIME_API",
                    format!("http://127.0.0.1:{}/.rt/{FUNCTION}", self.port),
                )
                .env("AWS_LAMBDA_FUNCTION_NAME", FUNCTION)
                .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
                .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", memory_mb.to_string())
                .env("SWITCHYARD_LAMBDA_MODELS", models)
                .env(
                    "SWITCHYARD_MODEL_REPOSITORY",
                    self.root.join("models/repository"),
                )
                .current_dir(&self.root),
            &format!(
                "the function instance of the emulator on port {}",
                self.port
            ),
        )
    }

    /// Whether the emulator runs, and the end of its output: for the
    /// message of a test that finds it unreachable.
    pub fn report(&mut self) -> String {
        match &mut self.process {
            Some(process) => process.report(),
            None => "the Lambda emulator is stopped".to_owned(),
        }
    }

    /// Stops the emulator now (as if it crashed).
    pub fn stop(&mut self) {
        self.process.take();
    }
}
