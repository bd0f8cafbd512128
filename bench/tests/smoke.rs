//! Smoke runs of the benchmarks, so the commands do not rot: `codec
//! --quick` (request decoding in process), `sim --quick` (the simulator
//! only) and `paper --quick` (the release gateway on its
//! local and Lambda tiers through the emulator, a 12 s ramp), and
//! `overhead --quick --backend local` (the gateway against the raw ONNX
//! Runtime call and the HTTP floor, a few seconds), `burst --quick`
//! (local-only and Lambda-only through 20 s of Poisson bursts) and `local
//! --quick` (the gateway against the raw loop, the HTTP floors of the
//! gateway and of the trivial server, through the load generator and the
//! lean client, about 45 s). They check
//! that each command finishes and writes its table and JSON; no timing is
//! asserted (the numbers of a run on a busy machine mean little).
//!
//! Needs `make setup` and the workspace's binaries beside the test, which
//! `make test` builds (`cargo build --profile suite --workspace --bins`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

use switchyard_backends::affinity::allowed_cpus_from_status;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Runs `switchyard-bench ARGS --out DIR` from the workspace root.
fn bench(args: &[&str], out: &Path) {
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args(args)
        .arg("--out")
        .arg(out)
        .current_dir(workspace())
        .output()
        .expect("the bench runs");
    assert!(
        output.status.success(),
        "switchyard-bench {args:?} failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

#[test]
fn codec_quick_times_every_case_both_ways() {
    let out = tempfile::tempdir().expect("temp dir");
    bench(&["codec", "--quick"], out.path());
    let table = read(&out.path().join("codec-quick.md"));
    for row in ["| fashion_cnn | 1 | json |", "| digits | 8 | binary |"] {
        assert!(table.contains(row), "no {row} row:\n{table}");
    }
    let json: serde_json::Value = serde_json::from_str(&read(&out.path().join("codec-quick.json")))
        .expect("codec-quick.json parses");
    let cases = json["cases"].as_array().expect("a list of cases");
    assert_eq!(cases.len(), 8);
    for case in cases {
        for key in ["decode_ns", "value_ns"] {
            let ns = case[key].as_f64().expect("a number");
            assert!(ns.is_finite() && ns > 0.0, "{key} = {ns} in {case}");
        }
    }
}

#[test]
fn sim_quick_writes_its_table_and_json() {
    let out = tempfile::tempdir().expect("temp dir");
    bench(&["sim", "--quick"], out.path());
    let table = read(&out.path().join("sim.md"));
    assert!(table.contains("## paper:"), "{table}");
    for policy in ["| straightline |", "| cost-aware |", "| local-only |"] {
        assert!(table.contains(policy), "no {policy} row:\n{table}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&read(&out.path().join("sim.json"))).expect("sim.json parses");
    assert!(json.is_object());
}

#[test]
fn paper_quick_runs_the_ramp_live_and_in_the_simulator() {
    let out = tempfile::tempdir().expect("temp dir");
    bench(&["paper", "--quick"], out.path());
    let table = read(&out.path().join("paper-quick.md"));
    let live = table
        .split("## The simulator")
        .next()
        .expect("a live section");
    for placement in ["| local-only | ", "| lambda-only | "] {
        assert!(
            live.contains(placement),
            "no live {placement} row:\n{table}"
        );
    }
    assert!(table.contains("## The simulator"), "{table}");
    let json: serde_json::Value = serde_json::from_str(&read(&out.path().join("paper-quick.json")))
        .expect("paper-quick.json parses");
    assert!(json.is_object());
    assert!(out.path().join("paper-quick-xception.svg").exists());
}

#[test]
fn a_paper_run_whose_placement_cannot_start_writes_its_results_and_fails_naming_it() {
    let out = tempfile::tempdir().expect("temp dir");
    let missing = out.path().join("no-such-function");
    let output = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args(["paper", "--quick", "--placement", "lambda-only", "--out"])
        .arg(out.path())
        .env("SWITCHYARD_LAMBDA_FUNCTION_BIN", &missing)
        .current_dir(workspace())
        .output()
        .expect("the bench runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("1 part(s) of the run could not be made")
            && stderr.contains("xception / lambda-only: "),
        "{stderr}"
    );
    let table = read(&out.path().join("paper-quick.md"));
    assert!(table.contains("not run: "), "{table}");
}

#[test]
fn overhead_quick_measures_the_local_paths_against_their_baselines() {
    let out = tempfile::tempdir().expect("temp dir");
    bench(&["overhead", "--quick", "--backend", "local"], out.path());
    let table = read(&out.path().join("overhead-quick.md"));
    for row in [
        "| local | switchyard | raw ort | 200 |",
        "| local | switchyard | HTTP floor | 2000 |",
    ] {
        assert!(table.contains(row), "no {row} row:\n{table}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&read(&out.path().join("overhead-quick.json")))
            .expect("overhead-quick.json parses");
    assert_eq!(json["sections"][0]["backend"], "local");
}

#[test]
fn local_quick_sets_each_low_load_rate_beside_the_raw_loop_and_both_floors_through_both_clients() {
    let out = tempfile::tempdir().expect("temp dir");
    bench(&["local", "--quick", "--no-build"], out.path());
    let table = read(&out.path().join("local.md"));
    for row in [
        "| fashion_cnn | 50 | ",
        "| digits | 1000 | ",
        "| trivial server | GET /, 50/s | ",
        "| HTTP floor | GET /v2/health/live, 1000/s | ",
    ] {
        assert!(table.contains(row), "no {row} row:\n{table}");
    }
    let json: serde_json::Value =
        serde_json::from_str(&read(&out.path().join("local.json"))).expect("local.json parses");
    assert_eq!(
        json["trivial_pinned"], true,
        "config/local-only.toml pins the gateway's threads, so the trivial server pins its own"
    );
    let floors = json["http_floors"].as_array().expect("a list of floors");
    assert_eq!(floors.len(), 2, "one floor per quick rate");
    for floor in floors {
        for server in ["run", "trivial"] {
            let answered = floor[server]["report"]["counts"]["success"]
                .as_u64()
                .expect("a count");
            assert!(
                answered > 0,
                "{server} at {}: nothing answered",
                floor["rate_per_s"]
            );
        }
        for server in ["lean", "lean_trivial"] {
            assert!(
                floor[server]["success"].as_u64() > Some(0) && floor[server]["errors"] == 0,
                "{server} at {}: {}",
                floor["rate_per_s"],
                floor[server]
            );
        }
    }
    for model in json["models"].as_array().expect("a list of models") {
        let points = model["low_load"].as_array().expect("low-load points");
        assert_eq!(points.len(), 2, "{}", model["model"]);
        for point in points {
            assert!(point["gateway"]["report"]["counts"]["success"].as_u64() > Some(0));
            assert_eq!(point["raw_paced"]["paced_rate_per_s"], point["rate_per_s"]);
            let lean = &point["lean"]["run"];
            assert!(
                lean["success"].as_u64() > Some(0) && lean["errors"] == 0 && lean["unsent"] == 0,
                "lean client: {lean}"
            );
            assert_eq!(lean["rate_per_s"], point["rate_per_s"]);
        }
        // The quick run sends the model's largest batch in each request
        // and sets it beside the raw loop at that batch.
        let multi = model["multi_row"].as_array().expect("multi-row runs");
        assert_eq!(multi.len(), 1, "{}", model["model"]);
        let largest = model["raw"]
            .as_array()
            .and_then(|raw| raw.iter().filter_map(|r| r["batch"].as_u64()).max());
        assert_eq!(multi[0]["rows"].as_u64(), largest, "{}", model["model"]);
        assert_eq!(multi[0]["errors"], 0, "{}", multi[0]);
        let items = multi[0]["items_per_s"].as_f64().expect("items/s");
        let requests = multi[0]["requests_per_s"].as_f64().expect("req/s");
        let rows = largest.expect("a raw batch") as f64;
        assert!(
            requests > 0.0 && (items / requests - rows).abs() < 0.01 * rows,
            "{} rows per request answered at {requests} req/s but {items} items/s",
            rows
        );
        let raw_same = model["raw"]
            .as_array()
            .and_then(|raw| raw.iter().find(|r| r["batch"].as_u64() == largest))
            .and_then(|r| r["items_per_s"].as_f64())
            .expect("the raw loop at the largest batch");
        assert_eq!(multi[0]["raw_items_per_s"].as_f64(), Some(raw_same));
        let ratio = multi[0]["ratio_vs_raw_same_batch"]
            .as_f64()
            .expect("a ratio");
        assert!(
            ratio > 0.0 && (ratio - items / raw_same).abs() < 1e-9,
            "{ratio} is not {items} / {raw_same}"
        );
    }
    assert!(
        table.contains("| model | rows per request |") && table.contains("| digits | 256 | 8 | "),
        "no multi-row row for digits:\n{table}"
    );
}

#[test]
fn burst_quick_runs_the_bursts_live_and_in_the_simulator() {
    let out = tempfile::tempdir().expect("temp dir");
    let logs = out.path().join("logs");
    let logs_arg = logs.to_str().expect("a UTF-8 temp path");
    bench(&["burst", "--quick", "--keep-logs", logs_arg], out.path());
    let table = read(&out.path().join("burst-quick.md"));
    let (live, simulated) = table
        .split_once("## Simulated at full scale")
        .expect("a live and a simulated section");
    for placement in ["| local-only | ", "| lambda-only | "] {
        assert!(
            live.contains(placement),
            "no live {placement} row:\n{table}"
        );
        assert!(
            simulated.contains(placement),
            "no simulated {placement} row:\n{table}"
        );
    }
    assert!(live.contains("| 4 burst 2 |"), "no phase rows:\n{table}");
    let json: serde_json::Value = serde_json::from_str(&read(&out.path().join("burst-quick.json")))
        .expect("burst-quick.json parses");
    let runs = json["runs"].as_array().expect("runs");
    assert_eq!(runs.len(), 2);
    for run in runs {
        assert!(run["error"].is_null(), "{run}");
        assert!(run["due"].as_u64() > Some(0), "{run}");
    }
    // --keep-logs: each placement's config, log and every decision.
    for placement in ["local-only", "lambda-only"] {
        let stem = logs.join(format!("xception-{placement}"));
        let config = read(&stem.with_extension("toml"));
        assert!(config.contains("decision_log_sample = 1.0"), "{config}");
        let log = read(&stem.with_extension("log"));
        assert!(log.contains("xception"), "{placement} log:\n{log}");
        let decisions = read(&logs.join(format!("xception-{placement}-decisions.jsonl")));
        let lines: Vec<&str> = decisions.lines().collect();
        assert!(!lines.is_empty(), "no {placement} decisions");
        // The gateway's log ends with its count of records written, none
        // dropped or lost, and the file holds that many.
        let counted = format!("written={} dropped=0 failed=0", lines.len());
        assert!(
            log.lines()
                .any(|l| l.contains("decision log written out") && l.contains(&counted)),
            "no \"{counted}\" in the {placement} log:\n{log}"
        );
        for line in lines {
            let decision: serde_json::Value =
                serde_json::from_str(line).expect("a decision is one JSON line");
            assert_eq!(decision["model"], "xception", "{line}");
        }
    }
}

/// The CPUs a thread may run on, from its `/proc` status.
fn allowed_cpus(status: &str) -> Vec<usize> {
    allowed_cpus_from_status(status).expect("a readable Cpus_allowed_list line")
}

#[test]
fn the_trivial_server_pins_its_two_threads_to_different_cpus_when_asked() {
    use std::io::{BufRead, BufReader};
    let cpus = allowed_cpus(&read(Path::new("/proc/self/status")));
    if cpus.len() < 2 {
        eprintln!("one CPU ({cpus:?}): nothing to pin to");
        return;
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchyard-bench"))
        .args(["trivial-server", "--pin-threads"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("its address");
    assert!(line.starts_with("serving on http://127.0.0.1:"), "{line}");
    let tasks = Path::new("/proc").join(child.id().to_string()).join("task");
    let mut pinned: Vec<Vec<usize>> = std::fs::read_dir(&tasks)
        .expect("its threads")
        .map(|task| task.expect("a thread").path())
        .filter(|task| read(&task.join("comm")).trim() == "trivial-server")
        .map(|task| allowed_cpus(&read(&task.join("status"))))
        .collect();
    drop(child.stdin.take());
    let status = child.wait().expect("exits");
    assert!(status.success(), "{status}");
    pinned.sort();
    assert_eq!(pinned.len(), 2, "{pinned:?}");
    assert!(
        pinned.iter().all(|cpus| cpus.len() == 1) && pinned[0] != pinned[1],
        "each thread on one CPU of its own: {pinned:?}"
    );
}
