//! The Open Inference Protocol (v2) REST API over the [`Gateway`], plus
//! `/metrics` (Prometheus text) and `/v2/switchyard/stats` (JSON).
//!
//! Every request is authenticated first ([`crate::auth`]), before its body
//! is read. Bodies are read within `server.body_read_timeout_ms` and
//! `server.max_request_bytes`, and decoded within the element limit.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Serialize;
use switchyard_protocol::{
    BINARY_HEADER_LENGTH, JSON, ModelMetadata, ModelReadyResponse, OCTET_STREAM, ServerMetadata,
    decode_request_with, encode_response,
};

use crate::auth::Access;
use crate::config::ServerConfig;
use crate::error::GatewayError;
use crate::gateway::{Gateway, Served};

/// Request header a client sets to give its own deadline, in milliseconds.
pub const TIMEOUT_HEADER: &str = "switchyard-timeout-ms";
/// Response header naming the backend that ran the request.
pub const BACKEND_HEADER: &str = "switchyard-backend";
/// Response header with the placement decision's reason.
pub const PLACEMENT_HEADER: &str = "switchyard-placement";
/// Response headers with the time spent queued and computing, in µs.
pub const QUEUE_TIME_HEADER: &str = "switchyard-queue-time-us";
pub const INFERENCE_TIME_HEADER: &str = "switchyard-inference-time-us";
/// Response header with the rows of the batch the request ran in.
pub const BATCH_ROWS_HEADER: &str = "switchyard-batch-rows";

/// The response headers above as header names, made once: inserting a
/// header by a `&str` name parses and validates the name on every request.
mod names {
    use http::header::HeaderName;

    pub const BACKEND: HeaderName = HeaderName::from_static(super::BACKEND_HEADER);
    pub const PLACEMENT: HeaderName = HeaderName::from_static(super::PLACEMENT_HEADER);
    pub const QUEUE_TIME: HeaderName = HeaderName::from_static(super::QUEUE_TIME_HEADER);
    pub const INFERENCE_TIME: HeaderName = HeaderName::from_static(super::INFERENCE_TIME_HEADER);
    pub const BATCH_ROWS: HeaderName = HeaderName::from_static(super::BATCH_ROWS_HEADER);
    pub const SERVER_TIMING: HeaderName = HeaderName::from_static("server-timing");
    pub const BINARY_LENGTH: HeaderName =
        HeaderName::from_static(switchyard_protocol::BINARY_HEADER_LENGTH);
}

/// The response body type of every route.
pub type Body = Full<Bytes>;

/// Answers one HTTP request. Never fails: errors become JSON responses.
pub async fn handle(gateway: Arc<Gateway>, request: Request<Incoming>) -> Response<Body> {
    let received = Instant::now();
    match route(&gateway, request, received).await {
        Ok(response) => response,
        Err(error) => error_response(&error),
    }
}

/// The JSON error response for `error`.
pub fn error_response(error: &GatewayError) -> Response<Body> {
    let status = error.status();
    if status.is_server_error() {
        tracing::warn!(%status, %error, "request failed");
    } else {
        tracing::debug!(%status, %error, "request refused");
    }
    let mut response = json(status, &serde_json::json!({ "error": error.to_string() }));
    if let GatewayError::MethodNotAllowed { allowed, .. } = error {
        response
            .headers_mut()
            .insert(http::header::ALLOW, HeaderValue::from_static(allowed));
    }
    if let GatewayError::Unauthorized(refusal) = error {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            HeaderValue::from_static(refusal.challenge()),
        );
    }
    if let Some(value) = error.backend().and_then(|b| HeaderValue::from_str(b).ok()) {
        response.headers_mut().insert(names::BACKEND, value);
    }
    response
}

/// `/v2/health/ready`: whether the gateway is ready (every backend is),
/// and each backend's name, kind and readiness, with the reason it is not
/// ready when `reasons`.
fn readiness(gateway: &Gateway, reasons: bool) -> (bool, serde_json::Value) {
    let (ready, snapshots) = gateway.readiness();
    let backends: Vec<serde_json::Value> = snapshots
        .into_iter()
        .map(|s| {
            let mut entry = serde_json::json!({ "name": s.name, "kind": s.kind, "ready": s.ready });
            if let (true, Some(reason)) = (reasons, s.unready_reason) {
                entry["reason"] = reason.into();
            }
            entry
        })
        .collect();
    (
        ready,
        serde_json::json!({ "ready": ready, "backends": backends }),
    )
}

