//! `switchyard-bench profile`: measures the local tier of this machine
//! through the gateway, by model and batch size, and writes a simulator
//! profile (the format of `config/profiles/default.toml`).
//!
//! The gateway runs as a child process with `config/local-only.toml`. For
//! each model and batch size, requests sent one at a time (so none waits
//! behind another) measure the backend's time from the gateway's own
//! headers (`switchyard-queue-time-us` + `switchyard-inference-time-us`,
//! p50 and p99 each); the gateway's overhead is the client's latency minus
//! that, on batch-1 requests of the lightest model. Everything else (the
//! container and Lambda tiers, prices, queue sizes) is copied from the
//! template profile.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use switchyard_loadgen::{Load, PayloadSpec, Report, RunSettings, Target, http_client, run};
use switchyard_scheduler::sim::ProfileFile;
use switchyard_scheduler::sim::profile::{BatchPoint, Percentiles};

use crate::error::BenchError;
use crate::gateway_process::GatewayProcess;
use crate::local::{LocalOptions, gateway_binary, progress};
use crate::machine::{Machine, utc_now};

/// What to measure and where to write it.
#[derive(Debug, Clone)]
pub struct ProfileOptions {
    pub quick: bool,
    pub template: PathBuf,
    pub out: PathBuf,
    pub gateway: LocalOptions,
}

/// One measured point.
#[derive(Debug, Clone, Copy)]
struct Measured {
    backend: Percentiles,
    client: Percentiles,
}

/// Requests per point.
fn plan(model: &str, quick: bool) -> u64 {
    match (quick, model == "xception") {
        (true, true) => 6,
        (true, false) => 100,
        (false, true) => 30,
        (false, false) => 400,
    }
}

fn batches(model: &str, max_batch: u64, quick: bool) -> Vec<u64> {
    let mut list: Vec<u64> = [1, 8, max_batch]
        .into_iter()
        .filter(|&b| b <= max_batch)
        .collect();
    if quick && model == "xception" {
        list.truncate(1);
    }
    list.dedup();
    list
}

fn ms(us: u64) -> f64 {
    us as f64 / 1000.0
}

fn point(report: &Report) -> Result<Measured, BenchError> {
    if report.counts.success == 0 || report.counts.errors() > 0 {
        return Err(BenchError::Other(format!(
            "{}: {} of {} requests failed; is the machine busy?",
            report
                .per_model
                .keys()
                .next()
                .map_or("the model", String::as_str),
            report.counts.errors(),
            report.scheduled
        )));
    }
    let t = &report.server_timing;
    let p50 = (ms(t.queue_us.p50 + t.inference_us.p50)).max(0.001);
    let p99 = (ms(t.queue_us.p99 + t.inference_us.p99)).max(p50);
    Ok(Measured {
        backend: Percentiles {
            p50_ms: p50,
            p99_ms: p99,
        },
        client: Percentiles {
            p50_ms: ms(report.latency_us.p50).max(p50),
            p99_ms: ms(report.latency_us.p99).max(p99),
        },
    })
}

