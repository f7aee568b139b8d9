//! The fedmsg envelope and its decoding from ZeroMQ frames.
//!
//! On the wire a message is two frames, `[topic, json]`, or one legacy frame
//! `topic\0json`. Decoding validates what every consumer relies on (UTF-8 topic,
//! a JSON object body, a string `topic` equal to the topic frame, a string
//! `msg_id` and a numeric `timestamp` when present, a size limit) and keeps the body
//! as the raw bytes received: the full `serde_json` tree is built once, lazily,
//! the first time a consumer asks for it.

use std::borrow::Cow;
use std::sync::OnceLock;
use std::time::SystemTime;

use serde::Deserialize;
use serde_json::{Map, Value};

/// Why a ZeroMQ message was rejected. Each variant has a stable [`reason`](Self::reason)
/// used as a metric label.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum DecodeError {
    /// Neither `[topic, body]` nor one `topic\0body` frame.
    #[error("expected 2 frames [topic, json] or 1 frame topic\\0json, got {frames} frames")]
    FrameCount {
        /// How many frames arrived.
        frames: usize,
    },
    /// A single frame without the NUL separator.
    #[error("expected one frame shaped topic\\0json, found no NUL separator in {bytes} bytes")]
    MissingSeparator {
        /// Size of the frame.
        bytes: usize,
    },
    /// The body is larger than `[bus] max_message_bytes`.
    #[error("message body is {bytes} bytes, larger than the limit of {limit} bytes")]
    TooLarge {
        /// Size of the body.
        bytes: usize,
        /// The configured limit.
        limit: usize,
    },
    /// The topic frame is not UTF-8.
    #[error("topic frame is not valid UTF-8")]
    TopicNotUtf8,
    /// The topic frame is empty.
    #[error("topic frame is empty")]
    EmptyTopic,
    /// The body is not JSON (or not UTF-8).
    #[error("body is not valid JSON: {0}")]
    NotJson(String),
    /// The body holds `NaN`, `Infinity` or `-Infinity`, which Python's
    /// `json.dumps` writes for such floats but JSON does not allow.
    #[error("body is not valid JSON: it holds NaN or Infinity (Python's json.dumps writes them for such floats; JSON has no such numbers)")]
    NotFinite,
    /// The body is JSON but not an object.
    #[error("body must be a JSON object, found {0}")]
    NotObject(&'static str),
    /// A known envelope field has the wrong type.
    #[error("body field has the wrong type: {0}")]
    WrongType(String),
    /// The body has no `topic`.
    #[error("body has no \"topic\" field")]
    MissingTopic,
    /// The body nests arrays and objects deeper than [`MAX_JSON_DEPTH`].
    #[error("body nests arrays and objects deeper than {limit} levels")]
    TooDeep {
        /// The limit ([`MAX_JSON_DEPTH`]).
        limit: usize,
    },
    /// The body's `topic` differs from the topic frame.
    #[error("topic frame {frame:?} disagrees with body topic {body:?}")]
    TopicMismatch {
        /// Topic from the frame.
        frame: String,
        /// Topic from the body.
        body: String,
    },
}

impl DecodeError {
    /// A short, stable name for metric labels.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::FrameCount { .. } => "frame_count",
            DecodeError::MissingSeparator { .. } => "missing_separator",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::TopicNotUtf8 => "topic_not_utf8",
            DecodeError::EmptyTopic => "empty_topic",
            DecodeError::NotJson(_) => "not_json",
            DecodeError::NotFinite => "not_finite",
            DecodeError::NotObject(_) => "not_object",
            DecodeError::WrongType(_) => "wrong_type",
            DecodeError::MissingTopic => "missing_topic",
            DecodeError::TopicMismatch { .. } => "topic_mismatch",
            DecodeError::TooDeep { .. } => "too_deep",
        }
    }

    /// Every reason, for pre-registering metric series.
    pub const REASONS: [&'static str; 12] = [
        "frame_count",
        "missing_separator",
        "too_large",
        "topic_not_utf8",
        "empty_topic",
        "not_json",
        "not_object",
        "wrong_type",
        "missing_topic",
        "topic_mismatch",
        "too_deep",
        "not_finite",
    ];
}

