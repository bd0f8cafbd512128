//! `lambda-bench`: latency of gateway → Lambda (the `cargo lambda`
//! emulator) beside gateway → local, for `digits` and `fashion_cnn`, cold
//! and warm, p50/p99, all in one run; and the cost of the emulator's
//! Invoke path against calling the function's handler in-process.
//!
//! Runs the release binaries (`switchyard`, `switchyard-lambda`) from the
//! target directory of this executable; writes `bench/results/lambda.md`
//! and `.json`. Usage: `lambda-bench [--warm N] [--cold N]`.
//!
//! Cold, Lambda: a fresh function instance is started and the request is
//! sent at once, so it waits for the instance's init (process start, ONNX
//! Runtime and model load): what a real cold start costs. Cold, local: the
//! first request to a freshly started gateway (models are loaded at start).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use serde_json::json;
use switchyard_backend_lambda::emulator::{
    ChildProcess, FUNCTION, LocalEmulator, free_port, function_binary, wait_listening,
};
use switchyard_lambda_function::{Function, FunctionSettings, InvokeEvent, InvokeResponse};
use switchyard_protocol::{BINARY_HEADER_LENGTH, InferRequest, Tensor, TensorData, encode_request};

const MODELS: [&str; 2] = ["digits", "fashion_cnn"];

struct Setup {
    root: PathBuf,
    bin_dir: PathBuf,
    function: PathBuf,
}

impl Setup {
    fn instance(&self, emulator: &LocalEmulator) -> Result<ChildProcess, String> {
        emulator.instance(&self.function, &MODELS.join(","), 1024)
    }

    fn gateway(&self, backend: &str, emulator_port: u16) -> Result<(ChildProcess, u16), String> {
        let port = free_port()?;
        let section = match backend {
            "lambda" => format!(
                "[backends.lambda]\nendpoint = \"http://127.0.0.1:{emulator_port}\"\nmodels = {MODELS:?}\nreserved_concurrency = 4\n"
            ),
            _ => format!("[backends.local]\nmodels = {MODELS:?}\n"),
        };
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\n[models]\nrepository = \"{}\"\n[placement]\norder = [\"{backend}\"]\n{section}",
            self.root.join("models/repository").display()
        );
        let path = std::env::temp_dir().join(format!("lambda-bench-{backend}-{port}.toml"));
        std::fs::write(&path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        let mut process = ChildProcess::spawn(
            Command::new(self.bin_dir.join("switchyard"))
                .arg("serve")
                .arg("--config")
                .arg(&path)
                .current_dir(&self.root),
            "the gateway (build it: cargo build --release -p switchyard)",
        )?;
        wait_listening(port, &mut process, Duration::from_secs(60), "the gateway")?;
        Ok((process, port))
    }
}

fn request_for(model: &str) -> InferRequest {
    let (shape, len) = match model {
        "digits" => (vec![1, 64], 64),
        _ => (vec![1, 1, 28, 28], 784),
    };
    InferRequest {
        inputs: vec![Tensor {
            name: "input".into(),
            shape,
            data: TensorData::Fp32((0..len).map(|i| (i % 16) as f32).collect()),
        }],
        ..InferRequest::default()
    }
}

struct Client {
    http: reqwest::Client,
}

impl Client {
    /// One v2 request to a gateway; its latency.
    async fn infer(&self, port: u16, model: &str) -> Result<Duration, String> {
        let body = encode_request(&request_for(model), true).map_err(|e| e.to_string())?;
        let mut request = self
            .http
            .post(format!("http://127.0.0.1:{port}/v2/models/{model}/infer"))
            .timeout(Duration::from_secs(60));
        if let Some(length) = body.json_length {
            request = request.header(BINARY_HEADER_LENGTH, length.to_string());
        }
        let started = Instant::now();
        let response = request
            .body(body.bytes)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.bytes().await.map_err(|e| e.to_string())?;
        let took = started.elapsed();
        if !status.is_success() {
            return Err(format!(
                "{model}: {status}: {}",
                String::from_utf8_lossy(&text)
            ));
        }
        Ok(took)
    }

