//! `switchyard-bench local`: the gateway against the physical limit of the
//! same machine, measured side by side in one run.
//!
//! For each model: (a) the raw ONNX Runtime loop with the gateway's own
//! thread settings (batch 1, batch 8 and the model's largest batch); then
//! (b) the gateway, a child process, driven over loopback HTTP by the load
//! generator: a closed loop at saturation and an open loop at a few low
//! rates. From these come the two ratios: gateway throughput over
//! raw throughput, and the latency the gateway adds at low load.
//!
//! The saturation sweep sends batch-1 requests, so every row pays a whole
//! HTTP round trip. A closed loop of multi-row requests (the raw loop's
//! batches above 1, as a client batching on its own side would send) sets
//! the gateway beside the raw loop at the same batch: what is left of the
//! gap there is the gateway's cost per row, not per request.
//!
//! Low load is measured at more than one rate because on a virtual machine
//! the gap between requests, not the gateway, sets much of a request's
//! time: a code path left alone for 20 ms runs several times slower than
//! one used every millisecond (cold caches and a descheduled vCPU), and the
//! raw loop paced at the same rate shows it too. Each rate's gateway run is
//! set beside the raw call paced at that rate and the HTTP floor at that
//! rate.
//!
//! Each low-load run is made twice: through the load generator (an async
//! client, as every other run) and through a lean blocking client (see
//! [`crate::lean_client`]), whose own round trip costs less, so that its
//! numbers hold more of the server's part of a request and less of the
//! client's.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use switchyard_loadgen::{
    HttpClient, Load, PayloadSpec, Report, RunSettings, Target, http_client, run,
};
use switchyard_scheduler::Config;

use crate::error::BenchError;
use crate::gateway_process::GatewayProcess;
use crate::lean_client::{LeanRun, lean_run};
use crate::machine::{
    Machine, ProcessesCpu, ThreadCores, cpu_between, load_average, other_cores, process_cpu_time,
    thread_cores, thread_cpu_times, utc_now,
};
use crate::raw::{RawPlan, RawResult, run_raw};

/// The models compared, light first.
pub const MODELS: [&str; 2] = ["fashion_cnn", "digits"];
/// The targets.
pub const THROUGHPUT_TARGET: f64 = 0.9;
pub const ADDED_LATENCY_TARGET_US: i64 = 100;

/// How long each step runs. Every loop is also bounded in count.
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    pub quick: bool,
    pub raw_warmup_s: f64,
    pub raw_duration_s: f64,
    /// Connection counts of the closed-loop saturation runs; the gateway's
    /// saturation throughput is the best of them. One count can leave the
    /// gateway short of saturation: at 64 connections its two fashion_cnn
    /// workers often both wait for the next requests (about 11% of the
    /// machine idle in that run, 1% at 256).
    pub saturation_connections: Vec<usize>,
    pub saturation_warmup_s: f64,
    pub saturation_duration_s: f64,
    /// Rows in flight in each multi-row run: its connections are this
    /// divided by the rows per request, at least
    /// `multi_row_min_connections` (so that a request can be read while
    /// full batches run). The batch-1 sweep's 256 connections keep 256
    /// rows in flight.
    pub multi_row_rows_in_flight: u64,
    pub multi_row_min_connections: usize,
    /// Whether only the largest batch runs with multi-row requests (the
    /// quick run) or every raw batch above 1.
    pub multi_row_largest_only: bool,
    /// Open-loop rates of the low-load runs, lowest first.
    pub low_load_rates_per_s: Vec<f64>,
    pub low_load_warmup_s: f64,
    pub low_load_duration_s: f64,
    pub request_timeout_s: f64,
    /// How long the idle gateway's own CPU use is measured.
    pub idle_s: f64,
    /// Threads of the load generator's async runtime.
    pub client_threads: usize,
    pub max_requests_per_run: u64,
    pub max_calls_per_raw_thread: u64,
}

impl Plan {
    /// The full run (about six minutes) or the quick one (under 50 s).
    pub fn new(quick: bool) -> Self {
        let (raw, sat, low) = if quick {
            (1.0, 1.5, 1.0)
        } else {
            (8.0, 8.0, 5.0)
        };
        Self {
            quick,
            raw_warmup_s: if quick { 0.3 } else { 1.0 },
            raw_duration_s: raw,
            saturation_connections: if quick {
                vec![64, 256]
            } else {
                vec![64, 128, 256]
            },
            saturation_warmup_s: if quick { 0.5 } else { 1.0 },
            saturation_duration_s: sat,
            multi_row_rows_in_flight: 512,
            multi_row_min_connections: 8,
            multi_row_largest_only: quick,
            low_load_rates_per_s: if quick {
                vec![50.0, 1000.0]
            } else {
                vec![50.0, 200.0, 1000.0]
            },
            low_load_warmup_s: if quick { 0.3 } else { 1.0 },
            low_load_duration_s: low,
            request_timeout_s: 10.0,
            idle_s: if quick { 0.5 } else { 2.0 },
            client_threads: 1,
            max_requests_per_run: 10_000_000,
            max_calls_per_raw_thread: 100_000_000,
        }
    }

    /// The most connections any run opens (the client's pool size).
    pub fn max_connections(&self) -> usize {
        self.saturation_connections
            .iter()
            .copied()
            .chain([self.multi_row_min_connections])
            .max()
            .unwrap_or(1)
    }

    /// Rows per request of the multi-row runs for a model whose largest
    /// batch is `max_batch_size`: the raw loop's batches above 1.
    pub fn multi_row_sizes(&self, max_batch_size: Option<u64>) -> Vec<u64> {
        let mut sizes: Vec<u64> = raw_batches(max_batch_size)
            .into_iter()
            .filter(|&rows| rows > 1)
            .collect();
        if self.multi_row_largest_only {
            sizes.drain(..sizes.len().saturating_sub(1));
        }
        sizes
    }

