//! Badge rules in fedbadges' 1.x YAML format: loading a directory, validating
//! every node, and the pieces a rule is evaluated with (trigger, templates,
//! criteria, condition).
//!
//! A rule that does not validate is rejected with a [`LoadError`] naming the
//! file, the rule and the field; the other rules still load. Upstream's
//! `category: {any: [...]}` form, which never matched there, works here: a
//! `topic` or `category` leaf takes a string or an `any`/`all`/`not` of them.
//! Python `lambda` nodes are rejected with the equivalent `expression` form
//! (see [`crate::expr`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::{Map, Value};

use crate::expr::{suggest_from_python, Expr, Sandbox};

/// Top-level keys a rule must have.
pub const REQUIRED_KEYS: [&str; 8] = [
    "name",
    "image_url",
    "description",
    "creator",
    "discussion",
    "issuer_id",
    "trigger",
    "criteria",
];

/// Top-level keys a rule may have besides the required ones.
pub const OPTIONAL_KEYS: [&str; 5] = [
    "tags",
    "recipient",
    "recipient_nick2fas",
    "recipient_email2fas",
    "recipient_openid2fas",
];

/// The keys of a criteria `filter` (datanommer `grep`'s arguments that fedhub's
/// history store answers).
pub const FILTER_KEYS: [&str; 14] = [
    "start",
    "end",
    "page",
    "rows_per_page",
    "order",
    "users",
    "not_users",
    "packages",
    "not_packages",
    "categories",
    "not_categories",
    "topics",
    "not_topics",
    "contains",
];

/// The condition phrases and the comparison each one makes.
pub const CONDITION_PHRASES: [(&str, Comparison); 10] = [
    ("is greater than or equal to", Comparison::Ge),
    ("greater than or equal to", Comparison::Ge),
    ("greater than", Comparison::Gt),
    ("is less than or equal to", Comparison::Le),
    ("less than or equal to", Comparison::Le),
    ("less than", Comparison::Lt),
    ("equal to", Comparison::Eq),
    ("is equal to", Comparison::Eq),
    ("is not", Comparison::Ne),
    ("is not equal to", Comparison::Ne),
];

/// A rule that could not be loaded: the file, the rule (its name when it has
/// one) and the field, with what was wrong.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct LoadError {
    /// The YAML file.
    pub file: PathBuf,
    /// The rule's name, if it could be read.
    pub rule: Option<String>,
    /// The field, as a path (`criteria.datanommer.condition`), or `""` for the
    /// whole file.
    pub field: String,
    /// What was wrong and what was expected.
    pub problem: String,
}

impl std::fmt::Display for LoadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(rule) = &self.rule {
            write!(f, ": rule {rule:?}")?;
        }
        if !self.field.is_empty() {
            write!(f, ": {}", self.field)?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for LoadError {}

/// The directory could not be read at all.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the rules directory {path}: {source}")]
pub struct DirError {
    /// The directory.
    pub path: PathBuf,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// A comparison of a condition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Comparison {
    /// `>=`
    Ge,
    /// `>`
    Gt,
    /// `<=`
    Le,
    /// `<`
    Lt,
    /// `==`
    Eq,
    /// `!=`
    Ne,
}

/// What a `topic` or `category` leaf compares against.
#[derive(Debug, Clone)]
pub enum Pattern {
    /// One value.
    Is(String),
    /// Any of these.
    Any(Vec<Pattern>),
    /// All of these.
    All(Vec<Pattern>),
    /// None of these.
    Not(Vec<Pattern>),
}

impl Pattern {
    fn matches(&self, f: &impl Fn(&str) -> bool) -> bool {
        match self {
            Pattern::Is(v) => f(v),
            Pattern::Any(ps) => ps.iter().any(|p| p.matches(f)),
            Pattern::All(ps) => ps.iter().all(|p| p.matches(f)),
            Pattern::Not(ps) => !ps.iter().any(|p| p.matches(f)),
        }
    }
}

/// A trigger node.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// The topic ends with the value.
    Topic(Pattern),
    /// The topic's category (its fourth part) is the value.
    Category(Pattern),
    /// An expression over `msg` that returns a boolean.
    Expression(Expr),
    /// Every child matches.
    All(Vec<Trigger>),
    /// Some child matches.
    Any(Vec<Trigger>),
    /// No child matches.
    Not(Vec<Trigger>),
}

/// A value with `%(msg.x.y)s` templates and `expression` nodes in it.
#[derive(Debug, Clone)]
pub enum Template {
    /// Used as it is.
    Literal(Value),
    /// A string holding at least one `%(key)s`.
    Text(String),
    /// An expression over `msg`.
    Expression(Expr),
    /// A list of templates.
    List(Vec<Template>),
    /// An object of templates.
    Object(Vec<(String, Template)>),
}

