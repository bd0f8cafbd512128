//! Fault injection: every request gets exactly one answer (a result or a
//! clear error) while a backend hangs, its service stops and comes back,
//! the backends refuse most of an overload, or the gateway is told to stop.
//! Each test is bounded in requests and time.
//!
//! Needs `make setup` (models, ONNX Runtime, the Lambda emulator) and the
//! binaries beside the test, which `make test` builds (`cargo build
//! --profile suite --workspace --bins`).

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{BinaryGateway, Reply, Running, fp32_request, get, send, workspace};

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use switchyard_backend_lambda::emulator::{ChildProcess, LocalEmulator, function_binary};
use switchyard_protocol::{InferRequest, encode_request};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn emulator() -> LocalEmulator {
    LocalEmulator::start(&workspace()).unwrap_or_else(|e| panic!("{e}"))
}

fn instance(emulator: &LocalEmulator) -> ChildProcess {
    let exe = std::env::current_exe().expect("test path");
    let binary = function_binary(&exe).unwrap_or_else(|e| panic!("{e}"));
    emulator
        .instance(&binary, "digits", 512)
        .unwrap_or_else(|e| panic!("{e}"))
}

fn signal(process: &ChildProcess, signal: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{signal}"), &process.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal}");
}

fn digits() -> InferRequest {
    fp32_request(vec![1, 64], |i| (i % 17) as f32)
}

fn json_body(request: &InferRequest) -> Vec<u8> {
    encode_request(request, false).expect("encodes").bytes
}

async fn infer(gateway: &Running, headers: &[(&str, String)]) -> Reply {
    let mut headers = headers.to_vec();
    headers.push(("content-type", "application/json".into()));
    send(
        "POST",
        &gateway.url("/v2/models/digits/infer"),
        &headers,
        json_body(&digits()),
    )
    .await
}

/// Local and Lambda (through the real emulator) both serving digits.
fn local_and_lambda(endpoint: &str, placement: &str) -> String {
    format!(
        r#"
[placement]
{placement}
[backends.local]
models = ["digits"]
[backends.lambda]
endpoint = "{endpoint}"
models = ["digits"]
retry_down_after_ms = 500
"#
    )
}

async fn ejection(gateway: &Running, backend: &str) -> serde_json::Value {
    get(&gateway.url("/v2/switchyard/stats")).await.json()["ejection"][backend].clone()
}

/// The emulator and one function instance serving digits.
struct Lambda {
    emulator: LocalEmulator,
    function: ChildProcess,
}

impl Lambda {
    fn start() -> Self {
        let emulator = emulator();
        let function = instance(&emulator);
        Self { emulator, function }
    }

    fn endpoint(&self) -> String {
        self.emulator.endpoint()
    }

    /// Whether the emulator and the function run, and the end of their
    /// output.
    fn report(&mut self) -> String {
        format!("{}\n{}", self.emulator.report(), self.function.report())
    }
}

