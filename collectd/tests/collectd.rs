//! collectd against a live hub, with a real collectd 5.12 and no mocks.
//!
//! - The read plugin (`collectd/`, built as `libfedhub_collectd.so`, installed
//!   as `fedhub.so`) loaded by `collectd -f`
//!   with the csv plugin: a deliberately slow consumer's backlog rises above 0
//!   and falls back to 0 in `queue_length-NullConsumer_backlog`, and the
//!   per-interval in/out counts and handling times are there with plausible values.
//! - `collectd -T` (each read callback once): exit 0 with a live hub, and also
//!   with the hub down, hung or answering garbage (a warning, never a read error
//!   that would make collectd back off); a bad `<Plugin fedhub>` block fails.
//! - The exec form: `fedhub_tools::collectd_exec::run` against the hub's monitoring
//!   socket prints Fedora's PUTVAL lines, and the same code run by collectd's
//!   real exec plugin (as `nobody`, since it refuses root) fills the same CSV files.
//!
//! These tests need collectd (`apt-get install collectd-core`); without it they
//! fail, they never skip. The plugin is built with `cargo build -p
//! fedhub-collectd` by the first test that needs it.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use fedhub::RunningHub;
use fedhub_testkit::*;
use fedhub_tools::collectd_exec::{self, ExecOptions};
use serde_json::json;

const INSTALL: &str = "install it: apt-get install collectd-core (this test does not skip)";

/// The host name collectd is configured with in these tests.
const HOST: &str = "fedhub-test";

/// Where collectd's stock plugins are.
const STOCK_PLUGINS: &str = "/usr/lib/collectd";

/// The environment variable that turns [`exec_plugin_child`] into the exec
/// plugin's child; its value is the monitoring socket.
const CHILD_SOCKET_ENV: &str = "FEDHUB_TEST_COLLECTD_EXEC_SOCKET";

fn collectd_binary() -> PathBuf {
    find_program(
        "collectd",
        &[
            "/usr/sbin/collectd",
            "/usr/bin/collectd",
            "/usr/local/sbin/collectd",
        ],
        INSTALL,
    )
}

fn stock_plugin(name: &str) -> PathBuf {
    let path = Path::new(STOCK_PLUGINS).join(format!("{name}.so"));
    assert!(path.is_file(), "{} is missing: {INSTALL}", path.display());
    path
}

