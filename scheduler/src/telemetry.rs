//! Prometheus metrics and structured logs.
//!
//! Metrics go through the `metrics` facade to one process-wide Prometheus
//! recorder (so the local backend, which knows batch sizes, records them
//! directly). Histograms use explicit buckets, not summaries, so they can be
//! aggregated across gateway replicas.

use std::io::IsTerminal;
use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets in seconds: 100 µs to 60 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0, 30.0, 60.0,
];
/// Batch-size buckets (rows).
const BATCH_BUCKETS: &[f64] = &[1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0];
/// Payload-size buckets in bytes: 256 B to 64 MiB.
const BYTES_BUCKETS: &[f64] = &[
    256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0, 67108864.0,
];

static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();

/// Installs the Prometheus recorder once per process and returns the handle
/// that renders it. Later calls return the same handle.
pub fn prometheus() -> Result<PrometheusHandle, String> {
    HANDLE
        .get_or_init(|| {
            let recorder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), SECONDS_BUCKETS)
                .and_then(|b| {
                    b.set_buckets_for_metric(
                        Matcher::Full("switchyard_batch_size".into()),
                        BATCH_BUCKETS,
                    )
                })
                .and_then(|b| {
                    b.set_buckets_for_metric(Matcher::Suffix("_bytes".into()), BYTES_BUCKETS)
                })
                .map_err(|e| e.to_string())?
                .build_recorder();
            let handle = recorder.handle();
            metrics::set_global_recorder(recorder).map_err(|e| e.to_string())?;
            describe();
            Ok(handle)
        })
        .clone()
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        "switchyard_requests_total",
        "Inference requests by model, backend and outcome"
    );
    describe_counter!(
        "switchyard_decision_log_records_total",
        "Decision log records by outcome: written, dropped (writer behind) or failed (write error)"
    );
    describe_histogram!(
        "switchyard_request_duration_seconds",
        Unit::Seconds,
        "Time from request received to response ready, successful requests"
    );
    describe_histogram!(
        "switchyard_request_payload_bytes",
        Unit::Bytes,
        "Input tensor bytes per request"
    );
    describe_histogram!(
        "switchyard_batch_size",
        "Rows per batch run by the local backend"
    );
    describe_histogram!(
        "switchyard_inference_compute_seconds",
        Unit::Seconds,
        "Model run time per batch"
    );
    describe_gauge!(
        "switchyard_backend_in_flight_requests",
        "Requests accepted by a backend and not yet answered"
    );
    describe_gauge!(
        "switchyard_backend_queued_requests",
        "Requests waiting in a backend's queue"
    );
    describe_gauge!(
        "switchyard_backend_ready",
        "1 when the backend takes requests"
    );
    describe_gauge!(
        "switchyard_container_seconds_total",
        Unit::Seconds,
        "Seconds of every worker container the pool created, creation to removal (cumulative)"
    );
    describe_gauge!(
        "switchyard_container_cost_dollars_total",
        "Estimated cost of the pool's container-seconds, dollars (cumulative)"
    );
}

/// Sets up `tracing` output: human-readable or JSON lines, filtered by
/// `RUST_LOG` (default `info`). Safe to call more than once.
pub fn init_logging(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a worker container's log, read back
    // through the engine into the gateway's errors, or a log file, gets
    // plain text.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    let _ = if json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}
