//! CPU cost per message of the steps of fedhub's ingress, measured in one thread
//! over the corpus, without sockets: robust to the noise of a shared machine,
//! and it says where the time of the whole path goes.

use std::sync::Arc;
use std::time::Instant;

use serde_json::{json, Value};

use crate::corpus::Corpus;
use crate::round;

fn time_per_message(
    corpus: &Corpus,
    count: usize,
    mut step: impl FnMut(&[u8], &[u8]) -> usize,
) -> f64 {
    // One warm-up pass over a slice of the corpus, then the timed pass.
    let mut sink = 0usize;
    for k in 0..count.min(10_000) {
        let (topic, body) = corpus.frames(k);
        sink = sink.wrapping_add(step(topic, body));
    }
    let started = Instant::now();
    for k in 0..count {
        let (topic, body) = corpus.frames(k);
        sink = sink.wrapping_add(step(topic, body));
    }
    let ns = started.elapsed().as_nanos() as f64 / count as f64;
    std::hint::black_box(sink);
    ns
}

/// Nanoseconds per message for: copying the frames, validating the body with
/// serde (`IgnoredAny`), parsing it into a `serde_json::Value`, fedhub's
/// `Envelope::decode`, and decode plus the `Arc` and the drop on another thread
/// (as the router and the consumer actor do).
pub fn run(corpus: &Corpus, count: usize) -> Value {
    let count = count.max(1);
    let copy = time_per_message(corpus, count, |t, b| {
        let owned: (Vec<u8>, Vec<u8>) = (t.to_vec(), b.to_vec());
        owned.0.len() + owned.1.len()
    });
    let validate = time_per_message(corpus, count, |_, b| {
        usize::from(serde_json::from_slice::<serde::de::IgnoredAny>(b).is_ok())
    });
    let value = time_per_message(corpus, count, |_, b| {
        match serde_json::from_slice::<Value>(b) {
            Ok(Value::Object(m)) => m.len(),
            _ => 0,
        }
    });
    let envelope = time_per_message(corpus, count, |t, b| {
        match fedhub::Envelope::from_frames(&[t, b], 4 << 20) {
            Ok(e) => e.body().len(),
            Err(_) => 0,
        }
    });
    // Decode here, drop on another thread: glibc's cross-thread free pattern.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Arc<fedhub::Envelope>>>(64);
    let dropper = std::thread::spawn(move || {
        while let Ok(batch) = rx.recv() {
            drop(batch);
        }
    });
    let mut batch = Vec::with_capacity(256);
    let cross_thread = time_per_message(corpus, count, |t, b| {
        if let Ok(e) = fedhub::Envelope::from_frames(&[t, b], 4 << 20) {
            batch.push(Arc::new(e));
        }
        if batch.len() == 256 {
            let full = std::mem::replace(&mut batch, Vec::with_capacity(256));
            let _ = tx.send(full);
        }
        1
    });
    drop(tx);
    let _ = dropper.join();
    json!({
        "tool": "cost",
        "messages": count,
        "body_bytes_mean": round(corpus.mean_body_bytes(), 1),
        "ns_per_msg": {
            "copy_frames": round(copy, 1),
            "serde_validate_ignored_any": round(validate, 1),
            "serde_json_value": round(value, 1),
            "fedhub_envelope_decode": round(envelope, 1),
            "fedhub_envelope_decode_arc_drop_elsewhere": round(cross_thread, 1),
        },
    })
}
