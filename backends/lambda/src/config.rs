//! The `[backends.lambda]` config section: parsed with unknown keys
//! rejected ([`LambdaFile`]), then validated into a [`LambdaConfig`] that
//! cannot be invalid. Every key is documented in `config/example.toml`.

use std::time::Duration;

use serde::Deserialize;
use switchyard_models::toml_config::TomlError;
use switchyard_models::{ModelRepository, ModelSelection};

use crate::cost::Pricing;

/// Lambda's limit on a synchronous (`RequestResponse`) Invoke payload:
/// 6 MB, request and response each.
pub const SYNC_PAYLOAD_LIMIT_BYTES: u64 = 6 * 1024 * 1024;

/// The `[backends.lambda]` section as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LambdaFile {
    #[serde(default = "default_function_name")]
    function_name: String,
    #[serde(default)]
    qualifier: Option<String>,
    #[serde(default)]
    region: Option<String>,
    #[serde(default)]
    endpoint: Option<String>,
    #[serde(default)]
    shares_host_cpu: Option<bool>,
    #[serde(default)]
    models: Option<ModelSelection>,
    #[serde(default = "default_memory_mb")]
    memory_mb: u64,
    #[serde(default = "default_timeout_ms")]
    timeout_ms: u64,
    #[serde(default = "default_connect_timeout_ms")]
    connect_timeout_ms: u64,
    #[serde(default = "default_reserved_concurrency")]
    reserved_concurrency: u64,
    #[serde(default = "default_payload_limit")]
    payload_limit_bytes: u64,
    #[serde(default = "default_retry_down_ms")]
    retry_down_after_ms: u64,
    #[serde(default = "default_window_ms")]
    recent_window_ms: u64,
    #[serde(default = "default_idle_ms")]
    instance_idle_ms: u64,
    #[serde(default)]
    pricing: PricingFile,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct PricingFile {
    gb_second_dollars: f64,
    request_dollars: f64,
    billing_granularity_ms: u64,
}

impl Default for PricingFile {
    fn default() -> Self {
        let pricing = Pricing::default();
        Self {
            gb_second_dollars: pricing.gb_second_dollars,
            request_dollars: pricing.request_dollars,
            billing_granularity_ms: pricing.billing_granularity_ms,
        }
    }
}

fn default_function_name() -> String {
    "switchyard-lambda".into()
}
fn default_memory_mb() -> u64 {
    1024
}
fn default_timeout_ms() -> u64 {
    30_000
}
fn default_connect_timeout_ms() -> u64 {
    1_000
}
fn default_reserved_concurrency() -> u64 {
    10
}
fn default_payload_limit() -> u64 {
    SYNC_PAYLOAD_LIMIT_BYTES
}
fn default_retry_down_ms() -> u64 {
    2_000
}
fn default_window_ms() -> u64 {
    60_000
}
fn default_idle_ms() -> u64 {
    300_000
}

/// Where the Invoke API is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `https://lambda.REGION.amazonaws.com`, or the override.
    pub base_url: String,
    /// Whether it was overridden (an emulator): requests are signed only
    /// when credentials are present.
    pub overridden: bool,
}

/// The validated configuration.
#[derive(Debug, Clone)]
pub struct LambdaConfig {
    /// The backend's name in placement, stats and metrics.
    pub name: String,
    pub function_name: String,
    /// Version or alias invoked (`?Qualifier=`), `None` for `$LATEST`.
    pub qualifier: Option<String>,
    /// Region used in the endpoint and the signature.
    pub region: String,
    pub endpoint: Endpoint,
    /// The function runs on the gateway's machine: as written, else
    /// whether the endpoint is a loopback address (an emulator).
    pub shares_host_cpu: bool,
    /// Models (all versions) the function serves.
    pub models: Vec<String>,
    /// The function's configured memory, for cost (the instance's own
    /// report wins when it sends one).
    pub memory_mb: u64,
    /// Longest an invocation may take (the function's timeout).
    pub timeout: Duration,
    pub connect_timeout: Duration,
    /// Invocations in flight at once; beyond it requests are refused at
    /// once (Lambda's reserved concurrency, enforced here because the
    /// emulator queues instead of throttling).
    pub reserved_concurrency: u64,
    /// Largest Invoke payload (the JSON event) in bytes.
    pub payload_limit_bytes: u64,
    /// How long the backend stays marked down after the Invoke API could
    /// not be reached, before a request tries it again.
    pub retry_down_after: Duration,
    /// Window of the recent throttle and cold-start figures.
    pub recent_window: Duration,
    /// An instance not seen for this long is presumed reclaimed.
    pub instance_idle: Duration,
    pub pricing: Pricing,
}

