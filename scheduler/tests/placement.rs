//! The placement engine end to end: failover when a backend refuses or is
//! down, the retry budget, policy hot reload (good and bad files, by request
//! and by file watch, with requests in flight), and Algorithm 1 choosing a
//! tier. The local backend is real; the backends that refuse are test
//! doubles of the `Backend` trait, so refusals happen on cue.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Reply, send, workspace};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard_backends::local::{LocalBackend, LocalConfig};
use switchyard_backends::{
    Backend, BackendError, BackendFuture, BackendKind, BackendSnapshot, InferenceJob,
    InferenceResult, ModelInfo,
};
use switchyard_models::ModelRepository;
use switchyard_protocol::{InferRequest, Tensor, TensorData, encode_request};
use switchyard_scheduler::host_cpu::HostCpu;
use switchyard_scheduler::policy::spec::PolicyFile;
use switchyard_scheduler::{Config, Gateway};
use tokio::sync::oneshot;

/// What a test double does with every request.
#[derive(Debug, Clone, Copy)]
enum Behaviour {
    Refuse,
    Down,
}

/// A backend that serves `digits` on paper and refuses every request.
#[derive(Debug)]
struct Refusing {
    name: String,
    kind: BackendKind,
    behaviour: Behaviour,
    models: Vec<Arc<ModelInfo>>,
    calls: AtomicU64,
    /// Whether it says it runs on the gateway's host.
    on_host: bool,
}

impl Backend for Refusing {
    fn name(&self) -> &str {
        &self.name
    }
    fn kind(&self) -> BackendKind {
        self.kind
    }
    fn models(&self) -> Vec<Arc<ModelInfo>> {
        self.models.clone()
    }
    fn ready(&self) -> bool {
        true
    }
    fn snapshot(&self) -> BackendSnapshot {
        BackendSnapshot {
            name: self.name.clone(),
            kind: self.kind,
            ready: true,
            in_flight: 0,
            queued: 0,
            concurrency: 4,
            capacity: 64,
            headroom: 0,
            max_payload_bytes: None,
            unready_reason: None,
            cold_start_ms: None,
            memory_mb: None,
            shares_host_cpu: self.on_host,
        }
    }
    fn infer(
        &self,
        _job: InferenceJob,
    ) -> BackendFuture<'_, Result<InferenceResult, BackendError>> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let backend = self.name.clone();
        let error = match self.behaviour {
            Behaviour::Refuse => BackendError::Overloaded {
                backend,
                reason: "test double is full".into(),
            },
            Behaviour::Down => BackendError::Unavailable {
                backend,
                reason: "test double is down".into(),
            },
        };
        Box::pin(async move { Err(error) })
    }
}

struct Running {
    base: String,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("stops")
            .expect("no panic");
    }
}

/// A gateway over the real local backend (digits, and xception when
/// `slow`) plus the given doubles, with `policies` (policy-file TOML).
async fn start(
    doubles: Vec<(&str, BackendKind, Behaviour)>,
    policies: &str,
    placement_extra: &str,
    slow: bool,
) -> (Running, Vec<Arc<Refusing>>) {
    let models = if slow {
        r#"["digits", "xception"]"#
    } else {
        r#"["digits"]"#
    };
    let text = format!("[placement]\n{placement_extra}\n[backends.local]\nmodels = {models}\n");
    let mut config = Config::parse(&text, "(test)", &workspace()).expect("config");
    if config.placement.policy_file.is_none() {
        config.placement.inline = PolicyFile::parse(policies).expect("policies parse");
    }
    let local = start_local(&config).await;
    let digits = local
        .models()
        .into_iter()
        .filter(|m| m.name == "digits")
        .collect::<Vec<_>>();
    let refusing: Vec<Arc<Refusing>> = doubles
        .into_iter()
        .map(|(name, kind, behaviour)| {
            Arc::new(Refusing {
                name: name.into(),
                kind,
                behaviour,
                models: digits.clone(),
                calls: AtomicU64::new(0),
                on_host: false,
            })
        })
        .collect();
    let mut backends: Vec<Arc<dyn Backend>> = refusing
        .iter()
        .map(|r| Arc::clone(r) as Arc<dyn Backend>)
        .collect();
    backends.push(Arc::new(local));
    (serve(&config, backends).await.0, refusing)
}

