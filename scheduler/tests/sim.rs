//! Tests of the simulator (`switchyard sim`): reproducibility, failover and
//! the retry budget in virtual time, the policies' decisions in the
//! simulator against the gateway's, the command itself, and agreement with
//! a short live run of the real gateway.

// Test helpers panic on purpose: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::workspace;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use switchyard_loadgen::{Phase, PhaseLoad, Phases};
use switchyard_scheduler::measure::RequestRate;
use switchyard_scheduler::placement::PolicySource;
use switchyard_scheduler::policy::{BackendView, Decision, Policy, RequestFeatures};
use switchyard_scheduler::sim::{PolicyRun, Profile, SimReport, Workload, simulate, simulate_with};

fn default_profile() -> Profile {
    Profile::default_profile().expect("the shipped profile is valid")
}

fn workload(phases: Phases, poisson: bool, seed: u64, model: usize) -> Workload {
    Workload {
        phases,
        poisson,
        max_requests: None,
        models: vec![(model, 1.0)],
        seed,
        bucket: Duration::from_secs(10),
    }
}

fn paper(profile: &Profile, poisson: bool, seed: u64) -> Workload {
    let xception = profile.model_index("xception").expect("xception");
    workload(Phases::paper(), poisson, seed, xception)
}

fn policy_file(name: &str, profile: &Profile) -> PolicyRun {
    PolicyRun::from_file(&workspace().join("config").join(name), profile).expect("policy file")
}

#[test]
fn a_run_is_reproducible_from_its_seed() {
    let profile = default_profile();
    let policy = policy_file("straightline.toml", &profile);
    let run = |seed| simulate(&profile, &policy.set, "s", &paper(&profile, true, seed));
    let first = run(7);
    assert_eq!(first, run(7), "the same seed gives the same report");
    let other = run(8);
    assert_ne!(
        first, other,
        "another seed gives other arrivals and latencies"
    );
    assert!(
        first.requests > 3000 && first.requests < 4000,
        "{}",
        first.requests
    );
    // Constant arrivals: exactly the schedule's requests.
    let constant = simulate(&profile, &policy.set, "s", &paper(&profile, false, 1));
    assert_eq!(constant.requests, 3505);
    assert_eq!(constant.succeeded + constant.failed, constant.requests);
}

#[test]
fn local_only_saturates_on_the_paper_ramp_and_lambda_only_does_not() {
    let profile = default_profile();
    let local = PolicyRun::from_spec("static:local", &profile).expect("spec");
    let lambda = PolicyRun::from_spec("static:lambda", &profile).expect("spec");
    // Each baseline deploys only its own tier.
    let local = simulate(
        &local.profile(&profile),
        &local.set,
        &local.label,
        &paper(&profile, false, 1),
    );
    assert_eq!(local.backends.len(), 1);
    let lambda = simulate(
        &lambda.profile(&profile),
        &lambda.set,
        &lambda.label,
        &paper(&profile, false, 1),
    );
    assert_eq!(local.label, "local-only");
    // One worker at ~59 ms serves ~17 requests/s; the ramp reaches 38.9/s.
    assert!(local.failure_rate > 0.2, "{:?}", local.failures);
    assert!(local.failures.keys().all(|r| r.as_str() == "overloaded"));
    assert_eq!(local.backends[0].served, local.succeeded);
    assert_eq!(lambda.failed, 0, "{:?}", lambda.failures);
    assert!(lambda.cost_dollars > 0.0 && local.cost_dollars == 0.0);
    // The early, quiet part of the ramp is served locally at about 60 ms.
    assert!(
        (55.0..70.0).contains(&local.buckets[0].p50_ms),
        "{:?}",
        local.buckets[0]
    );
}

/// Prefers the backend called `local` even when it is full, so that it
/// refuses and failover has to move the request.
#[derive(Debug)]
struct LocalFirst;

impl Policy for LocalFirst {
    fn name(&self) -> &'static str {
        "local_first"
    }

    fn place(&self, request: &RequestFeatures<'_>, backends: &[BackendView]) -> Option<Decision> {
        let index = backends
            .iter()
            .position(|b| b.snapshot.name == "local" && b.can_take(request))
            .or_else(|| backends.iter().position(|b| b.can_take(request)))?;
        Some(Decision {
            backend: index,
            reason: "local first".into(),
        })
    }
}

