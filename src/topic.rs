//! Topic patterns, matched the way moksha's ZeroMQ hub matches them.
//!
//! A consumer topic is not a glob: moksha removes every `*` and then matches the
//! rest as a prefix of the topic frame (`org.fedoraproject.prod.*` is the prefix
//! `org.fedoraproject.prod.`; `*` alone matches everything). With `zmq_strict`
//! (`[bus] strict_topics`) the rest must equal the topic exactly. A `*` anywhere but
//! at the end makes a prefix that matches nothing in moksha; fedhub keeps that
//! meaning and [`TopicPattern::has_inner_wildcard`] lets the config loader warn.

use serde::{Deserialize, Serialize};

/// One consumer topic, as configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicPattern {
    /// The pattern as written in config, shown in monitoring output.
    raw: String,
    /// The pattern with every `*` removed: a prefix, or the exact topic when strict.
    prefix: String,
    strict: bool,
}

impl TopicPattern {
    /// Builds a pattern; `strict` is moksha's `zmq_strict` (exact match).
    pub fn new(raw: &str, strict: bool) -> Self {
        TopicPattern {
            raw: raw.to_string(),
            prefix: raw.replace('*', ""),
            strict,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.raw
    }

    /// The ZeroMQ subscription prefix for this pattern.
    pub fn subscription(&self) -> &str {
        &self.prefix
    }

    /// True when a `*` appears before the end (moksha would match nothing useful).
    pub fn has_inner_wildcard(&self) -> bool {
        self.raw.trim_end_matches('*').contains('*')
    }

    /// Whether `topic` matches.
    #[inline]
    pub fn matches(&self, topic: &str) -> bool {
        if self.strict {
            topic == self.prefix
        } else {
            topic.starts_with(&self.prefix)
        }
    }
}

/// A consumer's topics: a single string or a list, as in moksha.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum TopicSpec {
    /// `topic = "org.fedoraproject.prod.*"`
    One(String),
    /// `topics = ["a.b", "c.*"]`
    Many(Vec<String>),
}

impl TopicSpec {
    /// The topics as a list.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            TopicSpec::One(t) => vec![t.clone()],
            TopicSpec::Many(ts) => ts.clone(),
        }
    }
}

/// The set of patterns one consumer listens to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSet {
    patterns: Vec<TopicPattern>,
}

impl TopicSet {
    /// Builds the set from configured topic strings.
    pub fn new<S: AsRef<str>>(topics: &[S], strict: bool) -> Self {
        TopicSet {
            patterns: topics
                .iter()
                .map(|t| TopicPattern::new(t.as_ref(), strict))
                .collect(),
        }
    }

    /// The patterns in configured order.
    pub fn patterns(&self) -> &[TopicPattern] {
        &self.patterns
    }

    /// Whether any pattern matches `topic`.
    #[inline]
    pub fn matches(&self, topic: &str) -> bool {
        self.patterns.iter().any(|p| p.matches(topic))
    }

    /// The topics in moksha's monitoring shape: a string for one, a list for several.
    pub fn to_monitoring_json(&self) -> serde_json::Value {
        match self.patterns.as_slice() {
            [one] => serde_json::Value::String(one.raw.clone()),
            many => many.iter().map(|p| p.raw.clone()).collect(),
        }
    }
}

/// The ZeroMQ subscriptions needed to receive everything some consumers want:
/// the distinct prefixes, or just `""` when any consumer wants everything.
pub fn subscriptions<'a>(sets: impl IntoIterator<Item = &'a TopicSet>) -> Vec<String> {
    let mut prefixes: Vec<String> = Vec::new();
    for set in sets {
        for pattern in set.patterns() {
            if pattern.subscription().is_empty() {
                return vec![String::new()];
            }
            prefixes.push(pattern.subscription().to_string());
        }
    }
    prefixes.sort();
    prefixes.dedup();
    // A prefix already covered by a shorter one adds nothing.
    let mut minimal: Vec<String> = Vec::new();
    for prefix in prefixes {
        if !minimal.iter().any(|m| prefix.starts_with(m.as_str())) {
            minimal.push(prefix);
        }
    }
    minimal
}

/// The category of a fedmsg topic (`org.fedoraproject.prod.<category>.…`), as
/// datanommer computes it: the fourth dot-separated part, or the third when the
/// topic contains `VirtualTopic`.
pub fn category(topic: &str) -> Option<&str> {
    let index = if topic.contains("VirtualTopic") { 2 } else { 3 };
    topic.split('.').nth(index).filter(|c| !c.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moksha_matching_rules() {
        let cases: &[(&str, bool, &str, bool)] = &[
            ("*", false, "org.fedoraproject.prod.bodhi.update", true),
            ("*", false, "", true),
            (
                "org.fedoraproject.prod.*",
                false,
                "org.fedoraproject.prod.git.receive",
                true,
            ),
            (
                "org.fedoraproject.prod.*",
                false,
                "org.fedoraproject.stg.git.receive",
                false,
            ),
            (
                "org.fedoraproject.prod.*",
                false,
                "org.fedoraproject.prod",
                false,
            ),
            (
                "org.fedoraproject.prod.git",
                false,
                "org.fedoraproject.prod.git.receive",
                true,
            ),
            (
                "org.fedoraproject.prod.git",
                true,
                "org.fedoraproject.prod.git.receive",
                false,
            ),
            (
                "org.fedoraproject.prod.git",
                true,
                "org.fedoraproject.prod.git",
                true,
            ),
            // Not a glob: the middle star is removed, leaving "a..c".
            ("a.*.c", false, "a.b.c", false),
            ("a.*.c", false, "a..c.d", true),
        ];
        for (pattern, strict, topic, expected) in cases {
            let p = TopicPattern::new(pattern, *strict);
            assert_eq!(
                p.matches(topic),
                *expected,
                "{pattern} strict={strict} vs {topic}"
            );
        }
        assert!(TopicPattern::new("a.*.c", false).has_inner_wildcard());
        assert!(!TopicPattern::new("a.b.*", false).has_inner_wildcard());
        assert!(!TopicPattern::new("*", false).has_inner_wildcard());
    }

    #[test]
    fn subscriptions_are_minimal() {
        let a = TopicSet::new(
            &["org.fedoraproject.prod.git.*", "org.fedoraproject.prod.*"],
            false,
        );
        let b = TopicSet::new(&["org.fedoraproject.stg.bodhi"], false);
        assert_eq!(
            subscriptions([&a, &b]),
            vec!["org.fedoraproject.prod.", "org.fedoraproject.stg.bodhi"]
        );
        let all = TopicSet::new(&["*"], false);
        assert_eq!(subscriptions([&a, &all]), vec![String::new()]);
    }

    #[test]
    fn monitoring_shape_is_string_or_list() {
        assert_eq!(
            TopicSet::new(&["*"], false).to_monitoring_json(),
            serde_json::json!("*")
        );
        assert_eq!(
            TopicSet::new(&["a.b", "c"], false).to_monitoring_json(),
            serde_json::json!(["a.b", "c"])
        );
    }

    #[test]
    fn categories() {
        assert_eq!(
            category("org.fedoraproject.prod.buildsys.build.state.change"),
            Some("buildsys")
        );
        assert_eq!(category("/topic/VirtualTopic.eng.ci.x"), Some("ci"));
        assert_eq!(category("short.topic"), None);
    }
}
