//! The receiving thread: SUB sockets drained continuously into the router, which
//! hands each drain's messages to the consumers as one batch per consumer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::BusError;
use crate::events;
use crate::message::Envelope;
use crate::router::Router;
use crate::stats::{BusStats, Stats};

/// One SUB socket: a name for metrics, and what it connects to or binds.
#[derive(Debug, Clone)]
pub struct SocketPlan {
    /// The `endpoints` key, or `inbound`.
    pub name: String,
    /// Addresses to connect to.
    pub connect: Vec<String>,
    /// Addresses to bind.
    pub bind: Vec<String>,
}

/// Socket options shared by every SUB socket.
#[derive(Debug, Clone)]
pub struct SubscriberOptions {
    /// ZeroMQ subscription prefixes.
    pub subscriptions: Vec<String>,
    /// `ZMQ_RCVHWM`; 0 is unlimited.
    pub rcvhwm: i32,
    /// `ZMQ_RECONNECT_IVL` in ms.
    pub reconnect_ivl_ms: i32,
    /// `ZMQ_RECONNECT_IVL_MAX` in ms.
    pub reconnect_ivl_max_ms: i32,
    /// TCP keepalive settings (enabled, count, idle s, interval s).
    pub tcp_keepalive: Option<(i32, i32, i32)>,
    /// Bodies above this size are rejected.
    pub max_message_bytes: usize,
    /// Nice increment for the ingress thread (`[hub] data_threads_nice`).
    pub thread_nice: i32,
}

/// Messages taken from one socket before looking at the next (fairness).
const BATCH: usize = 512;
/// How long an idle thread sleeps in `poll` before checking the stop flag.
const IDLE_POLL_MS: i64 = 100;

struct BoundSocket {
    socket: zmq::Socket,
    stats: Arc<BusStats>,
}

/// The running receive thread.
pub struct Subscriber {
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    bound: Vec<(String, String)>,
}

