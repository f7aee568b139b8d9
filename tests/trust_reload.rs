//! The CA and CRL are loaded again without a restart: every `[security]
//! crl_cache_expiry` seconds, and on SIGHUP to the `fedhub` binary (the hub's
//! reload broadcast). A CRL that cannot be read at reload keeps the one loaded
//! before, counted and shown in `/state`; a revoked certificate never causes a
//! reload. Real ZeroMQ, real HTTP, a real PKI made with `openssl`.

use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use fedhub::{
    to_canonical_string, HubBuilder, RejectReason, Reloaded, SecurityConfig, SigningKey, Stats,
    Validator,
};
use fedhub_testkit::*;
use serde_json::{json, Value};

fn signing_key(pki: &TestPki, name: &str) -> SigningKey {
    SigningKey::from_files(
        &pki.dir().join(format!("{name}.key")),
        &pki.dir().join(format!("{name}.crt")),
        name,
    )
    .unwrap()
}

/// A body signed by `key` on `topic`.
fn signed(key: &SigningKey, topic: &str, i: u64) -> String {
    let mut envelope = json!({
        "topic": topic,
        "msg": {"n": i},
        "i": i,
        "msg_id": format!("2026-00000000-0000-4000-8000-{i:012}"),
        "timestamp": 1_795_392_000u64 + i,
        "username": "tester",
    })
    .as_object()
    .unwrap()
    .clone();
    key.sign(&mut envelope).unwrap();
    to_canonical_string(&Value::Object(envelope))
}

fn security(pki: &TestPki) -> SecurityConfig {
    SecurityConfig {
        validate_signatures: true,
        ca_cert_location: pki.ca().display().to_string(),
        crl_location: pki.crl().display().to_string(),
        ..SecurityConfig::default()
    }
}

#[test]
fn a_reload_that_reads_the_same_files_keeps_the_cached_verdicts() {
    let pki = TestPki::new();
    pki.issue("alice");
    let alice = signing_key(&pki, "alice");
    let topic = format!("{PREFIX}.logger.log");
    let v = Validator::load(&security(&pki), Stats::new().security().clone()).unwrap();
    assert_eq!(
        v.validate_body(&topic, signed(&alice, &topic, 1).as_bytes()),
        Ok(())
    );
    assert_eq!(v.stats().state().certificates_cached, 1);
    assert_eq!(v.reload().unwrap(), Reloaded::Unchanged);
    assert_eq!(v.stats().state().certificates_cached, 1);
    pki.revoke("alice");
    assert_eq!(v.reload().unwrap(), Reloaded::Changed);
    assert_eq!(v.stats().state().certificates_cached, 0);
    let rejection = v
        .validate_body(&topic, signed(&alice, &topic, 2).as_bytes())
        .unwrap_err();
    assert_eq!(rejection.reason, RejectReason::Revoked);
}

#[test]
fn a_revocation_takes_effect_on_the_configured_interval_without_a_restart() {
    let pki = TestPki::new();
    pki.issue("alice");
    pki.issue("bob");
    let alice = signing_key(&pki, "alice");
    let bob = signing_key(&pki, "bob");
    let topic = format!("{PREFIX}.logger.log");
    let bus = TestBus::new();
    let mut config = config(&bus);
    config.security = security(&pki);
    config.security.crl_cache_expiry = 1;
    let (factory, seen) = recorder("Recorder", Duration::ZERO);
    let hub = HubBuilder::new(config)
        .consumer(factory.topics([format!("{PREFIX}.*")]))
        .start()
        .unwrap();
    bus.wait_subscribed();
    let stats = hub.stats().security().clone();
    bus.send_frames(&[topic.as_bytes(), signed(&alice, &topic, 1).as_bytes()]);
    assert!(wait_until(Duration::from_secs(10), || seen
        .lock()
        .unwrap()
        .len()
        == 1));

    pki.revoke("alice");
    let mut i = 1;
    let revoked = wait_until(Duration::from_secs(15), || {
        i += 1;
        bus.send_frames(&[topic.as_bytes(), signed(&alice, &topic, i).as_bytes()]);
        std::thread::sleep(Duration::from_millis(100));
        stats.rejected(RejectReason::Revoked) > 0
    });
    assert!(
        revoked,
        "alice still accepted {} times after her revocation",
        stats.validated()
    );
    // Within the interval (1 s) and a little slack, nothing more.
    assert!(i < 40, "{i} messages before the reload took effect");
    assert_eq!(stats.trust_reload_failures(), 0);
    bus.send_frames(&[topic.as_bytes(), signed(&bob, &topic, 1000).as_bytes()]);
    assert!(wait_until(Duration::from_secs(10), || seen
        .lock()
        .unwrap()
        .iter()
        .any(|s| s.msg.as_ref().unwrap()["n"] == 1000)));
    let delivered_after_revocation = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.msg.as_ref().unwrap()["n"] != 1000)
        .count() as u64;
    assert_eq!(
        delivered_after_revocation + stats.rejected_total(),
        i,
        "every message from alice was either delivered (before the reload) or rejected"
    );
    hub.shutdown();
}