/// The real local backend of `config`.
async fn start_local(config: &Config) -> LocalBackend {
    let repository =
        ModelRepository::load(&workspace().join("models/repository")).expect("repository");
    let local_config = LocalConfig {
        name: "local".into(),
        models: config.local.clone().expect("local").models,
        pin_threads: false,
    };
    tokio::task::spawn_blocking(move || LocalBackend::start(&local_config, &repository))
        .await
        .expect("join")
        .expect("local starts")
}

/// Serves a gateway over `backends` on a free port.
async fn serve(config: &Config, backends: Vec<Arc<dyn Backend>>) -> (Running, Arc<Gateway>) {
    let prometheus = switchyard_scheduler::telemetry::prometheus().expect("metrics");
    let gateway = Gateway::with_backends(config, backends, prometheus).expect("gateway");
    serve_gateway(gateway).await
}

/// Serves `gateway` on a free port.
async fn serve_gateway(gateway: Gateway) -> (Running, Arc<Gateway>) {
    let gateway = Arc::new(gateway);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let base = format!("http://{}", listener.local_addr().expect("address"));
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(switchyard_scheduler::run(
        listener,
        Arc::clone(&gateway),
        async move {
            let _ = stopped.await;
        },
    ));
    (
        Running {
            base,
            stop: Some(stop),
            task,
        },
        gateway,
    )
}

async fn post(url: &str, body: Vec<u8>, headers: &[(&str, String)]) -> Reply {
    send("POST", url, headers, body).await
}

/// The placement decision of a reply.
fn placement(reply: &Reply) -> &str {
    reply.header("switchyard-placement").unwrap_or_default()
}

