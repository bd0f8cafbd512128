//! A gateway served in the test process on an ephemeral port, and a raw
//! HTTP/1.1 exchange over TCP for requests a well-behaved client library
//! will not send (wrong Content-Length, trickled bodies, oversized heads).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use switchyard_scheduler::{Config, Gateway};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use super::workspace;

/// A gateway running `run()` in this process on 127.0.0.1, port 0.
pub struct TestGateway {
    pub address: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

impl TestGateway {
    /// Starts the gateway of `config_text` (paths relative to the workspace).
    pub async fn start(config_text: &str) -> Self {
        let config = Config::parse(config_text, "(test)", &workspace()).expect("valid config");
        let gateway = Gateway::start(&config).await.expect("gateway starts");
        Self::serve(Arc::new(gateway)).await
    }

    /// Serves an already built gateway.
    pub async fn serve(gateway: Arc<Gateway>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let address = listener.local_addr().expect("address");
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(switchyard_scheduler::run(listener, gateway, async move {
            let _ = stopped.await;
        }));
        Self {
            address,
            stop: Some(stop),
            task,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Signals shutdown and waits (bounded) for `run` to return.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .expect("run returns after shutdown")
            .expect("run does not panic");
    }
}

/// The first HTTP/1.1 response read from a raw connection.
#[derive(Debug)]
pub struct RawReply {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

impl RawReply {
    /// The body as JSON; panics with the whole reply if it is not.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "body is not JSON ({e}): {}\n{}",
                self.head,
                String::from_utf8_lossy(&self.body)
            )
        })
    }

    /// The `error` message of a JSON error body.
    pub fn error(&self) -> String {
        self.json()["error"]
            .as_str()
            .unwrap_or_else(|| panic!("no error message: {}", self.head))
            .to_owned()
    }

    /// A header's value (first of that name, case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then_some(value.trim())
        })
    }
}

/// How a raw exchange ended.
#[derive(Debug)]
pub enum RawOutcome {
    /// A whole response arrived.
    Reply(RawReply),
    /// The server closed the connection (or reset it) before a response.
    Closed,
}

impl RawOutcome {
    /// The reply; panics if the connection closed without one.
    pub fn reply(self) -> RawReply {
        match self {
            RawOutcome::Reply(reply) => reply,
            RawOutcome::Closed => panic!("the server closed the connection without a response"),
        }
    }
}

/// Everything a raw exchange does, in order.
#[derive(Debug, Clone)]
pub enum Step {
    Send(Vec<u8>),
    Pause(Duration),
    /// Closes the sending half (the server sees end of input).
    CloseWrite,
}

/// Runs `steps` on a new connection to `address`, then reads the first
/// response. The whole exchange must end within `bound` or the test fails,
/// so a server that hangs shows up as a failure, not a hung test. Writes
/// that fail because the server already answered and closed are ignored:
/// the response (or the close) is what is checked.
pub async fn raw_exchange(address: SocketAddr, steps: &[Step], bound: Duration) -> RawOutcome {
    let exchange = async {
        let mut stream = TcpStream::connect(address).await.expect("connect");
        for step in steps {
            match step {
                Step::Send(bytes) => {
                    if stream.write_all(bytes).await.is_err() {
                        break;
                    }
                }
                Step::Pause(pause) => tokio::time::sleep(*pause).await,
                Step::CloseWrite => {
                    let _ = stream.shutdown().await;
                }
            }
        }
        read_response(&mut stream).await
    };
    tokio::time::timeout(bound, exchange)
        .await
        .unwrap_or_else(|_| panic!("no response and no close within {bound:?}"))
}

/// Sends `bytes` at once and reads the first response.
pub async fn raw(address: SocketAddr, bytes: Vec<u8>) -> RawOutcome {
    raw_exchange(address, &[Step::Send(bytes)], Duration::from_secs(30)).await
}

/// Reads one response: the head, then a body of its Content-Length (or up
/// to the close when it has none).
pub async fn read_response(stream: &mut TcpStream) -> RawOutcome {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let head_end = loop {
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            break end;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return RawOutcome::Closed,
            Ok(n) => buffer.extend_from_slice(&chunk[..n]),
        }
    };
    let head = String::from_utf8_lossy(&buffer[..head_end]).into_owned();
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP status line: {head}"));
    let mut body = buffer[head_end + 4..].to_vec();
    let length = head.lines().skip(1).find_map(|line| {
        let (key, value) = line.split_once(':')?;
        key.trim()
            .eq_ignore_ascii_case("content-length")
            .then(|| value.trim().parse::<usize>().ok())
            .flatten()
    });
    loop {
        if length.is_some_and(|length| body.len() >= length) {
            body.truncate(length.unwrap_or(0));
            break;
        }
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => body.extend_from_slice(&chunk[..n]),
        }
    }
    RawOutcome::Reply(RawReply { status, head, body })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// An HTTP/1.1 POST with `headers` and `body`, `Content-Length` as given
/// (`None`: the body's true length).
pub fn post_bytes(
    path: &str,
    headers: &[(&str, &str)],
    content_length: Option<usize>,
    body: &[u8],
) -> Vec<u8> {
    let mut request = format!(
        "POST {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n",
        content_length.unwrap_or(body.len())
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    bytes
}
