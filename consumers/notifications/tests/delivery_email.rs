//! E-mail delivery against a real SMTP server: aiosmtpd from the test
//! Python venv (`scripts/python-env.sh`), on 127.0.0.1, writing each message
//! it receives to a directory as JSON (envelope, decoded headers and body).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use fedhub_notifications::delivery::{Deliverer, DeliveryConfig, Notification, Outgoing};
use fedhub_storage::{Database, DatabaseUrl, PoolOptions};
use fedhub_testkit::{wait_until, HttpSink};
use serde_json::{json, Value};

/// The SMTP server: aiosmtpd's controller with a handler that stores every
/// message as `<n>.json` in the output directory; runs until stdin closes.
const SERVER: &str = r#"
import email, email.policy, json, os, sys
from aiosmtpd.controller import Controller

out, port = sys.argv[1], int(sys.argv[2])

class Store:
    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
        headers = {}
        for name, value in msg.items():
            headers.setdefault(name.lower(), []).append(str(value))
        doc = {"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
               "headers": headers,
               # SMTP carries CRLF line ends; the test compares with LF.
               "body": msg.get_content().replace("\r\n", "\n")}
        n = len([f for f in os.listdir(out) if f.endswith(".json")])
        tmp = os.path.join(out, "incoming.tmp")
        with open(tmp, "w") as f:
            json.dump(doc, f)
        os.rename(tmp, os.path.join(out, "%04d.json" % n))
        return "250 Message accepted"

controller = Controller(Store(), hostname="127.0.0.1", port=port)
controller.start()
print("ready", flush=True)
sys.stdin.read()
controller.stop()
"#;

struct SmtpServer {
    child: Child,
    out: PathBuf,
}

impl SmtpServer {
    fn start(dir: &Path, port: u16) -> SmtpServer {
        let out = dir.join(format!("mail-{port}"));
        std::fs::create_dir_all(&out).unwrap();
        let script = dir.join("smtp_server.py");
        std::fs::write(&script, SERVER).unwrap();
        let mut child = fedhub_testkit::python_tool("python", dir)
            .arg(&script)
            .arg(&out)
            .arg(port.to_string())
            .spawn()
            .expect("aiosmtpd from the test venv starts");
        let mut line = String::new();
        BufReader::new(child.stdout.as_mut().unwrap())
            .read_line(&mut line)
            .unwrap();
        if line.trim() != "ready" {
            let _ = child.kill();
            let output = child.wait_with_output().unwrap();
            panic!(
                "aiosmtpd did not start: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
        SmtpServer { child, out }
    }

    fn mails(&self) -> Vec<Value> {
        let mut names: Vec<PathBuf> = std::fs::read_dir(&self.out)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        names.sort();
        names
            .iter()
            .map(|p| serde_json::from_slice(&std::fs::read(p).unwrap()).unwrap())
            .collect()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        self.child.stdin.take();
        if !wait_until(Duration::from_secs(5), || {
            self.child.try_wait().ok().flatten().is_some()
        }) {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

fn header<'a>(mail: &'a Value, name: &str) -> &'a str {
    mail["headers"][name][0].as_str().unwrap_or("")
}

fn start(dir: &Path, config: DeliveryConfig) -> Deliverer {
    let url = DatabaseUrl::sqlite(dir.join("fmn.sqlite"));
    let db = Database::open(
        &url,
        "FMNConsumer",
        &PoolOptions::default(),
        &prometheus::Registry::new(),
    )
    .unwrap();
    Deliverer::start(db, config, &prometheus::Registry::new()).unwrap()
}

fn config(port: u16) -> DeliveryConfig {
    DeliveryConfig {
        smtp_port: port,
        smtp_timeout_ms: 5000,
        retry_initial_ms: 100,
        retry_max_ms: 300,
        ..DeliveryConfig::default()
    }
}

fn note(address: &str, i: u32, subtitle: &str) -> Notification {
    Notification {
        openid: "ralph.id.fedoraproject.org".into(),
        context: "email".into(),
        address: address.into(),
        filter_name: "Events on packages that I own".into(),
        filter_id: 11,
        msg_id: format!("2026-mail-{i}"),
        topic: "org.fedoraproject.prod.bodhi.update.comment".into(),
        subtitle: subtitle.into(),
        link: format!("https://bodhi.fedoraproject.org/updates/FEDORA-2026-{i}"),
        message: json!({"comment": {"user": {"name": "ralph"}}}),
    }
}

#[test]
fn single_and_digest_mails_arrive_as_formatted() {
    let dir = tempfile::tempdir().unwrap();
    let port = fedhub_testkit::free_port();
    let server = SmtpServer::start(dir.path(), port);
    let deliverer = start(dir.path(), config(port));
    deliverer
        .submit(Outgoing::Single(note(
            "ralph@example.org",
            1,
            "ralph commented on bodhi update café-1.0-1.fc43 (karma: 1)",
        )))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || server.mails().len() == 1));
    let mail = &server.mails()[0];
    assert_eq!(mail["mail_from"], "notifications@fedoraproject.org");
    assert_eq!(mail["rcpt_tos"], json!(["ralph@example.org"]));
    assert_eq!(header(mail, "from"), "notifications@fedoraproject.org");
    assert_eq!(header(mail, "to"), "ralph@example.org");
    assert_eq!(
        header(mail, "subject"),
        "ralph commented on bodhi update café-1.0-1.fc43 (karma: 1)"
    );
    assert_eq!(header(mail, "precedence"), "Bulk");
    assert_eq!(header(mail, "auto-submitted"), "auto-generated");
    assert_eq!(
        header(mail, "x-fedmsg-topic"),
        "org.fedoraproject.prod.bodhi.update.comment"
    );
    assert_eq!(header(mail, "x-fedmsg-category"), "bodhi");
    assert_eq!(header(mail, "x-fedmsg-id"), "2026-mail-1");
    assert!(header(mail, "content-type").starts_with("text/plain"));
    assert!(!header(mail, "message-id").is_empty());
    assert!(!header(mail, "date").is_empty());
    let body = mail["body"].as_str().unwrap();
    assert!(
        body.starts_with(
            "ralph commented on bodhi update café-1.0-1.fc43 (karma: 1)\n\thttps://bodhi.fedoraproject.org/updates/FEDORA-2026-1\n"
        ),
        "{body}"
    );
    assert!(
        body.contains("Topic: org.fedoraproject.prod.bodhi.update.comment\nMessage: 2026-mail-1\n"),
        "{body}"
    );
    assert!(
        body.contains("\"Events on packages that I own\" (id 11)"),
        "{body}"
    );

    deliverer
        .submit(Outgoing::Digest {
            openid: "ralph.id.fedoraproject.org".into(),
            context: "email".into(),
            address: "ralph@example.org".into(),
            notifications: (2..5)
                .map(|i| note("ralph@example.org", i, &format!("update number {i}")))
                .collect(),
        })
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || server.mails().len() == 2));
    let digest = &server.mails()[1];
    assert_eq!(
        header(digest, "subject"),
        "Fedora Notifications Digest (3 updates)"
    );
    assert_eq!(header(digest, "to"), "ralph@example.org");
    let body = digest["body"].as_str().unwrap();
    assert!(
        body.starts_with(
            "Digest summary:\n1.\tupdate number 2\n2.\tupdate number 3\n3.\tupdate number 4\n"
        ),
        "{body}"
    );
    for i in 2..5 {
        assert!(
            body.contains(&format!(
                "update number {i}\n\thttps://bodhi.fedoraproject.org/updates/FEDORA-2026-{i}\n"
            )),
            "{body}"
        );
    }
    // The server stores the mail before the sender hears its answer.
    assert!(wait_until(Duration::from_secs(5), || deliverer
        .counters()
        .sent
        == 2));
    assert_eq!(deliverer.pending_count(), 0);
}

