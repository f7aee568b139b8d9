//! Configuration: a TOML file plus `FEDHUB_SECTION__KEY` environment overrides.
//!
//! These structs describe what the operator writes; the runtime builds its own
//! structures from them. Unknown keys are rejected with a message naming the key.
//! Every option is documented in `examples/fedhub.toml`.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::topic::TopicSpec;

/// A configuration problem, naming the file, section or key at fault. The
/// message quotes its cause, which is also kept as the error's source.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file named does not exist.
    #[error("config file {} does not exist or is not a file", path.display())]
    Missing {
        /// The path given.
        path: PathBuf,
    },
    /// The file or environment could not be read as TOML.
    #[error("cannot read {location}: {source}")]
    Read {
        /// The file, or "the environment".
        location: String,
        /// The parser's error.
        #[source]
        source: Box<config::ConfigError>,
    },
    /// The file or environment holds keys or values the hub does not accept.
    #[error("invalid configuration in {location}: {source}")]
    Parse {
        /// The file, or "the environment".
        location: String,
        /// The deserializer's error, naming the key.
        #[source]
        source: Box<config::ConfigError>,
    },
    /// A consumer's own settings do not fit its config struct.
    #[error("invalid configuration: [consumers.{consumer}] {source}")]
    Settings {
        /// The consumer.
        consumer: String,
        /// The deserializer's error, naming the key.
        #[source]
        source: serde_json::Error,
    },
    /// A value is present but wrong.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// `[hub]`: identity and lifecycle.
    pub hub: HubConfig,
    /// `[bus]`: where messages come from.
    pub bus: BusConfig,
    /// `[publish]`: where messages consumers publish go.
    pub publish: PublishConfig,
    /// `[http]`: metrics, health and consumer APIs.
    pub http: HttpConfig,
    /// `[monitoring]`: the moksha-compatible monitoring socket.
    pub monitoring: MonitoringConfig,
    /// `[security]`: fedmsg's x509 signatures, validated and made (fedmsg's key names).
    pub security: SecurityConfig,
    /// `[consumers.<Name>]`: one section per consumer.
    pub consumers: BTreeMap<String, Map<String, Value>>,
}

/// `[hub]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubConfig {
    /// Service name, as in Fedora's monitoring paths (`fedmsg-hub`).
    pub name: String,
    /// fedmsg `topic_prefix`.
    pub topic_prefix: String,
    /// fedmsg `environment` (prod, stg, dev).
    pub environment: String,
    /// How long shutdown waits for mailboxes to drain.
    pub shutdown_grace_secs: u64,
    /// How often a one-line status summary is logged (0 = never).
    pub status_log_interval_secs: u64,
    /// How long to wait for each consumer's `start` at startup.
    pub start_timeout_secs: u64,
    /// Nice value added to the data-path threads (receiving, decoding, consumers), 0 to 19:
    /// on a host whose CPU is saturated by the hub itself, probes and the
    /// monitoring socket are then served first. 0 (the default) leaves every
    /// thread at the process's priority.
    pub data_threads_nice: i32,
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            name: "fedmsg-hub".into(),
            topic_prefix: "org.fedoraproject".into(),
            environment: "dev".into(),
            shutdown_grace_secs: 10,
            status_log_interval_secs: 60,
            start_timeout_secs: 60,
            data_threads_nice: 0,
        }
    }
}

/// A string or a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// One address.
    One(String),
    /// Several addresses.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values as a list (an empty string is no value).
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::One(s) if s.trim().is_empty() => vec![],
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }
}

/// `[bus]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BusConfig {
    /// fedmsg `endpoints`: name -> addresses this hub connects a SUB socket to.
    pub endpoints: BTreeMap<String, OneOrMany>,
    /// Address bound for local publishers (like fedmsg-relay's `relay_inbound`);
    /// an empty string disables it.
    pub inbound: String,
    /// Address a PUB socket binds to re-publish, byte for byte, every message
    /// the hub accepted (fedmsg-relay's `relay_outbound`), so `fedhub tail`,
    /// `fedmsg-tail` and other hubs can follow this one; empty disables it.
    pub outbound: String,
    /// moksha `zmq_strict`: exact topic matching instead of prefix matching.
    pub strict_topics: bool,
    /// Receive high-water mark per socket; 0 means unlimited (moksha's choice).
    pub rcvhwm_messages: i32,
    /// `zmq_reconnect_ivl`.
    pub reconnect_ivl_ms: i32,
    /// `zmq_reconnect_ivl_max`.
    pub reconnect_ivl_max_ms: i32,
    /// `zmq_tcp_keepalive` and friends (idle and interval in seconds).
    pub tcp_keepalive: bool,
    /// `zmq_tcp_keepalive_cnt`.
    pub tcp_keepalive_cnt: i32,
    /// `zmq_tcp_keepalive_idle`.
    pub tcp_keepalive_idle_secs: i32,
    /// `zmq_tcp_keepalive_intvl`.
    pub tcp_keepalive_intvl_secs: i32,
    /// Larger bodies are rejected and counted.
    pub max_message_bytes: usize,
    /// `/health/readyz` fails while no endpoint of a bus (an `endpoints`
    /// name) has been connected for this many seconds; 0 never fails it.
    pub not_ready_after_disconnected_secs: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            endpoints: BTreeMap::new(),
            inbound: "tcp://127.0.0.1:9941".into(),
            outbound: String::new(),
            strict_topics: false,
            rcvhwm_messages: 0,
            reconnect_ivl_ms: 100,
            reconnect_ivl_max_ms: 1000,
            tcp_keepalive: true,
            tcp_keepalive_cnt: 3,
            tcp_keepalive_idle_secs: 60,
            tcp_keepalive_intvl_secs: 5,
            max_message_bytes: 4 * 1024 * 1024,
            not_ready_after_disconnected_secs: 0,
        }
    }
}

