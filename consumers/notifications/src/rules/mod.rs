//! FMN's rule library (`valid_paths`): every rule a filter may name, by FMN's
//! code path (`fmn.rules:user_filter`) and arguments, compiled once into a
//! [`CompiledRule`] the matcher evaluates against [`MessageFacts`].
//!
//! The per-service rules (topic, category and field checks such as
//! `koji_build_started` or `bodhi_catchall`) are data: `services.json` holds
//! each rule's name, title and check. The generic rules (users, packages,
//! groups, regular expressions) and the few per-service rules that take
//! arguments (`koji_instance`, `taskotron_task`, ...) are written here.

mod facts;

pub use facts::MessageFacts;

use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use regex::Regex;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::ownership::{AclScope, Ownership};

/// The module root every code path starts with.
pub const ROOT: &str = "fmn.rules";

/// The tasks `taskotron_release_critical_task` matches.
pub const RELEASE_CRITICAL_TASKS: &[&str] = &["dist.abicheck", "dist.rpmdeplint"];

/// Longest pattern a regular-expression rule accepts (FMN's `_arguments`
/// column holds 256 characters in all).
const MAX_PATTERN: usize = 256;

/// Why a rule cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// The code path names no rule of the library.
    #[error("unknown rule {code_path:?}: expected one of the {count} code paths listed at /notifications/rules (e.g. \"fmn.rules:user_filter\")")]
    Unknown {
        /// What was given.
        code_path: String,
        /// How many rules the library has.
        count: usize,
    },
    /// The arguments are not what the rule takes.
    #[error("rule {code_path:?}: {problem}")]
    Arguments {
        /// The rule.
        code_path: String,
        /// What is wrong, naming the argument.
        problem: String,
    },
}

/// A check on the topic and payload, as `services.json` states it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceCheck {
    name: String,
    service: String,
    title: String,
    /// `topic.endswith(...)`.
    #[serde(default)]
    topic_suffix: Option<String>,
    /// The topic's fourth segment.
    #[serde(default)]
    category: Option<String>,
    /// The topic without prefix and environment, exactly.
    #[serde(default)]
    topic_title: Option<String>,
    /// Payload fields (dotted paths) and the values they must hold.
    #[serde(default, rename = "where")]
    fields: BTreeMap<String, Value>,
}

impl ServiceCheck {
    fn matches(&self, facts: &MessageFacts<'_>) -> bool {
        if let Some(suffix) = &self.topic_suffix {
            if !facts.topic().ends_with(suffix.as_str()) {
                return false;
            }
        }
        if let Some(category) = &self.category {
            if facts.category() != category {
                return false;
            }
        }
        if let Some(title) = &self.topic_title {
            if facts.title() != title {
                return false;
            }
        }
        self.fields.iter().all(|(path, expected)| {
            let mut value = facts.msg();
            for key in path.split('.') {
                match value.get(key) {
                    Some(v) => value = v,
                    None => return false,
                }
            }
            match (value, expected) {
                (Value::String(a), Value::String(b)) => a.eq_ignore_ascii_case(b),
                (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
                (v, Value::Bool(true)) => truthy(v),
                (a, b) => a == b,
            }
        })
    }
}

/// Python truthiness of a JSON value.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

/// The rules written in code, with their arguments.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Generic {
    UserFilter,
    NotUserFilter,
    PackageFilter,
    UserPackage(AclScope),
    FasGroupMember,
    PackageRegex,
    Regex,
    KojiInstance,
    TracHosted,
    PagureProject,
    TaskotronTask,
    TaskotronTaskOutcome,
    TaskotronChangedOutcome,
    TaskotronParticularOrChanged,
    TaskotronReleaseCritical,
    KoscheiGroup,
}

/// One rule of the library.
#[derive(Debug, Clone)]
pub struct RuleDef {
    /// The function name (`user_filter`).
    pub name: String,
    /// FMN's submodule (`generic`, `buildsys`, ...).
    pub service: String,
    /// The first line of FMN's docstring.
    pub title: String,
    /// The argument names it takes.
    pub args: Vec<&'static str>,
    kind: Kind,
}

#[derive(Debug, Clone)]
enum Kind {
    Service(Arc<ServiceCheck>),
    Generic(Generic),
}

impl RuleDef {
    /// `fmn.rules:<name>`.
    pub fn code_path(&self) -> String {
        format!("{ROOT}:{}", self.name)
    }
}

/// Every rule, by name.
pub struct RuleLibrary {
    rules: BTreeMap<String, RuleDef>,
}

