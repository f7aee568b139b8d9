//! `fedhub publish`: like fedmsg-logger, fedmsg envelopes onto a socket,
//! signed like fedmsg signs them when a config with `sign_messages` is given.

use std::io::{BufRead, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedhub::Stats;
use fedhub::{Publisher, SigningKey};
use serde_json::Value;

use crate::{socket_error, ToolError};

/// Options of `fedhub publish`.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Address to connect to (or bind with `bind`).
    pub endpoint: String,
    /// Bind instead of connecting.
    pub bind: bool,
    /// Topic: `modname.event`, or fully qualified.
    pub topic: String,
    /// fedmsg `topic_prefix`.
    pub topic_prefix: String,
    /// fedmsg `environment`.
    pub environment: String,
    /// When binding: wait for this many subscribers before sending.
    pub wait_subscribers: usize,
    /// How long to wait for the connection or the subscribers.
    pub wait_secs: f64,
    /// Sign each envelope with this key (fedmsg's `sign_messages`).
    pub signing: Option<Arc<SigningKey>>,
}

/// What `fedhub publish` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishSummary {
    /// Messages sent.
    pub sent: u64,
    /// Input lines rejected.
    pub rejected: u64,
    /// The peer connected to does not subscribe to the topic: it drops what
    /// was sent (reported on the error output).
    pub filtered: bool,
}

/// Publishes `json` (one message) or, without it, one message per input line.
/// Each body becomes the `msg` of a fedmsg envelope. Prints each envelope sent.
pub fn publish(
    options: &PublishOptions,
    json: Option<&str>,
    input: impl BufRead,
    mut out: impl Write,
    mut err: impl Write,
) -> Result<PublishSummary, ToolError> {
    crate::check_endpoint("--endpoint", &options.endpoint)?;
    let topic = checked_topic(options)?;
    let context = zmq::Context::new();
    // XPUB: what the peers subscribe to arrives as frames, so publish can
    // wait for a subscription that covers the topic before sending.
    let socket = context
        .socket(zmq::XPUB)
        .map_err(socket_error("create socket for", &options.endpoint))?;
    socket
        .set_sndhwm(0)
        .map_err(socket_error("set option on", &options.endpoint))?;
    socket
        .set_linger(5000)
        .map_err(socket_error("set option on", &options.endpoint))?;
    let wait = Duration::from_secs_f64(options.wait_secs.max(0.0));
    let mut filtered = false;
    if options.bind {
        socket
            .bind(&options.endpoint)
            .map_err(socket_error("bind", &options.endpoint))?;
        if options.wait_subscribers > 0 {
            wait_for_subscribers(&socket, options.wait_subscribers, wait, &mut err)?;
        }
    } else {
        // Like fedmsg's post_init_sleep, but bounded and checked: the
        // connection and the peer's subscription must arrive before the first
        // message, or it is lost.
        let deadline = Instant::now() + wait;
        let monitor = ConnectMonitor::attach(&context, &socket, &options.endpoint)?;
        socket
            .connect(&options.endpoint)
            .map_err(socket_error("connect", &options.endpoint))?;
        if !monitor.wait_connected(deadline)? {
            return Err(ToolError::Unreachable {
                address: options.endpoint.clone(),
                waited_secs: wait.as_secs_f64(),
            });
        }
        match wait_for_subscription(&socket, &topic, deadline)? {
            Subscriptions::Covering => {}
            Subscriptions::Others(prefixes) => {
                filtered = true;
                let listed = if prefixes.is_empty() {
                    "nothing".to_string()
                } else {
                    prefixes.join(", ")
                };
                writeln!(
                    err,
                    "{} does not subscribe to {topic} (it subscribes to {listed}): it drops the message at its subscription; publish under a topic it subscribes to (-c with its config takes its environment, or --environment)",
                    options.endpoint
                )?;
            }
        }
    }
    let builder =
        Publisher::disconnected(&options.topic_prefix, &options.environment, Stats::new());
    let mut summary = PublishSummary::default();
    let mut send = |msg: Value, summary: &mut PublishSummary| -> Result<(), ToolError> {
        let mut envelope = builder.envelope(&topic, msg);
        if let Some(key) = &options.signing {
            key.sign(&mut envelope).map_err(|e| {
                ToolError::Input(format!("cannot sign with {}: {e}", key.certname()))
            })?;
        }
        let envelope = Value::Object(envelope);
        let body = fedhub::to_canonical_string(&envelope);
        let topic = envelope["topic"].as_str().unwrap_or_default();
        socket
            .send(topic.as_bytes(), zmq::SNDMORE)
            .and_then(|_| socket.send(body.as_bytes(), 0))
            .map_err(socket_error("send to", &options.endpoint))?;
        writeln!(out, "{body}")?;
        summary.sent += 1;
        Ok(())
    };
    match json {
        Some(text) => {
            let msg: Value = serde_json::from_str(text)
                .map_err(|e| ToolError::Input(format!("--json is not valid JSON: {e}")))?;
            send(msg, &mut summary)?;
        }
        None => {
            for (number, line) in input.lines().enumerate() {
                let line = line.map_err(|e| ToolError::Input(format!("cannot read input: {e}")))?;
                if line.trim().is_empty() {
                    continue;
                }
                match serde_json::from_str::<Value>(&line) {
                    Ok(msg) => send(msg, &mut summary)?,
                    Err(e) => {
                        summary.rejected += 1;
                        writeln!(err, "line {}: not valid JSON ({e}); skipped", number + 1)?;
                    }
                }
            }
        }
    }
    summary.filtered = filtered;
    Ok(summary)
}