    /// Connections of the multi-row run at `rows` per request, within the
    /// client's pool.
    pub fn multi_row_connections(&self, rows: u64) -> usize {
        let wanted = usize::try_from(self.multi_row_rows_in_flight / rows.max(1))
            .unwrap_or(usize::MAX)
            .max(self.multi_row_min_connections);
        wanted.min(self.max_connections())
    }
}

/// Options from the command line.
#[derive(Debug, Clone)]
pub struct LocalOptions {
    pub quick: bool,
    /// The gateway binary; by default `switchyard` beside this executable,
    /// built first with cargo.
    pub gateway_bin: Option<PathBuf>,
    pub build_gateway: bool,
    pub command: String,
}

/// One gateway measurement with the CPU both sides used during it.
#[derive(Debug, Clone, Serialize)]
pub struct GatewayRun {
    pub report: Report,
    pub gateway_cpu_s: f64,
    pub client_cpu_s: f64,
    pub gateway_cpu_us_per_request: f64,
    pub client_cpu_us_per_request: f64,
    /// Cores used by each of the gateway's thread groups during the run.
    pub gateway_threads: Vec<ThreadCores>,
    /// The same for the bench process (the load generator).
    pub client_threads: Vec<ThreadCores>,
    /// Cores that other processes used during the run.
    pub other_cores: f64,
}

/// One closed-loop saturation run.
#[derive(Debug, Clone, Serialize)]
pub struct SweepPoint {
    pub connections: usize,
    pub requests_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub errors: u64,
    pub batch_rows_mean: f64,
    pub gateway_cpu_us_per_request: f64,
    pub other_cores: f64,
}

/// One closed-loop run of multi-row requests, beside the raw loop at the
/// same batch.
#[derive(Debug, Clone, Serialize)]
pub struct MultiRowPoint {
    pub rows: u64,
    pub connections: usize,
    pub requests_per_s: f64,
    pub items_per_s: f64,
    pub p50_us: u64,
    pub p99_us: u64,
    pub errors: u64,
    /// Rows per ONNX Runtime call in the gateway: above `rows` when its
    /// dynamic batching merged requests.
    pub batch_rows_mean: f64,
    pub gateway_cpu_us_per_item: f64,
    /// The raw loop at `rows` per call, and the gateway's items/s over it.
    pub raw_items_per_s: f64,
    pub ratio_vs_raw_same_batch: f64,
    /// The gateway's items/s over the raw loop's best batch.
    pub ratio_vs_raw_best: f64,
    pub other_cores: f64,
    /// Cores used by each thread group of the gateway and of the client.
    pub gateway_threads: Vec<ThreadCores>,
    pub client_threads: Vec<ThreadCores>,
}

/// What the gateway uses with no requests at all.
#[derive(Debug, Clone, Serialize)]
pub struct IdleGateway {
    pub seconds: f64,
    pub cores: f64,
    pub threads: Vec<ThreadCores>,
}

/// The numbers the issue asks for.
#[derive(Debug, Clone, Serialize)]
pub struct Comparison {
    pub raw_batch1_items_per_s: f64,
    pub raw_best_items_per_s: f64,
    pub raw_best_batch: u64,
    pub gateway_items_per_s: f64,
    pub ratio_vs_raw_batch1: f64,
    pub ratio_vs_raw_best: f64,
    pub throughput_target: f64,
    pub throughput_target_met_vs_batch1: bool,
    pub throughput_target_met_vs_best: bool,
}

/// The gateway and the raw loop at one low-load rate.
#[derive(Debug, Clone, Serialize)]
pub struct LowLoadPoint {
    pub rate_per_s: f64,
    /// One thread calling batch 1 at this rate, the machine idle in between
    /// (cold caches and cores, as the gateway's calls are).
    pub raw_paced: RawResult,
    /// The gateway, open loop at this rate.
    pub gateway: GatewayRun,
    /// The raw batch-1 p50 back to back (the same for every rate).
    pub raw_batch1_p50_us: u64,
    /// Client p50 (from intended send time) minus the raw batch-1 p50:
    /// the added latency.
    pub added_p50_us: i64,
    /// The same from the actual send time (without the client's pacing lag).
    pub added_p50_from_send_us: i64,
    /// Client p50 minus the paced raw p50.
    pub added_p50_vs_paced_raw_us: i64,
    /// p50 of `GET /v2/health/live` at this rate.
    pub http_floor_p50_us: u64,
    /// p50 of `GET /` on the trivial server at this rate.
    pub trivial_floor_p50_us: u64,
    /// Client p50 minus the trivial server's: what the gateway costs
    /// beyond the cheapest HTTP round trip this machine makes.
    pub over_trivial_floor_p50_us: i64,
    /// Client p50 minus the HTTP floor: what the inference route costs
    /// beyond a bare round trip (decode, the hop to an ONNX Runtime worker
    /// thread and back, the call itself, encode).
    pub inference_path_p50_us: i64,
    pub added_latency_target_us: i64,
    pub added_latency_target_met: bool,
    /// The same rate through the lean client.
    pub lean: LeanLowLoad,
}

/// A lean-client run with the CPU other processes used meanwhile.
#[derive(Debug, Clone, Serialize)]
pub struct LeanMeasured {
    #[serde(flatten)]
    pub run: LeanRun,
    /// Cores used by processes other than the server and the bench, over
    /// the run and its warm-up.
    pub other_cores: f64,
}

