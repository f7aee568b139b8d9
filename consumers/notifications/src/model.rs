//! FMN's data model (fmn.lib 0.8.2): users, contexts, preferences per user
//! and context, filters made of ordered rules, and the defaults new users get.

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// A delivery context (`contexts` table).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ContextInfo {
    /// `email`, `irc`, `webhook`, `bus`, ...
    pub name: &'static str,
    /// One line.
    pub description: &'static str,
    /// What a detail value is (`email address`), or the string `None` when the
    /// context needs none.
    pub detail_name: &'static str,
    /// FMN's icon name.
    pub icon: &'static str,
    /// A sample detail value.
    pub placeholder: &'static str,
}

/// The contexts fedhub knows: FMN's, plus `webhook` (an HTTP POST per
/// notification) and `bus` (the `fmn.notification` message only).
pub const CONTEXTS: &[ContextInfo] = &[
    ContextInfo {
        name: "email",
        description: "Electronic Mail",
        detail_name: "email address",
        icon: "envelope",
        placeholder: "username@fedoraproject.org",
    },
    ContextInfo {
        name: "irc",
        description: "Internet Relay Chat",
        detail_name: "irc nick",
        icon: "user",
        placeholder: "username",
    },
    ContextInfo {
        name: "android",
        description: "Google Cloud Messaging",
        detail_name: "registration id",
        icon: "phone",
        placeholder: "not really something you type...",
    },
    ContextInfo {
        name: "desktop",
        description: "fedmsg-notify",
        detail_name: "None",
        icon: "console",
        placeholder: "",
    },
    ContextInfo {
        name: "sse",
        description: "Server Sent Events",
        detail_name: "None",
        icon: "console",
        placeholder: "",
    },
    ContextInfo {
        name: "webhook",
        description: "HTTP POST of each notification",
        detail_name: "webhook url",
        icon: "globe",
        placeholder: "https://example.org/hook",
    },
    ContextInfo {
        name: "bus",
        description: "fmn.notification messages on the bus",
        detail_name: "None",
        icon: "console",
        placeholder: "",
    },
];

/// The context named `name`.
pub fn context(name: &str) -> Option<&'static ContextInfo> {
    CONTEXTS.iter().find(|c| c.name == name)
}

/// A rule of a filter (`rules` row).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RuleRow {
    /// Row id.
    pub id: i64,
    /// `fmn.rules:<name>`.
    pub code_path: String,
    /// Keyword arguments (a JSON object, or null).
    pub arguments: Value,
    /// Whether the rule's result is inverted.
    pub negated: bool,
}

/// A filter of a preference (`filters` row), its rules in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FilterRow {
    /// Row id.
    pub id: i64,
    /// Name.
    pub name: String,
    /// Inactive filters are not loaded for matching.
    pub active: bool,
    /// Deactivated after it first fires.
    pub oneshot: bool,
    /// Rules, in `created_on` order.
    pub rules: Vec<RuleRow>,
}

/// A user's preference for one context (`preferences` row and its detail
/// values and filters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Preference {
    /// Row id.
    pub id: i64,
    /// The user.
    pub openid: String,
    /// The context's name.
    pub context: String,
    /// Whether notifications go out.
    pub enabled: bool,
    /// Digest: send once the oldest queued message is this old (seconds).
    pub batch_delta: Option<i64>,
    /// Digest: send once this many messages are queued.
    pub batch_count: Option<i64>,
    /// `markup_messages`.
    pub markup_messages: bool,
    /// `triggered_by_links`.
    pub triggered_by_links: bool,
    /// `shorten_links`.
    pub shorten_links: bool,
    /// `verbose`.
    pub verbose: bool,
    /// Where to send (addresses, nicks, URLs).
    pub detail_values: Vec<String>,
    /// Filters, in creation order.
    pub filters: Vec<FilterRow>,
}

impl Preference {
    /// FMN's `can_send`: enabled, and a detail value unless the context needs none.
    pub fn can_send(&self) -> bool {
        self.enabled
            && (!self.detail_values.is_empty()
                || context(&self.context).is_some_and(|c| c.detail_name == "None"))
    }

    /// FMN's `should_batch`.
    pub fn should_batch(&self) -> bool {
        self.batch_delta.is_some() || self.batch_count.is_some()
    }
}

/// A rule to add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewRule {
    /// `fmn.rules:<name>`.
    pub code_path: String,
    /// Keyword arguments.
    #[serde(default)]
    pub arguments: Value,
    /// Inverted.
    #[serde(default)]
    pub negated: bool,
}

impl NewRule {
    fn new(name: &str, arguments: Value, negated: bool) -> NewRule {
        NewRule {
            code_path: format!("{}:{name}", crate::rules::ROOT),
            arguments,
            negated,
        }
    }
}

/// A filter to add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewFilter {
    /// Name.
    pub name: String,
    /// Deactivate after firing once.
    #[serde(default)]
    pub oneshot: bool,
    /// Rules, in order.
    #[serde(default)]
    pub rules: Vec<NewRule>,
}

