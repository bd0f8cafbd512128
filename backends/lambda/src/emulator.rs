//! The local `cargo lambda` emulator and function instances as child
//! processes, for the end-to-end tests and the benchmark. The emulator runs
//! with `--only-lambda-apis` (it must not run cargo: `cargo test` holds the
//! build lock) and instances are started here, each polling the emulator's
//! Runtime API for the function. Every process is killed when its handle is
//! dropped, also when a test fails.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The function's name: the emulator knows it as the workspace binary.
pub const FUNCTION: &str = "switchyard-lambda";

/// A child process, killed and reaped on drop.
#[derive(Debug)]
pub struct ChildProcess(Child);

impl ChildProcess {
    /// Starts `command` with no stdin and its output discarded.
    pub fn spawn(command: &mut Command, what: &str) -> Result<Self, String> {
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(Self)
            .map_err(|e| format!("cannot start {what}: {e}"))
    }

    /// Its process id (to signal it, e.g. SIGSTOP to make it hang).
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// Whether it has exited, and how.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
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
        if let Some(status) = process.exited() {
            return Err(format!("{what} exited at start: {status}"));
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!(
                "{what} did not listen on port {port} within {limit:?}"
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
            "the Lambda emulator",
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
    pub fn instance(
        &self,
        binary: &Path,
        models: &str,
        memory_mb: u64,
    ) -> Result<ChildProcess, String> {
        ChildProcess::spawn(
            Command::new(binary)
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
            "the function",
        )
    }

    /// Stops the emulator now (as if it crashed).
    pub fn stop(&mut self) {
        self.process.take();
    }
}