/// One model at one low-load rate through the lean client (see
/// [`crate::lean_client`]), beside its floors through the same client.
#[derive(Debug, Clone, Serialize)]
pub struct LeanLowLoad {
    pub run: LeanMeasured,
    /// p50 minus the raw batch-1 p50 (back to back): the added
    /// latency, through this client.
    pub added_p50_us: i64,
    /// p50 of `GET /v2/health/live` at this rate, through this client.
    pub http_floor_p50_us: u64,
    /// p50 of the trivial server's `GET /`, through this client.
    pub trivial_floor_p50_us: u64,
    pub added_latency_target_met: bool,
}

/// The HTTP floors at one low-load rate.
#[derive(Debug, Clone, Serialize)]
pub struct FloorRun {
    pub rate_per_s: f64,
    /// `GET /v2/health/live` on the gateway.
    pub run: GatewayRun,
    /// `GET /` on the trivial server: hyper on tokio, nothing else, in a
    /// process of its own. What any HTTP server on this machine pays.
    pub trivial: GatewayRun,
    /// Both again through the lean client.
    pub lean: LeanMeasured,
    pub lean_trivial: LeanMeasured,
}

/// Everything measured for one model.
#[derive(Debug, Clone, Serialize)]
pub struct ModelResult {
    pub model: String,
    pub workers: usize,
    pub intra_op_threads: usize,
    pub max_batch_size: Option<u64>,
    pub raw: Vec<RawResult>,
    /// The saturation run with the most requests/s, and its connections.
    pub gateway_saturation: GatewayRun,
    pub saturation_connections: usize,
    /// Every saturation run, by connection count.
    pub saturation_sweep: Vec<SweepPoint>,
    /// Closed-loop runs of multi-row requests, fewest rows first.
    pub multi_row: Vec<MultiRowPoint>,
    /// One point per low-load rate, lowest rate first.
    pub low_load: Vec<LowLoadPoint>,
    pub comparison: Comparison,
}

/// The whole run, as written to `local.json`.
#[derive(Debug, Clone, Serialize)]
pub struct LocalResults {
    pub date: String,
    pub command: String,
    pub machine: Machine,
    pub load_average_at_end: String,
    pub gateway_binary: String,
    pub gateway_config: String,
    pub plan: Plan,
    pub gateway_idle: IdleGateway,
    /// At each low-load rate, the HTTP round trip without any inference:
    /// through client and gateway, and through client and the trivial
    /// server.
    pub http_floors: Vec<FloorRun>,
    /// Whether the trivial server's threads were pinned, one CPU each, as
    /// the gateway's are when its config sets `server.pin_threads`.
    pub trivial_pinned: bool,
    pub models: Vec<ModelResult>,
}

/// Raw-loop settings of one model, from the gateway's config.
pub(crate) struct ModelSetup {
    pub(crate) model: String,
    pub(crate) path: PathBuf,
    pub(crate) workers: usize,
    pub(crate) intra_op_threads: usize,
    max_batch_size: Option<u64>,
}

pub(crate) fn model_setups(config: &Config) -> Result<Vec<ModelSetup>, BenchError> {
    let local = config
        .local
        .as_ref()
        .ok_or_else(|| BenchError::Config("the default config has no local backend".into()))?;
    MODELS
        .iter()
        .map(|&name| {
            let serving = local
                .models
                .iter()
                .find(|m| m.model == name)
                .ok_or_else(|| {
                    BenchError::Config(format!("the local backend does not serve {name}"))
                })?;
            let model = config
                .repository
                .models
                .get(name)
                .ok_or_else(|| BenchError::Config(format!("the repository has no {name}")))?;
            let version = model.latest().ok_or_else(|| {
                BenchError::Config(format!("{name} has no version; run `make setup`"))
            })?;
            Ok(ModelSetup {
                model: name.to_owned(),
                path: version.path.clone(),
                workers: serving.workers,
                intra_op_threads: serving.intra_op_threads,
                max_batch_size: model.config.batch_limit(),
            })
        })
        .collect()
}

/// Runs the whole benchmark against a gateway serving `config_path`, whose
/// local backend also sets the raw loop's threads.
pub fn run_local(options: &LocalOptions, config_path: &Path) -> Result<LocalResults, BenchError> {
    let plan = Plan::new(options.quick);
    let date = utc_now();
    let machine = Machine::describe();
    // The same config the gateway child process serves with.
    let config = Config::load(config_path).map_err(|e| BenchError::Config(e.to_string()))?;
    let setups = model_setups(&config)?;
    let binary = gateway_binary(options)?;
    // The trivial server places its threads as the gateway does.
    let trivial_pinned = config.server.pin_threads;

    let mut raw_results = Vec::new();
    for setup in &setups {
        let paced = plan
            .low_load_rates_per_s
            .iter()
            .map(|&rate| raw_paced(setup, &plan, rate))
            .collect::<Result<Vec<_>, _>>()?;
        raw_results.push((raw_variants(setup, &plan)?, paced));
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(plan.client_threads)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Other(format!("cannot start the async runtime: {e}")))?;
    let (gateway_idle, http_floors, gateway_runs) = runtime.block_on(async {
        tokio::select! {
            result = gateway_phases(&binary, config_path, &setups, &plan, trivial_pinned) => result,
            // Ctrl-C or SIGTERM: the gateway child is killed on the way out.
            () = switchyard_scheduler::server::shutdown_signal() => Err(BenchError::Other("interrupted; the gateway was stopped".into())),
        }
    })?;

    let models = setups
        .into_iter()
        .zip(raw_results)
        .zip(gateway_runs)
        .map(|((setup, (raw, raw_paced)), runs)| {
            let comparison = compare(&raw, &runs.saturation);
            let multi_row = runs
                .multi_row
                .iter()
                .map(|m| multi_row_point(&raw, comparison.raw_best_items_per_s, m))
                .collect();
            let low_load =
                low_load_points(&raw, raw_paced, &http_floors, runs.low_load, runs.lean)?;
            Ok(ModelResult {
                model: setup.model,
                workers: setup.workers,
                intra_op_threads: setup.intra_op_threads,
                max_batch_size: setup.max_batch_size,
                raw,
                gateway_saturation: runs.saturation,
                saturation_connections: runs.connections,
                saturation_sweep: runs.sweep,
                multi_row,
                low_load,
                comparison,
            })
        })
        .collect::<Result<Vec<_>, BenchError>>()?;
    Ok(LocalResults {
        date,
        command: options.command.clone(),
        machine,
        load_average_at_end: load_average(),
        gateway_binary: binary.display().to_string(),
        gateway_config: format!("{}, child process on 127.0.0.1:0", config_path.display()),
        plan,
        gateway_idle,
        http_floors,
        trivial_pinned,
        models,
    })
}

