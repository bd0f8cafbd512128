//! `switchyard-bench loadgen`: the load generator against `wrk`, in the
//! same run, on the same targets, at the same connection count.
//!
//! Two targets, one after the other:
//!
//! 1. a **trivial endpoint**: a minimal hyper server in this process (its
//!    own runtime and threads, named `trivial-server`) on 127.0.0.1:0,
//!    answering every request with a fixed 11-byte body: what the client
//!    costs dominates;
//! 2. the **gateway** (`config/local-only.toml`, a child process), `POST`
//!    of the same pre-encoded `digits` batch-1 JSON body by both tools.
//!
//! For each, after a one-second `wrk` warm-up, `rounds` rounds run `wrk`
//! (`-t T -c C --latency`) and `switchyard-loadgen`'s closed loop (the
//! library, on its own `T`-thread runtime named `loadgen-client`, `C`
//! workers over keep-alive connections) for the same duration, in
//! alternating order so drift favours neither. Reported per run: requests
//! per second, p50 and p99 (both tools measure a closed loop from the
//! actual send, so these are service times), errors, and the CPU each
//! client and the server used per request (wrk's from `/proc` of the
//! child, read before it is reaped; ours and the trivial server's from
//! their threads). The ratio loadgen ÷ wrk of requests per second is the
//! efficiency figure the issue asks for.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde::Serialize;
use switchyard_backends::affinity::pin_runtime_workers;
use switchyard_loadgen::{
    Endpoint, HttpClient, Load, PayloadSpec, RunSettings, Target, http_client, run,
};

use crate::error::BenchError;
use crate::gateway_process::{GatewayProcess, LOCAL_ONLY_CONFIG};
use crate::local::{LocalOptions, gateway_binary, progress};
use crate::machine::{
    Machine, ProcessesCpu, ThreadGroupCpu, load_average, other_cores, process_cpu_time,
    thread_cpu_times, utc_now,
};

/// The trivial endpoint's answer.
const TRIVIAL_BODY: &[u8] = b"{\"ok\":true}";
/// Thread names, to read each side's CPU time from `/proc`.
const SERVER_THREADS: &str = "trivial-server";
const CLIENT_THREADS: &str = "loadgen-client";

/// How the benchmark runs. Every run is bounded by its duration (and wrk's
/// own `-d`); the whole benchmark by `rounds × 2 tools × 2 targets`.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub quick: bool,
    pub rounds: usize,
    pub duration_s: u64,
    pub warmup_s: u64,
    pub connections: usize,
    /// Threads of each client (wrk `-t`, the loadgen runtime's workers).
    pub client_threads: usize,
    /// Threads of the trivial server's runtime.
    pub server_threads: usize,
    pub request_timeout_s: u64,
    /// The gateway's model and the body both tools post.
    pub gateway_model: &'static str,
}

impl Plan {
    /// The full run (under two minutes) or the quick one (under 30 s).
    pub fn new(quick: bool) -> Self {
        Self {
            quick,
            rounds: if quick { 1 } else { 2 },
            duration_s: if quick { 3 } else { 8 },
            warmup_s: 1,
            connections: 64,
            client_threads: 1,
            server_threads: 1,
            request_timeout_s: 10,
            gateway_model: "digits",
        }
    }

    /// Seconds of load in all (start-up comes on top).
    pub fn load_seconds(&self) -> u64 {
        2 * (self.warmup_s + self.rounds as u64 * 2 * self.duration_s)
    }
}

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct LoadgenBenchOptions {
    pub quick: bool,
    pub gateway_bin: Option<PathBuf>,
    pub build_gateway: bool,
    pub command: String,
}

/// One measured run of one tool.
#[derive(Debug, Clone, Serialize)]
pub struct ToolRun {
    pub tool: &'static str,
    pub round: usize,
    pub seconds: f64,
    pub requests: u64,
    pub errors: u64,
    pub requests_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    /// CPU of the client per request (wrk process, or our runtime threads).
    pub client_cpu_us_per_request: f64,
    /// CPU of the server per request (trivial server threads, or the
    /// gateway process).
    pub server_cpu_us_per_request: f64,
    pub client_cores: f64,
    pub server_cores: f64,
    /// Cores used by everything else on the machine meanwhile.
    pub other_cores: f64,
}