/// The fully qualified topic `--topic` stands for, or an error naming it and
/// stating the rule when fedmsg would never have produced it.
pub fn checked_topic(options: &PublishOptions) -> Result<String, ToolError> {
    check_topic_words("--topic", &options.topic)?;
    check_topic_words("--topic-prefix", &options.topic_prefix)?;
    check_topic_words("--environment", &options.environment)?;
    // An already qualified topic that lost the start of the prefix
    // (fedoraproject.prod.x.y) would get the prefix added a second time.
    let segments: Vec<&str> = options.topic_prefix.split('.').collect();
    for skip in 1..segments.len() {
        let tail = segments[skip..].join(".");
        if options.topic.starts_with(&format!("{tail}.")) {
            return Err(ToolError::Input(format!(
                "--topic {:?} looks like a qualified topic missing the start of the prefix {:?}: expected {}.{}, or modname.event without the prefix",
                options.topic,
                options.topic_prefix,
                segments[..skip].join("."),
                options.topic
            )));
        }
    }
    Ok(fedhub::build_topic(
        &options.topic_prefix,
        &options.environment,
        &options.topic,
    ))
}

/// The rule every fedmsg topic follows: words separated by single dots.
const TOPIC_RULE: &str = "a fedmsg topic is words separated by single dots (modname.event such as logger.log, or org.fedoraproject.prod.logger.log), without spaces, wildcards (*, >, #, ?) or empty segments";

fn check_topic_words(option: &str, text: &str) -> Result<(), ToolError> {
    let problem = if text.is_empty() {
        Some("it is empty")
    } else if text.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("it holds a space")
    } else if text.contains(['*', '>', '#', '?']) {
        Some("it holds a wildcard")
    } else if text.split('.').any(str::is_empty) {
        Some("it has an empty segment")
    } else {
        None
    };
    match problem {
        Some(problem) => Err(ToolError::Input(format!(
            "{option} {text:?}: {problem}; {TOPIC_RULE}"
        ))),
        None => Ok(()),
    }
}

/// The connection events of the publishing socket, from ZeroMQ's socket monitor.
struct ConnectMonitor {
    events: zmq::Socket,
}