async fn route(
    gateway: &Arc<Gateway>,
    request: Request<Incoming>,
    received: Instant,
) -> Result<Response<Body>, GatewayError> {
    let path = request.uri().path().to_owned();
    let method = request.method().clone();
    let v2_segments: Option<Vec<&str>> = path
        .strip_prefix("/v2")
        .map(|rest| rest.split('/').filter(|s| !s.is_empty()).collect());
    gateway
        .server
        .auth
        .check(Access::of(&path, v2_segments.as_deref()), request.headers())?;
    if path == "/metrics" {
        expect_method(&method, &path, "GET")?;
        let mut response = Response::new(Full::new(Bytes::from(gateway.render_metrics())));
        response.headers_mut().insert(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        return Ok(response);
    }
    let Some(segments) = v2_segments else {
        return Err(not_found(&method, &path));
    };
    match segments.as_slice() {
        [] => {
            expect_method(&method, &path, "GET")?;
            Ok(json(
                StatusCode::OK,
                &ServerMetadata {
                    name: "switchyard".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    extensions: vec!["binary_tensor_data".into(), "switchyard_stats".into()],
                },
            ))
        }
        ["health", "live"] => {
            expect_method(&method, &path, "GET")?;
            Ok(json(StatusCode::OK, &serde_json::json!({ "live": true })))
        }
        ["health", "ready"] => {
            expect_method(&method, &path, "GET")?;
            // Why a backend is not ready (engine errors, endpoints) is
            // admin information: shown to a request the admin class lets
            // in, which on a gateway without tokens is every request.
            let reasons = gateway
                .server
                .auth
                .check(Access::Admin, request.headers())
                .is_ok();
            let (ready, body) = readiness(gateway, reasons);
            Ok(json(status_of(ready), &body))
        }
        ["repository", "index"] => {
            expect_method(&method, &path, "GET, POST")?;
            Ok(json(StatusCode::OK, &repository_index(gateway)))
        }
        ["switchyard", "reload"] => {
            expect_method(&method, &path, "POST")?;
            let set = gateway
                .policies()
                .reload()
                .map_err(|e| GatewayError::Reload(e.to_string()))?;
            Ok(json(
                StatusCode::OK,
                &serde_json::json!({
                    "reloaded": true,
                    "source": set.source,
                    "policies": gateway.policies().describe(),
                }),
            ))
        }
        ["switchyard", "stats"] => {
            expect_method(&method, &path, "GET")?;
            Ok(json(StatusCode::OK, &gateway.stats_report()))
        }
        ["models", name, rest @ ..] => {
            let (version, action) = match rest {
                ["versions", version, action @ ..] => (Some(*version), action),
                action => (None, action),
            };
            match action {
                [] => {
                    expect_method(&method, &path, "GET")?;
                    model_metadata(gateway, name, version)
                }
                ["ready"] => {
                    expect_method(&method, &path, "GET")?;
                    let (model, _, _) = gateway.resolve(name, version)?;
                    let ready = gateway.model_ready(model);
                    Ok(json(
                        status_of(ready),
                        &ModelReadyResponse {
                            name: (*name).to_owned(),
                            ready,
                        },
                    ))
                }
                ["infer"] => {
                    expect_method(&method, &path, "POST")?;
                    let (name, version) = ((*name).to_owned(), version.map(str::to_owned));
                    infer(gateway, &name, version.as_deref(), request, received).await
                }
                _ => Err(not_found(&method, &path)),
            }
        }
        _ => Err(not_found(&method, &path)),
    }
}

fn model_metadata(
    gateway: &Gateway,
    name: &str,
    version: Option<&str>,
) -> Result<Response<Body>, GatewayError> {
    let (model, number, specs) = gateway.resolve(name, version)?;
    let versions = match version {
        Some(_) => vec![number.to_string()],
        None => model.info.versions.keys().map(u64::to_string).collect(),
    };
    Ok(json(
        StatusCode::OK,
        &ModelMetadata {
            name: name.to_owned(),
            versions,
            platform: model.info.platform.clone(),
            inputs: specs.inputs.clone(),
            outputs: specs.outputs.clone(),
        },
    ))
}

fn repository_index(gateway: &Gateway) -> Vec<serde_json::Value> {
    gateway
        .catalog()
        .iter()
        .flat_map(|(name, model)| {
            let state = if gateway.model_ready(model) {
                "READY"
            } else {
                "UNAVAILABLE"
            };
            model.info.versions.keys().map(move |version| {
                serde_json::json!({ "name": name, "version": version.to_string(), "state": state })
            })
        })
        .collect()
}

async fn infer(
    gateway: &Gateway,
    name: &str,
    version: Option<&str>,
    request: Request<Incoming>,
    received: Instant,
) -> Result<Response<Body>, GatewayError> {
    // An unknown model is refused before its body is read.
    gateway.resolve(name, version)?;
    let header_timeout = timeout_header(request.headers())?;
    let header_length = request
        .headers()
        .get(BINARY_HEADER_LENGTH)
        .map(|v| v.to_str().map(str::to_owned))
        .transpose()
        .map_err(|_| GatewayError::BadHeader(format!("{BINARY_HEADER_LENGTH} is not ASCII")))?;
    let body = read_body(request, &gateway.server).await?;
    let decoded = decode_request_with(
        &body,
        header_length.as_deref(),
        &gateway.server.decode_limits(),
    )?;
    let requested = header_timeout.or(decoded.timeout_us.map(Duration::from_micros));
    let timeout = gateway.deadline_for(requested);
    // What the response encoder needs of the request, kept before the
    // request (and its tensors) moves to the backend.
    let output_choice = switchyard_protocol::InferRequest {
        outputs: decoded.outputs.clone(),
        binary_data_output: decoded.binary_data_output,
        ..Default::default()
    };
    let served = gateway
        .infer(name, version, decoded, received, timeout)
        .await?;
    infer_response(&served, &output_choice)
}

fn infer_response(
    served: &Served,
    request: &switchyard_protocol::InferRequest,
) -> Result<Response<Body>, GatewayError> {
    let body = encode_response(&served.response, request)
        .map_err(|e| GatewayError::Encode(e.to_string()))?;
    let mut response = Response::new(Full::new(Bytes::from(body.bytes)));
    let headers = response.headers_mut();
    let content_type = if body.json_length.is_some() {
        OCTET_STREAM
    } else {
        JSON
    };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if let Some(length) = body.json_length {
        headers.insert(names::BINARY_LENGTH, HeaderValue::from(length));
    }
    let timing = served.timing;
    let micros = |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    headers.insert(names::QUEUE_TIME, HeaderValue::from(micros(timing.queue)));
    headers.insert(
        names::INFERENCE_TIME,
        HeaderValue::from(micros(timing.compute)),
    );
    headers.insert(names::BATCH_ROWS, HeaderValue::from(timing.batch_rows));
    if let Ok(value) = HeaderValue::from_str(&served.backend) {
        headers.insert(names::BACKEND, value);
    }
    if let Ok(value) = HeaderValue::from_str(&served.placement) {
        headers.insert(names::PLACEMENT, value);
    }
    // Milliseconds with three decimals, in integer arithmetic (rounded to
    // the microsecond): cheaper than formatting floats on every response.
    let (queue, compute) = (rounded_micros(timing.queue), rounded_micros(timing.compute));
    if let Ok(value) = HeaderValue::from_str(&format!(
        "queue;dur={}.{:03}, infer;dur={}.{:03}",
        queue / 1000,
        queue % 1000,
        compute / 1000,
        compute % 1000
    )) {
        headers.insert(names::SERVER_TIMING, value);
    }
    Ok(response)
}

fn rounded_micros(duration: Duration) -> u128 {
    (duration.as_nanos() + 500) / 1000
}

fn timeout_header(headers: &http::HeaderMap) -> Result<Option<Duration>, GatewayError> {
    headers
        .get(TIMEOUT_HEADER)
        .map(|value| {
            value
                .to_str()
                .ok()
                .and_then(|v| v.trim().parse::<u64>().ok())
                .filter(|&ms| ms > 0)
                .map(Duration::from_millis)
                .ok_or_else(|| {
                    GatewayError::BadHeader(format!(
                        "{TIMEOUT_HEADER} must be a positive number of milliseconds"
                    ))
                })
        })
        .transpose()
}

/// Reads the whole body, refusing one over `server.max_request_bytes`
/// (declared or actual) and one that does not arrive within
/// `server.body_read_timeout_ms`, so a client that trickles its body, or
/// declares more than it sends, cannot hold the request open.
async fn read_body(
    request: Request<Incoming>,
    server: &ServerConfig,
) -> Result<Bytes, GatewayError> {
    let limit = server.max_request_bytes;
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|length| length > limit) {
        return Err(GatewayError::PayloadTooLarge { limit });
    }
    let limited = Limited::new(
        request.into_body(),
        usize::try_from(limit).unwrap_or(usize::MAX),
    );
    let collected = tokio::time::timeout(server.body_read_timeout, limited.collect())
        .await
        .map_err(|_| GatewayError::BodyTimeout {
            timeout_ms: server.body_read_timeout.as_millis(),
        })?;
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => {
            Err(GatewayError::PayloadTooLarge { limit })
        }
        Err(error) => Err(GatewayError::Body(error.to_string())),
    }
}

/// Refuses methods not in `allowed` (an `Allow` header value).
fn expect_method(method: &Method, path: &str, allowed: &'static str) -> Result<(), GatewayError> {
    if allowed.split(", ").any(|m| m == method.as_str()) {
        return Ok(());
    }
    Err(GatewayError::MethodNotAllowed {
        method: method.to_string(),
        path: path.to_owned(),
        allowed,
    })
}

fn not_found(method: &Method, path: &str) -> GatewayError {
    GatewayError::NotFound {
        method: method.to_string(),
        path: path.to_owned(),
    }
}

fn status_of(ready: bool) -> StatusCode {
    if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    }
}

fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let body = serde_json::to_vec(value)
        .unwrap_or_else(|e| format!("{{\"error\":\"cannot encode response: {e}\"}}").into_bytes());
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(JSON));
    response
}