/// How deeply a body may nest arrays and objects, the envelope object itself
/// being the first level: the one limit of the whole hub. Ingress rejects a
/// deeper body as malformed (`too_deep`), so whatever a consumer receives (or a
/// store keeps) can be parsed into a tree again, inside documents that embed it
/// (serde_json stops at 128 levels), without deep recursion.
pub const MAX_JSON_DEPTH: usize = 64;

/// The fields routing and bookkeeping need, read without building a tree.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    topic: Option<Text<'a>>,
    #[serde(borrow)]
    msg_id: Option<Text<'a>>,
    timestamp: Option<f64>,
    /// fedmsg's per-sender counter: an integer, or the message is malformed.
    i: Option<i64>,
}

/// A JSON string borrowed from the body when it has no escapes, decoded into its
/// own copy only when it has. (serde's own `Option<Cow<str>>` always copies.)
struct Text<'a>(Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Text<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> serde::de::Visitor<'de> for Visitor<'a> {
            type Value = Text<'a>;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E: serde::de::Error>(self, v: &'de str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Borrowed(v)))
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Text<'a>, E> {
                Ok(Text(Cow::Owned(v.to_owned())))
            }
        }
        deserializer.deserialize_str(Visitor(std::marker::PhantomData))
    }
}

/// One ZeroMQ message's frames as the bus received them. fedmsg sends one
/// (`topic\0json`) or two (`[topic, json]`); any further frames are counted and
/// dropped on arrival, since such a message is rejected anyway.
pub struct ReceivedFrames {
    /// The first frame: the topic, or the whole legacy message.
    pub first: zmq::Message,
    /// The second frame: the body.
    pub second: Option<zmq::Message>,
    /// How many frames came after the second.
    pub extra: usize,
}

impl ReceivedFrames {
    /// How many frames the message had.
    pub fn count(&self) -> usize {
        1 + usize::from(self.second.is_some()) + self.extra
    }

    /// The topic as the frames give it, before any validation: the first frame
    /// of a two-frame message, the part before the NUL of a one-frame one.
    /// `None` when neither shape fits (decoding will say why).
    pub fn topic(&self) -> Option<&[u8]> {
        match (&self.second, self.extra) {
            (Some(_), 0) => Some(&self.first[..]),
            (None, _) => {
                let single = &self.first[..];
                single
                    .iter()
                    .position(|b| *b == 0)
                    .map(|nul| &single[..nul])
            }
            _ => None,
        }
    }

    /// The frames kept, for a log line.
    pub fn frames(&self) -> Vec<&[u8]> {
        let mut frames = vec![&self.first[..]];
        frames.extend(self.second.as_deref());
        frames
    }
}

/// Where an envelope's body bytes live.
enum Body {
    /// A copy (envelopes decoded from borrowed frames).
    Owned(Box<str>),
    /// The frame as ZeroMQ received it, kept without a copy; `start` skips the
    /// `topic\0` of a legacy one-frame message. Validated as UTF-8 by decoding.
    Frame { frame: zmq::Message, start: usize },
}

/// A decoded string field: a range of the body when it appears there unescaped
/// (the usual case, no allocation), else its own copy.
#[derive(Debug, Clone)]
enum Span {
    InBody { start: u32, len: u32 },
    Owned(Box<str>),
}

impl Span {
    /// The span of `field` (borrowed from `body`, or decoded from escapes).
    fn of(field: Cow<'_, str>, body: &str) -> Span {
        if let Cow::Borrowed(text) = &field {
            let offset = (text.as_ptr() as usize).wrapping_sub(body.as_ptr() as usize);
            if offset <= body.len() && offset + text.len() <= body.len() {
                if let (Ok(start), Ok(len)) = (u32::try_from(offset), u32::try_from(text.len())) {
                    return Span::InBody { start, len };
                }
            }
        }
        Span::Owned(field.into_owned().into_boxed_str())
    }

    fn resolve<'a>(&'a self, body: &'a str) -> &'a str {
        match self {
            Span::InBody { start, len } => &body[*start as usize..(*start + *len) as usize],
            Span::Owned(text) => text,
        }
    }
}

/// What decoding found valid in a topic frame and a body.
struct Checked {
    topic: Span,
    msg_id: Option<Span>,
    timestamp: Option<f64>,
    i: Option<i64>,
}