/// One target: every run and the side-by-side means.
#[derive(Debug, Clone, Serialize)]
pub struct TargetResult {
    pub target: String,
    pub runs: Vec<ToolRun>,
    pub wrk: Mean,
    pub loadgen: Mean,
    /// loadgen ÷ wrk.
    pub ratio_requests_per_s: f64,
    pub ratio_p50: f64,
    pub ratio_p99: f64,
    pub ratio_client_cpu_per_request: f64,
}

/// Means over the rounds of one tool.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Mean {
    pub requests_per_s: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub errors: u64,
    pub client_cpu_us_per_request: f64,
    pub server_cpu_us_per_request: f64,
}

/// The whole run, as written to `loadgen.json`.
#[derive(Debug, Clone, Serialize)]
pub struct LoadgenResults {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub load_average_at_end: String,
    pub wrk_version: String,
    pub gateway_binary: String,
    pub gateway_config: &'static str,
    pub plan: Plan,
    pub targets: Vec<TargetResult>,
}

/// Runs the benchmark.
pub fn run_loadgen_bench(options: &LoadgenBenchOptions) -> Result<LoadgenResults, BenchError> {
    let plan = Plan::new(options.quick);
    let date = utc_now();
    let machine = Machine::describe();
    let wrk_version = ensure_wrk()?;
    progress(&format!(
        "{wrk_version}; about {} s of load, two targets",
        plan.load_seconds()
    ));
    let binary = gateway_binary(&LocalOptions {
        quick: options.quick,
        gateway_bin: options.gateway_bin.clone(),
        build_gateway: options.build_gateway,
        command: options.command.clone(),
    })?;
    let server_runtime = runtime(plan.server_threads, SERVER_THREADS)?;
    let client_runtime = runtime(plan.client_threads, CLIENT_THREADS)?;
    let address = server_runtime.block_on(start_trivial_server())?;
    let trivial = Endpoint::parse(&format!("http://{address}"), false)?;
    progress(&format!(
        "trivial endpoint on {address} ({} server thread)",
        plan.server_threads
    ));
    let client = {
        let _entered = client_runtime.enter();
        http_client(plan.connections)
    };
    let trivial_target = Arc::new(Target::probe(trivial.clone(), "/")?);
    let trivial_result = compare(
        "trivial endpoint (GET /, 11-byte answer)",
        &plan,
        &client_runtime,
        &client,
        &Subject {
            url: format!("{}/", trivial.base_url()),
            script: None,
            target: trivial_target,
            server: Server::InProcess,
        },
    )?;

    progress(&format!("starting the gateway: {}", binary.display()));
    let gateway_result = client_runtime.block_on(async {
        tokio::select! {
            result = gateway_target(&binary, &plan, &client) => result,
            () = switchyard_scheduler::server::shutdown_signal() => Err(BenchError::Other("interrupted; the gateway was stopped".into())),
        }
    })?;
    let (gateway, target, script) = gateway_result;
    let gateway_result = compare(
        &format!(
            "gateway, {} (POST {} batch 1, JSON)",
            LOCAL_ONLY_CONFIG, plan.gateway_model
        ),
        &plan,
        &client_runtime,
        &client,
        &Subject {
            url: target.entries[0].uri.to_string(),
            script: Some(script.path.clone()),
            target,
            server: Server::Child(gateway.pid()),
        },
    );
    drop(gateway);
    Ok(LoadgenResults {
        date,
        command: options.command.clone(),
        machine,
        load_average_at_end: load_average(),
        wrk_version,
        gateway_binary: binary.display().to_string(),
        gateway_config: LOCAL_ONLY_CONFIG,
        plan,
        targets: vec![trivial_result, gateway_result?],
    })
}

fn runtime(threads: usize, name: &str) -> Result<tokio::runtime::Runtime, BenchError> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads.max(1))
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Other(format!("cannot start the {name} runtime: {e}")))
}

/// `wrk`'s version line, installing the Debian package first if it is
/// missing and this runs as root with apt-get; otherwise says how.
fn ensure_wrk() -> Result<String, BenchError> {
    crate::machine::apt_install("wrk", || wrk_version().is_some()).map_err(BenchError::Other)?;
    wrk_version().ok_or_else(|| BenchError::Other("wrk does not print its version".into()))
}

