//! The benchmark publisher: sends a pre-encoded [`Corpus`] as two-frame fedmsg
//! messages, as fast as possible or at a set rate, from one or more threads.
//!
//! At a set rate every message has a due time (`start + k / rate`, an open-loop
//! schedule: a late message does not delay the next ones' due times). The
//! sender sleeps until `spin` before it (timer slack 1 ns) and then spins,
//! yielding the CPU, until it is due, so neither the sleep's wake-up jitter nor
//! a burst of catch-up sends is part of the pacing; how late each send was is
//! reported (`pace`). With `stamp` each body carries a `sent_ns` field
//! ([`crate::stamp`]) set to the wall clock right before the message is handed
//! to ZeroMQ.
//!
//! With `wait_sub` each socket is an XPUB that starts only after that many
//! subscription messages arrived (a PUB drops everything sent before a
//! subscriber's subscription reaches it). `sndhwm` 0 means unlimited, so the
//! sender never drops: what it reports as sent is what it handed to libzmq.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use serde_json::{json, Value};

use crate::corpus::Corpus;
use crate::stamp::{self, Stamped};
use crate::{now_epoch, round};

/// How to publish.
#[derive(Debug, Clone)]
pub struct PublishOptions {
    /// Messages to send in total (the corpus is cycled if it is smaller).
    pub count: usize,
    /// Addresses to bind (one thread only).
    pub bind: Vec<String>,
    /// Addresses to connect to (every thread's socket connects to all of them).
    pub connect: Vec<String>,
    /// Total messages per second over all threads; 0 sends as fast as possible.
    pub rate: f64,
    /// Subscription messages each socket waits for before sending (0: plain PUB, no wait).
    pub wait_sub: usize,
    /// How long to wait for them.
    pub wait_timeout: Duration,
    /// Sending threads, each with its own socket.
    pub threads: usize,
    /// `ZMQ_SNDHWM`; 0 is unlimited.
    pub sndhwm: i32,
    /// How long closing may wait for queued messages to leave.
    pub linger: Duration,
    /// Stamp each body's `msg` with `sent_ns`, the wall clock at send time.
    pub stamp: bool,
    /// At a set rate: how long before a message's due time the sender stops
    /// sleeping and spins (yielding) until it is due.
    pub spin: Duration,
}

struct ThreadOutcome {
    sent: u64,
    started: Instant,
    ended: Instant,
    subscriptions: usize,
    handshake: Duration,
    /// Per paced send, how late it left after its due time, ns.
    late_ns: Vec<u64>,
}

/// What one sending thread did.
struct Sent {
    sent: u64,
    started: Instant,
    ended: Instant,
    late_ns: Vec<u64>,
}

/// Sleeps until `spin` before `due`, then spins (yielding the CPU) until `due`.
#[inline]
fn wait_until(due: Instant, spin: Duration) {
    loop {
        let now = Instant::now();
        if now >= due {
            return;
        }
        let left = due - now;
        if left > spin {
            std::thread::sleep(left - spin);
        } else {
            std::thread::yield_now();
        }
    }
}

/// Lets this thread's sleeps end on time (the default slack is 50 us).
fn tight_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong, 0, 0, 0);
    }
}

fn open_socket(context: &zmq::Context, o: &PublishOptions) -> anyhow::Result<zmq::Socket> {
    let socket = context.socket(if o.wait_sub > 0 { zmq::XPUB } else { zmq::PUB })?;
    if o.wait_sub > 0 {
        socket.set_xpub_verbose(true)?;
    }
    socket.set_sndhwm(o.sndhwm)?;
    socket.set_linger(o.linger.as_millis() as i32)?;
    for addr in &o.bind {
        socket
            .bind(addr)
            .with_context(|| format!("binding {addr}"))?;
    }
    for addr in &o.connect {
        socket
            .connect(addr)
            .with_context(|| format!("connecting to {addr}"))?;
    }
    Ok(socket)
}

