//! The gateway under test as a child process: the release binary users run,
//! started on an ephemeral loopback port, and killed when dropped, so an
//! error anywhere in the benchmark cannot leave it running. The same type
//! runs `local`'s trivial server (`switchyard-bench trivial-server`), which
//! also exits when its stdin closes, should this process die unannounced.
//!
//! A child process rather than `run()` in this process: the load generator's
//! async runtime and the gateway's then share no threads and no allocator,
//! and the gateway's CPU time can be read on its own from `/proc`.

use std::cell::Cell;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use switchyard_loadgen::{Endpoint, HttpClient};

use crate::error::BenchError;
use crate::local::progress;
use crate::machine::process_cpu_time;

/// How long loading the models and binding may take.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);
/// What the gateway (and the trivial server) prints once it listens.
pub(crate) const BANNER: &str = "serving on http://";

/// A running gateway.
#[derive(Debug)]
pub struct GatewayProcess {
    child: Child,
    pub address: SocketAddr,
    log: PathBuf,
    /// Set once a failure has pointed the user at the log.
    keep_log: Cell<bool>,
    /// Where to copy the log when stopped ([`Self::keep_log_as`]).
    keep_as: Option<PathBuf>,
    /// The trivial server's stdin: it exits when this closes.
    _stdin: Option<ChildStdin>,
}

/// The gateway config the local benchmark runs with.
pub const LOCAL_ONLY_CONFIG: &str = "config/local-only.toml";

impl GatewayProcess {
    /// Starts `binary serve --config config/local-only.toml --listen
    /// 127.0.0.1:0` (the local-only baseline: no container or Lambda tier
    /// competing for the CPU), in the current directory (the repository
    /// root), and waits
    /// until it prints its address. Its log goes to a file in the temporary
    /// directory, named in errors.
    pub fn start(binary: &Path) -> Result<Self, BenchError> {
        Self::start_with_config(binary, Path::new(LOCAL_ONLY_CONFIG))
    }

    /// Like [`Self::start`], with another config file.
    pub fn start_with_config(binary: &Path, config: &Path) -> Result<Self, BenchError> {
        let mut command = Command::new(binary);
        command
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .stdin(Stdio::null());
        Self::spawn(
            command,
            "gateway",
            "cannot start the gateway (build it with `cargo build --release -p switchyard`)",
        )
    }

    /// Starts the bare HTTP server the floors are measured against
    /// (`switchyard-bench trivial-server`, this executable) as a child
    /// process. It exits when this value is dropped or this process dies
    /// (its stdin closes). `pin_threads`: its runtime's threads keep to
    /// one CPU each, as the gateway's do with `server.pin_threads`.
    pub fn start_trivial(pin_threads: bool) -> Result<Self, BenchError> {
        let exe = std::env::current_exe().map_err(|source| BenchError::Io {
            context: "cannot locate this executable",
            path: PathBuf::from("(current exe)"),
            source,
        })?;
        let mut command = Command::new(exe);
        command.arg("trivial-server").stdin(Stdio::piped());
        if pin_threads {
            command.arg("--pin-threads");
        }
        Self::spawn(command, "trivial", "cannot start the trivial server")
    }

