//! The `fedhub` command as users run it: config errors, signals, publish and tail.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fedhub_testkit::*;

fn write_config(dir: &std::path::Path, text: &str) -> std::path::PathBuf {
    let path = dir.join("fedhub.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn a_bad_config_is_refused_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "[bus]\nendpoints = {}\ninbund = \"tcp://127.0.0.1:1\"\n",
            "inbund",
        ),
        (
            "[consumers.NullConsumer]\nwhen_full = \"sometimes\"\n",
            "when_full",
        ),
        ("[consumers.Nomer]\nenabled = true\n", "no such consumer"),
        (
            "[consumers.NullConsumer]\nenabled = true\nsleep_msec = 3\n",
            "sleep_msec",
        ),
        (
            "[consumers.NullConsumer]\nenabled = true\ncapacity_message = 10\n",
            "did you mean capacity_messages?",
        ),
        ("this is [not toml", "cannot read"),
    ];
    for (text, needle) in cases {
        let path = write_config(dir.path(), text);
        let output = Command::new(fedhub_binary())
            .args(["run", "--check", "-c"])
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{text:?}: {stderr}");
        assert!(stderr.contains(needle), "{text:?}: {stderr}");
    }
    let output = Command::new(fedhub_binary())
        .args(["run", "-c", "/nonexistent/fedhub.toml"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/fedhub.toml"));
}

#[test]
fn an_environment_override_reaches_the_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), "[consumers.NullConsumer]\nenabled = true\n");
    let output = Command::new(fedhub_binary())
        .args(["run", "--check", "-c"])
        .arg(&path)
        .env("FEDHUB_CONSUMERS__NULLCONSUMER__ENABLED", "false")
        .output()
        .unwrap();
    assert!(output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(stdout.trim(), "configuration is valid; consumers enabled:");
}

/// A config file in a temp dir for a hub on free ports: `[bus] inbound` and
/// `[http] listen` set, followed by `rest` (other sections).
struct HubFiles {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    port: u16,
    inbound: String,
}

fn hub_files(rest: &str) -> HubFiles {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let inbound = format!("tcp://127.0.0.1:{}", free_port());
    let path = write_config(
        dir.path(),
        &format!("[bus]\ninbound = \"{inbound}\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n{rest}"),
    );
    HubFiles {
        _dir: dir,
        path,
        port,
        inbound,
    }
}

fn start_hub(config: &std::path::Path, extra: &[&str]) -> std::process::Child {
    Command::new(fedhub_binary())
        .args(["run", "-c"])
        .arg(config)
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn wait_ready(port: u16) {
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    assert!(
        wait_until(Duration::from_secs(20), || std::net::TcpStream::connect(
            addr
        )
        .is_ok()
            && http_get(addr, "/health/readyz").0 == 200),
        "hub on {port} never became ready"
    );
}

fn signal(child: &std::process::Child, sig: i32) {
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(child.id() as i32, sig);
    }
}

#[test]
fn an_idle_hub_stops_promptly_on_sigterm_and_sigint() {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let path = write_config(
            dir.path(),
            &format!(
                "[bus]\ninbound = \"tcp://127.0.0.1:*\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[consumers.NullConsumer]\nenabled = true\n"
            ),
        );
        let mut child = start_hub(&path, &[]);
        wait_ready(port);
        let began = Instant::now();
        signal(&child, sig);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(
                began.elapsed() < Duration::from_secs(10),
                "hub ignored signal {sig}"
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        assert!(status.success(), "exit {status:?}");
        assert!(
            began.elapsed() < Duration::from_secs(3),
            "took {:?}",
            began.elapsed()
        );
    }
}

#[test]
fn demo_traffic_flows_through_a_running_hub() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = write_config(
        dir.path(),
        &format!(
            "[bus]\ninbound = \"tcp://127.0.0.1:*\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n[consumers.NullConsumer]\nenabled = true\n"
        ),
    );
    let child = start_hub(&path, &["--demo", "--demo-rate", "200"]);
    wait_ready(port);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let handled = || {
        let (_, state) = http_get(addr, "/state");
        let state: serde_json::Value = serde_json::from_str(&state).unwrap_or_default();
        state["consumers"][0]["handled_total"].as_u64().unwrap_or(0)
    };
    assert!(wait_until(Duration::from_secs(20), || handled() >= 100));
    signal(&child, libc::SIGTERM);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success());
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(log.contains("demo traffic starting"), "{log}");
    assert!(log.contains("hub stopped"), "{log}");
}