fn error(key: &str, message: impl Into<String>) -> TomlError {
    TomlError {
        key: key.to_owned(),
        message: message.into(),
    }
}

fn region_from_env() -> Option<String> {
    ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .find_map(|name| std::env::var(name).ok().filter(|v| !v.trim().is_empty()))
}

impl LambdaFile {
    /// Checks the section against the repository. Error keys are relative
    /// to the section (the gateway prefixes `backends.lambda.`).
    pub fn validate(self, repository: &ModelRepository) -> Result<LambdaConfig, TomlError> {
        if self.function_name.trim().is_empty()
            || !self
                .function_name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | ':'))
        {
            return Err(error(
                "function_name",
                format!(
                    "{:?} is not a function name; use letters, digits, '-' and '_' (or a full ARN)",
                    self.function_name
                ),
            ));
        }
        let models = self
            .models
            .unwrap_or_default()
            .resolve(repository)
            .map_err(|m| error("models", m))?;
        let region = self.region.clone().or_else(region_from_env);
        let endpoint = match (&self.endpoint, &region) {
            (Some(url), _) => {
                let url = url.trim_end_matches('/').to_owned();
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(error(
                        "endpoint",
                        format!("{url:?} is not a URL; write e.g. \"http://127.0.0.1:9000\""),
                    ));
                }
                Endpoint {
                    base_url: url,
                    overridden: true,
                }
            }
            (None, Some(region)) => Endpoint {
                base_url: format!("https://lambda.{region}.amazonaws.com"),
                overridden: false,
            },
            (None, None) => {
                return Err(error(
                    "region",
                    "no region: set `region`, or AWS_REGION in the environment, or `endpoint` \
                     for a local emulator",
                ));
            }
        };
        let range = |key: &str, value: u64, min: u64, max: u64| {
            if value < min || value > max {
                Err(error(
                    key,
                    format!("is {value}; it must be between {min} and {max}"),
                ))
            } else {
                Ok(value)
            }
        };
        // Lambda's own limits: 128 MB–10,240 MB memory, 15 minute timeout.
        range("memory_mb", self.memory_mb, 128, 10_240)?;
        range("timeout_ms", self.timeout_ms, 1, 900_000)?;
        range("connect_timeout_ms", self.connect_timeout_ms, 1, 60_000)?;
        range(
            "reserved_concurrency",
            self.reserved_concurrency,
            1,
            100_000,
        )?;
        range(
            "payload_limit_bytes",
            self.payload_limit_bytes,
            1024,
            SYNC_PAYLOAD_LIMIT_BYTES,
        )?;
        range(
            "retry_down_after_ms",
            self.retry_down_after_ms,
            1,
            3_600_000,
        )?;
        range("recent_window_ms", self.recent_window_ms, 1_000, 3_600_000)?;
        range("instance_idle_ms", self.instance_idle_ms, 1_000, 86_400_000)?;
        let pricing = Pricing {
            gb_second_dollars: self.pricing.gb_second_dollars,
            request_dollars: self.pricing.request_dollars,
            billing_granularity_ms: self.pricing.billing_granularity_ms,
        };
        for (key, value) in [
            ("pricing.gb_second_dollars", pricing.gb_second_dollars),
            ("pricing.request_dollars", pricing.request_dollars),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                return Err(error(key, format!("is {value}; it must be a price ≥ 0")));
            }
        }
        range(
            "pricing.billing_granularity_ms",
            pricing.billing_granularity_ms,
            1,
            60_000,
        )?;
        let shares_host_cpu = self.shares_host_cpu.unwrap_or_else(|| {
            switchyard_backends::host::is_loopback_authority(&endpoint.base_url)
        });
        Ok(LambdaConfig {
            name: "lambda".into(),
            function_name: self.function_name,
            qualifier: self.qualifier.filter(|q| !q.trim().is_empty()),
            region: region.unwrap_or_else(|| "us-east-1".into()),
            endpoint,
            shares_host_cpu,
            models,
            memory_mb: self.memory_mb,
            timeout: Duration::from_millis(self.timeout_ms),
            connect_timeout: Duration::from_millis(self.connect_timeout_ms),
            reserved_concurrency: self.reserved_concurrency,
            payload_limit_bytes: self.payload_limit_bytes,
            retry_down_after: Duration::from_millis(self.retry_down_after_ms),
            recent_window: Duration::from_millis(self.recent_window_ms),
            instance_idle: Duration::from_millis(self.instance_idle_ms),
            pricing,
        })
    }
}