/// A running `fedhub run` whose `/state` we read.
struct Binary {
    child: std::process::Child,
    addr: std::net::SocketAddr,
}

impl Binary {
    fn start(dir: &Path, bus: &TestBus, pki: &TestPki) -> Binary {
        let port = free_port();
        let config = dir.join("fedhub.toml");
        std::fs::write(
            &config,
            format!(
                "[bus]\ninbound = \"\"\nendpoints = {{ test = [\"{}\"] }}\n\
                 [http]\nlisten = \"127.0.0.1:{port}\"\n\
                 [hub]\nstatus_log_interval_secs = 0\n\
                 [consumers.NullConsumer]\nenabled = true\n\
                 [security]\nvalidate_signatures = true\nca_cert_location = \"{}\"\n\
                 crl_location = \"{}\"\ncrl_cache_expiry = 0\n",
                bus.endpoint,
                pki.ca().display(),
                pki.crl().display()
            ),
        )
        .unwrap();
        let child = Command::new(fedhub_binary())
            .args(["run", "-c"])
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let addr = format!("127.0.0.1:{port}").parse().unwrap();
        Binary { child, addr }
    }

    /// `/state`'s `validation`, `null` while the server does not answer yet.
    fn validation(&self) -> Value {
        if std::net::TcpStream::connect(self.addr).is_err() {
            return Value::Null;
        }
        let (status, body) = http_get(self.addr, "/state");
        if status != 200 {
            return Value::Null;
        }
        serde_json::from_str::<Value>(&body).unwrap()["validation"].clone()
    }

    fn wait_for(&self, what: &str, check: impl Fn(&Value) -> bool) -> Value {
        let mut last = Value::Null;
        let ok = wait_until(Duration::from_secs(15), || {
            last = self.validation();
            !last.is_null() && check(&last)
        });
        assert!(ok, "{what}: /state validation is {last}");
        last
    }

