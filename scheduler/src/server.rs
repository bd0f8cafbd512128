//! The HTTP server: accepts connections (HTTP/1.1 keep-alive and HTTP/2)
//! and serves them until `shutdown` resolves, then drains.
//!
//! Requests pass through a tower stack before the v2 routes: a concurrency
//! limit with load shedding, so that beyond `server.max_concurrent_requests`
//! a request is answered 503 at once instead of piling up in memory.
//!
//! Connections are limited too. Beyond `server.max_connections` open
//! connections, a new one is accepted and closed at once (the client sees
//! the connection close without a response), so a flood of connections
//! fails fast rather than queueing in the kernel. A request head must
//! arrive within `server.header_read_timeout_ms` and fit
//! `server.max_header_bytes` and `server.max_headers` (hyper answers 408,
//! 431 or 400 itself, without a JSON body, and closes the connection); the
//! same timeout closes idle HTTP/1 keep-alive connections.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tower::ServiceBuilder;

use crate::config::ServerConfig;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::http::{Body, error_response, handle};
use crate::self_wake::SelfWake;

/// Turns the load-shedding layer's refusal into the gateway's 503.
fn shed_to_response(
    result: Result<http::Response<Body>, tower::BoxError>,
) -> Result<http::Response<Body>, tower::BoxError> {
    Ok(result.unwrap_or_else(|error| {
        if error.is::<tower::load_shed::error::Overloaded>() {
            error_response(&GatewayError::GatewayOverloaded)
        } else {
            error_response(&GatewayError::Body(error.to_string()))
        }
    }))
}

/// Serves `gateway` on `listener` until `shutdown` completes; then stops
/// accepting, lets in-flight requests finish (up to the configured drain
/// timeout), releases what the backends started, and returns.
pub async fn run(listener: TcpListener, gateway: Arc<Gateway>, shutdown: impl Future<Output = ()>) {
    let drain_timeout = gateway.server.drain_timeout;
    let serving = Arc::clone(&gateway);
    let service = ServiceBuilder::new()
        .map_result(shed_to_response)
        .load_shed()
        .concurrency_limit(gateway.server.max_concurrent_requests)
        .service_fn(move |request| {
            let gateway = Arc::clone(&serving);
            async move { Ok::<_, Infallible>(handle(gateway, request).await) }
        });
    // The policy watcher runs until the server stops.
    let (stop_watcher, watcher_stopped) = tokio::sync::oneshot::channel::<()>();
    let watcher = {
        let gateway = Arc::clone(&gateway);
        tokio::spawn(async move {
            gateway
                .watch_policies(async move {
                    let _ = watcher_stopped.await;
                })
                .await;
        })
    };
    let builder = connection_builder(&gateway.server);
    let connections = Arc::new(Semaphore::new(gateway.server.max_connections));
    let (drain, draining) = watch::channel(false);
    let accept = |stream: TcpStream| {
        let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else {
            // Closing at once tells the client now; it can retry
            // elsewhere instead of waiting in the accept queue.
            drop(stream);
            metrics::counter!("switchyard_connections_refused_total").increment(1);
            tracing::debug!("connection refused: server.max_connections reached");
            return;
        };
        tokio::spawn(serve_connection(
            stream,
            slot,
            builder.clone(),
            service.clone(),
            gateway.server.header_read_timeout,
            draining.clone(),
        ));
    };
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                match accepted {
                    Ok((stream, _peer)) => accept(stream),
                    Err(error) => {
                        // Usually out of file descriptors: back off briefly
                        // instead of spinning, and keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    }
                }
            }
            () = &mut shutdown => break,
        }
    }
    let _ = drain.send(true);
    // Connections the kernel completed before the listener closes would be
    // reset with it, their requests unanswered: take them in first. The
    // kernel stops starting handshakes (a client's SYN is dropped; its retry
    // finds the port closed and is refused), so once the handshakes already
    // under way have landed, the queue runs dry. Where the filter cannot be
    // set, the overall bound keeps a steady stream of new connections from
    // holding the drain open.
    if let Err(error) = refuse_new_handshakes(&listener) {
        tracing::warn!(%error, "could not stop new handshakes; draining the accept queue for a bounded time");
    }
    let backlog_deadline = tokio::time::Instant::now() + BACKLOG_WINDOW;
    while let Ok(Ok((stream, _peer))) = tokio::time::timeout_at(
        backlog_deadline.min(tokio::time::Instant::now() + BACKLOG_POLL),
        listener.accept(),
    )
    .await
    {
        accept(stream);
    }
    drop(listener);
    let _ = stop_watcher.send(());
    let _ = watcher.await;
    tracing::info!(timeout = ?drain_timeout, "shutting down: draining in-flight requests");
    // Every connection holds a permit until it has closed.
    let all = u32::try_from(gateway.server.max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(drain_timeout, connections.acquire_many(all)).await {
        Ok(_) => tracing::info!("drained"),
        Err(_) => tracing::warn!("drain timeout reached; closing remaining connections"),
    }
    gateway.shutdown().await;
}

/// How long a draining connection may still take a request that was on its
/// way when the drain began, before it is shut down gracefully.
const DRAIN_GRACE: std::time::Duration = std::time::Duration::from_millis(500);

