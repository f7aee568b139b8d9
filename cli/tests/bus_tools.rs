//! Seeing the bus and trusting what the CLI says: the hub's outbound socket
//! followed by `fedhub tail` and the real `fedmsg-tail`, `fedhub publish`'s
//! checks (connection, topics, endpoints, subscriptions), Ctrl-C on `tail`,
//! and one clear line per error.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use fedhub_testkit::*;
use serde_json::{json, Value};

/// How long any single step may take before the test fails.
const STEP: Duration = Duration::from_secs(30);

/// A hub config on free ports in a temp dir.
struct HubFiles {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
    http: std::net::SocketAddr,
    inbound: String,
}

fn hub_files(rest: &str) -> HubFiles {
    let dir = tempfile::tempdir().unwrap();
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let inbound = format!("tcp://127.0.0.1:{}", free_port());
    let path = dir.path().join("fedhub.toml");
    std::fs::write(
        &path,
        format!("[bus]\ninbound = \"{inbound}\"\n{rest}\n[http]\nlisten = \"{http}\"\n"),
    )
    .unwrap();
    HubFiles {
        dir,
        path,
        http,
        inbound,
    }
}

/// Starts `fedhub run -c` and waits until it is ready.
fn start_hub(files: &HubFiles, sections: &str) -> Child {
    if !sections.is_empty() {
        let mut text = std::fs::read_to_string(&files.path).unwrap();
        text.push_str(sections);
        std::fs::write(&files.path, text).unwrap();
    }
    let mut child = Command::new(fedhub_binary())
        .args(["run", "-c"])
        .arg(&files.path)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let ready = wait_until(STEP, || {
        std::net::TcpStream::connect(files.http).is_ok()
            && http_get(files.http, "/health/readyz").0 == 200
    });
    if !ready {
        let _ = child.kill();
        panic!("the hub on {} never became ready", files.http);
    }
    child
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

fn lines_of(child: &mut Child) -> Receiver<String> {
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

fn fedhub(args: &[&str]) -> std::process::Output {
    Command::new(fedhub_binary()).args(args).output().unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn the_outbound_socket_is_followed_by_fedhub_tail_fedmsg_tail_and_a_raw_subscriber() {
    let outbound = format!("tcp://127.0.0.1:{}", free_port());
    let files = hub_files(&format!("outbound = \"{outbound}\""));
    let hub = start_hub(&files, "");

    // fedhub tail -c: every endpoint of the hub's config, and its outbound.
    let mut fedhub_tail = Command::new(fedhub_binary())
        .args(["tail", "--idle-timeout-secs", "60", "-c"])
        .arg(&files.path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let fedhub_lines = lines_of(&mut fedhub_tail);
    // The real fedmsg-tail, with the outbound as its only endpoint.
    let fedmsg_config = files.dir.path().join("fedmsg-config.py");
    write_fedmsg_config(
        &fedmsg_config,
        &json!({
            "topic_prefix": "org.fedoraproject",
            "environment": "dev",
            "high_water_mark": 0,
            "io_threads": 1,
            "zmq_enabled": true,
            "endpoints": { "fedhub.outbound": [outbound] },
        }),
    );
    let mut fedmsg_tail = python_tool("fedmsg-tail", files.dir.path())
        .arg("--config-filename")
        .arg(&fedmsg_config)
        .spawn()
        .unwrap();
    let fedmsg_lines = lines_of(&mut fedmsg_tail);
    // A bare SUB socket, to see the frames as they are on the wire.
    let context = zmq::Context::new();
    let raw = context.socket(zmq::SUB).unwrap();
    raw.set_subscribe(b"").unwrap();
    raw.set_rcvtimeo(100).unwrap();
    raw.connect(&outbound).unwrap();

    // Subscriptions join asynchronously: publish until every follower has
    // printed a message, each with a body of its own.
    let mut sent: Vec<String> = Vec::new();
    let mut raw_frames: Vec<Vec<Vec<u8>>> = Vec::new();
    let mut fedhub_printed: Vec<String> = Vec::new();
    let mut fedmsg_printed: Vec<String> = Vec::new();
    let deadline = Instant::now() + STEP * 2;
    let found = |printed: &[String], sent: &[String]| {
        sent.iter().any(|body| {
            let id = serde_json::from_str::<Value>(body).unwrap()["msg_id"]
                .as_str()
                .unwrap()
                .to_string();
            printed.iter().any(|line| line.contains(&id))
        })
    };
    while Instant::now() < deadline {
        let body = json!({"log": "h\u{e9}llo", "n": sent.len(), "ratio": 1.0}).to_string();
        let output = fedhub(&[
            "publish",
            "--endpoint",
            &files.inbound,
            "--topic",
            "logger.log",
            "--json",
            &body,
            "--wait-secs",
            "10",
        ]);
        assert!(output.status.success(), "{}", text(&output.stderr));
        sent.push(text(&output.stdout).trim().to_string());
        let pause = Instant::now() + Duration::from_millis(300);
        while Instant::now() < pause {
            if let Ok(frames) = raw.recv_multipart(0) {
                raw_frames.push(frames);
            }
        }
        fedhub_printed.extend(fedhub_lines.try_iter());
        fedmsg_printed.extend(fedmsg_lines.try_iter());
        if !raw_frames.is_empty() && found(&fedhub_printed, &sent) && found(&fedmsg_printed, &sent)
        {
            break;
        }
    }
    let _ = fedmsg_tail.kill();
    let _ = fedmsg_tail.wait();
    let _ = fedhub_tail.kill();
    let _ = fedhub_tail.wait();
    stop(hub);

    // Byte for byte: two frames, the topic and the body exactly as published.
    assert!(!raw_frames.is_empty(), "nothing arrived on {outbound}");
    for frames in &raw_frames {
        assert_eq!(frames.len(), 2);
        assert_eq!(frames[0], b"org.fedoraproject.dev.logger.log");
        let body = text(&frames[1]);
        assert!(sent.contains(&body), "{body} is not one of {sent:?}");
    }
    assert!(
        found(&fedhub_printed, &sent),
        "fedhub tail -c printed none of the messages: {fedhub_printed:?}"
    );
    let line = fedhub_printed
        .iter()
        .find(|line| sent.contains(line))
        .expect("fedhub tail prints the canonical envelope as sent");
    assert!(line.contains(r#""log":"h\u00e9llo""#), "{line}");
    assert!(
        found(&fedmsg_printed, &sent),
        "fedmsg-tail printed none of the messages: {fedmsg_printed:?}"
    );
    let line = fedmsg_printed
        .iter()
        .find(|line| line.contains("org.fedoraproject.dev.logger.log"))
        .unwrap();
    // fedmsg-tail logs the decoded dict (Python's repr).
    assert!(line.contains("'log': 'héllo'"), "{line}");
    assert!(line.contains("'ratio': 1.0"), "{line}");
}

#[test]
fn tail_of_a_hubs_inbound_says_it_is_not_a_publisher_and_what_to_tail() {
    let files = hub_files("");
    let hub = start_hub(&files, "");
    let output = fedhub(&[
        "tail",
        "--endpoint",
        &files.inbound,
        "--idle-timeout-secs",
        "3",
    ]);
    stop(hub);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert_eq!(
        stderr.lines().collect::<Vec<_>>(),
        vec![format!(
            "{} is not a publisher (its socket refused a subscriber): a hub's [bus] inbound is where publishers connect; tail the hub's [bus] outbound, or tail -c with its config",
            files.inbound
        )],
        "said once"
    );
}

#[test]
fn tail_of_a_config_without_anything_to_follow_says_what_to_set() {
    let files = hub_files("");
    let output = Command::new(fedhub_binary())
        .args(["tail", "-c"])
        .arg(&files.path)
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("[bus] outbound"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
}

#[test]
fn tail_stops_without_an_error_on_ctrl_c() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let mut tail = Command::new(fedhub_binary())
        .args(["tail", "--endpoint", &endpoint])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    // SAFETY: sending a signal to our own child process.
    unsafe {
        libc::kill(tail.id() as i32, libc::SIGINT);
    }
    let began = Instant::now();
    let status = loop {
        if let Some(status) = tail.try_wait().unwrap() {
            break status;
        }
        assert!(began.elapsed() < STEP, "tail did not stop on SIGINT");
        std::thread::sleep(Duration::from_millis(20));
    };
    let output = tail.wait_with_output().unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert_eq!(stderr, "", "an interrupt is the normal way to stop tail");
}

#[test]
fn publish_where_nothing_listens_fails_naming_the_address() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let began = Instant::now();
    let output = fedhub(&[
        "publish",
        "--endpoint",
        &endpoint,
        "--topic",
        "logger.log",
        "--json",
        "{}",
        "--wait-secs",
        "1",
    ]);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        began.elapsed() < Duration::from_secs(10),
        "the wait is bounded"
    );
    assert!(stderr.contains(&endpoint), "{stderr}");
    assert!(stderr.contains("nothing was sent"), "{stderr}");
    assert!(stderr.contains("--wait-secs"), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert_eq!(text(&output.stdout), "", "no envelope printed as if sent");
}

#[test]
fn topics_fedmsg_would_never_produce_are_refused_with_the_rule() {
    let cases = [
        ("logger log", "space"),
        ("", "empty"),
        (".logger.log", "empty segment"),
        ("logger..log", "empty segment"),
        ("logger.log.", "empty segment"),
        ("logger.*", "wildcard"),
        (
            "fedoraproject.prod.logger.log",
            "missing the start of the prefix",
        ),
    ];
    for (topic, problem) in cases {
        let output = fedhub(&[
            "publish",
            "--endpoint",
            "tcp://127.0.0.1:9",
            "--topic",
            topic,
            "--json",
            "{}",
        ]);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{topic:?}: {stderr}");
        assert!(stderr.contains(problem), "{topic:?}: {stderr}");
        assert!(
            stderr.contains(&format!("{topic:?}")),
            "{topic:?}: {stderr}"
        );
        assert_eq!(text(&output.stdout), "", "{topic:?}: nothing sent");
    }
    let output = fedhub(&[
        "publish",
        "--endpoint",
        "tcp://127.0.0.1:9",
        "--topic",
        "logger.*",
        "--json",
        "{}",
    ]);
    assert!(
        text(&output.stderr).contains("words separated by single dots"),
        "the rule is in the message"
    );
    let output = fedhub(&[
        "publish",
        "--endpoint",
        "tcp://127.0.0.1:9",
        "--environment",
        "pr od",
        "--topic",
        "logger.log",
        "--json",
        "{}",
    ]);
    assert!(text(&output.stderr).contains("--environment"));
}

#[test]
fn an_endpoint_without_a_scheme_is_refused_saying_what_was_expected() {
    for command in [
        vec!["publish", "--topic", "logger.log", "--json", "{}"],
        vec!["tail", "--count", "1"],
    ] {
        let mut args = command.clone();
        args.extend(["--endpoint", "127.0.0.1:9941"]);
        let output = fedhub(&args);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{command:?}: {stderr}");
        assert!(stderr.contains("\"127.0.0.1:9941\""), "{stderr}");
        assert!(stderr.contains("expected tcp://host:port"), "{stderr}");
        assert!(!stderr.contains("Invalid argument"), "{stderr}");
    }
}

#[test]
fn publish_takes_the_configs_environment_and_reports_a_topic_the_hub_filters_out() {
    let files = hub_files("");
    let hub = start_hub(
        &files,
        "[hub]\nenvironment = \"prod\"\n[consumers.NullConsumer]\nenabled = true\ntopics = [\"org.fedoraproject.prod.*\"]\n",
    );
    let config = files.path.to_str().unwrap();
    // With -c the environment is the config's: the hub subscribes to it.
    let output = fedhub(&[
        "publish",
        "-c",
        config,
        "--endpoint",
        &files.inbound,
        "--topic",
        "logger.log",
        "--json",
        "{}",
    ]);
    let stderr = text(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    assert!(
        text(&output.stdout).contains("\"topic\":\"org.fedoraproject.prod.logger.log\""),
        "{}",
        text(&output.stdout)
    );
    let handled = || {
        let (_, body) = http_get(files.http, "/metrics");
        body.lines()
            .any(|l| l.starts_with("fedhub_consumer_handled_total{consumer=\"NullConsumer\"} 1"))
    };
    assert!(wait_until(STEP, handled), "the hub handled the message");
    // Another environment: the hub's subscription drops it, and publish says so.
    let output = fedhub(&[
        "publish",
        "--environment",
        "stg",
        "--endpoint",
        &files.inbound,
        "--topic",
        "logger.log",
        "--json",
        "{}",
    ]);
    let stderr = text(&output.stderr);
    stop(hub);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("does not subscribe to org.fedoraproject.stg.logger.log"),
        "{stderr}"
    );
    assert!(stderr.contains("org.fedoraproject.prod."), "{stderr}");
}

#[test]
fn a_port_in_use_is_one_line_naming_the_setting() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let cases = [
        ("[monitoring]\nsocket", "[monitoring] socket"),
        ("[bus]\noutbound", "[bus] outbound"),
    ];
    for (key, setting) in cases {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("fedhub.toml");
        let (section, name) = key.split_once('\n').unwrap();
        let other = if section == "[bus]" {
            "inbound = \"tcp://127.0.0.1:*\"\n".to_string()
        } else {
            "[bus]\ninbound = \"tcp://127.0.0.1:*\"\n".to_string()
        };
        let text_ = if section == "[bus]" {
            format!("[bus]\n{name} = \"tcp://127.0.0.1:{port}\"\n{other}[http]\nlisten = \"127.0.0.1:0\"\n")
        } else {
            format!("{other}{section}\n{name} = \"tcp://127.0.0.1:{port}\"\n[http]\nlisten = \"127.0.0.1:0\"\n")
        };
        std::fs::write(&path, text_).unwrap();
        let output = Command::new(fedhub_binary())
            .args(["run", "-c"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .output()
            .unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{stderr}");
        let lines: Vec<&str> = stderr
            .lines()
            .filter(|l| l.contains("Address already in use"))
            .collect();
        assert_eq!(lines.len(), 1, "one line: {stderr}");
        assert_eq!(
            lines[0],
            format!(
                "fedhub: {setting} = \"tcp://127.0.0.1:{port}\": cannot bind: Address already in use"
            )
        );
    }
    drop(taken);
}