/// What a criteria leaf computes from the matching messages.
#[derive(Debug, Clone)]
pub enum Operation {
    /// How many messages match (grep's `total`).
    Count,
    /// An expression over `query` (`query.total`, `query.messages`).
    Expression(Expr),
}

/// How the computed value is judged.
#[derive(Debug, Clone)]
pub enum Condition {
    /// A comparison with a number.
    Compare(Comparison, f64),
    /// An expression over `value` that returns a boolean.
    Expression(Expr),
}

/// A criteria node.
#[derive(Debug, Clone)]
pub enum Criteria {
    /// A history query and the condition its result must meet.
    Datanommer {
        /// The filter, templated from the message.
        filter: Vec<(String, Template)>,
        /// What to compute.
        operation: Operation,
        /// The condition.
        condition: Condition,
    },
    /// Every child holds.
    All(Vec<Criteria>),
    /// Some child holds.
    Any(Vec<Criteria>),
    /// No child holds.
    Not(Vec<Criteria>),
}

/// One loaded badge rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The badge's name.
    pub name: String,
    /// Tahrir's id for it: [`badge_id`] of the name.
    pub badge_id: String,
    /// Description.
    pub description: String,
    /// Who wrote the rule.
    pub creator: String,
    /// The discussion URL (Tahrir's `criteria`).
    pub discussion: String,
    /// The badge image.
    pub image_url: String,
    /// The rule's `issuer_id` (kept; the configured issuer is used, as upstream).
    pub issuer_id: String,
    /// Tags.
    pub tags: Vec<String>,
    /// The file it came from.
    pub file: PathBuf,
    /// The trigger.
    pub trigger: Trigger,
    /// The criteria.
    pub criteria: Criteria,
    /// Who gets the badge (`None`: the message's users).
    pub recipient: Option<Template>,
    /// Map IRC nicks to FAS names.
    pub nick2fas: bool,
    /// Map e-mail addresses to FAS names.
    pub email2fas: bool,
    /// Map OpenID URLs to FAS names.
    pub openid2fas: bool,
}

/// What loading a directory gave: the rules that validated, in path order,
/// and an error for each one that did not.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    /// The valid rules.
    pub rules: Vec<Rule>,
    /// One error per rejected rule (or unreadable file).
    pub errors: Vec<LoadError>,
}

/// Tahrir's `convert_name_to_id`: lowercase, spaces to `-`, and `" ' ( ) * & ?`
/// removed.
pub fn badge_id(name: &str) -> String {
    name.to_lowercase()
        .replace(' ', "-")
        .chars()
        .filter(|c| !matches!(c, '"' | '\'' | '(' | ')' | '*' | '&' | '?'))
        .collect()
}

