//! fedhub and the real Python fedmsg 1.1.7 (PyPI, in the venv made by
//! scripts/python-env.sh) on the same ZeroMQ sockets:
//!
//! - messages published by the fedmsg library (bound, as a service publishes,
//!   signed with x509 as Fedora's are) reach fedhub consumers byte for byte;
//! - `fedmsg-logger` (connecting to relay_inbound) reaches the hub's inbound socket;
//! - `fedhub publish --bind` is printed by `fedmsg-tail`;
//! - `fedhub tail` prints what the fedmsg library publishes, byte for byte;
//! - a validating hub accepts what fedmsg signs, and rejects tampered,
//!   re-signed, untrusted, revoked, expired-CRL and policy-violating variants
//!   for the reason fedmsg's own `fedmsg.crypto.validate` rejects them;
//! - what the hub (`ctx.publish`) and `fedhub publish -c` sign is byte for byte
//!   what `fedmsg.crypto.sign` makes, and passes `fedmsg.crypto.validate`.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use fedhub::{Envelope, HubBuilder};
use fedhub_testkit::*;
use serde_json::{json, Map, Value};

/// How long any single step may take before the test fails.
const STEP: Duration = Duration::from_secs(20);

/// The fedmsg settings every config here shares (fedmsg's repo defaults).
fn base_config() -> serde_json::Map<String, Value> {
    let config = json!({
        "topic_prefix": "org.fedoraproject",
        "environment": "dev",
        // Non-zero makes fedmsg set the obsolete zmq.HWM option, which
        // pyzmq 27 rejects; 0 means unlimited.
        "high_water_mark": 0,
        "io_threads": 1,
        "post_init_sleep": 0.5,
        "zmq_enabled": true,
        "zmq_linger": 1000,
        "endpoints": {},
    });
    config.as_object().unwrap().clone()
}

fn pki_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pki")
}

/// Lines of a child's stdout, read on a thread.
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

/// The next line, or a failure naming what was awaited and the child's stderr.
fn next_line(lines: &Receiver<String>, what: &str, child: &mut Child) -> String {
    match lines.recv_timeout(STEP) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let mut stderr = String::new();
            if let Some(mut e) = child.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut e, &mut stderr);
            }
            panic!("no {what} within {STEP:?}; stderr:\n{stderr}");
        }
    }
}

/// `tests/python/fedmsg_publish.py`: the fedmsg library publishing `messages`,
/// after the caller confirms (with [`PythonPublisher::go`]) that it receives probes.
struct PythonPublisher {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    _dir: tempfile::TempDir,
}

impl PythonPublisher {
    /// Starts the publisher bound at `endpoint` as the fedmsg service `peerpub.vm`.
    fn start(endpoint: &str, sign: bool, messages: &[Value]) -> PythonPublisher {
        let spec = json!({ "probe": true, "messages": messages });
        PythonPublisher::start_with_spec(endpoint, sign, &spec.to_string())
    }

    /// Like [`start`](Self::start), with the script's spec given as text: what
    /// Python's `json.loads` reads (`NaN` included) and JSON cannot express.
    fn start_with_spec(endpoint: &str, sign: bool, spec: &str) -> PythonPublisher {
        let dir = tempfile::tempdir().unwrap();
        let mut config = base_config();
        config.insert("name".into(), json!("peerpub.vm"));
        config.insert("endpoints".into(), json!({ "peerpub.vm": [endpoint] }));
        if sign {
            config.insert("sign_messages".into(), json!(true));
            config.insert("crypto_backend".into(), json!("x509"));
            config.insert("ssldir".into(), json!(pki_dir()));
            config.insert("certnames".into(), json!({"peerpub.vm": "peerpub-vm"}));
        }
        let config_file = dir.path().join("fedmsg-config.py");
        write_fedmsg_config(&config_file, &Value::Object(config));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/fedmsg_publish.py");
        let mut child = python_tool("python", dir.path())
            .args(["-W", "ignore"])
            .arg(script)
            .arg(&config_file)
            .arg(spec)
            .spawn()
            .unwrap();
        let stdin = child.stdin.take();
        let lines = lines_of(&mut child);
        let mut publisher = PythonPublisher {
            child,
            stdin,
            lines,
            _dir: dir,
        };
        let ready: Value = serde_json::from_str(&publisher.next("the ready line")).unwrap();
        assert_eq!(ready["event"], "ready", "{ready}");
        publisher
    }