const GENERIC: &[(&str, &str, &str, &[&str], Generic)] = &[
    (
        "user_filter",
        "generic",
        "Messages regarding a particular user",
        &["fasnick"],
        Generic::UserFilter,
    ),
    (
        "not_user_filter",
        "generic",
        "Messages not regarding particular users",
        &["fasnick"],
        Generic::NotUserFilter,
    ),
    (
        "package_filter",
        "generic",
        "A particular package",
        &["package"],
        Generic::PackageFilter,
    ),
    (
        "user_package_filter",
        "generic",
        "Messages regarding packages of a particular user",
        &["fasnick"],
        Generic::UserPackage(AclScope::Any),
    ),
    (
        "user_package_commit_filter",
        "generic",
        "Messages regarding packages a user has commit ACLs on",
        &["fasnick"],
        Generic::UserPackage(AclScope::Commit),
    ),
    (
        "user_package_watch_filter",
        "generic",
        "Messages regarding packages a user watches",
        &["fasnick"],
        Generic::UserPackage(AclScope::Watch),
    ),
    (
        "fas_group_member_filter",
        "generic",
        "Messages regarding any member of a particular FAS group",
        &["group"],
        Generic::FasGroupMember,
    ),
    (
        "package_regex_filter",
        "generic",
        "All packages matching a regular expression",
        &["pattern"],
        Generic::PackageRegex,
    ),
    (
        "regex_filter",
        "generic",
        "All messages matching a regular expression",
        &["pattern"],
        Generic::Regex,
    ),
    (
        "trac_hosted_filter",
        "generic",
        "Filter the messages for one or more fedorahosted projects",
        &["project"],
        Generic::TracHosted,
    ),
    (
        "koji_instance",
        "buildsys",
        "Particular koji instances",
        &["instance"],
        Generic::KojiInstance,
    ),
    (
        "pagure_specific_project_filter",
        "pagure",
        "Particular pagure projects",
        &["project"],
        Generic::PagureProject,
    ),
    (
        "taskotron_task",
        "taskotron",
        "Particular taskotron task",
        &["task"],
        Generic::TaskotronTask,
    ),
    (
        "taskotron_task_outcome",
        "taskotron",
        "Particular taskotron task outcome",
        &["outcome"],
        Generic::TaskotronTaskOutcome,
    ),
    (
        "taskotron_changed_outcome",
        "taskotron",
        "Taskotron task outcome changed",
        &[],
        Generic::TaskotronChangedOutcome,
    ),
    (
        "taskotron_task_particular_or_changed_outcome",
        "taskotron",
        "Taskotron task any particular or changed outcome(s)",
        &["outcome"],
        Generic::TaskotronParticularOrChanged,
    ),
    (
        "taskotron_release_critical_task",
        "taskotron",
        "Release-critical taskotron tasks",
        &[],
        Generic::TaskotronReleaseCritical,
    ),
    (
        "koschei_group",
        "koschei",
        "Particular Koschei package groups",
        &["group"],
        Generic::KoscheiGroup,
    ),
];

impl RuleLibrary {
    /// FMN's rules (parsed once per process).
    pub fn standard() -> Arc<RuleLibrary> {
        static LIBRARY: OnceLock<Arc<RuleLibrary>> = OnceLock::new();
        LIBRARY
            .get_or_init(|| {
                let checks: Vec<ServiceCheck> = serde_json::from_str(include_str!("services.json"))
                    .expect("services.json is a list of rule checks");
                let mut rules = BTreeMap::new();
                for check in checks {
                    rules.insert(
                        check.name.clone(),
                        RuleDef {
                            name: check.name.clone(),
                            service: check.service.clone(),
                            title: check.title.clone(),
                            args: Vec::new(),
                            kind: Kind::Service(Arc::new(check)),
                        },
                    );
                }
                for (name, service, title, args, generic) in GENERIC {
                    rules.insert(
                        name.to_string(),
                        RuleDef {
                            name: name.to_string(),
                            service: service.to_string(),
                            title: title.to_string(),
                            args: args.to_vec(),
                            kind: Kind::Generic(*generic),
                        },
                    );
                }
                Arc::new(RuleLibrary { rules })
            })
            .clone()
    }

    /// How many rules there are.
    pub fn len(&self) -> usize {
        self.rules.len()
    }

    /// Whether the library is empty (never, for the standard one).
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The rule a code path names.
    pub fn get(&self, code_path: &str) -> Option<&RuleDef> {
        let name = code_path.strip_prefix(ROOT)?.strip_prefix(':')?;
        self.rules.get(name)
    }

