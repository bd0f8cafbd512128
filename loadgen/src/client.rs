//! The HTTP side: a pool of keep-alive HTTP/1.1 connections (many
//! connections on the tokio runtime's few threads) and one request/response
//! exchange classified into an [`Outcome`].
//!
//! This is a deliberately small HTTP/1.1 client, not hyper's. A load
//! generator sends the same few requests millions of times, so each request
//! is serialised once, head and body together ([`wire_request`]), and
//! sending it is one `write`; the answer is read into a per-connection
//! buffer, its head parsed with `httparse` (only the status and the headers
//! a report uses are looked at), and its body, delimited by
//! `Content-Length`, chunked encoding or the end of the connection, skipped
//! or kept. The task that sends a request does its I/O itself: no channel,
//! no other task. Measured against `wrk` (`switchyard-bench loadgen`),
//! hyper's client spent about seven times wrk's user-space CPU per request,
//! in its dispatcher's channels and header maps; the system calls were the
//! same (one write and one read per request).
//!
//! Idle connections wait in the pool and are checked (one non-blocking
//! read) before reuse if they sat idle; a request that times out takes its
//! connection down with it (the answer could still arrive on it). Only
//! `http://` is supported, and requests never carry `Expect`, so no `1xx`
//! answer is expected.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::uri::Authority;
use http::{Method, Response, StatusCode, Uri};
use http_body_util::Full;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::payload::RequestBody;
use crate::record::{Outcome, ServerTiming};
use crate::target::TargetEntry;

/// Response header naming the backend that served a request.
pub const BACKEND_HEADER: &str = "switchyard-backend";
/// Response headers with the server's own timing, in µs, and batch rows.
pub const QUEUE_TIME_HEADER: &str = "switchyard-queue-time-us";
pub const INFERENCE_TIME_HEADER: &str = "switchyard-inference-time-us";
pub const BATCH_ROWS_HEADER: &str = "switchyard-batch-rows";

/// A connection idle for longer than this is checked before reuse (a read
/// system call, so not done for one used a moment ago).
const CHECK_IDLE_AFTER: Duration = Duration::from_millis(100);
/// Most response headers accepted.
const MAX_HEADERS: usize = 64;
/// Largest response head and body accepted.
const MAX_HEAD_BYTES: usize = 64 * 1024;
const MAX_BODY_BYTES: usize = 256 * 1024 * 1024;
/// Bytes read at a time.
const READ_CHUNK: usize = 16 * 1024;

/// Why a request got no complete answer.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("invalid URI {uri}: {reason}")]
    Uri { uri: String, reason: &'static str },
    #[error("cannot connect to {authority}")]
    Connect {
        authority: String,
        #[source]
        source: std::io::Error,
    },
    #[error("connection error")]
    Io(#[from] std::io::Error),
    #[error("the server closed the connection before the answer was complete")]
    Closed,
    #[error("invalid HTTP answer: {0}")]
    Protocol(String),
}

/// `METHOD path HTTP/1.1`, `Host`, the content headers and the body, as
/// the bytes to write.
pub fn wire_request(
    method: &Method,
    origin: &Uri,
    host: &str,
    body: &RequestBody,
    binary_header: &str,
) -> Bytes {
    let mut head = format!("{method} {origin} HTTP/1.1\r\nhost: {host}\r\n");
    if !body.bytes.is_empty() || *method == Method::POST || *method == Method::PUT {
        head.push_str(&format!(
            "content-type: {}\r\ncontent-length: {}\r\n",
            body.content_type(),
            body.bytes.len()
        ));
    }
    if let Some(length) = body.json_length {
        head.push_str(&format!("{binary_header}: {length}\r\n"));
    }
    head.push_str("\r\n");
    let mut wire = Vec::with_capacity(head.len() + body.bytes.len());
    wire.extend_from_slice(head.as_bytes());
    wire.extend_from_slice(&body.bytes);
    Bytes::from(wire)
}

/// The parts of an answer a run uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: StatusCode,
    pub backend: Option<String>,
    pub server: ServerTiming,
    /// The body, when asked for.
    pub body: Bytes,
}

/// How a response body ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Length(usize),
    Chunked,
    UntilClose,
}