    fn spawn(mut command: Command, name: &str, context: &'static str) -> Result<Self, BenchError> {
        let log = std::env::temp_dir().join(format!(
            "switchyard-bench-{name}-{}.log",
            std::process::id()
        ));
        let log_file = std::fs::File::create(&log).map_err(|source| BenchError::Io {
            context: "cannot create the server log",
            path: log.clone(),
            source,
        })?;
        let program = PathBuf::from(command.get_program());
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(log_file)
            .spawn()
            .map_err(|source| BenchError::Io {
                context,
                path: program,
                source,
            })?;
        let stdin = child.stdin.take();
        let stdout = child.stdout.take();
        let (address_tx, address_rx) = mpsc::channel();
        // Reads the banner, then keeps draining stdout so the child never
        // blocks on a full pipe.
        std::thread::spawn(move || {
            let Some(stdout) = stdout else { return };
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent && let Some((_, rest)) = line.split_once(BANNER) {
                    let _ = address_tx.send(rest.trim().to_owned());
                    sent = true;
                }
            }
        });
        let mut process = Self {
            child,
            address: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
            keep_log: Cell::new(false),
            keep_as: None,
            _stdin: stdin,
        };
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        loop {
            match address_rx.recv_timeout(Duration::from_millis(100)) {
                Ok(text) => {
                    process.address = text.parse().map_err(|_| {
                        BenchError::Gateway(format!("unexpected address {text:?} in its banner"))
                    })?;
                    return Ok(process);
                }
                Err(mpsc::RecvTimeoutError::Timeout) if Instant::now() < deadline => {
                    if let Ok(Some(status)) = process.child.try_wait() {
                        return Err(process.failure(&format!("exited with {status} at start-up")));
                    }
                }
                Err(_) => {
                    return Err(process.failure("did not print its address in time"));
                }
            }
        }
    }

    fn failure(&self, what: &str) -> BenchError {
        self.keep_log.set(true);
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        let tail: Vec<&str> = log.lines().rev().take(10).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        BenchError::Gateway(format!(
            "{what}; log {}:\n{}",
            self.log.display(),
            tail.join("\n")
        ))
    }

    /// Copies its log to `to` once it has stopped (when dropped), however
    /// the run ended.
    pub fn keep_log_as(&mut self, to: PathBuf) {
        self.keep_as = Some(to);
    }

    /// The base URL.
    pub fn endpoint(&self) -> Result<Endpoint, BenchError> {
        Ok(Endpoint::parse(&format!("http://{}", self.address), false)?)
    }

    /// `GET /v2/switchyard/stats`, parsed.
    pub async fn stats(&self, client: &HttpClient) -> Result<serde_json::Value, BenchError> {
        let uri = self.endpoint()?.uri("/v2/switchyard/stats")?;
        let unreadable = |e: &dyn std::fmt::Display| BenchError::Gateway(format!("no stats: {e}"));
        let response = tokio::time::timeout(Duration::from_secs(5), client.get(uri))
            .await
            .map_err(|e| unreadable(&e))?
            .map_err(|e| unreadable(&e))?;
        let body = response
            .into_body()
            .collect()
            .await
            .map_err(|e| unreadable(&e))?
            .to_bytes();
        serde_json::from_slice(&body).map_err(|e| unreadable(&e))
    }

    /// Waits until `GET /v2/health/ready` answers 200.
    pub async fn wait_ready(&mut self, client: &HttpClient) -> Result<(), BenchError> {
        let uri = self.endpoint()?.uri("/v2/health/ready")?;
        let deadline = Instant::now() + STARTUP_TIMEOUT;
        while Instant::now() < deadline {
            if let Ok(Ok(response)) =
                tokio::time::timeout(Duration::from_secs(2), client.get(uri.clone())).await
            {
                let ok = response.status().is_success();
                let _ = response.into_body().collect().await;
                if ok {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(self.failure(&format!("exited with {status}")));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Err(self.failure("never became ready"))
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Asks the gateway to stop (SIGTERM) and waits up to `limit` for it to
    /// drain and exit; its exit status, or `None` if it had to be killed.
    pub fn terminate(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// CPU time the gateway has used so far (all its threads).
    pub fn cpu_time(&self) -> Option<Duration> {
        process_cpu_time(self.child.id())
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if let Some(to) = &self.keep_as
            && let Err(error) = std::fs::copy(&self.log, to)
        {
            progress(&format!(
                "cannot keep the gateway log as {}: {error}",
                to.display()
            ));
        }
        if !self.keep_log.get() {
            let _ = std::fs::remove_file(&self.log);
        }
    }
}
