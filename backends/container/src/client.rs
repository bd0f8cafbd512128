//! The gateway's HTTP/1.1 client to the workers: keep-alive connections
//! (`TCP_NODELAY`) pooled per worker, requests and responses in the v2
//! binary tensor extension so tensors never go through JSON floats.
//!
//! A request drives its connection itself: the task that sends it also
//! polls the connection's I/O until the answer's last byte, then puts the
//! connection back in the pool. A client that spawns a task per connection
//! (hyper-util's pooled client) hands every request and every answer from
//! one task to the other; at a few hundred requests a second the threads
//! are idle in between, and each hand-off can wake one.
//!
//! Errors say whether the request may have run and whether the worker
//! looks broken, which is what failover needs: inference is idempotent, so
//! a request whose connection broke is simply sent to another container.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::FutureExt;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper_util::rt::TokioIo;
use switchyard_backends::{InferenceResult, Timing};
use switchyard_protocol::{
    BINARY_HEADER_LENGTH, InferRequest, OCTET_STREAM, decode_response, encode_request,
};
use tokio::net::TcpStream;

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

/// How long an idle connection is kept.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Idle connections kept per worker (beyond these, finished ones close).
const MAX_IDLE_PER_WORKER: usize = 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// One keep-alive connection: the handle requests are sent on and the
/// connection's I/O, which whoever uses it polls.
struct Connection {
    sender: http1::SendRequest<Full<Bytes>>,
    io: Pin<Box<http1::Connection<TokioIo<TcpStream>, Full<Bytes>>>>,
    idle_since: Instant,
}

impl Connection {
    /// Whether it can take another request: not closed by either side
    /// (polling the I/O once reads a close the worker sent while idle).
    fn usable(&mut self, now: Instant) -> bool {
        if now.duration_since(self.idle_since) > IDLE_TIMEOUT || self.sender.is_closed() {
            return false;
        }
        (&mut self.io).now_or_never().is_none() && !self.sender.is_closed()
    }
}

/// Idle connections per worker address.
#[derive(Default)]
struct Idle {
    by_worker: HashMap<SocketAddr, Vec<Connection>>,
    /// When connections idle too long were last dropped.
    last_sweep: Option<Instant>,
}

/// The HTTP/1.1 client shared by all workers, with its connection pool.
#[derive(Clone, Default)]
pub struct WorkerClient {
    idle: Arc<Mutex<Idle>>,
}

impl std::fmt::Debug for WorkerClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        f.debug_struct("WorkerClient")
            .field("workers", &idle.by_worker.len())
            .field(
                "idle_connections",
                &idle.by_worker.values().map(Vec::len).sum::<usize>(),
            )
            .finish()
    }
}

/// Why an exchange on a connection failed.
#[derive(Debug)]
enum ExchangeError {
    Http(hyper::Error),
    /// The connection ended before the answer did.
    Closed,
}

impl WorkerClient {
    pub fn new() -> Self {
        Self::default()
    }

    /// An idle connection to `address` that is still usable, if any.
    fn checkout(&self, address: SocketAddr) -> Option<Connection> {
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.by_worker.get_mut(&address)?;
        while let Some(mut connection) = list.pop() {
            if connection.usable(now) {
                return Some(connection);
            }
        }
        None
    }

    /// Puts a connection back, and now and then drops connections idle
    /// for longer than [`IDLE_TIMEOUT`] (of workers gone, say).
    fn checkin(&self, address: SocketAddr, mut connection: Connection) {
        let now = Instant::now();
        connection.idle_since = now;
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let list = idle.by_worker.entry(address).or_default();
        if list.len() < MAX_IDLE_PER_WORKER {
            list.push(connection);
        }
        if idle
            .last_sweep
            .is_none_or(|at| now.duration_since(at) > IDLE_TIMEOUT)
        {
            idle.last_sweep = Some(now);
            for list in idle.by_worker.values_mut() {
                list.retain(|c| now.duration_since(c.idle_since) <= IDLE_TIMEOUT);
            }
            idle.by_worker.retain(|_, list| !list.is_empty());
        }
    }

