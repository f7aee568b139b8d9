//! Ingress: SUB sockets drained continuously by a receiving thread, which counts
//! and admits each message (see [`router`](crate::router)) and hands it to a
//! decoding thread that validates it and delivers it to the consumers in batches.
//!
//! Receiving does no more than take messages out of ZeroMQ and match their topic
//! frame, so it keeps up with the bus even when decoding cannot: a burst waits in
//! fedhub's counted queues (every consumer's backlog), not uncounted inside
//! libzmq.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::events;
use crate::message::{DecodeError, Envelope, ReceivedFrames};
use crate::router::{Admission, Admitted, Dispatcher, Router};
use crate::security::{RejectReason, Rejection, Validator};
use crate::socket::BusError;
use crate::stats::{BusStats, EndpointStats, SecurityStats, Stats};

/// One SUB socket: a name for metrics, and what it connects to or binds.
#[derive(Debug, Clone)]
pub struct SocketPlan {
    /// The `endpoints` key, or `inbound`.
    pub name: String,
    /// The setting its addresses come from (`[bus] inbound`), for errors.
    pub setting: String,
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
    /// `[bus] outbound`: the address a PUB socket binds to re-publish every
    /// accepted message on (fedmsg-relay's `relay_outbound`).
    pub outbound: Option<String>,
}

/// Messages the outbound socket keeps for a subscriber that falls behind;
/// beyond that such a subscriber misses messages (a PUB socket never blocks
/// the hub).
const OUTBOUND_SNDHWM: i32 = 100_000;

/// The outbound PUB socket: every accepted message, re-published byte for
/// byte as `[topic, body]` (the decoding thread sends, and the receiving
/// thread for the messages it settles itself).
struct Outbound {
    socket: std::sync::Mutex<zmq::Socket>,
}

impl Outbound {
    fn bind(context: &zmq::Context, address: &str) -> Result<(Outbound, String), BusError> {
        let setting = "[bus] outbound";
        let socket = context
            .socket(zmq::PUB)
            .map_err(|e| BusError::setting(setting, "create a PUB socket for", address, e))?;
        socket
            .set_sndhwm(OUTBOUND_SNDHWM)
            .and_then(|()| socket.set_linger(0))
            .map_err(|e| BusError::setting(setting, "set options for", address, e))?;
        socket
            .bind(address)
            .map_err(|e| BusError::setting(setting, "bind", address, e))?;
        let actual = socket
            .get_last_endpoint()
            .ok()
            .and_then(|r| r.ok())
            .unwrap_or_else(|| address.to_string());
        tracing::info!(address = %actual, "re-publishing accepted messages on the outbound socket");
        Ok((
            Outbound {
                socket: std::sync::Mutex::new(socket),
            },
            actual,
        ))
    }

    /// Re-publishes one accepted message. A PUB socket drops rather than
    /// blocks when a subscriber is too far behind, so this never waits.
    fn send(&self, envelope: &Envelope) {
        let socket = self.socket.lock().unwrap_or_else(|p| p.into_inner());
        let sent = socket
            .send(envelope.topic().as_bytes(), zmq::SNDMORE | zmq::DONTWAIT)
            .and_then(|()| socket.send(envelope.body().as_bytes(), zmq::DONTWAIT));
        if let Err(error) = sent {
            tracing::debug!(%error, "outbound send failed");
        }
    }
}

/// Messages taken from one socket before looking at the next (fairness), and the
/// most the receiving thread hands to the decoding thread at once.
const BATCH: usize = 512;
/// How long an idle thread sleeps in `poll` before checking the stop flag.
const IDLE_POLL_MS: i64 = 100;
/// Messages admitted by no consumer (shed, or matching none) that may wait for
/// the decoding thread. Admitted messages are bounded by their consumers'
/// `capacity_messages`; these are not, so beyond this many the receiving thread
/// decodes and counts them itself rather than let them pile up.
const MAX_UNADMITTED_IN_FLIGHT: usize = 8192;

/// How many messages admitted by no consumer wait for the decoding thread.
#[derive(Default)]
struct Unadmitted(AtomicUsize);

