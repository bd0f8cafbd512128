//! The gateway's HTTP/1.1 client to the workers: pooled keep-alive
//! connections (`TCP_NODELAY`), requests and responses in the v2 binary
//! tensor extension so tensors never go through JSON floats.
//!
//! Errors say whether the request may have run and whether the worker
//! looks broken, which is what failover needs: inference is idempotent, so
//! a request whose connection broke is simply sent to another container.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchyard_backends::{InferenceResult, Timing};
use switchyard_protocol::{
    BINARY_HEADER_LENGTH, InferRequest, OCTET_STREAM, decode_response, encode_request,
};

/// Headers the worker (the `switchyard` server) reports its timing in.
const QUEUE_TIME_HEADER: &str = "switchyard-queue-time-us";
const INFERENCE_TIME_HEADER: &str = "switchyard-inference-time-us";
const BATCH_ROWS_HEADER: &str = "switchyard-batch-rows";

/// An encoded request, reused for each attempt.
#[derive(Debug, Clone)]
pub struct EncodedRequest {
    pub path: String,
    pub body: Bytes,
    pub json_length: Option<usize>,
}

impl EncodedRequest {
    /// Encodes `request` for `model`/`version`, asking for every output in
    /// binary form (the gateway re-encodes the answer as its client asked).
    pub fn new(model: &str, version: u64, mut request: InferRequest) -> Result<Self, String> {
        request.binary_data_output = true;
        for output in &mut request.outputs {
            output.binary_data = Some(true);
        }
        // The worker's own deadline comes from the header below, per attempt.
        request.timeout_us = None;
        let encoded = encode_request(&request, true).map_err(|e| e.to_string())?;
        Ok(Self {
            path: format!("/v2/models/{model}/versions/{version}/infer"),
            body: Bytes::from(encoded.bytes),
            json_length: encoded.json_length,
        })
    }
}

/// Why a call to a worker failed.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// No answer: connection refused, reset or closed. The worker may be
    /// dead; the request can go to another one.
    #[error("no answer from {address}: {message}")]
    Transport {
        address: SocketAddr,
        message: String,
    },
    /// The worker refused (429) or is going away (503): try another one.
    #[error("{address} refused with {status}: {message}")]
    Refused {
        address: SocketAddr,
        status: StatusCode,
        message: String,
    },
    /// The worker's own deadline passed.
    #[error("{address} timed out: {message}")]
    Timeout {
        address: SocketAddr,
        message: String,
    },
    /// The worker answered with an error that another worker would repeat.
    #[error("{address} answered {status}: {message}")]
    Failed {
        address: SocketAddr,
        status: StatusCode,
        message: String,
    },
}

impl CallError {
    /// Whether another container may succeed where this one did not.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            CallError::Transport { .. } | CallError::Refused { .. }
        )
    }
}

/// A pooled HTTP/1.1 client shared by all workers.
#[derive(Debug, Clone)]
pub struct WorkerClient {
    client: Client<HttpConnector, Full<Bytes>>,
}

impl Default for WorkerClient {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerClient {
    pub fn new() -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        connector.set_connect_timeout(Some(Duration::from_secs(2)));
        let client = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_max_idle_per_host(1024)
            .retry_canceled_requests(false)
            .build(connector);
        Self { client }
    }

    /// Runs one inference on the worker at `address`, giving up at `deadline`.
    pub async fn infer(
        &self,
        address: SocketAddr,
        request: &EncodedRequest,
        deadline: Instant,
    ) -> Result<InferenceResult, CallError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut builder = Request::post(format!("http://{address}{}", request.path))
            .header(HOST, address.to_string())
            .header(CONTENT_LENGTH, request.body.len())
            .header(
                "switchyard-timeout-ms",
                remaining.as_millis().max(1).to_string(),
            );
        builder = match request.json_length {
            Some(length) => builder
                .header(CONTENT_TYPE, OCTET_STREAM)
                .header(BINARY_HEADER_LENGTH, length),
            None => builder.header(CONTENT_TYPE, switchyard_protocol::JSON),
        };
        let http_request =
            builder
                .body(Full::new(request.body.clone()))
                .map_err(|e| CallError::Failed {
                    address,
                    status: StatusCode::INTERNAL_SERVER_ERROR,
                    message: e.to_string(),
                })?;
        let call = async {
            let response = self
                .client
                .request(http_request)
                .await
                .map_err(|e| transport(address, &e))?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(|e| transport(address, &e))?
                .to_bytes();
            Ok::<_, CallError>((parts, body))
        };
        let (parts, body) = tokio::time::timeout_at(deadline.into(), call)
            .await
            .map_err(|_| CallError::Timeout {
                address,
                message: "the request's deadline passed".into(),
            })??;
        let status = parts.status;
        if !status.is_success() {
            let message = error_message(&body);
            return Err(match status {
                StatusCode::TOO_MANY_REQUESTS | StatusCode::SERVICE_UNAVAILABLE => {
                    CallError::Refused {
                        address,
                        status,
                        message,
                    }
                }
                StatusCode::GATEWAY_TIMEOUT => CallError::Timeout { address, message },
                _ => CallError::Failed {
                    address,
                    status,
                    message,
                },
            });
        }
        let header = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
        let number = |name: &str| {
            header(name)
                .and_then(|v| v.parse::<u64>().ok())
                .unwrap_or(0)
        };
        let response = decode_response(&body, header(BINARY_HEADER_LENGTH)).map_err(|e| {
            CallError::Failed {
                address,
                status: StatusCode::BAD_GATEWAY,
                message: format!("undecodable answer: {e}"),
            }
        })?;
        Ok(InferenceResult {
            outputs: response.outputs,
            timing: Timing {
                queue: Duration::from_micros(number(QUEUE_TIME_HEADER)),
                compute: Duration::from_micros(number(INFERENCE_TIME_HEADER)),
                batch_rows: number(BATCH_ROWS_HEADER),
            },
        })
    }

    /// Whether the worker at `address` answers `/v2/health/ready` with 200
    /// within `timeout`.
    pub async fn ready(&self, address: SocketAddr, timeout: Duration) -> bool {
        let Ok(request) = Request::get(format!("http://{address}/v2/health/ready"))
            .header(HOST, address.to_string())
            .body(Full::new(Bytes::new()))
        else {
            return false;
        };
        let call = async {
            let response = self.client.request(request).await.ok()?;
            let ok = response.status() == StatusCode::OK;
            // Read the body so the connection goes back to the pool.
            response.into_body().collect().await.ok()?;
            Some(ok)
        };
        matches!(tokio::time::timeout(timeout, call).await, Ok(Some(true)))
    }
}

fn transport(address: SocketAddr, error: &dyn std::error::Error) -> CallError {
    let mut message = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        message.push_str(": ");
        message.push_str(&cause.to_string());
        source = cause.source();
    }
    CallError::Transport { address, message }
}

/// The `error` field of a v2 error body, or the body itself.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned())
}