/// What the head of an answer said.
#[derive(Debug)]
pub struct Head {
    /// Bytes of the head, up to and including its blank line.
    pub length: usize,
    /// Status and the headers a report uses (the body left empty).
    pub answer: Answer,
    pub framing: Framing,
    /// Whether the server closes the connection after this answer.
    pub close: bool,
}

/// Reads the head of an answer at the start of `buffer`: `None` until it
/// is complete. Also used by the benchmark's blocking client, so that both
/// read answers the same way.
pub fn parse_head(buffer: &[u8]) -> Result<Option<Head>, ClientError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut headers);
    let length = match response.parse(buffer) {
        Ok(httparse::Status::Complete(length)) => length,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(ClientError::Protocol(e.to_string())),
    };
    let code = response.code.unwrap_or(0);
    let status =
        StatusCode::from_u16(code).map_err(|_| ClientError::Protocol(format!("status {code}")))?;
    let mut framing = Framing::UntilClose;
    let mut close = response.version == Some(0);
    let mut backend = None;
    let mut server = ServerTiming::default();
    let number = |value: &[u8]| {
        std::str::from_utf8(value)
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    for header in response.headers.iter() {
        let name = header.name;
        if name.eq_ignore_ascii_case("content-length") {
            let length = number(header.value)
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| ClientError::Protocol("bad content-length".into()))?;
            if framing != Framing::Chunked {
                framing = Framing::Length(length);
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if header.value.eq_ignore_ascii_case(b"chunked") || header.value.ends_with(b"chunked") {
                framing = Framing::Chunked;
            }
        } else if name.eq_ignore_ascii_case("connection") {
            if header.value.eq_ignore_ascii_case(b"close") {
                close = true;
            } else if header.value.eq_ignore_ascii_case(b"keep-alive") {
                close = false;
            }
        } else if name.eq_ignore_ascii_case(BACKEND_HEADER) {
            backend = std::str::from_utf8(header.value)
                .ok()
                .map(|v| v.trim().to_owned());
        } else if name.eq_ignore_ascii_case(QUEUE_TIME_HEADER) {
            server.queue_us = number(header.value);
        } else if name.eq_ignore_ascii_case(INFERENCE_TIME_HEADER) {
            server.inference_us = number(header.value);
        } else if name.eq_ignore_ascii_case(BATCH_ROWS_HEADER) {
            server.batch_rows = number(header.value);
        }
    }
    // No body, whatever the headers say.
    if status.is_informational()
        || status == StatusCode::NO_CONTENT
        || status == StatusCode::NOT_MODIFIED
    {
        framing = Framing::Length(0);
    }
    Ok(Some(Head {
        length,
        answer: Answer {
            status,
            backend,
            server,
            body: Bytes::new(),
        },
        framing,
        close,
    }))
}

/// One keep-alive connection and its read buffer.
struct Connection {
    stream: TcpStream,
    buffer: Vec<u8>,
    last_used: Instant,
}