fn wrk_version() -> Option<String> {
    let output = Command::new("wrk").arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    let line = text.lines().find(|l| l.starts_with("wrk"))?;
    Some(
        line.split(" Copyright")
            .next()
            .unwrap_or(line)
            .trim()
            .to_owned(),
    )
}

/// Threads of the trivial server when it runs as its own process: as many
/// async workers as the gateway has on two cores.
const TRIVIAL_PROCESS_THREADS: usize = 2;

/// The trivial endpoint as a process of its own (`switchyard-bench
/// trivial-server`, which `local` starts as a child): prints
/// `serving on http://ADDR` and serves until its stdin reaches its end,
/// which it does when the parent closes it or dies, so that a crashed
/// benchmark cannot leave it running. With `pin_threads` its runtime's
/// workers keep to one CPU each, in turn, as the gateway's do with
/// `server.pin_threads`, so that the floors compare the same placement of
/// threads.
#[allow(clippy::print_stdout)]
pub fn serve_trivial_until_stdin_closes(pin_threads: bool) -> Result<(), BenchError> {
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder
        .worker_threads(TRIVIAL_PROCESS_THREADS)
        .thread_name(SERVER_THREADS)
        .enable_all();
    let pinned = if pin_threads {
        pin_runtime_workers(&mut builder, TRIVIAL_PROCESS_THREADS)
    } else {
        None
    };
    let runtime = builder.build().map_err(|e| {
        BenchError::Other(format!("cannot start the {SERVER_THREADS} runtime: {e}"))
    })?;
    // The address is printed only once the workers have pinned themselves.
    if let Some(pinned) = pinned {
        pinned.wait(Duration::from_secs(1));
    }
    let address = runtime.block_on(start_trivial_server())?;
    println!("{}{address}", crate::gateway_process::BANNER);
    std::io::Write::flush(&mut std::io::stdout())
        .map_err(|e| BenchError::Other(format!("cannot print the address: {e}")))?;
    let mut sink = Vec::new();
    // Blocks until EOF (or an error: either way the parent is gone).
    let _ = std::io::stdin().read_to_end(&mut sink);
    runtime.shutdown_background();
    Ok(())
}

/// Starts the trivial endpoint on the current runtime.
async fn start_trivial_server() -> Result<std::net::SocketAddr, BenchError> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| BenchError::Other(format!("cannot bind the trivial server: {e}")))?;
    let address = listener
        .local_addr()
        .map_err(|e| BenchError::Other(format!("trivial server address: {e}")))?;
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let service = service_fn(|request: http::Request<hyper::body::Incoming>| async {
                    // Read the whole request so the connection stays usable.
                    let _ = request.into_body().collect().await;
                    let mut response =
                        http::Response::new(Full::new(Bytes::from_static(TRIVIAL_BODY)));
                    response.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        http::HeaderValue::from_static("application/json"),
                    );
                    Ok::<_, std::convert::Infallible>(response)
                });
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(address)
}