impl LambdaConfig {
    /// The Invoke URL (`POST /2015-03-31/functions/NAME/invocations`).
    pub fn invoke_url(&self) -> String {
        let mut url = format!(
            "{}/2015-03-31/functions/{}/invocations",
            self.endpoint.base_url, self.function_name
        );
        if let Some(qualifier) = &self.qualifier {
            url.push_str("?Qualifier=");
            url.push_str(qualifier);
        }
        url
    }

    /// The largest tensor payload (raw bytes, as placement measures it)
    /// whose event fits in `payload_limit_bytes`: tensor data travels
    /// base64-encoded (4 bytes per 3), and the JSON header needs room.
    pub fn max_tensor_bytes(&self) -> u64 {
        const HEADER_ALLOWANCE: u64 = 64 * 1024;
        self.payload_limit_bytes.saturating_sub(HEADER_ALLOWANCE) / 4 * 3
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::path::Path;

    use switchyard_models::toml_config::from_toml;

    use super::*;

    fn repository() -> ModelRepository {
        ModelRepository::load(
            &Path::new(env!("CARGO_MANIFEST_DIR")).join("../../models/repository"),
        )
        .expect("make setup generated the models")
    }

    fn parse(text: &str) -> Result<LambdaConfig, TomlError> {
        from_toml::<LambdaFile>(text)?.validate(&repository())
    }

    #[test]
    fn an_emulator_section_validates_with_defaults() {
        let config = parse("endpoint = \"http://127.0.0.1:9000/\"\nmodels = [\"digits\"]").unwrap();
        assert_eq!(
            config.invoke_url(),
            "http://127.0.0.1:9000/2015-03-31/functions/switchyard-lambda/invocations"
        );
        assert_eq!(config.models, vec!["digits".to_owned()]);
        assert_eq!(config.reserved_concurrency, 10);
        assert_eq!(config.pricing, Pricing::default());
        // base64 (4/3) of the largest tensor payload plus the header fits.
        assert!(config.max_tensor_bytes() * 4 / 3 + 64 * 1024 <= SYNC_PAYLOAD_LIMIT_BYTES);
    }

    #[test]
    fn an_emulator_on_loopback_shares_the_host_cpu_and_aws_does_not() {
        assert!(
            parse("endpoint = \"http://127.0.0.1:9000/\"")
                .unwrap()
                .shares_host_cpu
        );
        assert!(!parse("region = \"eu-west-1\"").unwrap().shares_host_cpu);
        assert!(
            !parse("endpoint = \"http://127.0.0.1:9000\"\nshares_host_cpu = false")
                .unwrap()
                .shares_host_cpu
        );
        assert!(
            parse("region = \"eu-west-1\"\nshares_host_cpu = true")
                .unwrap()
                .shares_host_cpu
        );
    }

    #[test]
    fn errors_name_the_key_and_the_fix() {
        let key = |text: &str| parse(text).unwrap_err().key;
        assert_eq!(key("endpoint = \"e\"\nmodels = [\"nope\"]"), "models");
        assert_eq!(key("endpoint = \"127.0.0.1:9000\""), "endpoint");
        assert_eq!(
            key("endpoint = \"http://h\"\nreserved_concurrency = 0"),
            "reserved_concurrency"
        );
        assert_eq!(
            key("endpoint = \"http://h\"\npayload_limit_bytes = 7000000"),
            "payload_limit_bytes"
        );
        assert_eq!(
            key("endpoint = \"http://h\"\n[pricing]\ngb_second_dollars = -1.0"),
            "pricing.gb_second_dollars"
        );
        assert_eq!(key("endpoint = \"http://h\"\nbogus = 1"), "bogus");
        let qualified = parse("region = \"eu-west-1\"\nqualifier = \"live\"").unwrap();
        assert_eq!(
            qualified.invoke_url(),
            "https://lambda.eu-west-1.amazonaws.com/2015-03-31/functions/switchyard-lambda/invocations?Qualifier=live"
        );
    }
}