/// One fedmsg message: the topic frame, the raw JSON body and the fields decoded
/// from it. Shared between consumers behind an `Arc`.
pub struct Envelope {
    body: Body,
    topic: Span,
    msg_id: Option<Span>,
    timestamp: Option<f64>,
    i: Option<i64>,
    received_at: SystemTime,
    parsed: OnceLock<Map<String, Value>>,
}

impl std::fmt::Debug for Envelope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Envelope")
            .field("topic", &self.topic())
            .field("msg_id", &self.msg_id())
            .field("timestamp", &self.timestamp)
            .field("body", &self.body())
            .finish()
    }
}

impl Envelope {
    /// Decodes a ZeroMQ message given as its frames (copying the body).
    pub fn from_frames(frames: &[&[u8]], max_body_bytes: usize) -> Result<Envelope, DecodeError> {
        match frames {
            [topic, body] => Envelope::decode(topic, body, max_body_bytes),
            [single] => {
                let nul = separator(single)?;
                Envelope::decode(&single[..nul], &single[nul + 1..], max_body_bytes)
            }
            _ => Err(DecodeError::FrameCount {
                frames: frames.len(),
            }),
        }
    }

    /// Decodes a ZeroMQ message as received, keeping its body frame without a
    /// copy: on success the frames are taken out of `frames`; on error they are
    /// left there (for the rejection's log line).
    pub fn from_zmq(
        frames: &mut Vec<zmq::Message>,
        max_body_bytes: usize,
    ) -> Result<Envelope, DecodeError> {
        let count = frames.len();
        if count == 0 || count > 2 {
            return Err(DecodeError::FrameCount { frames: count });
        }
        let mut drain = frames.drain(..);
        let mut received = ReceivedFrames {
            first: drain.next().expect("one frame"),
            second: drain.next(),
            extra: 0,
        };
        drop(drain);
        let decoded = Envelope::from_received(&mut received, max_body_bytes);
        if decoded.is_err() {
            frames.push(received.first);
            frames.extend(received.second);
        }
        decoded
    }

    /// Decodes a message as the bus received it, keeping its body frame without a
    /// copy: on success the body frame is taken out of `frames`; on error the
    /// frames are left as they were (for the rejection's log line).
    pub fn from_received(
        frames: &mut ReceivedFrames,
        max_body_bytes: usize,
    ) -> Result<Envelope, DecodeError> {
        if frames.extra > 0 {
            return Err(DecodeError::FrameCount {
                frames: frames.count(),
            });
        }
        let (checked, start) = match &frames.second {
            Some(body) => (check(&frames.first, body, max_body_bytes)?, 0),
            None => {
                let single = &frames.first;
                let nul = separator(single)?;
                let checked = check(&single[..nul], &single[nul + 1..], max_body_bytes)?;
                (checked, nul + 1)
            }
        };
        let frame = match frames.second.take() {
            Some(body) => body,
            None => std::mem::replace(&mut frames.first, zmq::Message::new()),
        };
        Ok(Envelope::assemble(Body::Frame { frame, start }, checked))
    }

    /// Decodes a topic frame and a body frame (copying the body).
    pub fn decode(
        topic: &[u8],
        body: &[u8],
        max_body_bytes: usize,
    ) -> Result<Envelope, DecodeError> {
        let checked = check(topic, body, max_body_bytes)?;
        // `check` validated the body as UTF-8.
        let text = String::from_utf8_lossy(body).into_owned().into_boxed_str();
        Ok(Envelope::assemble(Body::Owned(text), checked))
    }

    fn assemble(body: Body, checked: Checked) -> Envelope {
        Envelope {
            body,
            topic: checked.topic,
            msg_id: checked.msg_id,
            timestamp: checked.timestamp,
            i: checked.i,
            received_at: SystemTime::now(),
            parsed: OnceLock::new(),
        }
    }

    /// Builds an envelope from a JSON object (for tools, tests and replays).
    pub fn from_value(value: Value) -> Result<Envelope, DecodeError> {
        let topic = match value.get("topic") {
            Some(Value::String(t)) => t.clone(),
            Some(_) => return Err(DecodeError::WrongType("\"topic\" must be a string".into())),
            None => return Err(DecodeError::MissingTopic),
        };
        let body =
            serde_json::to_string(&value).map_err(|e| DecodeError::NotJson(e.to_string()))?;
        Envelope::decode(topic.as_bytes(), body.as_bytes(), usize::MAX)
    }