/// Batch 1, batch 8 and the model's largest batch (where larger than 8).
fn raw_batches(max_batch_size: Option<u64>) -> Vec<u64> {
    let max = max_batch_size.unwrap_or(1);
    let mut batches: Vec<u64> = [1, 8, max].into_iter().filter(|&b| b <= max).collect();
    batches.dedup();
    batches
}

fn raw_variants(setup: &ModelSetup, plan: &Plan) -> Result<Vec<RawResult>, BenchError> {
    raw_batches(setup.max_batch_size)
        .into_iter()
        .map(|batch| {
            progress(&format!(
                "raw ONNX Runtime loop: {} batch {batch}, {} thread(s) x {} intra-op, {:.1} s",
                setup.model, setup.workers, setup.intra_op_threads, plan.raw_duration_s
            ));
            let result = run_raw(&RawPlan {
                model: setup.model.clone(),
                path: setup.path.clone(),
                threads: setup.workers,
                intra_op_threads: setup.intra_op_threads,
                batch,
                warmup: Duration::from_secs_f64(plan.raw_warmup_s),
                duration: Duration::from_secs_f64(plan.raw_duration_s),
                max_calls: plan.max_calls_per_raw_thread,
                paced_rate: None,
            })?;
            progress(&format!(
                "  {:.0} items/s, p50 {} µs, p99 {} µs per call",
                result.items_per_s, result.latency_us.p50, result.latency_us.p99
            ));
            Ok(result)
        })
        .collect()
}

/// One thread calling batch 1 at a low-load rate.
fn raw_paced(setup: &ModelSetup, plan: &Plan, rate: f64) -> Result<RawResult, BenchError> {
    progress(&format!(
        "raw ONNX Runtime paced: {} batch 1, 1 thread x {} intra-op, {rate} calls/s, {:.1} s",
        setup.model, setup.intra_op_threads, plan.low_load_duration_s
    ));
    let result = run_raw(&RawPlan {
        model: setup.model.clone(),
        path: setup.path.clone(),
        threads: 1,
        intra_op_threads: setup.intra_op_threads,
        batch: 1,
        warmup: Duration::from_secs_f64(plan.raw_warmup_s),
        duration: Duration::from_secs_f64(plan.low_load_duration_s),
        max_calls: plan.max_calls_per_raw_thread,
        paced_rate: Some(rate),
    })?;
    progress(&format!(
        "  p50 {} µs, p99 {} µs per call",
        result.latency_us.p50, result.latency_us.p99
    ));
    Ok(result)
}

/// Starts the gateway and measures every model against it. The gateway
/// process is killed when this returns, whatever happened.
async fn gateway_phases(
    binary: &Path,
    config: &Path,
    setups: &[ModelSetup],
    plan: &Plan,
    trivial_pinned: bool,
) -> Result<(IdleGateway, Vec<FloorRun>, Vec<GatewayModelRuns>), BenchError> {
    progress(&format!("starting the gateway: {}", binary.display()));
    let mut gateway = GatewayProcess::start_with_config(binary, config)?;
    let client = http_client(plan.max_connections());
    gateway.wait_ready(&client).await?;
    let idle = idle_gateway(&gateway, plan.idle_s).await;
    progress(&format!(
        "idle gateway uses {:.3} cores ({:.1} s measured)",
        idle.cores, idle.seconds
    ));
    progress(&format!(
        "starting the trivial server (hyper on tokio, nothing else; threads pinned: {trivial_pinned})"
    ));
    let trivial = GatewayProcess::start_trivial(trivial_pinned)?;
    let mut floors = Vec::new();
    let live = Arc::new(Target::probe(gateway.endpoint()?, "/v2/health/live")?);
    let root = Arc::new(Target::probe(trivial.endpoint()?, "/")?);
    let (live_wire, root_wire) = (wire_requests(&live), wire_requests(&root));
    for &rate in &plan.low_load_rates_per_s {
        floors.push(FloorRun {
            rate_per_s: rate,
            run: http_floor(&gateway, "/v2/health/live", &live, &client, plan, rate).await?,
            trivial: http_floor(&trivial, "/", &root, &client, plan, rate).await?,
            lean: lean_low_load(&gateway, "GET /v2/health/live", &live_wire, plan, rate).await?,
            lean_trivial: lean_low_load(&trivial, "GET / (trivial)", &root_wire, plan, rate)
                .await?,
        });
    }
    drop(trivial);
    let payload = PayloadSpec {
        batch_size: 1,
        binary: true,
        binary_output: true,
        variants: 8,
        seed: 1,
    };
    let mut runs = Vec::new();
    for setup in setups {
        let target =
            Arc::new(Target::prepare(&client, gateway.endpoint()?, &setup.model, &payload).await?);
        let mut sweep: Vec<(usize, GatewayRun)> = Vec::new();
        for &connections in &plan.saturation_connections {
            progress(&format!(
                "gateway at saturation: {} closed loop, {connections} connections, {:.1} s",
                setup.model, plan.saturation_duration_s
            ));
            let saturation = saturation_run(&gateway, &client, &target, plan, connections).await?;
            sweep.push((connections, saturation));
        }
        let mut multi_row = Vec::new();
        for rows in plan.multi_row_sizes(setup.max_batch_size) {
            let rows_payload = PayloadSpec {
                batch_size: rows,
                ..payload.clone()
            };
            let rows_target = Arc::new(
                Target::prepare(&client, gateway.endpoint()?, &setup.model, &rows_payload).await?,
            );
            let connections = plan.multi_row_connections(rows);
            progress(&format!(
                "gateway at saturation: {} closed loop, {rows} rows per request, \
                 {connections} connections, {:.1} s",
                setup.model, plan.saturation_duration_s
            ));
            let saturation =
                saturation_run(&gateway, &client, &rows_target, plan, connections).await?;
            multi_row.push(MultiRowRun {
                rows,
                connections,
                run: saturation,
            });
        }
        let mut low_load = Vec::new();
        let mut lean = Vec::new();
        let requests = wire_requests(&target);
        for &rate in &plan.low_load_rates_per_s {
            progress(&format!(
                "gateway at low load: {} open loop, {rate} req/s, {:.1} s",
                setup.model, plan.low_load_duration_s
            ));
            low_load.push(low_load_run(&gateway, &client, &target, plan, rate).await?);
            lean.push(lean_low_load(&gateway, &setup.model, &requests, plan, rate).await?);
        }
        runs.push(GatewayModelRuns::new(sweep, multi_row, low_load, lean)?);
    }
    Ok((idle, floors, runs))
}