#[test]
fn publish_and_tail_round_trip() {
    let port = free_port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let mut tail = Command::new(fedhub_binary())
        .args([
            "tail",
            "--endpoint",
            &endpoint,
            "--count",
            "3",
            "--idle-timeout-secs",
            "20",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut publish = Command::new(fedhub_binary())
        .args([
            "publish",
            "--bind",
            "--endpoint",
            &endpoint,
            "--topic",
            "logger.log",
            "--wait-subscribers",
            "1",
            "--wait-secs",
            "20",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = publish.stdin.take().unwrap();
        writeln!(stdin, r#"{{"log": "first"}}"#).unwrap();
        writeln!(stdin, "not json").unwrap();
        writeln!(stdin, r#"{{"log": "h\u00e9llo"}}"#).unwrap();
        writeln!(stdin, r#"{{"n": 1.0, "list": [1, 2]}}"#).unwrap();
    }
    let published = publish.wait_with_output().unwrap();
    // One line was rejected: the exit status says so, the rest were sent.
    assert_eq!(published.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&published.stderr);
    assert!(stderr.contains("line 2: not valid JSON"), "{stderr}");
    let sent: Vec<String> = String::from_utf8_lossy(&published.stdout)
        .lines()
        .map(str::to_string)
        .collect();
    assert_eq!(sent.len(), 3);

    let stdout = BufReader::new(tail.stdout.take().unwrap());
    let received: Vec<String> = stdout.lines().map(Result::unwrap).collect();
    assert!(tail.wait().unwrap().success());
    assert_eq!(received, sent);
    let first: serde_json::Value = serde_json::from_str(&received[0]).unwrap();
    assert_eq!(first["topic"], "org.fedoraproject.dev.logger.log");
    assert_eq!(first["msg"]["log"], "first");
    assert_eq!(first["i"], 1);
    assert!(received[1].contains(r#""h\u00e9llo""#));
    assert!(received[2].contains(r#"{"list":[1,2],"n":1.0}"#));
}

#[test]
fn the_documented_example_config_is_valid() {
    let path = format!("{}/examples/fedhub.toml", workspace_root().display());
    let output = Command::new(fedhub_binary())
        .args(["run", "--check", "-c", &path])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// The README's first command: `fedhub run --demo` without a config file runs on
/// the embedded defaults (ports moved by environment overrides only), with the
/// NullConsumer, the history store and the statistics consumer, whose SQLite
/// files land in the working directory; the history answers datagrepper
/// queries.
#[test]
fn embedded_defaults_run_the_demo_with_the_history_store() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let inbound = free_port();
    let child = Command::new(fedhub_binary())
        .args(["run", "--demo", "--demo-rate", "200"])
        .current_dir(dir.path())
        .env("FEDHUB_HTTP__LISTEN", format!("127.0.0.1:{port}"))
        .env("FEDHUB_BUS__INBOUND", format!("tcp://127.0.0.1:{inbound}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let stored = || {
        let (_, body) = http_get(addr, "/datagrepper/raw?delta=3600&rows_per_page=5");
        let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        body["total"].as_u64().unwrap_or(0)
    };
    assert!(wait_until(Duration::from_secs(20), || stored() >= 50));
    let (_, state) = http_get(addr, "/state");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let mut names: Vec<&str> = state["consumers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["Nommer", "NullConsumer", "StatsConsumer"]);
    signal(&child, libc::SIGTERM);
    let output = child.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(dir.path().join("fedhub-history.sqlite").is_file());
    assert!(dir.path().join("fedhub-statscache.sqlite").is_file());
}

/// Runs `fedhub run --check` on `text`; returns the exit code and stderr.
fn check_config(text: &str) -> (Option<i32>, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(dir.path(), text);
    let output = Command::new(fedhub_binary())
        .args(["run", "--check", "-c"])
        .arg(&path)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A port above 65535 is refused at load (so by `--check` too), naming the key,
/// instead of wrapping around to another (possibly privileged) port at run.
#[test]
fn ports_out_of_range_are_refused_naming_the_key() {
    let cases = [
        ("[bus]\ninbound = \"tcp://127.0.0.1:99999\"\n", "[bus] inbound"),
        ("[bus]\ninbound = \"tcp://127.0.0.1:65599\"\n", "[bus] inbound"),
        ("[bus]\ninbound = \"tcp://127.0.0.1:port\"\n", "[bus] inbound"),
        ("[bus]\ninbound = \"tcp://127.0.0.1\"\n", "[bus] inbound"),
        (
            "[bus]\nendpoints = { \"bodhi.app01\" = [\"tcp://127.0.0.1:3000\", \"tcp://127.0.0.1:70000\"] }\n",
            "[bus] endpoints.bodhi.app01",
        ),
        (
            "[monitoring]\nsocket = \"tcp://127.0.0.1:99999\"\n",
            "[monitoring] socket",
        ),
        ("[publish]\nbind = [\"tcp://*:123456\"]\n", "[publish] bind"),
        (
            "[publish]\nconnect = [\"tcp://127.0.0.1:-1\"]\n",
            "[publish] connect",
        ),
        ("[http]\nlisten = \"127.0.0.1:99999\"\n", "[http] listen"),
        ("[http]\nlisten = \"127.0.0.1:\"\n", "[http] listen"),
    ];
    for (text, key) in cases {
        let (code, stderr) = check_config(text);
        assert_eq!(code, Some(2), "{text:?}: {stderr}");
        assert!(stderr.contains(key), "{text:?} should name {key}: {stderr}");
        assert!(stderr.contains("65535"), "{text:?}: {stderr}");
    }
    // The edges and the wildcard stay valid.
    for text in [
        "[bus]\ninbound = \"tcp://127.0.0.1:65535\"\n[http]\nlisten = \"[::1]:0\"\n",
        "[bus]\ninbound = \"tcp://*:*\"\n[monitoring]\nsocket = \"ipc:///tmp/fedhub-monitoring.sock\"\n",
    ] {
        let (code, stderr) = check_config(text);
        assert_eq!(code, Some(0), "{text:?}: {stderr}");
    }
}

/// Every numeric setting has a range, checked at load (and by `--check`), and
/// the error names the key: nothing is accepted that misbehaves at run.
#[test]
fn numeric_settings_out_of_range_are_refused_naming_the_key() {
    let cases = [
        ("[bus]\nreconnect_ivl_ms = -100\n", "[bus] reconnect_ivl_ms"),
        ("[bus]\nreconnect_ivl_max_ms = -1\n", "[bus] reconnect_ivl_max_ms"),
        ("[bus]\nrcvhwm_messages = -1\n", "[bus] rcvhwm_messages"),
        ("[bus]\ntcp_keepalive_cnt = 0\n", "[bus] tcp_keepalive_cnt"),
        ("[bus]\ntcp_keepalive_idle_secs = -5\n", "[bus] tcp_keepalive_idle_secs"),
        ("[bus]\ntcp_keepalive_intvl_secs = 0\n", "[bus] tcp_keepalive_intvl_secs"),
        ("[bus]\nmax_message_bytes = 0\n", "[bus] max_message_bytes"),
        ("[hub]\nshutdown_grace_secs = 100000\n", "[hub] shutdown_grace_secs"),
        ("[hub]\nstart_timeout_secs = 0\n", "[hub] start_timeout_secs"),
        ("[hub]\nstatus_log_interval_secs = 1000000\n", "[hub] status_log_interval_secs"),
        ("[publish]\nlinger_ms = -5\n", "[publish] linger_ms"),
        ("[publish]\nsndhwm_messages = -1\n", "[publish] sndhwm_messages"),
        ("[publish]\nqueue_capacity_messages = 0\n", "[publish] queue_capacity_messages"),
        (
            "[consumers.NullConsumer]\nenabled = true\nsleep_ms = 1e300\n",
            "[consumers.NullConsumer] sleep_ms",
        ),
        (
            "[consumers.NullConsumer]\nenabled = true\nsleep_ms = -5\n",
            "[consumers.NullConsumer] sleep_ms",
        ),
        (
            "[consumers.NullConsumer]\nenabled = true\nretries = 1000000\n",
            "[consumers.NullConsumer] retries",
        ),
        (
            "[consumers.NullConsumer]\nenabled = true\ncapacity_messages = 1000000000000\n",
            "[consumers.NullConsumer] capacity_messages",
        ),
        (
            "[consumers.NullConsumer]\nenabled = true\ndead_letter_file = \"/nonexistent/dir/dead.jsonl\"\n",
            "[consumers.NullConsumer] dead_letter_file",
        ),
        (
            "[consumers.Nommer]\nenabled = true\nbusy_timeout_ms = 100000000000\n",
            "[consumers.Nommer] busy_timeout_ms",
        ),
        (
            "[consumers.Nommer]\nenabled = true\ncache_mib = 100000000\n",
            "[consumers.Nommer] cache_mib",
        ),
        (
            "[consumers.FedoraBadgesConsumer]\nenabled = true\nrank_interval_secs = 0\n",
            "[consumers.FedoraBadgesConsumer] rank_interval_secs",
        ),
    ];
    for (text, key) in cases {
        let (code, stderr) = check_config(text);
        assert_eq!(code, Some(2), "{text:?}: {stderr}");
        assert!(stderr.contains(key), "{text:?} should name {key}: {stderr}");
        assert!(stderr.contains("expected"), "{text:?}: {stderr}");
    }
    // The edges of each range are accepted.
    let (code, stderr) = check_config(
        "[hub]\nshutdown_grace_secs = 0\n[bus]\nreconnect_ivl_ms = 1\nreconnect_ivl_max_ms = 0\n[publish]\nlinger_ms = 0\n[consumers.NullConsumer]\nenabled = true\nsleep_ms = 60000.0\n",
    );
    assert_eq!(code, Some(0), "{stderr}");
}

/// Publishes `count` messages into `inbound` with `fedhub publish`.
fn publish_lines(inbound: &str, count: usize) {
    let mut publish = Command::new(fedhub_binary())
        .args(["publish", "--endpoint", inbound, "--topic", "logger.log"])
        .args(["--wait-secs", "2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    {
        let mut stdin = publish.stdin.take().unwrap();
        for n in 0..count {
            writeln!(stdin, r#"{{"n": {n}}}"#).unwrap();
        }
    }
    let output = publish.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
}

/// The value of one series on `/metrics`.
fn metric(addr: std::net::SocketAddr, series: &str) -> Option<f64> {
    let (_, text) = http_get(addr, "/metrics");
    text.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok()).flatten()
    })
}

/// Panics in a consumer are counted every time but logged as one short line
/// each, rate limited like other failures: no backtrace, even with
/// `RUST_BACKTRACE=1`, and no second report from the default panic hook.
#[test]
fn consumer_panics_are_logged_short_and_rate_limited() {
    let HubFiles {
        path,
        port,
        inbound,
        _dir,
    } = hub_files("[consumers.NullConsumer]\nenabled = true\npanic_every = 1\n");
    let child = Command::new(fedhub_binary())
        .args(["run", "-c"])
        .arg(&path)
        .env("RUST_BACKTRACE", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    wait_ready(port);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    publish_lines(&inbound, 500);
    let series = "fedhub_consumer_panics_total{consumer=\"NullConsumer\"}";
    assert!(
        wait_until(Duration::from_secs(20), || metric(addr, series)
            == Some(500.0)),
        "{:?}",
        metric(addr, series)
    );
    signal(&child, libc::SIGTERM);
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    assert!(!log.contains("stack backtrace"), "{log}");
    assert!(
        !log.contains("thread '"),
        "the default hook's report: {log}"
    );
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("NullConsumer panics on message"))
        .collect();
    assert!(!lines.is_empty(), "{log}");
    assert!(lines.len() <= 100, "{} panic lines", lines.len());
    for line in &lines {
        assert!(line.len() < 600, "{line}");
        assert!(line.contains("null.rs:"), "the panic's location: {line}");
    }
    assert!(log.len() < 64 * 1024, "{} bytes of log", log.len());
}

/// Oversized HTTP request heads are refused, counted by reason on `/metrics`
/// and `/state`, and logged rate limited instead of one ERROR line each.
#[test]
fn oversized_http_request_heads_are_counted_and_logged_rate_limited() {
    use std::io::Read;
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let path = write_config(
        dir.path(),
        &format!("[bus]\ninbound = \"\"\n[http]\nlisten = \"127.0.0.1:{port}\"\n"),
    );
    let child = start_hub(&path, &[]);
    wait_ready(port);
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let huge = "x".repeat(200 * 1024);
    for _ in 0..300 {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        // The server may close before reading all of it: a write error is fine.
        let _ = write!(
            stream,
            "GET /metrics HTTP/1.1\r\nHost: test\r\nX-Big: {huge}\r\n\r\n"
        );
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
    }
    let series = "fedhub_http_requests_rejected_total{reason=\"head_too_large\"}";
    assert!(
        wait_until(Duration::from_secs(20), || metric(addr, series)
            == Some(300.0)),
        "{:?}",
        metric(addr, series)
    );
    let (_, state) = http_get(addr, "/state");
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(
        state["http"]["requests_rejected_total"]["head_too_large"],
        300
    );
    assert_eq!(http_get(addr, "/health/livez").0, 200);
    signal(&child, libc::SIGTERM);
    let output = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&output.stderr);
    let lines = log.lines().filter(|l| l.contains("too large")).count();
    assert!(lines >= 1, "{log}");
    assert!(lines <= 50, "{lines} lines for 300 requests:\n{log}");
    assert!(log.contains("rejected http request"), "{log}");
}

/// SIGTERM with a backlog that cannot drain within `shutdown_grace_secs`: the
/// hub exits within the grace, logs per consumer how many messages were left
/// (counted as dropped), and exits with status 1, as documented.
#[test]
fn sigterm_with_a_backlog_stops_within_the_grace_and_exits_1() {
    let HubFiles {
        path,
        port,
        inbound,
        _dir,
    } = hub_files(
        "[hub]\nshutdown_grace_secs = 2\n[consumers.NullConsumer]\nenabled = true\nsleep_ms = 2\n",
    );
    let mut child = start_hub(&path, &[]);
    wait_ready(port);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    publish_lines(&inbound, 4000);
    let backlog = "fedhub_consumer_backlog{consumer=\"NullConsumer\"}";
    assert!(wait_until(Duration::from_secs(20), || metric(
        addr, backlog
    )
    .is_some_and(|b| b > 1500.0)));
    let began = Instant::now();
    signal(&child, libc::SIGTERM);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(began.elapsed() < Duration::from_secs(20), "still running");
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = began.elapsed();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut log).unwrap();
    assert_eq!(status.code(), Some(1), "{log}");
    assert!(took < Duration::from_millis(3500), "took {took:?}: {log}");
    let line = log
        .lines()
        .find(|l| l.contains("messages not handled"))
        .unwrap_or_else(|| panic!("no line for what was left: {log}"));
    assert!(line.contains("consumer=NullConsumer"), "{line}");
    assert!(line.contains(r#"reason="shutdown""#), "{line}");
}

/// The hub process's resident memory, in bytes.
fn rss_bytes(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kib * 1024
}

/// After a few large messages (40 bodies of 3.9 MB waiting together in a
/// mailbox, far fewer messages than a burst), the memory they took is returned
/// to the system once they are handled, without waiting for more traffic.
#[test]
fn memory_is_returned_after_large_messages() {
    let HubFiles {
        path,
        port,
        inbound,
        _dir,
    } = hub_files("[consumers.NullConsumer]\nenabled = true\nsleep_ms = 200\n");
    let mut child = start_hub(&path, &[]);
    wait_ready(port);
    let addr = format!("127.0.0.1:{port}").parse().unwrap();
    let idle = rss_bytes(child.id());
    // Sent at once from a PUB of our own, so they wait in the mailbox together.
    let context = zmq::Context::new();
    let publisher = context.socket(zmq::PUB).unwrap();
    publisher.set_sndhwm(0).unwrap();
    publisher.set_linger(5000).unwrap();
    publisher.connect(&inbound).unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let topic = "org.fedoraproject.dev.logger.log";
    let text = "x".repeat(3_900_000);
    for n in 0..40 {
        let body = format!(r#"{{"i":{n},"msg":{{"text":"{text}"}},"topic":"{topic}"}}"#);
        publisher
            .send_multipart([topic.as_bytes(), body.as_bytes()], 0)
            .unwrap();
    }
    drop(text);
    let handled = "fedhub_consumer_handled_total{consumer=\"NullConsumer\"}";
    assert!(wait_until(Duration::from_secs(30), || metric(
        addr, handled
    ) == Some(40.0)));
    let after = rss_bytes(child.id());
    let returned = wait_until(Duration::from_secs(20), || {
        rss_bytes(child.id()) < idle + 24 * 1024 * 1024
    });
    let now = rss_bytes(child.id());
    signal(&child, libc::SIGTERM);
    let _ = child.wait();
    assert!(
        returned,
        "resident {} MB idle, {} MB after the messages, {} MB 20 s later",
        idle >> 20,
        after >> 20,
        now >> 20
    );
}