    /// The topic (frame 0).
    pub fn topic(&self) -> &str {
        self.topic.resolve(self.body())
    }

    /// The body exactly as received.
    pub fn body(&self) -> &str {
        match &self.body {
            Body::Owned(text) => text,
            // SAFETY: decoding checked that these bytes are UTF-8 and the frame
            // is never modified afterwards.
            Body::Frame { frame, start } => unsafe {
                std::str::from_utf8_unchecked(&frame[*start..])
            },
        }
    }

    /// `msg_id`, when the body has one.
    pub fn msg_id(&self) -> Option<&str> {
        self.msg_id.as_ref().map(|span| span.resolve(self.body()))
    }

    /// `timestamp` in epoch seconds, when the body has one.
    pub fn timestamp(&self) -> Option<f64> {
        self.timestamp
    }

    /// When this hub received the message.
    pub fn received_at(&self) -> SystemTime {
        self.received_at
    }

    /// The category (`org.fedoraproject.prod.<category>.…`).
    pub fn category(&self) -> Option<&str> {
        crate::topic::category(self.topic())
    }

    /// The whole body as a JSON object, parsed on first use and then cached.
    pub fn json(&self) -> &Map<String, Value> {
        self.parsed.get_or_init(|| {
            // Already validated as a JSON object by `decode`.
            match serde_json::from_str(self.body()) {
                Ok(Value::Object(map)) => map,
                _ => Map::new(),
            }
        })
    }

    /// Any body field, including ones fedhub does not know.
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.json().get(key)
    }

    /// The payload (`msg`).
    pub fn msg(&self) -> Option<&Value> {
        self.get("msg")
    }

    /// The sender's per-process counter (`i`), checked to be an integer when
    /// the message was decoded.
    pub fn i(&self) -> Option<i64> {
        self.i
    }

    /// The Unix user of the sending process (`username`).
    pub fn username(&self) -> Option<&str> {
        self.get("username").and_then(Value::as_str)
    }

    /// The signing backend (`crypto`): `x509` or `gpg`.
    pub fn crypto(&self) -> Option<&str> {
        self.get("crypto").and_then(Value::as_str)
    }

    /// The base64 signature, when signed.
    pub fn signature(&self) -> Option<&str> {
        self.get("signature").and_then(Value::as_str)
    }

    /// The base64 PEM certificate, when signed with x509.
    pub fn certificate(&self) -> Option<&str> {
        self.get("certificate").and_then(Value::as_str)
    }

    /// Headers added by STOMP or datanommer.
    pub fn headers(&self) -> Option<&Value> {
        self.get("headers")
    }

    /// The body in fedmsg's canonical encoding (what signatures cover).
    pub fn canonical_body(&self) -> String {
        // The body was validated as JSON; serde_json's grammar is stricter than the
        // canonicalizer's, so this cannot fail.
        crate::canonical::canonicalize(self.body().as_bytes())
            .unwrap_or_else(|_| self.body().to_string())
    }
}

/// The position of the NUL between topic and body in a one-frame message.
fn separator(single: &[u8]) -> Result<usize, DecodeError> {
    single
        .iter()
        .position(|b| *b == 0)
        .ok_or(DecodeError::MissingSeparator {
            bytes: single.len(),
        })
}

/// Validates a topic frame and a body (see the module documentation).
fn check(topic: &[u8], body: &[u8], max_body_bytes: usize) -> Result<Checked, DecodeError> {
    if body.len() > max_body_bytes {
        return Err(DecodeError::TooLarge {
            bytes: body.len(),
            limit: max_body_bytes,
        });
    }
    let topic = std::str::from_utf8(topic).map_err(|_| DecodeError::TopicNotUtf8)?;
    if topic.is_empty() {
        return Err(DecodeError::EmptyTopic);
    }
    let body = std::str::from_utf8(body)
        .map_err(|e| DecodeError::NotJson(format!("body is not UTF-8 ({e})")))?;
    let head = parse_head(body)?;
    let body_topic = head.topic.ok_or(DecodeError::MissingTopic)?.0;
    if body_topic != topic {
        return Err(DecodeError::TopicMismatch {
            frame: topic.to_string(),
            body: body_topic.into_owned(),
        });
    }
    if nests_deeper_than(body.as_bytes(), MAX_JSON_DEPTH) {
        return Err(DecodeError::TooDeep {
            limit: MAX_JSON_DEPTH,
        });
    }
    if let Some(offset) = lone_surrogate(body.as_bytes()) {
        return Err(DecodeError::NotJson(format!(
            "a lone UTF-16 surrogate escape at byte {offset} (a character outside the BMP is written as a pair of \\u escapes, high then low)"
        )));
    }
    Ok(Checked {
        topic: Span::of(body_topic, body),
        msg_id: head.msg_id.map(|id| Span::of(id.0, body)),
        timestamp: head.timestamp,
        i: head.i,
    })
}