/// A wrk Lua script in the temporary directory, removed when dropped.
struct Script {
    path: PathBuf,
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Starts the gateway, waits until it is ready, and prepares the body both
/// tools send (and the wrk script that sends it).
async fn gateway_target(
    binary: &Path,
    plan: &Plan,
    client: &HttpClient,
) -> Result<(GatewayProcess, Arc<Target>, Script), BenchError> {
    let mut gateway = GatewayProcess::start(binary)?;
    gateway.wait_ready(client).await?;
    let payload = PayloadSpec {
        batch_size: 1,
        binary: false,
        binary_output: false,
        variants: 1,
        seed: 1,
    };
    let target = Target::prepare(client, gateway.endpoint()?, plan.gateway_model, &payload).await?;
    let body = std::str::from_utf8(&target.entries[0].bodies[0].bytes)
        .map_err(|e| BenchError::Other(format!("the JSON body is not UTF-8: {e}")))?
        .to_owned();
    if body.contains("]==]") {
        return Err(BenchError::Other(
            "the body cannot be quoted for wrk".into(),
        ));
    }
    let path =
        std::env::temp_dir().join(format!("switchyard-bench-wrk-{}.lua", std::process::id()));
    let lua = format!(
        "wrk.method = \"POST\"\nwrk.headers[\"Content-Type\"] = \"application/json\"\nwrk.body = [==[{body}]==]\n"
    );
    std::fs::write(&path, lua).map_err(|source| BenchError::Io {
        context: "cannot write the wrk script",
        path: path.clone(),
        source,
    })?;
    Ok((gateway, Arc::new(target), Script { path }))
}

/// Where the server's CPU time is read.
enum Server {
    /// Threads of this process named [`SERVER_THREADS`].
    InProcess,
    /// A child process.
    Child(u32),
}

impl Server {
    fn cpu(&self) -> f64 {
        match self {
            Server::InProcess => group_cpu(&thread_cpu_times(std::process::id()), SERVER_THREADS),
            Server::Child(pid) => process_cpu_time(*pid).map_or(0.0, |d| d.as_secs_f64()),
        }
    }
}

fn group_cpu(groups: &std::collections::BTreeMap<String, ThreadGroupCpu>, name: &str) -> f64 {
    groups.get(name).map_or(0.0, |g| g.cpu_s)
}

/// What both tools load.
struct Subject {
    /// For wrk.
    url: String,
    script: Option<PathBuf>,
    /// For the load generator.
    target: Arc<Target>,
    server: Server,
}

fn compare(
    name: &str,
    plan: &Plan,
    runtime: &tokio::runtime::Runtime,
    client: &HttpClient,
    subject: &Subject,
) -> Result<TargetResult, BenchError> {
    progress(&format!("{name}: wrk warm-up, {} s", plan.warmup_s));
    run_wrk(plan, subject, plan.warmup_s, 0)?;
    let mut runs = Vec::new();
    for round in 1..=plan.rounds {
        let loadgen_first = round % 2 == 0;
        for step in 0..2 {
            let run = if (step == 0) == loadgen_first {
                progress(&format!(
                    "{name}: switchyard-loadgen closed loop, {} connections, {} thread, {} s (round {round})",
                    plan.connections, plan.client_threads, plan.duration_s
                ));
                run_loadgen(plan, runtime, client, subject, round)?
            } else {
                progress(&format!(
                    "{name}: wrk -t{} -c{} -d{}s (round {round})",
                    plan.client_threads, plan.connections, plan.duration_s
                ));
                run_wrk(plan, subject, plan.duration_s, round)?
            };
            progress(&format!(
                "  {:.0} req/s, p50 {} µs, p99 {} µs, errors {}, client {:.1} µs CPU/req",
                run.requests_per_s,
                run.p50_us,
                run.p99_us,
                run.errors,
                run.client_cpu_us_per_request
            ));
            runs.push(run);
        }
    }
    let wrk = mean(&runs, "wrk");
    let loadgen = mean(&runs, "switchyard-loadgen");
    let ratio = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ok(TargetResult {
        target: name.to_owned(),
        ratio_requests_per_s: ratio(loadgen.requests_per_s, wrk.requests_per_s),
        ratio_p50: ratio(loadgen.p50_us, wrk.p50_us),
        ratio_p99: ratio(loadgen.p99_us, wrk.p99_us),
        ratio_client_cpu_per_request: ratio(
            loadgen.client_cpu_us_per_request,
            wrk.client_cpu_us_per_request,
        ),
        runs,
        wrk,
        loadgen,
    })
}

#[allow(clippy::cast_precision_loss)]
fn mean(runs: &[ToolRun], tool: &str) -> Mean {
    let mine: Vec<&ToolRun> = runs.iter().filter(|r| r.tool == tool).collect();
    let n = mine.len().max(1) as f64;
    let avg = |f: &dyn Fn(&ToolRun) -> f64| mine.iter().map(|r| f(r)).sum::<f64>() / n;
    Mean {
        requests_per_s: avg(&|r| r.requests_per_s),
        p50_us: avg(&|r| r.p50_us as f64),
        p99_us: avg(&|r| r.p99_us as f64),
        errors: mine.iter().map(|r| r.errors).sum(),
        client_cpu_us_per_request: avg(&|r| r.client_cpu_us_per_request),
        server_cpu_us_per_request: avg(&|r| r.server_cpu_us_per_request),
    }
}

/// CPU readings of the server and of every process around a run.
struct Readings {
    at: Instant,
    server_cpu: f64,
    processes: Option<ProcessesCpu>,
}

impl Readings {
    fn take(server: &Server) -> Self {
        Self {
            at: Instant::now(),
            server_cpu: server.cpu(),
            processes: ProcessesCpu::read(),
        }
    }
}

#[allow(clippy::cast_precision_loss)]
fn tool_run(
    tool: &'static str,
    round: usize,
    before: &Readings,
    after: &Readings,
    client_cpu: f64,
    measured: (u64, u64, f64, u64, u64),
) -> ToolRun {
    let (requests, errors, seconds, p50_us, p99_us) = measured;
    let elapsed = after.at.saturating_duration_since(before.at);
    let server_cpu = (after.server_cpu - before.server_cpu).max(0.0);
    let per_request = |cpu: f64| cpu * 1e6 / requests.max(1) as f64;
    let wall = elapsed.as_secs_f64().max(1e-9);
    ToolRun {
        tool,
        round,
        seconds,
        requests,
        errors,
        requests_per_s: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        p50_us,
        p99_us,
        client_cpu_us_per_request: per_request(client_cpu),
        server_cpu_us_per_request: per_request(server_cpu),
        client_cores: client_cpu / wall,
        server_cores: server_cpu / wall,
        other_cores: other_cores(
            (before.processes.as_ref(), after.processes.as_ref()),
            client_cpu + server_cpu,
            elapsed,
        ),
    }
}

fn run_loadgen(
    plan: &Plan,
    runtime: &tokio::runtime::Runtime,
    client: &HttpClient,
    subject: &Subject,
    round: usize,
) -> Result<ToolRun, BenchError> {
    let duration = Duration::from_secs(plan.duration_s);
    let settings = RunSettings {
        load: Load::Closed {
            concurrency: plan.connections,
            duration,
        },
        max_duration: duration,
        max_requests: Some(100_000_000),
        timeout: Duration::from_secs(plan.request_timeout_s),
        keep_samples: false,
    };
    let me = std::process::id();
    let client_before = group_cpu(&thread_cpu_times(me), CLIENT_THREADS);
    let before = Readings::take(&subject.server);
    let recording = runtime.block_on(run(client, &subject.target, &settings))?;
    let after = Readings::take(&subject.server);
    let client_cpu = (group_cpu(&thread_cpu_times(me), CLIENT_THREADS) - client_before).max(0.0);
    let report = &recording.report;
    let requests = report.sent;
    Ok(tool_run(
        "switchyard-loadgen",
        round,
        &before,
        &after,
        client_cpu,
        (
            requests,
            requests - report.counts.success,
            report.elapsed_s,
            report.service_time_us.p50,
            report.service_time_us.p99,
        ),
    ))
}

fn run_wrk(
    plan: &Plan,
    subject: &Subject,
    seconds: u64,
    round: usize,
) -> Result<ToolRun, BenchError> {
    let mut command = Command::new("wrk");
    command.args([
        "-t",
        &plan.client_threads.to_string(),
        "-c",
        &plan.connections.to_string(),
        "-d",
        &format!("{seconds}s"),
        "--timeout",
        &format!("{}s", plan.request_timeout_s),
        "--latency",
    ]);
    if let Some(script) = &subject.script {
        command.arg("-s").arg(script);
    }
    command.arg(&subject.url);
    let before = Readings::take(&subject.server);
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| BenchError::Io {
            context: "cannot start wrk",
            path: PathBuf::from("wrk"),
            source,
        })?;
    let pid = child.id();
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut stdout);
    }
    // wrk has closed stdout: it is exiting. Its CPU time is still in
    // /proc while it is a zombie, until it is reaped by wait().
    let client_cpu = zombie_cpu(pid);
    let after = Readings::take(&subject.server);
    let mut stderr = String::new();
    if let Some(mut err) = child.stderr.take() {
        let _ = err.read_to_string(&mut stderr);
    }
    let status = child.wait().map_err(|source| BenchError::Io {
        context: "cannot wait for wrk",
        path: PathBuf::from("wrk"),
        source,
    })?;
    if !status.success() {
        return Err(BenchError::Other(format!(
            "wrk failed ({status}): {stdout}{stderr}"
        )));
    }
    let parsed = parse_wrk(&stdout)
        .ok_or_else(|| BenchError::Other(format!("cannot read wrk's output:\n{stdout}")))?;
    Ok(tool_run(
        "wrk",
        round,
        &before,
        &after,
        client_cpu,
        (
            parsed.requests,
            parsed.errors,
            parsed.seconds,
            parsed.p50_us,
            parsed.p99_us,
        ),
    ))
}