/// Measures and writes the profile; returns its text.
pub fn run_profile(options: &ProfileOptions) -> Result<String, BenchError> {
    let text = std::fs::read_to_string(&options.template).map_err(|source| BenchError::Io {
        context: "cannot read the template profile",
        path: options.template.clone(),
        source,
    })?;
    let mut file = ProfileFile::parse(&text)
        .map_err(|e| BenchError::Config(format!("{}: {e}", options.template.display())))?;
    let binary = gateway_binary(&options.gateway)?;
    let local = file.backends.local.as_ref().ok_or_else(|| {
        BenchError::Config(format!(
            "{}: the template has no [backends.local] to measure",
            options.template.display()
        ))
    })?;
    let models: Vec<(String, u64)> = local
        .models
        .keys()
        .filter_map(|name| {
            file.models
                .get(name)
                .map(|m| (name.clone(), m.max_batch_size))
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .map_err(|e| BenchError::Other(format!("cannot start the async runtime: {e}")))?;
    let measured = runtime.block_on(async {
        tokio::select! {
            result = measure(&binary, &models, options.quick) => result,
            () = switchyard_scheduler::server::shutdown_signal() => Err(BenchError::Other("interrupted; the gateway was stopped".into())),
        }
    })?;
    let mut overhead: Option<Percentiles> = None;
    for (model, points) in &measured {
        if let Some(entry) = file
            .backends
            .local
            .as_mut()
            .and_then(|l| l.models.get_mut(model))
        {
            entry.latency = points
                .iter()
                .map(|(batch, m)| BatchPoint {
                    batch: *batch,
                    p50_ms: m.backend.p50_ms,
                    p99_ms: m.backend.p99_ms,
                })
                .collect();
        }
        // The overhead from the lightest model's batch-1 requests.
        if let Some((_, m)) = points.iter().find(|(b, _)| *b == 1) {
            let candidate = Percentiles {
                p50_ms: (m.client.p50_ms - m.backend.p50_ms).max(0.001),
                p99_ms: (m.client.p99_ms - m.backend.p99_ms)
                    .max(m.client.p50_ms - m.backend.p50_ms)
                    .max(0.001),
            };
            if overhead.is_none_or(|o| candidate.p50_ms < o.p50_ms) {
                overhead = Some(candidate);
            }
        }
    }
    if let Some(o) = overhead {
        file.gateway.overhead = o;
    }
    // The result must be a valid profile.
    file.validate()
        .map_err(|e| BenchError::Other(format!("the measured profile is invalid: {e}")))?;
    let body = file.to_toml().map_err(BenchError::Other)?;
    let machine = Machine::describe();
    let header = format!(
        "# Simulator profile written by `switchyard-bench profile{}` on {}.\n\
         # Machine: {} CPUs, {}, load average at start {}.\n\
         # [backends.local] latencies and [gateway] overhead were measured through\n\
         # the gateway (config/local-only.toml); everything else is copied from\n\
         # {}. config/profiles/default.toml documents every key.\n\n",
        if options.quick { " --quick" } else { "" },
        utc_now(),
        machine.nproc,
        machine.cpu_model,
        machine.load_average_at_start,
        options.template.display()
    );
    let text = header + &body;
    write(&options.out, &text)?;
    progress(&format!("wrote {}", options.out.display()));
    Ok(text)
}

fn write(path: &Path, text: &str) -> Result<(), BenchError> {
    std::fs::write(path, text).map_err(|source| BenchError::Io {
        context: "cannot write the profile",
        path: path.to_owned(),
        source,
    })
}

type Points = Vec<(u64, Measured)>;

async fn measure(
    binary: &Path,
    models: &[(String, u64)],
    quick: bool,
) -> Result<Vec<(String, Points)>, BenchError> {
    let mut gateway = GatewayProcess::start(binary)?;
    let client = http_client(16);
    gateway.wait_ready(&client).await?;
    let endpoint = gateway.endpoint()?;
    let mut all = Vec::new();
    for (model, max_batch) in models {
        let mut points = Vec::new();
        for batch in batches(model, *max_batch, quick) {
            let payload = PayloadSpec {
                batch_size: batch,
                binary: true,
                ..PayloadSpec::default()
            };
            let target =
                Arc::new(Target::prepare(&client, endpoint.clone(), model, &payload).await?);
            let count = plan(model, quick);
            // One request at a time (closed loop, one connection): none
            // ever waits behind another, whatever the model's speed.
            let settings = |count: u64| RunSettings {
                load: Load::Closed {
                    concurrency: 1,
                    duration: Duration::from_secs(120),
                },
                max_duration: Duration::from_secs(120),
                max_requests: Some(count),
                timeout: Duration::from_secs(30),
                keep_samples: false,
            };
            // A few requests first: the first calls of a session are slow.
            run(&client, &target, &settings(3)).await?;
            let recording = run(&client, &target, &settings(count)).await?;
            let measured = point(&recording.report)?;
            progress(&format!(
                "profile: {model} batch {batch}: backend p50 {:.3} ms, p99 {:.3} ms; client p50 {:.3} ms",
                measured.backend.p50_ms, measured.backend.p99_ms, measured.client.p50_ms
            ));
            points.push((batch, measured));
        }
        all.push((model.clone(), points));
    }
    drop(gateway);
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_sizes_cover_one_eight_and_the_largest() {
        assert_eq!(batches("fashion_cnn", 64, false), vec![1, 8, 64]);
        assert_eq!(batches("xception", 8, false), vec![1, 8]);
        assert_eq!(batches("xception", 8, true), vec![1]);
        assert_eq!(batches("m", 1, false), vec![1]);
    }
}