impl Subscriber {
    /// Creates, configures and connects/binds every socket, then starts the thread.
    /// Errors (a busy port, a bad address) are reported before anything runs.
    pub fn start(
        context: &zmq::Context,
        plans: &[SocketPlan],
        options: &SubscriberOptions,
        router: Router,
        stats: Arc<Stats>,
    ) -> Result<Subscriber, BusError> {
        let mut sockets = Vec::new();
        let mut bound = Vec::new();
        for plan in plans {
            let socket = context
                .socket(zmq::SUB)
                .map_err(|e| BusError::socket("create SUB for", &plan.name, e))?;
            configure(&socket, &plan.name, options)?;
            for addr in &plan.bind {
                socket
                    .bind(addr)
                    .map_err(|e| BusError::socket("bind", addr, e))?;
                let actual = socket
                    .get_last_endpoint()
                    .ok()
                    .and_then(|r| r.ok())
                    .unwrap_or_else(|| addr.clone());
                tracing::info!(bus = %plan.name, address = %actual, "bound inbound socket");
                bound.push((plan.name.clone(), actual));
            }
            for addr in &plan.connect {
                socket
                    .connect(addr)
                    .map_err(|e| BusError::socket("connect", addr, e))?;
                tracing::info!(bus = %plan.name, address = %addr, "subscribed to endpoint");
            }
            sockets.push(BoundSocket {
                socket,
                stats: stats.bus(&plan.name),
            });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        let max = options.max_message_bytes;
        let nice = options.thread_nice;
        let handle = std::thread::Builder::new()
            .name("fedhub-ingress".into())
            .spawn(move || {
                crate::priority::lower_current_thread(nice);
                receive_loop(sockets, router, thread_stop, max)
            })
            .expect("spawning the ingress thread");
        Ok(Subscriber {
            handle: Some(handle),
            stop,
            bound,
        })
    }

    /// `(bus name, actual address)` for every bound socket (ports resolved).
    pub fn bound_endpoints(&self) -> &[(String, String)] {
        &self.bound
    }

    /// Stops receiving and waits for the thread (at most one idle poll).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }

    /// A flag that, once set, makes the thread exit (also used by blocked ingress).
    pub fn stop_flag(&self) -> Arc<AtomicBool> {
        self.stop.clone()
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop();
    }
}

fn configure(socket: &zmq::Socket, name: &str, o: &SubscriberOptions) -> Result<(), BusError> {
    let opt = |r: zmq::Result<()>| r.map_err(|e| BusError::socket("set option on", name, e));
    opt(socket.set_rcvhwm(o.rcvhwm))?;
    opt(socket.set_reconnect_ivl(o.reconnect_ivl_ms))?;
    opt(socket.set_reconnect_ivl_max(o.reconnect_ivl_max_ms))?;
    opt(socket.set_linger(0))?;
    if let Some((cnt, idle, intvl)) = o.tcp_keepalive {
        opt(socket.set_tcp_keepalive(1))?;
        opt(socket.set_tcp_keepalive_cnt(cnt))?;
        opt(socket.set_tcp_keepalive_idle(idle))?;
        opt(socket.set_tcp_keepalive_intvl(intvl))?;
    }
    for prefix in &o.subscriptions {
        opt(socket.set_subscribe(prefix.as_bytes()))?;
    }
    Ok(())
}

/// Receives one whole multipart message without blocking; `Ok(None)` when empty.
fn recv_parts(socket: &zmq::Socket, parts: &mut Vec<zmq::Message>) -> zmq::Result<bool> {
    parts.clear();
    let mut flags = zmq::DONTWAIT;
    loop {
        let mut part = zmq::Message::new();
        match socket.recv(&mut part, flags) {
            Ok(()) => {}
            Err(zmq::Error::EAGAIN) if parts.is_empty() => return Ok(false),
            Err(e) => return Err(e),
        }
        let more = part.get_more();
        parts.push(part);
        if !more {
            return Ok(true);
        }
        // The rest of a multipart message is already here: ZeroMQ delivers it whole.
        flags = 0;
    }
}

fn receive_loop(
    sockets: Vec<BoundSocket>,
    mut router: Router,
    stop: Arc<AtomicBool>,
    max_message_bytes: usize,
) {
    let mut parts: Vec<zmq::Message> = Vec::with_capacity(2);
    while !stop.load(Ordering::Acquire) {
        let mut received = 0usize;
        for bound in &sockets {
            for _ in 0..BATCH {
                match recv_parts(&bound.socket, &mut parts) {
                    Ok(false) => break,
                    Ok(true) => {
                        received += 1;
                        let bytes: usize = parts.iter().map(|p| p.len()).sum();
                        bound.stats.count_message(bytes);
                        // The body frame becomes the envelope's body, without a copy.
                        match Envelope::from_zmq(&mut parts, max_message_bytes) {
                            Ok(envelope) => router.route(Arc::new(envelope), &stop),
                            Err(error) => {
                                let frames: Vec<&[u8]> = parts.iter().map(|p| &p[..]).collect();
                                events::MessageRejected {
                                    bus: &bound.stats,
                                    error: &error,
                                    frames: &frames,
                                }
                                .emit()
                            }
                        }
                    }
                    Err(e) => {
                        tracing::error!(bus = %bound.stats.name(), error = %e, "receive failed");
                        break;
                    }
                }
            }
            // This socket has nothing more for now (or had its turn): hand what
            // arrived to the consumers before looking at the next one.
            router.flush(&stop);
        }
        if received == 0 {
            let mut items: Vec<zmq::PollItem> = sockets
                .iter()
                .map(|s| s.socket.as_poll_item(zmq::POLLIN))
                .collect();
            if let Err(e) = zmq::poll(&mut items, IDLE_POLL_MS) {
                if e != zmq::Error::EINTR {
                    tracing::error!(error = %e, "poll failed");
                    std::thread::sleep(std::time::Duration::from_millis(IDLE_POLL_MS as u64));
                }
            }
        }
    }
    router.flush(&stop);
    tracing::debug!("ingress thread stopped");
}
