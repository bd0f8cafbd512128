//! The load generator against a small in-process v2 server on port 0 whose
//! behaviour each test chooses (stall once, stall always, fixed status), and
//! the command against the same server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchyard_loadgen::{
    Arrival, Endpoint, Load, LoadgenError, Outcome, PayloadSpec, RequestBody, RunSettings, Target,
    http_client, run,
};
use switchyard_protocol::{BINARY_HEADER_LENGTH, decode_request};

const METADATA: &str = r#"{"name":"m","versions":["1"],"platform":"onnxruntime_onnx",
  "inputs":[{"name":"input","datatype":"FP32","shape":[-1,4]}],
  "outputs":[{"name":"out","datatype":"FP32","shape":[-1,2]}]}"#;

/// What the fake server does with an inference request.
#[derive(Default)]
struct Behaviour {
    status: Option<StatusCode>,
    /// The first inference request holds every request up for this long.
    stall_first: Option<Duration>,
    /// Every inference request takes this long (independently).
    stall_each: Option<Duration>,
    first_done: AtomicBool,
    gate: tokio::sync::Mutex<()>,
    infers: AtomicU64,
    bad_bodies: AtomicU64,
}

async fn handle(
    behaviour: Arc<Behaviour>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let reply = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response
    };
    match (request.method().clone(), path.as_str()) {
        (Method::GET, "/v2/models/m") => Ok(reply(StatusCode::OK, METADATA)),
        (Method::GET, "/v2/health/live") => Ok(reply(StatusCode::OK, r#"{"live":true}"#)),
        (Method::POST, "/v2/models/m/infer") => {
            let header = request
                .headers()
                .get(BINARY_HEADER_LENGTH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = request.into_body().collect().await.unwrap().to_bytes();
            if decode_request(&body, header.as_deref()).is_err() {
                behaviour.bad_bodies.fetch_add(1, Ordering::Relaxed);
            }
            behaviour.infers.fetch_add(1, Ordering::Relaxed);
            {
                let _gate = behaviour.gate.lock().await;
                if let Some(stall) = behaviour.stall_first
                    && !behaviour.first_done.swap(true, Ordering::SeqCst)
                {
                    tokio::time::sleep(stall).await;
                }
            }
            if let Some(stall) = behaviour.stall_each {
                tokio::time::sleep(stall).await;
            }
            let mut response = reply(behaviour.status.unwrap_or(StatusCode::OK), "{}");
            response
                .headers_mut()
                .insert("switchyard-backend", "fake".parse().unwrap());
            response
                .headers_mut()
                .insert("switchyard-batch-rows", "1".parse().unwrap());
            Ok(response)
        }
        _ => Ok(reply(StatusCode::NOT_FOUND, r#"{"error":"not found"}"#)),
    }
}

/// Starts the fake server on an ephemeral port.
async fn serve(behaviour: Behaviour) -> (SocketAddr, Arc<Behaviour>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let behaviour = Arc::new(behaviour);
    let shared = Arc::clone(&behaviour);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let behaviour = Arc::clone(&shared);
            tokio::spawn(async move {
                let service = service_fn(move |request| handle(Arc::clone(&behaviour), request));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (address, behaviour)
}

fn endpoint(address: SocketAddr) -> Endpoint {
    Endpoint::parse(&format!("http://{address}"), false).unwrap()
}

fn small_body() -> RequestBody {
    let input = vec![switchyard_protocol::Tensor {
        name: "input".into(),
        shape: vec![1, 4],
        data: switchyard_protocol::TensorData::Fp32(vec![0.0; 4]),
    }];
    RequestBody::encode(input, true, false).unwrap()
}

fn target(address: SocketAddr) -> Arc<Target> {
    Arc::new(Target::new(endpoint(address), "m", vec![small_body()]).unwrap())
}

fn open(rate: f64, max_in_flight: usize, duration_ms: u64) -> RunSettings {
    RunSettings {
        load: Load::Open {
            arrival: Arrival::Constant { rate },
            max_in_flight,
        },
        duration: Duration::from_millis(duration_ms),
        max_requests: None,
        timeout: Duration::from_secs(5),
        keep_samples: true,
    }
}

fn closed(concurrency: usize, max_requests: u64) -> RunSettings {
    RunSettings {
        load: Load::Closed { concurrency },
        duration: Duration::from_secs(5),
        max_requests: Some(max_requests),
        timeout: Duration::from_secs(5),
        keep_samples: false,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_charges_a_stall_to_every_request_behind_it() {
    let stall = Duration::from_millis(200);
    let (address, _) = serve(Behaviour {
        stall_first: Some(stall),
        ..Default::default()
    })
    .await;
    let client = http_client(64);
    // 100 requests/s for 0.5 s: requests 0..19 are due during the stall.
    let recording = run(&client, &target(address), &open(100.0, 64, 500))
        .await
        .unwrap();
    let report = &recording.report;
    assert_eq!(report.scheduled, 50);
    assert_eq!(report.counts.success, 50, "{report:?}");
    let samples = recording.recorder.samples().unwrap();
    assert_eq!(samples.len(), 50);
    let stall_us = stall.as_micros() as u64;
    let mut behind_stall = 0;
    for sample in &samples {
        if sample.intended_offset_us < stall_us {
            behind_stall += 1;
            // The stall began no earlier than the run's start, so a request
            // due at offset t cannot finish before 200 ms - t after its due
            // time, however long it waited to be written.
            let wait = stall_us - sample.intended_offset_us;
            assert!(
                sample.latency_us + 1_000 >= wait,
                "request due at {} µs: latency {} µs < its wait {wait} µs",
                sample.intended_offset_us,
                sample.latency_us
            );
        }
    }
    assert_eq!(behind_stall, 20);
    // A client that waited for each answer before sending the next would
    // report one slow request; here ten are slower than 100 ms.
    let slow = recording
        .recorder
        .latency(Outcome::Success)
        .count_between(100_000, u64::MAX);
    assert!(slow >= 10, "{slow} requests ≥ 100 ms");
    assert!(report.latency_us.p90 >= 100_000, "{:?}", report.latency_us);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_beyond_max_in_flight_are_dropped_not_delayed() {
    let (address, behaviour) = serve(Behaviour {
        stall_each: Some(Duration::from_millis(300)),
        ..Default::default()
    })
    .await;
    let client = http_client(4);
    let recording = run(&client, &target(address), &open(100.0, 2, 200))
        .await
        .unwrap();
    let report = &recording.report;
    assert_eq!(report.scheduled, 20);
    assert_eq!(report.sent, 2);
    assert_eq!(report.counts.success, 2);
    assert_eq!(report.counts.dropped, 18);
    assert_eq!(behaviour.infers.load(Ordering::Relaxed), 2);
    // The two that were sent went out on time (generously: CI is busy).
    assert!(report.send_lag_us.max < 100_000, "{:?}", report.send_lag_us);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statuses_and_failures_are_counted_by_outcome() {
    let client = http_client(4);
    for (status, outcome) in [
        (StatusCode::TOO_MANY_REQUESTS, Outcome::Throttled),
        (StatusCode::SERVICE_UNAVAILABLE, Outcome::ServerError),
        (StatusCode::BAD_REQUEST, Outcome::OtherStatus),
    ] {
        let (address, _) = serve(Behaviour {
            status: Some(status),
            ..Default::default()
        })
        .await;
        let recording = run(&client, &target(address), &closed(2, 10))
            .await
            .unwrap();
        assert_eq!(recording.recorder.count(outcome), 10, "{status}");
        assert_eq!(recording.report.counts.success, 0);
        assert_eq!(recording.report.backends.get("fake"), Some(&10));
    }

    let (slow, _) = serve(Behaviour {
        stall_each: Some(Duration::from_millis(500)),
        ..Default::default()
    })
    .await;
    let mut settings = closed(2, 2);
    settings.timeout = Duration::from_millis(50);
    let recording = run(&client, &target(slow), &settings).await.unwrap();
    assert_eq!(recording.report.counts.timeout, 2);
    let timeouts = recording.report.latency_by_outcome_us[&Outcome::Timeout];
    assert!(timeouts.min >= 50_000, "{timeouts:?}");

    // A port that was just free: nothing listens there.
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    };
    let recording = run(&client, &target(closed_port), &closed(1, 3))
        .await
        .unwrap();
    assert_eq!(recording.report.counts.connection_error, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_json_has_the_fields() {
    let (address, behaviour) = serve(Behaviour::default()).await;
    let client = http_client(8);
    let payload = PayloadSpec {
        batch_size: 3,
        binary: false,
        binary_output: false,
        variants: 2,
        seed: 7,
    };
    let target = Target::prepare(&client, endpoint(address), "m", &payload)
        .await
        .unwrap();
    let recording = run(&client, &Arc::new(target), &closed(4, 40))
        .await
        .unwrap();
    assert_eq!(behaviour.bad_bodies.load(Ordering::Relaxed), 0);
    let json = serde_json::to_value(&recording.report).unwrap();
    assert_eq!(json["load"]["mode"], "closed_loop");
    assert_eq!(json["load"]["concurrency"], 4);
    assert_eq!(json["model"], "m");
    assert_eq!(json["batch_size"], 3);
    assert_eq!(json["binary"], false);
    assert_eq!(json["counts"]["success"], 40);
    for field in [
        "throttled",
        "server_error",
        "other_status",
        "timeout",
        "connection_error",
        "dropped",
    ] {
        assert_eq!(json["counts"][field], 0, "{field}");
    }
    for field in ["count", "min", "mean", "p50", "p90", "p99", "p999", "max"] {
        assert!(json["latency_us"][field].is_number(), "latency_us.{field}");
        assert!(
            json["service_time_us"][field].is_number(),
            "service_time_us.{field}"
        );
    }
    assert!(json["throughput_per_s"].as_f64().unwrap() > 0.0);
    let items = json["items_per_s"].as_f64().unwrap();
    let requests = json["throughput_per_s"].as_f64().unwrap();
    assert!(
        (items / requests - 3.0).abs() < 1e-9,
        "{items} vs {requests}"
    );
    assert_eq!(json["backends"]["fake"], 40);
    assert_eq!(json["server_timing"]["batch_rows"]["p50"], 1);
    assert_eq!(json["latency_by_outcome_us"]["success"]["count"], 40);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_target_sends_bodiless_gets() {
    let (address, behaviour) = serve(Behaviour::default()).await;
    let client = http_client(2);
    let probe = Arc::new(Target::probe(endpoint(address), "/v2/health/live").unwrap());
    let recording = run(&client, &probe, &open(200.0, 8, 100)).await.unwrap();
    assert_eq!(recording.report.scheduled, 20);
    assert_eq!(recording.report.counts.success, 20);
    assert_eq!(behaviour.infers.load(Ordering::Relaxed), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_model_is_a_clear_setup_error() {
    let (address, _) = serve(Behaviour::default()).await;
    let client = http_client(1);
    let error = Target::prepare(&client, endpoint(address), "nope", &PayloadSpec::default())
        .await
        .unwrap_err();
    assert!(matches!(error, LoadgenError::Metadata { .. }), "{error}");
    assert!(error.to_string().contains("404"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_runs_and_writes_a_json_report() {
    let (address, _) = serve(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let report_path = dir.path().join("report.json");
    let samples_path = dir.path().join("samples.csv");
    let args = vec![
        "--url".to_owned(),
        format!("http://{address}"),
        "--model".into(),
        "m".into(),
        "--rate".into(),
        "200".into(),
        "--poisson".into(),
        "--duration".into(),
        "2s".into(),
        "--max-requests".into(),
        "30".into(),
        "--binary".into(),
        "--json-report".into(),
        report_path.display().to_string(),
        "--samples-csv".into(),
        samples_path.display().to_string(),
    ];
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-loadgen"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("open loop, poisson 200/s"), "{stdout}");
    assert!(stdout.contains("2xx 30"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report_path).unwrap()).unwrap();
    assert_eq!(report["counts"]["success"], 30);
    assert_eq!(report["load"]["arrival"], "poisson");
    let samples = std::fs::read_to_string(&samples_path).unwrap();
    assert_eq!(samples.lines().count(), 31);
}

#[test]
fn the_command_refuses_a_remote_target() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-loadgen"))
        .args([
            "--url",
            "http://192.0.2.1:8000",
            "--model",
            "m",
            "--rate",
            "10",
        ])
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("not a loopback address"), "{stderr}");
}
