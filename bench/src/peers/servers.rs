//! The peers as child processes: the Python virtualenvs they run from
//! (made by the bench from the pinned requirement files), and Flask +
//! gunicorn, MLServer and Ray Serve started on a free loopback port, each
//! in a session of its own so that everything it starts (gunicorn's
//! workers, MLServer's worker pool, Ray's raylet, agents and actors) is
//! found and killed when the guard is dropped: at the end, on an error or
//! on Ctrl-C.

use std::io::Read;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use switchyard_loadgen::{Endpoint, HttpClient};

use crate::error::BenchError;

/// The Python servers' sources and requirement files.
pub const PEERS_DIR: &str = "bench/peers";
/// How long SIGTERM is given before SIGKILL.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);

/// A virtualenv the bench makes and fills from a requirements file.
#[derive(Debug, Clone)]
pub struct VenvSpec {
    pub dir: PathBuf,
    pub requirements: PathBuf,
}

/// Makes `spec.dir` with `python3 -m venv` and installs the requirements
/// into it, unless a stamp says this exact file was installed already.
/// The error carries the end of pip's output.
pub fn ensure_venv(spec: &VenvSpec) -> Result<PathBuf, String> {
    let requirements = std::fs::read_to_string(&spec.requirements)
        .map_err(|e| format!("cannot read {}: {e}", spec.requirements.display()))?;
    let stamp = spec.dir.join(".installed");
    let bin = spec.dir.join("bin");
    if std::fs::read_to_string(&stamp).is_ok_and(|text| text == requirements) {
        return Ok(bin);
    }
    if !bin.join("python").is_file() {
        let python = std::env::var_os("PYTHON").unwrap_or_else(|| "python3".into());
        run_quietly(
            Command::new(&python).args(["-m", "venv"]).arg(&spec.dir),
            "python3 -m venv",
        )?;
    }
    crate::local::progress(&format!(
        "installing {} into {} (pip; once)",
        spec.requirements.display(),
        spec.dir.display()
    ));
    run_quietly(
        Command::new(bin.join("pip"))
            .args(["install", "--disable-pip-version-check", "--quiet", "-r"])
            .arg(&spec.requirements),
        &format!("pip install -r {}", spec.requirements.display()),
    )?;
    std::fs::write(&stamp, requirements)
        .map_err(|e| format!("cannot write {}: {e}", stamp.display()))?;
    Ok(bin)
}

fn run_quietly(command: &mut Command, what: &str) -> Result<(), String> {
    let output = command
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("{what}: cannot run: {e}"))?;
    if output.status.success() {
        return Ok(());
    }
    let text = String::from_utf8_lossy(&output.stderr);
    let tail: Vec<&str> = text.lines().rev().take(6).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    Err(format!(
        "{what} failed ({}): {}",
        output.status,
        tail.join(" | ")
    ))
}

/// A free port on 127.0.0.1 (bound, read and released: the server binds it
/// a moment later).
pub fn free_port() -> Result<u16, BenchError> {
    let listener = TcpListener::bind("127.0.0.1:0").map_err(|source| BenchError::Io {
        context: "cannot find a free loopback port",
        path: PathBuf::from("127.0.0.1:0"),
        source,
    })?;
    listener
        .local_addr()
        .map(|address| address.port())
        .map_err(|source| BenchError::Io {
            context: "cannot read a bound port",
            path: PathBuf::from("127.0.0.1:0"),
            source,
        })
}

/// A server child process in its own session, with its log in a file.
#[derive(Debug)]
pub struct PeerProcess {
    pub name: String,
    child: Child,
    pub port: u16,
    log: PathBuf,
}

