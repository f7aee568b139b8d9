//! Typed internal events: each one writes its log line and updates its metric in
//! one place, so the two never disagree. Log lines for events that can arrive at
//! line rate (bad input, drops) are rate limited; the counters never are.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::message::DecodeError;
use crate::security::Rejection;
use crate::stats::{BusStats, ConsumerStats, DropReason, SecurityStats};

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
    /// Logs the failure (rate limited). The counters are updated with the
    /// handling time in [`ConsumerStats`], once per message.
    pub fn emit(self) {
        if let Some(suppressed) = FAILED_LOG.allow() {
            tracing::warn!(
                consumer = %self.consumer,
                topic = %self.topic,
                msg_id = self.msg_id.unwrap_or("-"),
                error = %self.error,
                panicked = self.panicked,
                attempt = self.attempt,
                suppressed,
                "consumer failed to handle a message"
            );
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
