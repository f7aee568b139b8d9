//! Send-time stamps for the end-to-end latency scenario.
//!
//! Each body of a [`Corpus`] gets a `sent_ns` field inside its `msg` object,
//! once, before the clock starts (`"msg":{"sent_ns":1000000000000000000,...}`).
//! The publisher then overwrites those 19 digits with the wall-clock time in
//! nanoseconds since the Unix epoch right before it hands the message to
//! ZeroMQ, so the consumer can compute `now - sent_ns` at the start of
//! `consume`. The body stays a fedmsg envelope (the payload is free-form), and
//! the field keeps its width, so stamping is a copy and 19 digit writes.
//!
//! Wall clock (`CLOCK_REALTIME`) on both sides: publisher and hub run on the
//! same machine, so their clocks are the same clock.

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context as _};
use serde_json::Value;

use crate::corpus::Corpus;

/// The payload field that carries the send time.
pub const FIELD: &str = "sent_ns";

/// Digits of a stamp: nanoseconds since the epoch have 19 digits from 2001 to 2286.
pub const DIGITS: usize = 19;

/// The value written in place when the corpus is stamped, before any send.
const PLACEHOLDER: u64 = 1_000_000_000_000_000_000;

/// Wall-clock nanoseconds since the Unix epoch.
#[inline]
pub fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// `t` as nanoseconds since the Unix epoch (0 before it).
pub fn epoch_ns(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Writes `ns` as exactly [`DIGITS`] decimal digits into `out`.
///
/// # Panics
/// When `out` is not [`DIGITS`] bytes long.
#[inline]
pub fn write_digits(out: &mut [u8], mut ns: u64) {
    assert_eq!(out.len(), DIGITS, "a stamp is {DIGITS} digits");
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (ns % 10) as u8;
        ns /= 10;
    }
}

/// The `sent_ns` of a body, found by a byte search (no JSON parse, so reading it
/// costs the consumer well under a microsecond).
#[inline]
pub fn sent_ns(body: &str) -> Option<u64> {
    let key = "\"sent_ns\":";
    let at = body.find(key)? + key.len();
    let digits = body[at..].trim_start();
    let end = digits
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// A corpus whose bodies carry a `sent_ns` placeholder, with where its digits are.
pub struct Stamped {
    topics: Vec<Vec<u8>>,
    bodies: Vec<Vec<u8>>,
    digits_at: Vec<usize>,
}

impl Stamped {
    /// Copies the first `count` messages of `corpus` (all when it has fewer),
    /// each with `"sent_ns":<placeholder>` as the first field of its `msg`.
    /// Fails when a body has no `msg` object.
    pub fn from_corpus(corpus: &Corpus, count: usize) -> anyhow::Result<Stamped> {
        let n = count.min(corpus.len());
        let mut stamped = Stamped {
            topics: Vec::with_capacity(n),
            bodies: Vec::with_capacity(n),
            digits_at: Vec::with_capacity(n),
        };
        for k in 0..n {
            let (topic, body) = corpus.frames(k);
            let (body, at) = insert_placeholder(body).with_context(|| format!("message {k}"))?;
            stamped.topics.push(topic.to_vec());
            stamped.bodies.push(body);
            stamped.digits_at.push(at);
        }
        Ok(stamped)
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.bodies.len()
    }

    /// Whether there is no message.
    pub fn is_empty(&self) -> bool {
        self.bodies.is_empty()
    }

    /// Message `k` (modulo the size): topic, body with the placeholder, and the
    /// offset of the stamp's digits in the body.
    #[inline]
    pub fn frames(&self, k: usize) -> (&[u8], &[u8], usize) {
        let k = k % self.bodies.len();
        (&self.topics[k], &self.bodies[k], self.digits_at[k])
    }
}

/// Inserts the placeholder field at the start of the top-level `msg` object;
/// returns the new body and the offset of the digits. The result is checked by
/// parsing it.
fn insert_placeholder(body: &[u8]) -> anyhow::Result<(Vec<u8>, usize)> {
    let text = std::str::from_utf8(body).context("body is not UTF-8")?;
    // Canonical fedmsg bodies sort their keys, and `i` (a number) is the only key
    // before `msg` in an unsigned one, so the first `"msg":{` is the payload's.
    let open = text
        .find("\"msg\":{")
        .map(|at| at + "\"msg\":{".len())
        .context("no \"msg\" object in the body")?;
    let empty = text[open..].trim_start().starts_with('}');
    let field = format!("\"{FIELD}\":{PLACEHOLDER}{}", if empty { "" } else { "," });
    let mut out = Vec::with_capacity(body.len() + field.len());
    out.extend_from_slice(&body[..open]);
    out.extend_from_slice(field.as_bytes());
    out.extend_from_slice(&body[open..]);
    let at = open + FIELD.len() + 3;
    let parsed: Value = serde_json::from_slice(&out).context("stamped body is not JSON")?;
    if parsed["msg"][FIELD].as_u64() != Some(PLACEHOLDER)
        || out[at..at + DIGITS] != *b"1000000000000000000"
    {
        bail!("the stamp did not land in the top-level msg object");
    }
    Ok((out, at))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_written_in_place_and_read_back() {
        let corpus = Corpus::generate(50, 3);
        let stamped = Stamped::from_corpus(&corpus, 1000).unwrap();
        assert_eq!(stamped.len(), 50);
        let now = wall_ns();
        for k in 0..50 {
            let (topic, body, at) = stamped.frames(k);
            let mut body = body.to_vec();
            write_digits(&mut body[at..at + DIGITS], now + k as u64);
            let text = std::str::from_utf8(&body).unwrap();
            assert_eq!(sent_ns(text), Some(now + k as u64));
            let env = fedhub::Envelope::decode(topic, &body, 1 << 20).unwrap();
            assert_eq!(env.i(), Some(k as i64 + 1));
            assert_eq!(env.msg().unwrap()[FIELD].as_u64(), Some(now + k as u64));
        }
    }

    #[test]
    fn an_empty_payload_gets_the_field_alone() {
        let (body, at) = insert_placeholder(br#"{"i":1,"msg":{},"topic":"a.b"}"#).unwrap();
        assert_eq!(
            std::str::from_utf8(&body).unwrap(),
            r#"{"i":1,"msg":{"sent_ns":1000000000000000000},"topic":"a.b"}"#
        );
        assert_eq!(&body[at..at + DIGITS], b"1000000000000000000");
        assert!(insert_placeholder(br#"{"i":1,"msg":"text"}"#).is_err());
    }
}