/// `target/<profile>/libfedhub_collectd.so`, built (once per test process) with
/// `cargo build -p fedhub-collectd` so it is never stale.
fn plugin_library() -> PathBuf {
    static BUILT: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let result = BUILT.get_or_init(|| {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        // target/<profile>/deps/<test>
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .ok_or("cannot find the target directory")?
            .to_path_buf();
        let library = profile_dir.join("libfedhub_collectd.so");
        let how = "cargo build -p fedhub-collectd (or cargo build --workspace)";
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        let mut build = Command::new(cargo);
        build
            .args(["build", "-p", "fedhub-collectd"])
            .current_dir(env!("CARGO_MANIFEST_DIR"));
        if let Some(target_dir) = profile_dir.parent() {
            build.env("CARGO_TARGET_DIR", target_dir);
        }
        if profile_dir.file_name().is_some_and(|n| n == "release") {
            build.arg("--release");
        }
        match build.output() {
            Ok(out) if out.status.success() => {}
            Ok(out) => {
                return Err(format!(
                    "building the collectd plugin failed; run `{how}` to see why:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
            Err(e) => {
                if !library.is_file() {
                    return Err(format!(
                        "cannot run cargo ({e}) and {} is missing: run `{how}`",
                        library.display()
                    ));
                }
            }
        }
        if library.is_file() {
            Ok(library)
        } else {
            Err(format!(
                "{} is missing after the build: run `{how}`",
                library.display()
            ))
        }
    });
    match result {
        Ok(path) => path.clone(),
        Err(message) => panic!("{message}"),
    }
}

/// A private collectd: its own PluginDir (copies, not symlinks: collectd
/// refuses those), config, CSV directory and log file, all in a temp dir.
struct Collectd {
    dir: tempfile::TempDir,
    conf: PathBuf,
}

impl Collectd {
    /// A config loading `plugins` (besides logfile and csv, which are always
    /// there) followed by `blocks`, the plugins' own configuration.
    fn new(plugins: &[&str], blocks: &str) -> Collectd {
        let binary = collectd_binary();
        // collectd's csv plugin refuses paths with a component starting with '.'
        // (tempfile's default prefix).
        let dir = tempfile::Builder::new()
            .prefix("fedhub-collectd-")
            .tempdir()
            .unwrap();
        let plugin_dir = dir.path().join("plugins");
        fs::create_dir_all(&plugin_dir).unwrap();
        for name in ["logfile", "csv"].iter().chain(plugins) {
            let source = if *name == "fedhub" {
                plugin_library()
            } else {
                stock_plugin(name)
            };
            fs::copy(&source, plugin_dir.join(format!("{name}.so"))).unwrap();
        }
        let d = dir.path().display();
        let mut conf = format!(
            r#"# written by tests/collectd.rs for {binary}
Hostname "{HOST}"
FQDNLookup false
BaseDir "{d}"
PIDFile "{d}/collectd.pid"
PluginDir "{d}/plugins"
TypesDB "/usr/share/collectd/types.db"
Interval 1
LoadPlugin logfile
<Plugin logfile>
  LogLevel info
  File "{d}/collectd.log"
  Timestamp true
  PrintSeverity true
</Plugin>
LoadPlugin csv
<Plugin csv>
  DataDir "{d}/csv"
  StoreRates false
</Plugin>
"#,
            binary = binary.display()
        );
        for name in plugins {
            conf.push_str(&format!("LoadPlugin {name}\n"));
        }
        conf.push_str(blocks);
        let path = dir.path().join("collectd.conf");
        fs::write(&path, conf).unwrap();
        Collectd { dir, conf: path }
    }

    /// `collectd -T`: every read callback once, then exit.
    fn run_once(&self) -> Output {
        Command::new(collectd_binary())
            .arg("-T")
            .arg("-C")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .output()
            .expect("collectd -T runs")
    }

    /// `collectd -f` in the background, with extra environment variables.
    fn start(&self, env: &[(&str, &str)]) -> Daemon {
        let mut command = Command::new(collectd_binary());
        command
            .arg("-f")
            .arg("-C")
            .arg(&self.conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            command.env(k, v);
        }
        Daemon(command.spawn().expect("collectd -f starts"))
    }

    fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("collectd.log")).unwrap_or_default()
    }

    /// The directory of one plugin instance's CSV files.
    fn csv_dir(&self, plugin_dir: &str) -> PathBuf {
        self.dir.path().join("csv").join(HOST).join(plugin_dir)
    }

    /// `(epoch, value)` rows of `<identifier>-YYYY-MM-DD` files (NaN for `nan`).
    fn values(&self, plugin_dir: &str, identifier: &str) -> Vec<(f64, f64)> {
        csv_values(&self.csv_dir(plugin_dir), identifier)
    }
}

fn csv_values(dir: &Path, identifier: &str) -> Vec<(f64, f64)> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let prefix = format!("{identifier}-");
    let mut files: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_prefix(&prefix))
                .is_some_and(|date| date.len() == 10 && date.as_bytes()[4] == b'-')
        })
        .collect();
    files.sort();
    let mut rows = Vec::new();
    for file in files {
        for line in fs::read_to_string(&file)
            .unwrap_or_default()
            .lines()
            .skip(1)
        {
            if let Some((epoch, value)) = line.split_once(',') {
                let value = if value.contains("nan") {
                    f64::NAN
                } else {
                    value.parse().unwrap_or(f64::NAN)
                };
                if let Ok(epoch) = epoch.parse() {
                    rows.push((epoch, value));
                }
            }
        }
    }
    rows
}

/// A running collectd, stopped by its PID (SIGTERM, then SIGKILL) when dropped.
struct Daemon(Child);