/// Waits for `wanted` subscription messages on an XPUB; returns how many came.
fn wait_for_subscribers(
    socket: &zmq::Socket,
    wanted: usize,
    timeout: Duration,
) -> anyhow::Result<usize> {
    let deadline = Instant::now() + timeout;
    let mut seen = 0;
    while seen < wanted {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || socket.poll(zmq::POLLIN, left.as_millis().max(1) as i64)? == 0 {
            bail!(
                "only {seen} of {wanted} subscriptions arrived within {:.1} s",
                timeout.as_secs_f64()
            );
        }
        let event = socket.recv_bytes(0)?;
        if event.first() == Some(&1) {
            seen += 1;
        }
    }
    Ok(seen)
}

fn send_share(
    socket: &zmq::Socket,
    corpus: &Corpus,
    stamped: Option<&Stamped>,
    o: &PublishOptions,
    thread: usize,
    sent_counter: Option<&AtomicU64>,
) -> anyhow::Result<Sent> {
    let per_thread_rate = if o.rate > 0.0 {
        o.rate / o.threads as f64
    } else {
        0.0
    };
    let mut late_ns = Vec::new();
    if per_thread_rate > 0.0 {
        tight_timer_slack();
        late_ns.reserve(o.count / o.threads + 1);
    }
    let mut scratch: Vec<u8> = Vec::with_capacity(4096);
    let started = Instant::now();
    let mut sent = 0u64;
    let mut k = thread;
    while k < o.count {
        if per_thread_rate > 0.0 {
            let due = started + Duration::from_secs_f64(sent as f64 / per_thread_rate);
            wait_until(due, o.spin);
            late_ns.push(Instant::now().saturating_duration_since(due).as_nanos() as u64);
        }
        match stamped {
            Some(stamped) => {
                let (topic, body, at) = stamped.frames(k);
                scratch.clear();
                scratch.extend_from_slice(body);
                stamp::write_digits(&mut scratch[at..at + stamp::DIGITS], stamp::wall_ns());
                socket.send(topic, zmq::SNDMORE)?;
                socket.send(&scratch[..], 0)?;
            }
            None => {
                let (topic, body) = corpus.frames(k);
                socket.send(topic, zmq::SNDMORE)?;
                socket.send(body, 0)?;
            }
        }
        sent += 1;
        if let Some(counter) = sent_counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        k += o.threads;
    }
    Ok(Sent {
        sent,
        started,
        ended: Instant::now(),
        late_ns,
    })
}

/// How late the paced sends left: percentiles in microseconds.
fn pace_summary(mut late_ns: Vec<u64>) -> Value {
    if late_ns.is_empty() {
        return Value::Null;
    }
    late_ns.sort_unstable();
    let at = |q: f64| {
        let rank = ((q * late_ns.len() as f64).ceil() as usize).clamp(1, late_ns.len());
        round(late_ns[rank - 1] as f64 / 1000.0, 1)
    };
    json!({
        "late_us_p50": at(0.50),
        "late_us_p99": at(0.99),
        "late_us_max": at(1.0),
        "late_over_100us": late_ns.iter().filter(|l| **l > 100_000).count(),
    })
}