/// Loads every `.yaml`/`.yml` file under `dir` (walked recursively, in path
/// order; hidden files and directories skipped).
pub fn load_dir(dir: &Path, sandbox: &Sandbox) -> Result<RuleSet, DirError> {
    let mut files = Vec::new();
    walk(dir, &mut files).map_err(|source| DirError {
        path: dir.to_path_buf(),
        source,
    })?;
    files.sort();
    let mut set = RuleSet::default();
    let mut ids: HashMap<String, PathBuf> = HashMap::new();
    for file in files {
        let text = match std::fs::read_to_string(&file) {
            Ok(text) => text,
            Err(e) => {
                set.errors.push(LoadError {
                    file,
                    rule: None,
                    field: String::new(),
                    problem: format!("cannot read: {e}"),
                });
                continue;
            }
        };
        match parse_rule(&file, &text, sandbox) {
            Ok(rule) => {
                if let Some(first) = ids.get(&rule.badge_id) {
                    set.errors.push(LoadError {
                        file: file.clone(),
                        rule: Some(rule.name.clone()),
                        field: "name".into(),
                        problem: format!(
                            "badge id {:?} is already defined by {}",
                            rule.badge_id,
                            first.display()
                        ),
                    });
                    continue;
                }
                ids.insert(rule.badge_id.clone(), file.clone());
                set.rules.push(rule);
            }
            Err(e) => set.errors.push(e),
        }
    }
    Ok(set)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if entry.file_name().to_string_lossy().starts_with('.') {
            continue;
        }
        if entry.file_type()?.is_dir() {
            walk(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Context for errors while one rule is parsed.
struct Ctx<'a> {
    file: &'a Path,
    rule: Option<String>,
    sandbox: &'a Sandbox,
}

impl Ctx<'_> {
    fn err(&self, field: &str, problem: impl Into<String>) -> LoadError {
        LoadError {
            file: self.file.to_path_buf(),
            rule: self.rule.clone(),
            field: field.to_string(),
            problem: problem.into(),
        }
    }

    fn expression(&self, field: &str, value: &Value, binds: &str) -> Result<Expr, LoadError> {
        let text = value.as_str().ok_or_else(|| {
            self.err(
                field,
                format!("expected the text of an expression over `{binds}`, got {value}"),
            )
        })?;
        self.sandbox
            .compile(text)
            .map_err(|e| self.err(field, e.to_string()))
    }

    fn lambda(&self, field: &str, value: &Value, binds: &str) -> LoadError {
        let python = value.as_str().unwrap_or_default();
        self.err(
            field,
            format!(
                "Python lambdas cannot run in fedhub; write it as an expression over `{binds}`, e.g. `expression: {:?}`",
                suggest_from_python(python)
            ),
        )
    }
}

/// Parses one rule file.
pub fn parse_rule(file: &Path, text: &str, sandbox: &Sandbox) -> Result<Rule, LoadError> {
    let mut ctx = Ctx {
        file,
        rule: None,
        sandbox,
    };
    let doc: Value =
        serde_norway::from_str(text).map_err(|e| ctx.err("", format!("not valid YAML: {e}")))?;
    let Value::Object(map) = doc else {
        return Err(ctx.err(
            "",
            format!("expected a mapping of rule fields, got {}", kind(&doc)),
        ));
    };
    ctx.rule = map.get("name").and_then(Value::as_str).map(str::to_string);
    for key in map.keys() {
        if !REQUIRED_KEYS.contains(&key.as_str()) && !OPTIONAL_KEYS.contains(&key.as_str()) {
            let mut known: Vec<&str> = REQUIRED_KEYS
                .iter()
                .chain(&OPTIONAL_KEYS)
                .copied()
                .collect();
            known.sort_unstable();
            return Err(ctx.err(
                key,
                format!("unknown field (expected one of: {})", known.join(", ")),
            ));
        }
    }
    for key in REQUIRED_KEYS {
        if !map.contains_key(key) {
            return Err(ctx.err(key, "missing (required)"));
        }
    }
    let text_field = |key: &str| -> Result<String, LoadError> {
        match &map[key] {
            Value::String(s) if !s.trim().is_empty() => Ok(s.clone()),
            other => Err(ctx.err(
                key,
                format!("expected a non-empty string, got {}", kind(other)),
            )),
        }
    };
    let name = text_field("name")?;
    let tags = match map.get("tags") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|t| match t {
                Value::String(s) => Ok(s.clone()),
                other => Err(ctx.err("tags", format!("expected strings, got {}", kind(other)))),
            })
            .collect::<Result<_, _>>()?,
        Some(other) => {
            return Err(ctx.err(
                "tags",
                format!("expected a list of strings, got {}", kind(other)),
            ))
        }
    };
    let flag = |key: &str| -> Result<bool, LoadError> {
        match map.get(key) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(other) => {
                Err(ctx.err(key, format!("expected true or false, got {}", kind(other))))
            }
        }
    };
    let recipient = match map.get("recipient") {
        None | Some(Value::Null) => None,
        Some(value) => Some(parse_template(&ctx, "recipient", value)?),
    };
    Ok(Rule {
        badge_id: badge_id(&name),
        description: text_field("description")?,
        creator: text_field("creator")?,
        discussion: text_field("discussion")?,
        image_url: text_field("image_url")?,
        issuer_id: match &map["issuer_id"] {
            Value::String(s) => s.clone(),
            Value::Number(n) => n.to_string(),
            other => {
                return Err(ctx.err(
                    "issuer_id",
                    format!("expected a string, got {}", kind(other)),
                ))
            }
        },
        tags,
        file: file.to_path_buf(),
        trigger: parse_trigger(&ctx, "trigger", &map["trigger"])?,
        criteria: parse_criteria(&ctx, "criteria", &map["criteria"])?,
        recipient,
        nick2fas: flag("recipient_nick2fas")?,
        email2fas: flag("recipient_email2fas")?,
        openid2fas: flag("recipient_openid2fas")?,
        name,
    })
}

/// What kind of YAML value this is, for messages.
fn kind(value: &Value) -> String {
    match value {
        Value::Null => "nothing (null)".into(),
        Value::Bool(b) => format!("a boolean ({b})"),
        Value::Number(n) => format!("a number ({n})"),
        Value::String(s) => format!("a string ({s:?})"),
        Value::Array(_) => "a list".into(),
        Value::Object(m) => format!(
            "a mapping with keys {}",
            m.keys().cloned().collect::<Vec<_>>().join(", ")
        ),
    }
}

/// A node must be a mapping with exactly one key.
fn single<'v>(
    ctx: &Ctx<'_>,
    field: &str,
    value: &'v Value,
) -> Result<(&'v str, &'v Value), LoadError> {
    match value {
        Value::Object(m) if m.len() == 1 => {
            let (k, v) = m.iter().next().expect("one entry");
            Ok((k.as_str(), v))
        }
        other => Err(ctx.err(
            field,
            format!(
                "expected a mapping with exactly one key, got {}",
                kind(other)
            ),
        )),
    }
}

