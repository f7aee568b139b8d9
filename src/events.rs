//! Typed internal events: each one writes its log line and updates its metric in
//! one place, so the two never disagree. Log lines for events that can arrive at
//! line rate (bad input, drops) are rate limited; the counters never are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::message::DecodeError;
use crate::security::Rejection;
use crate::stats::{
    BusStats, ConsumerStats, DropReason, EndpointState, EndpointStats, SecurityStats,
};

/// Allows a burst of log lines per second and counts what it suppressed.
pub struct LogLimiter {
    second: AtomicU64,
    in_second: AtomicU64,
    suppressed: AtomicU64,
    per_second: u64,
}

impl LogLimiter {
    /// A limiter allowing `per_second` lines each second.
    pub const fn new(per_second: u64) -> LogLimiter {
        LogLimiter {
            second: AtomicU64::new(0),
            in_second: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
            per_second,
        }
    }

    /// `Some(n)` when a line may be logged now; `n` lines were suppressed before it.
    pub fn allow(&self) -> Option<u64> {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        if self.second.swap(now, Ordering::Relaxed) != now {
            self.in_second.store(0, Ordering::Relaxed);
        }
        if self.in_second.fetch_add(1, Ordering::Relaxed) < self.per_second {
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

static REJECTED_LOG: LogLimiter = LogLimiter::new(10);
static DROPPED_LOG: LogLimiter = LogLimiter::new(10);
static FAILED_LOG: LogLimiter = LogLimiter::new(20);
static DEAD_LETTER_LOG: LogLimiter = LogLimiter::new(5);
static HTTP_REJECTED_LOG: LogLimiter = LogLimiter::new(5);

/// Requests the HTTP server dropped, per [`HttpRejectReason`] (process-wide:
/// the server's own log lines are their only trace).
static HTTP_REJECTED: [AtomicU64; HttpRejectReason::ALL.len()] =
    [const { AtomicU64::new(0) }; HttpRejectReason::ALL.len()];

/// Why the HTTP server dropped a request before any handler saw it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HttpRejectReason {
    /// The request head was larger than the server accepts.
    HeadTooLarge,
    /// The request body was larger than `[http] max_body_bytes`.
    BodyTooLarge,
    /// The request head could not be parsed.
    Malformed,
    /// The client was too slow sending its request.
    Timeout,
    /// Anything else the server dropped a connection for.
    Other,
}

impl HttpRejectReason {
    /// Every reason, in metric order.
    pub const ALL: [HttpRejectReason; 5] = [
        HttpRejectReason::HeadTooLarge,
        HttpRejectReason::BodyTooLarge,
        HttpRejectReason::Malformed,
        HttpRejectReason::Timeout,
        HttpRejectReason::Other,
    ];

    /// The metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            HttpRejectReason::HeadTooLarge => "head_too_large",
            HttpRejectReason::BodyTooLarge => "body_too_large",
            HttpRejectReason::Malformed => "malformed",
            HttpRejectReason::Timeout => "timeout",
            HttpRejectReason::Other => "other",
        }
    }

    /// The reason an actix-http error line gives.
    pub fn of(message: &str) -> HttpRejectReason {
        if message.contains("too large") {
            HttpRejectReason::HeadTooLarge
        } else if message.contains("parse error") {
            HttpRejectReason::Malformed
        } else if message.contains("timeout") {
            HttpRejectReason::Timeout
        } else {
            HttpRejectReason::Other
        }
    }

    /// Requests dropped for this reason so far in this process.
    pub fn total(self) -> u64 {
        HTTP_REJECTED[self as usize].load(Ordering::Relaxed)
    }
}

/// The HTTP server dropped a request (oversized or malformed head, a slow
/// client) before any handler saw it.
pub struct HttpRequestRejected<'a> {
    /// Why.
    pub reason: HttpRejectReason,
    /// The server's own description.
    pub detail: &'a str,
}

impl HttpRequestRejected<'_> {
    /// Counts it and logs it (rate limited).
    pub fn emit(self) {
        HTTP_REJECTED[self.reason as usize].fetch_add(1, Ordering::Relaxed);
        if let Some(suppressed) = HTTP_REJECTED_LOG.allow() {
            tracing::warn!(
                reason = self.reason.as_str(),
                detail = %shortened(self.detail, MAX_LOGGED_ERROR_CHARS),
                suppressed,
                "rejected http request"
            );
        }
    }
}

