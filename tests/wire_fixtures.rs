//! Frames captured from the real Python fedmsg 1.1.7 tools decode, and re-encode
//! to exactly the bytes fedmsg produced (canonical JSON is what signatures cover).

use fedhub::canonicalize;
use fedhub::Envelope;

/// One captured message: its frames as bytes.
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
            messages
                .last_mut()
                .expect("frame after a message header")
                .push(bytes);
        }
    }
    assert!(!messages.is_empty(), "{path} holds no messages");
    messages
}

fn decode(frames: &[Vec<u8>]) -> Envelope {
    let parts: Vec<&[u8]> = frames.iter().map(Vec::as_slice).collect();
    Envelope::from_frames(&parts, usize::MAX).expect("captured frames decode")
}

#[test]
fn unsigned_messages_reencode_byte_for_byte() {
    for frames in read_capture("wire_unsigned.txt") {
        let envelope = decode(&frames);
        assert_eq!(envelope.topic().as_bytes(), frames[0].as_slice());
        assert_eq!(envelope.canonical_body().as_bytes(), frames[1].as_slice());
        assert!(envelope.msg_id().unwrap().starts_with("2026-"));
        assert!(envelope.i().unwrap() >= 1);
        assert_eq!(envelope.username(), Some("root"));
    }
}

#[test]
fn signed_messages_reencode_and_match_the_signed_bytes() {
    let captured = read_capture("wire_signed.txt");
    for frames in &captured {
        let envelope = decode(frames);
        assert_eq!(envelope.canonical_body().as_bytes(), frames[1].as_slice());
        assert_eq!(envelope.crypto(), Some("x509"));
        assert!(envelope.signature().unwrap().ends_with('\n'));
        assert!(envelope
            .certificate()
            .unwrap()
            .starts_with("LS0tLS1CRUdJTi"));
    }
    // What fedmsg signed: the envelope minus signature and certificate.
    let first = decode(&captured[0]);
    let mut stripped = first.json().clone();
    stripped.remove("signature");
    stripped.remove("certificate");
    let signed = fedhub::to_canonical_string(&serde_json::Value::Object(stripped));
    let expected = std::fs::read(format!(
        "{}/tests/fixtures/wire/wire_signed_msg1_canonical_signed_bytes.bin",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap();
    assert_eq!(signed.as_bytes(), expected.as_slice());
}

#[test]
fn relay_reserialised_bodies_canonicalize_to_compact_form() {
    // Bodies fedmsg-logger sent are already canonical.
    for frames in read_capture("wire_logger_to_relay_inbound.txt") {
        assert_eq!(
            decode(&frames).canonical_body().as_bytes(),
            frames[1].as_slice()
        );
    }
    let relayed = read_capture("wire_relay_outbound_reemitted.txt");
    assert!(!relayed.is_empty());
    for frames in relayed {
        // The relay re-serialises with Python's default separators: ", " and ": ".
        assert!(frames[1].windows(2).any(|w| w == b", "));
        let envelope = decode(&frames);
        let canonical = envelope.canonical_body();
        assert_ne!(canonical.as_bytes(), frames[1].as_slice());
        assert_eq!(canonicalize(&frames[1]).unwrap(), canonical);
        // Same document, compact form.
        let raw: serde_json::Value = serde_json::from_slice(&frames[1]).unwrap();
        let compact: serde_json::Value = serde_json::from_str(&canonical).unwrap();
        assert_eq!(raw, compact);
        assert_eq!(fedhub::to_canonical_string(&raw), canonical);
    }
}