/// The byte offset of a `\u` escape in `body` (valid JSON) that is half of a
/// UTF-16 surrogate pair without its other half. Python's `json` accepts one,
/// but it is no Unicode text: the body could not be read as JSON when a
/// consumer asks for it (found by fuzzing: such a body decoded, then read as
/// an empty object).
fn lone_surrogate(body: &[u8]) -> Option<usize> {
    let unit = |at: usize| -> Option<u16> {
        let digits = body.get(at..at + 4)?;
        if !digits.iter().all(u8::is_ascii_hexdigit) {
            return None;
        }
        u16::from_str_radix(std::str::from_utf8(digits).ok()?, 16).ok()
    };
    let mut from = 0;
    while let Some(pos) = memchr::memchr(b'\\', &body[from..]) {
        let at = from + pos;
        from = at + 2;
        if body.get(at + 1) != Some(&b'u') {
            continue;
        }
        let Some(first) = unit(at + 2) else { continue };
        from = at + 6;
        if (0xDC00..0xE000).contains(&first) {
            return Some(at);
        }
        if (0xD800..0xDC00).contains(&first) {
            let low = (body.get(at + 6..at + 8) == Some(&b"\\u"[..]))
                .then(|| unit(at + 8))
                .flatten();
            match low {
                Some(low) if (0xDC00..0xE000).contains(&low) => from = at + 12,
                _ => return Some(at),
            }
        }
    }
    None
}