/// The longest error or panic message a log line carries, in characters.
pub const MAX_LOGGED_ERROR_CHARS: usize = 300;

/// `text` cut to `max` characters, marked when cut.
fn shortened(text: &str, max: usize) -> std::borrow::Cow<'_, str> {
    match text.char_indices().nth(max) {
        Some((end, _)) => format!("{}… ({} bytes)", &text[..end], text.len()).into(),
        None => text.into(),
    }
}
static UNTRUSTED_LOG: LogLimiter = LogLimiter::new(10);

/// A message from the bus that could not be decoded.
pub struct MessageRejected<'a> {
    /// The socket it came from.
    pub bus: &'a BusStats,
    /// Why.
    pub error: &'a DecodeError,
    /// The frames, for a short preview in the log.
    pub frames: &'a [&'a [u8]],
}

impl MessageRejected<'_> {
    /// Counts the rejection and logs it (rate limited).
    pub fn emit(self) {
        self.bus.count_malformed(self.error.reason());
        if let Some(suppressed) = REJECTED_LOG.allow() {
            let preview = self
                .frames
                .first()
                .map(|f| String::from_utf8_lossy(&f[..f.len().min(80)]).into_owned())
                .unwrap_or_default();
            tracing::warn!(
                bus = %self.bus.name(),
                reason = self.error.reason(),
                error = %self.error,
                first_frame = %preview,
                suppressed,
                "rejected message from the bus"
            );
        }
    }
}

/// A message that signature validation rejected: it reaches no consumer.
pub struct MessageNotTrusted<'a> {
    /// Validation's counters.
    pub stats: &'a SecurityStats,
    /// Why, and who signed it.
    pub rejection: &'a Rejection,
    /// The message topic.
    pub topic: &'a str,
}

impl MessageNotTrusted<'_> {
    /// Counts the rejection and logs it (rate limited), naming the signer's CN and the topic.
    pub fn emit(self) {
        self.stats.count_rejected(self.rejection, self.topic);
        if let Some(suppressed) = UNTRUSTED_LOG.allow() {
            tracing::warn!(
                reason = self.rejection.reason.as_str(),
                signer = self.rejection.signer.as_deref().unwrap_or("-"),
                topic = %self.topic,
                detail = %self.rejection.detail,
                suppressed,
                "rejected message: validation failed"
            );
        }
    }
}

/// A message routed to a consumer but not delivered.
pub struct MessageDropped<'a> {
    /// The consumer.
    pub consumer: &'a ConsumerStats,
    /// Why.
    pub reason: DropReason,
    /// The message topic.
    pub topic: &'a str,
}

impl MessageDropped<'_> {
    /// Counts the drop and logs it (rate limited).
    pub fn emit(self) {
        self.consumer.count_dropped(self.reason);
        if let Some(suppressed) = DROPPED_LOG.allow() {
            tracing::warn!(
                consumer = %self.consumer.name(),
                reason = self.reason.as_str(),
                topic = %self.topic,
                suppressed,
                "dropped message for consumer"
            );
        }
    }
}

/// A consumer failed to handle a message (error or panic).
pub struct ConsumerFailed<'a> {
    /// The consumer.
    pub consumer: &'a str,
    /// The message topic.
    pub topic: &'a str,
    /// The message id, if any.
    pub msg_id: Option<&'a str>,
    /// The error text or panic message.
    pub error: &'a str,
    /// Whether it panicked.
    pub panicked: bool,
    /// Attempt number (1 = first try).
    pub attempt: u32,
}

impl ConsumerFailed<'_> {
    /// Logs the failure (rate limited, the error cut to [`MAX_LOGGED_ERROR_CHARS`]).
    /// The counters are updated with the handling time in [`ConsumerStats`],
    /// once per message.
    pub fn emit(self) {
        if let Some(suppressed) = FAILED_LOG.allow() {
            tracing::warn!(
                consumer = %self.consumer,
                topic = %self.topic,
                msg_id = self.msg_id.unwrap_or("-"),
                error = %shortened(self.error, MAX_LOGGED_ERROR_CHARS),
                panicked = self.panicked,
                attempt = self.attempt,
                suppressed,
                "consumer failed to handle a message"
            );
        }
    }
}

