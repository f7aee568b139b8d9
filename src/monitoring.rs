//! The moksha-compatible monitoring socket.
//!
//! Every `[monitoring] interval_secs` a PUB socket bound at `[monitoring] socket`
//! sends one frame: `{"consumers": [...], "producers": [...]}` with moksha.hub
//! 1.5.17's field names, key order and meanings, so `fedmsg-check`, Fedora's NRPE
//! and collectd scripts and moksha-monitor-exporter read fedhub unchanged.
//! moksha's counts are per window (reset at each publication) while the registry
//! keeps monotonic totals, so this adapter sends the difference since the last
//! document; `backlog` is the current value; `times` are the handling times of the
//! window (at most 1024, in seconds). `producers` lists the consumers' periodic
//! jobs registered with `Context::producer` (sorted by name), then this adapter's
//! own `MonitoringProducer`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use serde_json::Value;

use crate::canonical::write_python_float;
use crate::config::MonitoringConfig;
use crate::socket::BusError;
use crate::stats::{unix_seconds, ConsumerStats, ProducerStats, Stats};

/// What monitoring shows about a consumer besides its counters.
#[derive(Debug, Clone)]
pub struct ConsumerInfo {
    /// The consumer's name (moksha: class name).
    pub name: String,
    /// moksha `module`.
    pub module: String,
    /// The topics as configured: a string, or a list.
    pub topic: Value,
}

/// The producer name this adapter reports for itself, as moksha does.
pub const PRODUCER_NAME: &str = "MonitoringProducer";

/// Running totals seen at the previous document, to compute per-window values.
#[derive(Default, Clone, Copy)]
struct Window {
    received: u64,
    handled: u64,
    exceptions: u64,
}

/// Builds moksha documents from the registry.
pub struct DocumentBuilder {
    stats: Arc<Stats>,
    consumers: Vec<(ConsumerInfo, Arc<ConsumerStats>, Window)>,
    interval_secs: f64,
}

impl DocumentBuilder {
    /// A builder over these consumers.
    pub fn new(stats: Arc<Stats>, consumers: Vec<ConsumerInfo>, interval_secs: f64) -> Self {
        let consumers = consumers
            .into_iter()
            .map(|info| {
                let s = stats.consumer(&info.name);
                (info, s, Window::default())
            })
            .collect();
        DocumentBuilder {
            stats,
            consumers,
            interval_secs,
        }
    }

    /// The next document, as moksha's `json.dumps` writes it (`", "`/`": "`).
    /// `last_ran` is when this poll started.
    pub fn next_document(&mut self, last_ran: SystemTime) -> String {
        let mut out = String::with_capacity(512);
        out.push_str("{\"consumers\": [");
        for (index, (info, stats, window)) in self.consumers.iter_mut().enumerate() {
            if index > 0 {
                out.push_str(", ");
            }
            let now = Window {
                received: stats.received(),
                handled: stats.handled(),
                exceptions: stats.exceptions(),
            };
            let initialized = stats.initialized();
            let times = stats.take_recent_times();
            out.push_str("{\"name\": ");
            push_string(&mut out, &info.name);
            out.push_str(", \"module\": ");
            push_string(&mut out, &info.module);
            out.push_str(", \"topic\": ");
            push_value(&mut out, &info.topic);
            let _ = write!(
                out,
                ", \"initialized\": {}, \"exceptions\": {}, \"jsonify\": true, \"backlog\": ",
                initialized,
                now.exceptions.saturating_sub(window.exceptions)
            );
            if initialized {
                let _ = write!(out, "{}", stats.backlog().max(0));
            } else {
                out.push_str("null");
            }
            let _ = write!(
                out,
                ", \"headcount_out\": {}, \"headcount_in\": {}, \"times\": [",
                now.handled.saturating_sub(window.handled),
                now.received.saturating_sub(window.received)
            );
            for (i, t) in times.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_python_float(&mut out, *t);
            }
            out.push_str("]}");
            *window = now;
        }
        out.push_str("], \"producers\": [");
        for producer in self.stats.producers() {
            push_producer(&mut out, &producer);
            out.push_str(", ");
        }
        out.push_str("{\"name\": \"");
        out.push_str(PRODUCER_NAME);
        out.push_str("\", \"module\": \"fedhub.monitoring\", \"initialized\": true, \"exceptions\": 0, \"frequency\": ");
        write_python_float(&mut out, self.interval_secs);
        out.push_str(", \"now\": false, \"last_ran\": ");
        write_python_float(&mut out, unix_seconds(last_ran));
        out.push_str("}]}");
        out
    }
}

