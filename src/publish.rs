//! Publishing: fedmsg envelopes built like `fedmsg.publish` (and signed like it
//! when `[security] sign_messages` is on) and sent from one thread.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};

use crate::config::PublishConfig;
use crate::security::SigningKey;
use crate::socket::BusError;
use crate::stats::Stats;

/// Why a message was not published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PublishError {
    /// `[publish]` has neither `bind` nor `connect`.
    #[error("publishing is not configured: set [publish] bind or connect")]
    NotConfigured,
    /// The publishing thread is behind by `queue_capacity_messages`.
    #[error("the publish queue is full ({0} messages waiting)")]
    QueueFull(usize),
    /// The hub is shutting down.
    #[error("the publisher has stopped")]
    Stopped,
    /// Signing the envelope failed (OpenSSL's error, as text).
    #[error("cannot sign the message with {certname}: {error}")]
    Signing {
        /// The certificate's basename in `ssldir`.
        certname: String,
        /// OpenSSL's error.
        error: String,
    },
}

impl PublishError {
    fn reason(&self) -> &'static str {
        match self {
            PublishError::NotConfigured => "not_configured",
            PublishError::QueueFull(_) => "queue_full",
            PublishError::Stopped => "stopped",
            PublishError::Signing { .. } => "signing_failed",
        }
    }
}

/// A fully encoded message waiting for the publishing thread.
struct Outgoing {
    topic: String,
    body: String,
}

/// A cheap, cloneable handle consumers publish through.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<PublisherInner>,
}

struct PublisherInner {
    sender: Option<SyncSender<Outgoing>>,
    capacity: usize,
    topic_prefix: String,
    environment: String,
    username: String,
    counter: AtomicU64,
    stats: Arc<Stats>,
    signing: Option<Arc<SigningKey>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher")
            .field("topic_prefix", &self.inner.topic_prefix)
            .field("environment", &self.inner.environment)
            .finish()
    }
}

/// Builds the full topic as fedmsg does: `<prefix>.<environment>.<topic>`, unless
/// `topic` is already fully qualified (fedmsg would prefix it twice; fedhub does not).
pub fn build_topic(prefix: &str, environment: &str, topic: &str) -> String {
    if topic == prefix || topic.starts_with(&format!("{prefix}.")) {
        topic.to_string()
    } else {
        format!("{prefix}.{environment}.{topic}")
    }
}

/// A fedmsg message id: `<local year>-<uuid4>`.
pub fn new_msg_id() -> String {
    use chrono::Datelike;
    format!("{}-{}", chrono::Local::now().year(), uuid::Uuid::new_v4())
}

/// The Unix user name of this process, as `getpass.getuser()` reports it.
fn current_username() -> String {
    for var in ["LOGNAME", "USER", "LNAME", "USERNAME"] {
        if let Ok(name) = std::env::var(var) {
            if !name.is_empty() {
                return name;
            }
        }
    }
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy the
    // name out before any other call could overwrite it.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        if !pw.is_null() && !(*pw).pw_name.is_null() {
            return std::ffi::CStr::from_ptr((*pw).pw_name)
                .to_string_lossy()
                .into_owned();
        }
    }
    "fedhub".to_string()
}

impl Publisher {
    /// A publisher that is not connected to anything (for tools and tests).
    pub fn disconnected(topic_prefix: &str, environment: &str, stats: Arc<Stats>) -> Publisher {
        Publisher {
            inner: Arc::new(PublisherInner {
                sender: None,
                capacity: 0,
                topic_prefix: topic_prefix.into(),
                environment: environment.into(),
                username: current_username(),
                counter: AtomicU64::new(0),
                stats,
                signing: None,
            }),
        }
    }

    /// This publisher, signing every message it sends with `key` (fedmsg's
    /// `sign_messages`). Its clones made before keep publishing unsigned.
    pub fn with_signing_key(self, key: Arc<SigningKey>) -> Publisher {
        let inner = &self.inner;
        Publisher {
            inner: Arc::new(PublisherInner {
                sender: inner.sender.clone(),
                capacity: inner.capacity,
                topic_prefix: inner.topic_prefix.clone(),
                environment: inner.environment.clone(),
                username: inner.username.clone(),
                counter: AtomicU64::new(inner.counter.load(Ordering::Relaxed)),
                stats: inner.stats.clone(),
                signing: Some(key),
            }),
        }
    }