impl Connection {
    async fn open(authority: &Authority) -> Result<Self, ClientError> {
        let failed = |source| ClientError::Connect {
            authority: authority.to_string(),
            source,
        };
        let port = authority.port_u16().unwrap_or(80);
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']');
        let stream = TcpStream::connect((host, port)).await.map_err(failed)?;
        stream.set_nodelay(true).map_err(failed)?;
        Ok(Self {
            stream,
            buffer: Vec::with_capacity(READ_CHUNK),
            last_used: Instant::now(),
        })
    }

    /// Whether a request can go out on this connection: one used a moment
    /// ago can; an older one is checked with a non-blocking read (a closed
    /// connection reads 0 bytes; an open idle one would block).
    fn usable(&self) -> bool {
        if self.last_used.elapsed() < CHECK_IDLE_AFTER {
            return true;
        }
        let mut probe = [0u8; 1];
        matches!(self.stream.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }

    /// Reads more of the answer; an error if the connection ended.
    async fn fill(&mut self) -> Result<(), ClientError> {
        self.buffer.reserve(READ_CHUNK);
        if self.stream.read_buf(&mut self.buffer).await? == 0 {
            return Err(ClientError::Closed);
        }
        Ok(())
    }

    /// Writes `request` and reads the whole answer (keeping the body if
    /// `keep_body`). Also says whether the connection can be used again.
    async fn round_trip(
        &mut self,
        request: &[u8],
        keep_body: bool,
    ) -> Result<(Answer, bool), ClientError> {
        self.stream.write_all(request).await?;
        self.buffer.clear();
        let head = loop {
            if let Some(head) = parse_head(&self.buffer)? {
                break head;
            }
            if self.buffer.len() > MAX_HEAD_BYTES {
                return Err(ClientError::Protocol("answer head too large".into()));
            }
            self.fill().await?;
        };
        let Head {
            length: start,
            mut answer,
            framing,
            close,
        } = head;
        let reusable = match framing {
            Framing::Length(length) => {
                if length > MAX_BODY_BYTES {
                    return Err(ClientError::Protocol(format!("body of {length} bytes")));
                }
                while self.buffer.len() < start + length {
                    self.fill().await?;
                }
                if keep_body {
                    answer.body = Bytes::copy_from_slice(&self.buffer[start..start + length]);
                }
                // A server does not send anything unasked on a keep-alive
                // connection; if it did, the connection is not reused.
                !close && self.buffer.len() == start + length
            }
            Framing::Chunked => {
                let body = self.read_chunked(start, keep_body).await?;
                answer.body = body;
                !close
            }
            Framing::UntilClose => {
                loop {
                    if self.buffer.len() - start > MAX_BODY_BYTES {
                        return Err(ClientError::Protocol("body too large".into()));
                    }
                    match self.fill().await {
                        Ok(()) => {}
                        Err(ClientError::Closed) => break,
                        Err(e) => return Err(e),
                    }
                }
                if keep_body {
                    answer.body = Bytes::copy_from_slice(&self.buffer[start..]);
                }
                false
            }
        };
        self.last_used = Instant::now();
        Ok((answer, reusable))
    }

    /// Decodes a chunked body that starts at `start` in the buffer.
    async fn read_chunked(&mut self, start: usize, keep: bool) -> Result<Bytes, ClientError> {
        let mut body = Vec::new();
        let mut at = start;
        loop {
            let line_end = loop {
                if let Some(i) = find_crlf(&self.buffer[at..]) {
                    break at + i;
                }
                self.fill().await?;
            };
            let line = std::str::from_utf8(&self.buffer[at..line_end])
                .map_err(|_| ClientError::Protocol("bad chunk size".into()))?;
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| ClientError::Protocol(format!("bad chunk size {size_text:?}")))?;
            at = line_end + 2;
            if size == 0 {
                // Trailers, if any, end with an empty line.
                loop {
                    let end = loop {
                        if let Some(i) = find_crlf(&self.buffer[at..]) {
                            break at + i;
                        }
                        self.fill().await?;
                    };
                    let empty = end == at;
                    at = end + 2;
                    if empty {
                        return Ok(Bytes::from(body));
                    }
                }
            }
            if body.len() + size > MAX_BODY_BYTES {
                return Err(ClientError::Protocol("body too large".into()));
            }
            while self.buffer.len() < at + size + 2 {
                self.fill().await?;
            }
            if keep {
                body.extend_from_slice(&self.buffer[at..at + size]);
            }
            at += size + 2;
        }
    }
}

fn find_crlf(bytes: &[u8]) -> Option<usize> {
    bytes.windows(2).position(|w| w == b"\r\n")
}

/// Idle connections per authority (a run has one or two: a short list).
struct Pool {
    idle: Mutex<Vec<(Authority, Vec<Connection>)>>,
    max_idle: usize,
}

/// The client every run uses: cheap to clone, shared by all requests.
#[derive(Clone)]
pub struct HttpClient {
    pool: Arc<Pool>,
}

impl std::fmt::Debug for HttpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpClient")
            .field("max_idle", &self.pool.max_idle)
            .finish_non_exhaustive()
    }
}

/// A keep-alive client that keeps up to `max_idle_connections` idle
/// connections per host (as many as a run has requests in flight). Nagle
/// is off: requests are small and latency is what is measured.
pub fn http_client(max_idle_connections: usize) -> HttpClient {
    HttpClient {
        pool: Arc::new(Pool {
            idle: Mutex::new(Vec::new()),
            max_idle: max_idle_connections.max(1),
        }),
    }
}