/// The children of `all`/`any` (a list) or `not` (a node or a list).
fn children<'v>(
    ctx: &Ctx<'_>,
    field: &str,
    op: &str,
    value: &'v Value,
) -> Result<Vec<&'v Value>, LoadError> {
    match value {
        Value::Array(items) if !items.is_empty() => Ok(items.iter().collect()),
        Value::Object(_) if op == "not" => Ok(vec![value]),
        other => Err(ctx.err(
            field,
            format!("expected a non-empty list of nodes, got {}", kind(other)),
        )),
    }
}

fn parse_trigger(ctx: &Ctx<'_>, field: &str, value: &Value) -> Result<Trigger, LoadError> {
    let (key, inner) = single(ctx, field, value)?;
    let path = format!("{field}.{key}");
    Ok(match key {
        "topic" => Trigger::Topic(parse_pattern(ctx, &path, inner)?),
        "category" => Trigger::Category(parse_pattern(ctx, &path, inner)?),
        "expression" => Trigger::Expression(ctx.expression(&path, inner, "msg")?),
        "lambda" => return Err(ctx.lambda(&path, inner, "msg")),
        "all" | "any" | "not" => {
            let nodes = children(ctx, &path, key, inner)?
                .into_iter()
                .enumerate()
                .map(|(i, n)| parse_trigger(ctx, &format!("{path}[{i}]"), n))
                .collect::<Result<Vec<_>, _>>()?;
            match key {
                "all" => Trigger::All(nodes),
                "any" => Trigger::Any(nodes),
                _ => Trigger::Not(nodes),
            }
        }
        other => {
            return Err(ctx.err(
                &format!("{field}.{other}"),
                "unknown trigger (expected topic, category, expression, all, any or not)",
            ))
        }
    })
}

fn parse_pattern(ctx: &Ctx<'_>, field: &str, value: &Value) -> Result<Pattern, LoadError> {
    match value {
        Value::String(s) if !s.is_empty() => Ok(Pattern::Is(s.clone())),
        Value::Object(_) => {
            let (key, inner) = single(ctx, field, value)?;
            let path = format!("{field}.{key}");
            if !matches!(key, "any" | "all" | "not") {
                return Err(ctx.err(&path, "unknown operator (expected any, all or not)"));
            }
            let items: Vec<&Value> = match (key, inner) {
                (_, Value::Array(items)) if !items.is_empty() => items.iter().collect(),
                ("not", Value::String(_) | Value::Object(_)) => vec![inner],
                ("all" | "any" | "not", other) => {
                    return Err(ctx.err(
                        &path,
                        format!("expected a non-empty list of values, got {}", kind(other)),
                    ))
                }
                (other, _) => {
                    return Err(ctx.err(
                        &format!("{field}.{other}"),
                        "unknown operator (expected any, all or not)",
                    ))
                }
            };
            let patterns = items
                .into_iter()
                .enumerate()
                .map(|(i, v)| parse_pattern(ctx, &format!("{path}[{i}]"), v))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(match key {
                "any" => Pattern::Any(patterns),
                "all" => Pattern::All(patterns),
                _ => Pattern::Not(patterns),
            })
        }
        other => Err(ctx.err(
            field,
            format!(
                "expected a string, or any/all/not of strings, got {}",
                kind(other)
            ),
        )),
    }
}

fn parse_criteria(ctx: &Ctx<'_>, field: &str, value: &Value) -> Result<Criteria, LoadError> {
    let (key, inner) = single(ctx, field, value)?;
    let path = format!("{field}.{key}");
    match key {
        "datanommer" => parse_datanommer(ctx, &path, inner),
        "all" | "any" | "not" => {
            let nodes = children(ctx, &path, key, inner)?
                .into_iter()
                .enumerate()
                .map(|(i, n)| parse_criteria(ctx, &format!("{path}[{i}]"), n))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(match key {
                "all" => Criteria::All(nodes),
                "any" => Criteria::Any(nodes),
                _ => Criteria::Not(nodes),
            })
        }
        "pkgdb" => Err(ctx.err(
            &path,
            "the pkgdb criteria were removed in fedbadges 1.0 (pkgdb is gone); use datanommer",
        )),
        "lambda" => Err(ctx.lambda(&path, inner, "msg")),
        other => Err(ctx.err(
            &format!("{field}.{other}"),
            "unknown criteria (expected datanommer, all, any or not)",
        )),
    }
}

