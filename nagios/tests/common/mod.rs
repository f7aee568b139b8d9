//! Shared helpers for check_fedhub's integration tests: a live in-process hub
//! fed through a real ZeroMQ XPUB, the built binary run with a bounded wait,
//! and small fake servers for the failure cases.

#![allow(dead_code)]

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fedhub::{Config, ConsumerFactory, HubBuilder, NullConsumer, RunningHub};
use serde_json::{json, Map, Value};

/// The binary under test.
pub const CHECK: &str = env!("CARGO_BIN_EXE_check_fedhub");

/// What one run of check_fedhub gave.
#[derive(Debug)]
pub struct Run {
    /// Exit code.
    pub code: i32,
    /// Everything on stdout.
    pub stdout: String,
    /// Everything on stderr (should stay empty).
    pub stderr: String,
    /// Wall time.
    pub elapsed: Duration,
}

impl Run {
    /// The one line printed, asserting it is exactly one line and nothing went to stderr.
    pub fn line(&self) -> &str {
        assert!(self.stderr.is_empty(), "stderr: {:?}", self.stderr);
        let line = self
            .stdout
            .strip_suffix('\n')
            .unwrap_or_else(|| panic!("stdout does not end in a newline: {:?}", self.stdout));
        assert!(
            !line.contains('\n'),
            "more than one line: {:?}",
            self.stdout
        );
        line
    }

    /// (exit code, line)
    pub fn result(&self) -> (i32, &str) {
        (self.code, self.line())
    }
}

/// Runs check_fedhub with `args`, killing it after 30 s.
pub fn check(args: &[&str]) -> Run {
    check_with(Command::new(CHECK).args(args))
}

/// Runs a prepared command, killing it after 30 s.
pub fn check_with(command: &mut Command) -> Run {
    let started = Instant::now();
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("check_fedhub starts");
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for check_fedhub") {
            break status;
        }
        if started.elapsed() > Duration::from_secs(30) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("check_fedhub {command:?} ran for more than 30 s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Run {
        code: status.code().unwrap_or(-1),
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
        elapsed: started.elapsed(),
    }
}

pub use fedhub_testkit::{wait_until, TestBus as Bus};

/// NullConsumer settings.
pub fn null_settings(sleep_ms: f64, fail_every: u64) -> Map<String, Value> {
    let mut map = Map::new();
    map.insert("enabled".into(), json!(true));
    map.insert("sleep_ms".into(), json!(sleep_ms));
    map.insert("fail_every".into(), json!(fail_every));
    map
}

/// A hub config reading `bus`, HTTP on a free port, the monitoring socket at
/// `monitoring` (publishing every 0.2 s), NullConsumer configured by `settings`.
pub fn hub_config(bus: &Bus, monitoring: &str, settings: Map<String, Value>) -> Config {
    let mut config = fedhub_testkit::config(bus);
    config.monitoring.socket = monitoring.to_string();
    config.monitoring.interval_secs = 0.2;
    config.consumers.insert("NullConsumer".into(), settings);
    config
}

/// Starts a hub with NullConsumer (and any `extra` consumers) and waits until
/// it has subscribed to `bus`.
pub fn start_hub(bus: &Bus, config: Config, extra: Vec<ConsumerFactory>) -> RunningHub {
    let mut builder = HubBuilder::new(config).consumer(NullConsumer::factory());
    for factory in extra {
        builder = builder.consumer(factory);
    }
    let hub = builder.start().expect("the hub starts");
    bus.wait_subscribed();
    hub
}

/// A second, always-enabled consumer built like NullConsumer.
pub fn second_consumer(name: &str) -> ConsumerFactory {
    ConsumerFactory::new(name, |settings| {
        Ok(Box::new(NullConsumer::new(settings.parse()?)))
    })
    .enabled_by_default()
}

/// `host:port` of the hub's HTTP server.
pub fn http(hub: &RunningHub) -> String {
    hub.http_addr().expect("HTTP enabled").to_string()
}

/// A free TCP port with nothing listening (bound, then closed).
pub fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

/// A TCP server on 127.0.0.1 answering every connection with `reply` (after
/// reading the request), or never answering when `reply` is `None`.
pub struct FakeServer {
    /// `127.0.0.1:port`
    pub addr: String,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeServer {
    /// Starts serving.
    pub fn start(reply: Option<&'static [u8]>) -> FakeServer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut held = Vec::new();
            while !flag.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
                        let mut buffer = [0u8; 4096];
                        let _ = stream.read(&mut buffer);
                        match reply {
                            Some(bytes) => {
                                use std::io::Write;
                                let _ = stream.write_all(bytes);
                            }
                            None => held.push(stream),
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        });
        FakeServer {
            addr,
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A PUB bound at `address` sending `document` every 50 ms, like a moksha hub
/// with a short interval: for documents a live fedhub never sends.
pub struct FakeMonitoring {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl FakeMonitoring {
    /// Binds and starts publishing.
    pub fn start(address: &str, document: Value) -> FakeMonitoring {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::PUB).unwrap();
        socket.set_linger(0).unwrap();
        socket.bind(address).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            let _context = context;
            while !flag.load(Ordering::Relaxed) {
                let _ = socket.send(document.to_string().as_bytes(), 0);
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        FakeMonitoring {
            stop,
            thread: Some(thread),
        }
    }
}

impl Drop for FakeMonitoring {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// A temporary directory others (the nagios user) may enter and read.
pub fn open_tempdir() -> tempfile::TempDir {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::Builder::new()
        .prefix("check-fedhub-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

/// `ipc://` address of a file in `dir`.
pub fn ipc(dir: &Path, file: &str) -> String {
    format!("ipc://{}", dir.join(file).display())
}