impl ConnectMonitor {
    /// Starts monitoring `socket` (before it connects, so no event is missed).
    fn attach(
        context: &zmq::Context,
        socket: &zmq::Socket,
        endpoint: &str,
    ) -> Result<ConnectMonitor, ToolError> {
        let address = "inproc://fedhub-publish-monitor";
        socket
            .monitor(address, zmq::SocketEvent::CONNECTED as i32)
            .map_err(socket_error("monitor", endpoint))?;
        let events = context
            .socket(zmq::PAIR)
            .map_err(socket_error("monitor", endpoint))?;
        events
            .set_linger(0)
            .and_then(|()| events.connect(address))
            .map_err(socket_error("monitor", endpoint))?;
        Ok(ConnectMonitor { events })
    }

    /// Whether the connection was established before `deadline`.
    fn wait_connected(&self, deadline: Instant) -> Result<bool, ToolError> {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let mut items = [self.events.as_poll_item(zmq::POLLIN)];
            match zmq::poll(&mut items, left.as_millis().min(i64::MAX as u128) as i64) {
                Ok(0) => return Ok(false),
                Ok(_) => {}
                Err(zmq::Error::EINTR) => continue,
                Err(e) => return Err(socket_error("monitor", "publish")(e)),
            }
            if let Ok(frames) = self.events.recv_multipart(zmq::DONTWAIT) {
                let id = frames
                    .first()
                    .and_then(|f| f.get(..2))
                    .map(|b| u16::from_ne_bytes([b[0], b[1]]));
                if id == Some(zmq::SocketEvent::CONNECTED as u16) {
                    return Ok(true);
                }
            }
            if left.is_zero() {
                return Ok(false);
            }
        }
    }
}

/// What the peer subscribed to by the deadline.
enum Subscriptions {
    /// A subscription that covers the topic.
    Covering,
    /// Only these prefixes (none covering the topic).
    Others(Vec<String>),
}

/// Waits until the peer subscribes to a prefix of `topic`, at most until `deadline`.
fn wait_for_subscription(
    socket: &zmq::Socket,
    topic: &str,
    deadline: Instant,
) -> Result<Subscriptions, ToolError> {
    let mut prefixes: Vec<String> = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        socket
            .set_rcvtimeo(left.as_millis().clamp(1, i32::MAX as u128) as i32)
            .map_err(socket_error("set option on", "xpub"))?;
        match socket.recv_bytes(0) {
            Ok(frame) if frame.first() == Some(&1) => {
                let prefix = String::from_utf8_lossy(&frame[1..]).into_owned();
                if topic.as_bytes().starts_with(&frame[1..]) {
                    return Ok(Subscriptions::Covering);
                }
                prefixes.push(format!("{prefix:?}"));
            }
            Ok(_) => {}
            Err(zmq::Error::EAGAIN) | Err(zmq::Error::EINTR) => {}
            Err(e) => return Err(socket_error("receive subscriptions on", "xpub")(e)),
        }
        if left.is_zero() {
            return Ok(Subscriptions::Others(prefixes));
        }
    }
}

fn wait_for_subscribers(
    socket: &zmq::Socket,
    wanted: usize,
    wait: Duration,
    err: &mut impl Write,
) -> Result<(), ToolError> {
    let deadline = Instant::now() + wait;
    let mut seen = 0;
    while seen < wanted {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            writeln!(
                err,
                "only {seen} of {wanted} subscribers arrived within {:.1} s; sending anyway",
                wait.as_secs_f64()
            )?;
            return Ok(());
        }
        socket
            .set_rcvtimeo(left.as_millis().min(i32::MAX as u128) as i32)
            .map_err(socket_error("set option on", "xpub"))?;
        match socket.recv_bytes(0) {
            // XPUB delivers subscriptions as frames starting with 1.
            Ok(frame) if frame.first() == Some(&1) => seen += 1,
            Ok(_) => {}
            Err(zmq::Error::EAGAIN) => {}
            Err(e) => return Err(socket_error("receive subscriptions on", "xpub")(e)),
        }
    }
    Ok(())
}
