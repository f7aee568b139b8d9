//! `fedhub tail`: like fedmsg-tail, one canonical JSON envelope per line.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fedhub::Envelope;

use crate::{socket_error, ToolError};

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
        crate::check_endpoint("--endpoint", endpoint)?;
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
            // A signal (Ctrl-C) interrupted the wait: the loop checks `stop`.
            Err(zmq::Error::EINTR) => continue,
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
