//! The command-line tools beside the hub: `fedhub publish` (like fedmsg-logger)
//! and `fedhub tail` (like fedmsg-tail, printing JSON lines).

use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::bus::Publisher;
use crate::message::Envelope;
use crate::stats::Stats;

/// A tool failure, naming what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A socket could not be set up.
    #[error("{action} {address}: {source}")]
    Socket {
        /// What was being done.
        action: &'static str,
        /// The address.
        address: String,
        /// libzmq's error.
        source: zmq::Error,
    },
    /// Bad input given to the tool.
    #[error("{0}")]
    Input(String),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

fn socket_error<'a>(
    action: &'static str,
    address: &'a str,
) -> impl FnOnce(zmq::Error) -> ToolError + 'a {
    move |source| ToolError::Socket {
        action,
        address: address.to_string(),
        source,
    }
}

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
}

/// What `fedhub publish` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PublishSummary {
    /// Messages sent.
    pub sent: u64,
    /// Input lines rejected.
    pub rejected: u64,
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
    let context = zmq::Context::new();
    let waiting_for_subscribers = options.bind && options.wait_subscribers > 0;
    let kind = if waiting_for_subscribers {
        zmq::XPUB
    } else {
        zmq::PUB
    };
    let socket = context
        .socket(kind)
        .map_err(socket_error("create socket for", &options.endpoint))?;
    socket
        .set_sndhwm(0)
        .map_err(socket_error("set option on", &options.endpoint))?;
    socket
        .set_linger(5000)
        .map_err(socket_error("set option on", &options.endpoint))?;
    let wait = Duration::from_secs_f64(options.wait_secs.max(0.0));
    if options.bind {
        socket
            .bind(&options.endpoint)
            .map_err(socket_error("bind", &options.endpoint))?;
        if waiting_for_subscribers {
            wait_for_subscribers(&socket, options.wait_subscribers, wait, &mut err)?;
        }
    } else {
        socket
            .connect(&options.endpoint)
            .map_err(socket_error("connect", &options.endpoint))?;
        // Like fedmsg's post_init_sleep: the connection and the peer's
        // subscription must arrive before the first message, or it is lost.
        std::thread::sleep(wait);
    }
    let builder =
        Publisher::disconnected(&options.topic_prefix, &options.environment, Stats::new());
    let mut summary = PublishSummary::default();
    let mut send = |msg: Value, summary: &mut PublishSummary| -> Result<(), ToolError> {
        let envelope = Value::Object(builder.envelope(&options.topic, msg));
        let body = crate::canonical::to_canonical_string(&envelope);
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
    Ok(summary)
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

/// Options of `fedhub tail`.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Addresses to connect to (or bind with `bind`).
    pub endpoints: Vec<String>,
    /// Bind instead of connecting.
    pub bind: bool,
    /// Topic prefixes to subscribe to (empty = everything).
    pub topics: Vec<String>,
    /// Stop after this many messages.
    pub count: Option<u64>,
    /// Stop after this long without a message.
    pub idle_timeout: Option<Duration>,
}

/// Prints every message received as one canonical JSON envelope per line.
/// Malformed messages are reported on `err` and skipped. Returns how many
/// messages were printed.
pub fn tail(
    options: &TailOptions,
    stop: Arc<AtomicBool>,
    mut out: impl Write,
    mut err: impl Write,
) -> Result<u64, ToolError> {
    let context = zmq::Context::new();
    let socket = context
        .socket(zmq::SUB)
        .map_err(socket_error("create socket for", "tail"))?;
    socket
        .set_rcvhwm(0)
        .map_err(socket_error("set option on", "tail"))?;
    if options.topics.is_empty() {
        socket
            .set_subscribe(b"")
            .map_err(socket_error("subscribe on", "tail"))?;
    }
    for topic in &options.topics {
        socket
            .set_subscribe(topic.replace('*', "").as_bytes())
            .map_err(socket_error("subscribe on", topic))?;
    }
    for endpoint in &options.endpoints {
        if options.bind {
            socket
                .bind(endpoint)
                .map_err(socket_error("bind", endpoint))?;
        } else {
            socket
                .connect(endpoint)
                .map_err(socket_error("connect", endpoint))?;
        }
    }
    socket
        .set_rcvtimeo(100)
        .map_err(socket_error("set option on", "tail"))?;
    let mut printed = 0u64;
    let mut last_message = Instant::now();
    while !stop.load(Ordering::Acquire) {
        if let Some(count) = options.count {
            if printed >= count {
                break;
            }
        }
        let frames = match socket.recv_multipart(0) {
            Ok(frames) => frames,
            Err(zmq::Error::EAGAIN) => {
                if let Some(limit) = options.idle_timeout {
                    if last_message.elapsed() >= limit {
                        break;
                    }
                }
                continue;
            }
            Err(e) => return Err(socket_error("receive on", "tail")(e)),
        };
        last_message = Instant::now();
        let parts: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
        match Envelope::from_frames(&parts, usize::MAX) {
            Ok(envelope) => {
                writeln!(out, "{}", envelope.canonical_body())?;
                out.flush()?;
                printed += 1;
            }
            Err(e) => writeln!(err, "skipped a malformed message: {e}")?,
        }
    }
    Ok(printed)
}