impl Daemon {
    fn stop(&mut self) {
        if let Ok(Some(_)) = self.0.try_wait() {
            return;
        }
        // SAFETY: kill with the PID of a child we started and have not reaped.
        unsafe { libc::kill(self.0.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.0.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }

    fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.0.try_wait().ok().flatten()
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A hub whose only consumer is a NullConsumer taking `sleep_ms` per message,
/// with its HTTP server and (when `monitoring_secs` is set) a monitoring socket
/// on free ports. The bus is connected and subscribed when this returns.
fn slow_hub(sleep_ms: u64, monitoring_secs: Option<f64>) -> (TestBus, RunningHub) {
    let bus = TestBus::new();
    let mut config = config(&bus);
    if let Some(interval) = monitoring_secs {
        config.monitoring.socket = "tcp://127.0.0.1:*".into();
        config.monitoring.interval_secs = interval;
    }
    let hub = start_with_null_consumer(config, &[("sleep_ms", json!(sleep_ms))]);
    bus.wait_subscribed();
    (bus, hub)
}

fn fedhub_block(hub: &str) -> String {
    format!("<Plugin fedhub>\n  Hub \"{hub}\"\n</Plugin>\n")
}

fn finite(rows: &[(f64, f64)]) -> Vec<f64> {
    rows.iter().map(|r| r.1).filter(|v| v.is_finite()).collect()
}

/// True when some value above 0 is followed, later, by a 0.
fn rose_and_fell(values: &[f64]) -> bool {
    match values.iter().position(|v| *v > 0.0) {
        Some(first_up) => values[first_up..].contains(&0.0),
        None => false,
    }
}

#[test]
fn the_plugin_graphs_a_backlog_that_rises_and_drains() {
    const MESSAGES: u64 = 250;
    // 250 messages at 20 ms: about 5 s of backlog, read every second.
    let (bus, hub) = slow_hub(20, None);
    let addr = hub.http_addr().expect("http enabled").to_string();
    let collectd = Collectd::new(&["fedhub"], &fedhub_block(&addr));
    let mut daemon = collectd.start(&[]);
    let backlog = "queue_length-NullConsumer_backlog";

    // collectd is up and reading before the burst.
    let reading = wait_until(Duration::from_secs(30), || {
        collectd.values("fedmsg-hub", backlog).len() >= 2
    });
    assert!(
        reading,
        "collectd wrote no backlog values within 30 s (exit: {:?}); its log:\n{}",
        daemon.exited(),
        collectd.log()
    );
    for i in 1..=MESSAGES {
        bus.send("burst", i, json!({"i": i}));
    }

    let counted = |name: &str| {
        finite(&collectd.values("fedmsg-hub", name))
            .iter()
            .sum::<f64>()
    };
    let done = wait_until(Duration::from_secs(60), || {
        rose_and_fell(&finite(&collectd.values("fedmsg-hub", backlog)))
            && counted("gauge-NullConsumer_out") >= MESSAGES as f64
            && finite(&collectd.values("fedmsg-hub", "response_time-NullConsumer_max"))
                .iter()
                .any(|v| *v > 0.0)
    });
    let backlog_values = finite(&collectd.values("fedmsg-hub", backlog));
    daemon.stop();
    let log = collectd.log();
    assert!(
        done,
        "backlog {backlog_values:?}, in {}, out {}; collectd's log:\n{log}",
        counted("gauge-NullConsumer_in"),
        counted("gauge-NullConsumer_out"),
    );

    // The backlog went up (to more than a handful) and came back to 0.
    let peak = backlog_values.iter().copied().fold(0.0, f64::max);
    assert!(peak >= 10.0, "peak backlog {peak} in {backlog_values:?}");
    assert_eq!(backlog_values.last(), Some(&0.0), "{backlog_values:?}");

    // Per-interval counts add up to the burst; the first read is undefined.
    let inputs = collectd.values("fedmsg-hub", "gauge-NullConsumer_in");
    assert!(
        inputs[0].1.is_nan(),
        "the first read has no baseline: {inputs:?}"
    );
    assert_eq!(counted("gauge-NullConsumer_in"), MESSAGES as f64);
    assert_eq!(counted("gauge-NullConsumer_out"), MESSAGES as f64);
    assert_eq!(counted("gauge-NullConsumer_exceptions"), 0.0);
    assert!(finite(&inputs)
        .iter()
        .all(|v| *v >= 0.0 && v.fract() == 0.0));

    // Handling times in ms: about 20 ms per message.
    let max = finite(&collectd.values("fedmsg-hub", "response_time-NullConsumer_max"));
    let min = finite(&collectd.values("fedmsg-hub", "response_time-NullConsumer_min"));
    let avg = finite(&collectd.values("fedmsg-hub", "response_time-NullConsumer_avg"));
    let busiest = max.iter().copied().fold(0.0, f64::max);
    assert!(
        (19.0..2000.0).contains(&busiest),
        "max response times {max:?}"
    );
    assert!(
        min.iter().any(|v| (19.0..2000.0).contains(v)),
        "min {min:?}"
    );
    assert!(
        avg.iter().any(|v| (19.0..2000.0).contains(v)),
        "avg {avg:?}"
    );
    assert!(!log.contains("[error]"), "collectd logged errors:\n{log}");
    assert!(
        !log.contains("read-function of plugin `fedhub' failed"),
        "{log}"
    );
    hub.shutdown();
}

#[test]
fn collectd_test_mode_reads_a_live_hub_once() {
    let (_bus, hub) = slow_hub(0, None);
    let addr = hub.http_addr().unwrap().to_string();
    let collectd = Collectd::new(&["fedhub"], &fedhub_block(&addr));
    let output = collectd.run_once();
    let log = collectd.log();
    assert!(
        output.status.success(),
        "collectd -T failed: {output:?}\n{log}"
    );
    assert!(
        log.contains(&format!(
            "[info] fedhub: reading http://{addr}/state every interval as plugin fedmsg-hub"
        )),
        "{log}"
    );
    // collectd -T stops its write threads right after the reads and drops what
    // they had not written yet, with a warning that counts them: every value the
    // plugin dispatched is either in a file or in that count.
    let (files, dropped) = written_or_dropped(&collectd, "fedmsg-hub");
    let expected = [
        "gauge-NullConsumer_exceptions",
        "gauge-NullConsumer_in",
        "gauge-NullConsumer_out",
        "queue_length-NullConsumer_backlog",
        "response_time-NullConsumer_avg",
        "response_time-NullConsumer_max",
        "response_time-NullConsumer_min",
    ];
    assert!(
        files.iter().all(|f| expected.contains(&f.as_str())),
        "{files:?}"
    );
    assert_eq!(files.len() + dropped, expected.len(), "{files:?}\n{log}");
    if files.len() < 4 {
        // Too few to check values; a rare collectd race, not the plugin.
        hub.shutdown();
        return;
    }
    let value = |name: &str| collectd.values("fedmsg-hub", name).first().copied();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    if let Some((epoch, backlog)) = value("queue_length-NullConsumer_backlog") {
        assert_eq!(backlog, 0.0);
        assert!((now - epoch).abs() < 60.0, "{epoch} vs {now}");
    }
    // One read: no previous totals, so the counts are undefined, not 0.
    if let Some((_, count)) = value("gauge-NullConsumer_in") {
        assert!(count.is_nan(), "{count}");
    }
    if let Some((_, max)) = value("response_time-NullConsumer_max") {
        assert_eq!(max, 0.0);
    }
    hub.shutdown();
}

/// The identifiers with a CSV file under `plugin_dir`, and how many value lists
/// collectd said it dropped at exit ("N value lists were left after shutting
/// down the write threads", which `collectd -T` can do).
fn written_or_dropped(collectd: &Collectd, plugin_dir: &str) -> (Vec<String>, usize) {
    let mut files: Vec<String> = fs::read_dir(collectd.csv_dir(plugin_dir))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok())
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter_map(|n| n.get(..n.len().saturating_sub(11)).map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    files.sort();
    let dropped = collectd
        .log()
        .lines()
        .filter_map(|l| l.split_once("[warning] plugin: "))
        .filter_map(|(_, rest)| rest.split_once(" value list"))
        .filter_map(|(n, _)| n.parse::<usize>().ok())
        .sum();
    (files, dropped)
}

/// Runs `collectd -T` against `hub` and returns its log, asserting exit 0,
/// a warning containing `expected`, no values and a bounded run time.
fn test_mode_survives(hub: &str, expected: &str) -> String {
    let collectd = Collectd::new(
        &["fedhub"],
        &format!("<Plugin fedhub>\n  Hub \"{hub}\"\n  TimeoutMs 300\n</Plugin>\n"),
    );
    let started = Instant::now();
    let output = collectd.run_once();
    let took = started.elapsed();
    let log = collectd.log();
    assert!(
        output.status.success(),
        "collectd -T must exit 0 when the hub is unusable ({expected}): {output:?}\n{log}"
    );
    assert!(
        log.lines().any(
            |l| l.contains("[warning] fedhub: cannot read the hub's state") && l.contains(expected)
        ),
        "expected a warning with {expected:?}:\n{log}"
    );
    assert!(!log.contains("[error]"), "{log}");
    assert!(
        !collectd.csv_dir("fedmsg-hub").exists(),
        "nothing is dispatched"
    );
    assert!(took < Duration::from_secs(10), "collectd -T took {took:?}");
    log
}

#[test]
fn collectd_test_mode_exits_0_and_warns_when_the_hub_is_down_hung_or_garbage() {
    // Down: nothing listens on the port.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    test_mode_survives(
        &format!("127.0.0.1:{port}"),
        &format!("cannot connect to 127.0.0.1:{port}: Connection refused"),
    );

    // Hung: accepts and never answers (the read times out).
    let hung = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hung_addr = hung.local_addr().unwrap().to_string();
    test_mode_survives(
        &hung_addr,
        &format!("http://{hung_addr}/state: no answer within 300ms"),
    );
    drop(hung);

    // Garbage: something that is not HTTP, then an HTTP server that is not fedhub.
    for (response, expected) in [
        (&b"SSH-2.0-OpenSSH_9.2\r\n"[..], "malformed response"),
        (&b"HTTP/1.0 404 Not Found\r\n\r\n"[..], "HTTP status 404"),
        (
            &b"HTTP/1.0 200 OK\r\n\r\n{\"hello\": 1}"[..],
            "has no \"consumers\" list",
        ),
        (&b"HTTP/1.0 200 OK\r\n\r\n<html>"[..], "is not JSON"),
    ] {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let server = std::thread::spawn(move || {
            if let Ok((mut stream, _)) = listener.accept() {
                let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
                let mut request = [0u8; 1024];
                let _ = std::io::Read::read(&mut stream, &mut request);
                let _ = stream.write_all(response);
            }
        });
        test_mode_survives(&addr, expected);
        server.join().unwrap();
    }
}

#[test]
fn a_bad_plugin_block_fails_collectd_with_a_clear_message() {
    for (block, expected) in [
        ("Hubb \"127.0.0.1:8940\"", "unknown field `Hubb`"),
        (
            "Hub \"localhost\"",
            "invalid Hub \"localhost\": expected host:port",
        ),
        (
            "Hub \"127.0.0.1:8940\"\n  TimeoutMs 0",
            "invalid TimeoutMs 0",
        ),
    ] {
        let collectd = Collectd::new(
            &["fedhub"],
            &format!("<Plugin fedhub>\n  {block}\n</Plugin>\n"),
        );
        let output = collectd.run_once();
        let log = collectd.log();
        assert!(
            !output.status.success(),
            "{block}: collectd accepted it:\n{log}"
        );
        assert!(
            log.contains("[error] fedhub: ") && log.contains(expected),
            "{block}: expected {expected:?} in:\n{log}"
        );
    }
}

#[test]
fn service_and_instance_choose_the_plugin_directory() {
    let (_bus, hub) = slow_hub(0, None);
    let addr = hub.http_addr().unwrap().to_string();
    for (extra, directory) in [
        ("Service \"fedmsg-relay\"", "fedmsg-relay"),
        ("Service \"moksha-hub\"\n  Instance \"bus1\"", "moksha-bus1"),
        ("Service \"fedhub\"", "fedhub"),
    ] {
        let collectd = Collectd::new(
            &["fedhub"],
            &format!("<Plugin fedhub>\n  Hub \"{addr}\"\n  {extra}\n</Plugin>\n"),
        );
        let output = collectd.run_once();
        assert!(output.status.success(), "{output:?}\n{}", collectd.log());
        let (files, dropped) = written_or_dropped(&collectd, directory);
        assert_eq!(
            files.len() + dropped,
            7,
            "{extra}: {files:?}\n{}",
            collectd.log()
        );
    }
    hub.shutdown();
}

/// A `Write` the test can read while `run` writes to it.
#[derive(Clone, Default)]
struct SharedBuffer(Arc<Mutex<Vec<u8>>>);

impl Write for SharedBuffer {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl SharedBuffer {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

/// `(identifier, interval, timestamp, value)` of the lines for `identifier`.
fn putvals(text: &str, identifier: &str) -> Vec<(String, String, u64, i64)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.split(' ');
            let (Some("PUTVAL"), Some(id), Some(interval), Some(value), None) = (
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
                parts.next(),
            ) else {
                panic!("not a PUTVAL line: {line:?}");
            };
            if !id.ends_with(&format!("/{identifier}")) {
                return None;
            }
            let (ts, v) = value.split_once(':').expect("time:value");
            Some((
                id.to_string(),
                interval.to_string(),
                ts.parse().expect("an integer timestamp"),
                v.parse().expect("an integer value"),
            ))
        })
        .collect()
}

#[test]
fn collectd_exec_prints_fedoras_putval_lines_for_a_live_hub() {
    const MESSAGES: u64 = 200;
    let (bus, hub) = slow_hub(10, Some(0.5));
    let options = ExecOptions {
        socket: hub.monitoring_endpoint().unwrap().to_string(),
        host: "busgateway01.example.org".into(),
        service: "fedmsg-hub".into(),
        interval_secs: 0.0, // from the document: 0.5
        timeout: Duration::from_secs(10),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let out = SharedBuffer::default();
    let runner = {
        let (options, stop, out) = (options.clone(), stop.clone(), out.clone());
        std::thread::spawn(move || collectd_exec::run(&options, stop, out))
    };
    // Subscribed (a document arrived) before the burst, so every window is seen.
    assert!(
        wait_until(Duration::from_secs(10), || !out.text().is_empty()),
        "no PUTVAL line within 10 s"
    );
    for i in 1..=MESSAGES {
        bus.send("burst", i, json!({}));
    }
    let backlog = "queue_length-NullConsumer_backlog";
    let summed =
        |identifier: &str| -> i64 { putvals(&out.text(), identifier).iter().map(|p| p.3).sum() };
    let done = wait_until(Duration::from_secs(60), || {
        let values: Vec<f64> = putvals(&out.text(), backlog)
            .iter()
            .map(|p| p.3 as f64)
            .collect();
        rose_and_fell(&values) && summed("gauge-NullConsumer_out") == MESSAGES as i64
    });
    stop.store(true, Ordering::Release);
    let result = runner.join().unwrap();
    let text = out.text();
    assert!(result.is_ok(), "{result:?}");
    assert!(done, "backlog did not rise and drain:\n{text}");

    let lines = putvals(&text, backlog);
    let (id, interval, ts, _) = &lines[0];
    assert_eq!(
        id,
        "busgateway01.example.org/fedmsg-hub/queue_length-NullConsumer_backlog"
    );
    assert_eq!(interval, "interval=0.5");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(now.abs_diff(*ts) < 120, "{ts} vs {now}");
    // moksha's per-window counts add up to the burst.
    assert_eq!(summed("gauge-NullConsumer_in"), MESSAGES as i64);
    assert_eq!(summed("gauge-NullConsumer_exceptions"), 0);
    let max: Vec<i64> = putvals(&text, "response_time-NullConsumer_max")
        .iter()
        .map(|p| p.3)
        .collect();
    assert!(max.iter().any(|v| (9..2000).contains(v)), "{max:?}");
    assert!(!putvals(&text, "gauge-MonitoringProducer_exceptions").is_empty());
    // Every document gives the same 8 lines, in Fedora's order.
    let first: Vec<&str> = text
        .lines()
        .take(8)
        .map(|l| l.split(' ').nth(1).unwrap())
        .collect();
    let h = "busgateway01.example.org/fedmsg-hub";
    assert_eq!(
        first,
        [
            format!("{h}/queue_length-NullConsumer_backlog"),
            format!("{h}/gauge-NullConsumer_exceptions"),
            format!("{h}/gauge-NullConsumer_in"),
            format!("{h}/gauge-NullConsumer_out"),
            format!("{h}/response_time-NullConsumer_min"),
            format!("{h}/response_time-NullConsumer_max"),
            format!("{h}/response_time-NullConsumer_avg"),
            format!("{h}/gauge-MonitoringProducer_exceptions"),
        ]
    );
    hub.shutdown();
}

#[test]
fn collectd_exec_gives_up_with_a_clear_error_when_no_hub_publishes() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let options = ExecOptions {
        socket: format!("tcp://127.0.0.1:{port}"),
        host: "h".into(),
        service: "fedmsg-hub".into(),
        interval_secs: 5.0,
        timeout: Duration::from_millis(500),
    };
    let error = collectd_exec::run(&options, Arc::new(AtomicBool::new(false)), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!(
            "no monitoring document from tcp://127.0.0.1:{port} in 0.5"
        )),
        "{error}"
    );
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("monitoring-fedmsg-hub.socket");
    let options = ExecOptions {
        socket: format!("ipc://{}", missing.display()),
        ..options
    };
    let error = collectd_exec::run(&options, Arc::new(AtomicBool::new(false)), Vec::new())
        .unwrap_err()
        .to_string();
    assert!(
        error.starts_with(&format!("UNKNOWN - {} does not exist", missing.display())),
        "{error}"
    );
}