async fn infer_digits(base: &str) -> Reply {
    let request = InferRequest {
        inputs: vec![Tensor {
            name: "input".into(),
            shape: vec![1, 64],
            data: TensorData::Fp32(vec![3.0; 64]),
        }],
        ..InferRequest::default()
    };
    let body = encode_request(&request, false).expect("encodes");
    post(&format!("{base}/v2/models/digits/infer"), body.bytes, &[]).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_sees_the_local_pool_of_the_requested_model_only() {
    let text = "[backends.local]\nmodels = [\"digits\", \"fashion_cnn\"]\n\
                [backends.local.overrides.fashion_cnn]\nworkers = 3\nqueue_capacity = 5\n";
    let config = Config::parse(text, "(test)", &workspace()).expect("config");
    let local = start_local(&config).await;
    let all = local.snapshot();
    let fashion = local.snapshot_for("fashion_cnn");
    let digits = local.snapshot_for("digits");
    // Idle, each pool takes as many requests as its queue has places (its
    // workers take them out as they come): 5 for fashion_cnn, digits' 256.
    assert_eq!(
        (fashion.concurrency, fashion.capacity),
        (3, 5),
        "{fashion:?}"
    );
    assert_eq!(digits.capacity, 256, "{digits:?}");
    assert_eq!(all.capacity, 5 + 256, "{all:?}");
    assert_eq!(
        all.concurrency,
        fashion.concurrency + digits.concurrency,
        "the backend-wide snapshot sums the pools: {all:?} {digits:?}"
    );
    assert!(digits.concurrency < all.concurrency, "{digits:?}");
    assert_eq!((fashion.in_flight, digits.in_flight), (0, 0));
    // A model it does not serve: the backend-wide view.
    assert_eq!(local.snapshot_for("nope").concurrency, all.concurrency);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_or_a_down_backend_becomes_a_placement_elsewhere() {
    let policies = "[default]\npolicy = \"ordered\"\norder = [\"full\", \"down\", \"local\"]\n";
    let (gateway, doubles) = start(
        vec![
            ("full", BackendKind::Container, Behaviour::Refuse),
            ("down", BackendKind::Lambda, Behaviour::Down),
        ],
        policies,
        "",
        false,
    )
    .await;
    for _ in 0..5 {
        let reply = infer_digits(&gateway.base).await;
        assert_eq!(
            reply.status,
            200,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(
            reply.header("switchyard-backend").unwrap_or_default(),
            "local"
        );
        assert!(
            placement(&reply).contains("failover from full (429)"),
            "{}",
            placement(&reply)
        );
        assert!(
            placement(&reply).contains("failover from down (503)"),
            "{}",
            placement(&reply)
        );
    }
    assert_eq!(doubles[0].calls.load(Ordering::Relaxed), 5);
    assert_eq!(doubles[1].calls.load(Ordering::Relaxed), 5);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_retry_budget_bounds_failover() {
    // No floor and 0.5 retries per request: a failover costs 1 token and a
    // request deposits 0.5, so at most every other request fails over.
    let policies = "[default]\npolicy = \"ordered\"\norder = [\"full\", \"local\"]\n";
    let (gateway, _doubles) = start(
        vec![("full", BackendKind::Container, Behaviour::Refuse)],
        policies,
        "retry_budget_ratio = 0.5\nretry_floor_per_second = 0.0",
        false,
    )
    .await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(infer_digits(&gateway.base).await.status);
    }
    let ok = statuses.iter().filter(|&&s| s == 200).count();
    let refused = statuses.iter().filter(|&&s| s == 429).count();
    assert_eq!(ok + refused, 20, "{statuses:?}");
    assert_eq!(ok, 10, "half the requests may fail over: {statuses:?}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn policies_hot_reload_from_the_file_and_a_bad_file_keeps_the_old_ones() {
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("policy.toml");
    std::fs::write(
        &file,
        "[default]\npolicy = \"static\"\nbackend = \"local\"\n",
    )
    .expect("write");
    let extra = format!(
        "policy_file = {:?}\nreload_interval_ms = 20",
        file.display().to_string()
    );
    let (gateway, _doubles) = start(vec![], "", &extra, true).await;
    assert!(placement(&infer_digits(&gateway.base).await).starts_with("static:"));

    // A slow request in flight across the reloads still completes.
    let slow = {
        let base = gateway.base.clone();
        tokio::spawn(async move {
            let request = InferRequest {
                inputs: vec![Tensor {
                    name: "input".into(),
                    shape: vec![2, 3, 299, 299],
                    data: TensorData::Fp32(vec![0.5; 2 * 3 * 299 * 299]),
                }],
                ..InferRequest::default()
            };
            let body = encode_request(&request, true).expect("encodes");
            let length = body.json_length.expect("binary").to_string();
            post(
                &format!("{base}/v2/models/xception/infer"),
                body.bytes,
                &[("inference-header-content-length", length)],
            )
            .await
        })
    };

    // Reload on request.
    std::fs::write(&file, "[default]\npolicy = \"round_robin\"\n").expect("write");
    let reload = post(
        &format!("{}/v2/switchyard/reload", gateway.base),
        Vec::new(),
        &[],
    )
    .await;
    assert_eq!(
        reload.status,
        200,
        "{}",
        String::from_utf8_lossy(&reload.body)
    );
    assert!(placement(&infer_digits(&gateway.base).await).starts_with("round_robin:"));

    // A bad file: the reload is refused with the reason, the old policy stays.
    std::fs::write(&file, "[default]\npolicy = \"fastest\"\n").expect("write");
    let refused = post(
        &format!("{}/v2/switchyard/reload", gateway.base),
        Vec::new(),
        &[],
    )
    .await;
    assert_eq!(refused.status, 422);
    let error: serde_json::Value = serde_json::from_slice(&refused.body).expect("JSON");
    assert!(
        error["error"]
            .as_str()
            .expect("message")
            .contains("unknown variant"),
        "{error}"
    );
    assert!(
        placement(&infer_digits(&gateway.base).await).starts_with("round_robin:"),
        "old policy kept"
    );

    // The file watch picks up a good file without a request.
    std::fs::write(&file, "[default]\npolicy = \"least_loaded\"\n").expect("write");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = infer_digits(&gateway.base).await;
        assert_eq!(reply.status, 200);
        if placement(&reply).starts_with("least_loaded:") {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the watcher never reloaded: {}",
            placement(&reply)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let slow = slow.await.expect("task");
    assert_eq!(slow.status, 200, "no request is dropped during reloads");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn straightline_sends_a_burst_to_the_serverless_tier() {
    // F = 3/s over a 2 s window: the first requests run locally; once the model's rate over the
    // window passes F, Algorithm 1 picks serverless (a double that refuses,
    // so the request fails over back to local and says so).
    let policies = "[default]\npolicy = \"straightline\"\nfrequency_threshold = 3.0\ndata_size_threshold_bytes = 65536\nserverless = \"lambda\"\n";
    let (gateway, doubles) = start(
        vec![("lambda", BackendKind::Lambda, Behaviour::Refuse)],
        policies,
        "rate_window_ms = 2000",
        false,
    )
    .await;
    let first = infer_digits(&gateway.base).await;
    assert!(
        placement(&first).contains("local has capacity -> local"),
        "{}",
        placement(&first)
    );
    let mut last = first;
    for _ in 0..10 {
        last = infer_digits(&gateway.base).await;
    }
    assert_eq!(last.status, 200);
    assert!(
        placement(&last).contains("> F=3")
            && placement(&last).contains("failover from lambda (429)"),
        "{}",
        placement(&last)
    );
    assert!(doubles[0].calls.load(Ordering::Relaxed) >= 1);
    gateway.stop().await;
}

/// A Lambda-like backend that serves `digits` in 20 ms, starts with no warm
/// instance, and records what it is asked to pre-warm.
#[derive(Debug)]
struct Warmable {
    models: Vec<Arc<ModelInfo>>,
    warm: AtomicU64,
    in_flight: AtomicU64,
    prewarms: std::sync::Mutex<Vec<(String, u64, Duration)>>,
}

impl Backend for Warmable {
    fn name(&self) -> &str {
        "lambda"
    }
    fn kind(&self) -> BackendKind {
        BackendKind::Lambda
    }
    fn models(&self) -> Vec<Arc<ModelInfo>> {
        self.models.clone()
    }
    fn ready(&self) -> bool {
        true
    }
    fn snapshot(&self) -> BackendSnapshot {
        let warm = self.warm.load(Ordering::Relaxed);
        BackendSnapshot {
            name: "lambda".into(),
            kind: BackendKind::Lambda,
            ready: true,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            queued: 0,
            concurrency: warm,
            capacity: 64,
            headroom: 64 - warm.min(64),
            max_payload_bytes: None,
            unready_reason: None,
            cold_start_ms: None,
            memory_mb: None,
            shares_host_cpu: false,
        }
    }
    fn infer(
        &self,
        _job: InferenceJob,
    ) -> BackendFuture<'_, Result<InferenceResult, BackendError>> {
        Box::pin(async move {
            self.in_flight.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(20)).await;
            self.in_flight.fetch_sub(1, Ordering::Relaxed);
            Ok(InferenceResult {
                outputs: vec![
                    Tensor {
                        name: "label".into(),
                        shape: vec![1],
                        data: TensorData::Int64(vec![0]),
                    },
                    Tensor {
                        name: "probabilities".into(),
                        shape: vec![1, 10],
                        data: TensorData::Fp32(vec![0.1; 10]),
                    },
                ],
                timing: switchyard_backends::Timing::default(),
            })
        })
    }
    fn prewarm(&self, model: String, slots: u64, hold: Duration) -> BackendFuture<'_, u64> {
        Box::pin(async move {
            let warm = self.warm.load(Ordering::Relaxed);
            self.prewarms
                .lock()
                .expect("lock")
                .push((model, slots, hold));
            self.warm.fetch_max(slots, Ordering::Relaxed);
            slots.saturating_sub(warm)
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rising_rate_makes_adaptive_prewarm_a_backend_whose_cold_start_breaks_the_slo() {
    let mut config = Config::parse(
        "[backends.local]\nmodels = [\"digits\"]\n",
        "(test)",
        &workspace(),
    )
    .expect("config");
    // Lambda's 150 ms cold start breaks a 150 ms SLO, so capacity for the
    // expected rate must be warm before it arrives.
    config.placement.inline =
        PolicyFile::parse("[default]\npolicy = \"adaptive\"\nslo_p99_ms = 150\n").expect("policy");
    let local = start_local(&config).await;
    let digits: Vec<Arc<ModelInfo>> = local.models();
    local.shutdown().await;
    let warmable = Arc::new(Warmable {
        models: digits,
        warm: AtomicU64::new(0),
        in_flight: AtomicU64::new(0),
        prewarms: std::sync::Mutex::new(Vec::new()),
    });
    let (running, gateway) = serve(&config, vec![Arc::clone(&warmable) as Arc<dyn Backend>]).await;

    // Open loop, 5/s rising to 65/s over 3 s: about 105 requests.
    let started = Instant::now();
    let mut tasks = Vec::new();
    let mut at = 0.0_f64;
    while at < 3.0 && tasks.len() < 200 {
        let due = started + Duration::from_secs_f64(at);
        let base = running.base.clone();
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep_until(due.into()).await;
            infer_digits(&base).await.status
        }));
        at += 1.0 / (5.0 + 20.0 * at);
    }
    for task in tasks {
        assert_eq!(task.await.expect("join"), 200);
    }
    let prewarms = warmable.prewarms.lock().expect("lock").clone();
    assert!(!prewarms.is_empty(), "no pre-warm was asked for");
    let (model, slots, hold) = &prewarms[prewarms.len() - 1];
    assert_eq!(model, "digits");
    assert!(*slots >= 2, "{prewarms:?}");
    assert_eq!(*hold, Duration::from_secs(10));
    // Asked at most once per 250 ms.
    assert!(prewarms.len() <= 13, "{prewarms:?}");
    let stats = gateway.stats_report();
    let record = &stats["prewarm"]["lambda"];
    assert!(record["started"].as_u64().unwrap_or(0) >= 1, "{record}");
    assert_eq!(record["last_model"], "digits");
    let metrics = send("GET", &format!("{}/metrics", running.base), &[], Vec::new()).await;
    assert!(String::from_utf8_lossy(&metrics.body).contains("switchyard_prewarm_total"));
    running.stop().await;
}

/// A gateway seeing the host's CPU `busy`, with `adaptive` (SLO 100 s, so
/// the cheapest backend with room wins) over: the real local tier serving
/// xception one request at a time with one queued; a container-kind double
/// on the same host; a Lambda-kind double elsewhere. The doubles refuse.
async fn start_on_host(busy: f64) -> (Running, Arc<Gateway>, Vec<Arc<Refusing>>) {
    let text = "[backends.local]\nmodels = [\"xception\"]\n\
                [backends.local.overrides.xception]\nworkers = 1\nqueue_capacity = 1\n";
    let mut config = Config::parse(text, "(test)", &workspace()).expect("config");
    config.placement.inline =
        PolicyFile::parse("[default]\npolicy = \"adaptive\"\nslo_p99_ms = 100000\n")
            .expect("policies parse");
    let local = start_local(&config).await;
    let doubles = refusing_doubles(
        &[
            ("container", BackendKind::Container, true),
            ("lambda", BackendKind::Lambda, false),
        ],
        &local.models(),
    );
    let mut backends: Vec<Arc<dyn Backend>> = vec![Arc::new(local)];
    backends.extend(doubles.iter().map(|d| Arc::clone(d) as Arc<dyn Backend>));
    let (running, gateway) = serve_on_host(&config, backends, busy).await;
    (running, gateway, doubles)
}

/// Doubles that refuse every request for load, serving `models`: (name,
/// kind, whether it runs on the gateway's host).
fn refusing_doubles(
    doubles: &[(&str, BackendKind, bool)],
    models: &[Arc<ModelInfo>],
) -> Vec<Arc<Refusing>> {
    doubles
        .iter()
        .map(|&(name, kind, on_host)| {
            Arc::new(Refusing {
                name: name.into(),
                kind,
                behaviour: Behaviour::Refuse,
                models: models.to_vec(),
                calls: AtomicU64::new(0),
                on_host,
            })
        })
        .collect()
}

/// Serves a gateway over `backends` that reads the host's CPU as `busy`.
async fn serve_on_host(
    config: &Config,
    backends: Vec<Arc<dyn Backend>>,
    busy: f64,
) -> (Running, Arc<Gateway>) {
    let prometheus = switchyard_scheduler::telemetry::prometheus().expect("metrics");
    let gateway = Gateway::with_backends(config, backends, prometheus)
        .expect("gateway")
        .with_host_cpu(HostCpu::fixed(Some(busy)));
    serve_gateway(gateway).await
}

/// `n` xception requests at once; their replies.
async fn xception_burst(base: &str, n: usize) -> Vec<Reply> {
    let request = InferRequest {
        inputs: vec![Tensor {
            name: "input".into(),
            shape: vec![1, 3, 299, 299],
            data: TensorData::Fp32(vec![0.5; 3 * 299 * 299]),
        }],
        ..InferRequest::default()
    };
    let body = encode_request(&request, true).expect("encodes");
    let length = body.json_length.expect("binary").to_string();
    let url = format!("{base}/v2/models/xception/infer");
    let sends = (0..n).map(|_| {
        let (url, bytes, length) = (url.clone(), body.bytes.clone(), length.clone());
        tokio::spawn(async move {
            post(&url, bytes, &[("inference-header-content-length", length)]).await
        })
    });
    let mut replies = Vec::new();
    for send in sends.collect::<Vec<_>>() {
        replies.push(send.await.expect("no panic"));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_saturated_host_adaptive_does_not_spread_the_local_overflow_to_tiers_on_it() {
    // Host CPU to spare: what the busy local tier cannot take goes to the
    // cheapest backend with room, the container on the same host.
    let (gateway, _, doubles) = start_on_host(0.3).await;
    let replies = xception_burst(&gateway.base, 8).await;
    let container_calls = doubles[0].calls.load(Ordering::Relaxed);
    assert!(
        container_calls >= 1,
        "statuses {:?}",
        replies.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    gateway.stop().await;

    // Saturated: nothing goes to the container on the host. Local serves
    // what it has room for, the remote Lambda is tried for the rest, and
    // the others are refused with 429 as a local-only gateway would.
    let (gateway, served, doubles) = start_on_host(0.97).await;
    let replies = xception_burst(&gateway.base, 8).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert_eq!(doubles[0].calls.load(Ordering::Relaxed), 0, "{statuses:?}");
    assert!(
        doubles[1].calls.load(Ordering::Relaxed) >= 1,
        "{statuses:?}"
    );
    assert!(statuses.contains(&200), "{statuses:?}");
    assert!(
        statuses.iter().all(|s| [200, 429].contains(s)),
        "{statuses:?}"
    );
    let refused = replies
        .iter()
        .find(|r| r.status == 429)
        .expect("the burst is larger than local's room");
    // Refused as full: by the gateway (local full, the container held
    // back), by the local tier, or by the remote Lambda double; never by
    // the container.
    let error = refused.error();
    assert!(
        ["local: full", "local is overloaded", "lambda is overloaded"]
            .iter()
            .any(|m| error.contains(m)),
        "{error}"
    );
    let served_by_local = replies
        .iter()
        .filter(|r| r.status == 200)
        .all(|r| r.header("switchyard-backend") == Some("local"));
    assert!(served_by_local);
    let stats = served.stats_report();
    assert_eq!(stats["host_cpu_busy"], serde_json::json!(0.97), "{stats}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_on_a_saturated_host_fails_over_off_the_host_not_to_its_next_tier() {
    // Every backend is a double that refuses: a local tier and a container
    // on the saturated host, a Lambda elsewhere. The local tier, the host's
    // most efficient, gets the request and refuses it for load; the
    // failover must then leave the host: the container is on the same
    // cores that were too busy, so only the remote Lambda is tried.
    let config = Config::parse(
        "[backends.local]\nmodels = [\"digits\"]\n",
        "(test)",
        &workspace(),
    )
    .expect("config");
    let models = start_local(&config).await.models();
    let mut config = config;
    config.placement.inline =
        PolicyFile::parse("[default]\npolicy = \"adaptive\"\nslo_p99_ms = 100000\n")
            .expect("policies parse");
    let doubles = refusing_doubles(
        &[
            ("local", BackendKind::Local, true),
            ("container", BackendKind::Container, true),
            ("lambda", BackendKind::Lambda, false),
        ],
        &models,
    );
    let backends = doubles
        .iter()
        .map(|d| Arc::clone(d) as Arc<dyn Backend>)
        .collect();
    let (running, _) = serve_on_host(&config, backends, 0.97).await;
    let reply = infer_digits(&running.base).await;
    let calls: Vec<u64> = doubles
        .iter()
        .map(|d| d.calls.load(Ordering::Relaxed))
        .collect();
    assert_eq!(reply.status, 429, "{}", reply.error());
    assert_eq!(calls, [1, 0, 1], "local, container, lambda");
    running.stop().await;
}
