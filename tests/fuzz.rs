//! Bounded fuzzing (see `fedhub_testkit::fuzz`: `FEDHUB_FUZZ_SECS` per target,
//! `FEDHUB_FUZZ_SEED`, failing inputs kept in `fuzz/regressions/<target>/`)
//! of what reads bytes from outside: the envelope decoder on raw frames,
//! canonical JSON, signature validation of mutated signed messages, and the
//! config loader. Each asserts a property, not only the absence of a panic.

use std::collections::HashMap;

use fedhub::{
    canonicalize, to_canonical_string, Config, Envelope, SecurityConfig, SigningKey, Stats,
    Validator,
};
use fedhub_testkit::fuzz::fuzz;
use fedhub_testkit::*;
use serde_json::{json, Value};

fn sample_bodies() -> Vec<String> {
    let topic = format!("{PREFIX}.bodhi.update.request");
    vec![
        body(
            &topic,
            1,
            json!({"text": "héllo", "n": 1.5, "list": [1, 2.0, -3e-7, null, true]}),
        ),
        body(
            &topic,
            2,
            json!({"nested": {"a": {"b": {"c": [[], {}]}}}, "big": 12345678901234567u64}),
        ),
        body(
            &topic,
            3,
            json!({"esc": "quote \" backslash \\ tab \t nul \u{0}", "emoji": "💩"}),
        ),
    ]
}

#[test]
fn fuzz_the_envelope_decoder_on_raw_frames() {
    let seeds: Vec<Vec<u8>> = sample_bodies()
        .into_iter()
        .map(|b| {
            let topic = serde_json::from_str::<Value>(&b).unwrap()["topic"]
                .as_str()
                .unwrap()
                .to_string();
            [topic.as_bytes(), b"\0", b.as_bytes()].concat()
        })
        .collect();
    fuzz("envelope", &seeds, |input| {
        // One frame (`topic\0json`), and the same cut into two frames.
        let mut attempts = vec![Envelope::from_frames(&[input], 1 << 20)];
        if let Some(nul) = input.iter().position(|b| *b == 0) {
            attempts.push(Envelope::from_frames(
                &[&input[..nul], &input[nul + 1..]],
                1 << 20,
            ));
        }
        for attempt in attempts {
            match attempt {
                Ok(envelope) => {
                    let parsed: Value =
                        serde_json::from_str(envelope.body()).expect("a decoded body is JSON");
                    assert_eq!(
                        parsed["topic"].as_str(),
                        Some(envelope.topic()),
                        "the topic frame equals the body's topic"
                    );
                }
                Err(error) => assert!(!error.to_string().is_empty()),
            }
        }
    });
}

#[test]
fn fuzz_canonical_json_decode_encode_decode_is_stable() {
    let seeds: Vec<Vec<u8>> = sample_bodies()
        .into_iter()
        .map(String::into_bytes)
        .collect();
    fuzz("canonical", &seeds, |input| {
        // fedmsg's transcoder (NaN, Infinity and big integers kept as written).
        if let Ok(first) = canonicalize(input) {
            assert_eq!(
                canonicalize(first.as_bytes()).as_deref(),
                Ok(first.as_str()),
                "canonical JSON is a fixed point"
            );
        }
        // The encoder of values built in Rust: decode, encode, decode again.
        if let Ok(value) = serde_json::from_slice::<Value>(input) {
            let encoded = to_canonical_string(&value);
            assert_eq!(
                serde_json::from_str::<Value>(&encoded).ok(),
                Some(value),
                "decoding the canonical encoding gives the value again: {encoded}"
            );
            assert_eq!(
                canonicalize(encoded.as_bytes()).as_deref(),
                Ok(encoded.as_str()),
                "both encoders agree"
            );
        }
    });
}

/// The message without `signature` and `certificate`, canonical: what a
/// signature covers.
fn covered(body: &[u8]) -> Option<String> {
    let mut value: Value = serde_json::from_slice(body).ok()?;
    let map = value.as_object_mut()?;
    map.remove("signature");
    map.remove("certificate");
    Some(to_canonical_string(&value))
}

#[test]
fn fuzz_signature_validation_on_mutated_signed_messages() {
    let pki = TestPki::new();
    pki.issue("shell-vm");
    let key = SigningKey::from_files(
        &pki.dir().join("shell-vm.key"),
        &pki.dir().join("shell-vm.crt"),
        "shell-vm",
    )
    .unwrap();
    let config = SecurityConfig {
        validate_signatures: true,
        ca_cert_location: pki.ca().display().to_string(),
        crl_location: pki.crl().display().to_string(),
        ..SecurityConfig::default()
    };
    let validator = Validator::load(&config, Stats::new().security().clone()).unwrap();
    let topic = format!("{PREFIX}.bodhi.update.request");
    let mut originals = Vec::new();
    let seeds: Vec<Vec<u8>> = sample_bodies()
        .into_iter()
        .map(|b| {
            let mut map = serde_json::from_str::<Value>(&b)
                .unwrap()
                .as_object()
                .unwrap()
                .clone();
            key.sign(&mut map).unwrap();
            let signed = to_canonical_string(&Value::Object(map));
            assert_eq!(validator.validate_body(&topic, signed.as_bytes()), Ok(()));
            originals.push(covered(signed.as_bytes()).unwrap());
            signed.into_bytes()
        })
        .collect();
    fuzz("signature", &seeds, |input| {
        if let Ok(()) = validator.validate_body(&topic, input) {
            let covered = covered(input).expect("an accepted message is a JSON object");
            assert!(
                originals.contains(&covered),
                "accepted a message whose signed content changed: {covered}"
            );
        }
    });
}

#[test]
fn fuzz_the_config_loader() {
    let example = std::fs::read(workspace_root().join("examples/fedhub.toml")).unwrap();
    let seeds = vec![
        example,
        b"[bus]\ninbound = \"tcp://127.0.0.1:9941\"\n[http]\nlisten = \"127.0.0.1:0\"\nmax_head_bytes = 8192\n".to_vec(),
        b"[security]\nvalidate_signatures = false\nrouting_policy = { \"org.x.y\" = [\"cn\"] }\n".to_vec(),
        b"[consumers.NullConsumer]\nenabled = true\ntopics = [\"org.fedoraproject.prod.*\"]\n".to_vec(),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fedhub.toml");
    fuzz("config", &seeds, |input| {
        std::fs::write(&path, input).unwrap();
        if let Err(error) = Config::load_with_env(Some(&path), Some(HashMap::new())) {
            assert!(!error.to_string().trim().is_empty(), "an empty error");
        }
    });
}
