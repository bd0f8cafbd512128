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
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tower::ServiceBuilder;

use crate::config::ServerConfig;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::http::{Body, error_response, handle};

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
    let graceful = GracefulShutdown::new();
    let builder = connection_builder(&gateway.server);
    let connections = Arc::new(Semaphore::new(gateway.server.max_connections));
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let stream = match accepted {
                    Ok((stream, _peer)) => stream,
                    Err(error) => {
                        // Usually out of file descriptors: back off briefly
                        // instead of spinning, and keep serving.
                        tracing::warn!(%error, "accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                        continue;
                    }
                };
                let Ok(slot) = Arc::clone(&connections).try_acquire_owned() else {
                    // Closing at once tells the client now; it can retry
                    // elsewhere instead of waiting in the accept queue.
                    drop(stream);
                    metrics::counter!("switchyard_connections_refused_total").increment(1);
                    tracing::debug!("connection refused: server.max_connections reached");
                    continue;
                };
                let _ = stream.set_nodelay(true);
                // Held from the start, so a connection still waiting for its
                // first byte delays a drain by at most the head timeout.
                let drain_watch = graceful.watcher();
                let builder = builder.clone();
                let service = service.clone();
                let head_timeout = gateway.server.header_read_timeout;
                tokio::spawn(async move {
                    let _slot = slot;
                    // hyper's head timeout starts once it knows the protocol,
                    // which takes a first byte: a client that sends nothing
                    // must not hold its slot for ever either.
                    let mut first = [0u8; 1];
                    match tokio::time::timeout(head_timeout, stream.peek(&mut first)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => return,
                    }
                    let connection = builder
                        .serve_connection_with_upgrades(TokioIo::new(stream), TowerToHyperService::new(service))
                        .into_owned();
                    if let Err(error) = drain_watch.watch(connection).await {
                        tracing::debug!(%error, "connection ended with an error");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    drop(listener);
    let _ = stop_watcher.send(());
    let _ = watcher.await;
    tracing::info!(timeout = ?drain_timeout, "shutting down: draining in-flight requests");
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("drained"),
        () = tokio::time::sleep(drain_timeout) => tracing::warn!("drain timeout reached; closing remaining connections"),
    }
    gateway.shutdown().await;
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
