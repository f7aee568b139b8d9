//! The stats registry: one place, all atomics, every exporter a view of it.
//!
//! Counters are monotonic totals (Prometheus style). Exporters that want
//! per-window values, like the moksha monitoring socket, compute deltas
//! themselves. Handles to each consumer's and bus's series are resolved once and
//! kept, so the data path only touches atomics.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use dashmap::DashMap;
use fedhub_probe::state::{
    BusEndpoint, BusState, ConsumerState, HandlingWindow, HttpRequests, ProducerState,
    RejectionState, State, ValidationState,
};
use prometheus::{
    Counter, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGauge, IntGaugeVec, Opts, Registry,
};

use crate::events::HttpRejectReason;
use crate::message::DecodeError;
use crate::metric_names as names;
use crate::security::{RejectReason, Rejection};

/// How many recent handling times a consumer keeps for the moksha `times` list.
pub const RECENT_TIMES_CAPACITY: usize = 1024;

/// Length of the fixed windows handling-time min/max/avg are reported over.
pub const TIMING_WINDOW_SECS: u64 = 5;

/// Handling times aggregated over one window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct TimingSummary {
    /// Messages handled in the window.
    pub count: u64,
    /// Shortest handling time, seconds.
    pub min: f64,
    /// Longest handling time, seconds.
    pub max: f64,
    /// Sum of handling times, seconds.
    pub sum: f64,
}

impl TimingSummary {
    fn add(&mut self, seconds: f64) {
        if self.count == 0 || seconds < self.min {
            self.min = seconds;
        }
        if seconds > self.max {
            self.max = seconds;
        }
        self.sum += seconds;
        self.count += 1;
    }

    /// Mean handling time, seconds (0 when nothing was handled).
    pub fn avg(&self) -> f64 {
        if self.count == 0 {
            0.0
        } else {
            self.sum / self.count as f64
        }
    }
}

/// Per-message timing state behind one lock: the moksha `times` list and the
/// current and previous fixed windows.
#[derive(Default)]
struct Timing {
    recent: VecDeque<f64>,
    window: u64,
    current: TimingSummary,
    previous: TimingSummary,
}

impl Timing {
    fn roll(&mut self, window: u64) {
        if window != self.window {
            self.previous = if window == self.window + 1 {
                self.current
            } else {
                TimingSummary::default()
            };
            self.current = TimingSummary::default();
            self.window = window;
        }
    }
}

fn window_index(t: SystemTime) -> u64 {
    unix_millis(t) / 1000 / TIMING_WINDOW_SECS
}

/// Why a message was not delivered to a consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DropReason {
    /// The mailbox was full and the consumer's policy is `shed`.
    MailboxFull,
    /// The consumer's actor had stopped.
    ConsumerStopped,
    /// The hub was shutting down while ingress waited for room.
    Shutdown,
}

impl DropReason {
    /// Metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::MailboxFull => "mailbox_full",
            DropReason::ConsumerStopped => "consumer_stopped",
            DropReason::Shutdown => "shutdown",
        }
    }
}

/// The hub-wide metric families.
pub struct Stats {
    registry: Registry,
    consumer_backlog: IntGaugeVec,
    consumer_capacity: IntGaugeVec,
    consumer_received: IntCounterVec,
    consumer_handled: IntCounterVec,
    consumer_exceptions: IntCounterVec,
    consumer_panics: IntCounterVec,
    consumer_dropped: IntCounterVec,
    consumer_restarts: IntCounterVec,
    consumer_dead_letter_errors: IntCounterVec,
    consumer_handling: HistogramVec,
    bus_frames: IntCounterVec,
    bus_bytes: IntCounterVec,
    bus_malformed: IntCounterVec,
    endpoint_connected: IntGaugeVec,
    endpoint_connects: IntCounterVec,
    endpoint_disconnects: IntCounterVec,
    endpoint_retries: IntCounterVec,
    unrouted: IntCounter,
    ingress_blocked: Counter,
    published: IntCounter,
    publish_errors: IntCounterVec,
    http_rejected: IntCounterVec,
    producer_last_ran: GaugeVec,
    producer_exceptions: IntGaugeVec,
    consumers: DashMap<String, Arc<ConsumerStats>>,
    producers: DashMap<String, Arc<ProducerStats>>,
    buses: DashMap<String, Arc<BusStats>>,
    security: Arc<SecurityStats>,
    started_at: SystemTime,
}

fn register<C: prometheus::core::Collector + Clone + 'static>(registry: &Registry, c: C) -> C {
    // Names are static and distinct: registration cannot collide.
    registry
        .register(Box::new(c.clone()))
        .expect("metric families are registered once");
    c
}

