//! The HTTP side: one pooled hyper client (HTTP/1.1 keep-alive, many
//! connections on the tokio runtime's few threads) and one request/response
//! exchange classified into an [`Outcome`].

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_TYPE, HeaderMap, HeaderValue};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use switchyard_protocol::BINARY_HEADER_LENGTH;

use crate::record::{Outcome, ServerTiming};
use crate::target::Target;

/// The client type every run uses.
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Response header naming the backend that served a request.
pub const BACKEND_HEADER: &str = "switchyard-backend";
/// Response headers with the server's own timing, in µs, and batch rows.
pub const QUEUE_TIME_HEADER: &str = "switchyard-queue-time-us";
pub const INFERENCE_TIME_HEADER: &str = "switchyard-inference-time-us";
pub const BATCH_ROWS_HEADER: &str = "switchyard-batch-rows";

/// A keep-alive client that holds up to `max_idle_connections` idle
/// connections per host. Nagle is off: requests are small and latency is
/// what is measured.
pub fn http_client(max_idle_connections: usize) -> HttpClient {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.enforce_http(true);
    Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(max_idle_connections)
        .pool_idle_timeout(Duration::from_secs(60))
        .build(connector)
}

/// How one request ended, as the client saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exchange {
    pub outcome: Outcome,
    /// The `switchyard-backend` header, if the server sent one.
    pub backend: Option<String>,
    pub server: ServerTiming,
}

impl Exchange {
    fn failed(outcome: Outcome) -> Self {
        Self {
            outcome,
            backend: None,
            server: ServerTiming::default(),
        }
    }
}

/// Sends body number `index` of `target` and reads the whole response,
/// giving up after `timeout`.
pub async fn exchange(
    client: &HttpClient,
    target: &Target,
    index: u64,
    timeout: Duration,
) -> Exchange {
    let body = target.body(index);
    let mut request = Request::new(Full::new(body.bytes.clone()));
    *request.method_mut() = target.method.clone();
    *request.uri_mut() = target.uri.clone();
    let headers = request.headers_mut();
    if !body.bytes.is_empty() {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static(body.content_type()));
    }
    if let Some(length) = body.json_length {
        headers.insert(BINARY_HEADER_LENGTH, HeaderValue::from(length));
    }
    let round_trip = async {
        let response = match client.request(request).await {
            Ok(response) => response,
            Err(_) => return Exchange::failed(Outcome::ConnectionError),
        };
        let status = response.status();
        let (parts, body) = response.into_parts();
        // The body is read to the end so the connection can be reused.
        if body.collect().await.is_err() {
            return Exchange::failed(Outcome::ConnectionError);
        }
        Exchange {
            outcome: classify(status),
            backend: parts
                .headers
                .get(BACKEND_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
            server: server_timing(&parts.headers),
        }
    };
    tokio::time::timeout(timeout, round_trip)
        .await
        .unwrap_or_else(|_| Exchange::failed(Outcome::Timeout))
}

/// The outcome an HTTP status stands for.
pub fn classify(status: StatusCode) -> Outcome {
    if status.is_success() {
        Outcome::Success
    } else if status == StatusCode::TOO_MANY_REQUESTS {
        Outcome::Throttled
    } else if status.is_server_error() {
        Outcome::ServerError
    } else {
        Outcome::OtherStatus
    }
}

fn server_timing(headers: &HeaderMap) -> ServerTiming {
    let number = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    ServerTiming {
        queue_us: number(QUEUE_TIME_HEADER),
        inference_us: number(INFERENCE_TIME_HEADER),
        batch_rows: number(BATCH_ROWS_HEADER),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(classify(StatusCode::OK), Outcome::Success);
        assert_eq!(classify(StatusCode::TOO_MANY_REQUESTS), Outcome::Throttled);
        assert_eq!(
            classify(StatusCode::SERVICE_UNAVAILABLE),
            Outcome::ServerError
        );
        assert_eq!(
            classify(StatusCode::INTERNAL_SERVER_ERROR),
            Outcome::ServerError
        );
        assert_eq!(classify(StatusCode::BAD_REQUEST), Outcome::OtherStatus);
        assert_eq!(classify(StatusCode::NOT_FOUND), Outcome::OtherStatus);
    }

    #[test]
    fn timing_headers_are_read() {
        let mut headers = HeaderMap::new();
        headers.insert(QUEUE_TIME_HEADER, HeaderValue::from(12u64));
        headers.insert(INFERENCE_TIME_HEADER, HeaderValue::from_static(" 340 "));
        headers.insert(BATCH_ROWS_HEADER, HeaderValue::from_static("x"));
        let timing = server_timing(&headers);
        assert_eq!(timing.queue_us, Some(12));
        assert_eq!(timing.inference_us, Some(340));
        assert_eq!(timing.batch_rows, None);
    }
}
