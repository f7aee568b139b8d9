//! fedhub-testkit: what the workspace's end-to-end tests share: a real ZeroMQ publisher the hub connects
//! to, hub configs on free ports, recording consumers, polling with timeouts, a
//! throwaway PostgreSQL server ([`PgCluster`]), a throwaway PKI ([`TestPki`]),
//! headless Chromium for web pages ([`Chromium`]) and an HTTP server recording
//! webhook requests ([`HttpSink`]).

mod browser;
pub mod fuzz;
mod http_sink;
mod pki;
mod postgres;

pub use browser::{artifact_path, Chromium};
pub use http_sink::{HttpSink, Recorded};
pub use pki::TestPki;
pub use postgres::{postgres_bin, PgCluster, PG_USER};

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fedhub::{Config, Consumer, ConsumerError, ConsumerFactory, Context, Envelope};
use serde_json::{Map, Value};

/// The topic prefix test messages use.
pub const PREFIX: &str = "org.fedoraproject.dev.test";

/// An XPUB bound on 127.0.0.1 (free port) that the hub's SUB connects to. XPUB
/// tells us when the subscription arrived, so no message is lost to the slow
/// joiner problem.
pub struct TestBus {
    _context: zmq::Context,
    socket: zmq::Socket,
    /// The resolved address.
    pub endpoint: String,
}

impl Default for TestBus {
    fn default() -> TestBus {
        TestBus::new()
    }
}

impl TestBus {
    /// Binds a new publisher.
    pub fn new() -> TestBus {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::XPUB).unwrap();
        socket.set_sndhwm(0).unwrap();
        socket.set_linger(1000).unwrap();
        socket.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = socket.get_last_endpoint().unwrap().unwrap();
        TestBus {
            _context: context,
            socket,
            endpoint,
        }
    }

    /// Waits until a subscriber's subscription arrived.
    pub fn wait_subscribed(&self) {
        self.socket.set_rcvtimeo(10_000).unwrap();
        let frame = self
            .socket
            .recv_bytes(0)
            .expect("the hub subscribed within 10 s");
        assert_eq!(frame.first(), Some(&1), "a subscription frame");
    }

    /// Sends one message given as frames.
    pub fn send_frames(&self, frames: &[&[u8]]) {
        self.socket
            .send_multipart(frames.iter().copied(), 0)
            .unwrap();
    }

    /// Sends a valid two-frame fedmsg message `PREFIX.<suffix>` with `msg`.
    pub fn send(&self, suffix: &str, i: u64, msg: Value) -> String {
        let topic = format!("{PREFIX}.{suffix}");
        let body = body(&topic, i, msg);
        self.send_frames(&[topic.as_bytes(), body.as_bytes()]);
        body
    }
}

impl TestBus {
    /// Sends `count` valid messages `PREFIX.<suffix>` with bodies `{"n": i}`, i = 1..=count.
    pub fn burst(&self, suffix: &str, count: u64) {
        for i in 1..=count {
            self.send(suffix, i, serde_json::json!({ "n": i }));
        }
    }
}

/// A canonical fedmsg body.
pub fn body(topic: &str, i: u64, msg: Value) -> String {
    let envelope = serde_json::json!({
        "topic": topic,
        "msg": msg,
        "i": i,
        "msg_id": format!("2026-00000000-0000-4000-8000-{i:012}"),
        "timestamp": 1_795_392_000u64 + i,
        "username": "tester",
    });
    fedhub::to_canonical_string(&envelope)
}

/// A config for tests: connect to `bus`, no inbound, HTTP on a free port.
pub fn config(bus: &TestBus) -> Config {
    let mut config = Config::default();
    config.bus.endpoints.insert(
        "test".into(),
        fedhub::OneOrMany::Many(vec![bus.endpoint.clone()]),
    );
    config.bus.inbound = String::new();
    config.http.listen = "127.0.0.1:0".into();
    config.hub.status_log_interval_secs = 0;
    config.hub.shutdown_grace_secs = 10;
    config
}

