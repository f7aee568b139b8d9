//! The benchmark publisher: sends a pre-encoded [`Corpus`] as two-frame fedmsg
//! messages, as fast as possible or at a set rate, from one or more threads.
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
}

struct ThreadOutcome {
    sent: u64,
    started: Instant,
    ended: Instant,
    subscriptions: usize,
    handshake: Duration,
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
    o: &PublishOptions,
    thread: usize,
    sent_counter: Option<&AtomicU64>,
) -> anyhow::Result<(u64, Instant, Instant)> {
    let per_thread_rate = if o.rate > 0.0 {
        o.rate / o.threads as f64
    } else {
        0.0
    };
    let started = Instant::now();
    let mut sent = 0u64;
    let mut k = thread;
    while k < o.count {
        let (topic, body) = corpus.frames(k);
        socket.send(topic, zmq::SNDMORE)?;
        socket.send(body, 0)?;
        sent += 1;
        if let Some(counter) = sent_counter {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        if per_thread_rate > 0.0 {
            let due = started + Duration::from_secs_f64(sent as f64 / per_thread_rate);
            let now = Instant::now();
            if due > now + Duration::from_micros(200) {
                std::thread::sleep(due - now);
            }
        }
        k += o.threads;
    }
    Ok((sent, started, Instant::now()))
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
                    let (sent, started, ended) =
                        send_share(&socket, corpus, o, thread, sent_counter)?;
                    Ok(ThreadOutcome {
                        sent,
                        started,
                        ended,
                        subscriptions,
                        handshake,
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
        "subscriptions_seen": outcomes.iter().map(|t| t.subscriptions).sum::<usize>(),
        "handshake_s": round(outcomes.iter().map(|t| t.handshake.as_secs_f64()).fold(0.0, f64::max), 3),
        "cpu_s": round(cpu_s, 3),
        "thread_cpu_s": thread_cpu,
        "corpus_messages": corpus.len(),
        "body_bytes_mean": round(corpus.mean_body_bytes(), 1),
    }))
}
