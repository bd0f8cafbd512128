//! End-to-end tests of the container backend against the real Docker
//! engine: the gateway runs in this process (`run()` on port 0) with a
//! `[backends.container]` section and builds, starts, scales and removes
//! real worker containers. The worker binary is this package's own
//! `switchyard`. Without a reachable engine the Docker tests skip with a
//! printed reason, unless `REQUIRE_DOCKER=1`, which makes them fail.
//!
//! The tests share one engine and two cores, so they run one at a time
//! (a shared lock); each uses its own scope label and ends by asserting
//! that no container of this run is left.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::print_stderr
)]

mod common;

use common::{Reply, get, send, workspace};

use futures_util::StreamExt;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard_backend_container::bollard::Docker;
use switchyard_backend_container::bollard::query_parameters::RemoveImageOptions;
use switchyard_backend_container::engine;
use switchyard_protocol::{
    BINARY_HEADER_LENGTH, InferRequest, Tensor, TensorData, decode_response, encode_request,
};
use switchyard_scheduler::{Config, Gateway};
use tokio::sync::oneshot;

/// Tests take turns on the engine.
static ENGINE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Image repository of the small test image (digits + fashion_cnn).
const TEST_IMAGE: &str = "switchyard-worker-test";

/// A scope label unique to this test in this run.
fn scope(test: &str) -> String {
    format!("test-{}-{test}", std::process::id())
}

/// The engine, or `None` (skip) when it is unreachable and not required.
async fn docker_or_skip(test: &str) -> Option<Docker> {
    let result = match Docker::connect_with_unix("/var/run/docker.sock", 120, &engine::API_VERSION)
    {
        Ok(docker) => docker.ping().await.map(|_| docker),
        Err(e) => Err(e),
    };
    match result {
        Ok(docker) => Some(docker),
        Err(error) if std::env::var("REQUIRE_DOCKER").as_deref() == Ok("1") => {
            panic!("{test}: REQUIRE_DOCKER=1 but the Docker engine is unreachable: {error}")
        }
        Err(error) => {
            eprintln!(
                "skipping {test}: the Docker engine is unreachable ({error}); set REQUIRE_DOCKER=1 to fail instead"
            );
            None
        }
    }
}

/// Polls `check` until it returns `Some`, at most `timeout`.
async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn container_config(scope: &str, image: &str, models: &str, extra: &str) -> String {
    format!(
        r#"
[placement]
order = ["container"]

[backends.container]
models = {models}
image = "{image}"
worker_binary = "{binary}"
scope = "{scope}"
start_timeout_ms = 60000
{extra}
"#,
        binary = env!("CARGO_BIN_EXE_switchyard"),
    )
}