/// CPU seconds of process `pid` once it has exited (a zombie), waiting up
/// to two seconds for it to get there.
fn zombie_cpu(pid: u32) -> f64 {
    let deadline = Instant::now() + Duration::from_secs(2);
    let mut last = 0.0;
    while Instant::now() < deadline {
        let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().next().map(str::to_owned))
            });
        if let Some(cpu) = process_cpu_time(pid) {
            last = cpu.as_secs_f64();
        }
        if state.as_deref() != Some("R") && state.as_deref() != Some("S") {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    last
}

/// What wrk printed.
#[derive(Debug, Clone, Copy, PartialEq)]
struct WrkOutput {
    requests: u64,
    seconds: f64,
    errors: u64,
    p50_us: u64,
    p99_us: u64,
}

/// Reads `N requests in Xs`, the latency distribution's 50% and 99% lines,
/// `Non-2xx or 3xx responses` and `Socket errors`.
fn parse_wrk(text: &str) -> Option<WrkOutput> {
    let mut requests = None;
    let mut seconds = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut errors = 0u64;
    for line in text.lines().map(str::trim) {
        if let Some((count, rest)) = line.split_once(" requests in ") {
            requests = count.trim().parse().ok();
            seconds = rest.split(',').next().and_then(wrk_seconds);
        } else if let Some(value) = line.strip_prefix("50%") {
            p50 = wrk_micros(value.trim());
        } else if let Some(value) = line.strip_prefix("99%") {
            p99 = wrk_micros(value.trim());
        } else if let Some(value) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += value.trim().parse::<u64>().unwrap_or(0);
        } else if let Some(value) = line.strip_prefix("Socket errors:") {
            errors += value
                .split(',')
                .filter_map(|part| part.split_whitespace().last()?.parse::<u64>().ok())
                .sum::<u64>();
        }
    }
    Some(WrkOutput {
        requests: requests?,
        seconds: seconds?,
        errors,
        p50_us: p50?,
        p99_us: p99?,
    })
}