#[test]
fn an_invalid_address_is_dead_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let port = fedhub_testkit::free_port();
    let server = SmtpServer::start(dir.path(), port);
    let deliverer = start(dir.path(), config(port));
    deliverer
        .submit(Outgoing::Single(note("not an address", 1, "x")))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || deliverer
        .counters()
        .dead_lettered
        == 1));
    let dead = deliverer.dead_letters(5).unwrap();
    assert_eq!(dead[0].attempts, 1);
    assert!(
        dead[0].last_error.contains("\"not an address\" is invalid"),
        "{}",
        dead[0].last_error
    );
    assert!(server.mails().is_empty());
}

#[test]
fn an_unreachable_smtp_server_is_retried_until_it_starts() {
    let dir = tempfile::tempdir().unwrap();
    let port = fedhub_testkit::free_port();
    let deliverer = start(
        dir.path(),
        DeliveryConfig {
            max_attempts: 100,
            ..config(port)
        },
    );
    deliverer
        .submit(Outgoing::Single(note(
            "ralph@example.org",
            1,
            "kept until the server comes",
        )))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || deliverer
        .counters()
        .failed_attempts
        >= 2));
    assert_eq!(deliverer.pending_count(), 1);
    assert_eq!(deliverer.counters().sent, 0);
    let server = SmtpServer::start(dir.path(), port);
    assert!(wait_until(Duration::from_secs(10), || server.mails().len() == 1));
    assert_eq!(
        header(&server.mails()[0], "subject"),
        "kept until the server comes"
    );
    assert!(wait_until(Duration::from_secs(5), || deliverer
        .counters()
        .sent
        == 1));
    assert_eq!(deliverer.pending_count(), 0);
    assert_eq!(deliverer.counters().dead_lettered, 0);
}

#[test]
fn a_slow_webhook_does_not_hold_the_mail() {
    let dir = tempfile::tempdir().unwrap();
    let port = fedhub_testkit::free_port();
    let server = SmtpServer::start(dir.path(), port);
    let slow = HttpSink::scripted(&[200], Duration::from_secs(5));
    let deliverer = start(
        dir.path(),
        DeliveryConfig {
            webhook_timeout_ms: 3000,
            ..config(port)
        },
    );
    for i in 0..3 {
        let mut hook = note(&slow.url("/slow"), i, "slow");
        hook.context = "webhook".into();
        deliverer.submit(Outgoing::Single(hook)).unwrap();
    }
    assert!(wait_until(Duration::from_secs(5), || !slow
        .requests()
        .is_empty()));
    let started = Instant::now();
    deliverer
        .submit(Outgoing::Single(note("ralph@example.org", 9, "not held")))
        .unwrap();
    assert!(wait_until(Duration::from_secs(10), || server.mails().len() == 1));
    let took = started.elapsed();
    assert!(
        took < Duration::from_millis(2000),
        "the mail waited {took:?}"
    );
    assert_eq!(
        deliverer.counters().failed_attempts,
        0,
        "the webhook has not timed out yet"
    );
}
