//! Drop-in replacements for Fedora's NRPE scripts (`check_fedmsg_consumer_backlog.py`,
//! `check_fedmsg_consumer_exceptions.py`, `check_fedmsg_producers_consumers.py`,
//! `check_fedmsg_producer_last_ran.py`): the same socket paths, the same lines
//! and the same exit codes, reading one document from the moksha monitoring
//! socket.
//!
//! Differences, all deliberate: the timeout is configurable (`-t`, the message
//! keeps Fedora's wording with the actual milliseconds); `--socket` names another
//! address (tcp or ipc); the backlog form also finds the plain
//! `monitoring-<service>.socket` (after Fedora's two names, so it picks the same
//! file Fedora's script would); errors that made the Python scripts print a
//! Python exception print a message naming what was wrong instead.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::humanize::humanize;
use crate::status::{Outcome, State};

/// Fedora's directory for monitoring sockets.
pub const DEFAULT_SOCKET_DIR: &str = "/var/run/fedmsg";

/// Fedora's poll timeout.
pub const DEFAULT_TIMEOUT_MS: u64 = 20_000;

/// Which of Fedora's scripts to behave like.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// `check_fedmsg_consumer_backlog.py <service> <Consumer> <warn> <crit>`
    Backlog {
        /// Consumer name.
        consumer: String,
        /// Warn when the backlog is greater.
        warn: f64,
        /// Critical when the backlog is greater.
        crit: f64,
    },
    /// `check_fedmsg_consumer_exceptions.py <service> <Consumer> <warn> <crit>`
    Exceptions {
        /// Consumer name.
        consumer: String,
        /// Warn when the window's exception count is greater.
        warn: f64,
        /// Critical when the window's exception count is greater.
        crit: f64,
    },
    /// `check_fedmsg_producers_consumers.py <service> <Name>...`
    Consumers {
        /// Consumers and producers that must be present and initialized.
        names: Vec<String>,
    },
    /// `check_fedmsg_producer_last_ran.py <service> <Producer> <warn_s> <crit_s>`
    ProducerLastRan {
        /// Producer name.
        producer: String,
        /// Warn when it last ran more than this many seconds ago.
        warn: f64,
        /// Critical when it last ran more than this many seconds ago.
        crit: f64,
    },
}

/// One Fedora-form check, fully parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct FedoraCheck {
    /// The script to imitate and its arguments.
    pub kind: Kind,
    /// The service (process) name in the socket path, e.g. `fedmsg-hub`.
    pub service: String,
    /// `--socket`: an explicit tcp:// or ipc:// address.
    pub socket: Option<String>,
    /// `--socket-dir`: where `monitoring-<service>.socket` lives.
    pub socket_dir: PathBuf,
    /// How long to wait for a document.
    pub timeout_ms: u64,
}

impl FedoraCheck {
    /// The line printed when no document arrives in time.
    pub fn timeout_outcome(&self) -> Outcome {
        Outcome::new(
            State::Unknown,
            format!(
                "UNKNOWN - ZMQ timeout.  No message received in {} ms",
                self.timeout_ms
            ),
        )
    }

    /// Runs the check: find the socket, read one document, check it.
    pub fn run(&self) -> Outcome {
        if let Kind::Consumers { names } = &self.kind {
            if names.is_empty() {
                return unknown_dash("empty list of fedmsg consumers and producers to check");
            }
        }
        let address = match self.address() {
            Ok(address) => address,
            Err(outcome) => return outcome,
        };
        let frame = match read_one(&address, self.timeout_ms) {
            Ok(frame) => frame,
            Err(ReadError::Timeout) => return self.timeout_outcome(),
            Err(ReadError::Zmq(message)) => return unknown_colon(&message),
        };
        let document: Value = match serde_json::from_slice(&frame) {
            Ok(document) => document,
            Err(e) => {
                return unknown_colon(&format!(
                    "the monitoring document from {address} is not valid JSON: {e}"
                ))
            }
        };
        self.check_monitoring_document(&document, unix_now())
    }

    /// The ZeroMQ address to read, after Fedora's file checks.
    fn address(&self) -> Result<String, Outcome> {
        let path = match &self.socket {
            Some(socket) => match validate_address(socket)? {
                Some(path) => {
                    if !path.exists() {
                        return Err(unknown_dash(&format!("{} does not exist", path.display())));
                    }
                    path
                }
                None => return Ok(socket.clone()),
            },
            None => self.find_socket_file()?,
        };
        if !writable(&path) {
            return Err(unknown_dash(&format!("cannot write to {}", path.display())));
        }
        Ok(format!("ipc://{}", path.display()))
    }