/// `[publish]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PublishConfig {
    /// Addresses the hub's PUB socket binds (passive publishing).
    pub bind: Vec<String>,
    /// Addresses the hub's PUB socket connects to (active publishing, e.g. a relay).
    pub connect: Vec<String>,
    /// Send high-water mark; 0 means unlimited, so nothing is dropped silently.
    pub sndhwm_messages: i32,
    /// How long unsent messages are kept at shutdown.
    pub linger_ms: i32,
    /// Messages waiting for the publishing thread; beyond this `publish` fails.
    pub queue_capacity_messages: usize,
}

impl Default for PublishConfig {
    fn default() -> Self {
        PublishConfig {
            bind: vec![],
            connect: vec![],
            sndhwm_messages: 0,
            linger_ms: 1000,
            queue_capacity_messages: 100_000,
        }
    }
}

/// `[http]`: where the HTTP server listens, and its limits against hostile
/// or broken clients (each answered with a status and counted in
/// `fedhub_http_requests_rejected_total{reason}`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// `host:port` for `/metrics`, `/health/*`, `/state` and consumer APIs; empty disables.
    pub listen: String,
    /// Connections served at once; further ones wait in the kernel's accept
    /// queue until one closes.
    pub max_connections: usize,
    /// Seconds a client has to send a request's head (request line and
    /// headers) once connected or after the previous response; a slower one
    /// gets 408 and is disconnected.
    pub request_head_timeout_secs: u64,
    /// Seconds from a request's head to its response: a client that sends its
    /// body too slowly, or a handler that takes longer, gets 408.
    pub request_timeout_secs: u64,
    /// Seconds an idle keep-alive connection stays open.
    pub keep_alive_secs: u64,
    /// Seconds a connection being closed has to take the last bytes.
    pub disconnect_timeout_secs: u64,
    /// The largest request head (request line and headers), in bytes; a
    /// larger one gets 431. At most 131072, the HTTP library's own limit
    /// (which also allows at most 96 headers).
    pub max_head_bytes: usize,
    /// The largest request body, in bytes; a larger one gets 413.
    pub max_body_bytes: usize,
}

/// The HTTP library's own bound on a request head, in bytes.
pub const MAX_HEAD_BYTES_LIMIT: usize = 131_072;

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "127.0.0.1:8940".into(),
            max_connections: 256,
            request_head_timeout_secs: 5,
            request_timeout_secs: 60,
            keep_alive_secs: 5,
            disconnect_timeout_secs: 1,
            max_head_bytes: 16_384,
            max_body_bytes: 1_048_576,
        }
    }
}

impl HttpConfig {
    /// Checks the limits, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("max_connections", self.max_connections as u64),
            ("request_head_timeout_secs", self.request_head_timeout_secs),
            ("request_timeout_secs", self.request_timeout_secs),
            ("max_body_bytes", self.max_body_bytes as u64),
        ];
        if let Some((key, value)) = positive.iter().find(|(_, value)| *value == 0) {
            return Err(ConfigError::Invalid(format!(
                "[http] {key} = {value}: expected a number greater than 0"
            )));
        }
        if !(1024..=MAX_HEAD_BYTES_LIMIT).contains(&self.max_head_bytes) {
            return Err(ConfigError::Invalid(format!(
                "[http] max_head_bytes = {}: expected 1024 to {MAX_HEAD_BYTES_LIMIT}",
                self.max_head_bytes
            )));
        }
        Ok(())
    }
}

/// `[monitoring]`
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MonitoringConfig {
    /// moksha `moksha.monitoring.socket`: address the monitoring PUB binds; empty disables.
    pub socket: String,
    /// moksha `moksha.monitoring.socket.mode` for ipc sockets, e.g. "770".
    pub socket_mode: String,
    /// Seconds between monitoring documents (moksha: 5).
    pub interval_secs: f64,
}

impl Default for MonitoringConfig {
    fn default() -> Self {
        MonitoringConfig {
            socket: String::new(),
            socket_mode: String::new(),
            interval_secs: 5.0,
        }
    }
}

