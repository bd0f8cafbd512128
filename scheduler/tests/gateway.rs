//! End-to-end tests of the gateway: the real server (`run()` on port 0) with
//! the real models and ONNX Runtime, driven over HTTP; and the real binary
//! for start-up errors. `make setup` must have generated the models.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{BinaryGateway, Reply, fp32_request, get, send, workspace};

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use switchyard_backends::{
    Backend, BackendError, BackendFuture, BackendKind, BackendSnapshot, InferenceJob,
    InferenceResult, ModelInfo,
};
use switchyard_models::TensorSpecs;
use switchyard_protocol::{
    BINARY_HEADER_LENGTH, DataType, InferRequest, RequestedOutput, Tensor, TensorData, TensorSpec,
    decode_response, encode_request,
};
use switchyard_scheduler::{Config, Gateway};
use tokio::sync::oneshot;

/// A gateway running in this process on an ephemeral port.
struct TestGateway {
    address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestGateway {
    async fn start(config_text: &str) -> Self {
        let config = Config::parse(config_text, "(test)", &workspace()).expect("valid config");
        let gateway = Gateway::start(&config).await.expect("gateway starts");
        Self::serve(Arc::new(gateway)).await
    }

    async fn serve(gateway: Arc<Gateway>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(switchyard_scheduler::run(listener, gateway, async move {
            let _ = stopped.await;
        }));
        Self {
            address,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base(), path)
    }

    fn base(&self) -> String {
        format!("http://{}", self.address)
    }

    /// Signals shutdown and waits for `run` to return.
    async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic");
    }
}

async fn infer(base: &str, model: &str, request: &InferRequest, binary: bool) -> Reply {
    infer_with(base, model, request, binary, &[]).await
}

async fn infer_with(
    base: &str,
    model: &str,
    request: &InferRequest,
    binary: bool,
    extra: &[(&str, String)],
) -> Reply {
    let body = encode_request(request, binary).expect("encodes");
    let mut headers: Vec<(&str, String)> = extra.to_vec();
    if let Some(length) = body.json_length {
        headers.push((BINARY_HEADER_LENGTH, length.to_string()));
    }
    send(
        "POST",
        &format!("{base}/v2/models/{model}/infer"),
        &headers,
        body.bytes,
    )
    .await
}

fn decode(reply: &Reply) -> switchyard_protocol::InferResponse {
    assert_eq!(
        reply.status,
        200,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    decode_response(&reply.body, reply.header(BINARY_HEADER_LENGTH)).expect("a v2 response")
}

const DIGITS_AND_FASHION: &str = r#"
[backends.local]
models = ["digits", "fashion_cnn"]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_health_and_repository_index() {
    let gateway = TestGateway::start(DIGITS_AND_FASHION).await;
    let server = get(&gateway.url("/v2")).await;
    assert_eq!(server.status, 200);
    assert_eq!(server.json()["name"], "switchyard");
    assert!(
        server.json()["extensions"]
            .as_array()
            .expect("list")
            .iter()
            .any(|e| e == "binary_tensor_data")
    );
    assert_eq!(get(&gateway.url("/v2/health/live")).await.status, 200);
    assert_eq!(get(&gateway.url("/v2/health/ready")).await.status, 200);

    let digits = get(&gateway.url("/v2/models/digits")).await.json();
    assert_eq!(digits["platform"], "onnxruntime_onnx");
    assert_eq!(digits["versions"], serde_json::json!(["1"]));
    assert_eq!(
        digits["inputs"],
        serde_json::json!([{"name": "input", "datatype": "FP32", "shape": [-1, 64]}])
    );
    let outputs: BTreeMap<String, serde_json::Value> = digits["outputs"]
        .as_array()
        .expect("outputs")
        .iter()
        .map(|o| (o["name"].as_str().expect("name").to_owned(), o.clone()))
        .collect();
    assert_eq!(outputs["label"]["datatype"], "INT64");
    assert_eq!(
        outputs["probabilities"]["shape"],
        serde_json::json!([-1, 10])
    );

    let fashion = get(&gateway.url("/v2/models/fashion_cnn/versions/1"))
        .await
        .json();
    assert_eq!(
        fashion["inputs"][0]["shape"],
        serde_json::json!([-1, 1, 28, 28])
    );
    assert_eq!(
        get(&gateway.url("/v2/models/fashion_cnn/ready"))
            .await
            .status,
        200
    );
    assert_eq!(
        get(&gateway.url("/v2/models/digits/versions/1/ready"))
            .await
            .status,
        200
    );

    let index = send(
        "POST",
        &gateway.url("/v2/repository/index"),
        &[],
        Vec::new(),
    )
    .await
    .json();
    let names: Vec<&str> = index
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|m| m["name"].as_str())
        .collect();
    assert_eq!(names, ["digits", "fashion_cnn"]);
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn digits_held_out_accuracy_through_the_gateway() {
    #[derive(serde::Deserialize)]
    struct HeldOut {
        inputs: Vec<Vec<f32>>,
        labels: Vec<i64>,
    }
    let path = workspace().join("models/repository/digits/testdata/heldout.json");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("{}: {e}; run `make setup`", path.display()));
    let held_out: HeldOut = serde_json::from_str(&text).expect("held-out samples");
    assert!(
        held_out.inputs.len() >= 400,
        "the held-out quarter of 1,797 digits"
    );

    let gateway = TestGateway::start(DIGITS_AND_FASHION).await;
    let mut correct = 0usize;
    let mut answered = 0usize;
    // Half the samples one per request in JSON, the rest in binary batches
    // of 16, so both encodings and the batch dimension are exercised.
    let (single, batched) = held_out.inputs.split_at(held_out.inputs.len() / 2);
    for (sample, &label) in single.iter().zip(&held_out.labels) {
        let request = fp32_request(vec![1, 64], |i| sample[i]);
        let response = decode(&infer(&gateway.base(), "digits", &request, false).await);
        let predicted = response
            .outputs
            .iter()
            .find(|t| t.name == "label")
            .expect("label");
        correct += usize::from(predicted.data == TensorData::Int64(vec![label]));
        answered += 1;
    }
    let batched_labels = &held_out.labels[single.len()..];
    for (samples, labels) in batched.chunks(16).zip(batched_labels.chunks(16)) {
        let flat: Vec<f32> = samples.iter().flatten().copied().collect();
        let request = fp32_request(vec![samples.len() as u64, 64], |i| flat[i]);
        let response = decode(&infer(&gateway.base(), "digits", &request, true).await);
        let predicted = response
            .outputs
            .iter()
            .find(|t| t.name == "label")
            .expect("label");
        let TensorData::Int64(predicted) = &predicted.data else {
            panic!("label is INT64")
        };
        correct += predicted.iter().zip(labels).filter(|(p, l)| p == l).count();
        answered += labels.len();
    }
    assert_eq!(answered, held_out.labels.len());
    let accuracy = correct as f64 / answered as f64;
    assert!(
        accuracy >= 0.9,
        "held-out accuracy through the gateway is {accuracy:.4}"
    );
    gateway.shutdown().await;
}