/// A closed loop at `connections` after a warm-up, measured.
async fn saturation_run(
    gateway: &GatewayProcess,
    client: &HttpClient,
    target: &Arc<Target>,
    plan: &Plan,
    connections: usize,
) -> Result<GatewayRun, BenchError> {
    let closed = |seconds: f64| RunSettings {
        load: Load::Closed {
            concurrency: connections,
            duration: Duration::from_secs_f64(seconds),
        },
        max_duration: Duration::from_secs_f64(seconds),
        max_requests: Some(plan.max_requests_per_run),
        timeout: Duration::from_secs_f64(plan.request_timeout_s),
        keep_samples: false,
    };
    run(client, target, &closed(plan.saturation_warmup_s)).await?;
    let saturation = measured(gateway, client, target, &closed(plan.saturation_duration_s)).await?;
    progress(&format!(
        "  {:.0} req/s ({:.0} items/s), p50 {} µs, p99 {} µs, errors {}",
        saturation.report.throughput_per_s,
        saturation.report.items_per_s,
        saturation.report.latency_us.p50,
        saturation.report.latency_us.p99,
        saturation.report.counts.errors()
    ));
    Ok(saturation)
}

/// One multi-row saturation run, before it is set beside the raw loop.
struct MultiRowRun {
    rows: u64,
    connections: usize,
    run: GatewayRun,
}

/// One model's gateway runs: the saturation sweep, the multi-row runs and
/// the low-load runs.
struct GatewayModelRuns {
    /// The sweep's run with the most requests/s.
    saturation: GatewayRun,
    connections: usize,
    sweep: Vec<SweepPoint>,
    multi_row: Vec<MultiRowRun>,
    /// One run per low-load rate, in the plan's order.
    low_load: Vec<GatewayRun>,
    /// The same through the lean client.
    lean: Vec<LeanMeasured>,
}

impl GatewayModelRuns {
    fn new(
        sweep: Vec<(usize, GatewayRun)>,
        multi_row: Vec<MultiRowRun>,
        low_load: Vec<GatewayRun>,
        lean: Vec<LeanMeasured>,
    ) -> Result<Self, BenchError> {
        let points = sweep
            .iter()
            .map(|(connections, run)| SweepPoint {
                connections: *connections,
                requests_per_s: run.report.throughput_per_s,
                p50_us: run.report.latency_us.p50,
                p99_us: run.report.latency_us.p99,
                errors: run.report.counts.errors(),
                batch_rows_mean: run.report.server_timing.batch_rows.mean,
                gateway_cpu_us_per_request: run.gateway_cpu_us_per_request,
                other_cores: run.other_cores,
            })
            .collect();
        let (connections, saturation) = sweep
            .into_iter()
            .max_by(|a, b| {
                a.1.report
                    .throughput_per_s
                    .total_cmp(&b.1.report.throughput_per_s)
            })
            .ok_or_else(|| BenchError::Config("no saturation connection counts".into()))?;
        Ok(Self {
            saturation,
            connections,
            sweep: points,
            multi_row,
            low_load,
            lean,
        })
    }
}

/// The open-loop settings of a low-load run at `rate` requests/s.
fn open_loop(plan: &Plan, rate: f64, seconds: f64) -> Result<RunSettings, BenchError> {
    let duration = Duration::from_secs_f64(seconds);
    Ok(RunSettings {
        load: Load::constant_rate(rate, duration, plan.max_connections())?,
        max_duration: duration,
        max_requests: Some(plan.max_requests_per_run),
        timeout: Duration::from_secs_f64(plan.request_timeout_s),
        keep_samples: false,
    })
}