/// Local with one worker and one queue slot, and Lambda; `budget` sets the
/// retry budget (ratio, floor per second).
fn small_profile(budget: (f64, f64)) -> Profile {
    let text = format!(
        r#"
[gateway]
retry_budget_ratio = {}
retry_floor_per_second = {}

[models.m]
payload_bytes = 100

[backends.local]
queue_capacity = 1
[backends.local.models.m]
latency = [{{ batch = 1, p50_ms = 10.0, p99_ms = 10.0 }}]

[backends.lambda]
cold_start = {{ p50_ms = 50.0, p99_ms = 50.0 }}
reserved_concurrency = 100
[backends.lambda.models.m]
latency = [{{ batch = 1, p50_ms = 20.0, p99_ms = 20.0 }}]
"#,
        budget.0, budget.1
    );
    Profile::parse(&text, "test").expect("valid")
}

/// Ten requests within a millisecond.
fn burst() -> Phases {
    Phases::new(vec![Phase {
        name: "burst".into(),
        duration: Duration::from_millis(1),
        load: PhaseLoad::Count { count: 10 },
        max_in_flight: None,
    }])
    .expect("phases")
}

#[test]
fn failover_moves_refused_requests_within_the_retry_budget() {
    let profile = small_profile((0.2, 10.0));
    let run = simulate_with(
        &profile,
        &|_| Arc::new(LocalFirst),
        "t",
        "t",
        &workload(burst(), false, 1, 0),
    );
    // Local takes one and queues one; eight are refused and fail over.
    assert_eq!(run.failed, 0, "{:?}", run.failures);
    assert_eq!(run.failovers, 8);
    assert_eq!(run.backends[0].served, 2);
    assert_eq!(run.backends[0].refusals, 8);
    assert_eq!(run.backends[1].served, 8);
    assert_eq!(
        run.backends[1].activity["cold_starts"], 8,
        "each concurrent invocation starts an instance"
    );
    // Lambda's answers took the cold start plus the warm latency, plus
    // the gateway's overhead (about 0.55 ms).
    assert!(
        (70.0..72.0).contains(&run.latency_ms.max),
        "{:?}",
        run.latency_ms
    );

    // No budget (no ratio, no floor): the refusals become client errors.
    let strict = small_profile((0.0, 0.0));
    let run = simulate_with(
        &strict,
        &|_| Arc::new(LocalFirst),
        "t",
        "t",
        &workload(burst(), false, 1, 0),
    );
    assert_eq!(run.failovers, 0);
    assert_eq!(run.failed, 8);
    assert_eq!(run.retry_budget_exhausted, 8);
    assert_eq!(run.failures.values().sum::<u64>(), 8);

    // A budget of three retries: three move, five fail.
    let three = small_profile((0.0, 3.0));
    let run = simulate_with(
        &three,
        &|_| Arc::new(LocalFirst),
        "t",
        "t",
        &workload(burst(), false, 1, 0),
    );
    assert_eq!((run.failovers, run.failed), (3, 5));
}

/// A request and the snapshots a policy was shown, and its decision.
type Seen = (
    String,
    u64,
    RequestRate,
    u64,
    Vec<BackendView>,
    Option<Decision>,
);