/// `10.00s`, `2.01m`, `500.00ms` → seconds.
fn wrk_seconds(text: &str) -> Option<f64> {
    wrk_micros(text.trim()).map(|us| us as f64 / 1e6)
}

/// `612.00us`, `1.20ms`, `2.00s`, `1.00m` → µs.
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
fn wrk_micros(text: &str) -> Option<u64> {
    let split = text.find(|c: char| !(c.is_ascii_digit() || c == '.'))?;
    let (number, unit) = text.split_at(split);
    let value: f64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "us" => 1.0,
        "ms" => 1e3,
        "s" => 1e6,
        "m" => 60e6,
        "h" => 3600e6,
        _ => return None,
    };
    Some((value * factor).round() as u64)
}

/// The Markdown of a run.
pub fn markdown(results: &LoadgenResults) -> String {
    use std::fmt::Write;
    let mut out = String::new();
    let m = &results.machine;
    let p = &results.plan;
    let _ = writeln!(out, "- Date: {}", results.date);
    let _ = writeln!(
        out,
        "- Machine: {} CPUs (`nproc`), {}, Linux {}; load average at start {} / at end {}",
        m.nproc, m.cpu_model, m.kernel, m.load_average_at_start, results.load_average_at_end
    );
    let _ = writeln!(out, "- Command: `{}`", results.command);
    let _ = writeln!(
        out,
        "- Clients: `{}` with `-t{} -c{} --latency`; `switchyard-loadgen` library, closed loop, \
         {} workers on a {}-thread runtime (keep-alive HTTP/1.1 connections). Both measure from the \
         actual send (closed loop), {} s per run, {} round(s) in alternating order after a {} s \
         wrk warm-up{}",
        results.wrk_version,
        p.client_threads,
        p.connections,
        p.connections,
        p.client_threads,
        p.duration_s,
        p.rounds,
        p.warmup_s,
        if p.quick { "; **quick run**" } else { "" }
    );
    let _ = writeln!(
        out,
        "- Servers: trivial hyper endpoint in the bench process ({} thread); gateway: {}, {}",
        p.server_threads, results.gateway_binary, results.gateway_config
    );
    let _ = writeln!(
        out,
        "\n| target | tool | req/s | p50 µs | p99 µs | errors | client CPU µs/req | server CPU µs/req |"
    );
    let _ = writeln!(out, "|---|---|---:|---:|---:|---:|---:|---:|");
    for t in &results.targets {
        for (tool, mean) in [("wrk", &t.wrk), ("switchyard-loadgen", &t.loadgen)] {
            let _ = writeln!(
                out,
                "| {} | {tool} | {:.0} | {:.0} | {:.0} | {} | {:.1} | {:.1} |",
                t.target,
                mean.requests_per_s,
                mean.p50_us,
                mean.p99_us,
                mean.errors,
                mean.client_cpu_us_per_request,
                mean.server_cpu_us_per_request
            );
        }
        let _ = writeln!(
            out,
            "| {} | **loadgen ÷ wrk** | **{:.2}** | {:.2} | {:.2} | | {:.2} | |",
            t.target,
            t.ratio_requests_per_s,
            t.ratio_p50,
            t.ratio_p99,
            t.ratio_client_cpu_per_request
        );
    }
    let _ = writeln!(out, "\nEvery run:\n");
    let _ = writeln!(
        out,
        "| target | tool | round | s | requests | req/s | p50 µs | p99 µs | client cores | server cores | other work (cores) |"
    );
    let _ = writeln!(
        out,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for t in &results.targets {
        for r in &t.runs {
            let _ = writeln!(
                out,
                "| {} | {} | {} | {:.2} | {} | {:.0} | {} | {} | {:.2} | {:.2} | {:.2} |",
                t.target,
                r.tool,
                r.round,
                r.seconds,
                r.requests,
                r.requests_per_s,
                r.p50_us,
                r.p99_us,
                r.client_cores,
                r.server_cores,
                r.other_cores
            );
        }
    }
    let _ = writeln!(
        out,
        "\nBoth clients and the server share the machine's cores, so a client that needs less \
         CPU per request leaves more to the server and gets more requests per second: the \
         req/s ratio is the issue's figure, the client CPU per request shows why."
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRK_OUTPUT: &str = "Running 3s test @ http://127.0.0.1:40000/
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   612.25us  101.20us   4.10ms   91.00%
    Req/Sec    98.12k     2.01k  102.00k    70.00%
  Latency Distribution
     50%  600.00us
     75%  650.00us
     90%  700.00us
     99%    1.20ms
  294360 requests in 3.00s, 25.00MB read
  Non-2xx or 3xx responses: 4
  Socket errors: connect 0, read 2, write 0, timeout 1
Requests/sec:  98120.00
Transfer/sec:      8.33MB
";

    #[test]
    fn wrk_output_is_read() {
        let parsed = parse_wrk(WRK_OUTPUT).unwrap();
        assert_eq!(
            parsed,
            WrkOutput {
                requests: 294_360,
                seconds: 3.0,
                errors: 7,
                p50_us: 600,
                p99_us: 1200,
            }
        );
        assert!(parse_wrk("garbage").is_none());
        assert_eq!(wrk_micros("2.00s"), Some(2_000_000));
        assert_eq!(wrk_micros("1.50m"), Some(90_000_000));
        assert_eq!(wrk_micros("3 parsecs"), None);
    }

    #[test]
    fn both_plans_fit_their_time_budgets() {
        // Start-up (the gateway loads its models in a second or two) and
        // the gaps between runs come on top of the load itself.
        assert!(Plan::new(true).load_seconds() <= 20);
        assert!(Plan::new(false).load_seconds() <= 100);
    }
}