impl HttpClient {
    /// A session: one connection at a time, kept between its requests
    /// (a closed-loop worker's), given back to the pool when dropped.
    pub fn session(&self) -> Session {
        Session {
            client: self.clone(),
            held: None,
        }
    }

    /// `GET uri` (an absolute `http://` URI): the status and the body.
    pub async fn get(&self, uri: Uri) -> Result<Response<Full<Bytes>>, ClientError> {
        let invalid = |reason| ClientError::Uri {
            uri: uri.to_string(),
            reason,
        };
        let authority = uri.authority().cloned().ok_or_else(|| invalid("no host"))?;
        let origin = origin_form(&uri).ok_or_else(|| invalid("no path"))?;
        let empty = RequestBody {
            bytes: Bytes::new(),
            json_length: None,
            rows: 0,
            binary_output: false,
        };
        let wire = wire_request(&Method::GET, &origin, authority.as_str(), &empty, "");
        let answer = self.session().send(&authority, &wire, true).await?;
        let mut response = Response::new(Full::new(answer.body));
        *response.status_mut() = answer.status;
        Ok(response)
    }

    fn idle(&self) -> MutexGuard<'_, Vec<(Authority, Vec<Connection>)>> {
        self.pool
            .idle
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    async fn checkout(&self, authority: &Authority) -> Result<Connection, ClientError> {
        {
            let mut idle = self.idle();
            if let Some((_, list)) = idle.iter_mut().find(|(a, _)| a == authority) {
                while let Some(connection) = list.pop() {
                    if connection.usable() {
                        return Ok(connection);
                    }
                }
            }
        }
        Connection::open(authority).await
    }

    fn checkin(&self, authority: Authority, connection: Connection) {
        let mut idle = self.idle();
        let position = match idle.iter().position(|(a, _)| *a == authority) {
            Some(position) => position,
            None => {
                idle.push((authority, Vec::new()));
                idle.len() - 1
            }
        };
        let list = &mut idle[position].1;
        if list.len() < self.pool.max_idle {
            list.push(connection);
        }
    }
}

/// Requests sent one after the other over one kept connection (taken from
/// the pool when needed, given back when the session ends).
pub struct Session {
    client: HttpClient,
    held: Option<(Authority, Connection)>,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("connected", &self.held.is_some())
            .finish_non_exhaustive()
    }
}

impl Session {
    /// Writes the serialised `request` to `authority` and reads the answer.
    pub async fn send(
        &mut self,
        authority: &Authority,
        request: &[u8],
        keep_body: bool,
    ) -> Result<Answer, ClientError> {
        let kept = match self.held.take() {
            Some((held, connection)) if held == *authority => {
                connection.usable().then_some(connection)
            }
            Some((held, connection)) => {
                self.client.checkin(held, connection);
                None
            }
            None => None,
        };
        let mut connection = match kept {
            Some(connection) => connection,
            None => self.client.checkout(authority).await?,
        };
        let (answer, reusable) = connection.round_trip(request, keep_body).await?;
        if reusable {
            self.held = Some((authority.clone(), connection));
        }
        Ok(answer)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some((authority, connection)) = self.held.take() {
            self.client.checkin(authority, connection);
        }
    }
}

/// The origin form of an absolute URI: its path and query alone.
pub fn origin_form(uri: &Uri) -> Option<Uri> {
    let mut parts = uri.clone().into_parts();
    parts.scheme = None;
    parts.authority = None;
    if parts.path_and_query.is_none() {
        parts.path_and_query = Some(http::uri::PathAndQuery::from_static("/"));
    }
    Uri::from_parts(parts).ok()
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
    /// A request that got no complete answer in time.
    pub fn timed_out() -> Self {
        Self::failed(Outcome::Timeout)
    }

    fn failed(outcome: Outcome) -> Self {
        Self {
            outcome,
            backend: None,
            server: ServerTiming::default(),
        }
    }
}

/// Sends body number `index` of `entry` over `session` and reads the whole
/// response, giving up after `timeout`.
pub async fn exchange(
    session: &mut Session,
    entry: &TargetEntry,
    index: u64,
    timeout: Duration,
) -> Exchange {
    tokio::time::timeout(timeout, exchange_untimed(session, entry, index))
        .await
        .unwrap_or_else(|_| Exchange::timed_out())
}