/// Shutdown ended with messages of a consumer not handled: those discarded
/// from its mailbox once the grace was over (already counted) and those it
/// still held when the hub left (counted here).
pub struct ShutdownLeftMessages<'a> {
    /// The consumer.
    pub consumer: &'a ConsumerStats,
    /// Messages discarded from the mailbox after the grace.
    pub discarded: u64,
    /// Messages still held (a handler that did not return in time).
    pub held: u64,
    /// The configured grace.
    pub grace_secs: u64,
}

impl ShutdownLeftMessages<'_> {
    /// Counts the held ones as dropped (reason `shutdown`) and logs one line
    /// for the consumer (once per shutdown, so never at line rate).
    pub fn emit(self) {
        self.consumer.count_dropped_at_shutdown(self.held);
        tracing::warn!(
            consumer = %self.consumer.name(),
            messages = self.discarded + self.held,
            discarded = self.discarded,
            held = self.held,
            grace_secs = self.grace_secs,
            reason = DropReason::Shutdown.as_str(),
            "shutdown grace over: messages not handled, counted as dropped"
        );
    }
}

/// What ZeroMQ's socket monitor said about an endpoint a bus socket connects to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndpointChange {
    /// Connected.
    Connected,
    /// The connection was lost.
    Disconnected,
    /// An attempt to connect failed (ZeroMQ retries).
    Retried,
}

/// A connection event of an endpoint.
pub struct EndpointEvent<'a> {
    /// The endpoint.
    pub endpoint: &'a EndpointStats,
    /// What happened.
    pub change: EndpointChange,
}

impl EndpointEvent<'_> {
    /// Counts it, updates the endpoint's state, and logs transitions only (a
    /// down endpoint is retried every `reconnect_ivl_ms`: one line, not one
    /// per retry).
    pub fn emit(self) {
        let e = self.endpoint;
        let previous = match self.change {
            EndpointChange::Connected => e.record_connected(),
            EndpointChange::Disconnected => e.record_disconnected(),
            EndpointChange::Retried => e.record_retry(),
        };
        let now = e.state();
        if previous == now {
            return;
        }
        match now {
            EndpointState::Connected => tracing::info!(
                bus = %e.bus(),
                endpoint = %e.address(),
                previous = previous.as_str(),
                "connected to endpoint"
            ),
            EndpointState::Disconnected => tracing::warn!(
                bus = %e.bus(),
                endpoint = %e.address(),
                "lost connection to endpoint; reconnecting"
            ),
            EndpointState::Retrying if previous != EndpointState::Disconnected => {
                tracing::warn!(
                    bus = %e.bus(),
                    endpoint = %e.address(),
                    "cannot connect to endpoint; retrying"
                )
            }
            _ => {}
        }
    }
}

/// A consumer is restarted after a fatal error.
pub struct ConsumerRestarted<'a> {
    /// The consumer.
    pub consumer: &'a ConsumerStats,
    /// The fatal error that caused it.
    pub reason: &'a str,
}

impl ConsumerRestarted<'_> {
    /// Counts the restart and logs it (restarts are backed off, so never at line rate).
    pub fn emit(self) {
        tracing::warn!(consumer = %self.consumer.name(), reason = %self.reason, "restarting consumer after a fatal error");
        self.consumer.count_restart();
    }
}

/// A failed message could not be written to the consumer's dead-letter file.
pub struct DeadLetterFailed<'a> {
    /// The consumer.
    pub consumer: &'a ConsumerStats,
    /// The dead-letter file.
    pub path: &'a std::path::Path,
    /// What the system said.
    pub error: &'a std::io::Error,
}

impl DeadLetterFailed<'_> {
    /// Counts it, makes readyz fail with the reason (until a dead letter is
    /// written again) and logs it (rate limited).
    pub fn emit(self) {
        let problem = format!(
            "cannot write dead letters to {}: {}",
            self.path.display(),
            self.error
        );
        if let Some(suppressed) = DEAD_LETTER_LOG.allow() {
            tracing::error!(
                consumer = %self.consumer.name(),
                path = %self.path.display(),
                error = %self.error,
                suppressed,
                "cannot write dead letter: the failed message is lost"
            );
        }
        self.consumer.count_dead_letter_error(problem);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_allows_a_burst_then_counts() {
        let limiter = LogLimiter::new(3);
        let allowed = (0..10).filter(|_| limiter.allow().is_some()).count();
        // All ten calls may straddle a second boundary; at least the burst is allowed.
        assert!((3..=6).contains(&allowed), "allowed {allowed}");
    }
}
