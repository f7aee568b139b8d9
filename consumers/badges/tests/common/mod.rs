//! Shared helpers: a history store and Tahrir's tables on disk, messages.
#![allow(dead_code)]

use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use fedhub::Envelope;
use fedhub_badges::awarder::{Awarder, AwarderOptions, SharedRules};
use fedhub_badges::consumer::load_rules;
use fedhub_badges::expr::Sandbox;
use fedhub_badges::tahrir::{Issuer, Tahrir};
use fedhub_history::{NewMessage, SqliteStore, Store};
use fedhub_storage::{Database, DatabaseUrl, PoolOptions};
use serde_json::{json, Value};

/// `n` plain badges, `badge-0` to `badge-<n-1>`, registered under `issuer_id`.
pub fn badges(tahrir: &Tahrir, issuer_id: i64, n: usize) -> Vec<fedhub_badges::tahrir::Badge> {
    let badges: Vec<fedhub_badges::tahrir::Badge> = (0..n)
        .map(|k| fedhub_badges::tahrir::Badge {
            id: format!("badge-{k}"),
            name: format!("Badge {k}"),
            image: "https://example.org/i.png".into(),
            description: "d".into(),
            criteria: "https://example.org/c".into(),
            tags: String::new(),
        })
        .collect();
    for badge in &badges {
        tahrir.ensure_badge(badge, issuer_id).unwrap();
    }
    badges
}

/// The current time in unix seconds.
pub fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// A message body on `suffix` (`org.fedoraproject.prod.<suffix>`).
pub fn body(suffix: &str, msg_id: &str, timestamp: f64, msg: Value) -> Value {
    json!({
        "topic": format!("org.fedoraproject.prod.{suffix}"),
        "msg": msg,
        "msg_id": msg_id,
        "timestamp": timestamp,
        "i": 1,
        "username": "apache",
    })
}

/// Stores `body` in the history store, as `Nommer` does.
pub fn store(history: &dyn Store, body: &Value) {
    let envelope = Envelope::from_value(body.clone()).unwrap();
    history
        .insert_batch(&[NewMessage::from_envelope(&envelope)])
        .unwrap();
}

/// Tahrir's tables at `url`, opened as consumer `name` (one pool per URL).
pub fn tahrir(url: &str) -> Tahrir {
    let db = Database::open(
        &DatabaseUrl::parse(url).unwrap(),
        "FedoraBadgesConsumer",
        &PoolOptions::default(),
        &prometheus::Registry::new(),
    )
    .unwrap();
    Tahrir::open(db).unwrap()
}

/// An issuer.
pub fn issuer() -> Issuer {
    Issuer {
        origin: "https://badges.example.org".into(),
        name: "Test Issuer".into(),
        org: "https://example.org".into(),
        contact: "badges@example.org".into(),
    }
}

/// An awarder over the rules of `dir`.
pub fn awarder(dir: &Path, history: Arc<dyn Store>, tahrir: Tahrir) -> (Awarder, SharedRules) {
    let sandbox = Sandbox::default();
    let issuer_id = tahrir.ensure_issuer(&issuer()).unwrap();
    let rules = load_rules(dir, &sandbox, &tahrir, issuer_id, None).unwrap();
    let shared: SharedRules = Arc::new(RwLock::new(Arc::new(rules)));
    let awarder = Awarder::new(
        shared.clone(),
        sandbox,
        history,
        tahrir,
        AwarderOptions {
            datagrepper_url: "http://hub.example.org/datagrepper".into(),
            ..AwarderOptions::default()
        },
    );
    (awarder, shared)
}

/// A SQLite history store in `dir`.
pub fn history(dir: &Path) -> Arc<dyn Store> {
    Arc::new(SqliteStore::open(dir.join("history.sqlite")).unwrap())
}

/// Every (topic, body) published, in order.
pub type Published = Arc<Mutex<Vec<(String, Value)>>>;

/// The examples' rules directory.
pub fn example_rules() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/badges/rules")
}

/// A rule file with these trigger, criteria and recipient lines.
pub fn rule(name: &str, trigger: &str, criteria: &str, recipient: &str) -> String {
    format!(
        "name: {name}\ndescription: d\ncreator: c\ndiscussion: https://example.org/d\nimage_url: https://example.org/i.png\nissuer_id: fedora-project\ntrigger:\n{trigger}\ncriteria:\n{criteria}\n{recipient}\n"
    )
}