/// A gateway running in this process on an ephemeral port.
struct TestGateway {
    address: SocketAddr,
    gateway: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestGateway {
    async fn start(config_text: &str) -> Self {
        let config = Config::parse(config_text, "(test)", &workspace()).expect("valid config");
        let gateway = Arc::new(Gateway::start(&config).await.expect("gateway starts"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(switchyard_scheduler::run(
            listener,
            Arc::clone(&gateway),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            address,
            gateway,
            stop: Some(stop),
            task,
        }
    }

    fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    async fn wait_ready(&self, timeout: Duration) {
        let url = format!("{}/v2/health/ready", self.base());
        eventually("the gateway to be ready", timeout, || async {
            (get(&url).await.status == 200).then_some(())
        })
        .await;
    }

    /// The container backend's unready reason, once it contains `needle`.
    async fn unready_reason_containing(&self, needle: &str, timeout: Duration) -> String {
        eventually("the unready reason", timeout, || async {
            let stats = self.stats().await;
            stats["backend_state"][0]["unready_reason"]
                .as_str()
                .filter(|r| r.contains(needle))
                .map(str::to_owned)
        })
        .await
    }

    /// The gateway answers as live (200) but not ready (503).
    async fn assert_live_but_unready(&self) {
        let status = |path: &str| {
            let url = format!("{}{path}", self.base());
            async move { get(&url).await.status }
        };
        assert_eq!(status("/v2/health/ready").await, 503);
        assert_eq!(status("/v2/health/live").await, 200);
    }

    async fn stats(&self) -> serde_json::Value {
        get(&format!("{}/v2/switchyard/stats", self.base()))
            .await
            .json()
    }

    /// Signals shutdown, waits for `run` to drain, then shuts the backends
    /// down (as `switchyard serve` does).
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic");
        tokio::time::timeout(Duration::from_secs(60), self.gateway.shutdown())
            .await
            .expect("the backends shut down");
    }
}

fn fp32_request(shape: Vec<u64>) -> InferRequest {
    let len = shape.iter().product::<u64>() as usize;
    InferRequest {
        inputs: vec![Tensor {
            name: "input".into(),
            shape,
            data: TensorData::Fp32((0..len).map(|i| (i % 17) as f32 / 17.0).collect()),
        }],
        binary_data_output: true,
        ..InferRequest::default()
    }
}

async fn infer(base: &str, model: &str, request: &InferRequest) -> Reply {
    let body = encode_request(request, true).expect("encodes");
    let headers: Vec<(&str, String)> = body
        .json_length
        .map(|l| (BINARY_HEADER_LENGTH, l.to_string()))
        .into_iter()
        .collect();
    send(
        "POST",
        &format!("{base}/v2/models/{model}/infer"),
        &headers,
        body.bytes,
    )
    .await
}

/// Ids of the containers (any state) labelled with `scope`.
async fn containers(docker: &Docker, scope: &str) -> Vec<String> {
    engine::list_labelled(
        docker,
        &[
            (engine::LABEL_MANAGED, "true"),
            (engine::LABEL_SCOPE, scope),
        ],
    )
    .await
    .expect("list containers")
    .into_iter()
    .filter_map(|c| c.id)
    .collect()
}

/// Nothing of this test run may remain once a test is done.
/// The scope's container ids once there are `count` (at most 60 s).
async fn containers_once(docker: &Docker, scope: &str, count: usize) -> Vec<String> {
    eventually(
        &format!("{count} containers"),
        Duration::from_secs(60),
        || async move {
            let ids = containers(docker, scope).await;
            (ids.len() == count).then_some(ids)
        },
    )
    .await
}

/// Waits (at most 60 s) until the scope has `count` containers again, none
/// of them `gone`.
async fn replaced(docker: &Docker, scope: &str, count: usize, gone: &str) {
    eventually(
        "a replacement container",
        Duration::from_secs(60),
        || async move {
            let ids = containers(docker, scope).await;
            (ids.len() == count && !ids.iter().any(|id| id == gone)).then_some(())
        },
    )
    .await;
}

async fn assert_nothing_left(docker: &Docker) {
    let prefix = format!("test-{}-", std::process::id());
    let left: Vec<String> = engine::list_labelled(docker, &[(engine::LABEL_MANAGED, "true")])
        .await
        .expect("list containers")
        .into_iter()
        .filter(|c| {
            c.labels
                .as_ref()
                .and_then(|l| l.get(engine::LABEL_SCOPE))
                .is_some_and(|s| s.starts_with(&prefix))
        })
        .filter_map(|c| c.names.and_then(|n| n.into_iter().next()))
        .collect();
    assert!(left.is_empty(), "containers left behind: {left:?}");
}

/// Removes the image `name` (a tag or an id) even if a container uses it.
async fn force_remove_image(
    docker: &Docker,
    name: &str,
) -> Result<(), switchyard_backend_container::bollard::errors::Error> {
    docker
        .remove_image(
            name,
            Some(RemoveImageOptions {
                force: true,
                noprune: false,
            }),
            None,
        )
        .await
        .map(drop)
}

async fn remove_images(docker: &Docker, repository: &str) {
    let images = engine::list_images(docker, &[("reference", repository)])
        .await
        .expect("list images");
    for image in images {
        for tag in image.repo_tags {
            force_remove_image(docker, &tag)
                .await
                .expect("remove image");
        }
    }
}

/// Runs requests from `tasks` concurrent clients until `stop`, at most
/// `limit` each; returns every status seen.
fn load(
    base: String,
    tasks: usize,
    limit: usize,
    stop: Arc<AtomicBool>,
    answered: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<Vec<(u16, String)>>> {
    (0..tasks)
        .map(|_| {
            let base = base.clone();
            let stop = Arc::clone(&stop);
            let answered = Arc::clone(&answered);
            tokio::spawn(async move {
                let request = fp32_request(vec![1, 1, 28, 28]);
                let mut replies = Vec::new();
                for _ in 0..limit {
                    if stop.load(Ordering::Acquire) {
                        break;
                    }
                    let reply = infer(&base, "fashion_cnn", &request).await;
                    replies.push((
                        reply.status,
                        if reply.status == 200 {
                            String::new()
                        } else {
                            reply.text()
                        },
                    ));
                    answered.fetch_add(1, Ordering::AcqRel);
                }
                replies
            })
        })
        .collect()
}

async fn join_load(tasks: Vec<tokio::task::JoinHandle<Vec<(u16, String)>>>) -> Vec<(u16, String)> {
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("load task"));
    }
    all
}

/// Stops the load of `tasks` and asserts that every request it sent was
/// answered 200.
async fn stop_load_all_answered_200(
    stop: &AtomicBool,
    tasks: Vec<tokio::task::JoinHandle<Vec<(u16, String)>>>,
) {
    stop.store(true, Ordering::Release);
    let replies = join_load(tasks).await;
    let failed: Vec<_> = replies.iter().filter(|(s, _)| *s != 200).collect();
    assert!(
        failed.is_empty(),
        "{} of {} failed, e.g. {:?}",
        failed.len(),
        replies.len(),
        failed.first()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn builds_the_image_from_nothing_and_serves_every_model() {
    let _turn = ENGINE.lock().await;
    let Some(docker) = docker_or_skip("builds_the_image_from_nothing_and_serves_every_model").await
    else {
        return;
    };
    let scope = scope("models");
    let image = "switchyard-worker-test-all";
    remove_images(&docker, image).await;
    let gateway = TestGateway::start(&container_config(
        &scope,
        image,
        "\"all\"",
        "min_containers = 1\nmax_containers = 1\nmemory_mb = 2048",
    ))
    .await;
    gateway.wait_ready(Duration::from_secs(150)).await;
    for (model, shape, classes) in [
        ("digits", vec![2, 64], 10u64),
        ("fashion_cnn", vec![3, 1, 28, 28], 10),
        ("xception", vec![1, 3, 299, 299], 1000),
    ] {
        let reply = infer(&gateway.base(), model, &fp32_request(shape.clone())).await;
        assert_eq!(reply.status, 200, "{model}: {}", reply.text());
        assert_eq!(
            reply
                .headers
                .get("switchyard-backend")
                .and_then(|v| v.to_str().ok()),
            Some("container")
        );
        let response = decode_response(
            &reply.body,
            reply
                .headers
                .get(BINARY_HEADER_LENGTH)
                .and_then(|v| v.to_str().ok()),
        )
        .expect("a v2 response");
        let output = response
            .outputs
            .iter()
            .find(|t| t.shape.last() == Some(&classes));
        let output = output.unwrap_or_else(|| {
            panic!(
                "{model}: no output with {classes} classes: {:?}",
                response.outputs
            )
        });
        assert_eq!(output.shape[0], shape[0], "{model}: one row per input row");
    }
    let ids = containers(&docker, &scope).await;
    assert_eq!(ids.len(), 1);
    let inspect = docker.inspect_container(&ids[0], None::<switchyard_backend_container::bollard::query_parameters::InspectContainerOptions>).await.expect("inspect");
    let host = inspect.host_config.expect("host config");
    assert_eq!(host.readonly_rootfs, Some(true));
    assert_eq!(host.cap_drop, Some(vec!["ALL".to_owned()]));
    assert!(
        host.security_opt
            .unwrap_or_default()
            .iter()
            .any(|o| o.starts_with("no-new-privileges"))
    );
    let ports = inspect
        .network_settings
        .and_then(|n| n.ports)
        .expect("ports");
    let binding = ports.get("8000/tcp").cloned().flatten().expect("published")[0].clone();
    assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
    let config = inspect.config.expect("container config");
    assert_eq!(config.user.as_deref(), Some("65534:65534"));
    // The worker announces itself on the bridge as it starts.
    assert!(
        config
            .cmd
            .unwrap_or_default()
            .iter()
            .any(|arg| arg == "--announce")
    );
    gateway.shutdown().await;
    assert!(containers(&docker, &scope).await.is_empty());
    remove_images(&docker, image).await;
    assert_nothing_left(&docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_route_reaches_the_container_and_stats_say_which() {
    let _turn = ENGINE.lock().await;
    let Some(docker) = docker_or_skip("each_route_reaches_the_container_and_stats_say_which").await
    else {
        return;
    };
    for route in ["published", "network", "auto"] {
        let scope = scope(&format!("route-{route}"));
        let gateway = TestGateway::start(&container_config(
            &scope,
            TEST_IMAGE,
            r#"["digits"]"#,
            &format!("min_containers = 1\nmax_containers = 1\nroute = \"{route}\""),
        ))
        .await;
        gateway.wait_ready(Duration::from_secs(120)).await;
        let reply = infer(&gateway.base(), "digits", &fp32_request(vec![1, 64])).await;
        assert_eq!(reply.status, 200, "route {route}: {}", reply.text());
        let stats = gateway.stats().await;
        let container = &stats["backend_details"]["container"]["containers"][0];
        let address: SocketAddr = container["address"]
            .as_str()
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("route {route}: no address in {container}"));
        let reported = container["route"].as_str().unwrap_or_default().to_owned();
        assert_eq!(container["state"], "ready", "route {route}: {container}");

        let ids = containers(&docker, &scope).await;
        assert_eq!(ids.len(), 1, "route {route}");
        let settings = docker
            .inspect_container(
                &ids[0],
                None::<switchyard_backend_container::bollard::query_parameters::InspectContainerOptions>,
            )
            .await
            .expect("inspect")
            .network_settings
            .expect("network settings");
        let published_port = settings
            .ports
            .and_then(|mut p| p.remove("8000/tcp"))
            .flatten()
            .and_then(|b| b.into_iter().find_map(|b| b.host_port))
            .and_then(|p| p.parse::<u16>().ok())
            .expect("a published port");
        let published = SocketAddr::from(([127, 0, 0, 1], published_port));
        let network = settings
            .networks
            .unwrap_or_default()
            .into_values()
            .find_map(|e| e.ip_address?.parse::<std::net::IpAddr>().ok())
            .map(|ip| SocketAddr::new(ip, 8000));
        match (route, reported.as_str()) {
            ("published", "published") => assert_eq!(address, published),
            ("network", "network") => assert_eq!(Some(address), network),
            // The network address answered in the step before, so auto
            // must take it.
            ("auto", "network") => assert_eq!(Some(address), network),
            _ => panic!("route {route} reached the container as {reported} at {address}"),
        }
        gateway.shutdown().await;
        assert!(
            containers(&docker, &scope).await.is_empty(),
            "route {route}"
        );
    }
    assert_nothing_left(&docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scales_up_under_load_and_down_when_idle() {
    let _turn = ENGINE.lock().await;
    let Some(docker) = docker_or_skip("scales_up_under_load_and_down_when_idle").await else {
        return;
    };
    let scope = scope("scale");
    let started = std::time::Instant::now();
    let gateway = TestGateway::start(&container_config(
        &scope,
        TEST_IMAGE,
        r#"["digits", "fashion_cnn"]"#,
        "min_containers = 1\nmax_containers = 3\ntarget_in_flight = 1\nidle_timeout_ms = 400\nscale_interval_ms = 50",
    ))
    .await;
    gateway.wait_ready(Duration::from_secs(120)).await;
    assert_eq!(containers(&docker, &scope).await.len(), 1);
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let tasks = load(
        gateway.base(),
        12,
        20_000,
        Arc::clone(&stop),
        Arc::clone(&answered),
    );
    let docker_ref = &docker;
    let scope_ref = &scope;
    eventually(
        "a scale-up to 2+ containers",
        Duration::from_secs(60),
        || async move { (containers(docker_ref, scope_ref).await.len() >= 2).then_some(()) },
    )
    .await;
    // Requests land on the new containers too.
    eventually(
        "the scaled-up pool to be used",
        Duration::from_secs(30),
        || async {
            let state = &gateway.stats().await["backend_state"][0];
            (state["capacity"].as_u64() >= Some(2 * 64)).then_some(())
        },
    )
    .await;
    stop_load_all_answered_200(&stop, tasks).await;
    eventually(
        "a scale-down to 1 container",
        Duration::from_secs(30),
        || async move { (containers(docker_ref, scope_ref).await.len() == 1).then_some(()) },
    )
    .await;
    let metrics = get(&format!("{}/metrics", gateway.base())).await.text();
    assert!(
        metrics.contains("switchyard_container_cold_start_seconds"),
        "{metrics}"
    );
    assert!(
        metrics.contains("switchyard_container_cost_dollars_total"),
        "{metrics}"
    );
    // The pool's cost: at least the one container that ran from the wait
    // for readiness to now, at most the three it may have had all along.
    let details = gateway.stats().await["backend_details"]["container"].clone();
    let seconds = details["container_seconds"]
        .as_f64()
        .expect("container_seconds");
    let cost = details["cost_dollars"].as_f64().expect("cost_dollars");
    let lived = started.elapsed().as_secs_f64();
    assert!(
        seconds > 1.0 && seconds <= 3.0 * lived,
        "{seconds} container-seconds in {lived} s"
    );
    assert!((cost - seconds * 0.0000125).abs() < 1e-9, "{details}");
    gateway.shutdown().await;
    assert!(containers(&docker, &scope).await.is_empty());
    assert_nothing_left(&docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_container_is_replaced_and_its_requests_still_answered() {
    let _turn = ENGINE.lock().await;
    let Some(docker) =
        docker_or_skip("a_killed_container_is_replaced_and_its_requests_still_answered").await
    else {
        return;
    };
    let scope = scope("kill");
    let gateway = TestGateway::start(&container_config(
        &scope,
        TEST_IMAGE,
        r#"["fashion_cnn"]"#,
        "min_containers = 2\nmax_containers = 2\nscale_interval_ms = 50\nhealth_interval_ms = 200",
    ))
    .await;
    gateway.wait_ready(Duration::from_secs(120)).await;
    let before = containers_once(&docker, &scope, 2).await;
    // Kill one that serves: a container killed while it starts is a start
    // failure, not a death.
    let gateway_ref = &gateway;
    eventually(
        "two ready containers",
        Duration::from_secs(60),
        || async move {
            let details = gateway_ref.stats().await["backend_details"]["container"].clone();
            (details["ready"] == 2).then_some(())
        },
    )
    .await;
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let tasks = load(
        gateway.base(),
        8,
        50_000,
        Arc::clone(&stop),
        Arc::clone(&answered),
    );
    eventually("load to flow", Duration::from_secs(30), || async {
        (answered.load(Ordering::Acquire) >= 200).then_some(())
    })
    .await;
    docker
        .kill_container(
            &before[0],
            None::<switchyard_backend_container::bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .expect("kill");
    let killed_at = answered.load(Ordering::Acquire);
    replaced(&docker, &scope, 2, &before[0]).await;
    eventually(
        "load to keep flowing after the kill",
        Duration::from_secs(30),
        || async { (answered.load(Ordering::Acquire) >= killed_at + 200).then_some(()) },
    )
    .await;
    stop_load_all_answered_200(&stop, tasks).await;
    // `docker kill` exits the worker with 137, as the kernel's memory kill
    // does: the pool tells them apart by asking the engine.
    let details = gateway.stats().await["backend_details"]["container"].clone();
    assert!(details["deaths"].as_u64() >= Some(1), "{details}");
    assert_eq!(details["out_of_memory_kills"], 0, "{details}");
    let base = gateway.base();
    eventually(
        "the death counted with its cause",
        Duration::from_secs(10),
        || {
            let base = base.clone();
            async move {
                let metrics = get(&format!("{base}/metrics")).await.text();
                metrics
                    .lines()
                    .any(|line| {
                        line.starts_with("switchyard_container_deaths_total")
                            && line.contains("cause=\"exited\"")
                    })
                    .then_some(())
            }
        },
    )
    .await;
    gateway.shutdown().await;
    assert!(containers(&docker, &scope).await.is_empty());
    assert_nothing_left(&docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_container_killed_at_its_memory_limit_is_reported_as_that_and_replaced() {
    let _turn = ENGINE.lock().await;
    let Some(docker) =
        docker_or_skip("a_container_killed_at_its_memory_limit_is_reported_as_that_and_replaced")
            .await
    else {
        return;
    };
    let scope = scope("oom");
    // The image of the small-memory test, which also has xception.
    let image = "switchyard-worker-test-small-memory";
    let gateway = TestGateway::start(&container_config(
        &scope,
        image,
        r#"["xception"]"#,
        "min_containers = 1\nmax_containers = 1\nscale_interval_ms = 50\nhealth_interval_ms = 200",
    ))
    .await;
    gateway.wait_ready(Duration::from_secs(150)).await;
    let before = containers_once(&docker, &scope, 1).await;
    // Hold the loaded worker to 64 MiB over what it uses now (an engine
    // refuses a limit below that): a batch of eight xception images needs
    // hundreds of MiB more, so the kernel kills the worker at its limit, as
    // it kills one whose queue of large requests outgrows `memory_mb`.
    let usage = docker
        .stats(
            &before[0],
            Some(
                switchyard_backend_container::bollard::query_parameters::StatsOptions {
                    stream: false,
                    one_shot: true,
                },
            ),
        )
        .next()
        .await
        .expect("a stats answer")
        .expect("container stats")
        .memory_stats
        .and_then(|m| m.usage)
        .expect("memory usage");
    let limit = i64::try_from(usage).expect("usage fits") + (64 << 20);
    docker
        .update_container(
            &before[0],
            switchyard_backend_container::bollard::models::ContainerUpdateBody {
                memory: Some(limit),
                memory_swap: Some(limit),
                ..Default::default()
            },
        )
        .await
        .expect("lower the memory limit");
    // The request that killed it is sent again to the replacement, which
    // has the configured limit.
    let reply = infer(
        &gateway.base(),
        "xception",
        &fp32_request(vec![8, 3, 299, 299]),
    )
    .await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let details = gateway.stats().await["backend_details"]["container"].clone();
    assert!(
        details["deaths"].as_u64() >= Some(1) && details["failovers"].as_u64() >= Some(1),
        "at {limit} bytes: {details}"
    );
    let gateway_ref = &gateway;
    let details = eventually(
        "the death counted as out of memory",
        Duration::from_secs(30),
        || async move {
            let details = gateway_ref.stats().await["backend_details"]["container"].clone();
            (details["out_of_memory_kills"].as_u64() >= Some(1)).then_some(details)
        },
    )
    .await;
    assert!(
        details["out_of_memory_kills"].as_u64() <= details["deaths"].as_u64(),
        "{details}"
    );
    replaced(&docker, &scope, 1, &before[0]).await;
    let metrics = get(&format!("{}/metrics", gateway.base())).await.text();
    assert!(
        metrics.lines().any(|line| {
            line.starts_with("switchyard_container_deaths_total")
                && line.contains("cause=\"out_of_memory\"")
        }),
        "{metrics}"
    );
    gateway.shutdown().await;
    assert!(containers(&docker, &scope).await.is_empty());
    remove_images(&docker, image).await;
    assert_nothing_left(&docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orphans_of_a_crashed_gateway_are_removed_at_start() {
    let _turn = ENGINE.lock().await;
    let Some(docker) = docker_or_skip("orphans_of_a_crashed_gateway_are_removed_at_start").await
    else {
        return;
    };
    let scope = scope("orphans");
    let config_text = container_config(
        &scope,
        TEST_IMAGE,
        r#"["digits"]"#,
        "min_containers = 1\nmax_containers = 1",
    );
    // The first gateway runs on its own runtime, which is then dropped
    // without a shutdown: its containers stay, as after a crash.
    let text = config_text.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .expect("runtime");
        runtime.block_on(async {
            let config = Config::parse(&text, "(test)", &workspace()).expect("valid config");
            let gateway = Gateway::start(&config).await.expect("gateway starts");
            eventually(
                "the first gateway to be ready",
                Duration::from_secs(120),
                || async { gateway.ready().then_some(()) },
            )
            .await;
            std::mem::forget(gateway);
        });
        drop(runtime);
    })
    .join()
    .expect("the first gateway ran");
    let orphans = containers(&docker, &scope).await;
    assert_eq!(orphans.len(), 1, "the crashed gateway left its container");
    let gateway = TestGateway::start(&config_text).await;
    gateway.wait_ready(Duration::from_secs(120)).await;
    let now = containers(&docker, &scope).await;
    assert_eq!(now.len(), 1);
    assert!(!now.contains(&orphans[0]), "the orphan was removed");
    let reply = infer(&gateway.base(), "digits", &fp32_request(vec![1, 64])).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    gateway.shutdown().await;
    assert!(containers(&docker, &scope).await.is_empty());
    assert_nothing_left(&docker).await;
}

/// Images labelled with any of `scopes`, tagged or not.
async fn images_of(docker: &Docker, scopes: &[&str]) -> Vec<(String, Vec<String>)> {
    let managed = format!("{}=true", engine::LABEL_MANAGED);
    engine::list_images(docker, &[("label", &managed)])
        .await
        .expect("list images")
        .into_iter()
        .filter(|image| {
            image
                .labels
                .get(engine::LABEL_SCOPE)
                .is_some_and(|s| scopes.contains(&s.as_str()))
        })
        .map(|image| (image.id, image.repo_tags))
        .collect()
}

/// Force-removes every image labelled with any of `scopes`, and returns
/// what there was.
async fn remove_images_of(docker: &Docker, scopes: &[&str]) -> Vec<(String, Vec<String>)> {
    let images = images_of(docker, scopes).await;
    for (id, _) in &images {
        let _ = force_remove_image(docker, id).await;
    }
    images
}

/// Whether the container backend of `gateway` built its image itself.
async fn built_its_image(gateway: &TestGateway) -> bool {
    let details = gateway.stats().await["backend_details"]["container"].clone();
    details["image_built"]
        .as_bool()
        .unwrap_or_else(|| panic!("image_built in {details}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_gateways_started_together_build_a_missing_image_once() {
    let _turn = ENGINE.lock().await;
    let Some(docker) =
        docker_or_skip("two_gateways_started_together_build_a_missing_image_once").await
    else {
        return;
    };
    let image = "switchyard-worker-test-race";
    remove_images(&docker, image).await;
    let (first, second) = (scope("race-a"), scope("race-b"));
    let config = |scope: &str| {
        container_config(
            scope,
            image,
            r#"["digits"]"#,
            "min_containers = 1\nmax_containers = 1",
        )
    };
    // Both find the image missing; one builds it while the other waits for
    // the build lock, and then finds the image there.
    let (config_a, config_b) = (config(&first), config(&second));
    let (a, b) = tokio::join!(TestGateway::start(&config_a), TestGateway::start(&config_b));
    tokio::join!(
        a.wait_ready(Duration::from_secs(150)),
        b.wait_ready(Duration::from_secs(150))
    );
    for gateway in [&a, &b] {
        let reply = infer(&gateway.base(), "digits", &fp32_request(vec![1, 64])).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
    }
    let built = [built_its_image(&a).await, built_its_image(&b).await];
    a.shutdown().await;
    b.shutdown().await;
    // Whatever the outcome, every image of both scopes goes.
    let images = remove_images_of(&docker, &[&first, &second]).await;
    assert_eq!(
        built.iter().filter(|&&b| b).count(),
        1,
        "exactly one of the two gateways builds (built: {built:?})"
    );
    assert_eq!(images.len(), 1, "one image, no second copy: {images:?}");
    assert!(
        images[0]
            .1
            .iter()
            .any(|tag| tag.starts_with(&format!("{image}:"))),
        "{images:?}"
    );
    assert_nothing_left(&docker).await;
}

/// Where gateways do race (the build lock was not to be had), the build
/// that ends first loses its tag and stays as an untagged copy; the next
/// gateway to start on the image removes it. The copy is made here by
/// committing a container created (never started) from the image, with the
/// image's labels, as a second build of the same content has them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_starting_on_its_image_removes_an_untagged_copy_of_it() {
    use switchyard_backend_container::bollard::models::ContainerCreateBody;
    use switchyard_backend_container::bollard::query_parameters::{
        CommitContainerOptions, CreateContainerOptions, RemoveContainerOptions,
    };

    let _turn = ENGINE.lock().await;
    let Some(docker) =
        docker_or_skip("a_gateway_starting_on_its_image_removes_an_untagged_copy_of_it").await
    else {
        return;
    };
    let image = "switchyard-worker-test-copy";
    remove_images(&docker, image).await;
    let scope = scope("copy");
    let config = container_config(
        &scope,
        image,
        r#"["digits"]"#,
        "min_containers = 1\nmax_containers = 1",
    );
    let first = TestGateway::start(&config).await;
    first.wait_ready(Duration::from_secs(150)).await;
    let reference = first.stats().await["backend_details"]["container"]["image"]
        .as_str()
        .map(str::to_owned)
        .expect("the image in stats");
    first.shutdown().await;
    let labels = docker
        .inspect_image(&reference)
        .await
        .ok()
        .and_then(|i| i.config)
        .and_then(|c| c.labels)
        .unwrap_or_default();
    let name = format!("switchyard-{scope}-copy");
    let created = docker
        .create_container(
            Some(CreateContainerOptions {
                name: Some(name.clone()),
                ..Default::default()
            }),
            ContainerCreateBody {
                image: Some(reference.clone()),
                labels: Some(labels.clone()),
                ..Default::default()
            },
        )
        .await;
    let copy = match &created {
        Ok(_) => docker
            .commit_container(
                CommitContainerOptions {
                    container: Some(name.clone()),
                    ..Default::default()
                },
                switchyard_backend_container::bollard::models::ContainerConfig {
                    labels: Some(labels.clone()),
                    ..Default::default()
                },
            )
            .await
            .map(|r| r.id),
        Err(_) => Ok(String::new()),
    };
    let _ = docker
        .remove_container(
            &name,
            Some(RemoveContainerOptions {
                force: true,
                ..Default::default()
            }),
        )
        .await;
    created.expect("create a container from the image");
    let copy = copy.expect("commit the container");
    let copy_made = docker.inspect_image(&copy).await.is_ok();
    let second = TestGateway::start(&config).await;
    second.wait_ready(Duration::from_secs(150)).await;
    let copy_left = docker.inspect_image(&copy).await.is_ok();
    let built = built_its_image(&second).await;
    second.shutdown().await;
    let images = remove_images_of(&docker, &[&scope]).await;
    assert!(
        labels.contains_key(engine::LABEL_CONTENT),
        "the image carries its content label: {labels:?}"
    );
    assert!(copy_made, "the copy {copy} exists before the second start");
    assert!(!built, "the second gateway finds the image");
    assert!(!copy_left, "the untagged copy {copy} was removed");
    assert_eq!(images.len(), 1, "only the tagged image: {images:?}");
    assert_nothing_left(&docker).await;
}

/// A shutdown that comes while the gateway builds its image abandons the
/// build instead of waiting for it (some seconds here, longer with big
/// models): the image never appears, and nothing is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_stopped_while_it_builds_its_image_abandons_the_build() {
    let _turn = ENGINE.lock().await;
    let Some(docker) =
        docker_or_skip("a_gateway_stopped_while_it_builds_its_image_abandons_the_build").await
    else {
        return;
    };
    let image = "switchyard-worker-test-abandoned";
    remove_images(&docker, image).await;
    let scope = scope("abandoned");
    let gateway = TestGateway::start(&container_config(
        &scope,
        image,
        r#"["digits"]"#,
        "min_containers = 1\nmax_containers = 1",
    ))
    .await;
    // The pool plans the image and starts building it at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    gateway.assert_live_but_unready().await;
    gateway.shutdown().await;
    // Had the shutdown waited for the build, the image would be there now;
    // give the engine a moment in case it finished the build on its own.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let images = remove_images_of(&docker, &[&scope]).await;
    assert!(images.is_empty(), "the build was abandoned: {images:?}");
    assert!(containers(&docker, &scope).await.is_empty());
    assert_nothing_left(&docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_dies_while_loading_is_reported_and_removed() {
    let _turn = ENGINE.lock().await;
    let Some(docker) =
        docker_or_skip("a_worker_that_dies_while_loading_is_reported_and_removed").await
    else {
        return;
    };
    let scope = scope("dies-loading");
    let image = "switchyard-worker-test-small-memory";
    remove_images(&docker, image).await;
    // xception's weights alone are about 90 MB: a 64 MiB container (no
    // swap) cannot load them, so its worker is killed before it listens.
    let gateway = TestGateway::start(&container_config(
        &scope,
        image,
        r#"["xception"]"#,
        "min_containers = 1\nmax_containers = 1\nmemory_mb = 64\nretry_interval_ms = 600000",
    ))
    .await;
    let reason = gateway
        .unready_reason_containing("stopped before it was ready", Duration::from_secs(150))
        .await;
    // The engine's own account of the death, and the worker's last words
    // as plain text.
    assert!(reason.contains("exit code 137, out of memory"), "{reason}");
    assert!(reason.contains("loading ONNX Runtime"), "{reason}");
    assert!(
        !reason.contains('\u{1b}'),
        "terminal colour codes: {reason:?}"
    );
    // The pool removed the container it could not start, and keeps the
    // gateway up and unready rather than failing it.
    assert!(containers(&docker, &scope).await.is_empty());
    gateway.assert_live_but_unready().await;
    gateway.shutdown().await;
    remove_images(&docker, image).await;
    assert_nothing_left(&docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_engine_leaves_the_gateway_up_and_unready() {
    let _turn = ENGINE.lock().await;
    let config = format!(
        "{}endpoint = \"unix:///nonexistent/switchyard-test/docker.sock\"\nretry_interval_ms = 100\n",
        container_config(&scope("unreachable"), TEST_IMAGE, r#"["digits"]"#, "")
    );
    let gateway = TestGateway::start(&config).await;
    let reason = gateway
        .unready_reason_containing("unreachable", Duration::from_secs(30))
        .await;
    assert!(
        reason.contains("/nonexistent/switchyard-test/docker.sock"),
        "{reason}"
    );
    gateway.assert_live_but_unready().await;
    // The readiness probe says which backend and why.
    let ready = get(&format!("{}/v2/health/ready", gateway.base())).await;
    let backend = &ready.json()["backends"][0];
    assert_eq!(backend["name"], "container");
    assert_eq!(backend["ready"], false);
    let why = backend["reason"].as_str().unwrap_or_default();
    assert!(why.contains("the Docker engine is unreachable"), "{why}");
    let reply = infer(&gateway.base(), "digits", &fp32_request(vec![1, 64])).await;
    assert_eq!(reply.status, 503, "{}", reply.text());
    gateway.shutdown().await;
}

/// A TCP front of the Docker engine's socket that can be cut and restored,
/// so a test sees the engine go away and come back (as in an engine
/// restart) without disturbing the real engine other tests share.
///
/// With a TLS configuration it is the engine as `dockerd --tlsverify`
/// serves it: each connection completes a TLS handshake, with a client
/// certificate the configuration trusts, before it reaches the socket.
struct EngineProxy {
    port: u16,
    tls: Option<tokio_rustls::TlsAcceptor>,
    /// Connections that reached the engine's socket (after the handshake,
    /// with TLS).
    admitted: Arc<AtomicU64>,
    accept: Option<tokio::task::JoinHandle<()>>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl EngineProxy {
    async fn start() -> Self {
        Self::start_with(None).await
    }

    async fn start_tls(config: Arc<rustls::ServerConfig>) -> Self {
        Self::start_with(Some(tokio_rustls::TlsAcceptor::from(config))).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let port = listener.local_addr().expect("address").port();
        let mut proxy = Self {
            port,
            tls,
            admitted: Arc::default(),
            accept: None,
            connections: Arc::default(),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let connections = Arc::clone(&self.connections);
        let admitted = Arc::clone(&self.admitted);
        let tls = self.tls.clone();
        self.accept = Some(tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let admitted = Arc::clone(&admitted);
                let tls = tls.clone();
                let task = tokio::spawn(async move {
                    match tls {
                        None => relay(client, &admitted).await,
                        // A failed handshake (an untrusted client, or a
                        // client that does not trust this engine) closes
                        // the connection before the engine sees a byte.
                        Some(tls) => {
                            if let Ok(client) = tls.accept(client).await {
                                relay(client, &admitted).await;
                            }
                        }
                    }
                });
                connections.lock().unwrap().push(task.abort_handle());
            }
        }));
    }

    /// The engine "goes down": open connections break, new ones are refused.
    fn cut(&mut self) {
        if let Some(accept) = self.accept.take() {
            accept.abort();
        }
        for connection in self.connections.lock().unwrap().drain(..) {
            connection.abort();
        }
    }

    /// The engine is back on the same address.
    async fn restore(&mut self) {
        let listener = eventually("the proxy port", Duration::from_secs(10), || async {
            tokio::net::TcpListener::bind(("127.0.0.1", self.port))
                .await
                .ok()
        })
        .await;
        self.serve(listener);
    }
}

/// Connects `client` to the engine's socket and copies both ways until
/// either side closes, counting the connection in `admitted`.
async fn relay(
    mut client: impl tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
    admitted: &AtomicU64,
) {
    let Ok(mut engine) = tokio::net::UnixStream::connect("/var/run/docker.sock").await else {
        return;
    };
    admitted.fetch_add(1, Ordering::AcqRel);
    let _ = tokio::io::copy_bidirectional(&mut client, &mut engine).await;
}

impl Drop for EngineProxy {
    fn drop(&mut self) {
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_engine_going_away_and_back_loses_no_request_and_the_pool_recovers() {
    let _turn = ENGINE.lock().await;
    let Some(docker) =
        docker_or_skip("the_engine_going_away_and_back_loses_no_request_and_the_pool_recovers")
            .await
    else {
        return;
    };
    let mut proxy = EngineProxy::start().await;
    let scope = scope("engine");
    let config = format!(
        "{}endpoint = \"tcp://127.0.0.1:{}\"\nretry_interval_ms = 200\n",
        container_config(
            &scope,
            TEST_IMAGE,
            r#"["fashion_cnn"]"#,
            "min_containers = 1\nmax_containers = 2\nscale_interval_ms = 50\nhealth_interval_ms = 200",
        ),
        proxy.port
    );
    let gateway = TestGateway::start(&config).await;
    gateway.wait_ready(Duration::from_secs(120)).await;
    let stop = Arc::new(AtomicBool::new(false));
    let answered = Arc::new(AtomicU64::new(0));
    let tasks = load(
        gateway.base(),
        4,
        50_000,
        Arc::clone(&stop),
        Arc::clone(&answered),
    );
    eventually("load to flow", Duration::from_secs(30), || async {
        (answered.load(Ordering::Acquire) >= 100).then_some(())
    })
    .await;

    // The engine goes away for three seconds: the running containers keep
    // serving, since requests never go through the engine.
    proxy.cut();
    let cut_at = answered.load(Ordering::Acquire);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = answered.load(Ordering::Acquire) - cut_at;
    assert!(
        during >= 50,
        "only {during} answers while the engine was away"
    );
    proxy.restore().await;

    // Back: the pool manages containers through it again. A container that
    // dies now is noticed and replaced.
    let docker_ref = &docker;
    let scope_ref = &scope;
    let before = eventually("a container", Duration::from_secs(30), || async move {
        let ids = containers(docker_ref, scope_ref).await;
        (!ids.is_empty()).then_some(ids)
    })
    .await;
    docker
        .kill_container(
            &before[0],
            None::<switchyard_backend_container::bollard::query_parameters::KillContainerOptions>,
        )
        .await
        .expect("kill");
    let killed = &before[0];
    eventually(
        "a replacement container started through the restored engine",
        Duration::from_secs(60),
        || async move {
            let ids = containers(docker_ref, scope_ref).await;
            (!ids.is_empty() && !ids.contains(killed)).then_some(())
        },
    )
    .await;
    let now = answered.load(Ordering::Acquire);
    eventually(
        "load to keep flowing after the replacement",
        Duration::from_secs(30),
        || async { (answered.load(Ordering::Acquire) >= now + 100).then_some(()) },
    )
    .await;
    stop_load_all_answered_200(&stop, tasks).await;
    gateway.shutdown().await;
    assert!(containers(&docker, &scope).await.is_empty());
    assert_nothing_left(&docker).await;
}

/// A certificate authority of the kind `dockerd --tlsverify` is set up
/// with: it signs the engine's certificate and the clients' certificates.
struct Authority {
    certificate: rcgen::Certificate,
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl Authority {
    fn new(name: &str) -> Self {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, name);
        params.key_usages = vec![
            rcgen::KeyUsagePurpose::KeyCertSign,
            rcgen::KeyUsagePurpose::DigitalSignature,
        ];
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        Self {
            certificate,
            issuer: rcgen::Issuer::new(params, key),
        }
    }

    /// A certificate for the engine at 127.0.0.1, or for a client.
    fn sign(&self, server: bool) -> (rcgen::Certificate, rcgen::KeyPair) {
        let (names, usage) = if server {
            (
                vec!["127.0.0.1".to_owned(), "localhost".to_owned()],
                rcgen::ExtendedKeyUsagePurpose::ServerAuth,
            )
        } else {
            (Vec::new(), rcgen::ExtendedKeyUsagePurpose::ClientAuth)
        };
        let mut params = rcgen::CertificateParams::new(names).unwrap();
        params.extended_key_usages = vec![usage];
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        (certificate, key)
    }

    /// The engine's side: its certificate signed here, and client
    /// certificates required and checked against this authority.
    fn engine_config(&self) -> Arc<rustls::ServerConfig> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.certificate.der().clone()).unwrap();
        let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
            Arc::new(roots),
            provider.clone(),
        )
        .build()
        .unwrap();
        let (certificate, key) = self.sign(true);
        let key = rustls::pki_types::PrivatePkcs8KeyDer::from(key.serialize_der());
        Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_client_cert_verifier(verifier)
                .with_single_cert(vec![certificate.der().clone()], key.into())
                .unwrap(),
        )
    }
}

/// The gateway's TLS files in `dir`: `trusted` as the engine's authority,
/// and a client certificate signed by `client_signer`. Returns the config
/// lines of `[backends.container.tls]` and the key's path.
fn client_tls_files(
    dir: &std::path::Path,
    trusted: &Authority,
    client_signer: &Authority,
) -> (String, String) {
    let (certificate, key) = client_signer.sign(false);
    let paths = [
        dir.join("ca.pem"),
        dir.join("cert.pem"),
        dir.join("key.pem"),
    ];
    std::fs::write(&paths[0], trusted.certificate.pem()).unwrap();
    std::fs::write(&paths[1], certificate.pem()).unwrap();
    std::fs::write(&paths[2], key.serialize_pem()).unwrap();
    let [ca, cert, key] = paths.map(|p| p.display().to_string());
    (
        format!("\n[backends.container.tls]\nca = \"{ca}\"\ncert = \"{cert}\"\nkey = \"{key}\"\n"),
        key,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_engine_over_tls_with_client_certificates_runs_the_pool() {
    let _turn = ENGINE.lock().await;
    let Some(docker) =
        docker_or_skip("a_remote_engine_over_tls_with_client_certificates_runs_the_pool").await
    else {
        return;
    };
    let authority = Authority::new("switchyard test engine CA");
    let proxy = EngineProxy::start_tls(authority.engine_config()).await;
    let dir = tempfile::tempdir().unwrap();
    let (tls, _) = client_tls_files(dir.path(), &authority, &authority);
    let scope = scope("tls");
    let config = format!(
        "{}endpoint = \"tcp://127.0.0.1:{}\"\n{tls}",
        container_config(&scope, TEST_IMAGE, r#"["digits"]"#, "min_containers = 1"),
        proxy.port
    );
    let gateway = TestGateway::start(&config).await;
    gateway.wait_ready(Duration::from_secs(120)).await;
    let reply = infer(&gateway.base(), "digits", &fp32_request(vec![2, 64])).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    assert_eq!(reply.header("switchyard-backend"), Some("container"));
    // The pool's container was made through the TLS front: the engine saw
    // it only over connections that passed the handshake.
    assert_eq!(containers(&docker, &scope).await.len(), 1);
    let admitted = proxy.admitted.load(Ordering::Acquire);
    assert!(
        admitted >= 3,
        "only {admitted} connections reached the engine"
    );
    gateway.shutdown().await;
    assert!(containers(&docker, &scope).await.is_empty());
    assert_nothing_left(&docker).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_refused_either_way_leaves_the_gateway_unready_with_the_reason() {
    let _turn = ENGINE.lock().await;
    let authority = Authority::new("switchyard test engine CA");
    let stranger = Authority::new("some other CA");
    let proxy = EngineProxy::start_tls(authority.engine_config()).await;
    // First the engine refuses a client certificate it did not sign, then
    // the gateway refuses an engine whose certificate its CA did not sign.
    for (trusted, client_signer, expected) in [
        (&authority, &stranger, "received fatal alert: UnknownCA"),
        (
            &stranger,
            &authority,
            "invalid peer certificate: UnknownIssuer",
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (tls, key_path) = client_tls_files(dir.path(), trusted, client_signer);
        let config = format!(
            "{}endpoint = \"tcp://127.0.0.1:{}\"\nretry_interval_ms = 100\n{tls}",
            container_config(&scope("tls-refused"), TEST_IMAGE, r#"["digits"]"#, ""),
            proxy.port
        );
        let gateway = TestGateway::start(&config).await;
        let reason = gateway
            .unready_reason_containing(expected, Duration::from_secs(30))
            .await;
        assert!(
            reason.contains(&format!(
                "the Docker engine is unreachable: tcp://127.0.0.1:{} (TLS)",
                proxy.port
            )),
            "{reason}"
        );
        assert!(
            !reason.contains(&key_path),
            "the key's path leaked: {reason}"
        );
        gateway.assert_live_but_unready().await;
        let reply = infer(&gateway.base(), "digits", &fp32_request(vec![1, 64])).await;
        assert_eq!(reply.status, 503, "{}", reply.text());
        gateway.shutdown().await;
    }
    assert_eq!(proxy.admitted.load(Ordering::Acquire), 0);
}