    /// One Invoke call straight to the emulator; its latency.
    async fn invoke(&self, port: u16, payload: Vec<u8>) -> Result<Duration, String> {
        let started = Instant::now();
        let response = self
            .http
            .post(format!(
                "http://127.0.0.1:{port}/2015-03-31/functions/{FUNCTION}/invocations"
            ))
            .timeout(Duration::from_secs(60))
            .body(payload)
            .send()
            .await
            .map_err(|e| e.to_string())?;
        let status = response.status();
        let body = response.bytes().await.map_err(|e| e.to_string())?;
        let took = started.elapsed();
        if !status.is_success() {
            return Err(format!("invoke: {status}"));
        }
        InvokeResponse::from_payload(&body)
            .and_then(|r| r.decode())
            .map_err(|e| e.to_string())?;
        Ok(took)
    }
}

fn histogram() -> Result<Histogram<u64>, String> {
    Histogram::new_with_bounds(1, 600_000_000, 3).map_err(|e| e.to_string())
}

fn summary(h: &Histogram<u64>) -> serde_json::Value {
    let ms = |us: u64| (us as f64 / 10.0).round() / 100.0;
    json!({
        "n": h.len(),
        "p50_ms": ms(h.value_at_quantile(0.5)),
        "p99_ms": ms(h.value_at_quantile(0.99)),
        "mean_ms": (h.mean() / 10.0).round() / 100.0,
    })
}

fn record(h: &mut Histogram<u64>, d: Duration) {
    h.saturating_record(u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1));
}

async fn run(warm: u64, cold: u64) -> Result<serde_json::Value, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let bin_dir = exe.parent().ok_or("no executable folder")?.to_path_buf();
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .ok_or("no workspace root")?
        .to_path_buf();
    let setup = Setup {
        function: function_binary(&exe)?,
        root,
        bin_dir,
    };
    let client = Client {
        http: reqwest::Client::builder()
            .tcp_nodelay(true)
            .build()
            .map_err(|e| e.to_string())?,
    };
    let emulator = LocalEmulator::start(&setup.root)?;
    let emulator_port = emulator.port();
    let mut results = serde_json::Map::new();

    for model in MODELS {
        // Cold: a fresh gateway (local) or a fresh instance (Lambda).
        let mut local_cold = histogram()?;
        let mut lambda_cold = histogram()?;
        for _ in 0..cold {
            let (gateway, port) = setup.gateway("local", emulator_port)?;
            record(&mut local_cold, client.infer(port, model).await?);
            drop(gateway);
        }
        let (_lambda_gateway, lambda_port) = setup.gateway("lambda", emulator_port)?;
        for _ in 0..cold {
            let instance = setup.instance(&emulator)?;
            record(&mut lambda_cold, client.infer(lambda_port, model).await?);
            drop(instance);
        }
        // Warm: one instance, one gateway each, after a warm-up request.
        let _instance = setup.instance(&emulator)?;
        let (_local_gateway, local_port) = setup.gateway("local", emulator_port)?;
        client.infer(lambda_port, model).await?;
        client.infer(local_port, model).await?;
        let mut local_warm = histogram()?;
        let mut lambda_warm = histogram()?;
        let mut invoke_warm = histogram()?;
        let payload = InvokeEvent::new(model, 1, &request_for(model))
            .and_then(|e| e.to_payload())
            .map_err(|e| e.to_string())?;
        for _ in 0..warm {
            record(&mut local_warm, client.infer(local_port, model).await?);
            record(&mut lambda_warm, client.infer(lambda_port, model).await?);
            record(
                &mut invoke_warm,
                client.invoke(emulator_port, payload.clone()).await?,
            );
        }
        results.insert(
            model.to_owned(),
            json!({
                "gateway_local": {"cold": summary(&local_cold), "warm": summary(&local_warm)},
                "gateway_lambda": {"cold": summary(&lambda_cold), "warm": summary(&lambda_warm)},
                "emulator_invoke_direct_warm": summary(&invoke_warm),
            }),
        );
    }

    // The same events through the handler in this process: decode, run,
    // encode, and the invoker's decode of the response.
    let settings = FunctionSettings {
        repository: setup.root.join("models/repository"),
        models: Some(MODELS.iter().map(|m| (*m).to_owned()).collect()),
        intra_op_threads: 1,
        memory_mb: Some(1024),
    };
    let function = Function::load(&settings, Instant::now()).map_err(|e| e.to_string())?;
    for model in MODELS {
        let payload = InvokeEvent::new(model, 1, &request_for(model))
            .and_then(|e| e.to_payload())
            .map_err(|e| e.to_string())?;
        let mut in_process = histogram()?;
        // Warm-up: the first runs of a fresh session are slower.
        for _ in 0..10 {
            let event = InvokeEvent::from_payload(&payload).map_err(|e| e.to_string())?;
            function.handle(&event).map_err(|e| e.to_string())?;
        }
        for _ in 0..warm.max(100) {
            let started = Instant::now();
            let event = InvokeEvent::from_payload(&payload).map_err(|e| e.to_string())?;
            let response = function.handle(&event).map_err(|e| e.to_string())?;
            let bytes = serde_json::to_vec(&response).map_err(|e| e.to_string())?;
            InvokeResponse::from_payload(&bytes)
                .and_then(|r| r.decode())
                .map_err(|e| e.to_string())?;
            record(&mut in_process, started.elapsed());
        }
        if let Some(entry) = results.get_mut(model) {
            entry["handler_in_process_warm"] = summary(&in_process);
        }
    }
    Ok(serde_json::Value::Object(results))
}