    /// Fedora's file names for this script, in the order it tries them.
    fn candidates(&self) -> Vec<PathBuf> {
        let file = |suffix: &str| {
            self.socket_dir
                .join(format!("monitoring-{}{suffix}.socket", self.service))
        };
        match self.kind {
            Kind::Backlog { .. } => vec![file("-"), file("-3"), file("")],
            Kind::Exceptions { .. } => vec![file(""), file("-"), file("-3")],
            Kind::Consumers { .. } | Kind::ProducerLastRan { .. } => vec![file("")],
        }
    }

    fn find_socket_file(&self) -> Result<PathBuf, Outcome> {
        let candidates = self.candidates();
        if let Some(found) = candidates.iter().find(|p| p.exists()) {
            return Ok(found.clone());
        }
        Err(match self.kind {
            Kind::Backlog { .. } | Kind::Exceptions { .. } => {
                unknown_dash("socket file does not exists")
            }
            _ => unknown_dash(&format!("{} does not exist", candidates[0].display())),
        })
    }

    /// Applies this script's rule to a moksha monitoring document at time
    /// `now` (Unix seconds): the line and state Fedora's script would give.
    pub fn check_monitoring_document(&self, document: &Value, now: f64) -> Outcome {
        let consumers = match list(document, "consumers") {
            Ok(list) => list,
            Err(outcome) => return outcome,
        };
        let producers = match list(document, "producers") {
            Ok(list) => list,
            Err(outcome) => return outcome,
        };
        match &self.kind {
            Kind::Backlog {
                consumer,
                warn,
                crit,
            } => {
                let Some(entry) = find(consumers, consumer) else {
                    return unknown_colon(&format!("fedmsg consumer {consumer} not found"));
                };
                let value = &entry["backlog"];
                if value.is_null() {
                    return Outcome::new(
                        State::Unknown,
                        format!("ERROR: fedmsg consumer {consumer} is not initialized"),
                    );
                }
                compare(consumer, "backlog", value, *warn, *crit)
            }
            Kind::Exceptions {
                consumer,
                warn,
                crit,
            } => {
                let Some(entry) = find(consumers, consumer) else {
                    return unknown_colon(&format!("fedmsg consumers {consumer} not found"));
                };
                compare(consumer, "exceptions", &entry["exceptions"], *warn, *crit)
            }
            Kind::Consumers { names } => {
                let wanted = |entry: &&Value| {
                    entry["name"]
                        .as_str()
                        .is_some_and(|n| names.iter().any(|w| w == n))
                };
                for (what, entries) in [("consumer", consumers), ("producer", producers)] {
                    if let Some(entry) = entries
                        .iter()
                        .filter(wanted)
                        .find(|e| e["initialized"] != Value::Bool(true))
                    {
                        return Outcome::new(
                            State::Critical,
                            format!(
                                "ERROR: fedmsg {what} {} is not initialized",
                                entry["name"].as_str().unwrap_or_default()
                            ),
                        );
                    }
                }
                for name in names {
                    if find(consumers, name).is_none() && find(producers, name).is_none() {
                        return Outcome::new(
                            State::Critical,
                            format!("ERROR: {name} not found among installed plugins"),
                        );
                    }
                }
                Outcome::new(
                    State::Ok,
                    "OK: fedmsg consumer(s) and producer(s) initialized",
                )
            }
            Kind::ProducerLastRan {
                producer,
                warn,
                crit,
            } => {
                let Some(entry) = find(producers, producer) else {
                    return unknown_colon(&format!("fedmsg producer {producer} not found"));
                };
                let last_ran = match &entry["last_ran"] {
                    Value::Null => {
                        return unknown_colon(&format!(
                            "fedmsg producer {producer} has not run yet (last_ran is null)"
                        ))
                    }
                    value => match value.as_f64() {
                        Some(t) => t,
                        None => {
                            return unknown_colon(&format!(
                                "fedmsg producer {producer} last_ran is not a number: {value}"
                            ))
                        }
                    },
                };
                let diff = now - last_ran;
                let then = humanize(last_ran, now);
                let state = if diff > *crit {
                    State::Critical
                } else if diff > *warn {
                    State::Warning
                } else {
                    State::Ok
                };
                Outcome::new(
                    state,
                    format!(
                        "{state}: {producer} last ran {then} ({} seconds ago)",
                        diff.trunc() as i64
                    ),
                )
            }
        }
    }
}