/// One producer as moksha's `PollingProducer.__json__` gives it.
fn push_producer(out: &mut String, producer: &ProducerStats) {
    out.push_str("{\"name\": ");
    push_string(out, producer.name());
    out.push_str(", \"module\": ");
    push_string(out, producer.module());
    let _ = write!(
        out,
        ", \"initialized\": {}, \"exceptions\": {}, \"frequency\": ",
        producer.initialized(),
        producer.exceptions()
    );
    write_python_float(out, producer.frequency_secs());
    out.push_str(", \"now\": false, \"last_ran\": ");
    match producer.last_ran() {
        Some(seconds) => write_python_float(out, seconds),
        None => out.push_str("null"),
    }
    out.push('}');
}

fn push_string(out: &mut String, s: &str) {
    crate::canonical::write_string(out, s);
}

fn push_value(out: &mut String, value: &Value) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                push_value(out, item);
            }
            out.push(']');
        }
        Value::String(s) => push_string(out, s),
        other => out.push_str(&crate::canonical::to_canonical_string(other)),
    }
}

/// The thread publishing monitoring documents.
pub struct MonitoringSocket {
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    endpoint: String,
}

impl MonitoringSocket {
    /// Binds the socket (applying `socket_mode` to an ipc path) and starts publishing.
    pub fn start(
        context: &zmq::Context,
        config: &MonitoringConfig,
        builder: DocumentBuilder,
    ) -> Result<MonitoringSocket, BusError> {
        let address = config.socket.as_str();
        let socket = context
            .socket(zmq::PUB)
            .map_err(|e| BusError::socket("create PUB for", address, e))?;
        socket
            .set_linger(0)
            .map_err(|e| BusError::socket("set option on", address, e))?;
        if let Some(path) = address.strip_prefix("ipc://") {
            // A stale socket file from a crashed process would make bind fail.
            if std::path::Path::new(path).exists() {
                let _ = std::fs::remove_file(path);
            }
        }
        socket
            .bind(address)
            .map_err(|e| BusError::setting("[monitoring] socket", "bind", address, e))?;
        let endpoint = socket
            .get_last_endpoint()
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_else(|| address.to_string());
        if let (Some(path), false) = (
            address.strip_prefix("ipc://"),
            config.socket_mode.is_empty(),
        ) {
            use std::os::unix::fs::PermissionsExt;
            let mode = u32::from_str_radix(&config.socket_mode, 8).unwrap_or(0o770);
            if let Err(e) = std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)) {
                tracing::warn!(path, error = %e, "cannot set the monitoring socket's mode");
            }
        }
        tracing::info!(address = %endpoint, interval_secs = config.interval_secs, "monitoring socket bound");
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let interval = Duration::from_secs_f64(config.interval_secs);
        let handle = std::thread::Builder::new()
            .name("fedhub-monitoring".into())
            .spawn(move || publish_loop(socket, builder, interval, thread_stop))
            .expect("spawning the monitoring thread");
        Ok(MonitoringSocket {
            handle: Some(handle),
            stop,
            endpoint,
        })
    }

    /// The bound address (port resolved).
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// Stops publishing; removes an ipc socket file.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
        if let Some(path) = self.endpoint.strip_prefix("ipc://") {
            let _ = std::fs::remove_file(path);
        }
    }
}

impl Drop for MonitoringSocket {
    fn drop(&mut self) {
        self.stop();
    }
}