/// How long the drain waits for one more connection in the accept queue.
const BACKLOG_POLL: std::time::Duration = std::time::Duration::from_millis(5);

/// The longest the drain keeps taking connections from the accept queue.
const BACKLOG_WINDOW: std::time::Duration = std::time::Duration::from_millis(100);

/// Stops the kernel from starting new TCP handshakes on `listener` while
/// letting those under way complete: a socket filter drops every arriving
/// segment with SYN set, and nothing else. A refused client's SYN goes
/// unanswered; its retransmission (after about a second) meets the closed
/// port and is refused, so it never sends a request into a connection the
/// listener's close would reset. Connections accepted later inherit the
/// filter, which an established connection never notices.
#[cfg(target_os = "linux")]
fn refuse_new_handshakes(listener: &TcpListener) -> std::io::Result<()> {
    use socket2::{SockFilter, SockRef};
    // Classic BPF, run on the TCP header: load the flags byte; SYN set →
    // drop (keep 0 bytes), else keep the whole segment.
    const LOAD_BYTE_ABSOLUTE: u16 = 0x30;
    const JUMP_IF_BITS_SET: u16 = 0x45;
    const RETURN: u16 = 0x06;
    const TCP_FLAGS_OFFSET: u32 = 13;
    const SYN: u32 = 0x02;
    let program = [
        SockFilter::new(LOAD_BYTE_ABSOLUTE, 0, 0, TCP_FLAGS_OFFSET),
        SockFilter::new(JUMP_IF_BITS_SET, 0, 1, SYN),
        SockFilter::new(RETURN, 0, 0, 0),
        SockFilter::new(RETURN, 0, 0, u32::MAX),
    ];
    SockRef::from(listener).attach_filter(&program)
}

#[cfg(not(target_os = "linux"))]
fn refuse_new_handshakes(_listener: &TcpListener) -> std::io::Result<()> {
    Err(std::io::Error::new(
        std::io::ErrorKind::Unsupported,
        "socket filters need Linux",
    ))
}

/// Serves one connection until it closes. When the drain begins, a request
/// already in progress completes; one still on its way (its bytes not yet
/// read) has [`DRAIN_GRACE`] to arrive and is answered too; then the
/// connection is shut down gracefully (HTTP/1: after the response in
/// progress, keep-alive off; HTTP/2: GOAWAY).
async fn serve_connection<S>(
    stream: TcpStream,
    slot: OwnedSemaphorePermit,
    builder: auto::Builder<TokioExecutor>,
    service: S,
    head_timeout: std::time::Duration,
    mut draining: watch::Receiver<bool>,
) where
    S: tower::Service<http::Request<hyper::body::Incoming>, Response = http::Response<Body>>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let _slot = slot;
    let _ = stream.set_nodelay(true);
    // hyper's head timeout starts once it knows the protocol, which takes a
    // first byte: a client that sends nothing must not hold its slot for
    // ever either, nor hold up a drain past the grace.
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        peeked = tokio::time::timeout(head_timeout, stream.peek(&mut first)) => peeked,
        () = drain_started(&mut draining) => {
            tokio::time::timeout(DRAIN_GRACE, stream.peek(&mut first)).await
        }
    };
    match peeked {
        Ok(Ok(n)) if n > 0 => {}
        _ => return,
    }
    let connection = builder
        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
        .into_owned();
    let mut connection = std::pin::pin!(connection);
    // hyper wakes the connection's own task while it is being polled (see
    // `self_wake`); poll it again at once rather than through the scheduler.
    // This covers everything the request runs in this task, the call to a
    // worker container included.
    let self_wake = SelfWake::new();
    let ended = tokio::select! {
        ended = std::future::poll_fn(|cx| self_wake.poll(connection.as_mut(), cx)) => Some(ended),
        () = drain_started(&mut draining) => None,
    };
    let ended = match ended {
        Some(ended) => ended,
        None => {
            let grace = tokio::time::sleep(DRAIN_GRACE);
            tokio::select! {
                ended = std::future::poll_fn(|cx| self_wake.poll(connection.as_mut(), cx)) => ended,
                () = grace => {
                    connection.as_mut().graceful_shutdown();
                    std::future::poll_fn(|cx| self_wake.poll(connection.as_mut(), cx)).await
                }
            }
        }
    };
    if let Err(error) = ended {
        tracing::debug!(%error, "connection ended with an error");
    }
}

/// Resolves once the drain has begun (or the server is gone).
async fn drain_started(draining: &mut watch::Receiver<bool>) {
    let _ = draining.wait_for(|d| *d).await;
}

/// The HTTP/1 and HTTP/2 connection settings: head size and count limits
/// and the head read timeout (which needs hyper's timer).
fn connection_builder(server: &ServerConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_read_timeout)
        .max_buf_size(server.max_header_bytes)
        .max_headers(server.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(server.max_header_bytes).unwrap_or(u32::MAX));
    builder
}

/// Resolves on Ctrl-C or SIGTERM: the shutdown signal of the `switchyard`
/// binary, and of any program that runs the gateway's way.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            // Without a SIGTERM handler, only Ctrl-C ends the wait.
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
}