/// Not a test on its own: the child program of
/// [`collectd_runs_the_exec_form_as_nobody_and_graphs_the_backlog`]. collectd's
/// exec plugin runs this test binary with `--exact` and this test's name, and
/// [`CHILD_SOCKET_ENV`] set; it then does what `fedhub collectd-exec` does:
/// `collectd_exec::run` with the host and interval collectd passes in
/// `COLLECTD_HOSTNAME` and `COLLECTD_INTERVAL`, PUTVAL lines on stdout. Without
/// the variable it returns at once.
#[test]
fn exec_plugin_child() {
    let Ok(socket) = std::env::var(CHILD_SOCKET_ENV) else {
        return;
    };
    let options = ExecOptions {
        socket,
        host: collectd_exec::default_host(),
        service: "fedmsg-hub".into(),
        interval_secs: collectd_exec::default_interval_secs(),
        timeout: Duration::from_secs(30),
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        // Never outlive the test by much, whatever collectd does.
        let stop = stop.clone();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_secs(180));
            stop.store(true, Ordering::Release);
        });
    }
    if let Err(e) = collectd_exec::run(&options, stop, std::io::stdout().lock()) {
        eprintln!("fedhub collectd-exec: {e}");
    }
}

#[test]
fn collectd_runs_the_exec_form_as_nobody_and_graphs_the_backlog() {
    const MESSAGES: u64 = 250;
    let (bus, hub) = slow_hub(20, Some(1.0));
    let socket = hub.monitoring_endpoint().unwrap().to_string();
    let me = std::env::current_exe().unwrap();
    // The exec plugin refuses to run programs as root: run the child as nobody.
    let block = format!(
        "<Plugin exec>\n  Exec \"nobody:nogroup\" \"{}\" \"--exact\" \"exec_plugin_child\" \"--nocapture\" \"--test-threads=1\" \"--quiet\"\n</Plugin>\n",
        me.display()
    );
    let collectd = Collectd::new(&["exec"], &block);
    let mut daemon = collectd.start(&[(CHILD_SOCKET_ENV, &socket)]);
    let backlog = "queue_length-NullConsumer_backlog";
    let reading = wait_until(Duration::from_secs(30), || {
        !collectd.values("fedmsg-hub", backlog).is_empty()
    });
    assert!(
        reading,
        "the exec child wrote nothing within 30 s (collectd exit: {:?}); log:\n{}",
        daemon.exited(),
        collectd.log()
    );
    for i in 1..=MESSAGES {
        bus.send("burst", i, json!({}));
    }
    let done = wait_until(Duration::from_secs(60), || {
        rose_and_fell(&finite(&collectd.values("fedmsg-hub", backlog)))
    });
    // One more document for the last windows' counts and times.
    std::thread::sleep(Duration::from_millis(2500));
    daemon.stop();
    let log = collectd.log();
    let values = finite(&collectd.values("fedmsg-hub", backlog));
    assert!(done, "backlog {values:?}; collectd's log:\n{log}");
    let peak = values.iter().copied().fold(0.0, f64::max);
    assert!(peak >= 10.0, "peak backlog {peak} in {values:?}");
    let inputs: f64 = finite(&collectd.values("fedmsg-hub", "gauge-NullConsumer_in"))
        .iter()
        .sum();
    // Values with a timestamp already seen (two documents in one second) are
    // dropped by collectd, as with Fedora's script: most of the burst is there.
    assert!(
        inputs > 0.0 && inputs <= MESSAGES as f64,
        "in {inputs}; log:\n{log}"
    );
    let max = finite(&collectd.values("fedmsg-hub", "response_time-NullConsumer_max"));
    assert!(max.iter().any(|v| (19.0..2000.0).contains(v)), "{max:?}");
    assert!(
        !collectd
            .values("fedmsg-hub", "gauge-MonitoringProducer_exceptions")
            .is_empty(),
        "{log}"
    );
    println!("EXECLOG\n{log}");
    assert!(!log.contains("Cowardly refusing"), "{log}");
    hub.shutdown();
}