/// Wraps a policy and keeps every request and snapshot it was shown, and
/// its decision.
#[derive(Debug)]
struct Recording {
    inner: Arc<dyn Policy>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Policy for Recording {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn place(&self, request: &RequestFeatures<'_>, backends: &[BackendView]) -> Option<Decision> {
        let decision = self.inner.place(request, backends);
        self.seen.lock().unwrap().push((
            request.model.to_owned(),
            request.payload_bytes,
            request.rate,
            request.random,
            backends.to_vec(),
            decision.clone(),
        ));
        decision
    }
}

#[test]
fn policies_decide_in_the_simulator_as_the_gateway_built_from_the_same_file_decides() {
    let profile = default_profile();
    for file in ["straightline.toml", "cost-aware.toml"] {
        let path = workspace().join("config").join(file);
        let sim_policies = PolicyRun::from_file(&path, &profile)
            .expect("policy file")
            .set;
        let seen = Arc::new(Mutex::new(Vec::new()));
        let recorder = Arc::clone(&seen);
        let report = simulate_with(
            &profile,
            &move |model| {
                Arc::new(Recording {
                    inner: Arc::clone(sim_policies.for_model(model)),
                    seen: Arc::clone(&recorder),
                }) as Arc<dyn Policy>
            },
            file,
            file,
            &paper(&profile, true, 3),
        );
        // The gateway builds its policies from the file through its
        // PolicySource; given the same request and snapshots, they decide
        // the same, for every decision of the run.
        let live = PolicySource::new(
            Some(path.clone()),
            Default::default(),
            profile.backend_names(),
            profile.model_names(),
        )
        .build()
        .expect("the gateway accepts the file");
        let seen = seen.lock().unwrap();
        assert!(
            seen.len() as u64 >= report.requests,
            "{file}: every request was placed"
        );
        let mut backends_chosen = std::collections::BTreeSet::new();
        for (model, payload_bytes, rate, random, views, decision) in seen.iter() {
            let request = RequestFeatures {
                model,
                payload_bytes: *payload_bytes,
                rate: *rate,
                random: *random,
                host_cpu_busy: None,
                refused_on_host: false,
            };
            assert_eq!(
                &live.for_model(model).place(&request, views),
                decision,
                "{file}"
            );
            if let Some(d) = decision {
                backends_chosen.insert(views[d.backend].snapshot.name.clone());
            }
        }
        assert!(
            backends_chosen.len() >= 2,
            "{file}: the ramp exercises several tiers: {backends_chosen:?}"
        );
    }
}

#[test]
fn the_command_prints_a_table_and_writes_json_and_svg() {
    let dir = tempfile::tempdir().expect("tempdir");
    let json = dir.path().join("sim.json");
    let svg = dir.path().join("sim.svg");
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(workspace())
        .args([
            "sim",
            "--policy-file",
            "config/straightline.toml",
            "--policy",
            "static:local",
            "--preset",
            "paper",
            "--seed",
            "3",
            "--report",
        ])
        .arg(&json)
        .arg("--plot")
        .arg(&svg)
        .output()
        .expect("runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("| straightline |"), "{stdout}");
    assert!(stdout.contains("| local-only |"), "{stdout}");
    assert!(stdout.contains("Placement over time"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["runs"].as_array().map(Vec::len), Some(2));
    assert_eq!(report["runs"][1]["requests"], 3505);
    let plot = std::fs::read_to_string(&svg).unwrap();
    assert!(
        plot.starts_with("<svg") && plot.contains("local-only"),
        "{}",
        &plot[..plot.len().min(200)]
    );

    // Bad input: a clear error and exit code 2.
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_switchyard"))
        .current_dir(workspace())
        .args(["sim", "--policy", "static:gpu"])
        .output()
        .expect("runs");
    assert_eq!(bad.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        stderr.contains("\"gpu\" is not an enabled backend"),
        "{stderr}"
    );
}

/// The live gateway and the simulator fed a profile measured from it agree
/// on the median latency of the same schedule (within 25%).
///
/// The profile is calibrated by a run at the same rate just before the
/// measured run: at a lower rate every request wakes idle threads and the
/// gateway's overhead reads higher than it is under load. The machines are
/// shared, so a pair of runs disturbed by a neighbour is measured again, up
/// to three times; a simulator that models the backend wrongly disagrees on
/// every attempt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_simulated_median_agrees_with_a_live_run() {
    use switchyard_loadgen::{Endpoint, PayloadSpec, Target, http_client};
    use switchyard_scheduler::{Config, Gateway};

    let config = Config::parse(
        "[backends.local]\nmodels = [\"fashion_cnn\"]\nworkers = 1\nqueue_capacity = 256\n",
        "(test)",
        &workspace(),
    )
    .expect("config");
    let gateway = Arc::new(Gateway::start(&config).await.expect("gateway starts"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(switchyard_scheduler::run(listener, gateway, async move {
        let _ = stopped.await;
    }));

    let client = http_client(64);
    let endpoint = Endpoint::parse(&format!("http://{address}"), false).expect("endpoint");
    let payload = PayloadSpec {
        binary: true,
        ..PayloadSpec::default()
    };
    let target = Arc::new(
        Target::prepare(&client, endpoint, "fashion_cnn", &payload)
            .await
            .expect("target"),
    );

    let mut attempts = Vec::new();
    for _ in 0..3 {
        let (live_p50, sim_p50, detail) = live_and_simulated_median(&client, &target).await;
        eprintln!("{detail}");
        let agrees = (sim_p50 - live_p50).abs() <= 0.25 * live_p50;
        attempts.push(detail);
        if agrees {
            break;
        }
    }
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(30), server).await;
    let last = attempts.last().map(String::as_str).unwrap_or_default();
    assert!(
        last.ends_with("agree"),
        "the simulated median disagreed with the live one on every attempt: {attempts:#?}"
    );
}

/// One calibration run and one measured run at 200 requests/s, and the
/// simulator's replay of the measured schedule from the calibrated profile:
/// (live p50 ms, simulated p50 ms, a line describing both).
async fn live_and_simulated_median(
    client: &switchyard_loadgen::HttpClient,
    target: &Arc<switchyard_loadgen::Target>,
) -> (f64, f64, String) {
    use switchyard_loadgen::{Load, RunSettings, run};

    let rate = 200.0;
    let open = |seconds: u64| {
        RunSettings::new(
            Load::constant_rate(rate, Duration::from_secs(seconds), 256).expect("load"),
            Duration::from_secs(5),
        )
    };
    // Calibration: measures the backend's time (the server's queue and
    // inference headers) and the gateway's overhead around it.
    let calibration = run(client, target, &open(2))
        .await
        .expect("calibration run");
    let live = run(client, target, &open(3)).await.expect("live run");

    let c = &calibration.report;
    assert_eq!(c.counts.success, c.scheduled, "{:?}", c.counts);
    assert_eq!(
        live.report.counts.success, live.report.scheduled,
        "{:?}",
        live.report.counts
    );
    let ms = |us: u64| us as f64 / 1000.0;
    let timing = &c.server_timing;
    let backend_p50 = ms(timing.queue_us.p50 + timing.inference_us.p50).max(0.001);
    let backend_p99 = ms(timing.queue_us.p99 + timing.inference_us.p99).max(backend_p50);
    let overhead_p50 = (ms(c.latency_us.p50) - backend_p50).max(0.001);
    let overhead_p99 = (ms(c.latency_us.p99) - backend_p99).max(overhead_p50);
    let profile = Profile::parse(
        &format!(
            r#"
[gateway]
overhead = {{ p50_ms = {overhead_p50}, p99_ms = {overhead_p99} }}

[models.fashion_cnn]
payload_bytes = 3136
max_batch_size = 64

[backends.local]
workers = 1
queue_capacity = 256
[backends.local.models.fashion_cnn]
latency = [{{ batch = 1, p50_ms = {backend_p50}, p99_ms = {backend_p99} }}]
"#
        ),
        "calibration",
    )
    .expect("measured profile");
    let local = PolicyRun::from_spec("static:local", &profile).expect("spec");
    let phases = Phases::constant(rate, Duration::from_secs(3)).expect("phases");
    let simulated: SimReport =
        simulate(&profile, &local.set, "sim", &workload(phases, false, 1, 0));
    assert_eq!(simulated.requests, live.report.scheduled);
    let live_p50 = ms(live.report.latency_us.p50);
    let sim_p50 = simulated.latency_ms.p50;
    let verdict = if (sim_p50 - live_p50).abs() <= 0.25 * live_p50 {
        "agree"
    } else {
        "disagree"
    };
    let detail = format!(
        "live p50 {live_p50:.3} ms, simulated p50 {sim_p50:.3} ms (backend {backend_p50:.3} ms + overhead {overhead_p50:.3} ms): {verdict}"
    );
    (live_p50, sim_p50, detail)
}
