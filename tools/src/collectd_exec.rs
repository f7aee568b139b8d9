//! `fedhub collectd-exec`: PUTVAL lines for collectd's exec plugin.
//!
//! A long-running child of collectd's exec plugin, like Fedora's
//! `fedmsg-service-collectd-<process>` script: it subscribes to a hub's
//! moksha-compatible monitoring socket and, for every document, prints on stdout
//! (the exec plugin's channel) one `PUTVAL` line per value:
//!
//! ```text
//! PUTVAL <host>/<service>/queue_length-<Consumer>_backlog interval=5 <ts>:<backlog>
//! PUTVAL <host>/<service>/gauge-<Consumer>_exceptions interval=5 <ts>:<exceptions>
//! PUTVAL <host>/<service>/gauge-<Consumer>_in interval=5 <ts>:<headcount_in>
//! PUTVAL <host>/<service>/gauge-<Consumer>_out interval=5 <ts>:<headcount_out>
//! PUTVAL <host>/<service>/response_time-<Consumer>_min interval=5 <ts>:<ms>
//! PUTVAL <host>/<service>/response_time-<Consumer>_max interval=5 <ts>:<ms>
//! PUTVAL <host>/<service>/response_time-<Consumer>_avg interval=5 <ts>:<ms>
//! PUTVAL <host>/<service>/gauge-<Producer>_exceptions interval=5 <ts>:<exceptions>
//! ```
//!
//! Only initialized consumers and producers are written; `_in`, `_out` and the
//! response times only when the document has `headcount_in`, `headcount_out`,
//! `times`; values are truncated to integers, response times are in ms (min, max
//! and mean of the window's `times`, 0 when it is empty). collectd splits
//! `fedmsg-hub` at its first `-`: plugin `fedmsg`, instance `hub`. These are
//! exactly the lines, and so the files and graphs, of Fedora's script; the
//! names come from `fedhub_probe::collectd`, as the read plugin's do.
//!
//! Where Fedora's script would crash (a missing key, a value that is not a
//! number), the line is left out instead. Logs go to stderr, which the exec
//! plugin copies into collectd's log.
//!
//! In the CLI, `host` defaults to `$COLLECTD_HOSTNAME` (set by the exec plugin)
//! and then the machine's host name ([`default_host`]); `interval_secs` to
//! `$COLLECTD_INTERVAL` ([`default_interval_secs`]). `interval_secs` should equal
//! the hub's `[monitoring] interval_secs`, since that is how often values come;
//! 0 takes it from each document (the `MonitoringProducer`'s `frequency`).

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use fedhub_probe::collectd::{Identifier, PluginName, Series};
use serde_json::Value;

/// The interval written when neither the options nor the document give one (moksha's).
pub const DEFAULT_INTERVAL_SECS: f64 = 5.0;

/// How often `run` wakes up to look at the stop flag.
const POLL: Duration = Duration::from_millis(100);

/// What `fedhub collectd-exec` runs with.
#[derive(Debug, Clone)]
pub struct ExecOptions {
    /// The monitoring socket to subscribe to (`[monitoring] socket`), e.g.
    /// `ipc:///var/run/fedmsg/monitoring-fedmsg-hub.socket` or `tcp://127.0.0.1:8941`.
    pub socket: String,
    /// The host part of the identifiers (CLI default: `$COLLECTD_HOSTNAME`, then the host name).
    pub host: String,
    /// The plugin part of the identifiers: the hub's service name (`fedmsg-hub`).
    pub service: String,
    /// The `interval=` written (CLI default: `$COLLECTD_INTERVAL`); 0 or less:
    /// the `frequency` of the document's `MonitoringProducer`, else 5.
    pub interval_secs: f64,
    /// How long to wait for a document before giving up with
    /// [`ExecError::Timeout`] (collectd starts the program again at its next
    /// interval); zero waits forever.
    pub timeout: Duration,
}

