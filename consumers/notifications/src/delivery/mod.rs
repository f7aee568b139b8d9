//! Delivery of notifications by webhook and e-mail, with retries, backoff
//! and a dead-letter state kept in the store.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One message matched for one recipient: what a delivery sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    /// The user (`ralph.id.fedoraproject.org`).
    pub openid: String,
    /// The context (`email`, `webhook`, ...).
    pub context: String,
    /// The preference's detail value: an e-mail address, a webhook URL.
    pub address: String,
    /// The name of the filter that matched.
    pub filter_name: String,
    /// The id of the filter that matched.
    pub filter_id: i64,
    /// The message's `msg_id`.
    pub msg_id: String,
    /// The message's topic.
    pub topic: String,
    /// fedmsg_meta's one-line summary.
    pub subtitle: String,
    /// fedmsg_meta's link (may be empty).
    pub link: String,
    /// The whole fedmsg message body.
    pub message: Value,
}

/// What goes out in one delivery: one notification, or a digest of several
/// for one recipient (batch preferences).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outgoing {
    /// One notification.
    Single(Notification),
    /// Several queued notifications for one address, sent together.
    Digest {
        /// The user.
        openid: String,
        /// The context.
        context: String,
        /// The detail value.
        address: String,
        /// The notifications, oldest first.
        notifications: Vec<Notification>,
    },
}

// TEMPORARY STUB (replaced by the real deliverer)
/// stub
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// stub
    pub workers: usize,
}
impl DeliveryConfig {
    /// stub
    pub fn validate(&self) -> Result<(), String> {
        Ok(())
    }
}
/// stub
#[derive(Debug, thiserror::Error)]
#[error("stub")]
pub struct DeliveryError;
/// stub
pub struct Deliverer;
impl Deliverer {
    /// stub
    pub fn start(
        _db: fedhub_storage::Database,
        _c: DeliveryConfig,
        _r: &prometheus::Registry,
    ) -> Result<Deliverer, DeliveryError> {
        Ok(Deliverer)
    }
    /// stub
    pub fn submit(&self, _o: Outgoing) -> Result<(), DeliveryError> {
        Ok(())
    }
    /// stub
    pub fn pending_count(&self) -> u64 {
        0
    }
}
