//! `switchyard policy check FILE`: validate a policy file and show, for each
//! model, what its policy would decide in a few typical situations, with
//! synthetic backend states. Nothing is started.

use std::fmt::Write as _;
use std::path::Path;

use switchyard_backends::{BackendKind, BackendSnapshot};
use switchyard_models::ModelRepository;

use crate::Config;
use crate::measure::RequestRate;
use crate::placement::PolicySource;
use crate::policy::{BackendView, Observed, RequestFeatures};

/// A situation to show a decision for.
struct Scenario {
    what: &'static str,
    rate: f64,
    payload_bytes: u64,
    local_busy: bool,
    /// The host's CPU busy share the request sees.
    host_cpu_busy: Option<f64>,
}

const SCENARIOS: [Scenario; 5] = [
    Scenario {
        what: "quiet, 4 KiB",
        rate: 1.0,
        payload_bytes: 4096,
        local_busy: false,
        host_cpu_busy: Some(0.3),
    },
    Scenario {
        what: "burst of 1,000/s, 4 KiB",
        rate: 1000.0,
        payload_bytes: 4096,
        local_busy: false,
        host_cpu_busy: Some(0.3),
    },
    Scenario {
        what: "quiet, 8 MiB payload",
        rate: 1.0,
        payload_bytes: 8 << 20,
        local_busy: false,
        host_cpu_busy: Some(0.3),
    },
    Scenario {
        what: "local full, 4 KiB",
        rate: 5.0,
        payload_bytes: 4096,
        local_busy: true,
        host_cpu_busy: Some(0.6),
    },
    Scenario {
        what: "local full, host CPU 97%",
        rate: 5.0,
        payload_bytes: 4096,
        local_busy: true,
        host_cpu_busy: Some(0.97),
    },
];

/// Validates `file` and returns the report, or the error to print.
pub fn run(file: &Path, config: Option<&Path>) -> Result<String, String> {
    let (backends, models) = match config {
        Some(path) => {
            let config = Config::load(path).map_err(|e| e.to_string())?;
            let models = config.repository.models.keys().cloned().collect::<Vec<_>>();
            (config.placement.backends, models)
        }
        None => {
            let repository =
                ModelRepository::load(Path::new("models/repository")).map_err(|e| e.to_string())?;
            let backends = ["local", "container", "lambda"].map(str::to_owned).to_vec();
            (backends, repository.models.keys().cloned().collect())
        }
    };
    let source = PolicySource::new(
        Some(file.to_owned()),
        Default::default(),
        backends.clone(),
        models.clone(),
    );
    let set = source.build().map_err(|e| e.to_string())?;
    let mut out = format!(
        "{}: ok\nbackends: {} (synthetic states; local and container on this host, lambda \
         remote)\n",
        file.display(),
        backends.join(", ")
    );
    for model in &models {
        let policy = set.for_model(model);
        let _ = writeln!(out, "\nmodel {model}: {}", policy.name());
        for scenario in &SCENARIOS {
            let views = synthetic_backends(&backends, scenario.local_busy);
            let request = RequestFeatures {
                model,
                payload_bytes: scenario.payload_bytes,
                rate: RequestRate::steady(scenario.rate),
                random: 0,
                host_cpu_busy: scenario.host_cpu_busy,
                refused_on_host: false,
            };
            let decision = match policy.place(&request, &views) {
                Some(d) => format!("{} ({})", views[d.backend].snapshot.name, d.reason),
                None => "refused: no backend can take it".to_owned(),
            };
            let _ = writeln!(out, "  {:<26} -> {decision}", scenario.what);
        }
    }
    Ok(out)
}

/// Typical states: local with 4 slots, a container pool able to scale out,
/// both on this host; Lambda (remote) with its 6 MB payload limit.
fn synthetic_backends(names: &[String], local_busy: bool) -> Vec<BackendView> {
    names
        .iter()
        .map(|name| {
            let kind = match name.as_str() {
                "container" => BackendKind::Container,
                "lambda" => BackendKind::Lambda,
                _ => BackendKind::Local,
            };
            let (in_flight, concurrency, capacity, headroom, max_payload_bytes) = match kind {
                BackendKind::Local => (if local_busy { 4 } else { 0 }, 2, 4, 0, None),
                BackendKind::Container => (0, 4, 8, 16, None),
                BackendKind::Lambda => (0, 10, 100, 90, Some(6 * 1024 * 1024)),
            };
            BackendView {
                snapshot: BackendSnapshot {
                    name: name.clone(),
                    kind,
                    ready: true,
                    in_flight,
                    queued: 0,
                    concurrency,
                    capacity,
                    headroom,
                    max_payload_bytes,
                    unready_reason: None,
                    cold_start_ms: None,
                    memory_mb: None,
                    shares_host_cpu: kind != BackendKind::Lambda,
                },
                observed: Observed::default(),
            }
        })
        .collect()
}