impl Stats {
    /// Creates the registry with every family registered, plus process metrics.
    pub fn new() -> Arc<Stats> {
        let registry = Registry::new();
        let consumer = &["consumer"];
        let r = &registry;
        let stats = Stats {
            consumer_backlog: register(r, IntGaugeVec::new(Opts::new(names::CONSUMER_BACKLOG, "Messages accepted for a consumer and not yet handled (mailbox plus in progress)."), consumer).unwrap()),
            consumer_capacity: register(r, IntGaugeVec::new(Opts::new(names::CONSUMER_MAILBOX_CAPACITY, "Configured mailbox capacity of a consumer, in messages."), consumer).unwrap()),
            consumer_received: register(r, IntCounterVec::new(Opts::new(names::CONSUMER_RECEIVED_TOTAL, "Messages put in a consumer's mailbox (moksha headcount_in)."), consumer).unwrap()),
            consumer_handled: register(r, IntCounterVec::new(Opts::new(names::CONSUMER_HANDLED_TOTAL, "Messages a consumer finished handling, successfully or not (moksha headcount_out)."), consumer).unwrap()),
            consumer_exceptions: register(r, IntCounterVec::new(Opts::new(names::CONSUMER_EXCEPTIONS_TOTAL, "Messages whose handling returned an error or panicked."), consumer).unwrap()),
            consumer_panics: register(r, IntCounterVec::new(Opts::new(names::CONSUMER_PANICS_TOTAL, "Panics caught while a consumer handled a message."), consumer).unwrap()),
            consumer_dropped: register(r, IntCounterVec::new(Opts::new(names::CONSUMER_DROPPED_TOTAL, "Messages routed to a consumer but not delivered, by reason."), &["consumer", "reason"]).unwrap()),
            consumer_restarts: register(r, IntCounterVec::new(Opts::new(names::CONSUMER_RESTARTS_TOTAL, "Times a consumer was restarted after a fatal error."), consumer).unwrap()),
            consumer_dead_letter_errors: register(r, IntCounterVec::new(Opts::new(names::CONSUMER_DEAD_LETTER_ERRORS_TOTAL, "Failed messages that could not be written to the consumer's dead_letter_file."), consumer).unwrap()),
            consumer_handling: register(r, HistogramVec::new(HistogramOpts::new(names::CONSUMER_HANDLING_SECONDS, "Time a consumer spent handling one message.").buckets(vec![0.00001, 0.00005, 0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0]), consumer).unwrap()),
            bus_frames: register(r, IntCounterVec::new(Opts::new(names::BUS_MESSAGES_RECEIVED_TOTAL, "ZeroMQ messages received on a bus socket, valid or not."), &["bus"]).unwrap()),
            bus_bytes: register(r, IntCounterVec::new(Opts::new(names::BUS_RECEIVED_BYTES_TOTAL, "Bytes of message frames received on a bus socket."), &["bus"]).unwrap()),
            bus_malformed: register(r, IntCounterVec::new(Opts::new(names::BUS_MALFORMED_TOTAL, "Messages rejected on a bus socket, by reason."), &["bus", "reason"]).unwrap()),
            endpoint_connected: register(r, IntGaugeVec::new(Opts::new(names::BUS_ENDPOINT_CONNECTED, "Whether an endpoint a bus socket connects to is connected now (1) or not (0)."), &["bus", "endpoint"]).unwrap()),
            endpoint_connects: register(r, IntCounterVec::new(Opts::new(names::BUS_ENDPOINT_CONNECTS_TOTAL, "Connections made to an endpoint of a bus socket."), &["bus", "endpoint"]).unwrap()),
            endpoint_disconnects: register(r, IntCounterVec::new(Opts::new(names::BUS_ENDPOINT_DISCONNECTS_TOTAL, "Connections to an endpoint of a bus socket that were lost."), &["bus", "endpoint"]).unwrap()),
            endpoint_retries: register(r, IntCounterVec::new(Opts::new(names::BUS_ENDPOINT_CONNECT_RETRIES_TOTAL, "Failed attempts to connect to an endpoint of a bus socket (each is retried)."), &["bus", "endpoint"]).unwrap()),
            unrouted: register(r, IntCounter::new(names::ROUTER_UNROUTED_TOTAL, "Valid messages that matched no consumer.").unwrap()),
            ingress_blocked: register(r, Counter::new(names::INGRESS_BLOCKED_SECONDS_TOTAL, "Time ingress waited for room in a full mailbox (when_full = block).").unwrap()),
            published: register(r, IntCounter::new(names::PUBLISHED_TOTAL, "Messages this hub published on the bus.").unwrap()),
            publish_errors: register(r, IntCounterVec::new(Opts::new(names::PUBLISH_ERRORS_TOTAL, "Messages that could not be published, by reason."), &["reason"]).unwrap()),
            http_rejected: register(r, IntCounterVec::new(Opts::new(names::HTTP_REQUESTS_REJECTED_TOTAL, "Requests the HTTP server dropped before any handler saw them (oversized or malformed head, slow client), by reason."), &["reason"]).unwrap()),
            producer_last_ran: register(r, GaugeVec::new(Opts::new(names::PRODUCER_LAST_RAN_SECONDS, "When a producer's periodic job last started a run, Unix seconds (0: not yet)."), &["producer"]).unwrap()),
            producer_exceptions: register(r, IntGaugeVec::new(Opts::new(names::PRODUCER_EXCEPTIONS, "Runs of a producer's periodic job that failed in a row (0 after a success)."), &["producer"]).unwrap()),
            consumers: DashMap::new(),
            producers: DashMap::new(),
            buses: DashMap::new(),
            security: Arc::new(SecurityStats::register(r)),
            started_at: SystemTime::now(),
            registry,
        };
        let process = prometheus::process_collector::ProcessCollector::for_self();
        // Only fails on duplicate registration, which cannot happen on a new registry.
        let _ = stats.registry.register(Box::new(process));
        Arc::new(stats)
    }

