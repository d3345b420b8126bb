//! Logs: lines for people by default, or with `LOG_FORMAT=json` one JSON object per line for a log
//! pipeline, each with the spans it happened in (a request's id, method, path and route; a
//! webhook's event id, type and order id). Every request ends in one line with its status and
//! latency. Nothing logs a header or a body, so no secret or token reaches the logs.
//!
//! Lines are written by a thread of their own (`tracing-appender`): at tens of thousands of
//! requests a second a write per line on the request's thread, under the writer's lock, would
//! cost more than the request. Nothing is dropped: when that thread falls behind, loggers wait.

use std::io::Write;

use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// What is logged unless `RUST_LOG` says otherwise. `stripe=warn`: async-stripe's warning names
/// the HTTP status of every failed call, which its error keeps only when the body is Stripe's own
/// JSON.
pub const DEFAULT_FILTER: &str = "entitle=info,tower_http=info,stripe=warn";

/// Installs the global logger writing to `out`. Keep the guard until the process ends: dropping it
/// writes what is still queued.
pub fn init(format: LogFormat, out: impl Write + Send + 'static) -> WorkerGuard {
    let (writer, guard) = NonBlockingBuilder::default().lossy(false).finish(out);
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let logger = tracing_subscriber::fmt().with_env_filter(filter).with_writer(writer);
    match format {
        LogFormat::Text => logger.with_ansi(false).init(),
        LogFormat::Json => logger
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(true)
            .init(),
    }
    guard
}