/// Why `run` stopped.
#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    /// An `ipc://` socket whose file does not exist: the hub is not running (or
    /// has another `[monitoring] socket`). Fedora's script exits 3 here.
    #[error("UNKNOWN - {path} does not exist (is the hub running with [monitoring] socket = \"ipc://{path}\"?)")]
    MissingSocket {
        /// The socket file.
        path: String,
    },
    /// The address is not one ZeroMQ accepts, or the socket cannot be set up.
    #[error("cannot subscribe to the monitoring socket {socket}: {source}")]
    Socket {
        /// The address.
        socket: String,
        /// ZeroMQ's error.
        source: zmq::Error,
    },
    /// No document within the timeout.
    #[error("no monitoring document from {socket} in {} s (is the hub running, with [monitoring] socket set to this address?)", waited.as_secs_f64())]
    Timeout {
        /// The address.
        socket: String,
        /// How long it waited.
        waited: Duration,
    },
    /// Receiving failed.
    #[error("cannot receive from the monitoring socket {socket}: {source}")]
    Receive {
        /// The address.
        socket: String,
        /// ZeroMQ's error.
        source: zmq::Error,
    },
    /// stdout is gone (collectd stopped) or failing.
    #[error("cannot write PUTVAL lines: {0}")]
    Write(#[source] std::io::Error),
}

/// The host name for identifiers: `$COLLECTD_HOSTNAME` when set (collectd's exec
/// plugin sets it to its `Hostname`), else the machine's host name, else `localhost`.
pub fn default_host() -> String {
    if let Some(host) = std::env::var("COLLECTD_HOSTNAME")
        .ok()
        .filter(|h| !h.trim().is_empty())
    {
        return host;
    }
    let mut buffer = [0u8; 256];
    // SAFETY: gethostname writes at most buffer.len() bytes into the buffer we own.
    let rc = unsafe { libc::gethostname(buffer.as_mut_ptr().cast(), buffer.len()) };
    if rc == 0 {
        let end = buffer.iter().position(|&b| b == 0).unwrap_or(buffer.len());
        if let Ok(name) = std::str::from_utf8(&buffer[..end]) {
            if !name.is_empty() {
                return name.to_string();
            }
        }
    }
    "localhost".to_string()
}

/// The interval: `$COLLECTD_INTERVAL` when it is a positive number (collectd's
/// exec plugin sets it), else 0 (take it from each document).
pub fn default_interval_secs() -> f64 {
    std::env::var("COLLECTD_INTERVAL")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(0.0)
}

/// Fedora's default monitoring socket for a service:
/// `ipc:///var/run/fedmsg/monitoring-<service>.socket`.
pub fn fedora_socket(service: &str) -> String {
    format!("ipc:///var/run/fedmsg/monitoring-{service}.socket")
}

/// The PUTVAL lines for one monitoring document (see the module documentation),
/// without newlines. Anything that is not a moksha document gives no lines.
pub fn putval_lines(
    document: &Value,
    host: &str,
    service: &str,
    interval_secs: f64,
    timestamp: u64,
) -> Vec<String> {
    let interval = format_interval(interval_secs);
    let plugin = PluginName::from_service(service);
    let mut lines = Vec::new();
    let mut put = |series: Series, name: &str, value: Option<i128>| {
        if let Some(value) = value {
            let identifier = Identifier {
                host,
                plugin,
                series,
                name,
            };
            let identifier = quote_if_needed(&identifier.to_string());
            lines.push(format!(
                "PUTVAL {identifier} interval={interval} {timestamp}:{value}"
            ));
        }
    };
    let entries = |key: &str| {
        document
            .get(key)
            .and_then(Value::as_array)
            .map(|list| list.iter().filter(is_initialized).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    for consumer in entries("consumers") {
        let Some(name) = consumer.get("name").and_then(Value::as_str) else {
            continue;
        };
        put(
            Series::Backlog,
            name,
            consumer.get("backlog").and_then(as_int),
        );
        put(
            Series::Exceptions,
            name,
            consumer.get("exceptions").and_then(as_int),
        );
        if let Some(value) = consumer.get("headcount_in") {
            put(Series::In, name, as_int(value));
        }
        if let Some(value) = consumer.get("headcount_out") {
            put(Series::Out, name, as_int(value));
        }
        if let Some(times) = consumer.get("times") {
            let times: Vec<f64> = match times {
                Value::Array(items) => items.iter().filter_map(Value::as_f64).collect(),
                _ => Vec::new(),
            };
            let (min, max, avg) = if times.is_empty() {
                (0.0, 0.0, 0.0)
            } else {
                let min = times.iter().copied().fold(f64::INFINITY, f64::min);
                let max = times.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                (min, max, times.iter().sum::<f64>() / times.len() as f64)
            };
            put(Series::ResponseMin, name, truncate(1000.0 * min));
            put(Series::ResponseMax, name, truncate(1000.0 * max));
            put(Series::ResponseAvg, name, truncate(1000.0 * avg));
        }
    }
    for producer in entries("producers") {
        let Some(name) = producer.get("name").and_then(Value::as_str) else {
            continue;
        };
        put(
            Series::Exceptions,
            name,
            producer.get("exceptions").and_then(as_int),
        );
    }
    lines
}

fn is_initialized(entry: &&Value) -> bool {
    entry.get("initialized").and_then(Value::as_bool) == Some(true)
}

/// Python's `"%i" % value`: integers as they are, floats truncated, booleans 1/0;
/// anything else (where the Python script would raise) gives no value.
fn as_int(value: &Value) -> Option<i128> {
    match value {
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                Some(i128::from(i))
            } else if let Some(u) = n.as_u64() {
                Some(i128::from(u))
            } else {
                n.as_f64().and_then(truncate)
            }
        }
        Value::Bool(b) => Some(i128::from(*b)),
        _ => None,
    }
}