    /// Signature validation's series.
    pub fn security(&self) -> &Arc<SecurityStats> {
        &self.security
    }

    /// The Prometheus registry (for `/metrics`, and for consumers adding their own).
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// When the hub started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }

    /// The stats of one consumer, created on first use.
    pub fn consumer(&self, name: &str) -> Arc<ConsumerStats> {
        if let Some(existing) = self.consumers.get(name) {
            return existing.clone();
        }
        let label = &[name];
        let dropped = |reason: DropReason| {
            self.consumer_dropped
                .with_label_values(&[name, reason.as_str()])
        };
        let stats = Arc::new(ConsumerStats {
            name: name.to_string(),
            backlog: self.consumer_backlog.with_label_values(label),
            capacity: self.consumer_capacity.with_label_values(label),
            received: self.consumer_received.with_label_values(label),
            handled: self.consumer_handled.with_label_values(label),
            exceptions: self.consumer_exceptions.with_label_values(label),
            panics: self.consumer_panics.with_label_values(label),
            dropped_full: dropped(DropReason::MailboxFull),
            dropped_stopped: dropped(DropReason::ConsumerStopped),
            dropped_shutdown: dropped(DropReason::Shutdown),
            restarts: self.consumer_restarts.with_label_values(label),
            dead_letter_errors: self.consumer_dead_letter_errors.with_label_values(label),
            dead_letter_problem: Mutex::new(None),
            handling: self.consumer_handling.with_label_values(label),
            timing: Mutex::new(Timing::default()),
            initialized: AtomicBool::new(false),
            last_progress_ms: AtomicU64::new(0),
            peak_backlog: AtomicU64::new(0),
            problem: Mutex::new(None),
            own_counters: Mutex::default(),
        });
        self.consumers
            .entry(name.to_string())
            .or_insert(stats)
            .clone()
    }

