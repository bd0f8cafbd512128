//! `container-bench`: the container backend's benchmark, one command.
//!
//! 1. Cold start: starts the pool 20 times (one container each) and reports
//!    create → ready p50/p99 as the pool measures it.
//! 2. Added latency, side by side in one run against the *same* worker
//!    container: open-loop `fashion_cnn` requests (binary tensors) at 200
//!    and 2,000 requests/s, latency from the intended send time, sent
//!    (a) directly to the worker, (b) through the Switchyard gateway
//!    (`switchyard serve`, container-only) and (c) through nginx as a
//!    keep-alive reverse proxy (if `nginx` is installed). Added latency is
//!    each proxy's percentile minus the direct one.
//!
//! Writes `bench/results/container.md` and `.json`. Run from the repository
//! root after `cargo build --release -p switchyard`:
//!
//! ```text
//! cargo run --release -p switchyard-backend-container --bin container-bench
//! ```

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchyard_backend_container::engine;
use switchyard_backend_container::{ContainerBackend, ContainerFile};
use switchyard_backends::Backend;
use switchyard_models::ModelRepository;
use switchyard_models::toml_config::from_toml;
use switchyard_protocol::{BINARY_HEADER_LENGTH, InferRequest, Tensor, TensorData, encode_request};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

const COLD_STARTS: usize = 20;
const RATES: [u64; 2] = [200, 2_000];

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<(), BoxError> {
    let seconds: u64 = std::env::var("BENCH_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let binary = PathBuf::from(
        std::env::var("SWITCHYARD_BINARY").unwrap_or_else(|_| "target/release/switchyard".into()),
    );
    let repository = ModelRepository::load(Path::new("models/repository"))?;
    let cold = cold_starts(&binary, &repository).await?;
    let latency = added_latency(&binary, seconds).await?;
    write_results(&cold, &latency, seconds)?;
    Ok(())
}

fn section(scope: &str, binary: &Path, extra: &str) -> String {
    format!(
        "models = [\"fashion_cnn\"]\nimage = \"switchyard-worker-bench\"\nscope = \"{scope}\"\n\
         worker_binary = \"{}\"\nmin_containers = 1\nmax_containers = 1\n{extra}",
        binary.display()
    )
}

async fn cold_starts(binary: &Path, repository: &ModelRepository) -> Result<Vec<f64>, BoxError> {
    let mut samples = Vec::new();
    for i in 0..COLD_STARTS {
        let file: ContainerFile = from_toml(&section("bench-cold", binary, ""))?;
        let config = file.validate(repository)?;
        let backend = ContainerBackend::start(config, repository).await?;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !backend.ready() {
            if Instant::now() > deadline {
                backend.shutdown().await;
                return Err(format!("not ready: {:?}", backend.status().unready_reason).into());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let seconds = backend.stats().cold_start_last_seconds;
        eprintln!("cold start {}: {:.1} ms", i + 1, seconds * 1e3);
        samples.push(seconds);
        backend.shutdown().await;
    }
    samples.sort_by(f64::total_cmp);
    Ok(samples)
}

#[derive(Debug, serde::Serialize)]
struct Run {
    target: String,
    rate: u64,
    sent: u64,
    errors: u64,
    p50_us: u64,
    p99_us: u64,
    max_us: u64,
}

fn free_address() -> Result<SocketAddr, BoxError> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?)
}

/// A child process stopped with SIGTERM (so the gateway removes its
/// containers) when dropped.
struct Process(Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.0.id().to_string())
            .status();
        let _ = self.0.wait();
    }
}