fn parse_datanommer(ctx: &Ctx<'_>, field: &str, value: &Value) -> Result<Criteria, LoadError> {
    let Value::Object(map) = value else {
        return Err(ctx.err(
            field,
            format!(
                "expected a mapping with filter, operation and condition, got {}",
                kind(value)
            ),
        ));
    };
    for key in map.keys() {
        if !["filter", "operation", "condition"].contains(&key.as_str()) {
            return Err(ctx.err(
                &format!("{field}.{key}"),
                "unknown field (expected filter, operation and condition)",
            ));
        }
    }
    for key in ["filter", "operation", "condition"] {
        if !map.contains_key(key) {
            return Err(ctx.err(&format!("{field}.{key}"), "missing (required)"));
        }
    }
    let filter_path = format!("{field}.filter");
    let filter = match &map["filter"] {
        Value::Object(f) => {
            let mut out = Vec::new();
            for (key, v) in f {
                let key_path = format!("{filter_path}.{key}");
                if key == "msg_id" {
                    return Err(ctx.err(
                        &key_path,
                        "not supported by fedhub's history queries (a count of one message); use topics, users or contains",
                    ));
                }
                if !FILTER_KEYS.contains(&key.as_str()) {
                    return Err(ctx.err(
                        &key_path,
                        format!(
                            "unknown filter key (expected one of: {})",
                            FILTER_KEYS.join(", ")
                        ),
                    ));
                }
                if key == "order" && !matches!(v.as_str(), Some("asc" | "desc")) {
                    return Err(
                        ctx.err(&key_path, format!("expected asc or desc, got {}", kind(v)))
                    );
                }
                out.push((key.clone(), parse_template(ctx, &key_path, v)?));
            }
            out
        }
        Value::Null => Vec::new(),
        other => {
            return Err(ctx.err(
                &filter_path,
                format!(
                    "expected a mapping of datanommer grep arguments, got {}",
                    kind(other)
                ),
            ))
        }
    };
    let op_path = format!("{field}.operation");
    let operation = match &map["operation"] {
        Value::String(s) if s == "count" => Operation::Count,
        Value::Object(_) => {
            let (key, inner) = single(ctx, &op_path, &map["operation"])?;
            match key {
                "expression" => Operation::Expression(ctx.expression(
                    &format!("{op_path}.expression"),
                    inner,
                    "query",
                )?),
                "lambda" => return Err(ctx.lambda(&format!("{op_path}.lambda"), inner, "query")),
                other => {
                    return Err(ctx.err(
                        &format!("{op_path}.{other}"),
                        "unknown operation (expected count, or expression: over `query`)",
                    ))
                }
            }
        }
        other => {
            return Err(ctx.err(
                &op_path,
                format!(
                    "unknown operation {} (expected count, or expression: over `query`)",
                    kind(other)
                ),
            ))
        }
    };
    let cond_path = format!("{field}.condition");
    let (phrase, threshold) = single(ctx, &cond_path, &map["condition"])?;
    let phrase_path = format!("{cond_path}.{phrase}");
    let condition = match phrase {
        "expression" => Condition::Expression(ctx.expression(&phrase_path, threshold, "value")?),
        "lambda" => return Err(ctx.lambda(&phrase_path, threshold, "value")),
        _ => {
            let Some((_, cmp)) = CONDITION_PHRASES.iter().find(|(p, _)| *p == phrase) else {
                let phrases: Vec<&str> = CONDITION_PHRASES.iter().map(|(p, _)| *p).collect();
                return Err(ctx.err(
                    &phrase_path,
                    format!(
                        "unknown condition (expected one of: {}, expression)",
                        phrases.join(", ")
                    ),
                ));
            };
            let Some(n) = threshold.as_f64() else {
                return Err(ctx.err(
                    &phrase_path,
                    format!("expected a number, got {}", kind(threshold)),
                ));
            };
            Condition::Compare(*cmp, n)
        }
    };
    Ok(Criteria::Datanommer {
        filter,
        operation,
        condition,
    })
}

/// Whether `text` holds a `%(key)s` template.
fn has_template(text: &str) -> bool {
    text.contains("%(")
}

fn parse_template(ctx: &Ctx<'_>, field: &str, value: &Value) -> Result<Template, LoadError> {
    Ok(match value {
        Value::String(s) if has_template(s) => {
            check_template_syntax(s).map_err(|p| ctx.err(field, p))?;
            Template::Text(s.clone())
        }
        Value::Array(items) => Template::List(
            items
                .iter()
                .enumerate()
                .map(|(i, v)| parse_template(ctx, &format!("{field}[{i}]"), v))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(map) if map.len() == 1 && map.contains_key("expression") => {
            Template::Expression(ctx.expression(
                &format!("{field}.expression"),
                &map["expression"],
                "msg",
            )?)
        }
        Value::Object(map) if map.contains_key("lambda") => {
            return Err(ctx.lambda(&format!("{field}.lambda"), &map["lambda"], "msg"))
        }
        Value::Object(map) => Template::Object(
            map.iter()
                .map(|(k, v)| Ok((k.clone(), parse_template(ctx, &format!("{field}.{k}"), v)?)))
                .collect::<Result<_, LoadError>>()?,
        ),
        other => Template::Literal(other.clone()),
    })
}

/// Checks that every `%(` opens a `%(key)s` (or `d`, `r`) and `%` is
/// otherwise `%%`.
fn check_template_syntax(text: &str) -> Result<(), String> {
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('%') {
            rest = stripped;
            continue;
        }
        let Some(inner) = after.strip_prefix('(') else {
            return Err(format!(
                "template {text:?}: a '%' must start %(field)s or be written %%"
            ));
        };
        let Some(close) = inner.find(')') else {
            return Err(format!("template {text:?}: '%(' without its ')'"));
        };
        if !matches!(inner[close + 1..].chars().next(), Some('s' | 'd' | 'r')) {
            return Err(format!(
                "template {text:?}: expected %({})s",
                &inner[..close]
            ));
        }
        rest = &inner[close + 2..];
    }
    Ok(())
}