    fn next(&mut self, what: &str) -> String {
        next_line(&self.lines, what, &mut self.child)
    }

    /// Stops the probes, publishes the messages, returns the frames fedmsg sent.
    fn go(mut self) -> Vec<(String, String)> {
        writeln!(self.stdin.take().unwrap(), "go").unwrap();
        let mut sent = Vec::new();
        loop {
            let event: Value = serde_json::from_str(&self.next("a sent line")).unwrap();
            match event["event"].as_str() {
                Some("sent") => sent.push((
                    event["frames"][0].as_str().unwrap().to_string(),
                    event["frames"][1].as_str().unwrap().to_string(),
                )),
                Some("done") => break,
                _ => panic!("unexpected {event}"),
            }
        }
        assert!(self.child.wait().unwrap().success());
        sent
    }
}

/// Bodies that exercise the encoding: non-ASCII text, floats that need Python's
/// repr, big and negative integers, nesting, empty containers, null and bools.
fn varied_messages() -> Vec<Value> {
    vec![
        json!({"modname": "git", "topic": "receive", "msg": {
            "commit": {"repo": "rpms/kernel", "username": "jforbes", "branch": "rawhide",
                       "message": "Linux v6.12 — «naïve» 日本語 😀", "stats": {"files": {}}},
        }}),
        json!({"modname": "buildsys", "topic": "build.state.change", "msg": {
            "build_id": 2_745_813, "new": 1, "old": 0, "owner": "ralph",
            "name": "python-fedmsg", "version": "1.1.7", "release": "3.fc42",
            "attempt": 1, "instance": "primary", "epoch": null,
        }}),
        json!({"modname": "bodhi", "topic": "update.comment", "msg": {
            "comment": {"karma": -1, "text": "tab\there, quote \" and backslash \\",
                        "timestamp": 1_795_392_000.25, "ratio": 0.1, "tiny": 1e-7,
                        "big": 12_345_678_901_234_567_i64, "huge": 1.5e300, "flags": [true, false, null]},
            "agent": "bowlofeggs", "updates": [],
        }}),
        json!({"modname": "fedbadges", "topic": "badge.award", "msg": {
            "user": {"username": "mattdm"}, "badge": {"name": "Crypto Badger", "id": "crypto-badger"},
        }}),
    ]
}

/// Starts a hub with a recording consumer connected to `endpoint`, and waits
/// until the Python publisher's probes reach it.
fn hub_receiving_from(
    endpoint: &str,
) -> (
    fedhub::RunningHub,
    std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
) {
    hub_receiving_with(endpoint, |_| {})
}

/// [`hub_receiving_from`], with the config adjusted by `tweak` first.
fn hub_receiving_with(
    endpoint: &str,
    tweak: impl FnOnce(&mut fedhub::Config),
) -> (
    fedhub::RunningHub,
    std::sync::Arc<std::sync::Mutex<Vec<Seen>>>,
) {
    let mut config = fedhub::Config::default();
    config.bus.endpoints.insert(
        "peerpub.vm".into(),
        fedhub::OneOrMany::Many(vec![endpoint.to_string()]),
    );
    config.bus.inbound = String::new();
    config.http.listen = "127.0.0.1:0".into();
    config.hub.status_log_interval_secs = 0;
    tweak(&mut config);
    let (factory, seen) = recorder("Recorder", Duration::ZERO);
    let hub = HubBuilder::new(config).consumer(factory).start().unwrap();
    let probe_seen = wait_until(STEP, || {
        seen.lock()
            .unwrap()
            .iter()
            .any(|s| s.topic.ends_with(".probe.tick"))
    });
    assert!(
        probe_seen,
        "no probe from the Python publisher reached the hub"
    );
    (hub, seen)
}

