//! The load generator against a small in-process v2 server on port 0 whose
//! behaviour each test chooses (stall once, stall periodically, stall
//! always, fixed status), and the command against the same server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use switchyard_loadgen::{
    Endpoint, Load, LoadgenError, MixSpec, Outcome, PayloadSpec, Phase, PhaseLoad, Phases, Process,
    Recording, RequestBody, RunSettings, SCHEMA_VERSION, Target, http_client, run,
};
use switchyard_protocol::{BINARY_HEADER_LENGTH, decode_request};

const METADATA_M: &str = r#"{"name":"m","versions":["1"],"platform":"onnxruntime_onnx",
  "inputs":[{"name":"input","datatype":"FP32","shape":[-1,4]}],
  "outputs":[{"name":"out","datatype":"FP32","shape":[-1,2]}]}"#;
const METADATA_N: &str = r#"{"name":"n","versions":["1"],"platform":"onnxruntime_onnx",
  "inputs":[{"name":"x","datatype":"INT64","shape":[-1,3]}],
  "outputs":[{"name":"y","datatype":"FP32","shape":[-1,1]}]}"#;

/// What the fake server does with an inference request.
#[derive(Default)]
struct Behaviour {
    status: Option<StatusCode>,
    /// The first inference request holds every request up for this long.
    stall_first: Option<Duration>,
    /// Every inference request takes this long (independently).
    stall_each: Option<Duration>,
    /// (S, P): the server is frozen for the first S of every period P
    /// (from its start); a request arriving in a freeze is answered when
    /// the freeze ends.
    stall_periodic: Option<(Duration, Duration)>,
    first_done: AtomicBool,
    gate: tokio::sync::Mutex<()>,
    infers: AtomicU64,
    bad_bodies: AtomicU64,
    /// Inference requests by (model, rows).
    by_model_rows: Mutex<BTreeMap<(String, u64), u64>>,
}