    /// The key messages are signed with, when signing is on.
    pub fn signing_key(&self) -> Option<&SigningKey> {
        self.inner.signing.as_deref()
    }

    /// Builds the envelope fedmsg would: `topic, msg, timestamp, msg_id, i, username`.
    pub fn envelope(&self, topic: &str, msg: Value) -> Map<String, Value> {
        let inner = &self.inner;
        let topic = build_topic(&inner.topic_prefix, &inner.environment, topic);
        let i = inner.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let mut envelope = Map::new();
        envelope.insert("topic".into(), Value::String(topic));
        envelope.insert("msg".into(), msg);
        envelope.insert("timestamp".into(), timestamp.into());
        envelope.insert("msg_id".into(), Value::String(new_msg_id()));
        envelope.insert("i".into(), i.into());
        envelope.insert("username".into(), Value::String(inner.username.clone()));
        envelope
    }

    /// Publishes `msg` on `topic` (`modname.event`, or a fully qualified topic),
    /// signed when signing is on. Returns the envelope that was sent.
    pub fn publish(&self, topic: &str, msg: Value) -> Result<Map<String, Value>, PublishError> {
        let mut envelope = self.envelope(topic, msg);
        self.sign(&mut envelope)?;
        self.send_raw(Self::topic_of(&envelope), Self::encode(&envelope))?;
        Ok(envelope)
    }

    /// Sends a ready envelope (it must contain `topic`) in canonical encoding.
    /// When signing is on it is signed first, replacing any signature it had
    /// (as fedmsg-signing-relay does).
    pub fn send_envelope(&self, envelope: &Map<String, Value>) -> Result<(), PublishError> {
        if self.inner.signing.is_some() {
            let mut signed = envelope.clone();
            self.sign(&mut signed)?;
            return self.send_raw(Self::topic_of(&signed), Self::encode(&signed));
        }
        self.send_raw(Self::topic_of(envelope), Self::encode(envelope))
    }

    /// Signs `envelope` as fedmsg's `sign` does, when signing is on.
    fn sign(&self, envelope: &mut Map<String, Value>) -> Result<(), PublishError> {
        let Some(key) = &self.inner.signing else {
            return Ok(());
        };
        key.sign(envelope).map_err(|e| {
            let error = PublishError::Signing {
                certname: key.certname().to_string(),
                error: e.to_string(),
            };
            self.inner.stats.count_publish_error(error.reason());
            error
        })
    }

    fn topic_of(envelope: &Map<String, Value>) -> String {
        envelope
            .get("topic")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string()
    }

    fn encode(envelope: &Map<String, Value>) -> String {
        crate::canonical::map_to_canonical_string(envelope)
    }

    fn send_raw(&self, topic: String, body: String) -> Result<(), PublishError> {
        let inner = &self.inner;
        let result = match &inner.sender {
            None => Err(PublishError::NotConfigured),
            Some(sender) => match sender.try_send(Outgoing { topic, body }) {
                Ok(()) => Ok(()),
                Err(TrySendError::Full(_)) => Err(PublishError::QueueFull(inner.capacity)),
                Err(TrySendError::Disconnected(_)) => Err(PublishError::Stopped),
            },
        };
        if let Err(e) = &result {
            inner.stats.count_publish_error(e.reason());
        }
        result
    }
}

/// The thread that owns the PUB socket.
pub struct PublisherThread {
    handle: Option<JoinHandle<()>>,
    stop: Arc<AtomicBool>,
    bound: Vec<String>,
}

