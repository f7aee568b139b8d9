//! The planet incident replayed: a feed re-crawl re-sends thousands of old
//! blog posts with new `msg_id`s and their old timestamps. The history store
//! takes them (new ids), so counts climb, but no badge is awarded for them:
//! their own timestamps are older than `max_message_age_secs`. A repeated
//! delivery of one message is ignored by its `msg_id`.

mod common;

use common::*;
use serde_json::{json, Value};

const AUTHORS: usize = 300;
const POSTS_PER_AUTHOR: usize = 10;

fn post(author: &str, id: &str, timestamp: f64) -> Value {
    body(
        "planet.post.new",
        id,
        timestamp,
        json!({"username": author, "name": author, "post": {"title": "Old news", "link": "https://example.org/old"}}),
    )
}

#[test]
fn thousands_of_old_blog_posts_resent_with_new_ids_award_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let history = history(dir.path());
    let tahrir = tahrir(dir.path().join("badges.sqlite").to_str().unwrap());
    let (mut awarder, _) = awarder(&example_rules(), history.clone(), tahrir.clone());
    let publish = |_: &str, _: Value| -> Result<(), String> { Ok(()) };
    let now = now();
    let mut spew = Vec::new();
    for a in 0..AUTHORS {
        for p in 0..POSTS_PER_AUTHOR {
            // Posts written one to three years ago, re-sent today with fresh ids.
            let age = 86_400.0 * (365.0 + ((a * POSTS_PER_AUTHOR + p) % 730) as f64);
            spew.push(post(
                &format!("blogger{a}"),
                &format!("2026-spew-{a}-{p}"),
                now - age,
            ));
        }
    }
    // The history store of the same hub stores each one first (as `after = ["Nommer"]` orders).
    for chunk in spew.chunks(1000) {
        let batch: Vec<fedhub_history::NewMessage> = chunk
            .iter()
            .map(|b| {
                fedhub_history::NewMessage::from_envelope(
                    &fedhub::Envelope::from_value(b.clone()).unwrap(),
                )
            })
            .collect();
        history.insert_batch(&batch).unwrap();
    }
    let mut awarded = 0;
    for b in &spew {
        let outcome = awarder.handle(
            "org.fedoraproject.prod.planet.post.new",
            b,
            std::time::SystemTime::now(),
            &publish,
        );
        assert!(outcome.too_old, "{b}");
        awarded += outcome.awards.len();
    }
    // The whole spew went through the store (counts climbed) ...
    let counted = history
        .count(
            &fedhub_history::Filter::new()
                .topic("org.fedoraproject.prod.planet.post.new")
                .user("blogger7"),
        )
        .unwrap();
    assert_eq!(counted, POSTS_PER_AUTHOR as u64);
    // ... and awarded nothing.
    assert_eq!(awarded, 0);
    assert_eq!(tahrir.assertion_count().unwrap(), 0);
    let counters = awarder.counters();
    assert_eq!(
        counters.too_old.load(std::sync::atomic::Ordering::Relaxed),
        (AUTHORS * POSTS_PER_AUTHOR) as u64
    );

    // The same spew delivered twice: the second copy is ignored by msg_id.
    for b in spew.iter().take(100) {
        let outcome = awarder.handle(
            "org.fedoraproject.prod.planet.post.new",
            b,
            std::time::SystemTime::now(),
            &publish,
        );
        assert!(outcome.duplicate);
    }
    assert_eq!(
        counters
            .duplicates
            .load(std::sync::atomic::Ordering::Relaxed),
        100
    );

    // A post written today by one of them still earns the badge: the rule works.
    let fresh = post("blogger7", "2026-fresh-1", now);
    store(&*history, &fresh);
    let outcome = awarder.handle(
        "org.fedoraproject.prod.planet.post.new",
        &fresh,
        std::time::SystemTime::now(),
        &publish,
    );
    let badges: Vec<&str> = outcome.awards.iter().map(|a| a.badge_id.as_str()).collect();
    assert_eq!(badges, vec!["bloggin-it!-planet-i"], "{outcome:?}");
}
