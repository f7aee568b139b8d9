//! The delivery's metrics and its typed events: each event writes its log
//! line and updates its counters in one place.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use prometheus::{HistogramOpts, HistogramVec, IntCounterVec, IntGauge, Opts, Registry};

/// The Prometheus series and the counters `/state` shows.
pub(crate) struct Metrics {
    deliveries: IntCounterVec,
    seconds: HistogramVec,
    pending_gauge: IntGauge,
    dead_gauge: IntGauge,
    pub(crate) sent: AtomicU64,
    pub(crate) failed_attempts: AtomicU64,
    pub(crate) dead_lettered: AtomicU64,
    pending: AtomicI64,
    dead: AtomicI64,
}

impl Metrics {
    /// Registers the series in `registry` (a series registered before, by
    /// an earlier deliverer on the same registry, is left as it is).
    pub(crate) fn register(registry: &Registry) -> Result<Metrics, prometheus::Error> {
        let deliveries = IntCounterVec::new(
            Opts::new(
                "fedhub_fmn_deliveries_total",
                "Notification delivery attempts by context and outcome (sent, failed, dead)",
            ),
            &["context", "outcome"],
        )?;
        let seconds = HistogramVec::new(
            HistogramOpts::new(
                "fedhub_fmn_delivery_seconds",
                "Time one notification delivery attempt took, by context",
            )
            .buckets(vec![
                0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
            ]),
            &["context"],
        )?;
        let pending_gauge = IntGauge::new(
            "fedhub_fmn_deliveries_pending",
            "Notification deliveries waiting to be sent or retried",
        )?;
        let dead_gauge = IntGauge::new(
            "fedhub_fmn_deliveries_dead",
            "Notification deliveries that gave up and wait in the dead-letter state",
        )?;
        fedhub::register_metrics(
            registry,
            vec![
                Box::new(deliveries.clone()),
                Box::new(seconds.clone()),
                Box::new(pending_gauge.clone()),
                Box::new(dead_gauge.clone()),
            ],
        )?;
        Ok(Metrics {
            deliveries,
            seconds,
            pending_gauge,
            dead_gauge,
            sent: AtomicU64::new(0),
            failed_attempts: AtomicU64::new(0),
            dead_lettered: AtomicU64::new(0),
            pending: AtomicI64::new(0),
            dead: AtomicI64::new(0),
        })
    }

    /// Sets the levels read from the store at start.
    pub(crate) fn set_levels(&self, pending: u64, dead: u64) {
        self.pending.store(pending as i64, Ordering::Relaxed);
        self.dead.store(dead as i64, Ordering::Relaxed);
        self.pending_gauge.set(pending as i64);
        self.dead_gauge.set(dead as i64);
    }

    pub(crate) fn add_pending(&self, delta: i64) {
        let now = self.pending.fetch_add(delta, Ordering::Relaxed) + delta;
        self.pending_gauge.set(now.max(0));
    }

    pub(crate) fn add_dead(&self, delta: i64) {
        let now = self.dead.fetch_add(delta, Ordering::Relaxed) + delta;
        self.dead_gauge.set(now.max(0));
    }

    pub(crate) fn pending(&self) -> u64 {
        self.pending.load(Ordering::Relaxed).max(0) as u64
    }

    pub(crate) fn dead(&self) -> u64 {
        self.dead.load(Ordering::Relaxed).max(0) as u64
    }

    pub(crate) fn observe(&self, context: &str, elapsed: Duration) {
        self.seconds
            .with_label_values(&[context])
            .observe(elapsed.as_secs_f64());
    }
}

/// A delivery went out.
pub(crate) struct Sent<'a> {
    pub id: i64,
    pub context: &'a str,
    pub address: &'a str,
    pub attempts: u32,
    pub elapsed: Duration,
}

impl Sent<'_> {
    pub(crate) fn emit(self, metrics: &Metrics) {
        tracing::debug!(
            id = self.id,
            context = self.context,
            address = self.address,
            attempts = self.attempts,
            elapsed_ms = self.elapsed.as_millis() as u64,
            "notification delivered"
        );
        metrics
            .deliveries
            .with_label_values(&[self.context, "sent"])
            .inc();
        metrics.sent.fetch_add(1, Ordering::Relaxed);
        metrics.add_pending(-1);
    }
}

/// An attempt failed; the delivery is retried after `retry_in`.
pub(crate) struct AttemptFailed<'a> {
    pub id: i64,
    pub context: &'a str,
    pub address: &'a str,
    pub attempts: u32,
    pub error: &'a str,
    pub retry_in: Option<Duration>,
}

impl AttemptFailed<'_> {
    pub(crate) fn emit(self, metrics: &Metrics) {
        if let Some(retry_in) = self.retry_in {
            tracing::info!(
                id = self.id,
                context = self.context,
                address = self.address,
                attempts = self.attempts,
                retry_in_ms = retry_in.as_millis() as u64,
                error = self.error,
                "notification delivery failed; will retry"
            );
        }
        metrics
            .deliveries
            .with_label_values(&[self.context, "failed"])
            .inc();
        metrics.failed_attempts.fetch_add(1, Ordering::Relaxed);
    }
}

/// A delivery gave up: it is kept in the dead-letter state.
pub(crate) struct DeadLettered<'a> {
    pub id: i64,
    pub context: &'a str,
    pub address: &'a str,
    pub attempts: u32,
    pub error: &'a str,
}

impl DeadLettered<'_> {
    pub(crate) fn emit(self, metrics: &Metrics) {
        tracing::warn!(
            id = self.id,
            context = self.context,
            address = self.address,
            attempts = self.attempts,
            error = self.error,
            "notification delivery dead-lettered"
        );
        metrics
            .deliveries
            .with_label_values(&[self.context, "dead"])
            .inc();
        metrics.dead_lettered.fetch_add(1, Ordering::Relaxed);
        metrics.add_pending(-1);
        metrics.add_dead(1);
    }
}
