//! fedmsg's x509 signatures: the spec's test vector byte for byte (fedmsg's own
//! public test certificates, from the fedmsg 1.1.7 package in the venv made by
//! scripts/python-env.sh), the signed messages captured from the Python
//! publisher, and a validating hub on real ZeroMQ sockets that delivers only
//! trusted messages and counts every other one under the right reason.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use fedhub::{
    to_canonical_string, HubBuilder, RejectReason, SecurityConfig, SigningKey, Stats, Validator,
};
use fedhub_testkit::*;
use serde_json::{json, Map, Value};

/// fedmsg's public test certificates, as the fedmsg package ships them.
fn fedmsg_test_certs() -> PathBuf {
    let lib = python_env().join("lib");
    let python = std::fs::read_dir(&lib)
        .unwrap()
        .filter_map(Result::ok)
        .find(|e| e.file_name().to_string_lossy().starts_with("python3"))
        .expect("a python3.X directory in the venv")
        .path();
    python.join("site-packages/fedmsg/tests/test_certs/keys")
}

fn validator(ca: &Path, crl: Option<&Path>, tweak: impl FnOnce(&mut SecurityConfig)) -> Validator {
    let mut config = SecurityConfig {
        validate_signatures: true,
        ca_cert_location: ca.display().to_string(),
        crl_location: crl.map(|p| p.display().to_string()).unwrap_or_default(),
        ..SecurityConfig::default()
    };
    tweak(&mut config);
    Validator::load(&config, Stats::new().security().clone()).unwrap()
}

fn reason(result: Result<(), fedhub::Rejection>) -> Option<RejectReason> {
    result.err().map(|r| r.reason)
}

const VECTOR_TOPIC: &str = "org.fedoraproject.dev.test.testing";
const VECTOR_INPUT: &str = r#"{"topic":"org.fedoraproject.dev.test.testing","msg":{"text":"héllo","n":1.5},"timestamp":1700000000,"msg_id":"2023-00000000-0000-4000-8000-000000000000","i":1,"username":"fedmsg"}"#;
const VECTOR_SIGNED_BYTES: &str = r#"{"crypto":"x509","i":1,"msg":{"n":1.5,"text":"h\u00e9llo"},"msg_id":"2023-00000000-0000-4000-8000-000000000000","timestamp":1700000000,"topic":"org.fedoraproject.dev.test.testing","username":"fedmsg"}"#;
const VECTOR_SHA1: &str = "c6376d7eec1c16130c830b9a98629f09adfa064c";
const VECTOR_SIGNATURE: &str = "FYlX6dDs/Jb3zhMc9JFcL/Ox8Qk0e8JLVMyVYPTr9ZYepjkY1RdVeAyYjiTrpOyHHt74O2ZAfTTj\nkYao7Uzd6IGhqEdP5fzZ2RozPLJT+DsZkFVkGkzithCzNy6BxVndMfjfvZmUUK1cpcIV+ZkdIbDO\nyc/lgkXxwcTNJlk0Oxc=\n";