fn truncate(value: f64) -> Option<i128> {
    // Beyond i64 a gauge is meaningless anyway; NaN and infinities have no %i.
    if value.is_finite() && value.abs() < 9.2e18 {
        Some(value.trunc() as i128)
    } else {
        None
    }
}

/// `5` for 5.0, `0.5` for 0.5; the default for nonsense.
fn format_interval(interval_secs: f64) -> String {
    let interval = if interval_secs.is_finite() && interval_secs > 0.0 {
        interval_secs
    } else {
        DEFAULT_INTERVAL_SECS
    };
    format!("{interval}")
}

/// collectd reads an identifier with spaces or quotes only when it is quoted.
fn quote_if_needed(identifier: &str) -> String {
    if identifier
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\\')
    {
        let escaped = identifier.replace('\\', "\\\\").replace('"', "\\\"");
        format!("\"{escaped}\"")
    } else {
        identifier.to_string()
    }
}

/// The `frequency` of the document's `MonitoringProducer`, if any.
fn document_interval(document: &Value) -> Option<f64> {
    document
        .get("producers")?
        .as_array()?
        .iter()
        .find(|p| p.get("name").and_then(Value::as_str) == Some("MonitoringProducer"))?
        .get("frequency")?
        .as_f64()
        .filter(|f| f.is_finite() && *f > 0.0)
}