#[test]
fn python_fedmsg_messages_reach_consumers_with_every_field_intact() {
    for sign in [false, true] {
        let endpoint = format!("tcp://127.0.0.1:{}", free_port());
        let messages = varied_messages();
        let publisher = PythonPublisher::start(&endpoint, sign, &messages);
        let (hub, seen) = hub_receiving_from(&endpoint);
        let sent = publisher.go();
        assert_eq!(sent.len(), messages.len());

        let received = wait_until(STEP, || {
            let seen = seen.lock().unwrap();
            sent.iter()
                .all(|(_, body)| seen.iter().any(|s| &s.body == body))
        });
        let seen = seen.lock().unwrap().clone();
        assert!(received, "sent {sent:#?}\nseen {seen:#?}");
        for (topic, body) in &sent {
            let record = seen.iter().find(|s| &s.body == body).unwrap();
            assert_eq!(&record.topic, topic);
            // Every field, including fedmsg's own, as Python built it.
            let sent_json: Value = serde_json::from_str(body).unwrap();
            let envelope =
                Envelope::from_frames(&[topic.as_bytes(), body.as_bytes()], usize::MAX).unwrap();
            assert_eq!(Value::Object(envelope.json().clone()), sent_json);
            assert_eq!(record.msg.as_ref(), sent_json.get("msg"));
            assert_eq!(record.msg_id.as_deref(), sent_json["msg_id"].as_str());
            assert_eq!(record.i, sent_json["i"].as_i64());
            assert_eq!(
                envelope.username(),
                Some(sent_json["username"].as_str().unwrap())
            );
            // fedhub's canonical encoding is the one fedmsg signs: byte-identical.
            assert_eq!(&envelope.canonical_body(), body);
            if sign {
                assert_eq!(envelope.crypto(), Some("x509"));
                assert!(
                    envelope.signature().is_some_and(|s| s.len() > 300),
                    "{body}"
                );
                assert!(
                    envelope.certificate().is_some_and(|c| c.len() > 1000),
                    "{body}"
                );
            } else {
                assert_eq!(envelope.signature(), None);
            }
        }
        // The publisher's `i` counter and fedmsg's topic building, as sent.
        let topics: Vec<&str> = sent.iter().map(|(t, _)| t.as_str()).collect();
        assert_eq!(
            topics,
            [
                "org.fedoraproject.dev.git.receive",
                "org.fedoraproject.dev.buildsys.build.state.change",
                "org.fedoraproject.dev.bodhi.update.comment",
                "org.fedoraproject.dev.fedbadges.badge.award",
            ]
        );
        let state = hub.stats().snapshot();
        for bus in state["buses"].as_array().unwrap() {
            assert_eq!(bus["malformed_total"], 0, "{state}");
        }
        hub.shutdown();
    }
}

#[test]
fn fedmsg_logger_reaches_the_hub_inbound_socket() {
    let mut config = fedhub::Config::default();
    config.bus.inbound = "tcp://127.0.0.1:*".into();
    config.http.listen = "127.0.0.1:0".into();
    config.hub.status_log_interval_secs = 0;
    let (factory, seen) = recorder("Recorder", Duration::ZERO);
    let hub = HubBuilder::new(config).consumer(factory).start().unwrap();
    let inbound = hub.inbound_endpoint().unwrap().to_string();

    let dir = tempfile::tempdir().unwrap();
    let mut fedmsg_config = base_config();
    fedmsg_config.insert("relay_inbound".into(), json!([inbound]));
    let config_file = dir.path().join("fedmsg-config.py");
    write_fedmsg_config(&config_file, &Value::Object(fedmsg_config));
    let logger = |args: &[&str], stdin: &str| {
        let mut child = python_tool("fedmsg-logger", dir.path())
            .arg("--config-filename")
            .arg(&config_file)
            .args(args)
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(stdin.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "fedmsg-logger {args:?}: {output:?}"
        );
    };
    logger(&["--message", "hello from fedmsg-logger"], "");
    logger(
        &["--json-input", "--modname", "git", "--topic", "repo.update"],
        "{\"a\": 1, \"nested\": {\"y\": \"\u{e9}\", \"z\": 2.5}}\n",
    );
    assert!(wait_until(STEP, || seen.lock().unwrap().len() >= 2));
    let seen = seen.lock().unwrap().clone();
    let log = seen
        .iter()
        .find(|s| s.topic == "org.fedoraproject.dev.logger.log")
        .expect("the logger message");
    assert_eq!(log.msg, Some(json!({"log": "hello from fedmsg-logger"})));
    let body: Value = serde_json::from_str(&log.body).unwrap();
    // fedmsg's msg_id: `<year>-<uuid4>`.
    let msg_id = body["msg_id"].as_str().unwrap();
    let (year, uuid) = msg_id.split_once('-').unwrap();
    assert!(year.len() == 4 && year.parse::<u32>().is_ok(), "{msg_id}");
    assert_eq!(uuid.len(), 36, "{msg_id}");
    assert!(body["username"].is_string());
    let update = seen
        .iter()
        .find(|s| s.topic == "org.fedoraproject.dev.git.repo.update")
        .expect("the JSON message");
    assert_eq!(
        update.msg,
        Some(json!({"a": 1, "nested": {"y": "é", "z": 2.5}}))
    );
    hub.shutdown();
}