    /// The rules sorted by title, as FMN lists them: `[{code_path, name,
    /// service, title, args}]`.
    pub fn describe(&self) -> Value {
        let mut defs: Vec<&RuleDef> = self.rules.values().collect();
        defs.sort_by(|a, b| a.title.cmp(&b.title).then(a.name.cmp(&b.name)));
        Value::Array(
            defs.into_iter()
                .map(|d| {
                    json!({
                        "code_path": d.code_path(),
                        "name": d.name,
                        "service": d.service,
                        "title": d.title,
                        "args": d.args,
                    })
                })
                .collect(),
        )
    }

    /// Compiles `code_path` with `arguments` (a JSON object of the rule's
    /// keyword arguments; `null` for none). Errors name the rule and argument.
    pub fn compile(&self, code_path: &str, arguments: &Value) -> Result<CompiledRule, RuleError> {
        let def = self.get(code_path).ok_or_else(|| RuleError::Unknown {
            code_path: code_path.to_string(),
            count: self.rules.len(),
        })?;
        let bad = |problem: String| RuleError::Arguments {
            code_path: code_path.to_string(),
            problem,
        };
        let empty = Map::new();
        let args = match arguments {
            Value::Null => &empty,
            Value::Object(map) => map,
            other => {
                return Err(bad(format!(
                    "arguments {other}: expected a JSON object of the rule's arguments ({})",
                    describe_args(&def.args)
                )))
            }
        };
        for (key, value) in args {
            if !def.args.contains(&key.as_str()) {
                return Err(bad(format!(
                    "unknown argument {key:?}: expected {}",
                    describe_args(&def.args)
                )));
            }
            if !value.is_string() && !value.is_null() {
                return Err(bad(format!(
                    "argument {key:?} = {value}: expected a string"
                )));
            }
        }
        let text = |name: &str| -> String {
            args.get(name)
                .and_then(Value::as_str)
                .map(str::trim)
                .unwrap_or_default()
                .to_string()
        };
        let list = |name: &str| -> Vec<String> {
            text(name)
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect()
        };
        let required = |name: &str| -> Result<String, RuleError> {
            let value = text(name);
            if value.is_empty() {
                Err(bad(format!(
                    "argument {name:?} is missing or empty: expected a non-empty string"
                )))
            } else {
                Ok(value)
            }
        };
        let pattern = |name: &str| -> Result<Regex, RuleError> {
            let p = required(name)?;
            if p.len() > MAX_PATTERN {
                return Err(bad(format!(
                    "argument {name:?} is {} characters: expected at most {MAX_PATTERN}",
                    p.len()
                )));
            }
            regex::RegexBuilder::new(&p)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    bad(format!(
                        "argument {name:?} = {p:?} is not a valid regular expression: {e}"
                    ))
                })
        };
        let generic = match &def.kind {
            Kind::Service(check) => return Ok(CompiledRule::Service(check.clone())),
            Kind::Generic(g) => *g,
        };
        Ok(match generic {
            Generic::UserFilter => CompiledRule::User(required("fasnick")?),
            Generic::NotUserFilter => {
                required("fasnick")?;
                CompiledRule::NotUser(list("fasnick"))
            }
            Generic::PackageFilter => CompiledRule::Package(required("package")?),
            Generic::UserPackage(scope) => CompiledRule::UserPackage {
                fasnick: required("fasnick")?,
                scope,
            },
            Generic::FasGroupMember => CompiledRule::GroupMember(required("group")?),
            Generic::PackageRegex => CompiledRule::PackageRegex(pattern("pattern")?),
            Generic::Regex => CompiledRule::Regex(pattern("pattern")?),
            Generic::KojiInstance => {
                required("instance")?;
                CompiledRule::KojiInstance(list("instance"))
            }
            Generic::TracHosted => {
                required("project")?;
                CompiledRule::LinkProject {
                    projects: list("project"),
                    pagure: false,
                }
            }
            Generic::PagureProject => {
                required("project")?;
                CompiledRule::LinkProject {
                    projects: list("project"),
                    pagure: true,
                }
            }
            Generic::TaskotronTask => {
                required("task")?;
                CompiledRule::TaskotronTask(list("task").iter().map(|t| t.to_lowercase()).collect())
            }
            Generic::TaskotronTaskOutcome => {
                required("outcome")?;
                CompiledRule::TaskotronOutcome {
                    outcomes: list("outcome").iter().map(|t| t.to_lowercase()).collect(),
                    or_changed: false,
                }
            }
            Generic::TaskotronParticularOrChanged => CompiledRule::TaskotronOutcome {
                outcomes: list("outcome").iter().map(|t| t.to_lowercase()).collect(),
                or_changed: true,
            },
            Generic::TaskotronChangedOutcome => CompiledRule::TaskotronOutcome {
                outcomes: Vec::new(),
                or_changed: true,
            },
            Generic::TaskotronReleaseCritical => CompiledRule::TaskotronReleaseCritical,
            Generic::KoscheiGroup => {
                required("group")?;
                CompiledRule::KoscheiGroup(list("group"))
            }
        })
    }
}