/// `UNKNOWN - <text>`, exit 3 (Fedora's form for missing files and timeouts).
fn unknown_dash(text: &str) -> Outcome {
    Outcome::new(State::Unknown, format!("UNKNOWN - {text}"))
}

/// `UNKNOWN: <text>`, exit 3 (Fedora's form for errors and missing names).
pub fn unknown_colon(text: &str) -> Outcome {
    Outcome::new(State::Unknown, format!("UNKNOWN: {text}"))
}

fn list<'a>(document: &'a Value, key: &str) -> Result<&'a [Value], Outcome> {
    document
        .get(key)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .ok_or_else(|| unknown_colon(&format!("the monitoring document has no \"{key}\" list")))
}

fn find<'a>(entries: &'a [Value], name: &str) -> Option<&'a Value> {
    entries.iter().find(|e| e["name"].as_str() == Some(name))
}

/// Fedora's three-way comparison (strict `>`), printing the value with `%i`.
fn compare(consumer: &str, field: &str, value: &Value, warn: f64, crit: f64) -> Outcome {
    let Some(number) = value.as_f64() else {
        return unknown_colon(&format!(
            "fedmsg consumer {consumer} {field} is not a number: {value}"
        ));
    };
    let state = if number > crit {
        State::Critical
    } else if number > warn {
        State::Warning
    } else {
        State::Ok
    };
    Outcome::new(
        state,
        format!(
            "{state}: fedmsg consumer {consumer} {field} value is {}",
            number.trunc() as i64
        ),
    )
}

/// Checks `--socket`: `Ok(Some(path))` for ipc, `Ok(None)` for tcp.
fn validate_address(address: &str) -> Result<Option<PathBuf>, Outcome> {
    let expected = || {
        unknown_colon(&format!(
            "invalid monitoring socket address '{address}': expected tcp://HOST:PORT or ipc://PATH"
        ))
    };
    if let Some(path) = address.strip_prefix("ipc://") {
        if path.is_empty() || path.contains('\0') {
            return Err(expected());
        }
        return Ok(Some(PathBuf::from(path)));
    }
    let Some(rest) = address.strip_prefix("tcp://") else {
        return Err(expected());
    };
    let port_ok = rest
        .rsplit_once(':')
        .filter(|(host, _)| !host.is_empty() && !host.contains(char::is_whitespace))
        .and_then(|(_, port)| port.parse::<u16>().ok())
        .is_some_and(|port| port > 0);
    if port_ok {
        Ok(None)
    } else {
        Err(expected())
    }
}

/// `os.access(path, W_OK)`: whether this process may write to (connect to) the socket.
fn writable(path: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    match std::ffi::CString::new(path.as_os_str().as_bytes()) {
        // SAFETY: `c` is a valid NUL-terminated string that outlives the call.
        Ok(c) => unsafe { libc::access(c.as_ptr(), libc::W_OK) == 0 },
        Err(_) => false,
    }
}

/// Why no document was read.
#[derive(Debug)]
pub enum ReadError {
    /// Nothing arrived in time.
    Timeout,
    /// A ZeroMQ call failed (the message names the address).
    Zmq(String),
}

