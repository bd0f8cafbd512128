//! End-to-end tests of the Lambda backend: the real gateway (`run()` on
//! port 0) invoking the real function binary through the real `cargo
//! lambda` emulator, each test with its own emulator on a free port. The
//! emulator runs with `--only-lambda-apis` and the tests start function
//! instances themselves (so it never runs cargo, whose build lock `cargo
//! test` holds). Throttling (429), which the emulator cannot produce, and
//! reserved concurrency are tested against a tiny local stand-in.
//!
//! Needs `make setup` (models, ONNX Runtime, `.venv/bin/cargo-lambda`) and
//! the function binary beside the test, which `make test` builds (`cargo
//! build --profile suite --workspace --bins`); or set
//! `SWITCHYARD_LAMBDA_FUNCTION_BIN`.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Reply, fp32_request, send, workspace};

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_backend_lambda::LambdaBackend;
use switchyard_backend_lambda::emulator::{ChildProcess, LocalEmulator, function_binary};
use switchyard_backends::Backend;
use switchyard_protocol::{BINARY_HEADER_LENGTH, InferRequest, Tensor, encode_request};
use switchyard_scheduler::{Config, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::oneshot;

/// The emulator of this repository on a free port.
fn emulator() -> LocalEmulator {
    LocalEmulator::start(&workspace()).unwrap_or_else(|e| panic!("{e}"))
}

/// One function instance polling `emulator`, loading `models`.
fn instance(emulator: &LocalEmulator, models: &str) -> ChildProcess {
    let exe = std::env::current_exe().expect("test path");
    let binary = function_binary(&exe).unwrap_or_else(|e| panic!("{e}"));
    emulator
        .instance(&binary, models, 512)
        .unwrap_or_else(|e| panic!("{e}"))
}

/// A gateway whose only backend is Lambda, kept at hand for its stats.
struct TestGateway {
    address: SocketAddr,
    lambda: Arc<LambdaBackend>,
    gateway: Arc<Gateway>,
    stop: Option<oneshot::Sender<()>>,
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl TestGateway {
    async fn start(endpoint: &str, extra: &str) -> Self {
        let text = format!(
            "[placement]\norder = [\"lambda\"]\n\n[backends.lambda]\nendpoint = \"{endpoint}\"\n{extra}\n"
        );
        let config = Config::parse(&text, "(test)", &workspace()).expect("valid config");
        let lambda = Arc::new(
            LambdaBackend::start(config.lambda.clone().expect("lambda"), &config.repository)
                .await
                .expect("lambda backend starts"),
        );
        let prometheus = switchyard_scheduler::telemetry::prometheus().expect("metrics");
        let backends: Vec<Arc<dyn Backend>> = vec![lambda.clone()];
        let gateway = Arc::new(
            Gateway::with_backends(&config, backends, prometheus).expect("gateway builds"),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(switchyard_scheduler::run(
            listener,
            Arc::clone(&gateway),
            async move {
                let _ = stopped.await;
            },
        ));
        Self {
            address,
            lambda,
            gateway,
            stop: Some(stop),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Sends a v2 request (binary inputs), bounded so a hang fails the test.
    async fn infer(&self, model: &str, request: &InferRequest) -> Reply {
        let body = encode_request(request, true).expect("encodes");
        let mut headers = vec![];
        if let Some(length) = body.json_length {
            headers.push((BINARY_HEADER_LENGTH, length.to_string()));
        }
        send(
            "POST",
            &self.url(&format!("/v2/models/{model}/infer")),
            &headers,
            body.bytes,
        )
        .await
    }
}

fn digits_request() -> InferRequest {
    fp32_request(vec![1, 64], |i| (i % 17) as f32)
}

fn fashion_request(rows: u64) -> InferRequest {
    fp32_request(vec![rows, 1, 28, 28], |i| (i % 255) as f32 / 255.0)
}

fn fp32(tensor: &Tensor) -> &[f32] {
    tensor.data.as_slice::<f32>().expect("FP32 data")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_each_model_through_the_emulator_and_classifies_cold_and_warm() {
    let emulator = emulator();
    let _instance = instance(&emulator, "digits,fashion_cnn");
    let gateway = TestGateway::start(
        &emulator.endpoint(),
        "models = [\"digits\", \"fashion_cnn\"]",
    )
    .await;

    let digits = gateway.infer("digits", &digits_request()).await;
    assert_eq!(
        digits
            .headers
            .get("switchyard-backend")
            .and_then(|v| v.to_str().ok()),
        Some("lambda")
    );
    let outputs = digits.outputs();
    let probabilities = outputs
        .iter()
        .find(|t| t.name == "probabilities")
        .expect("probabilities");
    assert_eq!(probabilities.shape, vec![1, 10]);
    let sum: f32 = fp32(probabilities).iter().sum();
    assert!((sum - 1.0).abs() < 1e-3, "probabilities sum to {sum}");

    let cold = gateway.lambda.stats();
    assert_eq!((cold.invocations, cold.cold_starts), (1, 1), "{cold:?}");

    for rows in [1, 4] {
        let outputs = gateway
            .infer("fashion_cnn", &fashion_request(rows))
            .await
            .outputs();
        assert_eq!(outputs.len(), 1);
        assert_eq!(outputs[0].shape, vec![rows, 10]);
        assert!(fp32(&outputs[0]).iter().all(|v| v.is_finite()));
    }
    let warm = gateway.lambda.stats();
    assert_eq!((warm.invocations, warm.cold_starts), (3, 1), "{warm:?}");
    assert_eq!(warm.warm_instances, 1);
    assert!((warm.recent_cold_start_rate - 1.0 / 3.0).abs() < 1e-9);
    // 512 MB, each invocation billed at least 1 ms: at least the request
    // price plus 0.5 GB × 1 ms, at the default list prices.
    let floor = 3.0 * (0.000_000_2 + 0.5 * 0.001 * 0.000_016_666_7);
    assert!(warm.cost_dollars >= floor, "{warm:?}");
    assert!(warm.billed_ms >= 3);

    let metrics = send("GET", &gateway.url("/metrics"), &[], Vec::new()).await;
    let text = String::from_utf8_lossy(&metrics.body);
    for name in [
        "switchyard_lambda_cold_start_seconds_bucket",
        "switchyard_lambda_invocations_total",
        "switchyard_lambda_cost_dollars_total",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}");
    }
    let snapshot = gateway.lambda.snapshot();
    assert_eq!((snapshot.concurrency, snapshot.capacity), (1, 10));
    assert_eq!(snapshot.headroom, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prewarm_warms_instances_with_real_invocations_once_per_hold() {
    // One function instance: the emulator hands an invocation to whichever
    // instance polls first, so with several the number of cold starts
    // would depend on their timing.
    let emulator = emulator();
    let _instance = instance(&emulator, "digits");
    let gateway = TestGateway::start(&emulator.endpoint(), "models = [\"digits\"]").await;
    let hold = Duration::from_secs(5);

    // One slot asked, none warm: one invocation, the instance's cold start.
    assert_eq!(gateway.lambda.prewarm("digits".into(), 1, hold).await, 1);
    let stats = gateway.lambda.stats();
    assert_eq!(
        (
            stats.prewarms,
            stats.prewarm_invocations,
            stats.prewarm_failures
        ),
        (1, 1, 0),
        "{stats:?}"
    );
    assert_eq!((stats.invocations, stats.cold_starts), (1, 1), "{stats:?}");
    assert_eq!(stats.warm_instances, 1, "{stats:?}");
    assert!(stats.cost_dollars > 0.0, "pre-warms are billed: {stats:?}");
    assert_eq!(gateway.lambda.snapshot().concurrency, 1);

    // Already warm: nothing to do. A model it does not serve: nothing.
    // More slots than are warm, but within the hold of the last pre-warm:
    // nothing yet either.
    assert_eq!(gateway.lambda.prewarm("digits".into(), 1, hold).await, 0);
    assert_eq!(gateway.lambda.prewarm("resnet".into(), 1, hold).await, 0);
    assert_eq!(gateway.lambda.prewarm("digits".into(), 3, hold).await, 0);
    assert_eq!(gateway.lambda.stats().prewarm_invocations, 1);

    // A client's request now finds the instance warm.
    let reply = gateway.infer("digits", &digits_request()).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    let stats = gateway.lambda.stats();
    assert_eq!((stats.invocations, stats.cold_starts), (2, 1), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_payload_over_the_sync_limit_is_never_sent_to_lambda() {
    let emulator = emulator();
    // No instance: an invocation would wait for one, so a reply proves
    // the request never reached the emulator.
    let gateway =
        TestGateway::start(&emulator.endpoint(), "models = [\"digits\", \"xception\"]").await;
    let limit = gateway
        .lambda
        .snapshot()
        .max_payload_bytes
        .expect("a limit");
    assert!(
        limit < 6 * 1024 * 1024,
        "base64 and the header must fit in 6 MB: {limit}"
    );
    // Six 3x299x299 FP32 images: 6.4 MB of tensor data.
    let request = fp32_request(vec![6, 3, 299, 299], |_| 0.5);
    assert!(request.payload_bytes() as u64 > 6 * 1024 * 1024);
    let reply = gateway.infer("xception", &request).await;
    assert_ne!(reply.status, 200);
    let error = reply.error();
    assert!(
        error.contains(&format!("exceeds its limit of {limit} bytes")),
        "placement names the limit: {error}"
    );
    assert_eq!(gateway.lambda.stats().invocations, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_function_error_is_a_clear_client_error_and_counted() {
    let emulator = emulator();
    // The function is deployed without fashion_cnn; the gateway thinks it
    // has it, so the function fails the invocation.
    let _instance = instance(&emulator, "digits");
    let gateway = TestGateway::start(
        &emulator.endpoint(),
        "models = [\"digits\", \"fashion_cnn\"]",
    )
    .await;
    let reply = gateway.infer("fashion_cnn", &fashion_request(1)).await;
    assert_eq!(reply.status, 500);
    let error = reply.error();
    assert!(
        error.contains("Switchyard.ModelNotServed") && error.contains("fashion_cnn"),
        "{error}"
    );
    assert_eq!(gateway.lambda.stats().function_errors, 1);
    let stats = gateway.gateway.stats_report();
    let lambda = stats["backends"]
        .as_array()
        .expect("backends")
        .iter()
        .find(|b| b["backend"] == "lambda")
        .expect("lambda stats");
    assert_eq!(lambda["failures"], 1, "{lambda}");
    // The instance survives its error and serves the next request.
    assert_eq!(gateway.infer("digits", &digits_request()).await.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_emulator_marks_the_backend_down_without_hanging() {
    let mut emulator = emulator();
    let instance = instance(&emulator, "digits");
    let gateway = TestGateway::start(
        &emulator.endpoint(),
        "models = [\"digits\"]\nretry_down_after_ms = 60000",
    )
    .await;
    assert_eq!(gateway.infer("digits", &digits_request()).await.status, 200);
    emulator.stop();
    drop(instance);

    let reply = gateway.infer("digits", &digits_request()).await;
    assert_eq!(
        reply.status,
        503,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(
        reply.error().contains("cannot reach the Lambda Invoke API"),
        "{}",
        reply.error()
    );
    assert!(reply.took < Duration::from_secs(5), "took {:?}", reply.took);
    assert!(!gateway.lambda.ready());
    // Now placement skips it at once.
    let reply = gateway.infer("digits", &digits_request()).await;
    assert_eq!(reply.status, 503);
    assert!(reply.took < Duration::from_secs(1), "took {:?}", reply.took);
    let ready = send("GET", &gateway.url("/v2/health/ready"), &[], Vec::new()).await;
    assert_eq!(ready.status, 503);
}

/// A stand-in for the Lambda service: answers every Invoke call with
/// `status` and `body`, after `hold` resolves (if given).
async fn stand_in(
    status: u16,
    headers: &'static str,
    body: &'static str,
    hold: Option<oneshot::Receiver<()>>,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let hold = Arc::new(tokio::sync::Mutex::new(hold));
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let hold = Arc::clone(&hold);
            tokio::spawn(async move {
                // Read the head and the declared body, then answer.
                let mut received = Vec::new();
                let mut buffer = [0u8; 65536];
                loop {
                    let Ok(n) = socket.read(&mut buffer).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    received.extend_from_slice(&buffer[..n]);
                    let text = String::from_utf8_lossy(&received).to_string();
                    if let Some(end) = text.find("\r\n\r\n") {
                        let length = text[..end]
                            .lines()
                            .find_map(|l| {
                                let (name, value) = l.split_once(':')?;
                                name.eq_ignore_ascii_case("content-length")
                                    .then(|| value.trim().parse::<usize>().ok())?
                            })
                            .unwrap_or(0);
                        if received.len() >= end + 4 + length {
                            break;
                        }
                    }
                }
                if let Some(hold) = hold.lock().await.take() {
                    let _ = hold.await;
                }
                let response = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n{headers}content-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            });
        }
    });
    address
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lambda_throttle_is_an_overload_with_its_reason() {
    let address = stand_in(
        429,
        "x-amzn-errortype: TooManyRequestsException\r\n",
        r#"{"Reason":"ReservedFunctionConcurrentInvocationLimitExceeded","Type":"User","message":"Rate Exceeded."}"#,
        None,
    )
    .await;
    let gateway = TestGateway::start(&format!("http://{address}"), "models = [\"digits\"]").await;
    let reply = gateway.infer("digits", &digits_request()).await;
    assert_eq!(reply.status, 429);
    let error = reply.error();
    assert!(
        error.contains("TooManyRequestsException")
            && error.contains("ReservedFunctionConcurrentInvocationLimitExceeded"),
        "{error}"
    );
    let stats = gateway.lambda.stats();
    assert_eq!((stats.throttles, stats.recent_throttles), (1, 1));
    assert!(
        gateway.lambda.ready(),
        "a throttle does not mark the backend down"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reserved_concurrency_refuses_at_once_and_deadlines_hold() {
    let (release, hold) = oneshot::channel();
    let address = stand_in(200, "", "{}", Some(hold)).await;
    let gateway = Arc::new(
        TestGateway::start(
            &format!("http://{address}"),
            "models = [\"digits\"]\nreserved_concurrency = 1",
        )
        .await,
    );
    let first = tokio::spawn({
        let gateway = Arc::clone(&gateway);
        async move { gateway.infer("digits", &digits_request()).await }
    });
    let deadline = Instant::now() + Duration::from_secs(10);
    while gateway.lambda.snapshot().in_flight < 1 {
        assert!(Instant::now() < deadline, "the first request never started");
        tokio::task::yield_now().await;
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let second = gateway.infer("digits", &digits_request()).await;
    assert_eq!(second.status, 429);
    assert!(
        second.error().contains("reserved concurrency of 1"),
        "{}",
        second.error()
    );
    assert!(second.took < Duration::from_secs(1));
    let _ = release.send(());
    // The stand-in's `{}` is not a function response: a clear failure.
    let first = first.await.expect("joins");
    assert_eq!(first.status, 500);
    assert!(first.error().contains("not usable"), "{}", first.error());

    // A call that never answers ends at the client's deadline.
    let (_never_released, never) = oneshot::channel();
    let silent = stand_in(200, "", "{}", Some(never)).await;
    let gateway = TestGateway::start(&format!("http://{silent}"), "models = [\"digits\"]").await;
    let body = encode_request(&digits_request(), true).expect("encodes");
    let reply = send(
        "POST",
        &gateway.url("/v2/models/digits/infer"),
        &[
            (
                BINARY_HEADER_LENGTH,
                body.json_length.expect("binary").to_string(),
            ),
            ("switchyard-timeout-ms", "300".into()),
        ],
        body.bytes,
    )
    .await;
    assert_eq!(
        reply.status,
        504,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    assert!(reply.took < Duration::from_secs(5), "took {:?}", reply.took);
}