/// [`exchange`] without a timeout: the caller keeps the clock.
pub async fn exchange_untimed(session: &mut Session, entry: &TargetEntry, index: u64) -> Exchange {
    match session
        .send(&entry.authority, entry.wire(index), false)
        .await
    {
        Ok(answer) => Exchange {
            outcome: classify(answer.status),
            backend: answer.backend,
            server: answer.server,
        },
        Err(_) => Exchange::failed(Outcome::ConnectionError),
    }
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
    fn heads_are_read_for_status_framing_and_timing() {
        let text = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nSwitchyard-Backend: local\r\n\
switchyard-queue-time-us: 12\r\nswitchyard-inference-time-us:  340 \r\nswitchyard-batch-rows: x\r\n\r\nhello";
        let head = parse_head(text).unwrap().unwrap();
        assert_eq!(head.answer.status, StatusCode::OK);
        assert_eq!(head.framing, Framing::Length(5));
        assert_eq!(head.length, text.len() - 5);
        assert!(!head.close);
        assert_eq!(head.answer.backend.as_deref(), Some("local"));
        assert_eq!(head.answer.server.queue_us, Some(12));
        assert_eq!(head.answer.server.inference_us, Some(340));
        assert_eq!(head.answer.server.batch_rows, None);
        assert!(
            parse_head(b"HTTP/1.1 200 OK\r\nContent-Len")
                .unwrap()
                .is_none()
        );
        assert!(parse_head(b"garbage\r\n\r\n").is_err());
        let chunked = parse_head(
            b"HTTP/1.1 503 Service Unavailable\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!(chunked.framing, Framing::Chunked);
        assert!(chunked.close);
        let old = parse_head(b"HTTP/1.0 204 No Content\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!(old.framing, Framing::Length(0));
        assert!(old.close);
    }

    #[test]
    fn requests_are_serialised_once_with_their_headers() {
        let body = RequestBody {
            bytes: Bytes::from_static(b"{\"a\":1}XYZW"),
            json_length: Some(7),
            rows: 1,
            binary_output: false,
        };
        let origin: Uri = "/v2/models/m/infer".parse().unwrap();
        let wire = wire_request(
            &Method::POST,
            &origin,
            "127.0.0.1:8000",
            &body,
            "inference-header-content-length",
        );
        let text = String::from_utf8(wire.to_vec()).unwrap();
        assert!(text.starts_with("POST /v2/models/m/infer HTTP/1.1\r\nhost: 127.0.0.1:8000\r\n"));
        assert!(text.contains("content-type: application/octet-stream\r\n"));
        assert!(text.contains("content-length: 11\r\n"));
        assert!(text.contains("inference-header-content-length: 7\r\n"));
        assert!(text.ends_with("\r\n\r\n{\"a\":1}XYZW"));
        let get = wire_request(
            &Method::GET,
            &"/".parse().unwrap(),
            "h",
            &RequestBody {
                bytes: Bytes::new(),
                json_length: None,
                rows: 1,
                binary_output: false,
            },
            "",
        );
        assert_eq!(&get[..], b"GET / HTTP/1.1\r\nhost: h\r\n\r\n");
    }

    /// A server that answers with a chunked body, then one framed by the
    /// end of the connection.
    #[tokio::test]
    async fn chunked_and_close_delimited_bodies_are_read() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut request = vec![0u8; 1024];
            let _ = stream.read(&mut request).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n6\r\n world\r\n0\r\nTrailer: 1\r\n\r\n")
                .await
                .unwrap();
            let _ = stream.read(&mut request).await.unwrap();
            stream
                .write_all(b"HTTP/1.1 404 Not Found\r\nConnection: close\r\n\r\ngone")
                .await
                .unwrap();
        });
        let client = http_client(1);
        let uri: Uri = format!("http://{address}/x").parse().unwrap();
        let response = client.get(uri.clone()).await.unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        use http_body_util::BodyExt;
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"hello world");
        // The same connection is reused for the second request.
        let response = client.get(uri).await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"gone");
    }
}