/// `GET path` on `server` at a low-load rate (`probe` sends it).
async fn http_floor(
    server: &GatewayProcess,
    path: &str,
    probe: &Arc<Target>,
    client: &HttpClient,
    plan: &Plan,
    rate: f64,
) -> Result<GatewayRun, BenchError> {
    progress(&format!(
        "HTTP floor: GET {path} on {}, open loop, {rate} req/s, {:.1} s",
        server.address, plan.low_load_duration_s
    ));
    low_load_run(server, client, probe, plan, rate).await
}

/// Every whole request `target` sends, in order, as the lean client writes
/// them.
fn wire_requests(target: &Target) -> Vec<bytes::Bytes> {
    target
        .entries
        .iter()
        .flat_map(|entry| entry.wire.iter().cloned())
        .collect()
}

/// `requests` (whole requests, sent in turn) to `server` at `rate`
/// through the lean client, on a thread of its own: a warm-up, then the
/// measured run.
async fn lean_low_load(
    server: &GatewayProcess,
    what: &str,
    requests: &[bytes::Bytes],
    plan: &Plan,
    rate: f64,
) -> Result<LeanMeasured, BenchError> {
    let address = server.address;
    progress(&format!(
        "lean client: {what} on {address}, {rate} req/s, {:.1} s",
        plan.low_load_duration_s
    ));
    let requests = requests.to_vec();
    let warmup = Duration::from_secs_f64(plan.low_load_warmup_s);
    let duration = Duration::from_secs_f64(plan.low_load_duration_s);
    let timeout = Duration::from_secs_f64(plan.request_timeout_s);
    let before = CpuReading::take(server);
    let run = tokio::task::spawn_blocking(move || {
        let requests: Vec<&[u8]> = requests.iter().map(AsRef::as_ref).collect();
        lean_run(address, &requests, rate, warmup, duration, timeout)
    })
    .await
    .map_err(|e| BenchError::Other(format!("the lean client's thread failed: {e}")))??;
    let used = CpuReading::take(server).since(&before);
    progress(&format!(
        "  p50 {} µs, p99 {} µs (from intended send time), errors {}",
        run.latency_us.p50, run.latency_us.p99, run.errors
    ));
    Ok(LeanMeasured {
        run,
        other_cores: used.other_cores,
    })
}

/// One low-load run of `target` on `server` at `rate`: a warm-up, then the
/// measured run.
async fn low_load_run(
    server: &GatewayProcess,
    client: &HttpClient,
    target: &Arc<Target>,
    plan: &Plan,
    rate: f64,
) -> Result<GatewayRun, BenchError> {
    run(
        client,
        target,
        &open_loop(plan, rate, plan.low_load_warmup_s)?,
    )
    .await?;
    let measured_run = measured(
        server,
        client,
        target,
        &open_loop(plan, rate, plan.low_load_duration_s)?,
    )
    .await?;
    progress(&format!(
        "  p50 {} µs, p99 {} µs (from intended send time), errors {}",
        measured_run.report.latency_us.p50,
        measured_run.report.latency_us.p99,
        measured_run.report.counts.errors()
    ));
    Ok(measured_run)
}

/// The gateway's CPU use with no load, so that background work is not
/// mistaken for per-request cost.
async fn idle_gateway(gateway: &GatewayProcess, seconds: f64) -> IdleGateway {
    let before = (gateway.cpu_time(), thread_cpu_times(gateway.pid()));
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let elapsed = started.elapsed();
    let after = (gateway.cpu_time(), thread_cpu_times(gateway.pid()));
    let cpu = cpu_between(before.0, after.0);
    IdleGateway {
        seconds: elapsed.as_secs_f64(),
        cores: cpu / elapsed.as_secs_f64().max(1e-9),
        threads: thread_cores(&before.1, &after.1, elapsed),
    }
}

/// One load-generator run with the CPU time of the gateway and of this
/// process (the client) during it.
#[allow(clippy::cast_precision_loss)]
async fn measured(
    gateway: &GatewayProcess,
    client: &HttpClient,
    target: &Arc<Target>,
    settings: &RunSettings,
) -> Result<GatewayRun, BenchError> {
    let me = std::process::id();
    let threads_before = (thread_cpu_times(gateway.pid()), thread_cpu_times(me));
    let before = CpuReading::take(gateway);
    let recording = run(client, target, settings).await?;
    let used = CpuReading::take(gateway).since(&before);
    let threads_after = (thread_cpu_times(gateway.pid()), thread_cpu_times(me));
    let requests = recording.report.sent.max(1) as f64;
    Ok(GatewayRun {
        gateway_cpu_us_per_request: used.server_s * 1e6 / requests,
        client_cpu_us_per_request: used.me_s * 1e6 / requests,
        gateway_cpu_s: used.server_s,
        client_cpu_s: used.me_s,
        other_cores: used.other_cores,
        gateway_threads: thread_cores(&threads_before.0, &threads_after.0, used.elapsed),
        client_threads: thread_cores(&threads_before.1, &threads_after.1, used.elapsed),
        report: recording.report,
    })
}

/// The CPU time of a server, of this process and of every process at one
/// moment; two readings give what each used in between.
struct CpuReading {
    server: Option<Duration>,
    me: Option<Duration>,
    processes: Option<ProcessesCpu>,
    at: Instant,
}

/// What [`CpuReading::since`] found.
struct CpuUsed {
    /// CPU seconds of the server and of this process.
    server_s: f64,
    me_s: f64,
    /// Cores that other processes used meanwhile.
    other_cores: f64,
    elapsed: Duration,
}

impl CpuReading {
    fn take(server: &GatewayProcess) -> Self {
        Self {
            server: server.cpu_time(),
            me: process_cpu_time(std::process::id()),
            processes: ProcessesCpu::read(),
            at: Instant::now(),
        }
    }

