//! Policies as written in TOML: a default policy and per-model policies,
//! in a policy file or in the gateway config's `[placement]` section:
//!
//! ```toml
//! [default]
//! policy = "straightline"
//! frequency_threshold = 300        # F, requests/s
//! data_size_threshold_bytes = 65536  # D
//!
//! [models.xception]
//! policy = "adaptive"
//! slo_p99_ms = 800
//! ```
//!
//! [`PolicySet::build`] validates a parsed file against the backends the
//! gateway runs, so a set that was built can be swapped in whole.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use serde::Deserialize;
use switchyard_models::toml_config::{TomlError, from_toml};

use super::{
    Adaptive, AdaptiveParams, BackendCosts, LeastLoaded, Ordered, Policy, PrewarmParams,
    RoundRobin, Static, Straightline,
};

/// One policy as written.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "policy", rename_all = "snake_case", deny_unknown_fields)]
pub enum PolicySpec {
    /// First backend in `order` with room (default order: as configured).
    Ordered {
        #[serde(default)]
        order: Option<Vec<String>>,
    },
    /// Always `backend`.
    Static { backend: String },
    /// Turns among the backends with room.
    RoundRobin {},
    /// Power of two choices over latency × in-flight.
    LeastLoaded {},
    /// The StraightLine paper's Algorithm 1.
    Straightline {
        frequency_threshold: f64,
        data_size_threshold_bytes: u64,
        #[serde(default = "default_local")]
        local: String,
        #[serde(default = "default_docker")]
        docker: String,
        #[serde(default = "default_serverless")]
        serverless: String,
    },
    /// Meet `slo_p99_ms` at the least cost.
    Adaptive {
        slo_p99_ms: f64,
        #[serde(default)]
        max_failure_rate: Option<f64>,
        #[serde(default)]
        tail_factor: Option<f64>,
        #[serde(default)]
        host_saturation: Option<f64>,
        #[serde(default)]
        prior_latency_ms: Option<PerKind>,
        #[serde(default)]
        cold_start_ms: Option<PerKind>,
        #[serde(default)]
        costs: Option<CostsSpec>,
        #[serde(default)]
        prewarm: Option<PrewarmSpec>,
    },
}

/// Pre-warming of `adaptive`, each key defaulting to
/// [`PrewarmParams::default`]; `horizon_s = 0` turns it off.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrewarmSpec {
    pub horizon_s: Option<f64>,
    pub utilization: Option<f64>,
}

/// A value per backend kind.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PerKind {
    pub local: Option<f64>,
    pub container: Option<f64>,
    pub lambda: Option<f64>,
}

/// Prices, each defaulting to [`BackendCosts::default`].
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostsSpec {
    pub local_per_second: Option<f64>,
    pub container_per_second: Option<f64>,
    pub lambda_per_gb_second: Option<f64>,
    pub lambda_per_request: Option<f64>,
    pub lambda_memory_mb: Option<f64>,
    pub container_min_seconds: Option<f64>,
}

fn default_local() -> String {
    "local".into()
}
fn default_docker() -> String {
    "container".into()
}
fn default_serverless() -> String {
    "lambda".into()
}

/// A policy file.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// The policy of models without their own.
    #[serde(default)]
    pub default: Option<PolicySpec>,
    /// Per-model policies.
    #[serde(default)]
    pub models: BTreeMap<String, PolicySpec>,
}

impl PolicyFile {
    /// Parses policy-file TOML.
    pub fn parse(text: &str) -> Result<Self, TomlError> {
        from_toml(text)
    }
}

/// Built policies, ready to place requests.
#[derive(Debug, Clone)]
pub struct PolicySet {
    default: Arc<dyn Policy>,
    models: HashMap<String, Arc<dyn Policy>>,
    /// Where the set came from, for reports.
    pub source: String,
}

impl PolicySet {
    /// Validates `file` against the enabled `backends` and known `models`
    /// and builds every policy. Without a default, the default is `ordered`
    /// over the backends as configured.
    pub fn build(
        file: &PolicyFile,
        backends: &[String],
        models: &[String],
        source: &str,
    ) -> Result<Self, TomlError> {
        let default = match &file.default {
            Some(spec) => build(spec, backends, "default")?,
            None => Arc::new(Ordered {
                order: backends.to_vec(),
            }) as Arc<dyn Policy>,
        };
        let mut built = HashMap::new();
        for (model, spec) in &file.models {
            if !models.contains(model) {
                return Err(TomlError {
                    key: format!("models.{model}"),
                    message: format!("no model {model:?} is served; served models are {models:?}"),
                });
            }
            built.insert(
                model.clone(),
                build(spec, backends, &format!("models.{model}"))?,
            );
        }
        Ok(Self {
            default,
            models: built,
            source: source.to_owned(),
        })
    }