/// `[security]`: fedmsg's message signing and validation, under fedmsg's key names.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SecurityConfig {
    /// fedmsg `validate_signatures`: check every message's x509 signature,
    /// certificate and routing policy before any consumer sees it.
    pub validate_signatures: bool,
    /// fedmsg `crypto_validate_backends`: the signing backends a message may
    /// use. fedhub validates `x509` only; an empty list means `["x509"]`.
    pub crypto_validate_backends: Vec<String>,
    /// fedmsg `ssldir`: holds the hub's own `<certname>.crt` and `<certname>.key`
    /// for signing (x509 validation does not read it, in fedmsg either).
    pub ssldir: PathBuf,
    /// fedmsg `ca_cert_location`: the CA certificate (PEM; a file or an http(s)
    /// URL) signers' certificates must be issued by. Only its first certificate
    /// is used, as in fedmsg.
    pub ca_cert_location: String,
    /// fedmsg `crl_location`: the CA's revocation list (PEM; a file or an
    /// http(s) URL); "" checks no CRL.
    pub crl_location: String,
    /// fedmsg `crl_cache_expiry`, in seconds: the CA and CRL are loaded again
    /// this often (and on SIGHUP), without a restart; 0 reloads on SIGHUP only.
    /// (fedmsg 1.1.7 documents the key but never reads it.)
    pub crl_cache_expiry: u64,
    /// fedmsg `routing_policy`: fully qualified topic -> the certificate CNs
    /// allowed to sign messages on it (exact topics, no wildcards).
    pub routing_policy: BTreeMap<String, Vec<String>>,
    /// fedmsg `routing_nitpicky`: reject topics that `routing_policy` does not list.
    pub routing_nitpicky: bool,
    /// Threads that check signatures, the decoding thread included; 0: as many
    /// as the machine has cores. Messages still reach each consumer in the
    /// order they arrived.
    pub validation_threads: usize,
    /// fedmsg `sign_messages`: sign what the hub publishes.
    pub sign_messages: bool,
    /// fedmsg `certnames`: cert index -> the basename of `<ssldir>/<name>.crt` and `.key`.
    pub certnames: BTreeMap<String, String>,
    /// fedmsg `cert_prefix`: when set, the cert index is `<cert_prefix>.<short hostname>`.
    pub cert_prefix: String,
    /// fedmsg `name`: the cert index when `cert_prefix` is not set
    /// (`<service>.<short hostname>`, such as `bodhi.bodhi01`).
    pub name: String,
}

impl Default for SecurityConfig {
    fn default() -> Self {
        SecurityConfig {
            validate_signatures: false,
            crypto_validate_backends: vec!["x509".into()],
            ssldir: PathBuf::from("/etc/pki/fedmsg"),
            ca_cert_location: "/etc/pki/fedmsg/ca.crt".into(),
            crl_location: String::new(),
            crl_cache_expiry: 3600,
            routing_policy: BTreeMap::new(),
            routing_nitpicky: false,
            validation_threads: 0,
            sign_messages: false,
            certnames: BTreeMap::new(),
            cert_prefix: String::new(),
            name: String::new(),
        }
    }
}

impl SecurityConfig {
    /// Checks values that parse but make no sense, naming the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        for backend in &self.crypto_validate_backends {
            if backend != "x509" {
                return invalid(format!(
                    "[security] crypto_validate_backends = {:?}: fedhub validates only \"x509\" signatures (fedmsg's gpg backend is not supported)",
                    self.crypto_validate_backends
                ));
            }
        }
        for (key, location) in [
            ("ca_cert_location", &self.ca_cert_location),
            ("crl_location", &self.crl_location),
        ] {
            let url = location.starts_with("http://") || location.starts_with("https://");
            if location.contains("://") && !url {
                return invalid(format!(
                    "[security] {key} = {location:?}: expected a local file path or an http(s) URL"
                ));
            }
        }
        if self.validate_signatures && self.ca_cert_location.trim().is_empty() {
            return invalid(
                "[security] ca_cert_location is empty: validate_signatures needs the CA certificate".into(),
            );
        }
        for (topic, signers) in &self.routing_policy {
            if topic.is_empty() || topic.contains(['*', ' ', '\t', '\n']) {
                return invalid(format!(
                    "[security] routing_policy names the topic {topic:?}: expected a fully qualified topic (exact match, no wildcards or spaces)"
                ));
            }
            if let Some(bad) = signers.iter().find(|cn| cn.trim().is_empty()) {
                return invalid(format!(
                    "[security] routing_policy.\"{topic}\" lists the signer {bad:?}: expected certificate CNs"
                ));
            }
        }
        if self.validation_threads > 256 {
            return invalid(format!(
                "[security] validation_threads = {}: expected 0 (one per core) to 256",
                self.validation_threads
            ));
        }
        if self.sign_messages && self.cert_prefix.is_empty() && self.name.is_empty() {
            return invalid(
                "[security] sign_messages needs cert_prefix or name to choose a certificate from certnames".into(),
            );
        }
        Ok(())
    }
}

/// What ingress does when a consumer's mailbox is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum WhenFull {
    /// Wait for room: back-pressure onto the bus, nothing dropped.
    #[default]
    Block,
    /// Drop the message for this consumer and count it.
    Shed,
}

