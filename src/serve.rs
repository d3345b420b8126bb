//! The HTTP server loop: `axum::serve`'s, with the limits a service facing the internet needs.
//!
//! `axum::serve` gives hyper no timer, so hyper's header timeout never runs: a client that opens
//! a connection and sends nothing, or half a request line, or goes quiet between keep-alive
//! requests, holds its connection (~28 KiB) for ever, and enough of them exhaust memory and file
//! descriptors. Here every connection gets:
//! - a header timeout: the request's headers must arrive within `header_timeout` of the connection
//!   opening or of the previous response (hyper ≥ 1.6 starts it again while a keep-alive
//!   connection waits, so it is the idle timeout too), else it is closed; the body is bounded by
//!   the router's request timeout;
//! - a place among at most `max_connections`: beyond that, new connections wait in the kernel's
//!   accept backlog until one closes, instead of taking memory.
//!
//! Shutdown is as `axum::serve`'s graceful one: stop accepting, let each connection finish the
//! request it is serving, then close.

use std::{future::Future, sync::Arc, time::Duration};

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};

use crate::config::ConnectionLimits;

pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: ConnectionLimits,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let places = Arc::new(Semaphore::new(limits.max_connections));
    let graceful = GracefulShutdown::new();
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .keep_alive(true);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let place = tokio::select! {
            place = places.clone().acquire_owned() => place.expect("the semaphore is never closed"),
            () = &mut shutdown => break,
        };
        let (stream, remote) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    // Out of file descriptors, say: wait instead of spinning on the error.
                    tracing::warn!(%error, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        // Answers are written whole; waiting to coalesce them (Nagle) only adds latency.
        let _ = stream.set_nodelay(true);
        let connection = builder.serve_connection(TokioIo::new(stream), TowerToHyperService::new(app.clone()));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(error) = connection.await {
                tracing::debug!(%remote, %error, "connection closed with an error");
            }
            drop(place);
        });
    }
    drop(listener);
    graceful.shutdown().await;
    Ok(())
}