/// Whether `body`, valid JSON, nests arrays and objects deeper than `limit`.
/// A body with no more opening brackets than `limit` (nearly every one) is
/// settled by a vectorized search that stops once it has seen more; only the
/// others are walked, skipping strings.
fn nests_deeper_than(body: &[u8], limit: usize) -> bool {
    if memchr::memchr2_iter(b'[', b'{', body)
        .take(limit + 1)
        .count()
        <= limit
    {
        return false;
    }
    let mut depth = 0usize;
    for (_, b) in outside_strings(body) {
        match b {
            b'[' | b'{' => {
                depth += 1;
                if depth > limit {
                    return true;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    false
}

/// Whether `body` (on the error path only) holds a bare `NaN` or `Infinity`
/// outside strings, as Python's `json.dumps` writes them.
fn has_non_finite_number(body: &[u8]) -> bool {
    outside_strings(body).any(|(at, b)| {
        (b == b'N' && body[at..].starts_with(b"NaN"))
            || (b == b'I' && body[at..].starts_with(b"Infinity"))
    })
}

/// The bytes of JSON text that are not inside a string (quotes excluded), with
/// their positions.
fn outside_strings(body: &[u8]) -> impl Iterator<Item = (usize, u8)> + '_ {
    let mut in_string = false;
    let mut escaped = false;
    body.iter().enumerate().filter_map(move |(at, &b)| {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            None
        } else if b == b'"' {
            in_string = true;
            None
        } else {
            Some((at, b))
        }
    })
}

fn parse_head(body: &str) -> Result<Head<'_>, DecodeError> {
    let first = body.trim_start().as_bytes().first().copied();
    let kind = match first {
        Some(b'{') => None,
        Some(b'[') => Some("an array"),
        Some(b'"') => Some("a string"),
        Some(b't' | b'f') => Some("a boolean"),
        Some(b'n') => Some("null"),
        Some(b'-' | b'0'..=b'9') => Some("a number"),
        None => return Err(DecodeError::NotJson("body is empty".into())),
        Some(_) => None,
    };
    if let Some(kind) = kind {
        // Only call it "not an object" if it is valid JSON at all.
        return match serde_json::from_str::<serde::de::IgnoredAny>(body) {
            Ok(_) => Err(DecodeError::NotObject(kind)),
            Err(e) => Err(DecodeError::NotJson(e.to_string())),
        };
    }
    serde_json::from_str::<Head>(body).map_err(|e| match e.classify() {
        serde_json::error::Category::Data => DecodeError::WrongType(e.to_string()),
        _ if has_non_finite_number(body.as_bytes()) => DecodeError::NotFinite,
        _ => DecodeError::NotJson(e.to_string()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A lone surrogate escape is refused, naming it; a pair, or an escaped
    /// backslash before a `u`, is not one.
    #[test]
    fn lone_surrogate_escapes_are_not_json() {
        let body = |text: &str| format!(r#"{{"topic":"t","msg":{{"s":"{text}"}}}}"#);
        for lone in [
            r"\ud83d",
            r"\ud83dx",
            r"\ude00",
            r"\ud83d\u0041",
            r"a\\\ud800",
        ] {
            let error = Envelope::from_frames(&[b"t", body(lone).as_bytes()], 1 << 20).unwrap_err();
            assert_eq!(error.reason(), "not_json", "{lone}");
            assert!(
                error.to_string().contains("lone UTF-16 surrogate"),
                "{error}"
            );
        }
        for fine in [r"\ud83d\ude00", r"\\ud800", r"\u00e9", "plain"] {
            let envelope = Envelope::from_frames(&[b"t", body(fine).as_bytes()], 1 << 20).unwrap();
            assert!(envelope.msg().is_some(), "{fine}");
        }
    }

    #[test]
    fn zmq_frames_are_kept_without_a_copy_and_escaped_fields_decoded() {
        let plain = zmq::Message::from(BODY.as_bytes());
        let body_ptr = plain.as_ptr();
        let mut frames = vec![zmq::Message::from(TOPIC.as_bytes()), plain];
        let env = Envelope::from_zmq(&mut frames, 1 << 20).unwrap();
        assert!(frames.is_empty(), "the frames were taken");
        assert_eq!(
            env.body().as_ptr(),
            body_ptr,
            "the body is the frame itself"
        );
        assert_eq!(env.topic(), TOPIC);
        assert_eq!(
            env.msg_id(),
            Some("2026-4c7b5887-509a-4625-84f2-b65ca3141324")
        );
        // Unescaped fields are ranges of the body, not copies.
        assert!(matches!(env.topic, Span::InBody { .. }));
        assert!(matches!(env.msg_id, Some(Span::InBody { .. })));

        // One legacy frame, and fields written with JSON escapes.
        let escaped = r#"{"msg_id":"2026-\u0061b","topic":"org.fedoraproject.dev.x\u002ey"}"#;
        let mut frames = vec![zmq::Message::from(
            format!("org.fedoraproject.dev.x.y\0{escaped}").as_bytes(),
        )];
        let env = Envelope::from_zmq(&mut frames, 1 << 20).unwrap();
        assert_eq!(env.topic(), "org.fedoraproject.dev.x.y");
        assert_eq!(env.msg_id(), Some("2026-ab"));
        assert!(matches!(env.topic, Span::Owned(_)));
        assert_eq!(env.body(), escaped);

        // A rejected message leaves its frames for the log line.
        let mut frames = vec![
            zmq::Message::from(&b"a.b"[..]),
            zmq::Message::from(&b"[1]"[..]),
        ];
        let error = Envelope::from_zmq(&mut frames, 1 << 20).unwrap_err();
        assert_eq!(error.reason(), "not_object");
        assert_eq!(frames.len(), 2);
        let mut frames: Vec<zmq::Message> = (0..3).map(|_| zmq::Message::from(&b"a"[..])).collect();
        assert_eq!(
            Envelope::from_zmq(&mut frames, 1 << 20)
                .unwrap_err()
                .reason(),
            "frame_count"
        );
    }

    const BODY: &str = r#"{"i":1,"msg":{"seq":0},"msg_id":"2026-4c7b5887-509a-4625-84f2-b65ca3141324","timestamp":1795393482,"topic":"org.fedoraproject.dev.peer.bench.msg","username":"root"}"#;
    const TOPIC: &str = "org.fedoraproject.dev.peer.bench.msg";

    #[test]
    fn two_frames_and_one_frame_decode_the_same() {
        let two = Envelope::from_frames(&[TOPIC.as_bytes(), BODY.as_bytes()], 1 << 20).unwrap();
        let joined = format!("{TOPIC}\0{BODY}");
        let one = Envelope::from_frames(&[joined.as_bytes()], 1 << 20).unwrap();
        for env in [&two, &one] {
            assert_eq!(env.topic(), TOPIC);
            assert_eq!(
                env.msg_id(),
                Some("2026-4c7b5887-509a-4625-84f2-b65ca3141324")
            );
            assert_eq!(env.timestamp(), Some(1795393482.0));
            assert_eq!(env.i(), Some(1));
            assert_eq!(env.username(), Some("root"));
            assert_eq!(env.msg(), Some(&serde_json::json!({"seq": 0})));
            assert_eq!(env.category(), Some("peer"));
            assert_eq!(env.canonical_body(), BODY);
        }
    }

    #[test]
    fn nesting_is_measured_outside_strings() {
        assert!(!nests_deeper_than(b"{}", 1));
        assert!(nests_deeper_than(b"{\"a\":[]}", 1));
        assert!(!nests_deeper_than(b"{\"a\":\"[[[\\\"[[[\"}", 1));
        assert!(nests_deeper_than(b"{\"a\":\"\\\\\",\"b\":[[]]}", 2));
        let deep = format!("{}{}", "[".repeat(65), "]".repeat(65));
        assert!(nests_deeper_than(deep.as_bytes(), 64));
        assert!(!nests_deeper_than(deep.as_bytes(), 65));
    }

    #[test]
    fn unknown_fields_are_kept() {
        let body = format!(r#"{{"topic":"{TOPIC}","seq_id":7,"source_name":"datanommer"}}"#);
        let env = Envelope::decode(TOPIC.as_bytes(), body.as_bytes(), 1 << 20).unwrap();
        assert_eq!(env.get("seq_id"), Some(&serde_json::json!(7)));
        assert_eq!(env.body(), body);
    }

    #[test]
    fn bad_input_gets_a_named_reason() {
        let t = TOPIC.as_bytes();
        let cases: Vec<(Vec<&[u8]>, &str)> = vec![
            (vec![t, b"{}", b"x"], "frame_count"),
            (vec![], "frame_count"),
            (vec![b"no separator here"], "missing_separator"),
            (vec![b"\xff\xfe", br#"{"topic":"x"}"#], "topic_not_utf8"),
            (vec![b"", br#"{"topic":""}"#], "empty_topic"),
            (vec![t, b"not json"], "not_json"),
            (vec![t, b"{\"topic\": \"\xff\"}"], "not_json"),
            (vec![t, b"[1,2]"], "not_object"),
            (vec![t, b"42"], "not_object"),
            (vec![t, br#"{"msg":{}}"#], "missing_topic"),
            (vec![t, br#"{"topic":5}"#], "wrong_type"),
            (
                vec![
                    t,
                    br#"{"topic":"org.fedoraproject.dev.peer.bench.msg","timestamp":"x"}"#,
                ],
                "wrong_type",
            ),
            (vec![t, br#"{"topic":"org.other"}"#], "topic_mismatch"),
            (
                vec![
                    t,
                    br#"{"i":1.5,"topic":"org.fedoraproject.dev.peer.bench.msg"}"#,
                ],
                "wrong_type",
            ),
            (
                vec![
                    t,
                    br#"{"msg":{"x":NaN},"topic":"org.fedoraproject.dev.peer.bench.msg"}"#,
                ],
                "not_finite",
            ),
            (
                vec![
                    t,
                    br#"{"msg":{"x":"NaN",y},"topic":"org.fedoraproject.dev.peer.bench.msg"}"#,
                ],
                "not_json",
            ),
        ];
        for (frames, reason) in cases {
            let err = Envelope::from_frames(&frames, 1 << 20).unwrap_err();
            assert_eq!(err.reason(), reason, "{frames:?} -> {err}");
            assert!(!err.to_string().is_empty());
        }
        let big = vec![b' '; 100];
        let err = Envelope::from_frames(&[t, &big], 10).unwrap_err();
        assert_eq!(
            err,
            DecodeError::TooLarge {
                bytes: 100,
                limit: 10
            }
        );
    }
}
