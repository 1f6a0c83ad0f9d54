//! The accept loop: HTTP/1.1 and HTTP/2 with prior knowledge (h2c) on one listener.
//!
//! Hand-written rather than `axum::serve`, because that one sets no timer and so no header-read
//! timeout: a client dribbling headers could hold a socket forever. Each connection's first
//! bytes decide its protocol; on shutdown every connection drains gracefully.

use std::time::Duration;

use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulConnection;
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Concurrent requests one HTTP/2 connection may carry.
const MAX_HTTP2_STREAMS: u32 = 16_384;
/// How long to wait before accepting again after `accept` failed (out of descriptors, say).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

type HttpService = TowerToHyperService<axum::Router>;

/// Serves `router` on `listener` until `shutdown` fires and every connection has finished.
pub(crate) async fn serve(
    listener: TcpListener,
    router: axum::Router,
    header_timeout: Duration,
    shutdown: CancellationToken,
) {
    let connections = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(error) => {
                    // Running out of file descriptors must not end the server: back off.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(router.clone());
        let shutdown = shutdown.clone();
        // HTTP/1.1, and HTTP/2 with prior knowledge (h2c): a client that keeps many calls
        // open (thousands of waiting `check`s) multiplexes them on one connection instead
        // of paying hyper's fixed 16 KiB of buffers per HTTP/1.1 connection. A small task
        // peeks at the preface and spawns the connection's own task, so an HTTP/1.1
        // connection's future is not sized for HTTP/2's state machine.
        let tracker = connections.clone();
        connections.spawn(async move {
            match tokio::time::timeout(header_timeout, is_http2_preface(&stream)).await {
                Ok(Ok(true)) => tracker.spawn(serve_http2(stream, service, shutdown)),
                Ok(Ok(false)) => {
                    tracker.spawn(serve_http1(stream, service, shutdown, header_timeout))
                }
                // Nothing arrived in time, or the peer went away: drop the connection.
                Ok(Err(_)) | Err(_) => return,
            };
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

async fn serve_http1(
    stream: TcpStream,
    service: HttpService,
    shutdown: CancellationToken,
    header_timeout: Duration,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    until_shutdown(
        builder.serve_connection(TokioIo::new(stream), service),
        shutdown,
    )
    .await;
}

async fn serve_http2(stream: TcpStream, service: HttpService, shutdown: CancellationToken) {
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(MAX_HTTP2_STREAMS);
    until_shutdown(
        builder.serve_connection(TokioIo::new(stream), service),
        shutdown,
    )
    .await;
}

/// Serves a connection until it ends; on shutdown, lets its requests in flight finish first.
async fn until_shutdown<C: GracefulConnection>(connection: C, shutdown: CancellationToken) {
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = connection.as_mut() => {}
        _ = shutdown.cancelled() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Whether the connection opens with HTTP/2's preface (`PRI * HTTP/2.0…`), without consuming
/// anything. HTTP/1.1 methods never start with "PR", so two bytes decide.
async fn is_http2_preface(stream: &TcpStream) -> std::io::Result<bool> {
    let mut head = [0u8; 2];
    loop {
        let n = stream.peek(&mut head).await?;
        match n {
            0 => return Err(std::io::ErrorKind::UnexpectedEof.into()),
            1 if head[0] != b'P' => return Ok(false),
            // One byte so far, and it could start either: wait for the next.
            1 => tokio::time::sleep(Duration::from_millis(1)).await,
            _ => return Ok(&head == b"PR"),
        }
    }
}