    fn since(&self, before: &Self) -> CpuUsed {
        let elapsed = self.at.saturating_duration_since(before.at);
        let server_s = cpu_between(before.server, self.server);
        let me_s = cpu_between(before.me, self.me);
        CpuUsed {
            server_s,
            me_s,
            other_cores: other_cores(
                (before.processes.as_ref(), self.processes.as_ref()),
                server_s + me_s,
                elapsed,
            ),
            elapsed,
        }
    }
}

fn compare(raw: &[RawResult], saturation: &GatewayRun) -> Comparison {
    let batch1 = raw.iter().find(|r| r.batch == 1);
    let best = raw
        .iter()
        .max_by(|a, b| a.items_per_s.total_cmp(&b.items_per_s));
    let raw_batch1_items_per_s = batch1.map_or(0.0, |r| r.items_per_s);
    let raw_best_items_per_s = best.map_or(0.0, |r| r.items_per_s);
    let gateway_items_per_s = saturation.report.items_per_s;
    let ratio = |raw: f64| throughput_ratio(gateway_items_per_s, raw);
    Comparison {
        raw_batch1_items_per_s,
        raw_best_items_per_s,
        raw_best_batch: best.map_or(1, |r| r.batch),
        gateway_items_per_s,
        ratio_vs_raw_batch1: ratio(raw_batch1_items_per_s),
        ratio_vs_raw_best: ratio(raw_best_items_per_s),
        throughput_target: THROUGHPUT_TARGET,
        throughput_target_met_vs_batch1: ratio(raw_batch1_items_per_s) >= THROUGHPUT_TARGET,
        throughput_target_met_vs_best: ratio(raw_best_items_per_s) >= THROUGHPUT_TARGET,
    }
}

/// Gateway items/s over raw items/s; 0 when the raw loop made none.
fn throughput_ratio(gateway_items_per_s: f64, raw_items_per_s: f64) -> f64 {
    if raw_items_per_s > 0.0 {
        gateway_items_per_s / raw_items_per_s
    } else {
        0.0
    }
}

/// A multi-row run beside the raw loop at the same batch and at its best
/// (`raw_best_items_per_s`, as [`compare`] found it).
#[allow(clippy::cast_precision_loss)]
fn multi_row_point(
    raw: &[RawResult],
    raw_best_items_per_s: f64,
    multi: &MultiRowRun,
) -> MultiRowPoint {
    let report = &multi.run.report;
    let same = raw
        .iter()
        .find(|r| r.batch == multi.rows)
        .map_or(0.0, |r| r.items_per_s);
    MultiRowPoint {
        rows: multi.rows,
        connections: multi.connections,
        requests_per_s: report.throughput_per_s,
        items_per_s: report.items_per_s,
        p50_us: report.latency_us.p50,
        p99_us: report.latency_us.p99,
        errors: report.counts.errors(),
        batch_rows_mean: report.server_timing.batch_rows.mean,
        gateway_cpu_us_per_item: multi.run.gateway_cpu_us_per_request / multi.rows.max(1) as f64,
        raw_items_per_s: same,
        ratio_vs_raw_same_batch: throughput_ratio(report.items_per_s, same),
        ratio_vs_raw_best: throughput_ratio(report.items_per_s, raw_best_items_per_s),
        other_cores: multi.run.other_cores,
        gateway_threads: multi.run.gateway_threads.clone(),
        client_threads: multi.run.client_threads.clone(),
    }
}

/// Pairs each low-load gateway run with the paced raw call and the HTTP
/// floor measured at the same rate.
fn low_load_points(
    raw: &[RawResult],
    raw_paced: Vec<RawResult>,
    floors: &[FloorRun],
    gateway: Vec<GatewayRun>,
    lean: Vec<LeanMeasured>,
) -> Result<Vec<LowLoadPoint>, BenchError> {
    if raw_paced.len() != gateway.len()
        || floors.len() != gateway.len()
        || lean.len() != gateway.len()
    {
        return Err(BenchError::Other(format!(
            "low-load runs do not line up: {} paced raw, {} HTTP floor, {} gateway, {} lean client",
            raw_paced.len(),
            floors.len(),
            gateway.len(),
            lean.len()
        )));
    }
    let raw_batch1_p50_us = raw
        .iter()
        .find(|r| r.batch == 1)
        .map_or(0, |r| r.latency_us.p50);
    Ok(raw_paced
        .into_iter()
        .zip(floors)
        .zip(gateway)
        .zip(lean)
        .map(|(((raw_paced, floor), gateway), lean)| {
            low_load_point(raw_batch1_p50_us, raw_paced, floor, gateway, lean)
        })
        .collect())
}

#[allow(clippy::cast_possible_wrap)]
fn low_load_point(
    raw_batch1_p50_us: u64,
    raw_paced: RawResult,
    floor: &FloorRun,
    gateway: GatewayRun,
    lean: LeanMeasured,
) -> LowLoadPoint {
    let low = &gateway.report;
    let p50 = low.latency_us.p50 as i64;
    let added_p50_us = p50 - raw_batch1_p50_us as i64;
    let floor_p50 = floor.run.report.latency_us.p50;
    let trivial_p50 = floor.trivial.report.latency_us.p50;
    LowLoadPoint {
        rate_per_s: floor.rate_per_s,
        raw_batch1_p50_us,
        added_p50_us,
        added_p50_from_send_us: low.service_time_us.p50 as i64 - raw_batch1_p50_us as i64,
        added_p50_vs_paced_raw_us: p50 - raw_paced.latency_us.p50 as i64,
        http_floor_p50_us: floor_p50,
        inference_path_p50_us: p50 - floor_p50 as i64,
        trivial_floor_p50_us: trivial_p50,
        over_trivial_floor_p50_us: p50 - trivial_p50 as i64,
        added_latency_target_us: ADDED_LATENCY_TARGET_US,
        added_latency_target_met: low.counts.success > 0 && added_p50_us <= ADDED_LATENCY_TARGET_US,
        lean: lean_point(raw_batch1_p50_us, floor, lean),
        raw_paced,
        gateway,
    }
}