/// The runtime's part of a `[consumers.<Name>]` section; the rest is the consumer's own.
#[derive(Debug, Clone)]
pub struct ConsumerSection {
    /// The section name as written.
    pub name: String,
    /// `enabled` (fedmsg's config_key); `None` means the consumer's default.
    pub enabled: Option<bool>,
    /// `topics` (or `topic`); `None` means the consumer's default.
    pub topics: Option<Vec<String>>,
    /// `capacity_messages`: the mailbox bound.
    pub capacity_messages: usize,
    /// `when_full`: `block` or `shed`.
    pub when_full: WhenFull,
    /// `retries`: extra attempts for a message whose handling failed.
    pub retries: u32,
    /// `dead_letter_file`: JSON lines file for messages that still failed.
    pub dead_letter_file: Option<PathBuf>,
    /// `after`: consumers that must finish a message (including work they hold
    /// with `Context::hold_backlog`) before this one receives it.
    pub after: Vec<String>,
    /// Everything else in the section, for the consumer.
    pub settings: Map<String, Value>,
}

/// Default mailbox bound: enough for a 100k burst and Fedora's largest Nagios thresholds.
pub const DEFAULT_CAPACITY_MESSAGES: usize = 250_000;

const RUNTIME_KEYS: [&str; 8] = [
    "after",
    "enabled",
    "topics",
    "topic",
    "capacity_messages",
    "when_full",
    "retries",
    "dead_letter_file",
];

fn field<T: DeserializeOwned>(
    section: &str,
    key: &str,
    value: &Value,
    expected: &str,
) -> Result<T, ConfigError> {
    // Environment overrides arrive as strings: give them one chance as TOML scalars.
    let parsed = serde_json::from_value::<T>(value.clone()).or_else(|first| match value {
        Value::String(s) => serde_json::from_str::<T>(s).map_err(|_| first),
        _ => Err(first),
    });
    parsed.map_err(|_| {
        ConfigError::Invalid(format!(
            "[consumers.{section}] {key} = {value}: expected {expected}"
        ))
    })
}

impl ConsumerSection {
    /// Splits a raw section into runtime keys and consumer settings.
    pub fn parse(name: &str, raw: &Map<String, Value>) -> Result<ConsumerSection, ConfigError> {
        let mut section = ConsumerSection {
            name: name.to_string(),
            enabled: None,
            topics: None,
            capacity_messages: DEFAULT_CAPACITY_MESSAGES,
            when_full: WhenFull::Block,
            retries: 0,
            dead_letter_file: None,
            after: Vec::new(),
            settings: Map::new(),
        };
        for (key, value) in raw {
            match key.as_str() {
                "enabled" => section.enabled = Some(field(name, key, value, "true or false")?),
                "topics" | "topic" => {
                    let spec: TopicSpec = field(
                        name,
                        key,
                        value,
                        "a topic string or a list of topic strings",
                    )?;
                    section.topics = Some(spec.to_vec());
                }
                "capacity_messages" => {
                    let expected = "1 to 100000000 messages";
                    let cap: usize = field(name, key, value, expected)?;
                    in_range(
                        &format!("[consumers.{name}] capacity_messages"),
                        cap,
                        1..=MAX_CAPACITY_MESSAGES,
                        expected,
                    )?;
                    section.capacity_messages = cap;
                }
                "when_full" => {
                    let text: String = field(name, key, value, "\"block\" or \"shed\"")?;
                    section.when_full = match text.as_str() {
                        "block" => WhenFull::Block,
                        "shed" => WhenFull::Shed,
                        other => {
                            return Err(ConfigError::Invalid(format!(
                                "[consumers.{name}] when_full = {other:?}: expected \"block\" or \"shed\""
                            )))
                        }
                    };
                }
                "retries" => {
                    let expected = "0 to 100 retries";
                    let retries: u32 = field(name, key, value, expected)?;
                    in_range(
                        &format!("[consumers.{name}] retries"),
                        retries,
                        0..=MAX_RETRIES,
                        expected,
                    )?;
                    section.retries = retries;
                }
                "dead_letter_file" => {
                    section.dead_letter_file = Some(field(name, key, value, "a file path")?)
                }
                "after" => {
                    let spec: OneOrMany = field(
                        name,
                        key,
                        value,
                        "a consumer name or a list of consumer names",
                    )?;
                    section.after = spec.to_vec();
                }
                _ => {
                    section.settings.insert(key.clone(), value.clone());
                }
            }
        }
        Ok(section)
    }

    /// Names of the keys the runtime reads in every consumer section.
    pub fn runtime_keys() -> &'static [&'static str] {
        &RUNTIME_KEYS
    }
}

/// A consumer's own settings (its config section minus the runtime keys).
#[derive(Debug, Clone, Default)]
pub struct Settings {
    consumer: String,
    values: Map<String, Value>,
}

impl Settings {
    /// Wraps a section's settings.
    pub fn new(consumer: &str, values: Map<String, Value>) -> Settings {
        Settings {
            consumer: consumer.to_string(),
            values,
        }
    }

    /// The raw settings.
    pub fn values(&self) -> &Map<String, Value> {
        &self.values
    }

    /// An error naming one of these settings, its value and what was expected
    /// (`[consumers.<Name>] key = value: expected ...`), for a consumer's own
    /// range checks.
    pub fn invalid(&self, key: &str, value: impl std::fmt::Display, expected: &str) -> ConfigError {
        ConfigError::Invalid(format!(
            "[consumers.{}] {key} = {value}: expected {expected}",
            self.consumer
        ))
    }