fn publish_loop(
    socket: zmq::Socket,
    mut builder: DocumentBuilder,
    interval: Duration,
    stop: Arc<AtomicBool>,
) {
    // Like moksha (now=False), the first document comes one interval after start.
    let mut next = Instant::now() + interval;
    while !stop.load(Ordering::Acquire) {
        let now = Instant::now();
        if now < next {
            std::thread::sleep((next - now).min(Duration::from_millis(50)));
            continue;
        }
        next += interval;
        if next < now {
            next = now + interval;
        }
        let document = builder.next_document(SystemTime::now());
        if let Err(e) = socket.send(document.as_bytes(), zmq::DONTWAIT) {
            if e != zmq::Error::EAGAIN {
                tracing::warn!(error = %e, "cannot publish a monitoring document");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn documents_have_moksha_shape_and_per_window_counts() {
        let stats = Stats::new();
        let c = stats.consumer("ExampleConsumer");
        c.set_initialized(true);
        let info = ConsumerInfo {
            name: "ExampleConsumer".into(),
            module: "example".into(),
            topic: serde_json::json!("org.fedoraproject.dev.*"),
        };
        let mut builder = DocumentBuilder::new(stats.clone(), vec![info], 5.0);
        c.count_received();
        c.count_received();
        c.record_handled(Duration::from_millis(300), true, false);
        let doc: Value = serde_json::from_str(&builder.next_document(SystemTime::now())).unwrap();
        let consumer = &doc["consumers"][0];
        assert_eq!(consumer["name"], "ExampleConsumer");
        assert_eq!(consumer["headcount_in"], 2);
        assert_eq!(consumer["headcount_out"], 1);
        assert_eq!(consumer["exceptions"], 1);
        assert_eq!(consumer["times"], serde_json::json!([0.3]));
        assert_eq!(consumer["jsonify"], true);
        assert_eq!(doc["producers"][0]["name"], "MonitoringProducer");
        assert_eq!(doc["producers"][0]["frequency"], 5.0);
        // The next window starts from zero.
        let raw = builder.next_document(SystemTime::now());
        let doc: Value = serde_json::from_str(&raw).unwrap();
        assert_eq!(doc["consumers"][0]["headcount_in"], 0);
        assert_eq!(doc["consumers"][0]["exceptions"], 0);
        assert_eq!(doc["consumers"][0]["times"], serde_json::json!([]));
        // moksha's key order and separators.
        assert!(raw.starts_with(r#"{"consumers": [{"name": "ExampleConsumer", "module": "example", "topic": "org.fedoraproject.dev.*", "initialized": true, "exceptions": 0, "jsonify": true, "backlog": 0, "headcount_out": 0, "headcount_in": 0, "times": []}], "producers": [{"name": "MonitoringProducer""#), "{raw}");
    }

    #[test]
    fn uninitialized_consumers_have_a_null_backlog() {
        let stats = Stats::new();
        let info = ConsumerInfo {
            name: "Broken".into(),
            module: "x".into(),
            topic: serde_json::json!(["a", "b"]),
        };
        let mut builder = DocumentBuilder::new(stats, vec![info], 1.0);
        let doc: Value = serde_json::from_str(&builder.next_document(SystemTime::now())).unwrap();
        assert_eq!(doc["consumers"][0]["backlog"], Value::Null);
        assert_eq!(doc["consumers"][0]["initialized"], false);
        assert_eq!(doc["consumers"][0]["topic"], serde_json::json!(["a", "b"]));
    }

    #[test]
    fn registered_producers_come_before_the_monitoring_producer() {
        let stats = Stats::new();
        let mut builder = DocumentBuilder::new(stats.clone(), Vec::new(), 5.0);
        let digest = stats.producer("DigestProducer", "fmn.producers", Duration::from_secs(90));
        stats.producer("Cleanup", "badges", Duration::from_millis(2500));
        let last_ran = std::time::UNIX_EPOCH + Duration::from_micros(1_795_392_096_835_655);
        let raw = builder.next_document(last_ran);
        // moksha's key order and separators; `last_ran` null before the first run.
        assert_eq!(
            raw,
            r#"{"consumers": [], "producers": [{"name": "Cleanup", "module": "badges", "initialized": true, "exceptions": 0, "frequency": 2.5, "now": false, "last_ran": null}, {"name": "DigestProducer", "module": "fmn.producers", "initialized": true, "exceptions": 0, "frequency": 90.0, "now": false, "last_ran": null}, {"name": "MonitoringProducer", "module": "fedhub.monitoring", "initialized": true, "exceptions": 0, "frequency": 5.0, "now": false, "last_ran": 1795392096.835655}]}"#
        );
        digest.record_ran(last_ran);
        digest.record_failed();
        digest.record_failed();
        let doc: Value = serde_json::from_str(&builder.next_document(SystemTime::now())).unwrap();
        let entry = &doc["producers"][1];
        assert_eq!(entry["name"], "DigestProducer");
        assert_eq!(entry["last_ran"], 1795392096.835655);
        assert_eq!(
            entry["exceptions"], 2,
            "failures in a row are not per window"
        );
        digest.record_succeeded();
        let doc: Value = serde_json::from_str(&builder.next_document(SystemTime::now())).unwrap();
        assert_eq!(doc["producers"][1]["exceptions"], 0);
        assert_eq!(doc["producers"][2]["name"], "MonitoringProducer");
    }
}