/// Changes to a preference; absent fields stay as they are.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreferenceUpdate {
    /// `enabled`.
    pub enabled: Option<bool>,
    /// `batch_delta` (`null` clears it; absent keeps it).
    #[serde(default, with = "double_option")]
    pub batch_delta: Option<Option<i64>>,
    /// `batch_count` (`null` clears it).
    #[serde(default, with = "double_option")]
    pub batch_count: Option<Option<i64>>,
    /// `markup_messages`.
    pub markup_messages: Option<bool>,
    /// `triggered_by_links`.
    pub triggered_by_links: Option<bool>,
    /// `shorten_links`.
    pub shorten_links: Option<bool>,
    /// `verbose`.
    pub verbose: Option<bool>,
    /// The detail values, replacing the old ones.
    pub detail_values: Option<Vec<String>>,
}

/// `Option<Option<T>>` where a JSON `null` means `Some(None)`.
mod double_option {
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer, T: Serialize>(
        value: &Option<Option<T>>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        value.serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
        d: D,
    ) -> Result<Option<Option<T>>, D::Error> {
        Option::<T>::deserialize(d).map(Some)
    }
}

/// Rules excluded from "Events on packages that I own" (FMN's
/// `exclusion_packages`).
pub const EXCLUSION_PACKAGES: &[&str] = &[
    "taskotron_result_new",
    "git_pkgdb2branch_start",
    "git_pkgdb2branch_complete",
    "fedoratagger_catchall",
    "faf_report_threshold1",
    "faf_problem_threshold1",
    "bodhi_masher_start",
    "mdapi_repo_update",
    "ci_step_complete",
];

/// Rules excluded from "Events referring to my username" (`exclusion_username`).
pub const EXCLUSION_USERNAME: &[&str] = &[
    "askbot_catchall",
    "bodhi_catchall",
    "bugzilla_catchall",
    "trac_catchall",
    "git_catchall",
    "github_catchall",
    "fmn_catchall",
    "meetbot_catchall",
    "fedocal_catchall",
    "pkgdb_catchall",
    "fedoratagger_catchall",
    "wiki_catchall",
    "fedbadges_person_first_login",
    "fedbadges_person_rank_advance",
    "mailman_receive",
];

/// Rules excluded from both (`exclusion_mutual`).
pub const EXCLUSION_MUTUAL: &[&str] = &[
    "copr_build_start",
    "copr_chroot_start",
    "copr_worker_create",
    "koji_scratch_build_started",
    "koji_build_started",
    "koji_rpm_sign",
    "koji_tag",
    "koji_untag",
    "koji_repo_done",
    "koji_repo_init",
    "koji_package_list_change",
    "summershum_catchall",
    "anitya_catchall",
];

/// The contexts new users get defaults for.
pub const DEFAULT_CONTEXTS: &[&str] = &["email", "irc"];

/// The nick in an openid (`ralph.id.fedoraproject.org` -> `ralph`), when the
/// openid is a Fedora one (FMN sets no defaults otherwise).
pub fn fedora_nick(openid: &str) -> Option<&str> {
    if !openid.ends_with(".fedoraproject.org") {
        return None;
    }
    openid.split('.').next().filter(|n| !n.is_empty())
}

/// FMN's default filters for a new user with this nick (`fmn.lib.defaults`).
pub fn default_filters(nick: &str) -> Vec<NewFilter> {
    let negate_all = |names: &[&[&str]]| -> Vec<NewRule> {
        names
            .iter()
            .flat_map(|list| list.iter())
            .map(|name| NewRule::new(name, Value::Null, true))
            .collect()
    };
    let koji_secondary = NewRule::new("koji_instance", json!({"instance": "ppc,s390,arm"}), true);
    let mut owned = vec![
        NewRule::new("user_package_filter", json!({"fasnick": nick}), false),
        NewRule::new("user_filter", json!({"fasnick": nick}), true),
        koji_secondary.clone(),
    ];
    owned.extend(negate_all(&[EXCLUSION_PACKAGES, EXCLUSION_MUTUAL]));
    let mut mine = vec![
        NewRule::new("user_filter", json!({"fasnick": nick}), false),
        koji_secondary,
    ];
    mine.extend(negate_all(&[EXCLUSION_USERNAME, EXCLUSION_MUTUAL]));
    vec![
        NewFilter {
            name: "Events on packages that I own".into(),
            oneshot: false,
            rules: owned,
        },
        NewFilter {
            name: "Events referring to my username".into(),
            oneshot: false,
            rules: mine,
        },
        NewFilter {
            name: "Critical taskotron tasks on my packages".into(),
            oneshot: false,
            rules: vec![
                NewRule::new("user_package_filter", json!({"fasnick": nick}), false),
                NewRule::new("taskotron_release_critical_task", Value::Null, false),
                NewRule::new(
                    "taskotron_task_particular_or_changed_outcome",
                    json!({"outcome": "FAILED"}),
                    false,
                ),
            ],
        },
    ]
}
