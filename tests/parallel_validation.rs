//! Signature checks run on several threads when a burst arrives, and messages
//! still reach each consumer in arrival order, the rejected ones left out.
//! Real ZeroMQ, a real PKI made with `openssl`.

use std::time::Duration;

use fedhub::{to_canonical_string, HubBuilder, RejectReason, SigningKey};
use fedhub_testkit::*;
use serde_json::{json, Value};

#[test]
fn a_burst_validated_on_several_threads_arrives_in_order_without_the_forged() {
    let pki = TestPki::new();
    pki.issue("alice");
    pki.issue("bob");
    let keys: Vec<SigningKey> = ["alice", "bob"]
        .iter()
        .map(|name| {
            SigningKey::from_files(
                &pki.dir().join(format!("{name}.key")),
                &pki.dir().join(format!("{name}.crt")),
                name,
            )
            .unwrap()
        })
        .collect();
    let topic = format!("{PREFIX}.logger.log");
    let total = 3000u64;
    // Every 7th message is tampered with after signing.
    let forged = |i: u64| i.is_multiple_of(7);
    let bodies: Vec<String> = (1..=total)
        .map(|i| {
            let mut map = json!({
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
            keys[(i % 2) as usize].sign(&mut map).unwrap();
            if forged(i) {
                map["msg"] = json!({"n": i, "forged": true});
            }
            to_canonical_string(&Value::Object(map))
        })
        .collect();

    let bus = TestBus::new();
    let mut config = config(&bus);
    config.security.validate_signatures = true;
    config.security.ca_cert_location = pki.ca().display().to_string();
    config.security.crl_location = pki.crl().display().to_string();
    config.security.validation_threads = 4;
    let (factory, seen) = recorder("Recorder", Duration::ZERO);
    let hub = HubBuilder::new(config)
        .consumer(factory.topics([format!("{PREFIX}.*")]))
        .start()
        .unwrap();
    bus.wait_subscribed();
    for body in &bodies {
        bus.send_frames(&[topic.as_bytes(), body.as_bytes()]);
    }
    let expected: Vec<u64> = (1..=total).filter(|i| !forged(*i)).collect();
    let security = hub.stats().security().clone();
    assert!(
        wait_until(Duration::from_secs(60), || seen.lock().unwrap().len()
            == expected.len()
            && security.rejected_total() == total - expected.len() as u64),
        "delivered {} rejected {}",
        seen.lock().unwrap().len(),
        security.rejected_total()
    );
    let delivered: Vec<u64> = seen
        .lock()
        .unwrap()
        .iter()
        .map(|s| s.i.unwrap() as u64)
        .collect();
    assert_eq!(
        delivered, expected,
        "in arrival order, forged ones left out"
    );
    assert_eq!(
        security.rejected(RejectReason::BadSignature),
        total - expected.len() as u64
    );
    assert_eq!(security.validated(), expected.len() as u64);
    hub.shutdown();
}
