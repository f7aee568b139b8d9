//! What rules look at in one message, each value computed at most once and
//! shared by every rule of every user (fedmsg_meta's per-message memo).

use std::cell::OnceCell;

use fedhub_history::meta::{self, Names};
use serde_json::{Map, Value};

/// One message as the rules see it.
pub struct MessageFacts<'a> {
    topic: &'a str,
    body: &'a Map<String, Value>,
    usernames: OnceCell<Names>,
    packages: OnceCell<Names>,
    msg_json: OnceCell<String>,
    link: OnceCell<String>,
}

static NULL: Value = Value::Null;

impl<'a> MessageFacts<'a> {
    /// The facts of a message with this topic and (whole fedmsg) body.
    pub fn new(topic: &'a str, body: &'a Map<String, Value>) -> MessageFacts<'a> {
        MessageFacts {
            topic,
            body,
            usernames: OnceCell::new(),
            packages: OnceCell::new(),
            msg_json: OnceCell::new(),
            link: OnceCell::new(),
        }
    }

    /// The topic.
    pub fn topic(&self) -> &'a str {
        self.topic
    }

    /// The whole body.
    pub fn body(&self) -> &'a Map<String, Value> {
        self.body
    }

    /// The payload (`body.msg`), `null` when absent.
    pub fn msg(&self) -> &'a Value {
        self.body.get("msg").unwrap_or(&NULL)
    }

    /// The topic without prefix and environment.
    pub fn title(&self) -> &'a str {
        meta::title(self.topic)
    }

    /// The topic's fourth segment (`buildsys`), `""` when it has none.
    pub fn category(&self) -> &'a str {
        fedhub::category(self.topic).unwrap_or_default()
    }

    /// The topic's last segment.
    pub fn last_segment(&self) -> &'a str {
        self.topic.rsplit('.').next().unwrap_or_default()
    }

    /// fedmsg_meta's usernames.
    pub fn usernames(&self) -> &Names {
        self.usernames
            .get_or_init(|| meta::usernames_of(self.topic, self.msg()))
    }

    /// fedmsg_meta's packages.
    pub fn packages(&self) -> &Names {
        self.packages
            .get_or_init(|| meta::packages_of(self.topic, self.msg()))
    }

    /// The payload as JSON text (what `regex_filter` searches).
    pub fn msg_json(&self) -> &str {
        self.msg_json
            .get_or_init(|| serde_json::to_string(self.msg()).unwrap_or_default())
    }

    /// fedmsg_meta's link (`""` when there is none).
    pub fn link(&self) -> &str {
        self.link
            .get_or_init(|| meta::link_of(self.topic, self.msg()))
    }

    /// fedmsg_meta's one-line summary.
    pub fn subtitle(&self) -> String {
        meta::subtitle_of(self.topic, self.msg())
    }
}