fn describe_args(args: &[&str]) -> String {
    if args.is_empty() {
        "no arguments".into()
    } else {
        format!(
            "only {}",
            args.iter()
                .map(|a| format!("{a:?}"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }
}

/// A rule ready to evaluate.
#[derive(Debug, Clone)]
pub enum CompiledRule {
    /// A topic, category or payload check (`koji_build_started`, ...).
    Service(Arc<ServiceCheck>),
    /// `user_filter`: the nick is among the message's usernames.
    User(String),
    /// `not_user_filter`: none of the nicks is.
    NotUser(Vec<String>),
    /// `package_filter`: the package is among the message's packages.
    Package(String),
    /// `user_package_*_filter`: one of the message's packages belongs to the
    /// user or one of the user's groups, with an ACL in `scope`.
    UserPackage {
        /// The user.
        fasnick: String,
        /// Which ACLs count.
        scope: AclScope,
    },
    /// `fas_group_member_filter`: a username of the message is in the group.
    GroupMember(String),
    /// `package_regex_filter`.
    PackageRegex(Regex),
    /// `regex_filter`: searches the JSON of `msg`.
    Regex(Regex),
    /// `koji_instance`: `msg.instance` is one of these.
    KojiInstance(Vec<String>),
    /// `trac_hosted_filter` / `pagure_specific_project_filter`: the message's
    /// link names one of the projects.
    LinkProject {
        /// The projects.
        projects: Vec<String>,
        /// Pagure links (`/<project>/`) rather than fedorahosted
        /// (`fedorahosted.org/<project>/`).
        pagure: bool,
    },
    /// `taskotron_task`.
    TaskotronTask(Vec<String>),
    /// `taskotron_task_outcome`, `taskotron_changed_outcome` and
    /// `taskotron_task_particular_or_changed_outcome`.
    TaskotronOutcome {
        /// Outcomes that match (lowercase).
        outcomes: Vec<String>,
        /// Whether an outcome different from the previous one matches.
        or_changed: bool,
    },
    /// `taskotron_release_critical_task`.
    TaskotronReleaseCritical,
    /// `koschei_group`.
    KoscheiGroup(Vec<String>),
}

/// What the message offers to index a filter by: a filter is only evaluated
/// for messages carrying the key of one of its positive rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Anchor {
    /// A username of the message.
    User(String),
    /// A package of the message.
    Package(String),
    /// An owner (user) of one of the message's packages.
    PackageOwner(String),
    /// The topic's title (`buildsys.build.state.change`).
    Title(String),
    /// The topic's category.
    Category(String),
    /// The topic's last segment.
    LastSegment(String),
}

impl Anchor {
    /// Preference among anchors: the more selective, the lower.
    fn rank(&self) -> u8 {
        match self {
            Anchor::User(_) => 0,
            Anchor::Package(_) => 1,
            Anchor::PackageOwner(_) => 2,
            Anchor::Title(_) => 3,
            Anchor::Category(_) => 4,
            Anchor::LastSegment(_) => 5,
        }
    }

    /// The best anchor among some (the most selective), if any.
    pub fn best(anchors: impl IntoIterator<Item = Anchor>) -> Option<Anchor> {
        anchors.into_iter().min_by_key(Anchor::rank)
    }
}

impl CompiledRule {
    /// The key a message must carry for this rule to hold, when there is one.
    pub fn anchor(&self) -> Option<Anchor> {
        match self {
            CompiledRule::User(nick) => Some(Anchor::User(nick.clone())),
            CompiledRule::Package(p) => Some(Anchor::Package(p.clone())),
            CompiledRule::UserPackage { fasnick, .. } => {
                Some(Anchor::PackageOwner(fasnick.clone()))
            }
            CompiledRule::Service(check) => {
                if let Some(title) = &check.topic_title {
                    Some(Anchor::Title(title.clone()))
                } else if let Some(category) = &check.category {
                    Some(Anchor::Category(category.clone()))
                } else {
                    let suffix = check.topic_suffix.as_deref()?;
                    // A suffix with a dot fixes the topic's last segment.
                    let (_, last) = suffix.rsplit_once('.')?;
                    Some(Anchor::LastSegment(last.to_string()))
                }
            }
            _ => None,
        }
    }

    /// Evaluates the rule (without negation). An `Err` says why it could not
    /// be (a lookup failed): the filter does not match.
    pub fn evaluate(
        &self,
        facts: &MessageFacts<'_>,
        ownership: &Ownership,
    ) -> Result<bool, String> {
        Ok(match self {
            CompiledRule::Service(check) => check.matches(facts),
            CompiledRule::User(nick) => facts.usernames().contains(nick),
            CompiledRule::NotUser(nicks) => {
                !nicks.is_empty() && !nicks.iter().any(|n| facts.usernames().contains(n))
            }
            CompiledRule::Package(p) => facts.packages().contains(p),
            CompiledRule::UserPackage { fasnick, scope } => {
                let packages = facts.packages();
                if packages.is_empty() {
                    return Ok(false);
                }
                let owned = ownership.user_packages(fasnick)?;
                packages
                    .iter()
                    .any(|p| owned.get(p).is_some_and(|acls| scope.admits(*acls)))
            }
            CompiledRule::GroupMember(group) => {
                let usernames = facts.usernames();
                if usernames.is_empty() {
                    return Ok(false);
                }
                let members = ownership.members_of(group)?;
                usernames.iter().any(|u| members.contains(u))
            }
            CompiledRule::PackageRegex(re) => facts.packages().iter().any(|p| re.is_match(p)),
            CompiledRule::Regex(re) => re.is_match(facts.msg_json()),
            CompiledRule::KojiInstance(instances) => facts
                .msg()
                .get("instance")
                .and_then(Value::as_str)
                .is_some_and(|i| instances.iter().any(|x| x == i)),
            CompiledRule::LinkProject { projects, pagure } => {
                if *pagure && facts.category() != "pagure" {
                    return Ok(false);
                }
                let link = facts.link();
                !link.is_empty()
                    && projects.iter().any(|p| {
                        if *pagure {
                            link.contains(&format!("/{p}/")) || link.ends_with(&format!("/{p}"))
                        } else {
                            link.contains(&format!("fedorahosted.org/{p}/"))
                        }
                    })
            }
            CompiledRule::TaskotronTask(tasks) => {
                is_taskotron_result(facts)
                    && facts
                        .msg()
                        .pointer("/task/name")
                        .and_then(Value::as_str)
                        .is_some_and(|name| {
                            let name = name.to_lowercase();
                            tasks.iter().any(|t| glob_match(t, &name))
                        })
            }
            CompiledRule::TaskotronOutcome {
                outcomes,
                or_changed,
            } => {
                if !is_taskotron_result(facts) {
                    return Ok(false);
                }
                let outcome = facts
                    .msg()
                    .pointer("/result/outcome")
                    .and_then(Value::as_str);
                let previous = facts
                    .msg()
                    .pointer("/result/prev_outcome")
                    .and_then(Value::as_str);
                let particular =
                    outcome.is_some_and(|o| outcomes.iter().any(|x| x.eq_ignore_ascii_case(o)));
                let changed =
                    matches!((outcome, previous), (Some(o), Some(p)) if !p.is_empty() && o != p);
                particular || (*or_changed && changed)
            }
            CompiledRule::TaskotronReleaseCritical => {
                is_taskotron_result(facts)
                    && facts
                        .msg()
                        .pointer("/task/name")
                        .and_then(Value::as_str)
                        .is_some_and(|t| RELEASE_CRITICAL_TASKS.contains(&t))
            }
            CompiledRule::KoscheiGroup(groups) => {
                facts.topic().contains("koschei")
                    && facts
                        .msg()
                        .get("groups")
                        .and_then(Value::as_array)
                        .is_some_and(|g| {
                            g.iter()
                                .filter_map(Value::as_str)
                                .any(|g| groups.iter().any(|x| x == g))
                        })
            }
        })
    }
}

fn is_taskotron_result(facts: &MessageFacts<'_>) -> bool {
    facts.topic().ends_with(".taskotron.result.new")
}

/// Shell-style matching with `*` and `?` (fnmatch, as taskotron_task allows).
fn glob_match(pattern: &str, text: &str) -> bool {
    fn go(p: &[u8], t: &[u8]) -> bool {
        match (p.first(), t.first()) {
            (None, None) => true,
            (Some(b'*'), _) => go(&p[1..], t) || (!t.is_empty() && go(p, &t[1..])),
            (Some(b'?'), Some(_)) => go(&p[1..], &t[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &t[1..]),
            _ => false,
        }
    }
    go(pattern.as_bytes(), text.as_bytes())
}

#[cfg(test)]
mod tests;
