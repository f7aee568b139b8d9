//! Logging to stderr, and the HTTP server's own error lines turned into a
//! counted, rate-limited event.
//!
//! actix-http logs one ERROR line (`stream error: ...`) for every connection
//! it drops on a bad request head, an oversized one or a timeout: a client can
//! make it log at line rate. Those lines are kept out of the log and become
//! [`HttpRequestRejected`](crate::events::HttpRequestRejected) events instead.

use std::fmt::Write as _;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Metadata, Subscriber};
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::layer::{Context, Layer, SubscriberExt as _};
use tracing_subscriber::util::SubscriberInitExt as _;

/// Where actix-http logs the requests it drops.
const HTTP_DISPATCHER_TARGET: &str = "actix_http::h1::dispatcher";

/// Whether an event is one of actix-http's per-connection error lines.
fn is_http_stream_error(metadata: &Metadata<'_>) -> bool {
    *metadata.level() == Level::ERROR && metadata.target() == HTTP_DISPATCHER_TARGET
}

/// Sets up logging to stderr (`RUST_LOG` style filter, default `info`), without
/// colours unless stderr is a terminal: stdout stays clean for tools that print
/// data (tail, collectd exec). actix-http's per-connection error lines are
/// counted and logged rate limited (see the module documentation).
pub fn init_logging() {
    init_logging_with_default("info")
}

/// Like [`init_logging`], with `default` (such as `warn`) as the level when
/// `RUST_LOG` is not set: commands that print their results, such as
/// `fedhub history query`, keep stderr for what went wrong.
pub fn init_logging_with_default(default: &str) {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_filter(filter_fn(|metadata| !is_http_stream_error(metadata)))
        .with_filter(filter);
    let http_errors = HttpStreamErrors.with_filter(filter_fn(is_http_stream_error));
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(http_errors)
        .try_init();
}

/// Turns actix-http's per-connection error lines into counted events.
struct HttpStreamErrors;

impl<S: Subscriber> Layer<S> for HttpStreamErrors {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut message = MessageText(String::new());
        event.record(&mut message);
        crate::events::HttpRequestRejected {
            reason: crate::events::HttpRejectReason::of(&message.0),
            detail: &message.0,
        }
        .emit();
    }
}

/// An event's `message` field as text.
struct MessageText(String);

impl Visit for MessageText {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, "{value:?}");
        }
    }
}