    /// Deserializes the settings into the consumer's config struct. Use
    /// `#[serde(deny_unknown_fields)]` on it so typos are reported by name.
    /// An unknown key is answered with the consumer's own keys, the runtime
    /// keys every consumer section accepts, and the closest of them.
    pub fn parse<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        serde_json::from_value(Value::Object(self.values.clone())).map_err(|source| {
            match unknown_key_message(&self.consumer, &source.to_string()) {
                Some(message) => ConfigError::Invalid(message),
                None => ConfigError::Settings {
                    consumer: self.consumer.clone(),
                    source,
                },
            }
        })
    }
}

/// serde's "unknown field `x`, expected one of `a`, `b`" rewritten for a
/// consumer section: its own keys, the runtime's, and the closest one.
fn unknown_key_message(consumer: &str, serde_message: &str) -> Option<String> {
    let rest = serde_message.strip_prefix("unknown field `")?;
    let (key, expected) = rest.split_once('`')?;
    let own: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    let own_text = if own.is_empty() {
        format!("{consumer} has no keys of its own")
    } else {
        format!("{consumer}'s own keys are {}", own.join(", "))
    };
    let closest = own
        .iter()
        .chain(RUNTIME_KEYS.iter())
        .map(|candidate| (edit_distance(key, candidate), *candidate))
        .filter(|(distance, candidate)| *distance <= (candidate.len().max(key.len()) / 3).max(2))
        .min();
    let hint = closest
        .map(|(_, candidate)| format!("; did you mean {candidate}?"))
        .unwrap_or_default();
    Some(format!(
        "[consumers.{consumer}] {key}: unknown key; {own_text}, and every consumer section also takes {}{hint}",
        RUNTIME_KEYS.join(", ")
    ))
}

/// Levenshtein distance between two keys (ASCII in practice, chars in general).
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut previous = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let substitution = previous + usize::from(ca != *cb);
            previous = row[j + 1];
            row[j + 1] = substitution.min(row[j] + 1).min(previous + 1);
        }
    }
    row[b.len()]
}