    fn signal(&self, sig: i32) {
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn sighup_reloads_the_crl_and_a_bad_crl_keeps_the_one_loaded_before() {
    let pki = TestPki::new();
    pki.issue("alice");
    pki.issue("bob");
    let alice = signing_key(&pki, "alice");
    let bob = signing_key(&pki, "bob");
    let topic = format!("{PREFIX}.logger.log");
    let dir = tempfile::tempdir().unwrap();
    let bus = TestBus::new();
    let mut hub = Binary::start(dir.path(), &bus, &pki);
    bus.wait_subscribed();
    let send = |key: &SigningKey, i: u64| {
        bus.send_frames(&[topic.as_bytes(), signed(key, &topic, i).as_bytes()]);
    };
    send(&alice, 1);
    let first = hub.wait_for("alice accepted", |v| v["validated_total"] == 1);
    let loaded_at = first["trust_loaded_at"].as_f64().unwrap();
    assert!(loaded_at > 1.0e9, "{first}");

    // Revoked on disk, but nothing asked for a reload (crl_cache_expiry = 0).
    pki.revoke("alice");
    send(&alice, 2);
    let state = hub.wait_for("alice still accepted", |v| v["validated_total"] == 2);
    assert_eq!(state["trust_loaded_at"].as_f64(), Some(loaded_at));

    hub.signal(libc::SIGHUP);
    let state = hub.wait_for("reloaded on SIGHUP", |v| {
        v["trust_loaded_at"].as_f64().unwrap() > loaded_at
    });
    let reloaded_at = state["trust_loaded_at"].as_f64().unwrap();
    assert_eq!(state["trust_reload_failures_total"], 0);
    // A flood from the revoked certificate: every message rejected, the CA and
    // CRL not loaded again (fedmsg reloaded them for each such message).
    for i in 3..203 {
        send(&alice, i);
    }
    send(&bob, 1);
    let state = hub.wait_for("revoked flood rejected, bob accepted", |v| {
        v["rejected_by_reason"]["revoked"] == 200 && v["validated_total"] == 3
    });
    assert_eq!(state["trust_loaded_at"].as_f64(), Some(reloaded_at));
    assert_eq!(state["rejected_total"], 200);

    // A CRL that cannot be parsed at reload: the previous one stays in use.
    let crl = pki.crl();
    std::fs::write(
        &crl,
        "-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n",
    )
    .unwrap();
    hub.signal(libc::SIGHUP);
    let state = hub.wait_for("reload failure counted", |v| {
        v["trust_reload_failures_total"] == 1
    });
    let error = state["trust_reload_error"].as_str().unwrap();
    assert!(
        error.contains(&crl.display().to_string()) && error.contains("not a PEM X509 CRL"),
        "{error}"
    );
    assert_eq!(state["trust_loaded_at"].as_f64(), Some(reloaded_at));
    send(&alice, 300);
    send(&bob, 2);
    hub.wait_for("the CRL loaded before still rejects alice", |v| {
        v["rejected_by_reason"]["revoked"] == 201 && v["validated_total"] == 4
    });
    let (_, metrics) = http_get(hub.addr, "/metrics");
    assert!(
        metrics
            .lines()
            .any(|l| l == "fedhub_security_trust_reload_failures_total 1"),
        "{metrics}"
    );

    // A missing CRL likewise; then a good one clears the error.
    std::fs::remove_file(&crl).unwrap();
    hub.signal(libc::SIGHUP);
    let state = hub.wait_for("missing CRL counted", |v| {
        v["trust_reload_failures_total"] == 2
    });
    let error = state["trust_reload_error"].as_str().unwrap();
    assert!(
        error.contains("cannot read the CRL") && error.contains(&crl.display().to_string()),
        "{error}"
    );
    pki.write_crl("crl.pem");
    hub.signal(libc::SIGHUP);
    hub.wait_for("a good CRL clears the error", |v| {
        v["trust_reload_error"].is_null() && v["trust_loaded_at"].as_f64().unwrap() > reloaded_at
    });

    hub.signal(libc::SIGTERM);
    let status = hub.child.wait().unwrap();
    assert!(status.success(), "SIGTERM still stops the hub: {status:?}");
}

#[test]
fn the_reload_thread_stops_with_the_hub() {
    let pki = TestPki::new();
    let bus = TestBus::new();
    let mut config = config(&bus);
    config.security = security(&pki);
    let hub = HubBuilder::new(config)
        .consumer(recorder("Recorder", Duration::ZERO).0)
        .start()
        .unwrap();
    let hook = hub.reload_hook().clone();
    assert!(hook.listener_count() >= 1, "the CA and CRL listen");
    let before = hub.stats().security().trust_loaded_at();
    std::thread::sleep(Duration::from_millis(20));
    hook.request();
    let stats: Arc<Stats> = hub.stats().clone();
    assert!(wait_until(Duration::from_secs(10), || stats
        .security()
        .trust_loaded_at()
        > before));
    let report = hub.shutdown();
    assert!(report.undrained.is_empty());
    // After shutdown a request reaches no thread and blocks nothing.
    hook.request();
}