#[test]
fn fedhub_publish_is_printed_by_fedmsg_tail() {
    let port = free_port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let body = json!({"repo": "rpms/fedhub", "agent": "ops", "note": "caf\u{e9}", "ratio": 0.1});
    // `--bind` waits (XPUB) until fedmsg-tail has subscribed, then sends.
    let publish = Command::new(fedhub_binary())
        .args(["publish", "--bind", "--endpoint", &endpoint])
        .args(["--topic", "git.repo.update", "--json", &body.to_string()])
        .args(["--wait-secs", "30"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let mut config = base_config();
    config.insert("endpoints".into(), json!({ "fedhub": [endpoint] }));
    let config_file = dir.path().join("fedmsg-config.py");
    write_fedmsg_config(&config_file, &Value::Object(config));
    let mut tail = python_tool("fedmsg-tail", dir.path())
        .arg("--config-filename")
        .arg(&config_file)
        .spawn()
        .unwrap();
    let tail_lines = lines_of(&mut tail);

    let output = publish.wait_with_output().unwrap();
    assert!(output.status.success(), "{output:?}");
    let sent: Value = serde_json::from_slice(&output.stdout).unwrap();
    let msg_id = sent["msg_id"].as_str().unwrap();

    let deadline = Instant::now() + STEP;
    let mut printed = None;
    while printed.is_none() && Instant::now() < deadline {
        if let Ok(line) = tail_lines.recv_timeout(Duration::from_millis(200)) {
            if line.contains(msg_id) {
                printed = Some(line);
            }
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let line = printed.expect("fedmsg-tail printed the message");
    // fedmsg-tail logs the decoded dict (Python's repr).
    assert!(
        line.contains("'topic': 'org.fedoraproject.dev.git.repo.update'"),
        "{line}"
    );
    assert!(line.contains("'note': 'café'"), "{line}");
    assert!(line.contains("'ratio': 0.1"), "{line}");
    assert!(line.contains("'i': 1"), "{line}");
}

#[test]
fn fedhub_tail_prints_python_fedmsg_messages_byte_for_byte() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let messages = varied_messages();
    let publisher = PythonPublisher::start(&endpoint, true, &messages);
    let mut tail = Command::new(fedhub_binary())
        .args(["tail", "--endpoint", &endpoint, "--idle-timeout-secs", "20"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let lines = lines_of(&mut tail);
    // Probes arrive once the subscription is in place.
    let probe = next_line(&lines, "a probe printed by fedhub tail", &mut tail);
    assert!(
        probe.contains("\"topic\":\"org.fedoraproject.dev.probe.tick\""),
        "{probe}"
    );
    let sent = publisher.go();

    let mut printed = Vec::new();
    let deadline = Instant::now() + STEP;
    while printed.len() < sent.len() && Instant::now() < deadline {
        if let Ok(line) = lines.recv_timeout(Duration::from_millis(200)) {
            if !line.contains(".probe.tick\"") {
                printed.push(line);
            }
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let bodies: Vec<&String> = sent.iter().map(|(_, body)| body).collect();
    assert_eq!(printed.iter().collect::<Vec<_>>(), bodies);
}

/// Python's `json.dumps`, which fedmsg encodes with, writes a float NaN or
/// infinity as the bare words `NaN`, `Infinity`, `-Infinity`, which JSON does
/// not allow and no JSON parser fedhub or its consumers use accepts. fedhub
/// refuses such a message as malformed, with its own reason (`not_finite`) so
/// it is told apart from garbage, and goes on with the next.
#[test]
fn python_fedmsg_nan_and_infinity_are_refused_as_not_finite() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let spec = r#"{"probe": true, "messages": [
        {"modname": "bodhi", "topic": "update.karma", "msg": {"ratio": NaN, "text": "NaN in a string is fine"}},
        {"modname": "bodhi", "topic": "update.karma", "msg": {"ratio": Infinity}},
        {"modname": "bodhi", "topic": "update.karma", "msg": {"ratio": [-Infinity]}},
        {"modname": "bodhi", "topic": "update.comment", "msg": {"ratio": 0.5, "text": "NaN"}}
    ]}"#;
    let publisher = PythonPublisher::start_with_spec(&endpoint, false, spec);
    let (hub, seen) = hub_receiving_from(&endpoint);
    let sent = publisher.go();
    assert_eq!(sent.len(), 4);
    assert!(
        sent[0].1.contains(r#""ratio": NaN"#) || sent[0].1.contains(r#""ratio":NaN"#),
        "{sent:?}"
    );
    let bus = hub.stats().bus("peerpub.vm");
    assert!(wait_until(STEP, || bus.malformed("not_finite") == 3));
    assert!(wait_until(STEP, || seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.body == sent[3].1)));
    assert_eq!(bus.malformed_total(), 3);
    assert!(!seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.topic.ends_with("update.karma")));
    hub.shutdown();
}

/// Runs `tests/python/fedmsg_crypto.py MODE` (fedmsg.crypto's sign or validate)
/// on `spec`; returns its output lines.
fn fedmsg_crypto(mode: &str, spec: &Value) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/fedmsg_crypto.py");
    let mut child = python_tool("python", dir.path())
        .args(["-W", "ignore"])
        .arg(script)
        .arg(mode)
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(spec.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "fedmsg_crypto.py {mode}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

/// The `[security]` settings of a validating hub trusting `ca` (and `crl`).
fn validating(config: &mut fedhub::Config, ca: &Path, crl: &Path) {
    config.security.validate_signatures = true;
    config.security.ca_cert_location = ca.display().to_string();
    config.security.crl_location = crl.display().to_string();
}

#[test]
fn messages_python_fedmsg_signs_and_publishes_pass_a_validating_hub() {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    let messages = varied_messages();
    let publisher = PythonPublisher::start(&endpoint, true, &messages);
    let pki = pki_dir();
    let (hub, seen) = hub_receiving_with(&endpoint, |config| {
        validating(config, &pki.join("ca.crt"), &pki.join("crl.pem"));
        // Every topic the publisher uses is listed for its certificate, and
        // nothing else is allowed.
        config.security.routing_nitpicky = true;
        for topic in [
            "org.fedoraproject.dev.probe.tick",
            "org.fedoraproject.dev.git.receive",
            "org.fedoraproject.dev.buildsys.build.state.change",
            "org.fedoraproject.dev.bodhi.update.comment",
            "org.fedoraproject.dev.fedbadges.badge.award",
        ] {
            config
                .security
                .routing_policy
                .insert(topic.into(), vec!["peerpub-vm".into()]);
        }
    });
    let sent = publisher.go();
    assert_eq!(sent.len(), messages.len());
    let received = wait_until(STEP, || {
        let seen = seen.lock().unwrap();
        sent.iter()
            .all(|(_, body)| seen.iter().any(|s| &s.body == body))
    });
    assert!(received, "sent {sent:#?}");
    let security = hub.stats().security().clone();
    assert_eq!(security.rejected_total(), 0, "{:?}", security.state());
    assert!(security.validated() > messages.len() as u64);
    assert_eq!(security.state().certificates_cached, 1);
    hub.shutdown();
}

/// Sends each message alone to a validating hub; returns what validation made
/// of each: `None` when accepted (and delivered), else the rejection's reason.
fn judged_by_hub(
    security: impl FnOnce(&mut fedhub::Config),
    messages: &[(String, String)],
) -> Vec<Option<String>> {
    let bus = TestBus::new();
    let mut config = config(&bus);
    security(&mut config);
    let (factory, seen) = recorder("Recorder", Duration::ZERO);
    let hub = HubBuilder::new(config).consumer(factory).start().unwrap();
    bus.wait_subscribed();
    let stats = hub.stats().security().clone();
    let mut verdicts = Vec::new();
    for (topic, body) in messages {
        let before = (stats.validated(), stats.rejected_total());
        bus.send_frames(&[topic.as_bytes(), body.as_bytes()]);
        assert!(
            wait_until(STEP, || (stats.validated(), stats.rejected_total())
                != before),
            "no verdict on {body}"
        );
        if stats.validated() > before.0 {
            assert!(wait_until(STEP, || seen
                .lock()
                .unwrap()
                .iter()
                .any(|s| &s.body == body)));
            verdicts.push(None);
        } else {
            let last = stats.state().last_rejection.expect("a rejection");
            assert_eq!(&last.topic, topic);
            verdicts.push(Some(last.reason));
        }
    }
    assert_eq!(
        seen.lock().unwrap().len(),
        verdicts.iter().filter(|v| v.is_none()).count(),
        "only accepted messages reach the consumer"
    );
    hub.shutdown();
    verdicts
}

/// What Python's `fedmsg.crypto.validate` says of each body, under `config`.
fn judged_by_fedmsg(config: Value, bodies: &[&str]) -> Vec<bool> {
    fedmsg_crypto("validate", &json!({"config": config, "messages": bodies}))
        .iter()
        .map(|line| {
            let verdict: Value = serde_json::from_str(line).unwrap();
            verdict["valid"].as_bool().unwrap()
        })
        .collect()
}

#[test]
fn python_signed_variants_are_judged_as_fedmsg_judges_them() {
    let pki = TestPki::new();
    for name in ["shell-vm", "bodhi-app", "revoked-vm"] {
        pki.issue(name);
    }
    pki.self_signed("stranger");
    pki.revoke("revoked-vm");
    let expired_crl = pki.write_expired_crl("expired-crl.pem");

    let policed = "org.fedoraproject.dev.bodhi.update.request.testing";
    let free = "org.fedoraproject.dev.logger.log";
    let message = |topic: &str, n: u64| {
        json!({
            "topic": topic,
            "msg": {"n": n, "text": "h\u{e9}llo \u{1f680}", "ratio": 0.1},
            "timestamp": 1_795_392_000u64 + n,
            "msg_id": format!("2026-00000000-0000-4000-8000-{n:012}"),
            "i": n,
            "username": "fedmsg",
        })
    };
    let items = json!([
        {"certname": "shell-vm", "message": message(free, 1)},
        {"certname": "bodhi-app", "message": message(policed, 2)},
        {"certname": "shell-vm", "message": message(policed, 3)},
        {"certname": "revoked-vm", "message": message(free, 4)},
        {"certname": "stranger", "message": message(free, 5)},
        {"certname": "shell-vm", "message": message(free, 6)},
        {"certname": "shell-vm", "message": message(free, 7)},
    ]);
    let signed = fedmsg_crypto("sign", &json!({"ssldir": pki.dir(), "items": items}));
    assert_eq!(signed.len(), 7);
    let mut bodies: Vec<String> = signed.clone();
    // 6: re-signed with another key: shell-vm's signature, bodhi-app's certificate.
    let mut resigned: Map<String, Value> = serde_json::from_str(&signed[5]).unwrap();
    let bodhi: Value = serde_json::from_str(&signed[1]).unwrap();
    resigned.insert("certificate".into(), bodhi["certificate"].clone());
    bodies[5] = fedhub::to_canonical_string(&Value::Object(resigned));
    // 7: tampered after signing.
    bodies[6] = signed[6].replace("\"n\":7", "\"n\":70");
    assert_ne!(bodies[6], signed[6]);
    let expected = [
        None,
        None,
        Some("policy"),
        Some("revoked"),
        Some("untrusted_certificate"),
        Some("bad_signature"),
        Some("bad_signature"),
    ];
    let topics = [free, policed, policed, free, free, free, free];
    let messages: Vec<(String, String)> = topics
        .iter()
        .zip(&bodies)
        .map(|(t, b)| (t.to_string(), b.clone()))
        .collect();
    let policy = json!({ policed: ["bodhi-app"] });

    let verdicts = judged_by_hub(
        |config| {
            validating(config, &pki.ca(), &pki.crl());
            config
                .security
                .routing_policy
                .insert(policed.into(), vec!["bodhi-app".into()]);
        },
        &messages,
    );
    let verdicts: Vec<Option<&str>> = verdicts.iter().map(|v| v.as_deref()).collect();
    assert_eq!(verdicts, expected);
    let python = judged_by_fedmsg(
        json!({
            "ca_cert_location": pki.ca(),
            "crl_location": pki.crl(),
            "routing_policy": policy,
            "routing_nitpicky": false,
            "crypto_validate_backends": ["x509"],
        }),
        &bodies.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let python_accepts: Vec<bool> = expected.iter().map(Option::is_none).collect();
    assert_eq!(python, python_accepts, "fedmsg's own verdicts");

    // An expired CRL fails every message, in both.
    let good = &messages[..2];
    let verdicts = judged_by_hub(|config| validating(config, &pki.ca(), &expired_crl), good);
    assert_eq!(
        verdicts,
        vec![Some("expired".to_string()), Some("expired".to_string())]
    );
    let python = judged_by_fedmsg(
        json!({
            "ca_cert_location": pki.ca(),
            "crl_location": expired_crl,
            "crypto_validate_backends": ["x509"],
        }),
        &[&bodies[0], &bodies[1]],
    );
    assert_eq!(python, vec![false, false]);
}

/// Publishes `echo.reply` for every message it handles, through its context.
struct Echo;

impl fedhub::Consumer for Echo {
    fn consume(
        &mut self,
        envelope: &Envelope,
        ctx: &mut fedhub::Context,
    ) -> Result<(), fedhub::ConsumerError> {
        ctx.publish(
            "echo.reply",
            json!({"to": envelope.msg_id(), "text": "r\u{e9}ponse \u{1f680}", "ratio": 0.1}),
        )?;
        Ok(())
    }
}

/// What fedmsg's `sign` makes of `body` (a signed envelope) when it signs the
/// same envelope with `certname` from `ssldir`: the wire bytes, for comparison.
fn signed_again_by_fedmsg(body: &str, ssldir: &Path, certname: &str) -> String {
    let mut envelope: Map<String, Value> = serde_json::from_str(body).unwrap();
    for key in ["signature", "certificate", "crypto"] {
        envelope.remove(key);
    }
    let items = json!([{"certname": certname, "message": envelope}]);
    let lines = fedmsg_crypto("sign", &json!({"ssldir": ssldir, "items": items}));
    assert_eq!(lines.len(), 1);
    lines[0].clone()
}

#[test]
fn what_the_hub_signs_passes_fedmsg_validate_byte_for_byte() {
    let pki = TestPki::new();
    pki.issue("fedhub-hub");
    let bus = TestBus::new();
    let mut config = config(&bus);
    config.publish.bind = vec!["tcp://127.0.0.1:*".into()];
    config.security.sign_messages = true;
    config.security.ssldir = pki.dir().to_path_buf();
    config.security.name = "fedhub.test".into();
    config
        .security
        .certnames
        .insert("fedhub.test".into(), "fedhub-hub".into());
    let factory = fedhub::ConsumerFactory::new("Echo", |_| Ok(Box::new(Echo)))
        .topics([format!("{PREFIX}.*")])
        .enabled_by_default();
    let hub = HubBuilder::new(config).consumer(factory).start().unwrap();
    bus.wait_subscribed();
    let context = zmq::Context::new();
    let sub = context.socket(zmq::SUB).unwrap();
    sub.set_subscribe(b"").unwrap();
    sub.set_rcvtimeo(200).unwrap();
    sub.connect(&hub.publish_endpoints()[0]).unwrap();
    // The first echo that reaches the subscriber (earlier ones may be sent
    // before its subscription arrives).
    let deadline = Instant::now() + STEP;
    let mut echo = None;
    let mut i = 0;
    while echo.is_none() && Instant::now() < deadline {
        i += 1;
        bus.send("logger.log", i, json!({"ping": i}));
        if let Ok(frames) = sub.recv_multipart(0) {
            echo = Some(frames);
        }
    }
    let echo = echo.expect("an echo from the hub's publisher");
    let sent = hub
        .publisher()
        .publish(
            "direct.test",
            json!({"n": 1.5, "nested": {"b": [], "a": null}}),
        )
        .unwrap();
    let mut direct = None;
    while direct.is_none() && Instant::now() < deadline {
        if let Ok(frames) = sub.recv_multipart(0) {
            let body = String::from_utf8(frames[1].clone()).unwrap();
            if body.contains("direct.test") {
                direct = Some(frames);
            }
        }
    }
    let direct = direct.expect("the directly published message");
    assert_eq!(direct[0], b"org.fedoraproject.dev.direct.test");
    assert_eq!(sent["crypto"], "x509");

    let mut bodies = Vec::new();
    for frames in [&echo, &direct] {
        let topic = String::from_utf8(frames[0].clone()).unwrap();
        let body = String::from_utf8(frames[1].clone()).unwrap();
        // fedmsg's own sign gives the same bytes: same canonical JSON, same
        // deterministic PKCS#1 v1.5 signature, same certificate field.
        assert_eq!(
            signed_again_by_fedmsg(&body, pki.dir(), "fedhub-hub"),
            body,
            "{topic}"
        );
        bodies.push((topic, body));
    }
    let verdicts = judged_by_fedmsg(
        json!({
            "ca_cert_location": pki.ca(),
            "crl_location": pki.crl(),
            "routing_nitpicky": true,
            "routing_policy": {
                bodies[0].0.clone(): ["fedhub-hub"],
                bodies[1].0.clone(): ["fedhub-hub"],
            },
            "crypto_validate_backends": ["x509"],
        }),
        &[&bodies[0].1, &bodies[1].1],
    );
    assert_eq!(verdicts, vec![true, true]);
    assert!(hub.stats().published() >= 2);
    hub.shutdown();
}

/// A `fedhub publish -c` config signing as fedmsg-logger does (`cert_prefix`).
fn signing_config(dir: &Path, pki: &TestPki, certnames: &str) -> PathBuf {
    let path = dir.join("fedhub.toml");
    std::fs::write(
        &path,
        format!(
            "[hub]\nenvironment = \"stg\"\n[security]\nsign_messages = true\nssldir = \"{}\"\ncert_prefix = \"shell\"\ncertnames = {{ {certnames} }}\n",
            pki.dir().display()
        ),
    )
    .unwrap();
    path
}

fn fedhub_publish_signed(config: &Path) -> std::process::Output {
    let endpoint = format!("tcp://127.0.0.1:{}", free_port());
    Command::new(fedhub_binary())
        .args(["publish", "--bind", "--endpoint", &endpoint])
        .args(["--wait-subscribers", "0", "--wait-secs", "0"])
        .arg("-c")
        .arg(config)
        .args([
            "--topic",
            "logger.log",
            "--json",
            r#"{"log": "signed h\u00e9llo"}"#,
        ])
        .output()
        .unwrap()
}

#[test]
fn fedhub_publish_signs_with_the_certificate_fedmsg_would_choose() {
    let pki = TestPki::new();
    pki.issue("shell-vm");
    let dir = tempfile::tempdir().unwrap();
    let index = format!("shell.{}", fedhub::short_hostname());
    let config = signing_config(dir.path(), &pki, &format!("\"{index}\" = \"shell-vm\""));
    let output = fedhub_publish_signed(&config);
    assert!(output.status.success(), "{output:?}");
    let body = String::from_utf8(output.stdout).unwrap().trim().to_string();
    let topic = "org.fedoraproject.stg.logger.log";
    let envelope: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(envelope["topic"], topic);
    assert_eq!(envelope["crypto"], "x509");
    assert_eq!(signed_again_by_fedmsg(&body, pki.dir(), "shell-vm"), body);
    let verdicts = judged_by_fedmsg(
        json!({
            "ca_cert_location": pki.ca(),
            "crl_location": pki.crl(),
            "routing_nitpicky": true,
            "routing_policy": { topic: ["shell-vm"] },
            "crypto_validate_backends": ["x509"],
        }),
        &[&body],
    );
    assert_eq!(verdicts, vec![true]);

    // No certificate for the cert index: exit 2, naming it.
    let config = signing_config(dir.path(), &pki, "\"shell.elsewhere\" = \"shell-vm\"");
    let output = fedhub_publish_signed(&config);
    assert_eq!(output.status.code(), Some(2), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&index), "{stderr}");
}