async fn added_latency(binary: &Path, seconds: u64) -> Result<Vec<Run>, BoxError> {
    let dir = std::env::temp_dir().join(format!("container-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let gateway_address = free_address()?;
    let config = dir.join("gateway.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nlisten = \"{gateway_address}\"\n[placement]\npolicy = \"ordered\"\norder = [\"container\"]\n\
             [backends.container]\n{}",
            section(
                "bench-latency",
                binary,
                "workers = 1\nintra_op_threads = 1\ncpus = 1.0\n"
            )
        ),
    )?;
    let _gateway = Process(
        Command::new(binary)
            .args(["serve", "--config"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()?,
    );
    let client = client();
    let ready = format!("http://{gateway_address}/v2/health/ready");
    let deadline = Instant::now() + Duration::from_secs(120);
    while get_status(&client, &ready).await != Some(200) {
        if Instant::now() > deadline {
            return Err("the gateway did not become ready".into());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let docker = bollard_docker()?;
    let worker = engine::list_labelled(&docker, &[(engine::LABEL_SCOPE, "bench-latency")])
        .await?
        .into_iter()
        .flat_map(|c| c.ports.unwrap_or_default())
        .find_map(|p| p.public_port)
        .ok_or("no worker container found")?;
    let worker_address = SocketAddr::from(([127, 0, 0, 1], worker));
    let nginx_address = free_address()?;
    let _nginx = start_nginx(&dir, nginx_address, worker_address);
    let mut targets = vec![("direct", worker_address), ("switchyard", gateway_address)];
    if _nginx.is_some() {
        targets.push(("nginx", nginx_address));
    }
    let body = encode_request(&request(), true)?;
    let body = Arc::new((Bytes::from(body.bytes), body.json_length.unwrap_or(0)));
    let mut runs = Vec::new();
    for rate in RATES {
        for (name, address) in &targets {
            // Warm the connections and the caches, then measure.
            run(&client, *address, &body, rate, 1).await?;
            let (histogram, sent, errors) = run(&client, *address, &body, rate, seconds).await?;
            let result = Run {
                target: (*name).into(),
                rate,
                sent,
                errors,
                p50_us: histogram.value_at_quantile(0.5),
                p99_us: histogram.value_at_quantile(0.99),
                max_us: histogram.max(),
            };
            eprintln!("{result:?}");
            runs.push(result);
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(runs)
}

fn bollard_docker() -> Result<switchyard_backend_container::bollard::Docker, BoxError> {
    Ok(
        switchyard_backend_container::bollard::Docker::connect_with_unix(
            "/var/run/docker.sock",
            120,
            &engine::API_VERSION,
        )?,
    )
}

fn start_nginx(dir: &Path, listen: SocketAddr, upstream: SocketAddr) -> Option<Process> {
    let nginx = ["/usr/sbin/nginx", "/usr/local/sbin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let conf = dir.join("nginx.conf");
    let text = format!(
        "worker_processes 1;\npid {pid};\nerror_log {dir}/error.log;\nevents {{ worker_connections 4096; }}\n\
         http {{\n access_log off;\n client_body_temp_path {dir};\n proxy_temp_path {dir};\n\
         upstream worker {{ server {upstream}; keepalive 256; }}\n\
         server {{ listen {listen}; location / {{ proxy_pass http://worker; proxy_http_version 1.1;\n\
         proxy_set_header Connection \"\"; proxy_buffering off; client_max_body_size 64m; }} }}\n}}\n",
        pid = dir.join("nginx.pid").display(),
        dir = dir.display(),
    );
    std::fs::write(&conf, text).ok()?;
    let child = Command::new(nginx)
        .arg("-c")
        .arg(&conf)
        .args(["-g", "daemon off;"])
        .stderr(Stdio::inherit())
        .spawn()
        .ok()?;
    // nginx listens before it forks its worker; give the accept loop a moment.
    std::thread::sleep(Duration::from_millis(300));
    Some(Process(child))
}

fn client() -> Client<HttpConnector, Full<Bytes>> {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(4096)
        .build(connector)
}

async fn get_status(client: &Client<HttpConnector, Full<Bytes>>, url: &str) -> Option<u16> {
    let request = http::Request::get(url).body(Full::new(Bytes::new())).ok()?;
    let response = client.request(request).await.ok()?;
    let status = response.status().as_u16();
    response.into_body().collect().await.ok()?;
    Some(status)
}

fn request() -> InferRequest {
    InferRequest {
        inputs: vec![Tensor {
            name: "input".into(),
            shape: vec![1, 1, 28, 28],
            data: TensorData::Fp32((0..784).map(|i| (i % 255) as f32 / 255.0).collect()),
        }],
        binary_data_output: true,
        ..InferRequest::default()
    }
}

/// Open loop: request `i` is due at `start + i / rate`; its latency is
/// measured from then, so a slow answer cannot hide queueing.
async fn run(
    client: &Client<HttpConnector, Full<Bytes>>,
    address: SocketAddr,
    body: &Arc<(Bytes, usize)>,
    rate: u64,
    seconds: u64,
) -> Result<(Histogram<u64>, u64, u64), BoxError> {
    let total = rate * seconds;
    let url = format!("http://{address}/v2/models/fashion_cnn/infer");
    let start = Instant::now() + Duration::from_millis(10);
    let mut tasks = Vec::with_capacity(total as usize);
    for i in 0..total {
        let due = start + Duration::from_nanos(i * 1_000_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let client = client.clone();
        let url = url.clone();
        let body = Arc::clone(body);
        tasks.push(tokio::spawn(async move {
            let request = http::Request::post(url)
                .header(BINARY_HEADER_LENGTH, body.1)
                .header(http::header::CONTENT_TYPE, "application/octet-stream")
                .body(Full::new(body.0.clone()));
            let ok = match request {
                Ok(request) => match client.request(request).await {
                    Ok(response) => {
                        let ok = response.status() == 200;
                        ok && response.into_body().collect().await.is_ok()
                    }
                    Err(_) => false,
                },
                Err(_) => false,
            };
            (due.elapsed(), ok)
        }));
    }
    let mut histogram = Histogram::<u64>::new(3)?;
    let mut errors = 0;
    for task in tasks {
        match task.await {
            Ok((latency, true)) => {
                let _ = histogram.record(latency.as_micros().max(1) as u64);
            }
            _ => errors += 1,
        }
    }
    Ok((histogram, total, errors))
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn write_results(cold: &[f64], runs: &[Run], seconds: u64) -> Result<(), BoxError> {
    let direct = |rate: u64| runs.iter().find(|r| r.rate == rate && r.target == "direct");
    let mut md = String::from(
        "# Container backend benchmark\n\n\
         Written by `cargo run --release -p switchyard-backend-container --bin container-bench` \
         (from the repository root, after `cargo build --release -p switchyard`). One run, one \
         machine: the ratios matter, the absolute numbers drift.\n\n",
    );
    md.push_str(&format!(
        "## Cold start (create → ready), {} starts\n\n| p50 | p99 | max |\n|---|---|---|\n| {:.0} ms | {:.0} ms | {:.0} ms |\n\n",
        cold.len(),
        quantile(cold, 0.5) * 1e3,
        quantile(cold, 0.99) * 1e3,
        cold.last().copied().unwrap_or_default() * 1e3
    ));
    md.push_str(&format!(
        "## Added latency, fashion_cnn batch 1, open loop, {seconds} s per cell\n\n\
         Same worker container for every row; added = row − direct.\n\n\
         | rate (req/s) | target | p50 | p99 | added p50 | added p99 | errors |\n|---|---|---|---|---|---|---|\n"
    ));
    for run in runs {
        let (added50, added99) = match direct(run.rate) {
            Some(d) if run.target != "direct" => (
                format!("{} µs", run.p50_us as i64 - d.p50_us as i64),
                format!("{} µs", run.p99_us as i64 - d.p99_us as i64),
            ),
            _ => ("—".into(), "—".into()),
        };
        md.push_str(&format!(
            "| {} | {} | {} µs | {} µs | {added50} | {added99} | {}/{} |\n",
            run.rate, run.target, run.p50_us, run.p99_us, run.errors, run.sent
        ));
    }
    if !runs.iter().any(|r| r.target == "nginx") {
        md.push_str(
            "\nnginx was not installed (`apt-get install nginx-light`), so it has no rows.\n",
        );
    }
    std::fs::create_dir_all("bench/results")?;
    std::fs::write("bench/results/container.md", md)?;
    let json = serde_json::json!({
        "cold_start_seconds": {
            "samples": cold,
            "p50": quantile(cold, 0.5),
            "p99": quantile(cold, 0.99),
        },
        "seconds_per_cell": seconds,
        "runs": runs,
    });
    std::fs::write(
        "bench/results/container.json",
        serde_json::to_string_pretty(&json)?,
    )?;
    println!("wrote bench/results/container.md and bench/results/container.json");
    Ok(())
}