fn markdown(results: &serde_json::Value, warm: u64, cold: u64) -> String {
    let cell = |v: &serde_json::Value| format!("{} / {}", v["p50_ms"], v["p99_ms"]);
    let mut out = format!(
        "# Lambda backend: gateway → Lambda (emulator) vs gateway → local\n\n\
         One run, one machine (2 cores), sequential requests; p50 / p99 in ms.\n\
         Warm: {warm} requests per path; cold: {cold} per path (Lambda: a fresh\n\
         function instance each, so the request waits for its init; local: the\n\
         first request to a freshly started gateway, models loaded at start).\n\
         Produced by `lambda-bench` (backends/lambda/src/bin/lambda-bench.rs).\n\n\
         | model | local warm | lambda warm | local cold | lambda cold | emulator invoke (direct) | handler in-process |\n\
         |---|---|---|---|---|---|---|\n"
    );
    for model in MODELS {
        let r = &results[model];
        out.push_str(&format!(
            "| {model} | {} | {} | {} | {} | {} | {} |\n",
            cell(&r["gateway_local"]["warm"]),
            cell(&r["gateway_lambda"]["warm"]),
            cell(&r["gateway_local"]["cold"]),
            cell(&r["gateway_lambda"]["cold"]),
            cell(&r["emulator_invoke_direct_warm"]),
            cell(&r["handler_in_process_warm"]),
        ));
    }
    out.push_str(
        "\nThe emulator's invocation overhead is `emulator invoke (direct)` minus \
         `handler in-process` (the same event decoded, run and encoded in one \
         process); the gateway's own cost on the Lambda path is `lambda warm` minus \
         `emulator invoke (direct)`. Real Lambda adds the network round trip to \
         the region (tens of ms) and its own cold starts.\n",
    );
    out
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (mut warm, mut cold) = (300u64, 5u64);
    while let Some(arg) = args.next() {
        let value = args.next().and_then(|v| v.parse().ok());
        match (arg.as_str(), value) {
            ("--warm", Some(n)) => warm = n,
            ("--cold", Some(n)) => cold = n,
            _ => return fail("usage: lambda-bench [--warm N] [--cold N]"),
        }
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => return fail(&e.to_string()),
    };
    let results = match runtime.block_on(run(warm, cold)) {
        Ok(results) => results,
        Err(e) => return fail(&e),
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../bench/results");
    let written = std::fs::create_dir_all(&root)
        .and_then(|()| std::fs::write(root.join("lambda.md"), markdown(&results, warm, cold)))
        .and_then(|()| {
            std::fs::write(
                root.join("lambda.json"),
                serde_json::to_string_pretty(
                    &json!({"warm": warm, "cold": cold, "models": results}),
                )
                .unwrap_or_default(),
            )
        });
    match written {
        Ok(()) => {
            report(&markdown(&results, warm, cold));
            ExitCode::SUCCESS
        }
        Err(e) => fail(&format!("cannot write bench/results: {e}")),
    }
}

#[allow(clippy::print_stdout)]
fn report(text: &str) {
    println!("{text}");
}

#[allow(clippy::print_stderr)]
fn fail(message: &str) -> ExitCode {
    eprintln!("lambda-bench: {message}");
    ExitCode::FAILURE
}