/// Publishes `o.count` messages from `corpus` and returns the publisher's own figures
/// as JSON: `sent`, `seconds` (the send loops), `rate`, `flush_s` (closing until
/// libzmq handed everything to the kernel), `delivered_rate`, and the set-up.
/// `sent_counter`, when given, is incremented after every message (for
/// [`crate::backlog`], which needs the sent count at any instant).
pub fn publish(
    corpus: &Corpus,
    o: &PublishOptions,
    sent_counter: Option<&AtomicU64>,
) -> anyhow::Result<Value> {
    if corpus.is_empty() {
        bail!("the corpus is empty");
    }
    if o.threads == 0 {
        bail!("threads must be at least 1");
    }
    if o.threads > 1 && !o.bind.is_empty() {
        bail!("several threads can only connect (each has its own socket)");
    }
    if o.bind.is_empty() && o.connect.is_empty() {
        bail!("give --bind or --connect");
    }
    let stamped = if o.stamp {
        Some(Stamped::from_corpus(corpus, o.count).context("stamping the corpus")?)
    } else {
        None
    };
    let pid = std::process::id();
    let cpu_before = crate::probe::cpu_seconds(pid).unwrap_or(0.0);
    let threads_before = crate::probe::thread_cpu(pid);
    let context = zmq::Context::new();
    let barrier = Barrier::new(o.threads);
    let outcomes: Vec<anyhow::Result<ThreadOutcome>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..o.threads)
            .map(|thread| {
                let context = &context;
                let barrier = &barrier;
                let stamped = stamped.as_ref();
                scope.spawn(move || -> anyhow::Result<ThreadOutcome> {
                    let prepared = open_socket(context, o).and_then(|socket| {
                        let t = Instant::now();
                        let subscriptions = if o.wait_sub > 0 {
                            wait_for_subscribers(&socket, o.wait_sub, o.wait_timeout)?
                        } else {
                            0
                        };
                        Ok((socket, subscriptions, t.elapsed()))
                    });
                    // Every thread reaches the barrier, even after an error.
                    barrier.wait();
                    let (socket, subscriptions, handshake) = prepared?;
                    let done = send_share(&socket, corpus, stamped, o, thread, sent_counter)?;
                    Ok(ThreadOutcome {
                        sent: done.sent,
                        started: done.started,
                        ended: done.ended,
                        subscriptions,
                        handshake,
                        late_ns: done.late_ns,
                    })
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("publisher thread panicked")))
            })
            .collect()
    });
    let outcomes: Vec<ThreadOutcome> = outcomes.into_iter().collect::<anyhow::Result<_>>()?;
    let started = outcomes
        .iter()
        .map(|t| t.started)
        .min()
        .expect("one thread");
    let ended = outcomes.iter().map(|t| t.ended).max().expect("one thread");
    let wall_end = now_epoch();
    let seconds = ended.duration_since(started).as_secs_f64();
    let flush_start = Instant::now();
    drop(context); // zmq_ctx_term: waits (up to linger) until queued messages left
    let flush_s = flush_start.elapsed().as_secs_f64();
    let cpu_s = crate::probe::cpu_seconds(pid).unwrap_or(0.0) - cpu_before;
    let thread_cpu =
        crate::probe::thread_cpu_delta(pid, &threads_before, &crate::probe::thread_cpu(pid));
    let sent: u64 = outcomes.iter().map(|t| t.sent).sum();
    let t_start = wall_end - seconds;
    let subscriptions: usize = outcomes.iter().map(|t| t.subscriptions).sum();
    let handshake = outcomes
        .iter()
        .map(|t| t.handshake.as_secs_f64())
        .fold(0.0, f64::max);
    let pace = pace_summary(outcomes.into_iter().flat_map(|t| t.late_ns).collect());
    Ok(json!({
        "tool": "publisher",
        "sent": sent,
        "seconds": round(seconds, 6),
        "rate": if seconds > 0.0 { round(sent as f64 / seconds, 1) } else { 0.0 },
        "flush_s": round(flush_s, 4),
        "delivered_rate": round(sent as f64 / (seconds + flush_s).max(1e-9), 1),
        "t_start": round(t_start, 6),
        "t_end": round(wall_end, 6),
        "threads": o.threads,
        "target_rate": if o.rate > 0.0 { Value::from(o.rate) } else { Value::Null },
        "sndhwm": o.sndhwm,
        "socket": if o.wait_sub > 0 { "XPUB" } else { "PUB" },
        "bind": o.bind,
        "connect": o.connect,
        "subscriptions_seen": subscriptions,
        "handshake_s": round(handshake, 3),
        "stamped": o.stamp,
        "pace": pace,
        "cpu_s": round(cpu_s, 3),
        "thread_cpu_s": thread_cpu,
        "corpus_messages": corpus.len(),
        "body_bytes_mean": round(corpus.mean_body_bytes(), 1),
    }))
}