impl Config {
    /// Loads `path` (TOML) if given, then applies `FEDHUB_…` environment overrides.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        Config::load_with_env(path, None)
    }

    /// Like [`load`](Self::load), with an explicit environment (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        env: Option<HashMap<String, String>>,
    ) -> Result<Config, ConfigError> {
        let mut builder = config::Config::builder();
        if let Some(path) = path {
            if !path.is_file() {
                return Err(ConfigError::Missing {
                    path: path.to_path_buf(),
                });
            }
            builder = builder.add_source(
                config::File::from(path)
                    .format(config::FileFormat::Toml)
                    .required(true),
            );
        }
        // Only `FEDHUB_<SECTION>__<KEY>` addresses a setting: every key is in a
        // section. Other `FEDHUB_*` variables (the test kit's, a wrapper
        // script's) are not the hub's to refuse.
        let env: HashMap<String, String> = env
            .unwrap_or_else(|| std::env::vars().collect())
            .into_iter()
            .filter(|(name, _)| match name.strip_prefix("FEDHUB_") {
                Some(rest) if rest.contains("__") => true,
                Some(_) => {
                    tracing::warn!(
                        variable = %name,
                        "environment variable ignored: settings are FEDHUB_<SECTION>__<KEY> (two underscores before the key)"
                    );
                    false
                }
                None => false,
            })
            .collect();
        let environment = config::Environment::with_prefix("FEDHUB")
            .prefix_separator("_")
            .separator("__")
            .try_parsing(true)
            .source(Some(env));
        builder = builder.add_source(environment);
        let where_ = path
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| "the environment".to_string());
        let loaded = builder.build().map_err(|source| ConfigError::Read {
            location: where_.clone(),
            source: Box::new(source),
        })?;
        let mut config: Config = loaded
            .try_deserialize()
            .map_err(|source| ConfigError::Parse {
                location: where_,
                source: Box::new(source),
            })?;
        config.merge_consumer_case();
        config.validate()?;
        Ok(config)
    }

    /// Environment keys arrive lowercased (`FEDHUB_CONSUMERS__NOMMER__…` -> `nommer`):
    /// fold them into the section with the same name in another case.
    fn merge_consumer_case(&mut self) {
        let names: Vec<String> = self.consumers.keys().cloned().collect();
        for name in names {
            if name.chars().any(|c| c.is_ascii_uppercase()) {
                continue;
            }
            let canonical = self
                .consumers
                .keys()
                .find(|other| **other != name && other.eq_ignore_ascii_case(&name))
                .cloned();
            if let Some(canonical) = canonical {
                if let Some(overrides) = self.consumers.remove(&name) {
                    let target = self.consumers.entry(canonical).or_default();
                    for (k, v) in overrides {
                        target.insert(k, v);
                    }
                }
            }
        }
    }

    /// Every numeric setting of the runtime's own sections within its range.
    fn check_ranges(&self) -> Result<(), ConfigError> {
        let (hub, bus, publish) = (&self.hub, &self.bus, &self.publish);
        in_range(
            "[hub] shutdown_grace_secs",
            hub.shutdown_grace_secs,
            0..=3600,
            "0 to 3600 seconds",
        )?;
        in_range(
            "[hub] status_log_interval_secs",
            hub.status_log_interval_secs,
            0..=86_400,
            "0 (never) to 86400 seconds",
        )?;
        in_range(
            "[hub] start_timeout_secs",
            hub.start_timeout_secs,
            1..=3600,
            "1 to 3600 seconds",
        )?;
        in_range(
            "[bus] rcvhwm_messages",
            bus.rcvhwm_messages,
            0..=i32::MAX,
            "0 (unlimited) or a positive number of messages",
        )?;
        in_range(
            "[bus] reconnect_ivl_ms",
            bus.reconnect_ivl_ms,
            1..=600_000,
            "1 to 600000 milliseconds",
        )?;
        in_range(
            "[bus] reconnect_ivl_max_ms",
            bus.reconnect_ivl_max_ms,
            0..=3_600_000,
            "0 (no backoff) to 3600000 milliseconds",
        )?;
        in_range(
            "[bus] tcp_keepalive_cnt",
            bus.tcp_keepalive_cnt,
            1..=127,
            "1 to 127 probes",
        )?;
        in_range(
            "[bus] tcp_keepalive_idle_secs",
            bus.tcp_keepalive_idle_secs,
            1..=32_767,
            "1 to 32767 seconds",
        )?;
        in_range(
            "[bus] tcp_keepalive_intvl_secs",
            bus.tcp_keepalive_intvl_secs,
            1..=32_767,
            "1 to 32767 seconds",
        )?;
        in_range(
            "[bus] max_message_bytes",
            bus.max_message_bytes,
            1..=MAX_MESSAGE_BYTES_LIMIT,
            "1 to 1073741824 bytes",
        )?;
        in_range(
            "[bus] not_ready_after_disconnected_secs",
            bus.not_ready_after_disconnected_secs,
            0..=86_400,
            "0 (never) to 86400 seconds",
        )?;
        in_range(
            "[publish] sndhwm_messages",
            publish.sndhwm_messages,
            0..=i32::MAX,
            "0 (unlimited) or a positive number of messages",
        )?;
        in_range(
            "[publish] linger_ms",
            publish.linger_ms,
            0..=600_000,
            "0 to 600000 milliseconds",
        )?;
        in_range(
            "[publish] queue_capacity_messages",
            publish.queue_capacity_messages,
            1..=MAX_CAPACITY_MESSAGES,
            "1 to 100000000 messages",
        )?;
        Ok(())
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |msg: String| Err(ConfigError::Invalid(msg));
        if self.hub.name.trim().is_empty() {
            return invalid("[hub] name must not be empty".into());
        }
        if !(0..=19).contains(&self.hub.data_threads_nice) {
            return invalid(format!(
                "[hub] data_threads_nice = {}: expected a nice increment from 0 to 19",
                self.hub.data_threads_nice
            ));
        }
        if !(self.monitoring.interval_secs > 0.0 && self.monitoring.interval_secs <= 3600.0) {
            return invalid(format!(
                "[monitoring] interval_secs = {}: expected seconds between 0 and 3600",
                self.monitoring.interval_secs
            ));
        }
        if !self.monitoring.socket_mode.is_empty()
            && u32::from_str_radix(&self.monitoring.socket_mode, 8).is_err()
        {
            return invalid(format!(
                "[monitoring] socket_mode = {:?}: expected an octal mode like \"770\"",
                self.monitoring.socket_mode
            ));
        }
        self.check_ranges()?;
        for (name, addrs) in &self.bus.endpoints {
            for addr in addrs.to_vec() {
                check_zmq_address(&format!("[bus] endpoints.{name}"), &addr)?;
            }
        }
        if !self.bus.inbound.is_empty() {
            check_zmq_address("[bus] inbound", &self.bus.inbound)?;
        }
        if !self.bus.outbound.is_empty() {
            check_zmq_address("[bus] outbound", &self.bus.outbound)?;
        }
        for addr in &self.publish.bind {
            check_zmq_address("[publish] bind", addr)?;
        }
        for addr in &self.publish.connect {
            check_zmq_address("[publish] connect", addr)?;
        }
        if !self.monitoring.socket.is_empty() {
            check_zmq_address("[monitoring] socket", &self.monitoring.socket)?;
        }
        if !self.http.listen.is_empty() {
            check_listen_address("[http] listen", &self.http.listen)?;
        }
        for (name, raw) in &self.consumers {
            ConsumerSection::parse(name, raw)?;
        }
        self.http.validate()?;
        self.security.validate()?;
        Ok(())
    }
}

/// The largest `[bus] max_message_bytes` accepted (1 GiB).
pub const MAX_MESSAGE_BYTES_LIMIT: usize = 1 << 30;

/// The largest mailbox or queue bound accepted, in messages.
pub const MAX_CAPACITY_MESSAGES: usize = 100_000_000;

/// The most `retries` a consumer section may ask for.
pub const MAX_RETRIES: u32 = 100;

/// `value` within `range`, else an error naming `key` and what was `expected`.
fn in_range<T: PartialOrd + std::fmt::Display>(
    key: &str,
    value: T,
    range: std::ops::RangeInclusive<T>,
    expected: &str,
) -> Result<(), ConfigError> {
    if range.contains(&value) {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "{key} = {value}: expected {expected}"
        )))
    }
}