/// fedbadges' `construct_substitutions`: the body flattened into dotted keys
/// (`msg.user.username`), objects kept under their own key too, strings
/// lowercased.
pub fn substitutions(body: &Map<String, Value>) -> HashMap<String, Value> {
    fn walk(prefix: &str, value: &Map<String, Value>, out: &mut HashMap<String, Value>) {
        for (key, v) in value {
            let full = if prefix.is_empty() {
                key.clone()
            } else {
                format!("{prefix}.{key}")
            };
            if let Value::Object(inner) = v {
                walk(&full, inner, out);
            }
            let v = match v {
                Value::String(s) => Value::String(s.to_lowercase()),
                other => other.clone(),
            };
            out.insert(full, v);
        }
    }
    let mut out = HashMap::new();
    walk("", body, &mut out);
    out
}

/// The `%(key)s` values of one message, as [`substitutions`] gives them,
/// each looked up when a template asks: a key is followed down the body one
/// dotted part at a time, and only when an object on the way has a key with a
/// dot in it (so another reading of the key could exist) is the whole body
/// flattened, once, and that answer used.
pub struct Substitutions<'a> {
    body: &'a Map<String, Value>,
    flat: std::cell::OnceCell<HashMap<String, Value>>,
}

impl<'a> Substitutions<'a> {
    /// The substitutions of `body`.
    pub fn new(body: &'a Map<String, Value>) -> Substitutions<'a> {
        Substitutions {
            body,
            flat: std::cell::OnceCell::new(),
        }
    }

    /// The value of `key` (strings lowercased), if the message has it.
    pub fn get(&self, key: &str) -> Option<Value> {
        let mut object = self.body;
        let mut parts = key.split('.').peekable();
        let value = loop {
            let part = parts.next()?;
            if object.keys().any(|k| k.contains('.')) {
                return self.flattened(key);
            }
            let value = object.get(part)?;
            if parts.peek().is_none() {
                break value;
            }
            object = value.as_object()?;
        };
        Some(match value {
            Value::String(s) => Value::String(s.to_lowercase()),
            other => other.clone(),
        })
    }

    fn flattened(&self, key: &str) -> Option<Value> {
        self.flat
            .get_or_init(|| substitutions(self.body))
            .get(key)
            .cloned()
    }
}

/// A template named a field the message does not have.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("template {template:?} names {field:?}, which the message does not have")]
pub struct MissingField {
    /// The template.
    pub template: String,
    /// The missing key.
    pub field: String,
}

/// Python's `str()` of a JSON value, as `%`-formatting renders it.
fn python_str(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Null => "None".into(),
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Number(n) => n.to_string(),
        Value::Array(items) => format!(
            "[{}]",
            items.iter().map(python_repr).collect::<Vec<_>>().join(", ")
        ),
        Value::Object(map) => format!(
            "{{{}}}",
            map.iter()
                .map(|(k, v)| format!("'{k}': {}", python_repr(v)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

fn python_repr(value: &Value) -> String {
    match value {
        Value::String(s) => format!("'{s}'"),
        other => python_str(other),
    }
}

/// fedbadges' `format_args` on one string: a string that is exactly
/// `%(key)s` becomes the raw value (a list stays a list); otherwise every
/// `%(key)s` is replaced by the value's text.
pub fn format_text(text: &str, subs: &Substitutions<'_>) -> Result<Value, MissingField> {
    let missing = |field: &str| MissingField {
        template: text.to_string(),
        field: field.to_string(),
    };
    if text.len() > 4 && text.starts_with("%(") && text.ends_with(")s") {
        let key = &text[2..text.len() - 2];
        if !key.contains(')') {
            return subs.get(key).ok_or_else(|| missing(key));
        }
    }
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find('%') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(stripped) = after.strip_prefix('%') {
            out.push('%');
            rest = stripped;
            continue;
        }
        // Syntax was checked at load.
        let inner = after.strip_prefix('(').unwrap_or(after);
        let close = inner.find(')').unwrap_or(inner.len());
        let key = &inner[..close];
        let value = subs.get(key).ok_or_else(|| missing(key))?;
        let spec = inner[close..].chars().nth(1).unwrap_or('s');
        out.push_str(&if spec == 'r' {
            python_repr(&value)
        } else {
            python_str(&value)
        });
        rest = inner.get(close + 2..).unwrap_or("");
    }
    out.push_str(rest);
    Ok(Value::String(out))
}

/// Keys a set of rules reads from messages, for tests and docs: the trigger
/// kinds used.
pub fn trigger_kinds(rules: &[Rule]) -> BTreeMap<&'static str, usize> {
    fn visit(
        t: &Trigger,
        out: &mut BTreeMap<&'static str, usize>,
        seen: &mut HashSet<&'static str>,
    ) {
        let k = match t {
            Trigger::Topic(_) => "topic",
            Trigger::Category(_) => "category",
            Trigger::Expression(_) => "expression",
            Trigger::All(c) | Trigger::Any(c) | Trigger::Not(c) => {
                for c in c {
                    visit(c, out, seen);
                }
                return;
            }
        };
        if seen.insert(k) {
            *out.entry(k).or_default() += 1;
        }
    }
    let mut out = BTreeMap::new();
    for rule in rules {
        visit(&rule.trigger, &mut out, &mut HashSet::new());
    }
    out
}

/// Whether a trigger matches the message with this topic; expressions are
/// evaluated by `eval`.
pub fn trigger_matches<'t, E>(
    trigger: &'t Trigger,
    topic: &str,
    eval: &mut impl FnMut(&'t Expr) -> Result<bool, E>,
) -> Result<bool, E> {
    Ok(match trigger {
        Trigger::Topic(p) => p.matches(&|v: &str| topic.ends_with(v)),
        Trigger::Category(p) => {
            let category = topic.split('.').nth(3).unwrap_or("");
            p.matches(&|v: &str| category == v)
        }
        Trigger::Expression(e) => eval(e)?,
        Trigger::All(c) => {
            for t in c {
                if !trigger_matches(t, topic, eval)? {
                    return Ok(false);
                }
            }
            true
        }
        Trigger::Any(c) => {
            for t in c {
                if trigger_matches(t, topic, eval)? {
                    return Ok(true);
                }
            }
            false
        }
        Trigger::Not(c) => {
            for t in c {
                if trigger_matches(t, topic, eval)? {
                    return Ok(false);
                }
            }
            true
        }
    })
}

impl Comparison {
    /// Applies the comparison: `value <op> threshold`.
    pub fn holds(self, value: f64, threshold: f64) -> bool {
        match self {
            Comparison::Ge => value >= threshold,
            Comparison::Gt => value > threshold,
            Comparison::Le => value <= threshold,
            Comparison::Lt => value < threshold,
            Comparison::Eq => value == threshold,
            Comparison::Ne => value != threshold,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(text: &str) -> Result<Rule, LoadError> {
        parse_rule(Path::new("rules/x.yaml"), text, &Sandbox::default())
    }

    const GOOD: &str = r#"
name: Like a Rock (Builds)
description: You have built 1 RPM
creator: ralph
discussion: https://example.org/1
image_url: https://example.org/rock.png
issuer_id: fedora-project
tags: [koji]
trigger:
  category: {any: [buildsys, copr]}
criteria:
  datanommer:
    filter:
      topics: ["%(topic)s"]
      users: ["%(msg.owner)s"]
    operation: count
    condition:
      greater than or equal to: 1
recipient: "%(msg.owner)s"
"#;

    #[test]
    fn a_good_rule_loads_with_its_badge_id() {
        let rule = parse(GOOD).unwrap();
        assert_eq!(rule.badge_id, "like-a-rock-builds");
        assert_eq!(rule.tags, vec!["koji"]);
        let mut never = |_: &Expr| -> Result<bool, ()> { unreachable!() };
        let mut fires = |topic: &str| trigger_matches(&rule.trigger, topic, &mut never).unwrap();
        assert!(fires("org.fedoraproject.prod.buildsys.build.state.change"));
        assert!(fires("org.fedoraproject.prod.copr.build.end"));
        assert!(!fires("org.fedoraproject.prod.bodhi.update.comment"));
    }

    #[test]
    fn each_malformed_node_is_named() {
        let cases: Vec<(String, &str, &str)> = vec![
            (
                GOOD.replace("tags: [koji]", "tagz: [koji]"),
                "tagz",
                "unknown field",
            ),
            (GOOD.replace("creator: ralph\n", ""), "creator", "missing"),
            (
                GOOD.replace("operation: count", "operation: first"),
                "criteria.datanommer.operation",
                "unknown operation",
            ),
            (
                GOOD.replace("greater than or equal to: 1", "bigger than: 1"),
                "criteria.datanommer.condition.bigger than",
                "unknown condition",
            ),
            (
                GOOD.replace("greater than or equal to: 1", "greater than: many"),
                "criteria.datanommer.condition.greater than",
                "expected a number",
            ),
            (
                GOOD.replace("users: [\"%(msg.owner)s\"]", "usernames: [x]"),
                "criteria.datanommer.filter.usernames",
                "unknown filter key",
            ),
            (
                GOOD.replace("category: {any: [buildsys, copr]}", "category: {some: [a]}"),
                "trigger.category.some",
                "unknown operator",
            ),
            (
                GOOD.replace("category: {any: [buildsys, copr]}", "colour: red"),
                "trigger.colour",
                "unknown trigger",
            ),
            (
                GOOD.replace(
                    "category: {any: [buildsys, copr]}",
                    "{topic: a, category: b}",
                ),
                "trigger",
                "exactly one key",
            ),
            (
                GOOD.replace("\"%(msg.owner)s\"\n", "\"%(msg.owner\"\n"),
                "recipient",
                "without its ')'",
            ),
            (
                GOOD.replace(
                    "category: {any: [buildsys, copr]}",
                    "expression: \"msg.msg.(\"",
                ),
                "trigger.expression",
                "does not compile",
            ),
        ];
        for (text, field, problem) in cases {
            let err = parse(&text).unwrap_err();
            assert_eq!(err.field, field, "{err}");
            assert!(err.problem.contains(problem), "{err}");
            assert_eq!(err.file, Path::new("rules/x.yaml"));
            assert_eq!(err.rule.as_deref(), Some("Like a Rock (Builds)"), "{err}");
        }
        let err = parse("name: [unclosed").unwrap_err();
        assert!(err.problem.contains("not valid YAML"), "{err}");
    }

    #[test]
    fn python_lambdas_are_rejected_with_the_expression_form() {
        let text = GOOD.replace(
            "category: {any: [buildsys, copr]}",
            "lambda: \"msg['msg']['owner'] == 'ralph'\"",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.field, "trigger.lambda");
        assert!(
            err.problem
                .contains(r#"expression: "msg[\"msg\"][\"owner\"] == \"ralph\"""#),
            "{err}"
        );
        let text = GOOD.replace(
            "greater than or equal to: 1",
            "lambda: \"value > 5 and value < 10\"",
        );
        let err = parse(&text).unwrap_err();
        assert_eq!(err.field, "criteria.datanommer.condition.lambda");
        assert!(err.problem.contains("value > 5 && value < 10"), "{err}");
    }

    #[test]
    fn substitution_follows_format_args() {
        let body = json!({"topic": "org.X.prod.buildsys.build", "msg": {"owner": "Ralph", "agents": ["a", "b"], "n": 3}});
        let subs = Substitutions::new(body.as_object().unwrap());
        assert_eq!(format_text("%(msg.owner)s", &subs).unwrap(), json!("ralph"));
        assert_eq!(
            format_text("%(msg.agents)s", &subs).unwrap(),
            json!(["a", "b"])
        );
        assert_eq!(
            format_text("%(msg.owner)s built %(msg.n)s 100%%", &subs).unwrap(),
            json!("ralph built 3 100%")
        );
        assert_eq!(
            subs.get("msg").unwrap()["owner"],
            json!("Ralph"),
            "objects are kept as they are"
        );
        let err = format_text("%(msg.user.name)s", &subs).unwrap_err();
        assert_eq!(err.field, "msg.user.name");
    }

    #[test]
    fn looking_keys_up_gives_what_flattening_the_body_gives() {
        let bodies = [
            json!({"topic": "t", "msg": {"owner": "Ralph", "user": {"name": "Kevin", "n": 2}, "list": ["A"]}}),
            // Keys with dots: "msg.a.b" has two readings, flattening decides.
            json!({"msg": {"a": {"b": "Nested"}, "a.b": "Dotted", "c.d": {"e": 1}}}),
            json!({"msg.x": "Top", "msg": {"x": "Inner", "y": null}}),
        ];
        let keys = [
            "topic",
            "msg",
            "msg.owner",
            "msg.user",
            "msg.user.name",
            "msg.user.n",
            "msg.list",
            "msg.a",
            "msg.a.b",
            "msg.c.d",
            "msg.c.d.e",
            "msg.x",
            "msg.y",
            "msg.missing",
            "msg.owner.deeper",
            "",
            ".",
        ];
        let mut found = 0;
        for body in &bodies {
            let body = body.as_object().unwrap();
            let flat = substitutions(body);
            let subs = Substitutions::new(body);
            for key in keys {
                assert_eq!(subs.get(key), flat.get(key).cloned(), "{key} in {body:?}");
                found += usize::from(flat.contains_key(key));
            }
        }
        assert!(found >= 12, "{found}");
    }
}