/// Subscribes to everything on `address` and returns the first frame received
/// within `timeout_ms`.
pub fn read_one(address: &str, timeout_ms: u64) -> Result<Vec<u8>, ReadError> {
    let fail = |what: &str, e: zmq::Error| {
        ReadError::Zmq(format!(
            "cannot {what} the monitoring socket {address}: {e}"
        ))
    };
    let context = zmq::Context::new();
    let socket = context
        .socket(zmq::SUB)
        .map_err(|e| fail("create a SUB socket for", e))?;
    socket.set_linger(0).map_err(|e| fail("configure", e))?;
    socket
        .set_subscribe(b"")
        .map_err(|e| fail("subscribe to", e))?;
    socket.connect(address).map_err(|e| fail("connect to", e))?;
    let deadline = std::time::Instant::now() + Duration::from_millis(timeout_ms);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Err(ReadError::Timeout);
        }
        let left_ms = i64::try_from(left.as_millis()).unwrap_or(i64::MAX).max(1);
        match socket.poll(zmq::POLLIN, left_ms) {
            Ok(0) => return Err(ReadError::Timeout),
            Ok(_) => break,
            Err(zmq::Error::EINTR) => continue,
            Err(e) => return Err(fail("poll", e)),
        }
    }
    socket
        .recv_bytes(zmq::DONTWAIT)
        .map_err(|e| fail("receive from", e))
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(kind: Kind) -> FedoraCheck {
        FedoraCheck {
            kind,
            service: "fedmsg-hub".into(),
            socket: None,
            socket_dir: PathBuf::from(DEFAULT_SOCKET_DIR),
            timeout_ms: DEFAULT_TIMEOUT_MS,
        }
    }

    fn doc() -> Value {
        json!({
            "consumers": [
                {"name": "FMNConsumer", "initialized": true, "exceptions": 3, "backlog": 15001},
                {"name": "Lazy", "initialized": false, "exceptions": 0, "backlog": null},
            ],
            "producers": [
                {"name": "DigestProducer", "initialized": true, "last_ran": 1000.0},
                {"name": "Never", "initialized": true, "last_ran": null},
                {"name": "Broken", "initialized": false, "last_ran": 900.0},
            ],
        })
    }

    fn outcome(kind: Kind, now: f64) -> (i32, String) {
        let o = check(kind).check_monitoring_document(&doc(), now);
        (o.state.code(), o.text)
    }

    fn backlog(c: &str, warn: f64, crit: f64) -> Kind {
        Kind::Backlog {
            consumer: c.into(),
            warn,
            crit,
        }
    }

    #[test]
    fn backlog_lines() {
        let cases = [
            (
                backlog("FMNConsumer", 15000.0, 20000.0),
                1,
                "WARNING: fedmsg consumer FMNConsumer backlog value is 15001",
            ),
            (
                backlog("FMNConsumer", 15001.0, 20000.0),
                0,
                "OK: fedmsg consumer FMNConsumer backlog value is 15001",
            ),
            (
                backlog("FMNConsumer", 10.0, 15000.0),
                2,
                "CRITICAL: fedmsg consumer FMNConsumer backlog value is 15001",
            ),
            (
                backlog("Lazy", 1.0, 2.0),
                3,
                "ERROR: fedmsg consumer Lazy is not initialized",
            ),
            (
                backlog("Nope", 1.0, 2.0),
                3,
                "UNKNOWN: fedmsg consumer Nope not found",
            ),
        ];
        for (kind, code, line) in cases {
            assert_eq!(outcome(kind, 0.0), (code, line.to_string()));
        }
    }

    #[test]
    fn exceptions_lines() {
        let k = |c: &str, warn, crit| Kind::Exceptions {
            consumer: c.into(),
            warn,
            crit,
        };
        assert_eq!(
            outcome(k("FMNConsumer", 1.0, 10.0), 0.0),
            (
                1,
                "WARNING: fedmsg consumer FMNConsumer exceptions value is 3".into()
            )
        );
        assert_eq!(
            outcome(k("FMNConsumer", 1.0, 2.0), 0.0),
            (
                2,
                "CRITICAL: fedmsg consumer FMNConsumer exceptions value is 3".into()
            )
        );
        assert_eq!(
            outcome(k("FMNConsumer", 3.0, 10.0), 0.0),
            (
                0,
                "OK: fedmsg consumer FMNConsumer exceptions value is 3".into()
            )
        );
        assert_eq!(
            outcome(k("Nope", 1.0, 10.0), 0.0),
            (3, "UNKNOWN: fedmsg consumers Nope not found".into())
        );
    }

    #[test]
    fn consumers_and_producers_lines() {
        let k = |names: &[&str]| Kind::Consumers {
            names: names.iter().map(|s| s.to_string()).collect(),
        };
        assert_eq!(
            outcome(k(&["FMNConsumer", "DigestProducer"]), 0.0),
            (
                0,
                "OK: fedmsg consumer(s) and producer(s) initialized".into()
            )
        );
        assert_eq!(
            outcome(k(&["FMNConsumer", "Lazy"]), 0.0),
            (2, "ERROR: fedmsg consumer Lazy is not initialized".into())
        );
        assert_eq!(
            outcome(k(&["Broken", "FMNConsumer"]), 0.0),
            (2, "ERROR: fedmsg producer Broken is not initialized".into())
        );
        assert_eq!(
            outcome(k(&["FMNConsumer", "Ghost"]), 0.0),
            (2, "ERROR: Ghost not found among installed plugins".into())
        );
        let empty = check(k(&[])).run();
        assert_eq!(
            (empty.state.code(), empty.text.as_str()),
            (
                3,
                "UNKNOWN - empty list of fedmsg consumers and producers to check"
            )
        );
    }

    #[test]
    fn producer_last_ran_lines() {
        let k = |p: &str, warn, crit| Kind::ProducerLastRan {
            producer: p.into(),
            warn,
            crit,
        };
        assert_eq!(
            outcome(k("DigestProducer", 90.0, 600.0), 1003.5),
            (
                0,
                "OK: DigestProducer last ran just now (3 seconds ago)".into()
            )
        );
        assert_eq!(
            outcome(k("DigestProducer", 90.0, 600.0), 1150.9),
            (
                1,
                "WARNING: DigestProducer last ran 2 minutes ago (150 seconds ago)".into()
            )
        );
        assert_eq!(
            outcome(k("DigestProducer", 90.0, 600.0), 4600.0),
            (
                2,
                "CRITICAL: DigestProducer last ran an hour ago (3600 seconds ago)".into()
            )
        );
        assert_eq!(
            outcome(k("Ghost", 90.0, 600.0), 0.0),
            (3, "UNKNOWN: fedmsg producer Ghost not found".into())
        );
        let (code, line) = outcome(k("Never", 90.0, 600.0), 0.0);
        assert_eq!(code, 3);
        assert!(line.starts_with("UNKNOWN: fedmsg producer Never has not run"));
    }

    #[test]
    fn malformed_documents_are_unknown() {
        let c = check(backlog("FMNConsumer", 1.0, 2.0));
        for document in [
            json!(null),
            json!([]),
            json!({"consumers": 5, "producers": []}),
            json!({"consumers": []}),
            json!({"consumers": [{"name": "FMNConsumer", "backlog": "many"}], "producers": []}),
            json!({"consumers": [{"name": 7}], "producers": []}),
        ] {
            let o = c.check_monitoring_document(&document, 0.0);
            assert_eq!(o.state, State::Unknown, "{document}");
            assert!(o.text.starts_with("UNKNOWN: "), "{}", o.text);
        }
    }

    #[test]
    fn socket_addresses() {
        assert_eq!(validate_address("tcp://127.0.0.1:5555"), Ok(None));
        assert_eq!(validate_address("tcp://[::1]:5555"), Ok(None));
        assert_eq!(
            validate_address("ipc:///tmp/x.socket"),
            Ok(Some(PathBuf::from("/tmp/x.socket")))
        );
        for bad in [
            "garbage",
            "",
            "tcp://",
            "tcp://host",
            "tcp://:5555",
            "tcp://host:0",
            "tcp://host:99999",
            "tcp://host:port",
            "ipc://",
            "udp://host:5",
            "/var/run/fedmsg/monitoring-fedmsg-hub.socket",
        ] {
            let o = validate_address(bad).expect_err(bad);
            assert_eq!(
                o.text,
                format!("UNKNOWN: invalid monitoring socket address '{bad}': expected tcp://HOST:PORT or ipc://PATH")
            );
        }
    }

    #[test]
    fn socket_file_order_follows_each_script() {
        let names = |kind| {
            check(kind)
                .candidates()
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
        };
        let d = "/var/run/fedmsg/monitoring-fedmsg-hub";
        assert_eq!(
            names(backlog("X", 1.0, 2.0)),
            [
                format!("{d}-.socket"),
                format!("{d}-3.socket"),
                format!("{d}.socket")
            ]
        );
        assert_eq!(
            names(Kind::Exceptions {
                consumer: "X".into(),
                warn: 1.0,
                crit: 2.0
            }),
            [
                format!("{d}.socket"),
                format!("{d}-.socket"),
                format!("{d}-3.socket")
            ]
        );
        assert_eq!(
            names(Kind::Consumers {
                names: vec!["X".into()]
            }),
            [format!("{d}.socket")]
        );
    }
}
