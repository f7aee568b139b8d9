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
        let mut envelope = builder.envelope(&options.topic, msg);
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