/// `fedhub collectd-exec`, the program an exec plugin block names, prints the
/// same lines for a live hub's monitoring socket and stops cleanly on SIGTERM.
#[test]
fn the_collectd_exec_command_prints_putval_lines_and_stops_on_sigterm() {
    let (bus, hub) = slow_hub(0, Some(0.3));
    let socket = hub.monitoring_endpoint().unwrap().to_string();
    for i in 0..5 {
        bus.send("org.fedoraproject.dev.x.y", i, json!({}));
    }
    let mut child = Command::new(fedhub_binary())
        .args(["collectd-exec", "--socket", &socket, "--host", HOST])
        .args(["--service", "fedmsg-hub", "--interval-secs", "7"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let identifier = format!("PUTVAL {HOST}/fedmsg-hub/queue_length-NullConsumer_backlog ");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut backlog_line = None;
    while backlog_line.is_none() && Instant::now() < deadline {
        if let Ok(line) = lines_rx.recv_timeout(Duration::from_millis(200)) {
            // The first documents may catch a message in flight; wait for the drained state.
            if line.starts_with(&identifier) && line.ends_with(":0") {
                backlog_line = Some(line);
            }
        }
    }
    let line = backlog_line.expect("a drained-backlog PUTVAL line within 10 s");
    let fields: Vec<&str> = line.split(' ').collect();
    assert_eq!(fields.len(), 4, "{line}");
    assert_eq!(fields[2], "interval=7", "{line}");
    let (time, value) = fields[3].split_once(':').unwrap();
    assert!(time.parse::<u64>().unwrap() > 1_600_000_000, "{line}");
    assert_eq!(value, "0", "{line}");

    // SAFETY: kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "collectd-exec ignored SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert_eq!(status.code(), Some(0));
    hub.shutdown();
}

/// A missing ipc socket file exits 3 with the path named, as Fedora's script;
/// a socket address ZeroMQ rejects exits 1 naming the address; a negative or
/// non-numeric interval or timeout exits 2 naming the option.
#[test]
fn the_collectd_exec_command_names_a_missing_or_bad_socket() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("monitoring-fedmsg-hub.socket");
    let output = Command::new(fedhub_binary())
        .args(["collectd-exec", "--socket"])
        .arg(format!("ipc://{}", missing.display()))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(output.stdout.is_empty());

    for (flag, value) in [("--interval-secs", "-1"), ("--timeout-secs", "nan")] {
        let output = Command::new(fedhub_binary())
            .args(["collectd-exec", "--socket", "tcp://127.0.0.1:1"])
            .arg(format!("{flag}={value}"))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{flag} {value}: {stderr}");
        assert!(stderr.contains(flag), "{stderr}");
        assert!(output.stdout.is_empty());
    }

    let output = Command::new(fedhub_binary())
        .args(["collectd-exec", "--socket", "garbage:/nowhere"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("garbage:/nowhere"), "{stderr}");
}

/// The `<Plugin ...>` block of an example config, with `Hub "..."` pointed at `hub`.
fn example_block(file: &str, hub: &str) -> String {
    let path = workspace_root().join("examples/collectd").join(file);
    let text = fs::read_to_string(&path).unwrap();
    let start = text.find("<Plugin ").expect("a <Plugin> block");
    let end = text.find("</Plugin>").expect("a </Plugin> line") + "</Plugin>\n".len();
    text[start..end]
        .lines()
        .map(|line| {
            if line.trim_start().starts_with("Hub ") {
                format!("  Hub \"{hub}\"")
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

/// The shipped plugin example loads in a real collectd and reads a live hub.
#[test]
fn the_example_plugin_config_reads_a_live_hub() {
    let (_bus, hub) = slow_hub(0, None);
    let addr = hub.http_addr().unwrap().to_string();
    let collectd = Collectd::new(&["fedhub"], &example_block("fedhub.conf", &addr));
    let output = collectd.run_once();
    let log = collectd.log();
    assert!(output.status.success(), "{output:?}\n{log}");
    assert!(
        log.contains(&format!(
            "reading http://{addr}/state every interval as plugin fedmsg-hub"
        )),
        "{log}"
    );
    assert!(!log.contains("[error]"), "{log}");
    hub.shutdown();
}

/// The shipped exec example's command line is one `fedhub` accepts.
#[test]
fn the_example_exec_config_names_a_valid_command_line() {
    let block = example_block("fedhub-exec.conf", "");
    let exec = block
        .lines()
        .find(|l| l.trim_start().starts_with("Exec "))
        .expect("an Exec line");
    let words: Vec<&str> = exec.split('"').skip(1).step_by(2).collect();
    assert_eq!(words[1], "/usr/bin/fedhub", "{exec}");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fedhub.toml");
    let socket = dir.path().join("monitoring.socket");
    fs::write(
        &config,
        format!("[monitoring]\nsocket = \"ipc://{}\"\n", socket.display()),
    )
    .unwrap();
    let args: Vec<String> = words[2..]
        .iter()
        .map(|w| {
            if w.ends_with(".toml") {
                config.display().to_string()
            } else {
                w.to_string()
            }
        })
        .collect();
    // The config's socket is used (and is missing: the hub is not running).
    let output = Command::new(fedhub_binary()).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains(&socket.display().to_string()), "{stderr}");
}