    /// Every consumer's stats, sorted by name.
    pub fn consumers(&self) -> Vec<Arc<ConsumerStats>> {
        let mut all: Vec<_> = self.consumers.iter().map(|e| e.value().clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The producer (periodic job) called `name`, registered on first use with
    /// `module` and `frequency`. Registering the name again returns the same
    /// entry, with the new frequency (a consumer restarted by the hub registers
    /// its producers again in `start`).
    pub fn producer(&self, name: &str, module: &str, frequency: Duration) -> Arc<ProducerStats> {
        let entry = self
            .producers
            .entry(name.to_string())
            .or_insert_with(|| {
                let label = &[name];
                Arc::new(ProducerStats {
                    name: name.to_string(),
                    module: module.to_string(),
                    frequency_bits: AtomicU64::new(0),
                    initialized: AtomicBool::new(false),
                    last_ran_bits: AtomicU64::new(NEVER_RAN),
                    last_ran_gauge: self.producer_last_ran.with_label_values(label),
                    exceptions: self.producer_exceptions.with_label_values(label),
                })
            })
            .clone();
        entry
            .frequency_bits
            .store(frequency.as_secs_f64().to_bits(), Ordering::Relaxed);
        entry.initialized.store(true, Ordering::Release);
        entry
    }

    /// Every registered producer's stats, sorted by name.
    pub fn producers(&self) -> Vec<Arc<ProducerStats>> {
        let mut all: Vec<_> = self.producers.iter().map(|e| e.value().clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// The stats of one bus socket, created on first use.
    pub fn bus(&self, name: &str) -> Arc<BusStats> {
        if let Some(existing) = self.buses.get(name) {
            return existing.clone();
        }
        let malformed = DecodeError::REASONS
            .iter()
            .map(|reason| {
                (
                    *reason,
                    self.bus_malformed.with_label_values(&[name, reason]),
                )
            })
            .collect();
        let stats = Arc::new(BusStats {
            name: name.to_string(),
            messages: self.bus_frames.with_label_values(&[name]),
            bytes: self.bus_bytes.with_label_values(&[name]),
            malformed,
            endpoints: Mutex::new(Vec::new()),
        });
        self.buses.entry(name.to_string()).or_insert(stats).clone()
    }

    /// The connection state of one endpoint a bus socket connects to, created
    /// (as `connecting`) on first use.
    pub fn endpoint(&self, bus: &str, address: &str) -> Arc<EndpointStats> {
        let bus_stats = self.bus(bus);
        let mut endpoints = bus_stats
            .endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = endpoints.iter().find(|e| e.address == address) {
            return existing.clone();
        }
        let labels = &[bus, address];
        let endpoint = Arc::new(EndpointStats {
            bus: bus.to_string(),
            address: address.to_string(),
            connected: self.endpoint_connected.with_label_values(labels),
            connects: self.endpoint_connects.with_label_values(labels),
            disconnects: self.endpoint_disconnects.with_label_values(labels),
            retries: self.endpoint_retries.with_label_values(labels),
            state: std::sync::atomic::AtomicU8::new(EndpointState::Connecting as u8),
            since_ms: AtomicU64::new(unix_millis(SystemTime::now())),
            last_connected_ms: AtomicU64::new(0),
        });
        endpoints.push(endpoint.clone());
        endpoint
    }

    /// Every bus socket's stats, sorted by name.
    pub fn buses(&self) -> Vec<Arc<BusStats>> {
        let mut all: Vec<_> = self.buses.iter().map(|e| e.value().clone()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Counts a message that matched no consumer.
    pub fn count_unrouted(&self) {
        self.unrouted.inc();
    }

    /// Valid messages that matched no consumer so far.
    pub fn unrouted(&self) -> u64 {
        self.unrouted.get()
    }

    /// Counts time ingress spent waiting for mailbox room.
    pub fn add_ingress_blocked(&self, waited: Duration) {
        self.ingress_blocked.inc_by(waited.as_secs_f64());
    }

    /// Counts a published message.
    pub fn count_published(&self) {
        self.published.inc();
    }

    /// Messages published so far.
    pub fn published(&self) -> u64 {
        self.published.get()
    }

    /// Counts a message that could not be published.
    pub fn count_publish_error(&self, reason: &str) {
        self.publish_errors.with_label_values(&[reason]).inc();
    }

    /// Requests the HTTP server dropped so far, by reason, brought up to date
    /// from the process-wide counts the logging layer keeps.
    fn http_rejected(&self) -> std::collections::BTreeMap<String, u64> {
        HttpRejectReason::ALL
            .iter()
            .map(|reason| {
                let counter = self.http_rejected.with_label_values(&[reason.as_str()]);
                let total = reason.total();
                if total > counter.get() {
                    counter.inc_by(total - counter.get());
                }
                (reason.as_str().to_string(), counter.get())
            })
            .collect()
    }

    /// Renders the Prometheus text exposition format.
    pub fn render_prometheus(&self) -> Result<String, prometheus::Error> {
        use prometheus::Encoder;
        self.http_rejected();
        let mut out = Vec::with_capacity(16 * 1024);
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out)?;
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// The registry as the `/state` document.
    pub fn state(&self) -> State {
        State {
            buses: self.buses().iter().map(|b| b.state()).collect(),
            consumers: self.consumers().iter().map(|c| c.state()).collect(),
            http: HttpRequests {
                requests_rejected_total: self.http_rejected(),
            },
            ingress_blocked_seconds_total: self.ingress_blocked.get(),
            producers: self.producers().iter().map(|p| p.state()).collect(),
            published_total: self.published(),
            started_at: unix_seconds(self.started_at),
            unrouted_total: self.unrouted(),
            validation: self.security.state(),
        }
    }

    /// The `/state` document as JSON.
    pub fn snapshot(&self) -> serde_json::Value {
        // Cannot fail: the document has string keys and no custom serializers.
        serde_json::to_value(self.state()).unwrap_or_default()
    }
}

/// One consumer's series. Cheap to update from any thread.
pub struct ConsumerStats {
    name: String,
    backlog: IntGauge,
    capacity: IntGauge,
    received: IntCounter,
    handled: IntCounter,
    exceptions: IntCounter,
    panics: IntCounter,
    dropped_full: IntCounter,
    dropped_stopped: IntCounter,
    dropped_shutdown: IntCounter,
    restarts: IntCounter,
    dead_letter_errors: IntCounter,
    dead_letter_problem: Mutex<Option<String>>,
    handling: Histogram,
    timing: Mutex<Timing>,
    initialized: AtomicBool,
    last_progress_ms: AtomicU64,
    peak_backlog: AtomicU64,
    problem: Mutex<Option<String>>,
    /// The consumer's own counters shown in `/state` (`Context::state_counter`).
    own_counters: Mutex<std::collections::BTreeMap<String, Arc<AtomicU64>>>,
}

impl ConsumerStats {
    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Messages accepted and not yet handled.
    pub fn backlog(&self) -> i64 {
        self.backlog.get()
    }

    /// The highest backlog seen since start.
    pub fn peak_backlog(&self) -> u64 {
        self.peak_backlog.load(Ordering::Relaxed)
    }

    pub(crate) fn backlog_inc(&self) {
        self.backlog.inc();
        let now = self.backlog.get().max(0) as u64;
        if now > self.peak_backlog.load(Ordering::Relaxed) {
            self.peak_backlog.fetch_max(now, Ordering::Relaxed);
        }
    }

    pub(crate) fn backlog_dec(&self) {
        self.backlog.dec();
    }

    pub(crate) fn backlog_sub(&self, messages: usize) {
        self.backlog.sub(messages as i64);
    }

    /// Records the configured mailbox capacity.
    pub fn set_capacity(&self, capacity: usize) {
        self.capacity.set(capacity as i64);
    }

    /// The configured mailbox capacity.
    pub fn capacity(&self) -> i64 {
        self.capacity.get()
    }

    pub(crate) fn count_received(&self) {
        self.received.inc();
    }

    /// Messages put in the mailbox so far.
    pub fn received(&self) -> u64 {
        self.received.get()
    }

    /// Messages handled so far.
    pub fn handled(&self) -> u64 {
        self.handled.get()
    }

    /// Handling errors and panics so far.
    pub fn exceptions(&self) -> u64 {
        self.exceptions.get()
    }

    /// Panics caught so far.
    pub fn panics(&self) -> u64 {
        self.panics.get()
    }

    /// Restarts so far.
    pub fn restarts(&self) -> u64 {
        self.restarts.get()
    }

    /// Messages dropped so far, all reasons together.
    pub fn dropped(&self) -> u64 {
        self.dropped_full.get() + self.dropped_stopped.get() + self.dropped_shutdown.get()
    }

    /// Messages dropped so far at shutdown (reason `shutdown`).
    pub(crate) fn dropped_at_shutdown(&self) -> u64 {
        self.dropped_shutdown.get()
    }

    /// Counts `messages` more dropped at shutdown.
    pub(crate) fn count_dropped_at_shutdown(&self, messages: u64) {
        self.dropped_shutdown.inc_by(messages);
    }

    pub(crate) fn count_dropped(&self, reason: DropReason) {
        match reason {
            DropReason::MailboxFull => self.dropped_full.inc(),
            DropReason::ConsumerStopped => self.dropped_stopped.inc(),
            DropReason::Shutdown => self.dropped_shutdown.inc(),
        }
    }

    pub(crate) fn count_restart(&self) {
        self.restarts.inc();
    }

    /// Records one handled message.
    pub(crate) fn record_handled(&self, took: Duration, failed: bool, panicked: bool) {
        let seconds = took.as_secs_f64();
        self.handling.observe(seconds);
        if failed {
            self.exceptions.inc();
        }
        if panicked {
            self.panics.inc();
        }
        let now = SystemTime::now();
        if let Ok(mut timing) = self.timing.lock() {
            if timing.recent.len() == RECENT_TIMES_CAPACITY {
                timing.recent.pop_front();
            }
            timing.recent.push_back(seconds);
            timing.roll(window_index(now));
            timing.current.add(seconds);
        }
        self.handled.inc();
        self.last_progress_ms
            .store(unix_millis(now), Ordering::Relaxed);
    }

    /// Takes the handling times recorded since the last call (at most 1024).
    pub fn take_recent_times(&self) -> Vec<f64> {
        match self.timing.lock() {
            Ok(mut timing) => timing.recent.drain(..).collect(),
            Err(_) => Vec::new(),
        }
    }

    /// Handling times over the last complete [`TIMING_WINDOW_SECS`] window. Reading
    /// resets nothing, so any number of exporters can read it.
    pub fn last_window_timing(&self) -> TimingSummary {
        let now = window_index(SystemTime::now());
        match self.timing.lock() {
            Ok(mut timing) => {
                timing.roll(now);
                timing.previous
            }
            Err(_) => TimingSummary::default(),
        }
    }

    /// Whether the consumer started successfully and is running.
    pub fn initialized(&self) -> bool {
        self.initialized.load(Ordering::Acquire)
    }

    pub(crate) fn set_initialized(&self, value: bool) {
        self.initialized.store(value, Ordering::Release);
    }

    /// What the consumer reported as keeping it from working (see
    /// [`Readiness`](crate::consumer::Readiness)), if anything.
    pub fn problem(&self) -> Option<String> {
        self.problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_problem(&self, problem: Option<String>) {
        *self.problem.lock().unwrap_or_else(|p| p.into_inner()) = problem;
    }

    /// Dead letters that could not be written so far.
    pub fn dead_letter_errors(&self) -> u64 {
        self.dead_letter_errors.get()
    }

    /// Why the last dead letter could not be written, until one is written again.
    pub fn dead_letter_problem(&self) -> Option<String> {
        self.dead_letter_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Counts a dead letter that could not be written, and why.
    pub(crate) fn count_dead_letter_error(&self, problem: String) {
        self.dead_letter_errors.inc();
        *self
            .dead_letter_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(problem);
    }

    /// A dead letter was written: the last failure no longer holds.
    pub(crate) fn clear_dead_letter_problem(&self) {
        let mut problem = self
            .dead_letter_problem
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if problem.is_some() {
            *problem = None;
        }
    }

    /// When the consumer last finished a message (epoch ms, 0 if never).
    pub fn last_progress_ms(&self) -> u64 {
        self.last_progress_ms.load(Ordering::Relaxed)
    }

    /// The consumer's own counter `name` (created at 0), shown in its
    /// `/state` entry under `counters`.
    pub fn own_counter(&self, name: &str) -> Arc<AtomicU64> {
        let mut counters = self.own_counters.lock().unwrap_or_else(|p| p.into_inner());
        counters.entry(name.to_string()).or_default().clone()
    }

    /// The consumer's own counters, by name.
    pub fn own_counters(&self) -> std::collections::BTreeMap<String, u64> {
        let counters = self.own_counters.lock().unwrap_or_else(|p| p.into_inner());
        counters
            .iter()
            .map(|(k, v)| (k.clone(), v.load(Ordering::Relaxed)))
            .collect()
    }

    /// This consumer's entry in the `/state` document.
    pub fn state(&self) -> ConsumerState {
        let capacity = self.capacity();
        let backlog = self.backlog();
        let window = self.last_window_timing();
        ConsumerState {
            backlog,
            counters: self.own_counters(),
            dead_letter_errors_total: self.dead_letter_errors(),
            dropped_total: self.dropped(),
            exceptions_total: self.exceptions(),
            handled_total: self.handled(),
            handling_last_window: HandlingWindow {
                avg_seconds: window.avg(),
                count: window.count,
                max_seconds: window.max,
                min_seconds: window.min,
                window_secs: TIMING_WINDOW_SECS,
            },
            handling_seconds_count: self.handling.get_sample_count(),
            handling_seconds_sum: self.handling.get_sample_sum(),
            initialized: self.initialized(),
            last_progress_ms: self.last_progress_ms(),
            mailbox_capacity: capacity,
            mailbox_utilization: if capacity > 0 {
                backlog as f64 / capacity as f64
            } else {
                0.0
            },
            name: self.name.clone(),
            panics_total: self.panics(),
            peak_backlog: self.peak_backlog(),
            received_total: self.received(),
            restarts_total: self.restarts(),
        }
    }
}

/// `last_ran_bits` before the first run (not the bits of any time a clock gives).
const NEVER_RAN: u64 = u64::MAX;

/// One producer's state: a periodic job a consumer runs (moksha's
/// `PollingProducer`), shown in the monitoring socket's `producers` list, in
/// `/metrics` and in `/state`. Cheap to update from any thread.
pub struct ProducerStats {
    name: String,
    module: String,
    frequency_bits: AtomicU64,
    initialized: AtomicBool,
    last_ran_bits: AtomicU64,
    last_ran_gauge: Gauge,
    exceptions: IntGauge,
}

impl ProducerStats {
    /// The producer's name (moksha: class name).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// moksha `module`.
    pub fn module(&self) -> &str {
        &self.module
    }

    /// Time between runs, seconds.
    pub fn frequency_secs(&self) -> f64 {
        f64::from_bits(self.frequency_bits.load(Ordering::Relaxed))
    }

    /// Whether it was registered (moksha: initialised).
    pub fn initialized(&self) -> bool {
        self.initialized.load(Ordering::Acquire)
    }

    /// Runs that failed in a row (0 after a success), as moksha counts them.
    pub fn exceptions(&self) -> u64 {
        self.exceptions.get().max(0) as u64
    }

    /// When the last run started, Unix seconds; `None` before the first.
    pub fn last_ran(&self) -> Option<f64> {
        match self.last_ran_bits.load(Ordering::Acquire) {
            NEVER_RAN => None,
            bits => Some(f64::from_bits(bits)),
        }
    }

    /// A run starts at `at`.
    pub(crate) fn record_ran(&self, at: SystemTime) {
        let seconds = unix_seconds(at);
        self.last_ran_bits
            .store(seconds.to_bits(), Ordering::Release);
        self.last_ran_gauge.set(seconds);
    }

    /// The run succeeded: no failures in a row.
    pub(crate) fn record_succeeded(&self) {
        self.exceptions.set(0);
    }

    /// The run failed: one more failure in a row.
    pub(crate) fn record_failed(&self) {
        self.exceptions.inc();
    }

    /// This producer's entry in the `/state` document.
    pub fn state(&self) -> ProducerState {
        ProducerState {
            exceptions: self.exceptions(),
            frequency_secs: self.frequency_secs(),
            last_ran: self.last_ran(),
            module: self.module.clone(),
            name: self.name.clone(),
        }
    }
}

/// One bus socket's series.
pub struct BusStats {
    name: String,
    messages: IntCounter,
    bytes: IntCounter,
    malformed: Vec<(&'static str, IntCounter)>,
    endpoints: Mutex<Vec<Arc<EndpointStats>>>,
}

impl BusStats {
    /// The endpoints this bus socket connects to, with their connection state.
    pub fn endpoints(&self) -> Vec<Arc<EndpointStats>> {
        self.endpoints
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Why this bus is not ready: it connects to endpoints, none is connected,
    /// and none has been for longer than `after` (since the hub started, if
    /// none ever was).
    pub fn connection_problem(&self, after: Duration, now: SystemTime) -> Option<String> {
        let endpoints = self.endpoints();
        if endpoints.is_empty() || endpoints.iter().any(|e| e.is_connected()) {
            return None;
        }
        let last = endpoints
            .iter()
            .map(|e| match e.last_connected_ms() {
                0 => e.since_ms.load(Ordering::Relaxed),
                last => last,
            })
            .max()
            .unwrap_or(0);
        let down_ms = unix_millis(now).saturating_sub(last);
        (down_ms > after.as_millis() as u64).then(|| {
            let addresses: Vec<&str> = endpoints.iter().map(|e| e.address()).collect();
            format!(
                "bus {}: no endpoint connected for {} s ({})",
                self.name,
                down_ms / 1000,
                addresses.join(", ")
            )
        })
    }

    /// The bus socket's name (an `endpoints` key, or `inbound`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Counts one received message of `bytes` bytes.
    #[inline]
    pub(crate) fn count_message(&self, bytes: usize) {
        self.messages.inc();
        self.bytes.inc_by(bytes as u64);
    }

    /// Counts a rejected message.
    pub(crate) fn count_malformed(&self, reason: &str) {
        if let Some((_, counter)) = self.malformed.iter().find(|(r, _)| *r == reason) {
            counter.inc();
        }
    }

    /// Messages received so far.
    pub fn messages(&self) -> u64 {
        self.messages.get()
    }

    /// Bytes received so far.
    pub fn bytes(&self) -> u64 {
        self.bytes.get()
    }

    /// Messages rejected so far for `reason`.
    pub fn malformed(&self, reason: &str) -> u64 {
        self.malformed
            .iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, c)| c.get())
            .unwrap_or(0)
    }

    /// Messages rejected so far, all reasons.
    pub fn malformed_total(&self) -> u64 {
        self.malformed.iter().map(|(_, c)| c.get()).sum()
    }

    /// This bus socket's entry in the `/state` document.
    pub fn state(&self) -> BusState {
        BusState {
            bytes_total: self.bytes(),
            endpoints: self.endpoints().iter().map(|e| e.entry()).collect(),
            malformed_by_reason: self
                .malformed
                .iter()
                .filter(|(_, c)| c.get() > 0)
                .map(|(r, c)| (r.to_string(), c.get()))
                .collect(),
            malformed_total: self.malformed_total(),
            messages_total: self.messages(),
            name: self.name.clone(),
        }
    }
}

/// Where a connection to an endpoint stands, from ZeroMQ's socket monitor events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum EndpointState {
    /// Not connected yet, no attempt failed yet.
    Connecting = 0,
    /// Connected.
    Connected = 1,
    /// The last attempt to connect failed; ZeroMQ retries.
    Retrying = 2,
    /// The connection was lost; ZeroMQ reconnects.
    Disconnected = 3,
}

impl EndpointState {
    /// The name `/state` and the log use.
    pub fn as_str(self) -> &'static str {
        match self {
            EndpointState::Connecting => "connecting",
            EndpointState::Connected => "connected",
            EndpointState::Retrying => "retrying",
            EndpointState::Disconnected => "disconnected",
        }
    }

    fn from_u8(value: u8) -> EndpointState {
        match value {
            1 => EndpointState::Connected,
            2 => EndpointState::Retrying,
            3 => EndpointState::Disconnected,
            _ => EndpointState::Connecting,
        }
    }
}

/// One endpoint a bus socket connects to: its connection state and counts.
pub struct EndpointStats {
    bus: String,
    address: String,
    connected: IntGauge,
    connects: IntCounter,
    disconnects: IntCounter,
    retries: IntCounter,
    state: std::sync::atomic::AtomicU8,
    since_ms: AtomicU64,
    last_connected_ms: AtomicU64,
}

impl EndpointStats {
    /// The bus socket's name.
    pub fn bus(&self) -> &str {
        &self.bus
    }

    /// The address, as configured.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The current state.
    pub fn state(&self) -> EndpointState {
        EndpointState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// Whether it is connected now.
    pub fn is_connected(&self) -> bool {
        self.state() == EndpointState::Connected
    }

    /// When it was last connected (epoch ms; 0 if never).
    pub fn last_connected_ms(&self) -> u64 {
        self.last_connected_ms.load(Ordering::Relaxed)
    }

    /// Connections made so far.
    pub fn connects(&self) -> u64 {
        self.connects.get()
    }

    /// Connections lost so far.
    pub fn disconnects(&self) -> u64 {
        self.disconnects.get()
    }

    /// Failed connection attempts so far.
    pub fn retries(&self) -> u64 {
        self.retries.get()
    }

    /// Records a connection; returns the state it left.
    pub(crate) fn record_connected(&self) -> EndpointState {
        self.connects.inc();
        self.connected.set(1);
        self.last_connected_ms
            .store(unix_millis(SystemTime::now()), Ordering::Relaxed);
        self.enter(EndpointState::Connected)
    }

    /// Records a lost connection; returns the state it left.
    pub(crate) fn record_disconnected(&self) -> EndpointState {
        self.disconnects.inc();
        self.connected.set(0);
        self.last_connected_ms
            .store(unix_millis(SystemTime::now()), Ordering::Relaxed);
        self.enter(EndpointState::Disconnected)
    }

    /// Records a failed attempt; returns the state it left.
    pub(crate) fn record_retry(&self) -> EndpointState {
        self.retries.inc();
        self.connected.set(0);
        self.enter(EndpointState::Retrying)
    }

    fn enter(&self, state: EndpointState) -> EndpointState {
        let previous = EndpointState::from_u8(self.state.swap(state as u8, Ordering::Relaxed));
        if previous != state {
            self.since_ms
                .store(unix_millis(SystemTime::now()), Ordering::Relaxed);
        }
        previous
    }

    /// This endpoint's entry in the `/state` document.
    pub fn entry(&self) -> BusEndpoint {
        BusEndpoint {
            address: self.address.clone(),
            connect_retries_total: self.retries(),
            connects_total: self.connects(),
            disconnects_total: self.disconnects(),
            last_connected_ms: self.last_connected_ms(),
            since_ms: self.since_ms.load(Ordering::Relaxed),
            state: self.state().as_str().to_string(),
        }
    }
}

/// Signature validation's series: accepted, rejected by reason, the signer
/// certificates cached, when the CA and CRL were loaded, and the last rejection.
pub struct SecurityStats {
    enabled: AtomicBool,
    validated: IntCounter,
    rejected: Vec<(RejectReason, IntCounter)>,
    certificates: IntGauge,
    trust_loaded: Gauge,
    trust_reload_failures: IntCounter,
    trust_reload_error: Mutex<Option<String>>,
    last: Mutex<Option<RejectionState>>,
}

impl SecurityStats {
    fn register(r: &Registry) -> SecurityStats {
        let rejected = register(r, IntCounterVec::new(Opts::new(names::MESSAGES_REJECTED_TOTAL, "Messages rejected by signature validation, by reason (none reaches a consumer)."), &["reason"]).unwrap());
        SecurityStats {
            enabled: AtomicBool::new(false),
            validated: register(r, IntCounter::new(names::MESSAGES_VALIDATED_TOTAL, "Messages whose signature, certificate and routing policy were accepted.").unwrap()),
            rejected: RejectReason::ALL
                .iter()
                .map(|reason| (*reason, rejected.with_label_values(&[reason.as_str()])))
                .collect(),
            certificates: register(r, IntGauge::new(names::SECURITY_CERTIFICATES_CACHED, "Distinct signer certificates whose checks (parse, chain, CRL) are cached.").unwrap()),
            trust_loaded: register(r, Gauge::new(names::SECURITY_TRUST_LOADED_TIMESTAMP_SECONDS, "When the CA certificate and CRL were last loaded, Unix seconds (0: validation is off).").unwrap()),
            trust_reload_failures: register(r, IntCounter::new(names::SECURITY_TRUST_RELOAD_FAILURES_TOTAL, "Reloads of the CA certificate and CRL that failed (the ones loaded before stay in use).").unwrap()),
            trust_reload_error: Mutex::new(None),
            last: Mutex::new(None),
        }
    }

    /// Whether the hub validates signatures.
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    pub(crate) fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
    }

    pub(crate) fn set_trust_loaded(&self, at: SystemTime) {
        self.trust_loaded.set(unix_seconds(at));
        *self
            .trust_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = None;
    }

    pub(crate) fn count_trust_reload_failure(&self, error: String) {
        self.trust_reload_failures.inc();
        *self
            .trust_reload_error
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(error);
    }

    /// When the CA certificate and CRL were last loaded, Unix seconds (0: never).
    pub fn trust_loaded_at(&self) -> f64 {
        self.trust_loaded.get()
    }

    /// Reloads of the CA certificate and CRL that failed so far.
    pub fn trust_reload_failures(&self) -> u64 {
        self.trust_reload_failures.get()
    }

    pub(crate) fn set_certificates_cached(&self, count: usize) {
        self.certificates.set(count as i64);
    }

    /// Counts a message validation accepted.
    #[inline]
    pub(crate) fn count_validated(&self) {
        self.validated.inc();
    }

    /// Counts a rejected message and remembers it as the last one.
    pub(crate) fn count_rejected(&self, rejection: &Rejection, topic: &str) {
        if let Some((_, counter)) = self.rejected.iter().find(|(r, _)| *r == rejection.reason) {
            counter.inc();
        }
        let last = RejectionState {
            at: unix_seconds(SystemTime::now()),
            detail: rejection.detail.to_string(),
            reason: rejection.reason.as_str().to_string(),
            signer: rejection.signer.as_deref().map(str::to_string),
            topic: topic.to_string(),
        };
        *self.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(last);
    }

    /// Messages accepted so far.
    pub fn validated(&self) -> u64 {
        self.validated.get()
    }

    /// Messages rejected so far for `reason`.
    pub fn rejected(&self, reason: RejectReason) -> u64 {
        self.rejected
            .iter()
            .find(|(r, _)| *r == reason)
            .map(|(_, c)| c.get())
            .unwrap_or(0)
    }

    /// Messages rejected so far, all reasons.
    pub fn rejected_total(&self) -> u64 {
        self.rejected.iter().map(|(_, c)| c.get()).sum()
    }

    /// The `validation` object of the `/state` document.
    pub fn state(&self) -> ValidationState {
        ValidationState {
            certificates_cached: self.certificates.get().max(0) as u64,
            enabled: self.enabled(),
            last_rejection: self.last.lock().unwrap_or_else(|p| p.into_inner()).clone(),
            rejected_by_reason: self
                .rejected
                .iter()
                .filter(|(_, c)| c.get() > 0)
                .map(|(r, c)| (r.as_str().to_string(), c.get()))
                .collect(),
            rejected_total: self.rejected_total(),
            trust_loaded_at: self.trust_loaded.get(),
            trust_reload_error: self
                .trust_reload_error
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            trust_reload_failures_total: self.trust_reload_failures(),
            validated_total: self.validated(),
        }
    }
}

/// Seconds since the epoch as a float.
pub fn unix_seconds(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Milliseconds since the epoch.
pub fn unix_millis(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Registers a consumer's own metrics in `registry`, keeping the ones already
/// registered under the same names (a consumer started again after a restart
/// registers the same metrics twice). Other errors (a bad name, a clash of
/// label sets) are returned.
pub fn register_metrics(
    registry: &Registry,
    collectors: Vec<Box<dyn prometheus::core::Collector>>,
) -> Result<(), prometheus::Error> {
    for collector in collectors {
        match registry.register(collector) {
            Ok(()) | Err(prometheus::Error::AlreadyReg) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_roll_and_reading_resets_nothing() {
        let mut timing = Timing::default();
        timing.roll(10);
        timing.current.add(0.5);
        timing.current.add(0.1);
        timing.roll(11);
        assert_eq!(timing.previous.count, 2);
        assert_eq!(timing.previous.min, 0.1);
        assert_eq!(timing.previous.max, 0.5);
        assert!((timing.previous.avg() - 0.3).abs() < 1e-12);
        timing.roll(11);
        assert_eq!(
            timing.previous.count, 2,
            "reading twice gives the same window"
        );
        timing.roll(13);
        assert_eq!(
            timing.previous,
            TimingSummary::default(),
            "a quiet window is empty"
        );
    }
}
