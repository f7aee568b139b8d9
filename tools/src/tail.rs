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
    // Connecting: watch the handshakes, to say so when an address is not a
    // publisher (a hub's [bus] inbound is a SUB socket: nothing ever comes).
    let handshakes = if options.bind {
        None
    } else {
        Some(Handshakes::attach(&context, &socket)?)
    };
    let mut warned: Vec<String> = Vec::new();
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
        if let Some(handshakes) = &handshakes {
            for address in handshakes.refused() {
                if !warned.contains(&address) {
                    writeln!(
                        err,
                        "{address} is not a publisher (its socket refused a subscriber): a hub's [bus] inbound is where publishers connect; tail the hub's [bus] outbound, or tail -c with its config"
                    )?;
                    warned.push(address);
                }
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

/// The handshake failures of the tail's connections, from ZeroMQ's socket
/// monitor: a connection closed before its handshake succeeded (libzmq closes
/// it so when the peer's socket type cannot talk to a SUB, such as another SUB).
struct Handshakes {
    events: zmq::Socket,
    /// Addresses connected whose handshake has not succeeded yet.
    pending: std::cell::RefCell<Vec<String>>,
}

impl Handshakes {
    fn attach(context: &zmq::Context, socket: &zmq::Socket) -> Result<Handshakes, ToolError> {
        let address = "inproc://fedhub-tail-monitor";
        let wanted = zmq::SocketEvent::CONNECTED as i32
            | zmq::SocketEvent::HANDSHAKE_SUCCEEDED as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as i32
            | zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as i32
            | zmq::SocketEvent::DISCONNECTED as i32;
        socket
            .monitor(address, wanted)
            .map_err(socket_error("monitor", "tail"))?;
        let events = context
            .socket(zmq::PAIR)
            .map_err(socket_error("monitor", "tail"))?;
        events
            .set_linger(0)
            .and_then(|()| events.connect(address))
            .map_err(socket_error("monitor", "tail"))?;
        Ok(Handshakes {
            events,
            pending: std::cell::RefCell::new(Vec::new()),
        })
    }

    /// The addresses whose handshake failed since the last call.
    fn refused(&self) -> Vec<String> {
        let mut refused = Vec::new();
        let mut pending = self.pending.borrow_mut();
        while let Ok(frames) = self.events.recv_multipart(zmq::DONTWAIT) {
            let [event, address] = frames.as_slice() else {
                continue;
            };
            let Some(id) = event.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])) else {
                continue;
            };
            let address = String::from_utf8_lossy(address).into_owned();
            let was_pending = pending.contains(&address);
            pending.retain(|a| *a != address);
            if id == zmq::SocketEvent::CONNECTED as u16 {
                pending.push(address);
            } else if id == zmq::SocketEvent::HANDSHAKE_FAILED_PROTOCOL as u16
                || id == zmq::SocketEvent::HANDSHAKE_FAILED_NO_DETAIL as u16
                || (id == zmq::SocketEvent::DISCONNECTED as u16 && was_pending)
            {
                refused.push(address);
            }
        }
        refused
    }
}