/// The `probabilities` output of a digits response.
fn digit_probabilities(reply: &Reply) -> Vec<f32> {
    let response = decode(reply);
    let output = response
        .outputs
        .into_iter()
        .find(|t| t.name == "probabilities")
        .expect("probabilities");
    let TensorData::Fp32(values) = output.data else {
        panic!("probabilities are FP32")
    };
    values
}

/// Requests that arrive while the worker is busy are merged into one run
/// (the response says how many rows ran together), and the run's outputs
/// are split back so that every request gets the answer to its own input.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_share_a_batch_and_each_gets_its_own_answer() {
    let gateway = TestGateway::start(DIGITS_AND_FASHION).await;
    let base = gateway.base();
    let requests: Vec<InferRequest> = (0..48)
        .map(|k| fp32_request(vec![1, 64], move |i| ((i * 7 + k * 13) % 17) as f32))
        .collect();
    let mut alone = Vec::new();
    for request in &requests {
        let reply = infer(&base, "digits", request, true).await;
        assert_eq!(
            reply.header(switchyard_scheduler::http::BATCH_ROWS_HEADER),
            Some("1")
        );
        alone.push(digit_probabilities(&reply));
    }
    let mut largest_batch = 1u64;
    // Whether requests meet in the queue depends on timing; a few rounds
    // make it all but certain, and every round checks the answers.
    for _ in 0..20 {
        let mut tasks = tokio::task::JoinSet::new();
        for (index, request) in requests.iter().cloned().enumerate() {
            let base = base.clone();
            tasks.spawn(async move { (index, infer(&base, "digits", &request, true).await) });
        }
        while let Some(joined) = tasks.join_next().await {
            let (index, reply) = joined.expect("request task");
            let rows: u64 = reply
                .header(switchyard_scheduler::http::BATCH_ROWS_HEADER)
                .and_then(|v| v.parse().ok())
                .expect("batch rows header");
            largest_batch = largest_batch.max(rows);
            let got = digit_probabilities(&reply);
            assert_eq!(got.len(), alone[index].len());
            for (g, a) in got.iter().zip(&alone[index]) {
                assert!(
                    (g - a).abs() < 1e-4,
                    "request {index} ran in a batch of {rows} and got {got:?}, alone {:?}",
                    alone[index]
                );
            }
        }
        if largest_batch > 1 {
            break;
        }
    }
    assert!(
        largest_batch > 1,
        "48 concurrent requests, 20 rounds, and never two in one run"
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_answers_json_and_binary_requests() {
    let gateway = TestGateway::start(
        r#"
[backends.local]
models = "all"
[backends.local.overrides.xception]
intra_op_threads = 2
"#,
    )
    .await;
    for (model, shape, classes) in [
        ("digits", vec![2, 64], 10u64),
        ("fashion_cnn", vec![2, 1, 28, 28], 10),
        ("xception", vec![1, 3, 299, 299], 1000),
    ] {
        let request = fp32_request(shape.clone(), |i| ((i % 17) as f32) / 17.0);
        let json = infer(&gateway.base(), model, &request, false).await;
        assert_eq!(json.header("content-type"), Some("application/json"));
        assert_eq!(json.header("switchyard-backend"), Some("local"));
        for header in [
            "switchyard-queue-time-us",
            "switchyard-inference-time-us",
            "switchyard-placement",
        ] {
            assert!(json.header(header).is_some(), "{model}: {header} missing");
        }
        // Server-Timing carries the same two durations in milliseconds.
        let micros = |header: &str| -> f64 { json.header(header).unwrap().parse().unwrap() };
        let timing = json.header("server-timing").expect("server-timing");
        let durations: Vec<f64> = timing
            .split(", ")
            .zip(["queue;dur=", "infer;dur="])
            .map(|(part, name)| {
                let value = part
                    .strip_prefix(name)
                    .unwrap_or_else(|| panic!("{timing}"));
                assert_eq!(value.split('.').nth(1).map(str::len), Some(3), "{timing}");
                value.parse().unwrap()
            })
            .collect();
        assert_eq!(durations.len(), 2, "{timing}");
        for (ms, header) in durations
            .iter()
            .zip(["switchyard-queue-time-us", "switchyard-inference-time-us"])
        {
            assert!(
                (ms * 1000.0 - micros(header)).abs() <= 1.0,
                "{timing} against {header}"
            );
        }
        let from_json = decode(&json);
        // Binary in, binary out: the same numbers without a JSON round trip.
        let mut binary_request = request.clone();
        binary_request.binary_data_output = true;
        let binary = infer(&gateway.base(), model, &binary_request, true).await;
        assert_eq!(
            binary.header("content-type"),
            Some("application/octet-stream")
        );
        let from_binary = decode(&binary);
        assert_eq!(
            from_json.outputs, from_binary.outputs,
            "{model}: JSON and binary disagree"
        );
        let main_output = from_binary
            .outputs
            .iter()
            .find(|t| t.datatype() == DataType::Fp32)
            .expect("an FP32 output");
        assert_eq!(main_output.shape, vec![shape[0], classes], "{model}");
    }
    // Asking for one output, in binary, returns only that one.
    let mut request = fp32_request(vec![1, 64], |i| (i % 16) as f32);
    request.outputs = vec![RequestedOutput {
        name: "probabilities".into(),
        binary_data: Some(true),
    }];
    let reply = infer(&gateway.base(), "digits", &request, false).await;
    assert!(reply.header(BINARY_HEADER_LENGTH).is_some());
    let response = decode(&reply);
    assert_eq!(response.outputs.len(), 1);
    let TensorData::Fp32(p) = &response.outputs[0].data else {
        panic!("FP32")
    };
    assert!(
        (p.iter().sum::<f32>() - 1.0).abs() < 1e-4,
        "probabilities sum to 1"
    );
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_errors_get_4xx_with_a_json_message() {
    let gateway = TestGateway::start(
        r#"
[server]
max_request_bytes = 4096
[backends.local]
models = ["digits"]
"#,
    )
    .await;
    let infer_url = gateway.url("/v2/models/digits/infer");
    let post = |body: &'static str| send("POST", &infer_url, &[], body.as_bytes().to_vec());

    let cases: Vec<(Reply, u16, &str)> = vec![
        (post("{not json").await, 400, "not valid JSON"),
        (
            post(r#"{"inputs":[{"name":"input","shape":[1,63],"datatype":"FP32","data":[1]}]}"#)
                .await,
            400,
            "63 elements",
        ),
        (
            post(r#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[1,2]}]}"#)
                .await,
            400,
            "expects [-1, 64]",
        ),
        (
            post(r#"{"inputs":[{"name":"input","shape":[1],"datatype":"INT32","data":[1]}]}"#)
                .await,
            400,
            "expects FP32",
        ),
        (
            post(r#"{"inputs":[{"name":"pixels","shape":[1],"datatype":"FP32","data":[1]}]}"#)
                .await,
            400,
            "unknown input",
        ),
        (post(r#"{"inputs":[]}"#).await, 400, "no inputs"),
        (
            send(
                "POST",
                &gateway.url("/v2/models/nope/infer"),
                &[],
                b"{}".to_vec(),
            )
            .await,
            404,
            "unknown model",
        ),
        (
            send(
                "POST",
                &gateway.url("/v2/models/digits/versions/7/infer"),
                &[],
                b"{}".to_vec(),
            )
            .await,
            404,
            "no version",
        ),
        (
            get(&gateway.url("/v2/models/nope")).await,
            404,
            "unknown model",
        ),
        (get(&gateway.url("/v2/nowhere")).await, 404, "no route"),
        (get(&infer_url).await, 405, "not allowed"),
        (
            send("POST", &infer_url, &[], vec![b' '; 5000]).await,
            413,
            "max_request_bytes",
        ),
        (
            send(
                "POST",
                &infer_url,
                &[(BINARY_HEADER_LENGTH, "99".into())],
                b"{}".to_vec(),
            )
            .await,
            400,
            "Inference-Header-Content-Length",
        ),
        (
            send(
                "POST",
                &infer_url,
                &[("switchyard-timeout-ms", "soon".into())],
                b"{}".to_vec(),
            )
            .await,
            400,
            "switchyard-timeout-ms",
        ),
    ];
    for (reply, status, message) in cases {
        assert_eq!(
            reply.status,
            status,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        assert_eq!(reply.header("content-type"), Some("application/json"));
        assert!(
            reply.error().contains(message),
            "{:?} should mention {message:?}",
            reply.error()
        );
    }
    let metadata = get(&gateway.url("/v2/models/digits")).await;
    assert_eq!(
        metadata.status, 200,
        "the gateway still serves after bad input"
    );
    gateway.shutdown().await;
}

/// Xception with one single-threaded worker: a batch of 4 takes hundreds of
/// milliseconds, long enough to fill the queue or miss a deadline.
const SLOW_XCEPTION: &str = r#"
[server]
max_concurrent_requests = 64
[backends.local]
models = ["xception"]
workers = 1
intra_op_threads = 1
queue_capacity = 1
"#;

fn xception_batch(rows: u64) -> InferRequest {
    fp32_request(vec![rows, 3, 299, 299], |i| (i % 255) as f32 / 255.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_queue_is_refused_at_once_with_429_and_deadlines_give_504() {
    let gateway = TestGateway::start(SLOW_XCEPTION).await;
    let request = Arc::new(xception_batch(4));
    let started = Instant::now();
    let replies = futures_join(
        (0..6)
            .map(|_| {
                let base = gateway.base();
                let request = Arc::clone(&request);
                tokio::spawn(async move { infer(&base, "xception", &request, true).await })
            })
            .collect(),
    )
    .await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(statuses.contains(&200), "{statuses:?}");
    let refused: Vec<&Reply> = replies.iter().filter(|r| r.status == 429).collect();
    assert!(
        !refused.is_empty(),
        "one worker and a queue of one cannot take six: {statuses:?}"
    );
    assert!(
        refused[0].error().contains("queue"),
        "{}",
        refused[0].error()
    );
    assert!(started.elapsed() < Duration::from_secs(60));

    let late = infer_with(
        &gateway.base(),
        "xception",
        &request,
        true,
        &[("switchyard-timeout-ms", "1".into())],
    )
    .await;
    assert_eq!(late.status, 504, "{}", String::from_utf8_lossy(&late.body));
    assert!(late.error().contains("deadline"), "{}", late.error());
    assert_eq!(late.header("switchyard-backend"), Some("local"));

    let stats = get(&gateway.url("/v2/switchyard/stats")).await.json();
    let series = &stats["series"].as_array().expect("series")[0];
    assert_eq!(series["model"], "xception");
    assert!(series["outcomes"]["overloaded"].as_u64().expect("counted") >= 1);
    assert!(series["outcomes"]["timeout"].as_u64().expect("counted") >= 1);
    assert!(series["failure_rate"].as_f64().expect("rate") > 0.0);
    let metrics = String::from_utf8_lossy(&get(&gateway.url("/metrics")).await.body).to_string();
    assert!(metrics.contains(r#"outcome="overloaded""#), "{metrics}");
    gateway.shutdown().await;
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<Reply>>) -> Vec<Reply> {
    let mut replies = Vec::with_capacity(handles.len());
    for handle in handles {
        replies.push(handle.await.expect("task"));
    }
    replies
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beyond_max_concurrent_requests_the_gateway_sheds_with_503() {
    let gateway = TestGateway::start(&SLOW_XCEPTION.replace(
        "max_concurrent_requests = 64",
        "max_concurrent_requests = 1",
    ))
    .await;
    // Under a limit of one, a stats poll can hold the only slot just as
    // the slow request arrives, and then the slow request is the one shed:
    // it is sent again until it is in flight.
    let deadline = Instant::now() + Duration::from_secs(20);
    let slow = loop {
        let base = gateway.base();
        let slow =
            tokio::spawn(async move { infer(&base, "xception", &xception_batch(2), true).await });
        if wait_for_in_flight_unless_done(&gateway, 1, Some(&slow)).await {
            break slow;
        }
        let reply = slow.await.expect("task");
        assert_eq!(reply.status, 503, "only shedding ends it this early");
        assert!(
            Instant::now() < deadline,
            "the slow request was always shed"
        );
    };
    let shed = get(&gateway.url("/v2/health/live")).await;
    assert_eq!(shed.status, 503, "{}", String::from_utf8_lossy(&shed.body));
    assert!(
        shed.error().contains("concurrent requests"),
        "{}",
        shed.error()
    );
    assert_eq!(slow.await.expect("task").status, 200);
    assert_eq!(
        get(&gateway.url("/v2/health/live")).await.status,
        200,
        "capacity is back"
    );
    gateway.shutdown().await;
}

/// Waits (bounded) until the backend has `n` requests in flight, as the
/// stats endpoint reports. Under a concurrency limit of one, the stats
/// request itself being shed (503) shows the same thing.
async fn wait_for_in_flight(gateway: &TestGateway, n: u64) {
    wait_for_in_flight_unless_done(gateway, n, None).await;
}

/// [`wait_for_in_flight`], but false as soon as `request`, if given, has
/// ended without being seen in flight.
async fn wait_for_in_flight_unless_done(
    gateway: &TestGateway,
    n: u64,
    request: Option<&tokio::task::JoinHandle<Reply>>,
) -> bool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stats = get(&gateway.url("/v2/switchyard/stats")).await;
        if stats.status == 503 {
            return true; // the limit is taken: the slow request is in flight
        }
        let in_flight = stats.json()["backend_state"][0]["in_flight"]
            .as_u64()
            .unwrap_or(0);
        if in_flight >= n {
            return true;
        }
        if request.is_some_and(tokio::task::JoinHandle::is_finished) {
            return false;
        }
        assert!(Instant::now() < deadline, "request never went in flight");
        tokio::task::yield_now().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_requests_and_refuses_new_connections() {
    let mut gateway = TestGateway::start(SLOW_XCEPTION).await;
    let in_flight = {
        let base = gateway.base();
        tokio::spawn(async move { infer(&base, "xception", &xception_batch(2), true).await })
    };
    wait_for_in_flight(&gateway, 1).await;
    let address = gateway.address;
    let stop = gateway.stop.take().expect("not stopped yet");
    let _ = stop.send(());
    let reply = in_flight.await.expect("task");
    assert_eq!(
        reply.status, 200,
        "the in-flight request completes during the drain"
    );
    tokio::time::timeout(Duration::from_secs(30), &mut gateway.task)
        .await
        .expect("run returns once drained")
        .expect("no panic");
    assert!(
        tokio::net::TcpStream::connect(address).await.is_err(),
        "no longer accepting"
    );
}

/// A backend that serves a model but is not ready, to see the gateway's
/// not-ready paths without depending on timing.
#[derive(Debug)]
struct NotReady(Arc<ModelInfo>);

impl Backend for NotReady {
    fn name(&self) -> &str {
        "standby"
    }
    fn kind(&self) -> BackendKind {
        BackendKind::Container
    }
    fn models(&self) -> Vec<Arc<ModelInfo>> {
        vec![Arc::clone(&self.0)]
    }
    fn ready(&self) -> bool {
        false
    }
    fn snapshot(&self) -> BackendSnapshot {
        BackendSnapshot {
            name: "standby".into(),
            kind: BackendKind::Container,
            ready: false,
            in_flight: 0,
            queued: 0,
            concurrency: 0,
            capacity: 0,
            headroom: 0,
            max_payload_bytes: None,
            unready_reason: Some("not started".into()),
            cold_start_ms: None,
            memory_mb: None,
            shares_host_cpu: false,
        }
    }
    fn infer(
        &self,
        _job: InferenceJob,
    ) -> BackendFuture<'_, Result<InferenceResult, BackendError>> {
        Box::pin(async {
            Err(BackendError::Unavailable {
                backend: "standby".into(),
                reason: "not started".into(),
            })
        })
    }
}

/// A gateway whose one backend is [`NotReady`], on `config`.
async fn standby_gateway(config: &str) -> TestGateway {
    let config = Config::parse(config, "(test)", &workspace()).expect("config");
    let spec = TensorSpec {
        name: "x".into(),
        datatype: DataType::Fp32,
        shape: vec![-1, 2],
    };
    let info = ModelInfo {
        name: "standby_model".into(),
        platform: "onnxruntime_onnx".into(),
        max_batch_size: Some(4),
        versions: BTreeMap::from([(
            1,
            Arc::new(TensorSpecs {
                inputs: vec![spec.clone()],
                outputs: vec![spec],
            }),
        )]),
    };
    let prometheus = switchyard_scheduler::telemetry::prometheus().expect("metrics");
    let backend: Arc<dyn Backend> = Arc::new(NotReady(Arc::new(info)));
    TestGateway::serve(Arc::new(
        Gateway::with_backends(&config, vec![backend], prometheus).expect("gateway"),
    ))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_ready_names_each_backend_and_why_it_is_not_ready() {
    let gateway = TestGateway::start(DIGITS_AND_FASHION).await;
    let ready = get(&gateway.url("/v2/health/ready")).await;
    assert_eq!(ready.status, 200);
    assert_eq!(
        ready.json(),
        serde_json::json!({
            "ready": true,
            "backends": [{ "name": "local", "kind": "local", "ready": true }]
        })
    );
    gateway.shutdown().await;

    let gateway = standby_gateway(DIGITS_AND_FASHION).await;
    let ready = get(&gateway.url("/v2/health/ready")).await;
    assert_eq!(ready.status, 503);
    assert_eq!(
        ready.json(),
        serde_json::json!({
            "ready": false,
            "backends": [{
                "name": "standby", "kind": "container", "ready": false, "reason": "not started"
            }]
        })
    );
    gateway.shutdown().await;

    // With tokens the probe stays open, but the reason is admin information.
    let gateway = standby_gateway(&format!(
        "{DIGITS_AND_FASHION}[server.auth]\ninference_token = \"inference-token-0123456789\"\n\
         admin_token = \"admin-token-9876543210\"\n"
    ))
    .await;
    let url = gateway.url("/v2/health/ready");
    let anonymous = get(&url).await;
    assert_eq!(anonymous.status, 503);
    assert_eq!(
        anonymous.json()["backends"],
        serde_json::json!([{ "name": "standby", "kind": "container", "ready": false }])
    );
    let inference = [(
        "authorization",
        "Bearer inference-token-0123456789".to_owned(),
    )];
    let reply = send("GET", &url, &inference, Vec::new()).await;
    assert_eq!(reply.status, 503);
    assert!(reply.json()["backends"][0].get("reason").is_none());
    let admin = [("authorization", "Bearer admin-token-9876543210".to_owned())];
    let reply = send("GET", &url, &admin, Vec::new()).await;
    assert_eq!(reply.status, 503);
    assert_eq!(reply.json()["backends"][0]["reason"], "not started");
    gateway.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_without_a_ready_backend_is_503_not_ready() {
    let gateway = standby_gateway(DIGITS_AND_FASHION).await;
    assert_eq!(get(&gateway.url("/v2/health/ready")).await.status, 503);
    assert_eq!(
        get(&gateway.url("/v2/models/standby_model/ready"))
            .await
            .status,
        503
    );
    assert_eq!(
        get(&gateway.url("/v2/models/standby_model")).await.status,
        200,
        "metadata is known"
    );
    let reply = infer(
        &gateway.base(),
        "standby_model",
        &InferRequest {
            inputs: vec![Tensor {
                name: "x".into(),
                shape: vec![1, 2],
                data: TensorData::Fp32(vec![1.0, 2.0]),
            }],
            ..InferRequest::default()
        },
        false,
    )
    .await;
    assert_eq!(reply.status, 503);
    assert!(reply.error().contains("no backend"), "{}", reply.error());
    gateway.shutdown().await;
}

/// Sends `count` fashion_cnn requests one after the other (an idle pool
/// each time) and returns their outputs and the local backend's details.
async fn sequential_fashion(config: &str, count: usize) -> (Vec<Vec<Tensor>>, serde_json::Value) {
    let gateway = TestGateway::start(config).await;
    let mut outputs = Vec::new();
    for n in 0..count {
        // Low load: the inline path is for a pool idle for at least 200 µs.
        tokio::time::sleep(Duration::from_millis(5)).await;
        let request = fp32_request(vec![1, 1, 28, 28], |i| ((i + n) % 17) as f32 / 17.0);
        outputs.push(decode(&infer(&gateway.base(), "fashion_cnn", &request, true).await).outputs);
    }
    let stats = get(&gateway.url("/v2/switchyard/stats")).await.json();
    gateway.shutdown().await;
    let details = stats["backend_details"]["local"]["models"]["fashion_cnn"]["1"].clone();
    (outputs, details)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pool_runs_a_small_model_inline_with_the_same_answers() {
    // A limit no machine's fashion_cnn run comes near, so the test does not
    // depend on this machine's speed.
    let inline = r#"
[backends.local]
models = ["fashion_cnn"]
inline_max_compute_us = 5000
"#;
    let queued = r#"
[backends.local]
models = ["fashion_cnn"]
inline_max_compute_us = 0
"#;
    let (inline_outputs, inline_details) = sequential_fashion(inline, 12).await;
    let (queued_outputs, queued_details) = sequential_fashion(queued, 12).await;
    assert_eq!(queued_details["inline_requests"], 0, "{queued_details}");
    assert_eq!(queued_details["inline_max_compute_us"], 0);
    // The first request is measured on a worker; after that each one finds
    // the pool idle and a measured run well under the limit. The test
    // checks that the path is taken and agrees with the workers, not how
    // often a busy machine's scheduling lets it: at least half.
    let taken = inline_details["inline_requests"].as_u64().expect("a count");
    assert!(taken >= 6, "{inline_details}");
    assert!(
        inline_details["one_row_compute_us"]
            .as_f64()
            .is_some_and(|us| us > 0.0),
        "{inline_details}"
    );
    assert_eq!(
        inline_details["active"], 0,
        "nothing left counted as running"
    );
    assert_eq!(
        inline_outputs, queued_outputs,
        "the inline path computes what the workers compute"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_and_stats_describe_served_requests() {
    let gateway = TestGateway::start(DIGITS_AND_FASHION).await;
    for _ in 0..20 {
        decode(
            &infer(
                &gateway.base(),
                "fashion_cnn",
                &fp32_request(vec![1, 1, 28, 28], |i| (i % 7) as f32),
                true,
            )
            .await,
        );
    }
    let metrics = get(&gateway.url("/metrics")).await;
    assert!(
        metrics
            .header("content-type")
            .is_some_and(|t| t.starts_with("text/plain"))
    );
    let text = String::from_utf8_lossy(&metrics.body);
    for needle in [
        r#"switchyard_requests_total{model="fashion_cnn",backend="local",outcome="success"}"#,
        r#"switchyard_request_duration_seconds_bucket{model="fashion_cnn",backend="local",le="0.001"}"#,
        "switchyard_batch_size_bucket",
        r#"switchyard_backend_in_flight_requests{backend="local"}"#,
        r#"switchyard_backend_queued_requests{backend="local"}"#,
    ] {
        assert!(text.contains(needle), "metrics lack {needle}:\n{text}");
    }
    let stats = get(&gateway.url("/v2/switchyard/stats")).await.json();
    let series = stats["series"]
        .as_array()
        .expect("series")
        .iter()
        .find(|s| s["model"] == "fashion_cnn")
        .expect("fashion_cnn series")
        .clone();
    assert_eq!(series["backend"], "local");
    assert_eq!(series["policy"], "ordered");
    assert!(series["requests"].as_u64().expect("count") >= 20);
    let latency = &series["latency"];
    let (p50, p99) = (
        latency["p50_ms"].as_f64().expect("p50"),
        latency["p99_ms"].as_f64().expect("p99"),
    );
    assert!(p50 > 0.0 && p50 <= p99, "{latency}");
    gateway.shutdown().await;
}

fn switchyard() -> std::process::Command {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"));
    command.current_dir(workspace());
    command
}

/// `server.io_threads` sizes the binary's async runtime, and the stats say
/// how many threads it has (3: the default on neither a 1- nor a 2-CPU
/// machine).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn io_threads_sizes_the_runtime_and_the_stats_show_it() {
    let gateway =
        BinaryGateway::spawn("[server]\nio_threads = 3\n[backends.local]\nmodels = [\"digits\"]\n");
    let port = gateway.port;
    // The gateway listens once its models are loaded.
    wait_until_listening(port).await;
    let stats = get(&format!("http://127.0.0.1:{port}/v2/switchyard/stats")).await;
    assert_eq!(stats.json()["io_threads"], 3, "{}", stats.text());
}

/// Each thread of the gateway process: its name and the CPUs it may run on.
fn threads_and_cpus(pid: u32) -> Vec<(String, Vec<usize>)> {
    use switchyard_backends::affinity::allowed_cpus_from_status;
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("the task list") {
        let path = task.expect("a task").path();
        // A thread that ended since the listing is skipped.
        let (Ok(name), Ok(status)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("status")),
        ) else {
            continue;
        };
        let cpus = allowed_cpus_from_status(&status).expect("Cpus_allowed_list");
        threads.push((name.trim().to_owned(), cpus));
    }
    threads.sort();
    threads
}

async fn wait_until_listening(port: u16) {
    let ready_by = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        assert!(Instant::now() < ready_by, "the gateway never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `server.pin_threads` pins each async runtime worker and each ONNX Runtime
/// worker to one of the process's CPUs, in turn (the ONNX Runtime workers
/// in the configured order of models and workers), leaves every other
/// thread on all of them, and the gateway still answers; without it no
/// thread is pinned. Skipped, with a message, where the test process may
/// use only one CPU.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_threads_pins_the_runtime_and_onnx_workers_to_one_cpu_each() {
    let process_cpus = switchyard_backends::affinity::allowed_cpus_of_current_thread()
        .expect("this thread's CPUs");
    if process_cpus.len() < 2 {
        eprintln!("skipped: this process may use only CPU {process_cpus:?}");
        return;
    }
    let sections = |pin: bool| {
        format!(
            "[server]\npin_threads = {pin}\nio_threads = 2\n[backends.local]\n\
             models = [\"digits\", \"fashion_cnn\"]\n\
             [backends.local.overrides.fashion_cnn]\nworkers = 2\n"
        )
    };
    let cpu = |i: usize| vec![process_cpus[i % process_cpus.len()]];

    let pinned = BinaryGateway::spawn(&sections(true));
    wait_until_listening(pinned.port).await;
    let threads = threads_and_cpus(pinned.child.id());
    let of = |name: &str| -> Vec<Vec<usize>> {
        threads
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, cpus)| cpus.clone())
            .collect()
    };
    assert_eq!(of("ort-digits-0"), [cpu(0)], "{threads:?}");
    // Thread names are cut to 15 bytes: both are `ort-fashion_cnn`.
    let mut fashion = vec![cpu(1), cpu(2)];
    fashion.sort();
    assert_eq!(of("ort-fashion_cnn"), fashion, "{threads:?}");
    let mut runtime: Vec<Vec<usize>> = of("tokio-rt-worker");
    let workers: Vec<Vec<usize>> = runtime.iter().filter(|c| c.len() == 1).cloned().collect();
    assert_eq!(workers.len(), 2, "two pinned runtime workers: {threads:?}");
    let mut expected = vec![cpu(0), cpu(1)];
    expected.sort();
    assert_eq!(workers, expected, "{threads:?}");
    runtime.retain(|c| c.len() != 1);
    assert!(
        runtime.iter().all(|c| *c == process_cpus),
        "the blocking pool's threads keep every CPU: {threads:?}"
    );
    let (main_name, main_cpus) = threads
        .iter()
        .find(|(n, _)| n.starts_with("switchyard"))
        .expect("the main thread");
    assert_eq!(*main_cpus, process_cpus, "{main_name} is not pinned");
    let base = format!("http://127.0.0.1:{}", pinned.port);
    let request = fp32_request(vec![1, 64], |i| (i % 17) as f32);
    let reply = infer(&base, "digits", &request, true).await;
    assert_eq!(reply.status, 200, "{}", reply.text());
    drop(pinned);

    let unpinned = BinaryGateway::spawn(&sections(false));
    wait_until_listening(unpinned.port).await;
    let threads = threads_and_cpus(unpinned.child.id());
    assert!(
        threads.iter().all(|(_, cpus)| *cpus == process_cpus),
        "{threads:?}"
    );
}

#[test]
fn shipped_configs_parse() {
    let all = ["local", "container", "lambda"];
    // The last column: whether the config pins the gateway's threads (the
    // one-gateway-per-machine configs do; the annotated example shows the
    // default).
    for (file, backends, pinned) in [
        ("config/example.toml", &all[..], false),
        ("config/default.toml", &all[..], true),
        ("config/local-only.toml", &["local"][..], true),
        ("config/container-only.toml", &["container"][..], true),
        ("config/lambda-only.toml", &["lambda"][..], false),
    ] {
        let text = std::fs::read_to_string(workspace().join(file)).expect("readable");
        let config = Config::parse(&text, file, &workspace()).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.placement.backends, backends, "{file}");
        assert_eq!(config.server.listen.to_string(), "127.0.0.1:8000", "{file}");
        assert_eq!(config.server.pin_threads, pinned, "{file}");
    }
    // The policy files build against the three tiers and the shipped models.
    let models: Vec<String> = ["digits", "fashion_cnn", "xception"]
        .map(str::to_owned)
        .to_vec();
    let tiers: Vec<String> = all.map(str::to_owned).to_vec();
    for (file, xception_policy) in [
        ("config/straightline.toml", "straightline"),
        ("config/cost-aware.toml", "adaptive"),
        ("config/balanced.toml", "adaptive"),
        ("config/latency-first.toml", "adaptive"),
    ] {
        let text = std::fs::read_to_string(workspace().join(file)).expect("readable");
        let policies = switchyard_scheduler::policy::spec::PolicyFile::parse(&text)
            .unwrap_or_else(|e| panic!("{file}: {e}"));
        let set =
            switchyard_scheduler::policy::spec::PolicySet::build(&policies, &tiers, &models, file)
                .unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(set.for_model("xception").name(), xception_policy, "{file}");
    }
    let embedded =
        std::fs::read_to_string(workspace().join("config/default.toml")).expect("readable");
    assert_eq!(
        embedded,
        switchyard_scheduler::config::DEFAULT_CONFIG,
        "the binary embeds config/default.toml"
    );
}

#[test]
fn bad_configs_are_rejected_naming_the_key_and_the_fix() {
    let cases = [
        (
            "[server]\nlisten = \"127.0.0.1:8000\"\nlisn = 1\n",
            "lisn",
            "unknown field",
        ),
        (
            "[server]\nlisten = \"localhost\"\n",
            "server.listen",
            "IP:PORT",
        ),
        (
            "[backends.local]\nworkers = 0\n",
            "backends.local.workers",
            "between 1 and 64",
        ),
        (
            "[backends.local]\nworkers = \"two\"\n",
            "backends.local.workers",
            "invalid type",
        ),
        (
            "[backends.local]\nmodels = []\n",
            "backends.local.models",
            "is empty",
        ),
        (
            "[backends.local]\nmodels = \"some\"\n",
            "backends.local.models",
            "write \"all\" or a list",
        ),
        (
            "[backends.local]\nmodels = [\"resnet\"]\n",
            "backends.local.models",
            "unknown model",
        ),
        (
            "[backends.local.overrides.digits]\nqueue_capacity = 0\n",
            "backends.local.overrides.digits.queue_capacity",
            "between",
        ),
        (
            "[placement.default]\npolicy = \"static\"\nbackend = \"lambda\"\n[backends.local]\n",
            "placement.default.backend",
            "not an enabled backend",
        ),
        (
            "[placement]\npolicy = \"ordered\"\n[backends.local]\n",
            "placement",
            "unknown field",
        ),
        (
            "[placement]\norder = [\"lambda\"]\n[backends.local]\n",
            "placement.default.order",
            "not an enabled backend",
        ),
        (
            "[backends.local]\nenabled = false\n",
            "backends",
            "no backend is enabled",
        ),
        (
            "[models]\nrepository = \"/nonexistent\"\n[backends.local]\n",
            "models.repository",
            "make setup",
        ),
        (
            "[placement.outlier_detection]\nconsecutive_failures = 0\n[backends.local]\n",
            "placement.outlier_detection.consecutive_failures",
            "enabled = false",
        ),
        (
            "[placement.outlier_detection]\nbase_ejection_ms = 5000\nmax_ejection_ms = 100\n[backends.local]\n",
            "placement.outlier_detection.max_ejection_ms",
            "at least base_ejection_ms",
        ),
        (
            "[placement.load_shedding]\nk = 0.5\n[backends.local]\n",
            "placement.load_shedding.k",
            "between 1 and 100",
        ),
        (
            "[placement.load_shedding]\nkk = 2\n[backends.local]\n",
            "placement.load_shedding",
            "unknown field",
        ),
        ("[server\n", "(syntax)", ""),
    ];
    for (text, key, fix) in cases {
        let error = Config::parse(text, "test.toml", &workspace()).expect_err(text);
        assert!(
            error.key.contains(key),
            "{text:?}: key {:?} should name {key:?}",
            error.key
        );
        assert!(
            error.message.contains(fix),
            "{text:?}: {:?} should say {fix:?}",
            error.message
        );
    }
}

#[test]
fn the_binary_exits_non_zero_on_a_bad_config_naming_the_key() {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[backends.local]\nworkers = 0\n").expect("write");
    let output = switchyard()
        .args(["serve", "--config"])
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("backends.local.workers"), "{stderr}");
    let output = switchyard()
        .arg("check-config")
        .arg(&path)
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(2));
    let output = switchyard()
        .args(["check-config", "config/example.toml"])
        .output()
        .expect("runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn the_binary_refuses_an_unusable_tokio_worker_threads_instead_of_panicking() {
    for value in ["abc", "0"] {
        let output = switchyard()
            .args(["serve", "--listen", "127.0.0.1:0"])
            .env("TOKIO_WORKER_THREADS", value)
            .output()
            .expect("runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{value}: {stderr}");
        assert!(
            stderr.contains(&format!("TOKIO_WORKER_THREADS=\"{value}\""))
                && stderr.contains("server.io_threads")
                && !stderr.contains("panicked"),
            "{value}: {stderr}"
        );
    }
}

#[test]
fn the_binary_explains_how_to_fix_a_missing_onnx_runtime() {
    let output = switchyard()
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("ORT_DYLIB_PATH", "/nonexistent/libonnxruntime.so")
        .output()
        .expect("runs");
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("ORT_DYLIB_PATH") && stderr.contains("unset it"),
        "{stderr}"
    );
}

#[test]
fn the_worker_command_serves_the_repository_and_exits_0_on_sigterm() {
    use std::io::{BufRead, BufReader};
    let mut child = switchyard()
        .args([
            "worker",
            "--repository",
            "models/repository",
            "--listen",
            "127.0.0.1:0",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("starts");
    let stdout = child.stdout.take().expect("stdout");
    let mut address = None;
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("line");
        if let Some(rest) = line.strip_prefix("Switchyard is serving on http://") {
            address = Some(rest.trim().to_owned());
            break;
        }
    }
    let address = address.expect("the worker announces its address");
    let runtime = tokio::runtime::Runtime::new().expect("runtime");
    let ready = runtime.block_on(get(&format!("http://{address}/v2/models/xception/ready")));
    assert_eq!(ready.status, 200);
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
    let exit = child.wait().expect("exits");
    assert_eq!(exit.code(), Some(0), "SIGTERM drains and exits 0");
}