    /// The policy for `model`.
    pub fn for_model(&self, model: &str) -> &Arc<dyn Policy> {
        self.models.get(model).unwrap_or(&self.default)
    }

    /// `(model or "*", policy)` for every entry, for reports.
    pub fn describe(&self) -> Vec<(String, String)> {
        let mut rows = vec![("*".to_owned(), format!("{:?}", self.default))];
        let mut models: Vec<_> = self.models.iter().collect();
        models.sort_by(|a, b| a.0.cmp(b.0));
        rows.extend(
            models
                .into_iter()
                .map(|(m, p)| (m.clone(), format!("{p:?}"))),
        );
        rows
    }
}

fn build(spec: &PolicySpec, backends: &[String], key: &str) -> Result<Arc<dyn Policy>, TomlError> {
    let error = |field: &str, message: String| TomlError {
        key: format!("{key}.{field}"),
        message,
    };
    let known = |field: &str, name: &str| {
        if backends.iter().any(|b| b == name) {
            Ok(name.to_owned())
        } else {
            Err(error(
                field,
                format!("{name:?} is not an enabled backend; enabled: {backends:?}"),
            ))
        }
    };
    let range = |field: &str, value: f64, low: f64, high: f64| {
        if value.is_finite() && (low..=high).contains(&value) {
            Ok(value)
        } else {
            Err(error(
                field,
                format!("is {value}; it must be between {low} and {high}"),
            ))
        }
    };
    Ok(match spec {
        PolicySpec::Ordered { order } => {
            let order = match order {
                Some(order) if order.is_empty() => {
                    return Err(error("order", "must name at least one backend".into()));
                }
                Some(order) => order
                    .iter()
                    .map(|n| known("order", n))
                    .collect::<Result<_, _>>()?,
                None => backends.to_vec(),
            };
            Arc::new(Ordered { order })
        }
        PolicySpec::Static { backend } => Arc::new(Static {
            backend: known("backend", backend)?,
        }),
        PolicySpec::RoundRobin {} => Arc::new(RoundRobin::default()),
        PolicySpec::LeastLoaded {} => Arc::new(LeastLoaded),
        PolicySpec::Straightline {
            frequency_threshold,
            data_size_threshold_bytes,
            local,
            docker,
            serverless,
        } => {
            // Tiers that are not enabled are allowed: Algorithm 1 then falls
            // back to the tiers that exist, and says so in its reason.
            Arc::new(Straightline {
                frequency_threshold: range("frequency_threshold", *frequency_threshold, 0.0, 1e9)?,
                data_size_threshold: *data_size_threshold_bytes,
                local: local.clone(),
                docker: docker.clone(),
                serverless: serverless.clone(),
            })
        }
        PolicySpec::Adaptive {
            slo_p99_ms,
            max_failure_rate,
            tail_factor,
            host_saturation,
            prior_latency_ms,
            cold_start_ms,
            costs,
            prewarm,
        } => {
            let defaults = AdaptiveParams::default();
            let per_kind = |field: &str,
                            given: &Option<PerKind>,
                            fallback: [f64; 3]|
             -> Result<[f64; 3], TomlError> {
                let given = given.unwrap_or(PerKind {
                    local: None,
                    container: None,
                    lambda: None,
                });
                Ok([
                    range(
                        &format!("{field}.local"),
                        given.local.unwrap_or(fallback[0]),
                        0.0,
                        1e7,
                    )?,
                    range(
                        &format!("{field}.container"),
                        given.container.unwrap_or(fallback[1]),
                        0.0,
                        1e7,
                    )?,
                    range(
                        &format!("{field}.lambda"),
                        given.lambda.unwrap_or(fallback[2]),
                        0.0,
                        1e7,
                    )?,
                ])
            };
            let c = costs.unwrap_or(CostsSpec {
                local_per_second: None,
                container_per_second: None,
                lambda_per_gb_second: None,
                lambda_per_request: None,
                lambda_memory_mb: None,
                container_min_seconds: None,
            });
            let d = defaults.costs;
            Arc::new(Adaptive {
                params: AdaptiveParams {
                    slo_p99_ms: range("slo_p99_ms", *slo_p99_ms, 0.001, 3.6e6)?,
                    max_failure_rate: range(
                        "max_failure_rate",
                        max_failure_rate.unwrap_or(defaults.max_failure_rate),
                        0.0,
                        1.0,
                    )?,
                    tail_factor: range(
                        "tail_factor",
                        tail_factor.unwrap_or(defaults.tail_factor),
                        1.0,
                        100.0,
                    )?,
                    host_saturation: range(
                        "host_saturation",
                        host_saturation.unwrap_or(defaults.host_saturation),
                        0.05,
                        1.0,
                    )?,
                    prior_latency_ms: per_kind(
                        "prior_latency_ms",
                        prior_latency_ms,
                        defaults.prior_latency_ms,
                    )?,
                    cold_start_ms: per_kind(
                        "cold_start_ms",
                        cold_start_ms,
                        defaults.cold_start_ms,
                    )?,
                    costs: BackendCosts {
                        local_per_second: range(
                            "costs.local_per_second",
                            c.local_per_second.unwrap_or(d.local_per_second),
                            0.0,
                            1e3,
                        )?,
                        container_per_second: range(
                            "costs.container_per_second",
                            c.container_per_second.unwrap_or(d.container_per_second),
                            0.0,
                            1e3,
                        )?,
                        lambda_per_gb_second: range(
                            "costs.lambda_per_gb_second",
                            c.lambda_per_gb_second.unwrap_or(d.lambda_per_gb_second),
                            0.0,
                            1e3,
                        )?,
                        lambda_per_request: range(
                            "costs.lambda_per_request",
                            c.lambda_per_request.unwrap_or(d.lambda_per_request),
                            0.0,
                            1e3,
                        )?,
                        lambda_memory_mb: range(
                            "costs.lambda_memory_mb",
                            c.lambda_memory_mb.unwrap_or(d.lambda_memory_mb),
                            128.0,
                            10240.0,
                        )?,
                        container_min_seconds: range(
                            "costs.container_min_seconds",
                            c.container_min_seconds.unwrap_or(d.container_min_seconds),
                            0.0,
                            86400.0,
                        )?,
                    },
                    prewarm: PrewarmParams {
                        horizon_s: range(
                            "prewarm.horizon_s",
                            prewarm
                                .and_then(|w| w.horizon_s)
                                .unwrap_or(defaults.prewarm.horizon_s),
                            0.0,
                            3600.0,
                        )?,
                        utilization: range(
                            "prewarm.utilization",
                            prewarm
                                .and_then(|w| w.utilization)
                                .unwrap_or(defaults.prewarm.utilization),
                            0.05,
                            1.0,
                        )?,
                    },
                },
            })
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backends() -> Vec<String> {
        vec!["local".into(), "container".into(), "lambda".into()]
    }

    fn models() -> Vec<String> {
        vec!["digits".into(), "xception".into()]
    }

    #[test]
    fn builds_a_default_and_per_model_policies() {
        let file = PolicyFile::parse(
            r#"
[default]
policy = "straightline"
frequency_threshold = 300
data_size_threshold_bytes = 65536

[models.xception]
policy = "adaptive"
slo_p99_ms = 800
costs = { lambda_memory_mb = 3008 }
prewarm = { horizon_s = 30, utilization = 0.5 }
"#,
        )
        .expect("parses");
        let set = PolicySet::build(&file, &backends(), &models(), "test").expect("builds");
        assert_eq!(set.for_model("digits").name(), "straightline");
        assert_eq!(set.for_model("xception").name(), "adaptive");
        assert_eq!(set.for_model("unlisted").name(), "straightline");
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let cases = [
            (
                "[default]\npolicy = \"fastest\"\n",
                "default",
                "unknown variant",
            ),
            (
                "[default]\npolicy = \"static\"\nbackend = \"gpu\"\n",
                "default.backend",
                "not an enabled backend",
            ),
            (
                "[models.resnet]\npolicy = \"round_robin\"\n",
                "models.resnet",
                "no model",
            ),
            (
                "[default]\npolicy = \"adaptive\"\nslo_p99_ms = -1\n",
                "default.slo_p99_ms",
                "between",
            ),
            (
                "[default]\npolicy = \"adaptive\"\nslo_p99_ms = 5\nslo = 3\n",
                "default",
                "unknown field",
            ),
            (
                "[default]\npolicy = \"ordered\"\norder = []\n",
                "default.order",
                "at least one",
            ),
            (
                "[default]\npolicy = \"adaptive\"\nslo_p99_ms = 5\nprewarm = { utilization = 2 }\n",
                "default.prewarm.utilization",
                "between",
            ),
            (
                "[default]\npolicy = \"adaptive\"\nslo_p99_ms = 5\nhost_saturation = 0\n",
                "default.host_saturation",
                "between",
            ),
        ];
        for (text, key, message) in cases {
            let error = PolicyFile::parse(text)
                .and_then(|file| {
                    PolicySet::build(&file, &backends(), &models(), "test").map(|_| ())
                })
                .expect_err(text);
            assert!(
                error.key.starts_with(key),
                "{text:?}: key {:?} should be {key:?}",
                error.key
            );
            assert!(
                error.message.contains(message),
                "{text:?}: {:?} should say {message:?}",
                error.message
            );
        }
    }

    #[test]
    fn without_a_default_the_policy_is_ordered_over_the_configured_backends() {
        let set = PolicySet::build(&PolicyFile::default(), &backends(), &models(), "test")
            .expect("builds");
        assert_eq!(set.for_model("digits").name(), "ordered");
    }
}