    async fn connect(address: SocketAddr) -> Result<Connection, CallError> {
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(address))
            .await
            .map_err(|_| CallError::Transport {
                address,
                message: format!("connecting timed out after {CONNECT_TIMEOUT:?}"),
            })?
            .map_err(|e| transport(address, &e))?;
        stream
            .set_nodelay(true)
            .map_err(|e| transport(address, &e))?;
        let (sender, io) = http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| transport(address, &e))?;
        Ok(Connection {
            sender,
            io: Box::pin(io),
            idle_since: Instant::now(),
        })
    }

    /// Sends `request` on `connection` and reads the whole answer, polling
    /// the connection's I/O in this task meanwhile.
    async fn exchange(
        connection: &mut Connection,
        request: Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), ExchangeError> {
        let Connection { sender, io, .. } = connection;
        let work = async {
            sender.ready().await.map_err(ExchangeError::Http)?;
            let response = sender
                .send_request(request)
                .await
                .map_err(ExchangeError::Http)?;
            let (parts, body) = response.into_parts();
            let body = body
                .collect()
                .await
                .map_err(ExchangeError::Http)?
                .to_bytes();
            Ok((parts, body))
        };
        tokio::pin!(work);
        tokio::select! {
            biased;
            result = &mut work => result,
            // A worker that closes after its answer (`Connection: close`)
            // ends the I/O as soon as the answer is read: what it read is
            // already handed over, so the exchange completes without it.
            ended = io.as_mut() => (&mut work).now_or_never().unwrap_or_else(|| {
                Err(ended.err().map_or(ExchangeError::Closed, ExchangeError::Http))
            }),
        }
    }

    /// One request and its whole answer on a pooled connection to
    /// `address` (a new one if none is idle); the connection goes back to
    /// the pool when the exchange completed and both sides keep it open.
    async fn send(
        &self,
        address: SocketAddr,
        request: Request<Full<Bytes>>,
    ) -> Result<(http::response::Parts, Bytes), CallError> {
        let mut connection = match self.checkout(address) {
            Some(connection) => connection,
            None => Self::connect(address).await?,
        };
        match Self::exchange(&mut connection, request).await {
            Ok((parts, body)) => {
                let closing = parts
                    .headers
                    .get(http::header::CONNECTION)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
                if !closing {
                    self.checkin(address, connection);
                }
                Ok((parts, body))
            }
            Err(ExchangeError::Http(e)) => Err(transport(address, &e)),
            Err(ExchangeError::Closed) => Err(CallError::Transport {
                address,
                message: "the worker closed the connection before answering".into(),
            }),
        }
    }

    /// Runs one inference on the worker at `address`, giving up at `deadline`.
    pub async fn infer(
        &self,
        address: SocketAddr,
        request: &EncodedRequest,
        deadline: Instant,
    ) -> Result<InferenceResult, CallError> {
        let remaining = deadline.saturating_duration_since(Instant::now());
        let mut builder = Request::post(request.path.as_str())
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
        let call = self.send(address, http_request);
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
        let Ok(request) = Request::get("/v2/health/ready")
            .header(HOST, address.to_string())
            .body(Full::new(Bytes::new()))
        else {
            return false;
        };
        let call = self.send(address, request);
        matches!(
            tokio::time::timeout(timeout, call).await,
            Ok(Ok((parts, _))) if parts.status == StatusCode::OK
        )
    }
}

fn transport(address: SocketAddr, error: &dyn std::error::Error) -> CallError {
    CallError::Transport {
        address,
        message: switchyard_backends::error_chain(error),
    }
}

/// The `error` field of a v2 error body, or the body itself.
fn error_message(body: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
        .unwrap_or_else(|| String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    use super::*;

    /// A worker stand-in on loopback that answers every request with 200,
    /// counting the connections it accepted; with `close`, it says
    /// `Connection: close` and closes after each answer.
    async fn worker(close: bool) -> (SocketAddr, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let accepted = Arc::new(AtomicUsize::new(0));
        let count = Arc::clone(&accepted);
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                count.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let mut buffer = vec![0u8; 4096];
                    let mut seen = Vec::new();
                    loop {
                        let Ok(n) = stream.read(&mut buffer).await else {
                            return;
                        };
                        if n == 0 {
                            return;
                        }
                        seen.extend_from_slice(&buffer[..n]);
                        // Requests without a body: each ends with a blank line.
                        while let Some(end) = seen.windows(4).position(|w| w == b"\r\n\r\n") {
                            seen.drain(..end + 4);
                            let answer: &[u8] = if close {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                            } else {
                                b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok"
                            };
                            if stream.write_all(answer).await.is_err() || close {
                                return;
                            }
                        }
                    }
                });
            }
        });
        (address, accepted)
    }

    #[tokio::test]
    async fn a_kept_alive_connection_is_reused_for_the_next_request() {
        let (address, accepted) = worker(false).await;
        let client = WorkerClient::new();
        for _ in 0..3 {
            assert!(client.ready(address, Duration::from_secs(5)).await);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_connection_the_worker_closes_is_not_reused() {
        let (address, accepted) = worker(true).await;
        let client = WorkerClient::new();
        for _ in 0..3 {
            assert!(client.ready(address, Duration::from_secs(5)).await);
        }
        assert_eq!(accepted.load(Ordering::SeqCst), 3);
        assert!(format!("{client:?}").contains("idle_connections: 0"));
    }

    #[tokio::test]
    async fn a_worker_gone_is_a_transport_error_that_may_be_retried() {
        let (address, _) = worker(false).await;
        let client = WorkerClient::new();
        assert!(client.ready(address, Duration::from_secs(5)).await);
        // Nothing listens on a port just released.
        let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let gone = free.local_addr().unwrap();
        drop(free);
        let request = EncodedRequest {
            path: "/v2/models/m/versions/1/infer".into(),
            body: Bytes::from_static(b"{}"),
            json_length: None,
        };
        let error = client
            .infer(gone, &request, Instant::now() + Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(error, CallError::Transport { .. }) && error.retryable(),
            "{error:?}"
        );
    }
}