impl Unadmitted {
    /// Takes a place for one more, unless [`MAX_UNADMITTED_IN_FLIGHT`] are waiting.
    fn try_enter(&self) -> bool {
        if self.0.load(Ordering::Relaxed) >= MAX_UNADMITTED_IN_FLIGHT {
            return false;
        }
        self.0.fetch_add(1, Ordering::Relaxed);
        true
    }

    /// Frees the place of one that was decoded.
    fn leave(&self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

struct BoundSocket {
    socket: zmq::Socket,
    stats: Arc<BusStats>,
}

/// A message on its way from the receiving thread to the decoding thread.
struct Received {
    frames: ReceivedFrames,
    /// Index of the socket it came from.
    bus: usize,
    admitted: Admitted,
}

/// The running ingress threads.
pub struct Subscriber {
    receiver: Option<JoinHandle<()>>,
    decoder: Option<JoinHandle<()>>,
    monitor: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    bound: Vec<(String, String)>,
    outbound: Option<String>,
}

impl Subscriber {
    /// Creates, configures and connects/binds every socket, then starts the
    /// receiving and decoding threads. Errors (a busy port, a bad address) are
    /// reported before anything runs.
    pub fn start(
        context: &zmq::Context,
        plans: &[SocketPlan],
        options: &SubscriberOptions,
        router: Router,
        stats: Arc<Stats>,
        validator: Option<Arc<Validator>>,
    ) -> Result<Subscriber, BusError> {
        let mut sockets = Vec::new();
        let mut bound = Vec::new();
        let mut monitors = Vec::new();
        for (index, plan) in plans.iter().enumerate() {
            let socket = context
                .socket(zmq::SUB)
                .map_err(|e| BusError::socket("create SUB for", &plan.name, e))?;
            configure(&socket, &plan.name, options)?;
            if !plan.connect.is_empty() {
                // Before connecting, so that the first events are seen.
                monitors.push(EndpointMonitor::attach(
                    context, &socket, index, plan, &stats,
                )?);
            }
            for addr in &plan.bind {
                socket
                    .bind(addr)
                    .map_err(|e| BusError::setting(&plan.setting, "bind", addr, e))?;
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
                    .map_err(|e| BusError::setting(&plan.setting, "connect", addr, e))?;
                tracing::info!(bus = %plan.name, address = %addr, "subscribed to endpoint");
            }
            sockets.push(BoundSocket {
                socket,
                stats: stats.bus(&plan.name),
            });
        }
        let (outbound, outbound_address) = match &options.outbound {
            Some(address) => {
                let (socket, actual) = Outbound::bind(context, address)?;
                (Some(Arc::new(socket)), Some(actual))
            }
            None => (None, None),
        };
        let bus_stats: Vec<Arc<BusStats>> = sockets.iter().map(|s| s.stats.clone()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let monitor = if monitors.is_empty() {
            None
        } else {
            let monitor_stop = stop.clone();
            let monitor_stats = stats.clone();
            Some(
                std::thread::Builder::new()
                    .name("fedhub-bus-monitor".into())
                    .spawn(move || monitor_loop(monitors, &monitor_stats, &monitor_stop))
                    .expect("spawning the bus monitor thread"),
            )
        };
        let nice = options.thread_nice;
        let max = options.max_message_bytes;
        let Router {
            admission,
            dispatcher,
        } = router;
        let (tx, rx) = channel::<Vec<Received>>();
        let unadmitted = Arc::new(Unadmitted::default());
        let decoder_stop = stop.clone();
        let decoder_unadmitted = unadmitted.clone();
        let decoder_outbound = outbound.clone();
        let decoder = std::thread::Builder::new()
            .name("fedhub-decode".into())
            .spawn(move || {
                crate::priority::lower_current_thread(nice);
                let stage = DecodeStage {
                    dispatcher,
                    buses: bus_stats,
                    unadmitted: decoder_unadmitted,
                    max_message_bytes: max,
                    validator,
                    outbound: decoder_outbound,
                };
                decode_loop(rx, stage, decoder_stop)
            })
            .expect("spawning the decoding thread");
        let receiver_stop = stop.clone();
        let validating = stats.security().enabled();
        let security = stats.security().clone();
        let receiver = std::thread::Builder::new()
            .name("fedhub-ingress".into())
            .spawn(move || {
                crate::priority::lower_current_thread(nice);
                let stage = ReceiveStage {
                    admission,
                    decoder: tx,
                    unadmitted,
                    max_message_bytes: max,
                    untrusted: validating.then_some(security),
                    outbound,
                };
                receive_loop(sockets, stage, receiver_stop)
            })
            .expect("spawning the ingress thread");
        Ok(Subscriber {
            receiver: Some(receiver),
            decoder: Some(decoder),
            monitor,
            stop,
            bound,
            outbound: outbound_address,
        })
    }

    /// The outbound socket's actual address (port resolved), when `[bus] outbound` is set.
    pub fn outbound_endpoint(&self) -> Option<&str> {
        self.outbound.as_deref()
    }

    /// `(bus name, actual address)` for every bound socket (ports resolved).
    pub fn bound_endpoints(&self) -> &[(String, String)] {
        &self.bound
    }

    /// Stops receiving and waits for both threads (at most one idle poll); what
    /// was received is decoded and handed to the consumers first.
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for handle in [
            self.receiver.take(),
            self.decoder.take(),
            self.monitor.take(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = handle.join();
        }
    }
}

impl Drop for Subscriber {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The events of one SUB socket's connections, read from ZeroMQ's socket
/// monitor on a thread of their own (never the receiving thread's work).
struct EndpointMonitor {
    /// The PAIR socket the monitor sends its events to.
    events: zmq::Socket,
    bus: String,
    endpoints: Vec<Arc<EndpointStats>>,
}

impl EndpointMonitor {
    /// Starts the monitor of `socket` (socket `index` of the plans) and
    /// connects to it; every endpoint the plan connects to starts `connecting`.
    fn attach(
        context: &zmq::Context,
        socket: &zmq::Socket,
        index: usize,
        plan: &SocketPlan,
        stats: &Stats,
    ) -> Result<EndpointMonitor, BusError> {
        let address = format!("inproc://fedhub-bus-monitor-{index}");
        let wanted = zmq::SocketEvent::CONNECTED as i32
            | zmq::SocketEvent::CONNECT_RETRIED as i32
            | zmq::SocketEvent::DISCONNECTED as i32;
        socket
            .monitor(&address, wanted)
            .map_err(|e| BusError::socket("monitor", &plan.name, e))?;
        let events = context
            .socket(zmq::PAIR)
            .map_err(|e| BusError::socket("create monitor for", &plan.name, e))?;
        events
            .set_linger(0)
            .and_then(|()| events.connect(&address))
            .map_err(|e| BusError::socket("connect monitor of", &plan.name, e))?;
        let endpoints = plan
            .connect
            .iter()
            .map(|addr| stats.endpoint(&plan.name, addr))
            .collect();
        Ok(EndpointMonitor {
            events,
            bus: plan.name.clone(),
            endpoints,
        })
    }

    /// Reads every event waiting, without blocking.
    fn drain(&mut self, stats: &Stats) {
        while let Ok(frames) = self.events.recv_multipart(zmq::DONTWAIT) {
            let [event, address] = frames.as_slice() else {
                continue;
            };
            let Some(id) = event.get(..2).map(|b| u16::from_ne_bytes([b[0], b[1]])) else {
                continue;
            };
            let change = if id == zmq::SocketEvent::CONNECTED as u16 {
                events::EndpointChange::Connected
            } else if id == zmq::SocketEvent::DISCONNECTED as u16 {
                events::EndpointChange::Disconnected
            } else if id == zmq::SocketEvent::CONNECT_RETRIED as u16 {
                events::EndpointChange::Retried
            } else {
                continue;
            };
            let address = String::from_utf8_lossy(address);
            let endpoint = match self.endpoints.iter().find(|e| e.address() == address) {
                Some(endpoint) => endpoint.clone(),
                None => {
                    let endpoint = stats.endpoint(&self.bus, &address);
                    self.endpoints.push(endpoint.clone());
                    endpoint
                }
            };
            events::EndpointEvent {
                endpoint: &endpoint,
                change,
            }
            .emit();
        }
    }
}

/// The bus monitor thread: waits for connection events of every connecting
/// socket and records them, until the hub stops.
fn monitor_loop(mut monitors: Vec<EndpointMonitor>, stats: &Stats, stop: &AtomicBool) {
    while !stop.load(Ordering::Acquire) {
        let mut items: Vec<zmq::PollItem> = monitors
            .iter()
            .map(|m| m.events.as_poll_item(zmq::POLLIN))
            .collect();
        match zmq::poll(&mut items, IDLE_POLL_MS) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(zmq::Error::EINTR) => continue,
            Err(e) => {
                tracing::error!(error = %e, "polling the bus monitor failed");
                std::thread::sleep(std::time::Duration::from_millis(IDLE_POLL_MS as u64));
                continue;
            }
        }
        let ready: Vec<bool> = items.iter().map(|i| i.is_readable()).collect();
        drop(items);
        for (monitor, ready) in monitors.iter_mut().zip(ready) {
            if ready {
                monitor.drain(stats);
            }
        }
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

/// Receives one whole multipart message without blocking, with its size in
/// bytes (all frames); `Ok(None)` when the socket has nothing. Frames after the
/// second are counted and dropped.
fn recv_message(socket: &zmq::Socket) -> zmq::Result<Option<(ReceivedFrames, usize)>> {
    let mut first = zmq::Message::new();
    match socket.recv(&mut first, zmq::DONTWAIT) {
        Ok(()) => {}
        Err(zmq::Error::EAGAIN) => return Ok(None),
        Err(e) => return Err(e),
    }
    let mut frames = ReceivedFrames {
        first,
        second: None,
        extra: 0,
    };
    let mut bytes = frames.first.len();
    // The rest of a multipart message is already here: ZeroMQ delivers it whole.
    let mut more = frames.first.get_more();
    while more {
        let mut part = zmq::Message::new();
        // A signal must not split a message: the rest of it is already here,
        // and giving up would leave its frames to be read as another message.
        loop {
            match socket.recv(&mut part, 0) {
                Err(zmq::Error::EINTR) => continue,
                other => break other,
            }
        }?;
        more = part.get_more();
        bytes += part.len();
        if frames.second.is_none() {
            frames.second = Some(part);
        } else {
            frames.extra += 1;
        }
    }
    Ok(Some((frames, bytes)))
}

/// What the receiving thread works with besides its sockets.
struct ReceiveStage {
    admission: Admission,
    decoder: Sender<Vec<Received>>,
    unadmitted: Arc<Unadmitted>,
    max_message_bytes: usize,
    /// Validation's counters, when it is on (topic mismatches count there).
    untrusted: Option<Arc<SecurityStats>>,
    /// `[bus] outbound`, for the messages this thread settles itself.
    outbound: Option<Arc<Outbound>>,
}

/// The receiving thread: takes every message out of ZeroMQ as soon as it
/// arrives, counts it, admits it to the matching consumers (counting it in their
/// backlogs) and hands it to the decoding thread, a batch per drain of a socket.
fn receive_loop(sockets: Vec<BoundSocket>, stage: ReceiveStage, stop: Arc<AtomicBool>) {
    let mut batch: Vec<Received> = Vec::with_capacity(BATCH);
    let hand_on = |batch: &mut Vec<Received>| {
        if !batch.is_empty() {
            // The decoding thread outlives this one; a failed send means it is gone.
            let _ = stage
                .decoder
                .send(std::mem::replace(batch, Vec::with_capacity(BATCH)));
        }
    };
    while !stop.load(Ordering::Acquire) {
        let mut received = 0usize;
        for (bus, bound) in sockets.iter().enumerate() {
            for _ in 0..BATCH {
                match recv_message(&bound.socket) {
                    Ok(None) => break,
                    Ok(Some((mut frames, bytes))) => {
                        received += 1;
                        bound.stats.count_message(bytes);
                        let admitted = stage
                            .admission
                            .admit(frames.topic(), &stop, || hand_on(&mut batch));
                        if admitted.routes.is_empty() && !stage.unadmitted.try_enter() {
                            // Too many unadmitted ones wait already: settle this one here.
                            match Envelope::from_received(&mut frames, stage.max_message_bytes) {
                                Ok(envelope) => {
                                    // Unadmitted: no consumer subscribes, so not validated.
                                    if let Some(outbound) = &stage.outbound {
                                        outbound.send(&envelope);
                                    }
                                    stage.admission.settle_unadmitted(&envelope, &admitted)
                                }
                                Err(error) => reject(
                                    &bound.stats,
                                    stage.untrusted.as_deref(),
                                    &error,
                                    &frames,
                                ),
                            }
                            continue;
                        }
                        batch.push(Received {
                            frames,
                            bus,
                            admitted,
                        });
                    }
                    Err(e) => {
                        tracing::error!(bus = %bound.stats.name(), error = %e, "receive failed");
                        break;
                    }
                }
            }
            // This socket has nothing more for now (or had its turn).
            hand_on(&mut batch);
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
    hand_on(&mut batch);
    tracing::debug!("ingress thread stopped");
}

/// Counts and logs a message that failed to decode. With validation on, a
/// topic frame that differs from the body's topic is validation's first
/// rejection (`topic_mismatch`), as in fedmsg's `FedmsgConsumer.validate`.
fn reject(
    bus: &BusStats,
    untrusted: Option<&SecurityStats>,
    error: &DecodeError,
    frames: &ReceivedFrames,
) {
    if let (Some(stats), DecodeError::TopicMismatch { frame, body }) = (untrusted, error) {
        let rejection = Rejection {
            reason: RejectReason::TopicMismatch,
            signer: None,
            detail: format!("topic frame differs from the body's topic {body:?}").into(),
        };
        events::MessageNotTrusted {
            stats,
            rejection: &rejection,
            topic: frame,
        }
        .emit();
        return;
    }
    events::MessageRejected {
        bus,
        error,
        frames: &frames.frames(),
    }
    .emit()
}

/// What the decoding thread works with.
struct DecodeStage {
    dispatcher: Dispatcher,
    buses: Vec<Arc<BusStats>>,
    unadmitted: Arc<Unadmitted>,
    max_message_bytes: usize,
    /// Signature validation, when `[security] validate_signatures` is on.
    validator: Option<Arc<Validator>>,
    /// `[bus] outbound`: every accepted message is re-published there.
    outbound: Option<Arc<Outbound>>,
}

/// The decoding thread: validates each message, rejects (and uncounts) the
/// malformed, and takes the rest to their consumers, handing the batches over
/// whenever it has nothing more to decode for the moment. It ends when the
/// receiving thread has ended and everything it sent is delivered.
fn decode_loop(batches: Receiver<Vec<Received>>, mut stage: DecodeStage, stop: Arc<AtomicBool>) {
    let workers = stage
        .validator
        .as_ref()
        .map(|v| validation_workers(v.config().validation_threads))
        .unwrap_or(1);
    // Started here, so that the helpers share this thread's priority.
    let pool = match &stage.validator {
        Some(validator) if workers > 1 => Some(ValidationPool::start(validator, workers - 1)),
        _ => None,
    };
    while let Ok(batch) = batches.recv() {
        let mut next = Some(batch);
        while let Some(mut batch) = next {
            if workers > 1 {
                // What is already waiting is validated together: more to
                // share between the threads, in the same order.
                while batch.len() < BATCH {
                    match batches.try_recv() {
                        Ok(more) => batch.extend(more),
                        Err(_) => break,
                    }
                }
            }
            decode_batch(batch, &mut stage, pool.as_ref(), &stop);
            next = batches.try_recv().ok();
        }
        stage.dispatcher.flush(&stop);
    }
    stage.dispatcher.flush(&stop);
    tracing::debug!("decoding thread stopped");
}

/// Threads that check signatures: `[security] validation_threads`, or with
/// 0 as many as the machine has cores (the decoding thread is one of them).
fn validation_workers(configured: usize) -> usize {
    match configured {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        n => n,
    }
}

/// A batch smaller than this is validated on the decoding thread alone: a
/// quiet bus does not pay for handing work to other threads.
const PARALLEL_VALIDATION_MIN: usize = 16;

/// Decodes a batch, validates the messages that need it (in parallel on
/// `pool` when there is one and the batch is large enough), then delivers or
/// rejects each one in arrival order.
fn decode_batch(
    batch: Vec<Received>,
    stage: &mut DecodeStage,
    pool: Option<&ValidationPool>,
    stop: &AtomicBool,
) {
    let mut decoded = Vec::with_capacity(batch.len());
    for mut message in batch {
        if message.admitted.routes.is_empty() {
            stage.unadmitted.leave();
        }
        // The body frame becomes the envelope's body, without a copy.
        let envelope =
            Envelope::from_received(&mut message.frames, stage.max_message_bytes).map(Arc::new);
        decoded.push((message, envelope));
    }
    let verdicts = match &stage.validator {
        Some(validator) => {
            let wanted: Vec<Arc<Envelope>> = decoded
                .iter()
                .filter(|(m, _)| m.admitted.matched)
                .filter_map(|(_, e)| e.as_ref().ok().cloned())
                .collect();
            validate_all(validator, wanted, pool)
        }
        None => Vec::new(),
    };
    let mut verdicts = verdicts.into_iter();
    for (message, envelope) in decoded {
        match envelope {
            Ok(envelope) => {
                if let Some(validator) = &stage.validator {
                    if message.admitted.matched {
                        let verdict = verdicts.next().unwrap_or(Ok(()));
                        if !trusted(validator, &envelope, verdict) {
                            stage.dispatcher.discard(&message.admitted);
                            continue;
                        }
                    }
                }
                if let Some(outbound) = &stage.outbound {
                    outbound.send(&envelope);
                }
                stage.dispatcher.deliver(envelope, &message.admitted, stop)
            }
            Err(error) => {
                stage.dispatcher.discard(&message.admitted);
                let untrusted = stage.validator.as_ref().map(|v| &**v.stats());
                reject(
                    &stage.buses[message.bus],
                    untrusted,
                    &error,
                    &message.frames,
                );
            }
        }
    }
}

/// Messages a thread claims at a time from a batch being validated.
const VALIDATION_CLAIM: usize = 4;

/// A batch being validated by the decoding thread and the pool's helpers
/// together: each claims the next few messages until none is left, so a
/// helper that is slow to be scheduled (the machine's cores are busy) leaves
/// its share to the decoding thread instead of making it wait.
struct SharedBatch {
    envelopes: Vec<Arc<Envelope>>,
    /// The first message no thread has claimed yet.
    next: AtomicUsize,
    verdicts: Vec<std::sync::OnceLock<Result<(), Rejection>>>,
    /// Messages whose validation ended (with a verdict, or a panic).
    done: AtomicUsize,
    /// Wakes the decoding thread when the last claimed message is done.
    finished: (std::sync::Mutex<()>, std::sync::Condvar),
}

impl SharedBatch {
    /// Validates claimed messages until none is left. A panic in `validate`
    /// leaves the message without a verdict (the decoding thread validates
    /// it again, and panics the same way).
    fn work(&self, validator: &Validator) {
        let total = self.envelopes.len();
        loop {
            let start = self.next.fetch_add(VALIDATION_CLAIM, Ordering::Relaxed);
            if start >= total {
                return;
            }
            let end = (start + VALIDATION_CLAIM).min(total);
            for k in start..end {
                let envelope = &self.envelopes[k];
                let verdict = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                    validator.validate(envelope)
                }));
                if let Ok(verdict) = verdict {
                    let _ = self.verdicts[k].set(verdict);
                }
            }
            if self.done.fetch_add(end - start, Ordering::AcqRel) + (end - start) == total {
                let _guard = self.finished.0.lock().unwrap_or_else(|p| p.into_inner());
                self.finished.1.notify_all();
            }
        }
    }

    /// Waits until every claimed message is done.
    fn wait(&self) {
        let total = self.envelopes.len();
        let mut guard = self.finished.0.lock().unwrap_or_else(|p| p.into_inner());
        while self.done.load(Ordering::Acquire) < total {
            guard = self
                .finished
                .1
                .wait_timeout(guard, std::time::Duration::from_millis(10))
                .unwrap_or_else(|p| p.into_inner())
                .0;
        }
    }
}

/// Threads that check signatures beside the decoding thread, started once
/// (when `[security] validation_threads` asks for more than one) and offered
/// every large enough batch.
struct ValidationPool {
    helpers: Vec<Helper>,
}

/// One thread of a [`ValidationPool`].
struct Helper {
    batches: Option<Sender<Arc<SharedBatch>>>,
    thread: Option<JoinHandle<()>>,
}

impl ValidationPool {
    /// Starts `helpers` threads (fewer if the system refuses some: the
    /// decoding thread validates what they would have).
    fn start(validator: &Arc<Validator>, helpers: usize) -> ValidationPool {
        let helpers = (0..helpers)
            .filter_map(|_| {
                let (batches, offered) = channel::<Arc<SharedBatch>>();
                let validator = validator.clone();
                let thread = std::thread::Builder::new()
                    .name("fedhub-validate".into())
                    .spawn(move || {
                        while let Ok(batch) = offered.recv() {
                            batch.work(&validator);
                        }
                    })
                    .map_err(|error| {
                        tracing::warn!(%error, "cannot start a validation thread; validating on the decoding thread")
                    })
                    .ok()?;
                Some(Helper {
                    batches: Some(batches),
                    thread: Some(thread),
                })
            })
            .collect();
        ValidationPool { helpers }
    }
}

impl Drop for ValidationPool {
    fn drop(&mut self) {
        for helper in &mut self.helpers {
            // Closing its queue ends the helper's loop.
            helper.batches.take();
        }
        for helper in &mut self.helpers {
            if let Some(thread) = helper.thread.take() {
                let _ = thread.join();
            }
        }
    }
}

/// Validates `envelopes`, in their order; shared between the decoding
/// thread and the `pool`'s helpers when there is a pool and enough of them.
fn validate_all(
    validator: &Validator,
    envelopes: Vec<Arc<Envelope>>,
    pool: Option<&ValidationPool>,
) -> Vec<Result<(), Rejection>> {
    let pool = match pool {
        Some(pool) if !pool.helpers.is_empty() && envelopes.len() >= PARALLEL_VALIDATION_MIN => {
            pool
        }
        _ => return envelopes.iter().map(|e| validator.validate(e)).collect(),
    };
    let batch = Arc::new(SharedBatch {
        verdicts: (0..envelopes.len()).map(|_| Default::default()).collect(),
        envelopes,
        next: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        finished: Default::default(),
    });
    for helper in &pool.helpers {
        if let Some(batches) = &helper.batches {
            // A helper that is gone (it panicked) leaves its share here.
            let _ = batches.send(batch.clone());
        }
    }
    batch.work(validator);
    batch.wait();
    batch
        .verdicts
        .iter()
        .zip(&batch.envelopes)
        .map(|(verdict, envelope)| match verdict.get() {
            Some(verdict) => verdict.clone(),
            // Its validation panicked on a helper: again here.
            None => validator.validate(envelope),
        })
        .collect()
}

/// Counts a validation verdict and logs a rejection; whether to deliver.
/// Only messages some consumer's topics matched are validated (messages no
/// consumer wants are counted as unrouted, unvalidated, as fedmsg validates
/// per consumer).
fn trusted(validator: &Validator, envelope: &Envelope, verdict: Result<(), Rejection>) -> bool {
    match verdict {
        Ok(()) => {
            validator.stats().count_validated();
            true
        }
        Err(rejection) => {
            events::MessageNotTrusted {
                stats: validator.stats(),
                rejection: &rejection,
                topic: envelope.topic(),
            }
            .emit();
            false
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unadmitted_messages_in_flight_are_bounded() {
        let waiting = Unadmitted::default();
        for _ in 0..MAX_UNADMITTED_IN_FLIGHT {
            assert!(waiting.try_enter());
        }
        assert!(
            !waiting.try_enter(),
            "the receiving thread settles the next one itself"
        );
        waiting.leave();
        assert!(waiting.try_enter());
    }
}