/// Subscribes to `options.socket` and writes the PUTVAL lines of every document
/// to `out` (flushed per document) until `stop` is set (returns `Ok`), no
/// document arrives within `options.timeout`, or `out` fails. A frame that is not
/// a JSON document is logged and skipped.
pub fn run(
    options: &ExecOptions,
    stop: Arc<AtomicBool>,
    mut out: impl Write,
) -> Result<(), ExecError> {
    let socket_error = |source| ExecError::Socket {
        socket: options.socket.clone(),
        source,
    };
    if let Some(path) = options.socket.strip_prefix("ipc://") {
        if !std::path::Path::new(path).exists() {
            return Err(ExecError::MissingSocket {
                path: path.to_string(),
            });
        }
    }
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB).map_err(socket_error)?;
    sub.set_linger(0).map_err(socket_error)?;
    sub.set_rcvtimeo(POLL.as_millis() as i32)
        .map_err(socket_error)?;
    sub.set_subscribe(b"").map_err(socket_error)?;
    sub.connect(&options.socket).map_err(socket_error)?;
    tracing::info!(socket = %options.socket, service = %options.service, "waiting for monitoring documents");

    let mut last_document = Instant::now();
    let mut text = String::new();
    while !stop.load(Ordering::Acquire) {
        let frames = match sub.recv_multipart(0) {
            Ok(frames) => frames,
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {
                let waited = last_document.elapsed();
                if !options.timeout.is_zero() && waited >= options.timeout {
                    return Err(ExecError::Timeout {
                        socket: options.socket.clone(),
                        waited,
                    });
                }
                continue;
            }
            Err(source) => {
                return Err(ExecError::Receive {
                    socket: options.socket.clone(),
                    source,
                })
            }
        };
        last_document = Instant::now();
        // moksha sends one frame; a topic frame in front of it is tolerated.
        let Some(frame) = frames.last() else { continue };
        let document: Value = match serde_json::from_slice(frame) {
            Ok(document @ Value::Object(_)) => document,
            Ok(_) => {
                tracing::warn!(socket = %options.socket, "skipping a monitoring frame that is not a JSON object");
                continue;
            }
            Err(e) => {
                tracing::warn!(socket = %options.socket, error = %e, "skipping a monitoring frame that is not JSON");
                continue;
            }
        };
        let interval = if options.interval_secs.is_finite() && options.interval_secs > 0.0 {
            options.interval_secs
        } else {
            document_interval(&document).unwrap_or(DEFAULT_INTERVAL_SECS)
        };
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        text.clear();
        for line in putval_lines(
            &document,
            &options.host,
            &options.service,
            interval,
            timestamp,
        ) {
            text.push_str(&line);
            text.push('\n');
        }
        out.write_all(text.as_bytes()).map_err(ExecError::Write)?;
        out.flush().map_err(ExecError::Write)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn moksha_literal_example_gives_fedoras_lines() {
        // spec 5.3: a consumer raising on every 4th message, 0.3 s per message.
        let doc = json!({"consumers": [
            {"name": "ExampleConsumer", "module": "__main__", "topic": "org.fedoraproject.dev.*",
             "initialized": true, "exceptions": 5, "jsonify": true, "backlog": 19,
             "headcount_out": 17, "headcount_in": 16, "times": [0.3012721538543701, 0.30019569396972656]},
            {"name": "ListTopicConsumer", "initialized": true, "exceptions": 0, "backlog": 0,
             "headcount_out": 0, "headcount_in": 0, "times": []}],
            "producers": [
            {"name": "ExampleProducer", "initialized": true, "exceptions": 0, "frequency": 2},
            {"name": "MonitoringProducer", "initialized": true, "exceptions": 0, "frequency": 5}]});
        let lines = putval_lines(
            &doc,
            "busgateway01.phx2.fedoraproject.org",
            "fedmsg-hub",
            5.0,
            1_700_000_000,
        );
        let h = "PUTVAL busgateway01.phx2.fedoraproject.org/fedmsg-hub";
        let expected = [
            format!("{h}/queue_length-ExampleConsumer_backlog interval=5 1700000000:19"),
            format!("{h}/gauge-ExampleConsumer_exceptions interval=5 1700000000:5"),
            format!("{h}/gauge-ExampleConsumer_in interval=5 1700000000:16"),
            format!("{h}/gauge-ExampleConsumer_out interval=5 1700000000:17"),
            format!("{h}/response_time-ExampleConsumer_min interval=5 1700000000:300"),
            format!("{h}/response_time-ExampleConsumer_max interval=5 1700000000:301"),
            format!("{h}/response_time-ExampleConsumer_avg interval=5 1700000000:300"),
            format!("{h}/queue_length-ListTopicConsumer_backlog interval=5 1700000000:0"),
            format!("{h}/gauge-ListTopicConsumer_exceptions interval=5 1700000000:0"),
            format!("{h}/gauge-ListTopicConsumer_in interval=5 1700000000:0"),
            format!("{h}/gauge-ListTopicConsumer_out interval=5 1700000000:0"),
            format!("{h}/response_time-ListTopicConsumer_min interval=5 1700000000:0"),
            format!("{h}/response_time-ListTopicConsumer_max interval=5 1700000000:0"),
            format!("{h}/response_time-ListTopicConsumer_avg interval=5 1700000000:0"),
            format!("{h}/gauge-ExampleProducer_exceptions interval=5 1700000000:0"),
            format!("{h}/gauge-MonitoringProducer_exceptions interval=5 1700000000:0"),
        ];
        assert_eq!(lines, expected);
    }

    /// Lines for a document captured from the real moksha.hub 1.5.17; the
    /// expected values were computed with the Python script's own formulas
    /// (`"%i" % (1000 * max(times or [0]))`, ...) on the same file.
    fn fixture_lines(file: &str, service: &str) -> Vec<String> {
        // The workspace's fixtures, beside the core crate's tests.
        let path = format!(
            "{}/../tests/fixtures/monitoring/{file}",
            env!("CARGO_MANIFEST_DIR")
        );
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Value = serde_json::from_str(&text).unwrap();
        putval_lines(
            &doc,
            "busgateway01.phx2.fedoraproject.org",
            service,
            5.0,
            1_700_000_000,
        )
    }

    fn expected(service: &str, consumer: &str, values: [i64; 7], producer: i64) -> Vec<String> {
        let h = format!("PUTVAL busgateway01.phx2.fedoraproject.org/{service}");
        let names = [
            "queue_length-{C}_backlog",
            "gauge-{C}_exceptions",
            "gauge-{C}_in",
            "gauge-{C}_out",
            "response_time-{C}_min",
            "response_time-{C}_max",
            "response_time-{C}_avg",
        ];
        let mut lines: Vec<String> = names
            .iter()
            .zip(values)
            .map(|(n, v)| {
                format!(
                    "{h}/{} interval=5 1700000000:{v}",
                    n.replace("{C}", consumer)
                )
            })
            .collect();
        lines.push(format!(
            "{h}/gauge-MonitoringProducer_exceptions interval=5 1700000000:{producer}"
        ));
        lines
    }

    #[test]
    fn captured_moksha_documents_give_the_scripts_lines() {
        assert_eq!(
            fixture_lines("moksha_monitoring_1.json", "fedmsg-hub"),
            expected("fedmsg-hub", "PeerConsumer", [0, 0, 17, 17, 0, 0, 0], 0)
        );
        // Under load: a backlog of thousands, times of 1-12 ms.
        assert_eq!(
            fixture_lines("moksha_monitoring_1s_loaded_1.json", "fedmsg-hub"),
            expected(
                "fedmsg-hub",
                "PeerConsumer",
                [4139, 0, 4187, 832, 1, 12, 1],
                0
            )
        );
        assert_eq!(
            fixture_lines("moksha_monitoring_1s_loaded_2.json", "fedmsg-hub"),
            expected("fedmsg-hub", "PeerConsumer", [3245, 0, 0, 894, 1, 1, 1], 0)
        );
        assert_eq!(
            fixture_lines("moksha_monitoring_relay.json", "fedmsg-relay"),
            expected("fedmsg-relay", "RelayConsumer", [0, 0, 3, 3, 0, 0, 0], 0)
        );
    }

    #[test]
    fn uninitialized_entries_and_optional_keys() {
        let doc = json!({"consumers": [
            {"name": "Down", "initialized": false, "backlog": null, "exceptions": 0},
            {"name": "Old", "initialized": true, "backlog": 3, "exceptions": 1}],
            "producers": [{"name": "P", "initialized": false, "exceptions": 2}]});
        let lines = putval_lines(&doc, "h", "moksha-hub", 10.0, 1);
        assert_eq!(
            lines,
            [
                "PUTVAL h/moksha-hub/queue_length-Old_backlog interval=10 1:3",
                "PUTVAL h/moksha-hub/gauge-Old_exceptions interval=10 1:1",
            ]
        );
    }

    #[test]
    fn values_are_truncated_like_python_percent_i() {
        assert_eq!(as_int(&json!(19)), Some(19));
        assert_eq!(as_int(&json!(19.99)), Some(19));
        assert_eq!(as_int(&json!(-2.5)), Some(-2));
        assert_eq!(as_int(&json!(true)), Some(1));
        assert_eq!(as_int(&json!(u64::MAX)), Some(i128::from(u64::MAX)));
        assert_eq!(as_int(&json!(1e300)), None);
        assert_eq!(as_int(&json!("5")), None);
        assert_eq!(as_int(&Value::Null), None);
        assert_eq!(format_interval(5.0), "5");
        assert_eq!(format_interval(0.5), "0.5");
        assert_eq!(format_interval(f64::NAN), "5");
        assert_eq!(format_interval(-1.0), "5");
    }

    #[test]
    fn garbage_gives_no_lines_and_no_panic() {
        for doc in [
            json!(null),
            json!([]),
            json!("x"),
            json!({"consumers": "x", "producers": 5}),
            json!({"consumers": [1, null, "x", {"initialized": true}, {"name": 5, "initialized": true}]}),
        ] {
            assert!(putval_lines(&doc, "h", "s", 5.0, 0).is_empty(), "{doc}");
        }
        // Bad values drop their own line only; bad times count as none.
        let doc = json!({"consumers": [{"name": "C", "initialized": true, "backlog": "x",
            "exceptions": 1, "headcount_in": null, "times": ["a", null]}]});
        let lines = putval_lines(&doc, "h", "s", 5.0, 0);
        assert_eq!(
            lines,
            [
                "PUTVAL h/s/gauge-C_exceptions interval=5 0:1",
                "PUTVAL h/s/response_time-C_min interval=5 0:0",
                "PUTVAL h/s/response_time-C_max interval=5 0:0",
                "PUTVAL h/s/response_time-C_avg interval=5 0:0",
            ]
        );
    }

    #[test]
    fn identifiers_with_spaces_are_quoted() {
        let doc = json!({"consumers": [{"name": "My \"C\"", "initialized": true, "backlog": 1, "exceptions": 0}]});
        let lines = putval_lines(&doc, "h", "s", 5.0, 0);
        assert_eq!(
            lines[0],
            r#"PUTVAL "h/s/queue_length-My \"C\"_backlog" interval=5 0:1"#
        );
    }

    #[test]
    fn the_interval_can_come_from_the_document() {
        let doc = json!({"producers": [{"name": "MonitoringProducer", "frequency": 0.5}]});
        assert_eq!(document_interval(&doc), Some(0.5));
        assert_eq!(document_interval(&json!({"producers": []})), None);
    }

    #[test]
    fn a_missing_ipc_socket_is_fedoras_unknown() {
        let options = ExecOptions {
            socket: "ipc:///nonexistent/monitoring-fedmsg-hub.socket".into(),
            host: "h".into(),
            service: "fedmsg-hub".into(),
            interval_secs: 5.0,
            timeout: Duration::from_secs(1),
        };
        let e = run(&options, Arc::new(AtomicBool::new(false)), Vec::new()).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("UNKNOWN - /nonexistent/monitoring-fedmsg-hub.socket does not exist"),
            "{e}"
        );
    }

    #[test]
    fn garbage_addresses_and_timeouts_are_clear_errors() {
        let mut options = ExecOptions {
            socket: "not a socket".into(),
            host: "h".into(),
            service: "fedmsg-hub".into(),
            interval_secs: 5.0,
            timeout: Duration::from_millis(300),
        };
        let e = run(&options, Arc::new(AtomicBool::new(false)), Vec::new()).unwrap_err();
        assert!(matches!(e, ExecError::Socket { .. }), "{e}");
        assert!(e.to_string().contains("not a socket"), "{e}");
        // Nobody publishes there: a timeout, not a hang.
        options.socket = "tcp://127.0.0.1:1".into();
        let e = run(&options, Arc::new(AtomicBool::new(false)), Vec::new()).unwrap_err();
        assert!(matches!(e, ExecError::Timeout { .. }), "{e}");
        // A stop request ends the loop with Ok.
        options.timeout = Duration::ZERO;
        let stop = Arc::new(AtomicBool::new(true));
        assert!(run(&options, stop, Vec::new()).is_ok());
    }

    #[test]
    fn fedora_defaults() {
        assert_eq!(
            fedora_socket("fedmsg-hub"),
            "ipc:///var/run/fedmsg/monitoring-fedmsg-hub.socket"
        );
        assert!(!default_host().is_empty());
    }
}