async fn handle(
    behaviour: Arc<Behaviour>,
    epoch: Instant,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_owned();
    let reply = |status: StatusCode, body: &'static str| {
        let mut response = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
        *response.status_mut() = status;
        response
    };
    let infer_model = path
        .strip_prefix("/v2/models/")
        .and_then(|rest| rest.strip_suffix("/infer"))
        .map(str::to_owned);
    match (request.method().clone(), path.as_str(), infer_model) {
        (Method::GET, "/v2/models/m", _) => Ok(reply(StatusCode::OK, METADATA_M)),
        (Method::GET, "/v2/models/n", _) => Ok(reply(StatusCode::OK, METADATA_N)),
        (Method::GET, "/v2/health/live", _) => Ok(reply(StatusCode::OK, r#"{"live":true}"#)),
        (Method::POST, _, Some(model)) if model == "m" || model == "n" => {
            if let Some((stall, period)) = behaviour.stall_periodic {
                let since = epoch.elapsed().as_nanos() % period.as_nanos();
                let into_period = Duration::from_nanos(since as u64);
                if into_period < stall {
                    tokio::time::sleep(stall - into_period).await;
                }
            }
            let header = request
                .headers()
                .get(BINARY_HEADER_LENGTH)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            let body = request.into_body().collect().await.unwrap().to_bytes();
            match decode_request(&body, header.as_deref()) {
                Ok(decoded) => {
                    let rows = decoded.inputs[0].shape[0];
                    *behaviour
                        .by_model_rows
                        .lock()
                        .unwrap()
                        .entry((model.clone(), rows))
                        .or_default() += 1;
                }
                Err(_) => {
                    behaviour.bad_bodies.fetch_add(1, Ordering::Relaxed);
                }
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
            let backend = if model == "m" { "fake" } else { "other" };
            response
                .headers_mut()
                .insert("switchyard-backend", backend.parse().unwrap());
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
    let epoch = Instant::now();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let behaviour = Arc::clone(&shared);
            tokio::spawn(async move {
                let service =
                    service_fn(move |request| handle(Arc::clone(&behaviour), epoch, request));
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

fn open_phases(phases: Phases, max_in_flight: usize) -> RunSettings {
    let mut settings = RunSettings::new(
        Load::Open {
            phases,
            process: Process::Constant,
            max_in_flight,
        },
        Duration::from_secs(5),
    );
    settings.keep_samples = true;
    settings
}

fn open(rate: f64, max_in_flight: usize, duration_ms: u64) -> RunSettings {
    open_phases(
        Phases::constant(rate, Duration::from_millis(duration_ms)).unwrap(),
        max_in_flight,
    )
}

fn closed(concurrency: usize, max_requests: u64) -> RunSettings {
    let mut settings = RunSettings::new(
        Load::Closed {
            concurrency,
            duration: Duration::from_secs(5),
        },
        Duration::from_secs(5),
    );
    settings.max_requests = Some(max_requests);
    settings
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
        .unwrap()
        .count_between(100_000, u64::MAX);
    assert!(slow >= 10, "{slow} requests ≥ 100 ms");
    assert!(report.latency_us.p90 >= 100_000, "{:?}", report.latency_us);
}

/// Coordinated omission, against the closed form. The server freezes for
/// the first S = 100 ms of every P = 250 ms. At a constant rate, intended
/// send times fall uniformly over the cycle, and a request due x ms into a
/// freeze waits S − x for it to end, so the corrected latency L satisfies
/// P(L > y) = (S − y) / P for 0 ≤ y < S (wrk2's expectation), that is the
/// q-quantile is S − (1 − q)·P above q = 1 − S/P = 0.6: p90 = 75 ms,
/// p99 = 97.5 ms, and 20% of requests are slower than 50 ms. A closed loop
/// measured from the actual send (the uncorrected service time of a
/// client that waits) sees one slow request per connection per freeze and
/// reports a p90 of a millisecond or so.
///
/// Tolerance: the lattice of 100 due times per period puts quantiles up to
/// 2.5 ms above the closed form; the server's 1 ms timer, loopback and a
/// busy CI machine make answers late, never early (measured here: +3 to
/// +4 ms). So quantiles must lie within [−4 ms, +10 ms] of it, the
/// fraction within [−0.03, +0.06]. A stall of the host itself can still
/// push a dozen answers late (seen once: p99 +29 ms on a clean-clone run),
/// so a run that misses is measured once more; a wrong correction misses
/// both times.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrected_percentiles_match_the_stall_closed_form_and_uncorrected_ones_do_not() {
    let stall = Duration::from_millis(100);
    let period = Duration::from_millis(250);
    let (address, _) = serve(Behaviour {
        stall_periodic: Some((stall, period)),
        ..Default::default()
    })
    .await;
    let client = http_client(256);
    let ms = |us: u64| us as f64 / 1000.0;
    let mut misses = Vec::new();
    let report = loop {
        // 400/s for 3 s: 1,200 requests over 12 periods.
        let recording = run(&client, &target(address), &open(400.0, 256, 3000))
            .await
            .unwrap();
        assert_eq!(
            recording.report.counts.success, 1200,
            "{:?}",
            recording.report.counts
        );
        match closed_form_miss(&recording) {
            None => break recording.report,
            Some(miss) => {
                misses.push(miss);
                assert!(misses.len() < 2, "off the closed form twice: {misses:?}");
            }
        }
    };

    // The same server through a closed loop of 4 connections, measured from
    // each actual send: most of the freeze is never sampled.
    let mut coordinated = closed(4, 100_000);
    coordinated.load = Load::Closed {
        concurrency: 4,
        duration: Duration::from_secs(2),
    };
    coordinated.max_duration = Duration::from_secs(2);
    let uncorrected = run(&client, &target(address), &coordinated)
        .await
        .unwrap()
        .report;
    assert!(uncorrected.counts.success > 100, "{:?}", uncorrected.counts);
    assert!(
        ms(uncorrected.latency_us.p90) < 10.0 && ms(report.latency_us.p90) > 60.0,
        "uncorrected p90 {} ms vs corrected {} ms",
        ms(uncorrected.latency_us.p90),
        ms(report.latency_us.p90)
    );
}

/// What in an open-loop run through the periodic freeze disagrees with the
/// closed form (see the test above), if anything.
fn closed_form_miss(recording: &Recording) -> Option<String> {
    let report = &recording.report;
    let (s_ms, p_ms) = (100.0, 250.0);
    let quantile = |q: f64| s_ms - (1.0 - q) * p_ms;
    let ms = |us: u64| us as f64 / 1000.0;
    for (q, measured) in [(0.9, report.latency_us.p90), (0.99, report.latency_us.p99)] {
        let expected = quantile(q);
        let error = ms(measured) - expected;
        if !(-4.0..=10.0).contains(&error) {
            return Some(format!(
                "corrected p{}: {} ms, closed form {expected} ms",
                q * 100.0,
                ms(measured)
            ));
        }
    }
    let Some(corrected) = recording.recorder.latency(Outcome::Success) else {
        return Some("no latency recorded".into());
    };
    let over_50ms = corrected.count_between(50_000, u64::MAX) as f64 / corrected.len() as f64;
    let expected_fraction = (s_ms - 50.0) / p_ms;
    if !(-0.03..=0.06).contains(&(over_50ms - expected_fraction)) {
        return Some(format!(
            "fraction over 50 ms: {over_50ms}, closed form {expected_fraction}"
        ));
    }
    if ms(report.latency_us.p50) >= 10.0 {
        return Some(format!("p50 {} ms", ms(report.latency_us.p50)));
    }
    None
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
async fn each_phase_is_counted_on_its_own_and_honours_its_max_in_flight() {
    let (address, _) = serve(Behaviour {
        stall_each: Some(Duration::from_millis(150)),
        ..Default::default()
    })
    .await;
    let client = http_client(64);
    // Phase 1: 40/s for 0.5 s (20 requests), at most 64 in flight: none
    // dropped. Phase 2: 10 requests in 0.5 s with at most 1 in flight (its
    // maxVusers): a request takes 150 ms and they come every 50 ms, so only
    // some are sent and the rest dropped.
    let phases = Phases::new(vec![
        Phase::rate("steady", Duration::from_millis(500), 40.0),
        Phase {
            name: "capped".into(),
            duration: Duration::from_millis(500),
            load: PhaseLoad::Count { count: 10 },
            max_in_flight: Some(1),
        },
    ])
    .unwrap();
    let recording = run(&client, &target(address), &open_phases(phases, 64))
        .await
        .unwrap();
    let report = &recording.report;
    assert_eq!(report.scheduled, 30);
    let [first, second] = report.per_phase.as_slice() else {
        panic!("two phases expected: {:?}", report.per_phase)
    };
    assert_eq!((first.name.as_str(), first.index), ("steady", 0));
    assert_eq!(first.start_s, 0.0);
    assert_eq!(first.stats.due, 20);
    assert_eq!(first.stats.counts.success, 20);
    assert_eq!(first.stats.counts.dropped, 0);
    assert!((first.offered_per_s - 40.0).abs() < 1e-9);
    assert_eq!((second.name.as_str(), second.start_s), ("capped", 0.5));
    assert_eq!(second.stats.due, 10);
    assert_eq!(second.max_in_flight, Some(1));
    // Requests of phase 1 still in flight when phase 2 starts count
    // against its cap, so at most 4 of its 10 (every third, from 0 ms on)
    // can be sent; at least one is.
    assert!(
        (1..=4).contains(&second.stats.sent),
        "{:?}",
        second.stats.counts
    );
    assert_eq!(
        second.stats.counts.dropped + second.stats.counts.success,
        10
    );
    // The time series covers the run and its rows add up.
    let due: u64 = report.time_series.iter().map(|s| s.due).sum();
    assert_eq!(due, 30);
    assert_eq!(report.time_series[0].phase, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_requests_and_max_duration_cut_a_run_short() {
    let (address, behaviour) = serve(Behaviour::default()).await;
    let client = http_client(16);
    // Ten seconds of 100/s, cut after 7 requests.
    let mut settings = open(100.0, 16, 10_000);
    settings.max_requests = Some(7);
    let report = run(&client, &target(address), &settings)
        .await
        .unwrap()
        .report;
    assert_eq!(report.scheduled, 7);
    assert_eq!(report.counts.success, 7);
    assert!(report.elapsed_s < 5.0, "{}", report.elapsed_s);
    // The same, cut at 300 ms: 30 requests due at 0, 10, ..., 290 ms.
    let mut settings = open(100.0, 16, 10_000);
    settings.max_duration = Duration::from_millis(300);
    let report = run(&client, &target(address), &settings)
        .await
        .unwrap()
        .report;
    assert_eq!(report.scheduled, 30);
    assert!((report.duration_s - 0.3).abs() < 1e-9);
    assert!(report.elapsed_s < 5.0, "{}", report.elapsed_s);
    // A closed loop is cut by the maximum duration too.
    let mut settings = closed(2, u64::MAX);
    settings.max_duration = Duration::from_millis(200);
    let report = run(&client, &target(address), &settings)
        .await
        .unwrap()
        .report;
    assert!(report.elapsed_s < 2.0, "{}", report.elapsed_s);
    assert_eq!(report.counts.success, report.scheduled);
    assert_eq!(
        behaviour.infers.load(Ordering::Relaxed),
        37 + report.scheduled
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payload_mix_weights_and_batch_sizes_are_honoured() {
    let (address, behaviour) = serve(Behaviour::default()).await;
    let client = http_client(8);
    let mix = MixSpec::from_cli(&["m:3".into(), "n:1".into()], Some("1:1,4:1")).unwrap();
    let payload = PayloadSpec {
        binary: true,
        ..PayloadSpec::default()
    };
    let target = Target::prepare_mix(&client, endpoint(address), &mix, &payload)
        .await
        .unwrap();
    assert_eq!(target.entries.len(), 4);
    let report = run(&client, &Arc::new(target), &closed(8, 2000))
        .await
        .unwrap()
        .report;
    assert_eq!(behaviour.bad_bodies.load(Ordering::Relaxed), 0);
    assert_eq!(report.counts.success, 2000);
    let seen = behaviour.by_model_rows.lock().unwrap().clone();
    // Binomial standard deviation of a share of 1/8 over 2,000 requests is
    // 0.74%; 3% is four of them.
    for (i, (model, rows, share)) in [
        ("m", 1, 0.375),
        ("m", 4, 0.375),
        ("n", 1, 0.125),
        ("n", 4, 0.125),
    ]
    .into_iter()
    .enumerate()
    {
        let entry = &report.mix[i];
        assert_eq!((entry.model.as_str(), entry.batch), (model, rows));
        assert!((entry.expected_share - share).abs() < 1e-12);
        assert!(
            (entry.observed_share - share).abs() < 0.03,
            "{model} batch {rows}: {} vs {share}",
            entry.observed_share
        );
        // What the server decoded is what the report counted.
        assert_eq!(
            seen[&(model.to_owned(), rows)],
            entry.due,
            "{model} x{rows}"
        );
    }
    assert_eq!(report.per_model["m"].due + report.per_model["n"].due, 2000);
    // Items: rows of successful requests.
    let rows: u64 = seen.iter().map(|((_, rows), n)| rows * n).sum();
    let items = report.items_per_s * report.elapsed_s;
    assert!((items - rows as f64).abs() < 1.0, "{items} vs {rows}");
    // The header value splits the backends.
    assert_eq!(report.per_backend["fake"].due, report.per_model["m"].due);
    assert_eq!(report.per_backend["other"].due, report.per_model["n"].due);
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
        assert_eq!(recording.report.per_outcome[&outcome].count, 10);
        assert_eq!(recording.report.per_backend["fake"].due, 10);
        assert_eq!(
            recording.report.per_backend["fake"].error_latency_us.count,
            10
        );
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
    let timeouts = recording.report.per_outcome[&Outcome::Timeout].latency_us;
    assert!(timeouts.min >= 50_000, "{timeouts:?}");
    assert_eq!(recording.report.per_backend["none"].counts.timeout, 2);

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

/// The fields a consumer of `--report` reads, by their JSON names.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_json_has_the_documented_schema() {
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
    let phases = Phases::new(vec![
        Phase::rate("one", Duration::from_millis(300), 50.0),
        Phase::rate("two", Duration::from_millis(300), 100.0),
    ])
    .unwrap();
    let recording = run(&client, &Arc::new(target), &open_phases(phases, 8))
        .await
        .unwrap();
    assert_eq!(behaviour.bad_bodies.load(Ordering::Relaxed), 0);
    let json = serde_json::to_value(&recording.report).unwrap();
    assert_eq!(json["schema_version"], SCHEMA_VERSION);
    assert!(
        json["generator"]
            .as_str()
            .unwrap()
            .starts_with("switchyard-loadgen ")
    );
    let settings = &json["settings"];
    assert_eq!(settings["mode"], "open_loop");
    assert_eq!(settings["process"]["kind"], "constant");
    assert_eq!(settings["max_in_flight"], 8);
    assert_eq!(settings["mix"][0]["model"], "m");
    assert_eq!(settings["mix"][0]["batch"], 3);
    assert_eq!(settings["binary"], false);
    assert_eq!(settings["variants"], 2);
    assert!(settings["timeout_s"].is_number());
    assert!(settings["max_duration_s"].is_number());
    assert_eq!(json["scheduled"], 45);
    assert_eq!(json["counts"]["success"], 45);
    for field in [
        "throttled",
        "server_error",
        "other_status",
        "timeout",
        "connection_error",
        "dropped",
    ] {
        assert_eq!(json["counts"][field], 0, "{field}");
        assert_eq!(json["per_outcome"][field]["count"], 0, "{field}");
    }
    let summary_fields = ["count", "min", "mean", "p50", "p90", "p99", "p999", "max"];
    for field in summary_fields {
        for section in ["latency_us", "service_time_us", "send_lag_us"] {
            assert!(json[section][field].is_number(), "{section}.{field}");
        }
        assert!(json["per_outcome"]["success"]["latency_us"][field].is_number());
    }
    for field in [
        "offered_per_s",
        "throughput_per_s",
        "items_per_s",
        "elapsed_s",
        "duration_s",
    ] {
        assert!(json[field].as_f64().unwrap() > 0.0, "{field}");
    }
    let items = json["items_per_s"].as_f64().unwrap();
    let requests = json["throughput_per_s"].as_f64().unwrap();
    assert!(
        (items / requests - 3.0).abs() < 1e-9,
        "{items} vs {requests}"
    );
    assert_eq!(json["server_timing"]["batch_rows"]["p50"], 1);
    let phases = json["per_phase"].as_array().unwrap();
    assert_eq!(phases.len(), 2);
    assert_eq!(phases[1]["name"], "two");
    assert_eq!(phases[1]["index"], 1);
    assert_eq!(phases[1]["load"]["kind"], "rate");
    assert_eq!(phases[1]["load"]["rate"], 100.0);
    assert_eq!(phases[1]["due"], 30);
    assert!(phases[1]["latency_us"]["p99"].is_number());
    assert!(phases[1]["start_s"].as_f64().unwrap() > 0.29);
    for section in ["per_model", "per_backend"] {
        let group = if section == "per_model" { "m" } else { "fake" };
        assert_eq!(json[section][group]["due"], 45, "{section}");
        assert_eq!(json[section][group]["counts"]["success"], 45, "{section}");
        assert!(json[section][group]["latency_us"]["p50"].is_number());
    }
    assert_eq!(json["mix"][0]["due"], 45);
    assert_eq!(json["mix"][0]["expected_share"], 1.0);
    let series = json["time_series"].as_array().unwrap();
    assert!(!series.is_empty());
    let first = &series[0];
    assert_eq!(first["second"], 0);
    assert_eq!(first["phase"], 0);
    assert_eq!(first["due"], 45);
    assert_eq!(first["sent"], 45);
    assert!(first["ended"]["success"].as_u64().unwrap() > 0);
    assert!(first["latency_p50_us"].is_number());
    assert!(first["latency_p99_us"].is_number());
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

/// Runs the command with `args`, off the async runtime.
async fn command(args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-loadgen"))
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_runs_an_artillery_script_and_writes_report_and_plot() {
    let (address, _) = serve(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("load.yml");
    std::fs::write(
        &script,
        r#"
config:
  target: "http://127.0.0.1:8000"
  phases:
    - duration: 1
      arrivalRate: 20
      name: warm up
    - duration: 1
      arrivalRate: 10
      rampTo: 30
      maxVusers: 50
scenarios:
  - flow:
      - post:
          url: "/v2/models/m/infer"
"#,
    )
    .unwrap();
    let report_path = dir.path().join("report.json");
    let plot_path = dir.path().join("plot.svg");
    let mut list = args(&["--model", "m", "--binary", "--quiet", "--phases"]);
    list.push(script.display().to_string());
    list.extend([
        "--url".to_owned(),
        format!("http://{address}"),
        "--report".to_owned(),
        report_path.display().to_string(),
        "--plot".to_owned(),
        plot_path.display().to_string(),
    ]);
    let output = command(list).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    // Non-terminal stderr: no progress line.
    assert!(
        output.stderr.is_empty(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("Summary report: open loop, constant arrivals, 2 phases"),
        "{stdout}"
    );
    assert!(stdout.contains("requests.due: "), "{stdout}");
    assert!(stdout.contains("warm up"), "{stdout}");
    let report = read_json(&report_path);
    // 20 + (10 + 30) / 2 × 1 s.
    assert_eq!(report["scheduled"], 40);
    assert_eq!(report["counts"]["success"], 40);
    assert_eq!(report["per_phase"][0]["name"], "warm up");
    assert_eq!(report["per_phase"][0]["due"], 20);
    assert_eq!(report["per_phase"][1]["due"], 20);
    assert_eq!(report["per_phase"][1]["max_in_flight"], 50);
    assert_eq!(report["per_phase"][1]["load"]["kind"], "ramp");
    assert_eq!(report["settings"]["binary"], true);
    let svg = std::fs::read_to_string(&plot_path).unwrap();
    assert!(svg.starts_with("<svg"), "{}", &svg[..svg.len().min(200)]);
    assert!(svg.contains("2xx latency per second"));
    assert!(svg.contains("warm up"), "phase names are marked");
    assert!(
        svg.contains("polyline") || svg.contains("<path"),
        "no lines drawn"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_command_takes_a_toml_run_file_with_a_mix() {
    let (address, behaviour) = serve(Behaviour::default()).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("run.toml");
    std::fs::write(
        &file,
        r#"
[[phase]]
name = "only"
duration = "1s"
arrival_count = 40

[[mix]]
model = "m"
weight = 1

[[mix]]
model = "n"
batch = 2
weight = 1
"#,
    )
    .unwrap();
    let report_path = dir.path().join("report.json");
    let samples_path = dir.path().join("samples.csv");
    let mut list = args(&["--poisson", "--seed", "5", "--phases"]);
    list.push(file.display().to_string());
    list.extend([
        "--url".to_owned(),
        format!("http://{address}"),
        "--json-report".to_owned(),
        report_path.display().to_string(),
        "--samples-csv".to_owned(),
        samples_path.display().to_string(),
    ]);
    let output = command(list).await;
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report = read_json(&report_path);
    let due = report["scheduled"].as_u64().unwrap();
    // Poisson with 40 expected: within five standard deviations.
    assert!((10..=72).contains(&due), "{due}");
    assert_eq!(report["settings"]["process"]["kind"], "poisson");
    assert_eq!(report["settings"]["process"]["seed"], 5);
    let m = report["per_model"]["m"]["due"].as_u64().unwrap();
    let n = report["per_model"]["n"]["due"].as_u64().unwrap();
    assert_eq!(m + n, due);
    let seen = behaviour.by_model_rows.lock().unwrap().clone();
    assert_eq!(seen.get(&("n".to_owned(), 2)).copied().unwrap_or(0), n);
    let samples = std::fs::read_to_string(&samples_path).unwrap();
    assert_eq!(samples.lines().count() as u64, due + 1);

    // --model beside a file with a [[mix]] is refused.
    let mut list = args(&["--model", "m", "--phases"]);
    list.push(file.display().to_string());
    let output = command(list).await;
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("[[mix]]"), "{stderr}");
}

#[test]
fn the_command_refuses_a_remote_target_and_bad_files() {
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

    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("bad.yml");
    std::fs::write(
        &script,
        "config:\n  phases:\n    - duration: 5\n      arivalRate: 5\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard-loadgen"))
        .args(["--model", "m", "--phases"])
        .arg(&script)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("bad.yml") && stderr.contains("unknown key `arivalRate`"),
        "{stderr}"
    );
}