/// Rejects addresses libzmq would not understand, naming the option. A tcp,
/// pgm or epgm address must end in a port from 0 to 65535 or `*` (libzmq would
/// silently wrap a larger number around to another port).
pub fn check_zmq_address(option: &str, addr: &str) -> Result<(), ConfigError> {
    let scheme = ["tcp://", "ipc://", "inproc://", "pgm://", "epgm://"]
        .into_iter()
        .find(|scheme| addr.starts_with(scheme) && addr.len() > scheme.len());
    let Some(scheme) = scheme else {
        return Err(ConfigError::Invalid(format!(
            "{option} = {addr:?}: not a ZeroMQ address (expected tcp://host:port or ipc:///path)"
        )));
    };
    if matches!(scheme, "ipc://" | "inproc://") {
        return Ok(());
    }
    let port = addr[scheme.len()..].rsplit_once(':').map(|(_, port)| port);
    match port {
        Some("*") => Ok(()),
        Some(port) if parse_port(port).is_some() => Ok(()),
        _ => Err(ConfigError::Invalid(format!(
            "{option} = {addr:?}: expected {scheme}host:port with a port from 0 to 65535 (or * for any free port)"
        ))),
    }
}

/// Rejects an HTTP listen address that is not `host:port` with a port from 0
/// to 65535, naming the option.
pub fn check_listen_address(option: &str, addr: &str) -> Result<(), ConfigError> {
    match addr.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && parse_port(port).is_some() => Ok(()),
        _ => Err(ConfigError::Invalid(format!(
            "{option} = {addr:?}: expected host:port with a port from 0 to 65535 (0 for any free port)"
        ))),
    }
}