#[test]
fn the_specs_test_vector_byte_for_byte() {
    let keys = fedmsg_test_certs();
    let name = "shell-app01.phx2.fedoraproject.org";
    let signer = SigningKey::from_files(
        &keys.join(format!("{name}.key")),
        &keys.join(format!("{name}.crt")),
        name,
    )
    .unwrap();
    let mut envelope: Map<String, Value> = serde_json::from_str(VECTOR_INPUT).unwrap();
    signer.sign(&mut envelope).unwrap();

    let mut stripped = envelope.clone();
    stripped.remove("signature");
    stripped.remove("certificate");
    let signed_bytes = to_canonical_string(&Value::Object(stripped));
    assert_eq!(signed_bytes, VECTOR_SIGNED_BYTES);
    let digest: String = openssl::sha::sha1(signed_bytes.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(digest, VECTOR_SHA1);
    assert_eq!(envelope["signature"], VECTOR_SIGNATURE);
    let certificate = envelope["certificate"].as_str().unwrap();
    assert_eq!(certificate.len(), 2112);
    assert_eq!(certificate.matches('\n').count(), 28);
    assert!(certificate.starts_with(
        "LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCk1JSUVWRENDQTcyZ0F3SUJBZ0lCQXpBTkJna3Fo\n"
    ));

    // The validation outcomes the spec lists for this message.
    let body = to_canonical_string(&Value::Object(envelope.clone()));
    let ca = keys.join("ca.crt");
    let crl = keys.join("crl.pem");
    let check = |v: &Validator, body: &str| reason(v.validate_body(VECTOR_TOPIC, body.as_bytes()));
    assert_eq!(check(&validator(&ca, Some(&crl), |_| {}), &body), None);
    assert_eq!(check(&validator(&ca, None, |_| {}), &body), None);
    let expired_crl = keys.join("expired_crl.pem");
    assert_eq!(
        check(&validator(&ca, Some(&expired_crl), |_| {}), &body),
        Some(RejectReason::Expired)
    );
    let someone_else = validator(&ca, Some(&crl), |c| {
        c.routing_policy
            .insert(VECTOR_TOPIC.into(), vec!["someone-else".into()]);
    });
    assert_eq!(check(&someone_else, &body), Some(RejectReason::Policy));
    let listed = validator(&ca, Some(&crl), |c| {
        c.routing_policy
            .insert(VECTOR_TOPIC.into(), vec![name.into()]);
        c.routing_nitpicky = true;
    });
    assert_eq!(check(&listed, &body), None);
    let nitpicky = validator(&ca, Some(&crl), |c| c.routing_nitpicky = true);
    assert_eq!(check(&nitpicky, &body), Some(RejectReason::Policy));
    let as_int = body.replace("\"n\":1.5", "\"n\":1");
    assert_ne!(as_int, body);
    assert_eq!(
        check(&validator(&ca, Some(&crl), |_| {}), &as_int),
        Some(RejectReason::BadSignature)
    );
    // Whitespace and key order on the wire do not matter: the signature covers
    // the canonical form (relays re-serialise with Python's default json.dumps).
    let relayed = serde_json::to_string_pretty(&envelope).unwrap();
    assert_eq!(check(&validator(&ca, Some(&crl), |_| {}), &relayed), None);
    // fedmsg's revoked test certificate (serial 02, on crl.pem).
    let revoked = SigningKey::from_files(
        &keys.join("dummy-revoked.key"),
        &keys.join("dummy-revoked.crt"),
        "dummy-revoked",
    )
    .unwrap();
    let mut envelope: Map<String, Value> = serde_json::from_str(VECTOR_INPUT).unwrap();
    revoked.sign(&mut envelope).unwrap();
    let body = to_canonical_string(&Value::Object(envelope));
    assert_eq!(
        check(&validator(&ca, Some(&crl), |_| {}), &body),
        Some(RejectReason::Revoked)
    );
    assert_eq!(check(&validator(&ca, None, |_| {}), &body), None);
}

/// One captured message of `tests/fixtures/wire/<name>`: its frames as bytes.
fn read_capture(name: &str) -> Vec<Vec<Vec<u8>>> {
    let path = format!("{}/tests/fixtures/wire/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut messages: Vec<Vec<Vec<u8>>> = Vec::new();
    for line in text.lines() {
        if line.starts_with("=== message") {
            messages.push(Vec::new());
        } else if let Some(hex) = line.strip_prefix("hex:  ") {
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex digits"))
                .collect();
            messages.last_mut().unwrap().push(bytes);
        }
    }
    messages
}

fn fixture_pki() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/pki")
}

#[test]
fn messages_signed_by_the_python_publisher_are_accepted() {
    let pki = fixture_pki();
    let captured = read_capture("wire_signed.txt");
    assert_eq!(captured.len(), 3);
    // Every captured topic listed for the publisher's CN, and nothing else allowed.
    let v = validator(&pki.join("ca.crt"), Some(&pki.join("crl.pem")), |c| {
        c.routing_nitpicky = true;
        for frames in &captured {
            let topic = String::from_utf8(frames[0].clone()).unwrap();
            c.routing_policy.insert(topic, vec!["peerpub-vm".into()]);
        }
    });
    for frames in &captured {
        let topic = std::str::from_utf8(&frames[0]).unwrap();
        assert_eq!(
            v.validate_body(topic, &frames[1]),
            Ok(()),
            "{topic}: {}",
            String::from_utf8_lossy(&frames[1])
        );
        let tampered = String::from_utf8_lossy(&frames[1]).replacen("\"i\":", "\"i\":1", 1);
        assert_eq!(
            reason(v.validate_body(topic, tampered.as_bytes())),
            Some(RejectReason::BadSignature)
        );
    }
}

/// One test message: what is sent, and what validation must make of it.
struct Case {
    label: &'static str,
    topic_frame: String,
    body: String,
    expected: Option<RejectReason>,
}

fn envelope(topic: &str, label: &str, i: u64) -> Map<String, Value> {
    let value = json!({
        "topic": topic,
        "msg": {"case": label},
        "i": i,
        "msg_id": format!("2026-00000000-0000-4000-8000-{i:012}"),
        "timestamp": 1_795_392_000u64 + i,
        "username": "tester",
    });
    value.as_object().unwrap().clone()
}

fn signing_key(pki: &TestPki, name: &str) -> SigningKey {
    SigningKey::from_files(
        &pki.dir().join(format!("{name}.key")),
        &pki.dir().join(format!("{name}.crt")),
        name,
    )
    .unwrap()
}

fn encode(map: &Map<String, Value>) -> String {
    to_canonical_string(&Value::Object(map.clone()))
}

#[test]
fn a_validating_hub_delivers_only_trusted_messages_and_counts_the_rest() {
    let pki = TestPki::new();
    pki.issue("bodhi-app");
    pki.issue("shell-vm");
    pki.issue("revoked-vm");
    pki.issue_expired("expired-vm");
    pki.self_signed("stranger");
    pki.revoke("revoked-vm");
    let bodhi = signing_key(&pki, "bodhi-app");
    let shell = signing_key(&pki, "shell-vm");
    let revoked = signing_key(&pki, "revoked-vm");
    let expired = signing_key(&pki, "expired-vm");
    let stranger = signing_key(&pki, "stranger");

    let policed = format!("{PREFIX}.bodhi.update.request");
    let free = format!("{PREFIX}.logger.log");
    let mut cases = Vec::new();
    let mut i = 0;
    let mut case = |label: &'static str,
                    topic: &str,
                    make: &dyn Fn(&mut Map<String, Value>),
                    expected: Option<RejectReason>| {
        i += 1;
        let mut env = envelope(topic, label, i);
        make(&mut env);
        cases.push(Case {
            label,
            topic_frame: topic.to_string(),
            body: encode(&env),
            expected,
        });
    };
    case(
        "signed by the listed signer",
        &policed,
        &|e| bodhi.sign(e).unwrap(),
        None,
    );
    case("unlisted topic", &free, &|e| shell.sign(e).unwrap(), None);
    case(
        "tampered after signing",
        &policed,
        &|e| {
            bodhi.sign(e).unwrap();
            e["msg"] = json!({"case": "tampered", "admin": true});
        },
        Some(RejectReason::BadSignature),
    );
    case(
        "signed with another key than the certificate's",
        &free,
        &|e| {
            shell.sign(e).unwrap();
            let mut other = e.clone();
            bodhi.sign(&mut other).unwrap();
            e["certificate"] = other["certificate"].clone();
        },
        Some(RejectReason::BadSignature),
    );
    case(
        "certificate from a CA nobody trusts",
        &free,
        &|e| stranger.sign(e).unwrap(),
        Some(RejectReason::UntrustedCertificate),
    );
    case(
        "revoked certificate",
        &free,
        &|e| revoked.sign(e).unwrap(),
        Some(RejectReason::Revoked),
    );
    case(
        "expired certificate",
        &free,
        &|e| expired.sign(e).unwrap(),
        Some(RejectReason::Expired),
    );
    case(
        "signer not allowed on the topic",
        &policed,
        &|e| shell.sign(e).unwrap(),
        Some(RejectReason::Policy),
    );
    case("unsigned", &free, &|_| {}, Some(RejectReason::Unsigned));
    case(
        "garbage signature",
        &free,
        &|e| {
            shell.sign(e).unwrap();
            e["signature"] = json!("!!! not base64 at all");
        },
        Some(RejectReason::BadSignature),
    );
    case(
        "truncated signature",
        &free,
        &|e| {
            shell.sign(e).unwrap();
            let short: String = e["signature"].as_str().unwrap().chars().take(40).collect();
            e["signature"] = json!(short);
        },
        Some(RejectReason::BadSignature),
    );
    case(
        "signature that is not a string",
        &free,
        &|e| {
            shell.sign(e).unwrap();
            e["signature"] = json!(12345);
        },
        Some(RejectReason::BadSignature),
    );
    case(
        "certificate that is not PEM",
        &free,
        &|e| {
            shell.sign(e).unwrap();
            e["certificate"] = json!("aGVsbG8gd29ybGQ=\n");
        },
        Some(RejectReason::UntrustedCertificate),
    );
    case(
        "certificate without signature",
        &free,
        &|e| {
            shell.sign(e).unwrap();
            e.remove("signature");
        },
        Some(RejectReason::Unsigned),
    );
    case(
        "gpg backend",
        &free,
        &|e| {
            shell.sign(e).unwrap();
            e["crypto"] = json!("gpg");
        },
        Some(RejectReason::Unsigned),
    );
    // A valid signed body whose topic frame says something else.
    i += 1;
    let mut env = envelope(&policed, "topic frame differs", i);
    bodhi.sign(&mut env).unwrap();
    cases.push(Case {
        label: "topic frame differs",
        topic_frame: format!("{PREFIX}.bodhi.other"),
        body: encode(&env),
        expected: Some(RejectReason::TopicMismatch),
    });

    let bus = TestBus::new();
    let mut config = config(&bus);
    config.security.validate_signatures = true;
    config.security.ca_cert_location = pki.ca().display().to_string();
    config.security.crl_location = pki.crl().display().to_string();
    config
        .security
        .routing_policy
        .insert(policed.clone(), vec!["bodhi-app".into()]);
    let (factory, seen) = recorder("Recorder", Duration::ZERO);
    let hub = HubBuilder::new(config)
        .consumer(factory.topics([format!("{PREFIX}.*")]))
        .start()
        .unwrap();
    bus.wait_subscribed();
    for case in &cases {
        bus.send_frames(&[case.topic_frame.as_bytes(), case.body.as_bytes()]);
    }
    let security = hub.stats().security().clone();
    let expected_accepted = cases.iter().filter(|c| c.expected.is_none()).count() as u64;
    let expected_rejected = cases.len() as u64 - expected_accepted;
    assert!(
        wait_until(Duration::from_secs(20), || {
            security.validated() == expected_accepted
                && security.rejected_total() == expected_rejected
                && seen.lock().unwrap().len() as u64 == expected_accepted
        }),
        "validated {} rejected {} delivered {}",
        security.validated(),
        security.rejected_total(),
        seen.lock().unwrap().len()
    );
    let delivered: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| {
            s.msg.as_ref().unwrap()["case"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let wanted: Vec<&str> = cases
        .iter()
        .filter(|c| c.expected.is_none())
        .map(|c| c.label)
        .collect();
    assert_eq!(
        delivered, wanted,
        "only trusted messages reach the consumer"
    );
    for reason in RejectReason::ALL {
        let expected = cases.iter().filter(|c| c.expected == Some(reason)).count() as u64;
        let labels: Vec<&str> = cases
            .iter()
            .filter(|c| c.expected == Some(reason))
            .map(|c| c.label)
            .collect();
        assert_eq!(
            security.rejected(reason),
            expected,
            "{}: {labels:?}",
            reason.as_str()
        );
    }
    // A rejected message is uncounted from the backlog it was admitted to.
    assert!(wait_until(Duration::from_secs(5), || hub
        .stats()
        .consumers()
        .iter()
        .all(|c| c.backlog() == 0)));

    let addr = hub.http_addr().unwrap();
    let (status, metrics) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    for line in [
        "fedhub_messages_rejected_total{reason=\"revoked\"} 1",
        "fedhub_messages_rejected_total{reason=\"bad_signature\"} 5",
        "fedhub_messages_rejected_total{reason=\"topic_mismatch\"} 1",
        "fedhub_messages_validated_total 2",
    ] {
        assert!(metrics.lines().any(|l| l == line), "{line} in\n{metrics}");
    }
    assert!(
        !metrics.contains("fedhub_bus_malformed_total{bus=\"test\",reason=\"topic_mismatch\"} 1"),
        "with validation on, a topic mismatch is validation's rejection"
    );
    let (_, state) = http_get(addr, "/state");
    let state: Value = serde_json::from_str(&state).unwrap();
    let validation = &state["validation"];
    assert_eq!(validation["enabled"], true);
    assert_eq!(validation["validated_total"], 2);
    assert_eq!(validation["rejected_total"], expected_rejected);
    assert_eq!(validation["rejected_by_reason"]["policy"], 1);
    assert!(validation["trust_loaded_at"].as_f64().unwrap() > 1.0e9);
    // Six distinct certificates reached the certificate check: bodhi-app,
    // shell-vm, stranger, revoked-vm, expired-vm and the one that is not PEM.
    assert_eq!(validation["certificates_cached"], 6);
    let last = &validation["last_rejection"];
    assert_eq!(last["reason"], "topic_mismatch", "{last}");
    assert_eq!(last["topic"], format!("{PREFIX}.bodhi.other"));
    hub.shutdown();
}

#[test]
fn validation_off_leaves_signed_and_unsigned_messages_alone() {
    let bus = TestBus::new();
    let (factory, seen) = recorder("Recorder", Duration::ZERO);
    let hub = HubBuilder::new(config(&bus))
        .consumer(factory)
        .start()
        .unwrap();
    bus.wait_subscribed();
    bus.send("logger.log", 1, json!({"unsigned": true}));
    assert!(wait_until(Duration::from_secs(10), || seen
        .lock()
        .unwrap()
        .len()
        == 1));
    let security = hub.stats().security().clone();
    assert_eq!(security.validated(), 0);
    assert_eq!(security.rejected_total(), 0);
    let (_, state) = http_get(hub.http_addr().unwrap(), "/state");
    let state: Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["validation"]["enabled"], false);
    assert_eq!(state["validation"]["last_rejection"], Value::Null);
    hub.shutdown();
}

#[test]
fn a_flood_of_forged_messages_costs_one_certificate_check() {
    let pki = TestPki::new();
    pki.issue("shell-vm");
    let shell = signing_key(&pki, "shell-vm");
    let v = Arc::new(validator(&pki.ca(), Some(&pki.crl()), |_| {}));
    let topic = format!("{PREFIX}.logger.log");
    for i in 0..2000 {
        let mut env = envelope(&topic, "flood", i);
        shell.sign(&mut env).unwrap();
        env["i"] = json!(i + 1);
        assert_eq!(
            reason(v.validate_body(&topic, encode(&env).as_bytes())),
            Some(RejectReason::BadSignature)
        );
    }
    assert_eq!(v.stats().state().certificates_cached, 1);
}

/// `fedhub run -c FILE` with a config whose CA cannot be loaded.
fn run_with_ca(dir: &Path, ca: &Path) -> (Option<i32>, String) {
    let config = dir.join("fedhub.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\ninbound = \"\"\n[http]\nlisten = \"\"\n[security]\nvalidate_signatures = true\nca_cert_location = \"{}\"\n",
            ca.display()
        ),
    )
    .unwrap();
    let output = Command::new(fedhub_binary())
        .args(["run", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_missing_or_garbage_ca_stops_the_hub_with_exit_2_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-ca.crt");
    let (code, stderr) = run_with_ca(dir.path(), &missing);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
    assert!(stderr.contains("CA certificate"), "{stderr}");

    let garbage = dir.path().join("garbage-ca.crt");
    std::fs::write(&garbage, "this is not a certificate\n").unwrap();
    let (code, stderr) = run_with_ca(dir.path(), &garbage);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(&garbage.display().to_string()), "{stderr}");
    assert!(stderr.contains("not a PEM certificate"), "{stderr}");
}