impl PublisherThread {
    /// Binds/connects the PUB socket and starts the thread. With no addresses
    /// configured, returns a disconnected publisher and no thread.
    pub fn start(
        context: &zmq::Context,
        config: &PublishConfig,
        topic_prefix: &str,
        environment: &str,
        stats: Arc<Stats>,
    ) -> Result<(Publisher, PublisherThread), BusError> {
        let stop = Arc::new(AtomicBool::new(false));
        if config.bind.is_empty() && config.connect.is_empty() {
            let publisher = Publisher::disconnected(topic_prefix, environment, stats);
            return Ok((
                publisher,
                PublisherThread {
                    handle: None,
                    stop,
                    bound: vec![],
                },
            ));
        }
        let socket = context
            .socket(zmq::PUB)
            .map_err(|e| BusError::socket("create PUB for", "publish", e))?;
        let opt =
            |r: zmq::Result<()>| r.map_err(|e| BusError::socket("set option on", "publish", e));
        opt(socket.set_sndhwm(config.sndhwm_messages))?;
        opt(socket.set_linger(config.linger_ms))?;
        let mut bound = Vec::new();
        for addr in &config.bind {
            socket
                .bind(addr)
                .map_err(|e| BusError::setting("[publish] bind", "bind", addr, e))?;
            let actual = socket
                .get_last_endpoint()
                .ok()
                .and_then(|r| r.ok())
                .unwrap_or_else(|| addr.clone());
            tracing::info!(address = %actual, "publishing on bound socket");
            bound.push(actual);
        }
        for addr in &config.connect {
            socket
                .connect(addr)
                .map_err(|e| BusError::setting("[publish] connect", "connect", addr, e))?;
            tracing::info!(address = %addr, "publishing to connected endpoint");
        }
        let capacity = config.queue_capacity_messages.max(1);
        let (sender, receiver) = sync_channel(capacity);
        let publisher = Publisher {
            inner: Arc::new(PublisherInner {
                sender: Some(sender),
                capacity,
                topic_prefix: topic_prefix.into(),
                environment: environment.into(),
                username: current_username(),
                counter: AtomicU64::new(0),
                stats: stats.clone(),
                signing: None,
            }),
        };
        let thread_stop = stop.clone();
        let handle = std::thread::Builder::new()
            .name("fedhub-publish".into())
            .spawn(move || publish_loop(socket, receiver, thread_stop, stats))
            .expect("spawning the publish thread");
        Ok((
            publisher,
            PublisherThread {
                handle: Some(handle),
                stop,
                bound,
            },
        ))
    }

    /// Actual addresses of bound sockets (ports resolved).
    pub fn bound_endpoints(&self) -> &[String] {
        &self.bound
    }

    /// Sends what is queued, then stops (the socket's linger bounds the wait).
    pub fn stop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}

impl Drop for PublisherThread {
    fn drop(&mut self) {
        self.stop();
    }
}

fn publish_loop(
    socket: zmq::Socket,
    receiver: Receiver<Outgoing>,
    stop: Arc<AtomicBool>,
    stats: Arc<Stats>,
) {
    let send = |out: Outgoing| {
        let result = socket
            .send(out.topic.as_bytes(), zmq::SNDMORE)
            .and_then(|_| socket.send(out.body.as_bytes(), 0));
        match result {
            Ok(()) => stats.count_published(),
            Err(e) => {
                stats.count_publish_error("send_failed");
                tracing::warn!(topic = %out.topic, error = %e, "publish failed");
            }
        }
    };
    loop {
        match receiver.recv_timeout(Duration::from_millis(100)) {
            Ok(out) => send(out),
            Err(RecvTimeoutError::Timeout) => {
                if stop.load(Ordering::Acquire) {
                    break;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break,
        }
    }
    // Flush whatever was queued before the stop.
    while let Ok(out) = receiver.try_recv() {
        send(out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topics_are_built_like_fedmsg() {
        assert_eq!(
            build_topic("org.fedoraproject", "prod", "fedbadges.badge.award"),
            "org.fedoraproject.prod.fedbadges.badge.award"
        );
        assert_eq!(
            build_topic("org.fedoraproject", "prod", "org.fedoraproject.stg.x.y"),
            "org.fedoraproject.stg.x.y"
        );
    }

    #[test]
    fn envelopes_have_fedmsg_fields() {
        let p = Publisher::disconnected("org.fedoraproject", "dev", Stats::new());
        let a = p.envelope("logger.log", serde_json::json!({"log": "x"}));
        let b = p.envelope("logger.log", serde_json::json!({}));
        assert_eq!(a["topic"], "org.fedoraproject.dev.logger.log");
        assert_eq!(a["i"], 1);
        assert_eq!(b["i"], 2);
        let id = a["msg_id"].as_str().unwrap();
        let (year, uuid) = id.split_once('-').unwrap();
        assert_eq!(year.len(), 4);
        assert_eq!(uuid.len(), 36);
        assert!(a["timestamp"].is_u64());
        assert!(!a["username"].as_str().unwrap().is_empty());
        assert_eq!(
            p.publish("x", serde_json::json!({})).unwrap_err(),
            PublishError::NotConfigured
        );
    }
}