/// A port number written in decimal digits only, within 0..=65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn write(text: &str) -> tempfile::NamedTempFile {
        let mut f = tempfile::Builder::new().suffix(".toml").tempfile().unwrap();
        f.write_all(text.as_bytes()).unwrap();
        f
    }

    #[test]
    fn file_and_environment_merge() {
        let f = write(
            r#"
[hub]
name = "fedmsg-hub-3"
[bus]
endpoints = { "bodhi.app01" = ["tcp://127.0.0.1:3000", "tcp://127.0.0.1:3001"], relay_outbound = "tcp://127.0.0.1:4001" }
[consumers.Nommer]
enabled = true
topics = ["org.fedoraproject.prod.*"]
capacity_messages = 1000
when_full = "shed"
database = "/tmp/x.sqlite"
"#,
        );
        let env = HashMap::from([
            ("FEDHUB_HUB__ENVIRONMENT".to_string(), "prod".to_string()),
            // Not a setting (no section): another tool's variable, ignored.
            ("FEDHUB_PYTHON_ENV".to_string(), "/opt/venv".to_string()),
            (
                "FEDHUB_CONSUMERS__NOMMER__CAPACITY_MESSAGES".to_string(),
                "5".to_string(),
            ),
        ]);
        let config = Config::load_with_env(Some(f.path()), Some(env)).unwrap();
        assert_eq!(config.hub.name, "fedmsg-hub-3");
        assert_eq!(config.hub.environment, "prod");
        assert_eq!(config.bus.endpoints["bodhi.app01"].to_vec().len(), 2);
        assert_eq!(
            config.bus.endpoints["relay_outbound"].to_vec(),
            vec!["tcp://127.0.0.1:4001"]
        );
        let section = ConsumerSection::parse("Nommer", &config.consumers["Nommer"]).unwrap();
        assert_eq!(section.capacity_messages, 5);
        assert_eq!(section.when_full, WhenFull::Shed);
        assert_eq!(section.enabled, Some(true));
        assert_eq!(section.settings["database"], "/tmp/x.sqlite");
        assert_eq!(config.consumers.len(), 1);
    }

    #[test]
    fn a_typo_in_a_consumer_section_lists_every_accepted_key_and_the_closest() {
        #[derive(Debug, serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        #[allow(dead_code)]
        struct Own {
            sleep_ms: Option<u64>,
            fail_every: Option<u64>,
        }
        let mut values = Map::new();
        values.insert("capacity_message".into(), Value::from(10));
        let err = Settings::new("NullConsumer", values)
            .parse::<Own>()
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("[consumers.NullConsumer] capacity_message"),
            "{err}"
        );
        assert!(err.contains("own keys are sleep_ms, fail_every"), "{err}");
        for key in RUNTIME_KEYS {
            assert!(err.contains(key), "{key}: {err}");
        }
        assert!(err.ends_with("did you mean capacity_messages?"), "{err}");
        let mut values = Map::new();
        values.insert("sleep_msec".into(), Value::from(3));
        let err = Settings::new("NullConsumer", values)
            .parse::<Own>()
            .unwrap_err()
            .to_string();
        assert!(err.ends_with("did you mean sleep_ms?"), "{err}");
        let mut values = Map::new();
        values.insert("zzzzzzzz".into(), Value::from(3));
        let err = Settings::new("NullConsumer", values)
            .parse::<Own>()
            .unwrap_err()
            .to_string();
        assert!(!err.contains("did you mean"), "{err}");
    }

    #[test]
    fn unknown_keys_are_named() {
        let f = write("[bus]\nendpoint = {}\n");
        let err = Config::load_with_env(Some(f.path()), Some(HashMap::new())).unwrap_err();
        assert!(err.to_string().contains("endpoint"), "{err}");
        let f = write("[hubb]\nname = \"x\"\n");
        let err = Config::load_with_env(Some(f.path()), Some(HashMap::new())).unwrap_err();
        assert!(err.to_string().contains("hubb"), "{err}");
    }

    #[test]
    fn bad_values_are_named() {
        let cases = [
            ("[consumers.X]\nwhen_full = \"later\"\n", "when_full"),
            (
                "[consumers.X]\ncapacity_messages = -3\n",
                "capacity_messages",
            ),
            ("[consumers.X]\nenabled = \"maybe\"\n", "enabled"),
            ("[bus]\ninbound = \"localhost:9941\"\n", "inbound"),
            ("[monitoring]\ninterval_secs = 0\n", "interval_secs"),
            ("[monitoring]\nsocket_mode = \"rwx\"\n", "socket_mode"),
            ("[http]\nlisten = \"nowhere\"\n", "listen"),
            ("[hub]\ndata_threads_nice = 25\n", "data_threads_nice"),
            ("[hub]\ndata_threads_nice = -5\n", "data_threads_nice"),
            ("[hub\nname=", "cannot read"),
        ];
        for (text, needle) in cases {
            let f = write(text);
            let err = Config::load_with_env(Some(f.path()), Some(HashMap::new())).unwrap_err();
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
        }
        let err =
            Config::load_with_env(Some(Path::new("/nonexistent/fedhub.toml")), None).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/fedhub.toml"),
            "{err}"
        );
    }

    #[test]
    fn security_takes_fedmsgs_keys_and_names_bad_ones() {
        let f = write(
            r#"
[security]
validate_signatures = true
ca_cert_location = "/etc/pki/fedmsg/ca.crt"
crl_location = "/etc/pki/fedmsg/crl.pem"
crl_cache_expiry = 86400
routing_nitpicky = true
routing_policy = { "org.fedoraproject.prod.bodhi.update.request.testing" = ["bodhi-bodhi01.phx2.fedoraproject.org"] }
crypto_validate_backends = ["x509"]
sign_messages = true
cert_prefix = "shell"
certnames = { "shell.app01" = "shell-app01.phx2.fedoraproject.org" }
"#,
        );
        let config = Config::load_with_env(Some(f.path()), Some(HashMap::new())).unwrap();
        let security = &config.security;
        assert!(security.validate_signatures && security.routing_nitpicky);
        assert_eq!(
            security.routing_policy["org.fedoraproject.prod.bodhi.update.request.testing"],
            vec!["bodhi-bodhi01.phx2.fedoraproject.org"]
        );
        assert_eq!(security.crl_cache_expiry, 86400);
        assert_eq!(
            security.certnames["shell.app01"],
            "shell-app01.phx2.fedoraproject.org"
        );
        let cases = [
            (
                "[security]\nvalidate_signature = true\n",
                "validate_signature",
            ),
            (
                "[security]\ncrypto_validate_backends = [\"x509\", \"gpg\"]\n",
                "crypto_validate_backends",
            ),
            (
                "[security]\ncrl_location = \"ftp://fedoraproject.org/fedmsg/crl.pem\"\n",
                "crl_location",
            ),
            (
                "[security]\nrouting_policy = { \"org.fedoraproject.prod.*\" = [\"x\"] }\n",
                "org.fedoraproject.prod.*",
            ),
            (
                "[security]\nrouting_policy = { \"org.x\" = [\"\"] }\n",
                "routing_policy",
            ),
            ("[security]\nsign_messages = true\n", "sign_messages"),
            (
                "[security]\nvalidate_signatures = true\nca_cert_location = \"\"\n",
                "ca_cert_location",
            ),
        ];
        for (text, needle) in cases {
            let f = write(text);
            let err = Config::load_with_env(Some(f.path()), Some(HashMap::new())).unwrap_err();
            assert!(err.to_string().contains(needle), "{text:?}: {err}");
        }
    }

    #[test]
    fn settings_parse_into_consumer_structs() {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Mine {
            #[allow(dead_code)]
            database: String,
        }
        let mut map = Map::new();
        map.insert("databse".into(), "x".into());
        let err = Settings::new("Nommer", map).parse::<Mine>().err().unwrap();
        assert!(err.to_string().contains("[consumers.Nommer]"), "{err}");
        assert!(err.to_string().contains("databse"), "{err}");
    }

    /// Errors keep their cause as their source, and the one-line chain does
    /// not repeat a cause the message already quotes.
    #[test]
    fn errors_keep_their_causes() {
        use std::error::Error as _;
        let f = write("[bus]\nendpoint = {}\n");
        let err = Config::load_with_env(Some(f.path()), Some(HashMap::new())).unwrap_err();
        let cause = err
            .source()
            .expect("the parser's error is kept")
            .to_string();
        assert!(cause.contains("endpoint"), "{cause}");
        assert_eq!(crate::error_chain(&err), err.to_string());
        let mut map = Map::new();
        map.insert("databse".into(), "x".into());
        let err = Settings::new("Nommer", map)
            .parse::<BTreeMap<String, u64>>()
            .err()
            .unwrap();
        assert!(err.source().is_some(), "{err}");
    }
}
