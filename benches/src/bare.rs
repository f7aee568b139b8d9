//! The physical limit: a bare SUB on the same kind of socket fedhub uses
//! (RCVHWM unlimited), receiving into a reused message, that only counts
//! messages, or that also parses each body.

use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde_json::{json, Value};

use crate::{now_epoch, probe, round};

/// What the SUB does with each message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Count messages (two frames each), nothing else.
    Count,
    /// Also parse each body into a `serde_json::Value`.
    Parse,
    /// Also decode each message as fedhub does (`fedhub::Envelope::from_frames`).
    Envelope,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Count => "count",
            Mode::Parse => "parse",
            Mode::Envelope => "envelope",
        }
    }
}

/// Where to listen and when to stop.
#[derive(Debug, Clone)]
pub struct BareOptions {
    /// Addresses to bind.
    pub bind: Vec<String>,
    /// Addresses to connect to.
    pub connect: Vec<String>,
    /// Stop after this many messages.
    pub count: u64,
    /// What to do per message.
    pub mode: Mode,
    /// Stop when no message came for this long (after the first one).
    pub idle_timeout: Duration,
    /// Stop when nothing came at all for this long.
    pub max_wait: Duration,
    /// `ZMQ_RCVHWM`; 0 is unlimited.
    pub rcvhwm: i32,
}

/// Receives until `count` messages arrived (or a timeout) and returns the figures
/// as JSON: `received`, `rate` (first to last message), `errors`, CPU used.
pub fn receive(o: &BareOptions) -> anyhow::Result<Value> {
    let context = zmq::Context::new();
    let socket = context.socket(zmq::SUB)?;
    socket.set_rcvhwm(o.rcvhwm)?;
    socket.set_linger(0)?;
    socket.set_rcvtimeo(100)?;
    socket.set_subscribe(b"")?;
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
    let pid = std::process::id();
    let started = Instant::now();
    let mut parts = [zmq::Message::new(), zmq::Message::new()];
    let mut part = 0usize;
    let mut received = 0u64;
    let mut frames = 0u64;
    let mut bytes = 0u64;
    let mut errors = 0u64;
    let mut first: Option<Instant> = None;
    let mut first_epoch = 0.0;
    let mut last = started;
    let mut cpu_before = (0.0, Vec::new());
    let mut stop_reason = "count";
    loop {
        let slot = part.min(1);
        match socket.recv(&mut parts[slot], 0) {
            Ok(()) => {
                frames += 1;
                bytes += parts[slot].len() as u64;
                if parts[slot].get_more() {
                    part += 1;
                    continue;
                }
                let message_frames = part + 1;
                part = 0;
                match o.mode {
                    Mode::Count => {}
                    Mode::Parse => {
                        let body: &[u8] = &parts[message_frames.min(2) - 1];
                        match serde_json::from_slice::<Value>(body) {
                            Ok(Value::Object(_)) if message_frames == 2 => {}
                            _ => errors += 1,
                        }
                    }
                    Mode::Envelope => {
                        let decoded = if message_frames == 2 {
                            fedhub::Envelope::from_frames(&[&parts[0], &parts[1]], 4 << 20)
                        } else {
                            fedhub::Envelope::from_frames(&[&parts[0]], 4 << 20)
                        };
                        if decoded.is_err() {
                            errors += 1;
                        }
                    }
                }
                received += 1;
                let now = Instant::now();
                if first.is_none() {
                    first = Some(now);
                    first_epoch = now_epoch();
                    cpu_before = (
                        probe::cpu_seconds(pid).unwrap_or(0.0),
                        probe::thread_cpu(pid),
                    );
                }
                last = now;
                if received >= o.count {
                    break;
                }
            }
            Err(zmq::Error::EAGAIN) => match first {
                Some(_) if last.elapsed() >= o.idle_timeout => {
                    stop_reason = "idle";
                    break;
                }
                None if started.elapsed() >= o.max_wait => {
                    stop_reason = "nothing_received";
                    break;
                }
                _ => {}
            },
            Err(zmq::Error::EINTR) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let cpu_after = probe::cpu_seconds(pid).unwrap_or(0.0);
    let threads_after = probe::thread_cpu(pid);
    let seconds = first
        .map(|f| last.duration_since(f).as_secs_f64())
        .unwrap_or(0.0);
    let cpu_s = cpu_after - cpu_before.0;
    let memory = probe::memory(pid).unwrap_or_default();
    Ok(json!({
        "tool": "bare",
        "mode": o.mode.name(),
        "target": o.count,
        "received": received,
        "frames": frames,
        "bytes": bytes,
        "errors": errors,
        "seconds": round(seconds, 6),
        "rate": if seconds > 0.0 { round((received.saturating_sub(1)) as f64 / seconds, 1) } else { 0.0 },
        "t_first": round(first_epoch, 6),
        "t_last": round(first_epoch + seconds, 6),
        "stop": stop_reason,
        "cpu_s": round(cpu_s, 3),
        "cpu_us_per_msg": if received > 0 { round(cpu_s * 1e6 / received as f64, 2) } else { 0.0 },
        "thread_cpu_s": probe::thread_cpu_delta(pid, &cpu_before.1, &threads_after),
        "rss_peak_kb": memory.hwm_kb,
    }))
}