impl PeerProcess {
    /// Starts `command` (its output to `log`) in a new session through
    /// `setsid`, so the child's pid is its session id.
    pub fn spawn(
        name: &str,
        program: &Path,
        args: &[String],
        env: &[(String, String)],
        cwd: &Path,
        port: u16,
        log: PathBuf,
    ) -> Result<Self, BenchError> {
        let log_file = std::fs::File::create(&log).map_err(|source| BenchError::Io {
            context: "cannot create a server log",
            path: log.clone(),
            source,
        })?;
        let err_file = log_file.try_clone().map_err(|source| BenchError::Io {
            context: "cannot share a server log",
            path: log.clone(),
            source,
        })?;
        let child = Command::new("setsid")
            .arg(program)
            .args(args)
            .envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .current_dir(cwd)
            .stdin(Stdio::null())
            .stdout(log_file)
            .stderr(err_file)
            .spawn()
            .map_err(|source| BenchError::Io {
                context: "cannot start a server (through setsid)",
                path: program.to_owned(),
                source,
            })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            port,
            log,
        })
    }

    pub fn endpoint(&self) -> Result<Endpoint, BenchError> {
        Ok(Endpoint::parse(
            &format!("http://127.0.0.1:{}", self.port),
            false,
        )?)
    }

    /// The last lines of the server's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let mut text = String::new();
        if let Ok(mut file) = std::fs::File::open(&self.log) {
            let _ = file.read_to_string(&mut text);
        }
        let tail: Vec<&str> = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .rev()
            .take(lines)
            .collect();
        tail.into_iter().rev().collect::<Vec<_>>().join("\n")
    }

    /// Waits until `GET /v2/health/ready` and each model's
    /// `/v2/models/{m}/ready` answer 200, or the deadline passes, or the
    /// process exits.
    pub async fn wait_ready(
        &mut self,
        client: &HttpClient,
        models: &[&str],
        limit: Duration,
    ) -> Result<(), BenchError> {
        let endpoint = self.endpoint()?;
        let mut paths = vec!["/v2/health/ready".to_owned()];
        paths.extend(models.iter().map(|m| format!("/v2/models/{m}/ready")));
        let deadline = Instant::now() + limit;
        let mut next = 0;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(BenchError::Other(format!(
                    "{} exited with {status} at start-up; log {}:\n{}",
                    self.name,
                    self.log.display(),
                    self.log_tail(12)
                )));
            }
            let uri = endpoint.uri(&paths[next])?;
            if let Ok(Ok(response)) =
                tokio::time::timeout(Duration::from_secs(2), client.get(uri)).await
            {
                let ok = response.status().is_success();
                let _ = response.into_body().collect().await;
                if ok {
                    next += 1;
                    if next == paths.len() {
                        return Ok(());
                    }
                    continue;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(BenchError::Other(format!(
            "{} was not ready within {} s; log {}:\n{}",
            self.name,
            limit.as_secs(),
            self.log.display(),
            self.log_tail(12)
        )))
    }

    /// SIGTERM to the whole session, SIGKILL to what is left after the
    /// grace period.
    pub fn stop(&mut self) {
        let session = self.child.id();
        signal(&session_members(session), "-TERM");
        let deadline = Instant::now() + TERMINATE_GRACE;
        while Instant::now() < deadline {
            let exited = matches!(self.child.try_wait(), Ok(Some(_)));
            if exited && session_members(session).is_empty() {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        signal(&session_members(session), "-KILL");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PeerProcess {
    fn drop(&mut self) {
        self.stop();
    }
}

fn signal(pids: &[u32], which: &str) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(which)
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Live (not zombie) processes whose session id is `session`.
pub fn session_members(session: u32) -> Vec<u32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|&pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|stat| parse_session(&stat))
                .is_some_and(|(state, sid)| sid == session && state != 'Z')
        })
        .collect()
}

/// State and session id from `/proc/<pid>/stat` (the command name, in
/// parentheses, may hold spaces).
fn parse_session(stat: &str) -> Option<(char, u32)> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    // ppid, pgrp, then session.
    let session = fields.nth(2)?.parse().ok()?;
    Some((state, session))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_ids_are_read_past_names_with_spaces() {
        let stat = "4242 (ray::ServeReplica:default V2) S 17 4242 4100 0 -1 4194560 1 2 3";
        assert_eq!(parse_session(stat), Some(('S', 4100)));
        assert_eq!(parse_session("1 (init) Z 0 1 1 0"), Some(('Z', 1)));
        assert_eq!(parse_session("garbage"), None);
    }

    #[test]
    fn this_process_belongs_to_its_session() {
        let me = std::process::id();
        let stat = std::fs::read_to_string(format!("/proc/{me}/stat")).unwrap();
        let (_, session) = parse_session(&stat).unwrap();
        assert!(session_members(session).contains(&me));
    }
}