/// Sends requests through `gateway`, whose first choice is Lambda, until
/// one is served there (within 20 s). The first is not always: where the
/// gateway finds Lambda unready when it places it (a start-up probe that
/// timed out on a loaded machine) or Lambda refuses it, it fails over to
/// the next backend, as it should (one CI run saw this, with six of these
/// tests starting emulators, functions and gateways at once). Each reply
/// served elsewhere is printed with its time and placement reason, and a
/// test that fails here says what the gateway's readiness said of Lambda
/// and whether the emulator and the function still ran, with the end of
/// their output.
#[allow(clippy::print_stderr)] // the test's output, shown when it fails
async fn warm_lambda(gateway: &Running, lambda: &mut Lambda) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let warm = infer(gateway, &[]).await;
        let backend = warm.header("switchyard-backend");
        if warm.status == 200 && backend == Some("lambda") {
            return;
        }
        let placement = warm.header("switchyard-placement");
        eprintln!(
            "warm-up request answered {} by {backend:?} after {:?}, placed by {placement:?}",
            warm.status, warm.took
        );
        // With local behind it, a request Lambda cannot serve is served
        // there: any other answer is a failure.
        if warm.status != 200 || Instant::now() >= deadline {
            let ready = get(&gateway.url("/v2/health/ready")).await.text();
            panic!(
                "Lambda served no warm-up request (the last reply: {} {}); readiness: {ready}\n{}",
                warm.status,
                warm.text(),
                lambda.report()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Warms Lambda through `gateway` (its first choice), stops the function,
/// and sends one request that hangs on it until its 1.5 s deadline, which
/// ejects Lambda. Returns that request's reply.
async fn hang_lambda(gateway: &Running, lambda: &mut Lambda) -> Reply {
    warm_lambda(gateway, lambda).await;
    signal(&lambda.function, "STOP");
    let hung = infer(gateway, &[("switchyard-timeout-ms", "1500".into())]).await;
    if hung.status != 504 || hung.header("switchyard-backend") != Some("lambda") {
        panic!(
            "the request to the stopped function was answered {} by {:?} after {:?}: {}\n{}",
            hung.status,
            hung.header("switchyard-backend"),
            hung.took,
            hung.text(),
            lambda.report()
        );
    }
    assert_eq!(ejection(gateway, "lambda").await["ejected"], true);
    hung
}

/// The process group of the process `pid` (the fifth field of
/// `/proc/PID/stat`, after the parenthesised command name).
fn process_group(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("/proc/PID/stat");
    let (_, after_name) = stat
        .rsplit_once(')')
        .expect("a command name in parentheses");
    after_name
        .split_whitespace()
        .nth(2)
        .and_then(|field| field.parse().ok())
        .unwrap_or_else(|| panic!("no process group in {stat}"))
}

/// The function these tests freeze leads a process group of its own.
/// When it ran in the test's group, a stopped function made that group
/// subject to the kernel's orphaned-group rule: the shell that ran the
/// tests in the background exited, the whole group got SIGHUP and
/// SIGCONT, and the frozen function woke and answered the request meant
/// to hang on it. Orphaning the group on purpose during
/// `a_model_whose_only_backend_is_ejected...` failed it in 10 of 10 runs
/// with the function in the test's group, and in 0 of 10 in its own.
#[test]
fn a_function_instance_leads_a_process_group_of_its_own() {
    let lambda = Lambda::start();
    let pid = lambda.function.id();
    assert_eq!(process_group(pid), pid);
    assert_ne!(process_group(pid), process_group(std::process::id()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_backend_gets_504_then_is_ejected_avoided_and_probed_back() {
    let mut lambda = Lambda::start();
    let gateway = Running::start(&local_and_lambda(
        &lambda.endpoint(),
        "order = [\"lambda\", \"local\"]",
    ))
    .await;
    // The function stops answering: its invocation hangs until the
    // request's deadline.
    let hung = hang_lambda(&gateway, &mut lambda).await;
    assert!(hung.took >= Duration::from_millis(1400), "{:?}", hung.took);
    let state = ejection(&gateway, "lambda").await;
    assert!(
        state["last_reason"].as_str().unwrap().contains("hung for"),
        "{state}"
    );

    // The next placements avoid it, at once.
    for _ in 0..5 {
        let reply = infer(&gateway, &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        assert_eq!(reply.header("switchyard-backend"), Some("local"));
        assert!(reply.took < Duration::from_secs(1), "{:?}", reply.took);
    }

    // It recovers: after the ejection a probe finds it answering again.
    signal(&lambda.function, "CONT");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = infer(&gateway, &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        if reply.header("switchyard-backend") == Some("lambda") {
            break;
        }
        if Instant::now() >= deadline {
            let state = ejection(&gateway, "lambda").await;
            panic!(
                "lambda never came back: the last request was placed by {:?}; ejection: \
                 {state}\n{}",
                reply.header("switchyard-placement"),
                lambda.report()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let state = ejection(&gateway, "lambda").await;
    assert_eq!(state["ejected"], false, "{state}");
    assert!(state["total_ejections"].as_u64().unwrap() >= 1, "{state}");
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_model_whose_only_backend_is_ejected_is_placed_on_it_anyway_unless_configured_not_to() {
    let mut lambda = Lambda::start();
    for panic in [true, false] {
        let gateway = Running::start(&format!(
            r#"
[placement]
order = ["lambda"]
[placement.outlier_detection]
panic_when_all_ejected = {panic}
base_ejection_ms = 60000
max_ejection_ms = 60000
[backends.lambda]
endpoint = "{}"
models = ["digits"]
"#,
            lambda.endpoint()
        ))
        .await;
        hang_lambda(&gateway, &mut lambda).await;
        let next = infer(&gateway, &[("switchyard-timeout-ms", "800".into())]).await;
        if panic {
            // Placed on the ejected backend, the only one: it waits out
            // its deadline there rather than being refused.
            assert_eq!(next.status, 504, "{}", next.text());
            assert_eq!(next.header("switchyard-backend"), Some("lambda"));
            assert!(next.took >= Duration::from_millis(700), "{:?}", next.took);
        } else {
            assert_eq!(next.status, 503, "{}", next.text());
            assert!(next.text().contains("ejected"), "{}", next.text());
            assert!(next.took < Duration::from_millis(500), "{:?}", next.took);
        }
        signal(&lambda.function, "CONT");
        if panic {
            // The ejection has most of its minute left, and the function
            // answers again: requests get answers from it all the same.
            let reply = infer(&gateway, &[]).await;
            assert_eq!(reply.status, 200, "{}", reply.text());
            assert_eq!(ejection(&gateway, "lambda").await["ejected"], true);
        }
        gateway.stop().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_probe_request_its_client_abandons_leaves_the_backend_free_to_come_back() {
    let mut lambda = Lambda::start();
    let log = std::env::temp_dir().join(format!(
        "switchyard-faults-decisions-{}.jsonl",
        std::process::id()
    ));
    let _ = std::fs::remove_file(&log);
    let gateway = Running::start(&local_and_lambda(
        &lambda.endpoint(),
        &format!(
            "order = [\"lambda\", \"local\"]\ndecision_log = {:?}\ndecision_log_sample = 1.0",
            log.display().to_string()
        ),
    ))
    .await;
    hang_lambda(&gateway, &mut lambda).await;

    // The ejection runs out; the next request is the probe, and it hangs
    // on the stopped function until its client gives up and hangs up.
    let deadline = Instant::now() + Duration::from_secs(20);
    while ejection(&gateway, "lambda").await["ejected"] != false {
        assert!(Instant::now() < deadline, "the ejection never ran out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let abandoned = tokio::time::timeout(Duration::from_millis(500), infer(&gateway, &[])).await;
    assert!(
        abandoned.is_err(),
        "the probe answered: {:?}",
        abandoned.map(|r| r.status)
    );

    // The gateway counts the request its client abandoned, under the
    // backend it was on, and the probe slot is free again: once the
    // function answers, a new probe brings it back.
    let lambda_series = |stats: &serde_json::Value| {
        stats["series"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["backend"] == "lambda" && s["model"] == "digits")
            .cloned()
            .unwrap_or_default()
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let stats = get(&gateway.url("/v2/switchyard/stats")).await.json();
        let series = lambda_series(&stats);
        if series["outcomes"]["cancelled"] == 1 {
            // Not a failure of the backend: the client gave up first.
            assert_eq!(series["failures"], 1, "the 504 only: {series}");
            break;
        }
        assert!(Instant::now() < deadline, "no cancelled request in {stats}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    signal(&lambda.function, "CONT");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = infer(&gateway, &[]).await;
        assert_eq!(reply.status, 200, "{}", reply.text());
        if reply.header("switchyard-backend") == Some("lambda") {
            break;
        }
        let state = ejection(&gateway, "lambda").await;
        assert!(Instant::now() < deadline, "lambda never came back: {state}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Every request is logged (the sample is 1): the stats report counts
    // as many records written as requests, none dropped or failed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let written = loop {
        let stats = get(&gateway.url("/v2/switchyard/stats")).await.json();
        let requests: u64 = stats["backends"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|b| b["requests"].as_u64())
            .sum();
        let report = &stats["decision_log"];
        assert_eq!(report["path"], log.display().to_string(), "{report}");
        assert_eq!(report["records"]["dropped"], 0, "{report}");
        assert_eq!(report["records"]["failed"], 0, "{report}");
        if report["records"]["written"] == requests {
            break requests;
        }
        assert!(
            Instant::now() < deadline,
            "{requests} requests, decision log: {report}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    // And so does the metric (process-wide: at least this gateway's).
    let metrics = get(&gateway.url("/metrics")).await.text();
    let counted = metrics
        .lines()
        .find_map(|l| l.strip_prefix("switchyard_decision_log_records_total{outcome=\"written\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no written records counted in {metrics}"));
    assert!(counted >= written as f64, "{counted} < {written}");
    gateway.stop().await;
    // The decision log has the abandoned request too, with its placement.
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let records: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(records.len() as u64, written, "{text}");
    let record = records
        .iter()
        .find(|r| r["outcome"] == "cancelled")
        .unwrap_or_else(|| panic!("no cancelled record in {text}"));
    assert_eq!(record["backend"], "lambda", "{record}");
    assert_eq!(record["model"], "digits", "{record}");
    assert!(record["latency_ms"].as_f64() >= Some(400.0), "{record}");
    // An unanswered request has no backend timing; each answered one has
    // its backend's queue and compute time, within its latency, and its
    // batch's rows.
    assert!(
        record["queue_ms"].is_null() && record["batch_rows"].is_null(),
        "{record}"
    );
    let answered: Vec<&serde_json::Value> = records
        .iter()
        .filter(|r| r["outcome"] == "success")
        .collect();
    assert!(!answered.is_empty(), "{text}");
    for record in answered {
        let rows = record["batch_rows"].as_u64().unwrap_or(0);
        let compute = record["compute_ms"].as_f64().unwrap_or(-1.0);
        let queue = record["queue_ms"].as_f64().unwrap_or(-1.0);
        let latency = record["latency_ms"].as_f64().unwrap_or(0.0);
        assert!(rows >= 1, "{record}");
        assert!(compute > 0.0 && queue >= 0.0, "{record}");
        assert!(compute + queue <= latency, "{record}");
    }
    // Each record has the host's CPU reading placement saw: a share, once
    // /proc/stat has been read twice.
    assert!(
        records.iter().all(|r| r["host_cpu_busy"].is_null()
            || r["host_cpu_busy"]
                .as_f64()
                .is_some_and(|b| (0.0..=1.0).contains(&b))),
        "{text}"
    );
    assert!(
        records.iter().any(|r| r["host_cpu_busy"].is_f64()),
        "{text}"
    );
    let _ = std::fs::remove_file(&log);
}

/// Sends `total` digits requests from `workers` concurrent clients, counting
/// them in `progress`, and returns every status with the backend that
/// answered.
async fn drive(
    gateway: &Running,
    workers: usize,
    total: u64,
    progress: Arc<AtomicU64>,
) -> Vec<(u16, String)> {
    let url = gateway.url("/v2/models/digits/infer");
    let body = json_body(&digits());
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (url, body, progress) = (url.clone(), body.clone(), Arc::clone(&progress));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                while progress.fetch_add(1, Ordering::SeqCst) < total {
                    let reply = send(
                        "POST",
                        &url,
                        &[("content-type", "application/json".into())],
                        body.clone(),
                    )
                    .await;
                    let backend = reply.header("switchyard-backend").unwrap_or("-").to_owned();
                    seen.push((reply.status, backend));
                }
                seen
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        all.extend(task.await.expect("client task"));
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lambda_service_stopping_and_restarting_under_load_loses_no_request() {
    let mut emulator = emulator();
    let mut function = Some(instance(&emulator));
    let gateway = Running::start(&local_and_lambda(
        &emulator.endpoint(),
        "[placement.default]\npolicy = \"round_robin\"",
    ))
    .await;
    let total = 600;
    let progress = Arc::new(AtomicU64::new(0));
    let load = drive(&gateway, 4, total, Arc::clone(&progress));
    let faults = async {
        let wait_for = |n: u64| {
            let progress = Arc::clone(&progress);
            async move {
                while progress.load(Ordering::SeqCst) < n {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                }
            }
        };
        wait_for(150).await;
        // The service dies with requests in flight.
        emulator.stop();
        function.take();
        wait_for(300).await;
        emulator.restart().unwrap();
        function = Some(instance(&emulator));
    };
    let (replies, ()) = tokio::time::timeout(Duration::from_secs(120), async {
        tokio::join!(load, faults)
    })
    .await
    .expect("the load is bounded");
    assert_eq!(replies.len() as u64, total, "every request was answered");
    let mut by_status: BTreeMap<u16, u64> = BTreeMap::new();
    for (status, _) in &replies {
        *by_status.entry(*status).or_default() += 1;
    }
    assert_eq!(
        by_status.get(&200).copied(),
        Some(total),
        "statuses {by_status:?}"
    );
    assert!(
        replies.iter().any(|(_, backend)| backend == "lambda"),
        "both backends took part"
    );
    // Lambda takes traffic again once back.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let reply = infer(&gateway, &[]).await;
        assert_eq!(reply.status, 200);
        if reply.header("switchyard-backend") == Some("lambda") {
            break;
        }
        assert!(Instant::now() < deadline, "lambda never served again");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    drop(function);
    gateway.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overload_of_many_times_capacity_is_shed_at_the_door() {
    // One xception worker with a queue of one: a handful of clients
    // sending back to back overload it many times over.
    let gateway = Running::start(
        r#"
[server]
max_concurrent_requests = 256
[backends.local]
models = ["xception"]
workers = 1
intra_op_threads = 1
queue_capacity = 1
"#,
    )
    .await;
    let request = fp32_request(vec![1, 3, 299, 299], |i| (i % 255) as f32 / 255.0);
    let body = encode_request(&request, true).expect("encodes");
    let length = body.json_length.expect("binary").to_string();
    let url = gateway.url("/v2/models/xception/infer");
    let until = Instant::now() + Duration::from_secs(4);
    let tasks: Vec<_> = (0..16)
        .map(|_| {
            let (url, bytes, length) = (url.clone(), body.bytes.clone(), length.clone());
            tokio::spawn(async move {
                let mut seen: Vec<(u16, String)> = Vec::new();
                while Instant::now() < until && seen.len() < 2_000 {
                    let reply = send(
                        "POST",
                        &url,
                        &[("inference-header-content-length", length.clone())],
                        bytes.clone(),
                    )
                    .await;
                    let error = if reply.status == 200 {
                        String::new()
                    } else {
                        reply.error()
                    };
                    seen.push((reply.status, error));
                }
                seen
            })
        })
        .collect();
    let mut replies = Vec::new();
    for task in tasks {
        replies.extend(task.await.expect("client"));
    }
    let ok = replies.iter().filter(|(s, _)| *s == 200).count();
    let refused = replies
        .iter()
        .filter(|(s, e)| *s == 429 && e.contains("queue"))
        .count();
    let shed = replies
        .iter()
        .filter(|(s, e)| *s == 429 && e.starts_with("shed:"))
        .count();
    let other: Vec<_> = replies
        .iter()
        .filter(|(s, _)| *s != 200 && *s != 429)
        .collect();
    assert!(other.is_empty(), "only results and 429s: {other:?}");
    assert!(ok > 0, "the backend keeps serving");
    assert!(shed > 0, "ok {ok}, refused {refused}, shed {shed}");
    // Once shedding is on, most of the excess never reaches the backend.
    assert!(
        shed > refused,
        "ok {ok}, refused by the queue {refused}, shed {shed}"
    );
    let stats = get(&gateway.url("/v2/switchyard/stats")).await.json();
    let p = stats["load_shedding"]["xception"]["shed_probability"]
        .as_f64()
        .unwrap();
    assert!(p > 0.5, "{}", stats["load_shedding"]);
    let metrics = get(&gateway.url("/metrics")).await.text();
    assert!(
        metrics.contains("switchyard_shed_requests_total"),
        "{metrics}"
    );
    gateway.stop().await;
}

/// How one request on its own connection ended.
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord, Clone, Copy)]
enum Exchange {
    Status(u16),
    /// The connection was refused: the gateway no longer accepts.
    Refused,
    /// Accepted, then closed or reset without a full answer: a lost request.
    Lost,
}

async fn one_exchange(address: std::net::SocketAddr, body: &[u8]) -> Exchange {
    let Ok(mut stream) = tokio::net::TcpStream::connect(address).await else {
        return Exchange::Refused;
    };
    let head = format!(
        "POST /v2/models/digits/infer HTTP/1.1\r\nhost: gateway\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    if stream.write_all(head.as_bytes()).await.is_err() || stream.write_all(body).await.is_err() {
        return Exchange::Lost;
    }
    let mut response = Vec::new();
    if tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut response))
        .await
        .map_or(true, |r| r.is_err())
    {
        return Exchange::Lost;
    }
    let text = String::from_utf8_lossy(&response);
    let complete = text.contains("\r\n\r\n");
    match text
        .strip_prefix("HTTP/1.1 ")
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
    {
        Some(code) if complete => Exchange::Status(code),
        _ => Exchange::Lost,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_under_load_answers_every_accepted_request_and_refuses_new_ones() {
    let mut gateway = BinaryGateway::spawn("[backends.local]\nmodels = [\"digits\"]\n");
    let port = gateway.port;
    let address: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let ready_by = Instant::now() + Duration::from_secs(30);
    while one_exchange(address, &json_body(&digits())).await != Exchange::Status(200) {
        assert!(Instant::now() < ready_by, "the gateway never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let body = Arc::new(json_body(&digits()));
    let sent = Arc::new(AtomicU64::new(0));
    let clients: Vec<_> = (0..8)
        .map(|_| {
            let (body, sent) = (Arc::clone(&body), Arc::clone(&sent));
            tokio::spawn(async move {
                let mut seen = Vec::new();
                // Until the gateway refuses connections, at most 2,000 each.
                for _ in 0..2_000 {
                    sent.fetch_add(1, Ordering::SeqCst);
                    let outcome = one_exchange(address, &body).await;
                    seen.push(outcome);
                    if outcome == Exchange::Refused {
                        break;
                    }
                }
                seen
            })
        })
        .collect();
    while sent.load(Ordering::SeqCst) < 200 {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let kill = std::process::Command::new("kill")
        .args(["-TERM", &gateway.child.id().to_string()])
        .status()
        .expect("kill");
    assert!(kill.success());
    let mut outcomes: BTreeMap<Exchange, u64> = BTreeMap::new();
    for client in clients {
        for outcome in client.await.expect("client") {
            *outcomes.entry(outcome).or_default() += 1;
        }
    }
    let exit = tokio::task::spawn_blocking(move || gateway.child.wait())
        .await
        .expect("join")
        .expect("wait");
    assert!(exit.success(), "exit {exit:?}");
    assert_eq!(outcomes.get(&Exchange::Lost), None, "{outcomes:?}");
    assert!(
        outcomes.get(&Exchange::Status(200)).copied().unwrap_or(0) >= 200,
        "{outcomes:?}"
    );
    // Every client ended on a refused connection, nothing else but 200s.
    assert_eq!(
        outcomes.get(&Exchange::Refused).copied(),
        Some(8),
        "{outcomes:?}"
    );
    assert_eq!(outcomes.len(), 2, "{outcomes:?}");
}