#[allow(clippy::cast_possible_wrap)]
fn lean_point(raw_batch1_p50_us: u64, floor: &FloorRun, measured: LeanMeasured) -> LeanLowLoad {
    let run = &measured.run;
    let added_p50_us = run.latency_us.p50 as i64 - raw_batch1_p50_us as i64;
    LeanLowLoad {
        added_p50_us,
        http_floor_p50_us: floor.lean.run.latency_us.p50,
        trivial_floor_p50_us: floor.lean_trivial.run.latency_us.p50,
        // Every request sent and answered 2xx: the p50 counts only those.
        added_latency_target_met: run.success > 0
            && run.errors == 0
            && run.unsent == 0
            && added_p50_us <= ADDED_LATENCY_TARGET_US,
        run: measured,
    }
}

/// The gateway binary, built first unless told otherwise: a stale binary
/// would silently measure old code.
pub(crate) fn gateway_binary(options: &LocalOptions) -> Result<PathBuf, BenchError> {
    if let Some(path) = &options.gateway_bin {
        return Ok(path.clone());
    }
    let exe = std::env::current_exe().map_err(|source| BenchError::Io {
        context: "cannot locate this executable",
        path: PathBuf::from("(current exe)"),
        source,
    })?;
    let binary = exe.with_file_name("switchyard");
    if options.build_gateway {
        // Under `cargo run` CARGO names the cargo that built us.
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        progress("building the gateway: cargo build --release --locked --workspace --bins");
        run_build(Command::new(&cargo).args([
            "build",
            "--release",
            "--locked",
            "--workspace",
            "--bins",
        ]))?;
        // Cargo has just put its own (plain) build of the gateway at
        // target/release/switchyard; `make build` puts back the
        // profile-guided one that `make run` serves (rebuilding it first
        // if the sources changed), so that the bench measures that.
        progress("building the gateway: make build (profile-guided, PGO=0 to skip)");
        run_build(Command::new("make").args(["--no-print-directory", "build"]))?;
    }
    if binary.is_file() {
        Ok(binary)
    } else {
        Err(BenchError::Other(format!(
            "no gateway binary at {}; run `make build` or pass --gateway-bin",
            binary.display()
        )))
    }
}

/// Runs a build step; a failure says how to go on without it.
fn run_build(command: &mut Command) -> Result<(), BenchError> {
    let status = command.status().map_err(|source| BenchError::Io {
        context: "cannot run the build",
        path: PathBuf::from(command.get_program()),
        source,
    })?;
    if status.success() {
        Ok(())
    } else {
        Err(BenchError::Other(format!(
            "building the gateway failed ({status}); fix the build or pass --gateway-bin"
        )))
    }
}

/// A progress line on stderr (stdout carries only the final table).
#[allow(clippy::print_stderr)]
pub fn progress(message: &str) {
    eprintln!("{message}");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_batches_cover_one_eight_and_the_largest() {
        assert_eq!(raw_batches(Some(64)), vec![1, 8, 64]);
        assert_eq!(raw_batches(Some(8)), vec![1, 8]);
        assert_eq!(raw_batches(Some(4)), vec![1, 4]);
        assert_eq!(raw_batches(None), vec![1]);
    }

    #[test]
    fn multi_row_runs_use_the_raw_batches_above_one() {
        let full = Plan::new(false);
        assert_eq!(full.multi_row_sizes(Some(256)), vec![8, 256]);
        assert_eq!(full.multi_row_sizes(Some(8)), vec![8]);
        assert!(full.multi_row_sizes(None).is_empty());
        let quick = Plan::new(true);
        assert_eq!(quick.multi_row_sizes(Some(64)), vec![64]);
        assert!(quick.multi_row_sizes(Some(1)).is_empty());
    }

    #[test]
    fn multi_row_connections_keep_the_rows_in_flight_within_the_pool() {
        let plan = Plan::new(false);
        assert_eq!(plan.multi_row_connections(8), 64);
        assert_eq!(plan.multi_row_connections(64), 8);
        // Fewer rows in flight than asked rather than below the minimum.
        assert_eq!(plan.multi_row_connections(256), 8);
        // Never more connections than the client's pool.
        assert_eq!(plan.multi_row_connections(1), plan.max_connections());
    }

    #[test]
    fn both_plans_fit_their_time_budgets() {
        // Per model: raw variants (up to three), saturation (batch 1 and
        // multi-row), the paced raw
        // call and the gateway at each low-load rate through both clients,
        // plus warm-ups; two models; the two HTTP floors at each rate once
        // through each client. Start-up and model loading come on top.
        for (quick, budget) in [(true, 50.0), (false, 330.0)] {
            let p = Plan::new(quick);
            let rates = p.low_load_rates_per_s.len() as f64;
            let saturation_runs =
                p.saturation_connections.len() + p.multi_row_sizes(Some(256)).len();
            let per_model = 3.0 * (p.raw_warmup_s + p.raw_duration_s)
                + saturation_runs as f64 * (p.saturation_warmup_s + p.saturation_duration_s)
                + rates * (2.0 * p.low_load_warmup_s + 3.0 * p.low_load_duration_s);
            let shared = p.idle_s + 4.0 * rates * (p.low_load_warmup_s + p.low_load_duration_s);
            assert!(
                2.0 * per_model + shared < budget,
                "quick={quick}: {per_model} s per model"
            );
        }
    }
}