/// Builds a consumer section from `key = value` pairs.
pub fn section(pairs: &[(&str, Value)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect()
}

/// A free TCP port on 127.0.0.1, for programs that must be given a port.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts a hub on `config` with the built-in NullConsumer enabled, plus the
/// other `settings` of its section (`sleep_ms`, `capacity_messages`, ...).
pub fn start_with_null_consumer(
    mut config: Config,
    settings: &[(&str, Value)],
) -> fedhub::RunningHub {
    let mut section = section(settings);
    section.insert("enabled".into(), Value::Bool(true));
    config.consumers.insert("NullConsumer".into(), section);
    fedhub::HubBuilder::new(config)
        .consumer(fedhub::NullConsumer::factory())
        .start()
        .unwrap()
}

/// A Python program of the venv ([`python_env`]) run in `dir` (also its HOME,
/// so no user fedmsg config is read), with every stream piped.
pub fn python_tool(program: &str, dir: &std::path::Path) -> std::process::Command {
    use std::process::Stdio;
    let mut command = std::process::Command::new(python_env().join("bin").join(program));
    command
        .current_dir(dir)
        .env("HOME", dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    command
}

/// Polls `check` every 10 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    check()
}

/// What a recording consumer saw of one message.
#[derive(Debug, Clone)]
pub struct Seen {
    pub topic: String,
    pub body: String,
    pub msg_id: Option<String>,
    pub i: Option<i64>,
    pub msg: Option<Value>,
}

/// A consumer that records every message it handles.
pub struct Recorder {
    seen: Arc<Mutex<Vec<Seen>>>,
    delay: Duration,
}

impl Consumer for Recorder {
    fn consume(&mut self, envelope: &Envelope, _ctx: &mut Context) -> Result<(), ConsumerError> {
        if !self.delay.is_zero() {
            std::thread::sleep(self.delay);
        }
        self.seen.lock().unwrap().push(Seen {
            topic: envelope.topic().to_string(),
            body: envelope.body().to_string(),
            msg_id: envelope.msg_id().map(str::to_string),
            i: envelope.i(),
            msg: envelope.msg().cloned(),
        });
        Ok(())
    }
}

/// A factory for a recorder named `name`, and the list it records into.
pub fn recorder(name: &str, delay: Duration) -> (ConsumerFactory, Arc<Mutex<Vec<Seen>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let shared = seen.clone();
    let factory = ConsumerFactory::new(name, move |_| {
        Ok(Box::new(Recorder {
            seen: shared.clone(),
            delay,
        }))
    })
    .enabled_by_default();
    (factory, seen)
}

/// A consumer with one producer (a periodic job): its `start` registers the
/// producer and starts a thread that, every `frequency` (the first time one
/// `frequency` after start, like moksha's `now=False`), calls `ran` and then
/// `succeeded`; its `stop` ends the thread.
pub struct PollingConsumer {
    producer: String,
    module: String,
    frequency: Duration,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Consumer for PollingConsumer {
    fn start(&mut self, ctx: &mut Context) -> Result<(), ConsumerError> {
        use std::sync::atomic::Ordering;
        let job = ctx.producer(&self.producer, &self.module, self.frequency);
        self.stop.store(false, Ordering::Release);
        let stop = self.stop.clone();
        let frequency = self.frequency;
        self.thread = Some(std::thread::spawn(move || {
            let mut next = Instant::now() + frequency;
            while !stop.load(Ordering::Acquire) {
                if Instant::now() < next {
                    std::thread::sleep(Duration::from_millis(10));
                    continue;
                }
                next += frequency;
                job.ran();
                job.succeeded();
            }
        }));
        Ok(())
    }

    fn consume(&mut self, _envelope: &Envelope, _ctx: &mut Context) -> Result<(), ConsumerError> {
        Ok(())
    }

    fn stop(&mut self, _ctx: &mut Context) {
        self.stop.store(true, std::sync::atomic::Ordering::Release);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// An always-enabled [`PollingConsumer`] called `name`, whose producer
/// `producer` (module `module`) runs every `frequency`.
pub fn polling_consumer(
    name: &str,
    producer: &str,
    module: &str,
    frequency: Duration,
) -> ConsumerFactory {
    let (producer, module) = (producer.to_string(), module.to_string());
    ConsumerFactory::new(name, move |_| {
        Ok(Box::new(PollingConsumer {
            producer: producer.clone(),
            module: module.clone(),
            frequency,
            stop: Arc::default(),
            thread: None,
        }))
    })
    .enabled_by_default()
}

/// Fetches `path` from the hub's HTTP server; returns (status, body).
pub fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    write!(stream, "GET {path} HTTP/1.0\r\nHost: test\r\n\r\n").unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The `fedhub` binary built by `cargo build --workspace`.
pub fn fedhub_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test> -> target/<profile>/fedhub
    let dir = exe.parent().and_then(|d| d.parent()).unwrap();
    let binary = dir.join("fedhub");
    assert!(
        binary.is_file(),
        "{} is missing: run `cargo build --workspace` before the tests",
        binary.display()
    );
    binary
}

/// The venv with the real Python fedmsg tools, made by scripts/python-env.sh
/// (`$FEDHUB_PYTHON_ENV`, default target/python-env). Fails when it is missing.
pub fn python_env() -> PathBuf {
    let dir = std::env::var_os("FEDHUB_PYTHON_ENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target/python-env"));
    assert!(
        dir.join("bin/fedmsg-check").is_file(),
        "{} has no fedmsg tools: run scripts/python-env.sh first (this test does not skip)",
        dir.display()
    );
    dir
}

/// Writes a fedmsg config file (a Python file defining `config`) holding `config`.
pub fn write_fedmsg_config(path: &std::path::Path, config: &Value) {
    let json = serde_json::to_string(config).unwrap();
    assert!(!json.contains("'''"));
    std::fs::write(
        path,
        format!("import json\nconfig = json.loads(r'''{json}''')\n"),
    )
    .unwrap();
}

/// The workspace's top directory (where `Cargo.lock`, `examples/` and `target/` are).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("testkit/ sits in the workspace")
        .to_path_buf()
}

/// A daemon or tool the tests run: the first of `candidates` that exists,
/// else `name` on `PATH`. Fails (never skips) naming what to install.
pub fn find_program(name: &str, candidates: &[&str], install: &str) -> PathBuf {
    if let Some(found) = candidates.iter().map(PathBuf::from).find(|p| p.is_file()) {
        return found;
    }
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    });
    on_path.unwrap_or_else(|| panic!("{name} is not installed: {install}"))
}
