//! fedmsg_meta-style extraction: which Fedora accounts and which packages a
//! message is about, plus a one-line summary (fedmsg_meta's `subtitle`).
//!
//! Dispatch follows `fedmsg.meta`: a topic `org.fedoraproject.<env>.<name>[.<rest>]`
//! (env one of `dev`, `stg`, `prod`) goes to the processor called `<name>`; the
//! first entry of [`PROCESSORS`] whose name matches wins, and anything else goes
//! to the generic fallback, which (like fedmsg_meta's `DefaultProcessor`) knows
//! no users and no packages. Each processor is one row of the table: three plain
//! functions over the topic and the payload (`msg`).
//!
//! The values are computed once, when a message is stored, and kept in the
//! user and package bridge tables: later changes to these rules do not rewrite
//! history (as in datanommer). A missing or mistyped field never panics; it just
//! contributes nothing, the way fedmsg_meta turns a `KeyError` into an empty set.

use std::collections::BTreeSet;

use fedhub::Envelope;
use serde_json::Value;

/// A set of user or package names, sorted.
pub type Names = BTreeSet<String>;

/// Extraction rules for one fedmsg_meta processor.
pub struct Processor {
    /// The processor's name: the topic segment after the environment.
    pub name: &'static str,
    /// The FAS usernames a message is about.
    pub usernames: fn(&Message<'_>) -> Names,
    /// The package names a message is about.
    pub packages: fn(&Message<'_>) -> Names,
    /// A one-line, human summary.
    pub subtitle: fn(&Message<'_>) -> String,
    /// A URL about the message (`""` when there is none).
    pub link: fn(&Message<'_>) -> String,
}

/// What the rules look at: the topic, its title and the payload.
pub struct Message<'a> {
    /// The full topic.
    pub topic: &'a str,
    /// The topic without prefix and environment (`buildsys.build.state.change`).
    pub title: &'a str,
    /// The payload (`body.msg`), `Null` when absent.
    pub msg: &'a Value,
}

impl Message<'_> {
    /// `msg` at a path of object keys.
    fn at(&self, path: &[&str]) -> Option<&Value> {
        let mut v = self.msg;
        for key in path {
            v = v.get(key)?;
        }
        Some(v)
    }

    /// A non-empty string at `path`.
    fn str(&self, path: &[&str]) -> Option<&str> {
        self.at(path)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// The string at `path`, or `""`.
    fn text(&self, path: &[&str]) -> String {
        self.at(path).map(scalar_text).unwrap_or_default()
    }
}

/// The processors, in dispatch order (fedmsg_meta's entry-point order for these).
pub const PROCESSORS: &[Processor] = &[
    Processor {
        name: "buildsys",
        usernames: buildsys_users,
        packages: buildsys_packages,
        subtitle: buildsys_subtitle,
        link: buildsys_link,
    },
    Processor {
        name: "bodhi",
        usernames: bodhi_users,
        packages: bodhi_packages,
        subtitle: bodhi_subtitle,
        link: bodhi_link,
    },
    Processor {
        name: "fedbadges",
        usernames: badges_users,
        packages: no_names,
        subtitle: badges_subtitle,
        link: badges_link,
    },
    Processor {
        name: "planet",
        usernames: planet_users,
        packages: no_names,
        subtitle: planet_subtitle,
        link: planet_link,
    },
    Processor {
        name: "git",
        usernames: git_users,
        packages: git_packages,
        subtitle: git_subtitle,
        link: git_link,
    },
    Processor {
        name: "fas",
        usernames: fas_users,
        packages: no_names,
        subtitle: fas_subtitle,
        link: no_link,
    },
    Processor {
        name: "pkgdb",
        usernames: pkgdb_users,
        packages: pkgdb_packages,
        subtitle: pkgdb_subtitle,
        link: pkgdb_link,
    },
    Processor {
        name: "meetbot",
        usernames: meetbot_users,
        packages: no_names,
        subtitle: meetbot_subtitle,
        link: meetbot_link,
    },
];

/// The generic fallback (fedmsg_meta's `unhandled`): no users, no packages, no subtitle.
pub const FALLBACK: Processor = Processor {
    name: "unhandled",
    usernames: no_names,
    packages: no_names,
    subtitle: no_subtitle,
    link: no_link,
};

/// The pkgdb namespace whose packages count (fedmsg_meta's `config['namespace']` default).
const PKGDB_NAMESPACE: &str = "rpms";

/// fedmsg_meta's title: the topic without `<org>.<org2>.<env>.` (a `/topic/…`
/// STOMP topic is returned whole).
pub fn title(topic: &str) -> &str {
    if topic.starts_with("/topic/") {
        return topic;
    }
    let mut rest = topic;
    for _ in 0..3 {
        match rest.find('.') {
            Some(dot) => rest = &rest[dot + 1..],
            None => return "",
        }
    }
    rest
}

/// The processor for `topic`: a Fedora topic (`org.fedoraproject.{dev,stg,prod}.<name>…`)
/// whose `<name>` is in [`PROCESSORS`], or [`FALLBACK`].
pub fn processor_for(topic: &str) -> &'static Processor {
    let Some(rest) = topic.strip_prefix("org.fedoraproject.") else {
        return &FALLBACK;
    };
    let Some((env, rest)) = rest.split_once('.') else {
        return &FALLBACK;
    };
    if !matches!(env, "dev" | "stg" | "prod") {
        return &FALLBACK;
    }
    let name = rest.split('.').next().unwrap_or_default();
    PROCESSORS
        .iter()
        .find(|p| p.name == name)
        .unwrap_or(&FALLBACK)
}

fn message<'a>(topic: &'a str, msg: &'a Value) -> Message<'a> {
    Message {
        topic,
        title: title(topic),
        msg,
    }
}

/// FAS usernames for a topic and payload (`msg2usernames`).
pub fn usernames_of(topic: &str, msg: &Value) -> Names {
    let mut names = (processor_for(topic).usernames)(&message(topic, msg));
    names.retain(|n| !n.is_empty());
    names
}

/// Package names for a topic and payload (`msg2packages`).
pub fn packages_of(topic: &str, msg: &Value) -> Names {
    let mut names = (processor_for(topic).packages)(&message(topic, msg));
    names.retain(|n| !n.is_empty());
    names
}

/// The one-line summary for a topic and payload (`msg2subtitle`).
pub fn subtitle_of(topic: &str, msg: &Value) -> String {
    (processor_for(topic).subtitle)(&message(topic, msg))
}

/// A URL about a topic and payload (`msg2link`), `""` when there is none.
pub fn link_of(topic: &str, msg: &Value) -> String {
    (processor_for(topic).link)(&message(topic, msg))
}

/// FAS usernames a message is about (`fedmsg.meta.msg2usernames`).
pub fn usernames(envelope: &Envelope) -> Names {
    usernames_of(envelope.topic(), envelope.msg().unwrap_or(&Value::Null))
}

/// Package names a message is about (`fedmsg.meta.msg2packages`).
pub fn packages(envelope: &Envelope) -> Names {
    packages_of(envelope.topic(), envelope.msg().unwrap_or(&Value::Null))
}

/// A one-line summary of a message (`fedmsg.meta.msg2subtitle`), `""` when unknown.
pub fn subtitle(envelope: &Envelope) -> String {
    subtitle_of(envelope.topic(), envelope.msg().unwrap_or(&Value::Null))
}

// ----- helpers -----

fn no_names(_: &Message<'_>) -> Names {
    Names::new()
}

fn no_subtitle(_: &Message<'_>) -> String {
    String::new()
}

fn no_link(_: &Message<'_>) -> String {
    String::new()
}

/// A string, a number or a bool as text; `""` for anything else.
fn scalar_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => String::new(),
    }
}

/// A person given as a string, or as an object with `username` or `name`.
fn person(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => o
            .get("username")
            .or_else(|| o.get("name"))
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_string),
        _ => None,
    }
}

fn insert(set: &mut Names, name: Option<String>) {
    if let Some(n) = name {
        set.insert(n);
    }
}

/// Python's `s.rsplit('-', 2)[0]`: the name part of an `name-version-release`.
fn nvr_name(nvr: &str) -> &str {
    let mut end = nvr.len();
    for _ in 0..2 {
        match nvr[..end].rfind('-') {
            Some(i) => end = i,
            None => break,
        }
    }
    &nvr[..end]
}

// ----- buildsys (koji) -----

fn buildsys_users(m: &Message<'_>) -> Names {
    let mut set = Names::new();
    insert(&mut set, m.str(&["owner"]).map(str::to_string));
    if m.title != "buildsys.build.state.change" {
        // Tag, untag and task messages name the acting user too.
        insert(&mut set, person(m.at(&["user"])));
    }
    set
}

fn buildsys_packages(m: &Message<'_>) -> Names {
    m.str(&["name"]).map(str::to_string).into_iter().collect()
}

fn buildsys_subtitle(m: &Message<'_>) -> String {
    let nvr = format!(
        "{}-{}-{}",
        m.text(&["name"]),
        m.text(&["version"]),
        m.text(&["release"])
    );
    let owner = m
        .str(&["owner"])
        .map(|o| format!("{o}'s "))
        .unwrap_or_default();
    match m.title {
        "buildsys.build.state.change" => {
            let verb = match m.at(&["new"]).and_then(Value::as_i64) {
                Some(0) => "started building",
                Some(1) => "completed",
                Some(2) => "was deleted",
                Some(3) => "failed to build",
                Some(4) => "was cancelled",
                _ => "changed state",
            };
            let instance = match m.str(&["instance"]) {
                Some(i) if i != "primary" => format!(" ({i})"),
                _ => String::new(),
            };
            format!("{owner}{nvr} {verb}{instance}")
        }
        "buildsys.tag" => format!(
            "{} tagged {nvr} into {}",
            person(m.at(&["user"])).unwrap_or_default(),
            m.text(&["tag"])
        ),
        "buildsys.untag" => format!(
            "{} untagged {nvr} from {}",
            person(m.at(&["user"])).unwrap_or_default(),
            m.text(&["tag"])
        ),
        _ => String::new(),
    }
}

/// Koji's web UI for the message's instance; the staging topics use staging koji.
fn koji_base(m: &Message<'_>) -> &'static str {
    if m.topic.contains(".stg.") {
        return "http://koji.stg.fedoraproject.org/koji";
    }
    match m.str(&["instance"]) {
        Some("ppc") => "http://ppc.koji.fedoraproject.org/koji",
        Some("s390") => "http://s390.koji.fedoraproject.org/koji",
        Some("arm") => "http://arm.koji.fedoraproject.org/koji",
        _ => "http://koji.fedoraproject.org/koji",
    }
}

fn buildsys_link(m: &Message<'_>) -> String {
    match (m.title, m.at(&["build_id"]).and_then(Value::as_i64)) {
        ("buildsys.build.state.change", Some(id)) => {
            format!("{}/buildinfo?buildID={id}", koji_base(m))
        }
        _ => String::new(),
    }
}

// ----- bodhi -----

/// The update's title: `update.title`, or its builds' NVRs space-joined; comments
/// carry it under `comment.update` (or `comment.update_title`).
fn bodhi_title(m: &Message<'_>) -> String {
    for update in [m.at(&["update"]), m.at(&["comment", "update"])]
        .into_iter()
        .flatten()
    {
        if let Some(t) = update.get("title").and_then(Value::as_str) {
            return t.to_string();
        }
        if let Some(builds) = update.get("builds").and_then(Value::as_array) {
            let nvrs: Vec<&str> = builds
                .iter()
                .filter_map(|b| b.get("nvr").and_then(Value::as_str))
                .collect();
            if !nvrs.is_empty() {
                return nvrs.join(" ");
            }
        }
    }
    if let Some(t) = m.str(&["comment", "update_title"]) {
        return t.to_string();
    }
    m.text(&["override", "build", "nvr"])
}

fn bodhi_users(m: &Message<'_>) -> Names {
    let mut set = Names::new();
    insert(
        &mut set,
        person(m.at(&["comment", "user"])).or_else(|| person(m.at(&["comment", "author"]))),
    );
    insert(
        &mut set,
        person(m.at(&["update", "user"])).or_else(|| person(m.at(&["update", "submitter"]))),
    );
    insert(&mut set, person(m.at(&["override", "submitter"])));
    if let Some(text) = m.str(&["comment", "text"]) {
        set.extend(mentions(text));
    }
    insert(&mut set, person(m.at(&["agent"])));
    set
}

/// Every `@word` in a comment (word characters: letters, digits, `_`).
fn mentions(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find('@') {
        let after = &rest[at + 1..];
        let len = after
            .char_indices()
            .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
            .map(|(i, _)| i)
            .unwrap_or(after.len());
        if len > 0 {
            out.push(after[..len].to_string());
        }
        rest = &after[len..];
    }
    out
}

fn bodhi_packages(m: &Message<'_>) -> Names {
    bodhi_title(m)
        .split([' ', ','])
        .filter(|part| !part.is_empty())
        .map(|part| nvr_name(part).to_string())
        .collect()
}

fn truncate_title(title: &str) -> String {
    if title.chars().count() > 40 {
        let cut: String = title.chars().take(40).collect();
        format!("{cut}...")
    } else {
        title.to_string()
    }
}

fn bodhi_subtitle(m: &Message<'_>) -> String {
    let agent = person(m.at(&["agent"])).unwrap_or_default();
    let title = bodhi_title(m);
    if let Some(request) = m.title.strip_prefix("bodhi.update.request.") {
        return match request {
            "unpush" => format!("{agent} unpushed {title}"),
            "obsolete" => format!("{agent} obsoleted {title}"),
            "revoke" => format!("{agent} revoked {title}"),
            other => format!("{agent} submitted {} to {other}", truncate_title(&title)),
        };
    }
    match m.title {
        "bodhi.update.comment" => {
            let author = person(m.at(&["comment", "user"]))
                .or_else(|| person(m.at(&["comment", "author"])))
                .unwrap_or(agent);
            let karma = m.text(&["comment", "karma"]);
            format!(
                "{author} commented on bodhi update {} (karma: {karma})",
                truncate_title(&title)
            )
        }
        "bodhi.update.complete.stable" | "bodhi.update.complete.testing" => {
            let to = m.title.rsplit('.').next().unwrap_or_default();
            format!("{} pushed to {to}", truncate_title(&title))
        }
        _ => String::new(),
    }
}

fn bodhi_link(m: &Message<'_>) -> String {
    let alias = [m.at(&["update"]), m.at(&["comment", "update"])]
        .into_iter()
        .flatten()
        .find_map(|u| u.get("alias").and_then(Value::as_str))
        .filter(|a| !a.is_empty())
        .map(str::to_string);
    match alias.unwrap_or_else(|| bodhi_title(m)) {
        id if id.is_empty() => String::new(),
        id => format!("https://bodhi.fedoraproject.org/updates/{id}"),
    }
}

// ----- fedbadges -----

fn badges_users(m: &Message<'_>) -> Names {
    let who = if m.title.starts_with("fedbadges.person.") {
        m.str(&["person", "nickname"])
    } else {
        m.str(&["user", "username"])
    };
    who.map(str::to_string).into_iter().collect()
}

fn badges_subtitle(m: &Message<'_>) -> String {
    match m.title {
        "fedbadges.badge.award" => format!(
            "{} has been awarded the \"{}\" badge",
            m.text(&["user", "username"]),
            m.text(&["badge", "name"])
        ),
        "fedbadges.person.rank.advance" => format!(
            "{} moved to position {} on the badge leaderboard",
            m.text(&["person", "nickname"]),
            m.text(&["person", "rank"])
        ),
        "fedbadges.person.login.first" => format!(
            "{} logged into badges for the first time",
            m.text(&["person", "nickname"])
        ),
        _ => String::new(),
    }
}

fn badges_link(m: &Message<'_>) -> String {
    match badges_users(m).into_iter().next() {
        Some(user) => format!("https://badges.fedoraproject.org/user/{user}"),
        None => String::new(),
    }
}

// ----- planet -----

fn planet_users(m: &Message<'_>) -> Names {
    m.str(&["username"])
        .map(str::to_string)
        .into_iter()
        .collect()
}

fn planet_subtitle(m: &Message<'_>) -> String {
    let title = m.text(&["post", "title"]);
    match m.str(&["username"]) {
        Some(user) => format!("{user} posted \"{title}\""),
        None => format!("New post: \"{title}\""),
    }
}

fn planet_link(m: &Message<'_>) -> String {
    m.text(&["post", "link"])
}

// ----- git (dist-git) -----

fn git_users(m: &Message<'_>) -> Names {
    let who = m.str(&["agent"]).or_else(|| m.str(&["commit", "username"]));
    who.map(str::to_string).into_iter().collect()
}

fn git_packages(m: &Message<'_>) -> Names {
    if let Some(ns) = m.str(&["commit", "namespace"]) {
        if ns != "rpms" && ns != "rpms-checks" {
            return Names::new();
        }
    }
    if let Some(repo) = m.str(&["commit", "repo"]) {
        return Names::from([repo.to_string()]);
    }
    // Legacy per-repo topics: org.fedoraproject.prod.git.receive.<repo>.<branch>
    let parts: Vec<&str> = m.topic.split('.').collect();
    if parts.len() > 6 {
        let repo = parts[5..parts.len() - 1].join(".");
        if !repo.is_empty() {
            return Names::from([repo]);
        }
    }
    Names::new()
}

fn git_subtitle(m: &Message<'_>) -> String {
    let who = m
        .str(&["commit", "username"])
        .or_else(|| m.str(&["commit", "email"]))
        .unwrap_or_default();
    let repo = m
        .str(&["commit", "repo"])
        .map(str::to_string)
        .or_else(|| git_packages(m).into_iter().next())
        .unwrap_or_default();
    let target = match m.str(&["commit", "namespace"]) {
        Some(ns) => format!("{ns}/{repo}"),
        None => repo,
    };
    let branch = m.text(&["commit", "branch"]);
    let mut summary = m.text(&["commit", "summary"]);
    let whole = m.text(&["commit", "message"]);
    if !whole.is_empty() && summary.trim() != whole.trim() {
        summary.push_str(" (..more)");
    }
    format!("{who} pushed to {target} ({branch}).  \"{summary}\"")
}

fn git_link(m: &Message<'_>) -> String {
    let repo = m
        .str(&["commit", "repo"])
        .map(str::to_string)
        .or_else(|| git_packages(m).into_iter().next());
    let (Some(repo), Some(rev)) = (repo, m.str(&["commit", "rev"])) else {
        return String::new();
    };
    let ns = m.str(&["commit", "namespace"]).unwrap_or("rpms");
    format!(
        "https://src.fedoraproject.org/{ns}/{repo}/c/{rev}?branch={}",
        m.text(&["commit", "branch"])
    )
}

// ----- fas -----

fn fas_users(m: &Message<'_>) -> Names {
    let mut set = Names::new();
    insert(&mut set, person(m.at(&["agent"])));
    insert(&mut set, person(m.at(&["user"])));
    set
}

fn fas_subtitle(m: &Message<'_>) -> String {
    let agent = person(m.at(&["agent"])).unwrap_or_default();
    let user = person(m.at(&["user"])).unwrap_or_default();
    match m.title {
        "fas.user.update" => {
            let fields: Vec<String> = m
                .at(&["fields"])
                .and_then(Value::as_array)
                .map(|a| a.iter().map(scalar_text).collect())
                .unwrap_or_default();
            format!(
                "{agent} edited the following fields of {user}'s FAS profile:  {}",
                fields.join(", ")
            )
        }
        "fas.user.create" => format!("New FAS account:  '{user}'"),
        _ => String::new(),
    }
}

// ----- pkgdb -----

fn pkgdb_users(m: &Message<'_>) -> Names {
    let mut set = Names::new();
    let agent = match m.at(&["agent"]) {
        Some(Value::Array(items)) => items.first().and_then(|v| person(Some(v))),
        other => person(other),
    };
    insert(&mut set, agent);
    if let Some(acl) = m.at(&["acl"]).filter(|a| a.is_object()) {
        insert(&mut set, person(acl.get("fas_name")));
    }
    insert(&mut set, person(m.at(&["username"])));
    set.remove("orphan");
    set
}

/// A package name from a `package` value (a string, or an object with `name`),
/// when its namespace is absent or the pkgdb namespace.
fn pkgdb_package(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Object(o) => {
            let ns_ok = match o.get("namespace").and_then(Value::as_str) {
                None => true,
                Some(ns) => ns == PKGDB_NAMESPACE,
            };
            o.get("name")
                .and_then(Value::as_str)
                .filter(|s| ns_ok && !s.is_empty())
                .map(str::to_string)
        }
        _ => None,
    }
}

fn pkgdb_packages(m: &Message<'_>) -> Names {
    let mut set = Names::new();
    insert(
        &mut set,
        pkgdb_package(m.at(&["package_listing", "package"])),
    );
    if let Some(listings) = m.at(&["package_listings"]).and_then(Value::as_array) {
        for listing in listings {
            insert(&mut set, pkgdb_package(listing.get("package")));
        }
    }
    insert(&mut set, pkgdb_package(m.at(&["package"])));
    insert(
        &mut set,
        pkgdb_package(m.at(&["acl", "packagelist", "package"])),
    );
    for path in [
        &["info", "pkg_name"][..],
        &["action", "info", "pkg_name"],
        &["action", "package"],
    ] {
        insert(&mut set, m.str(path).map(str::to_string));
    }
    set
}

fn pkgdb_subtitle(m: &Message<'_>) -> String {
    if m.title != "pkgdb.acl.update" {
        return String::new();
    }
    let agent = pkgdb_users_agent(m);
    let user = person(m.at(&["username"])).unwrap_or_default();
    let acl = match m.at(&["acl"]) {
        Some(Value::Object(o)) => o.get("acl").map(scalar_text).unwrap_or_default(),
        Some(v) => scalar_text(v),
        None => String::new(),
    };
    let package = m.at(&["package_listing", "package"]);
    let name = package
        .and_then(|p| p.get("name"))
        .map(scalar_text)
        .unwrap_or_default();
    let ns = package
        .and_then(|p| p.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or(PKGDB_NAMESPACE);
    let branch = m.text(&["package_listing", "collection", "branchname"]);
    let status = m.text(&["status"]);
    format!("{agent} changed {user}'s '{acl}' permission on {ns}/{name} ({branch}) to '{status}'")
}

fn pkgdb_link(m: &Message<'_>) -> String {
    let package = m.at(&["package_listing", "package"]);
    let name = match package.and_then(|p| p.get("name")).and_then(Value::as_str) {
        Some(n) if !n.is_empty() => n,
        _ => return String::new(),
    };
    let ns = package
        .and_then(|p| p.get("namespace"))
        .and_then(Value::as_str)
        .unwrap_or(PKGDB_NAMESPACE);
    format!("https://admin.fedoraproject.org/pkgdb/package/{ns}/{name}/")
}

fn pkgdb_users_agent(m: &Message<'_>) -> String {
    match m.at(&["agent"]) {
        Some(Value::Array(items)) => items.first().and_then(|v| person(Some(v))),
        other => person(other),
    }
    .unwrap_or_default()
}

// ----- meetbot (supybot) -----

/// fasshim's `nick2fas` without a FAS cache: a miss returns the nick unchanged.
fn nick2fas(nick: &str) -> String {
    nick.to_string()
}

fn meetbot_users(m: &Message<'_>) -> Names {
    match m.at(&["attendees"]).and_then(Value::as_object) {
        Some(attendees) => attendees
            .keys()
            .filter(|nick| nick.as_str() != "zodbot")
            .map(|nick| nick2fas(nick))
            .collect(),
        None => m.str(&["owner"]).map(nick2fas).into_iter().collect(),
    }
}

fn meetbot_subtitle(m: &Message<'_>) -> String {
    let owner = nick2fas(&m.text(&["owner"]));
    let channel = m.text(&["channel"]);
    match m.title {
        "meetbot.meeting.complete" => format!(
            "{owner}'s meeting titled \"{}\" ended in {channel}",
            m.text(&["meeting_topic"])
        ),
        "meetbot.meeting.start" => format!("{owner} started a meeting in {channel}"),
        _ => String::new(),
    }
}

fn meetbot_link(m: &Message<'_>) -> String {
    match m.str(&["url"]) {
        Some(url) => format!("{}.html", url.replacen("http://", "https://", 1)),
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn names(items: &[&str]) -> Names {
        items.iter().map(|s| s.to_string()).collect()
    }

    fn env(topic: &str, msg: Value) -> Envelope {
        Envelope::from_value(json!({
            "topic": topic, "msg": msg, "msg_id": "2013-x", "timestamp": 1_359_947_640.0,
            "i": 1, "username": "apache",
        }))
        .expect("valid envelope")
    }

    #[test]
    fn build_start_names_owner_and_package() {
        let e = env(
            "org.fedoraproject.prod.buildsys.build.state.change",
            json!({"build_id": 16058, "old": null, "name": "eclipse-ptp", "instance": "primary",
                   "attribute": "state", "request": ["git://pkgs.fedoraproject.org/eclipse-ptp?#x", "f19-candidate", {}],
                   "version": "6.0.3", "owner": "ralph", "new": 0, "release": "2.fc19"}),
        );
        assert_eq!(usernames(&e), names(&["ralph"]));
        assert_eq!(packages(&e), names(&["eclipse-ptp"]));
        assert_eq!(
            subtitle(&e),
            "ralph's eclipse-ptp-6.0.3-2.fc19 started building"
        );
    }

    #[test]
    fn build_verbs_instance_and_missing_owner() {
        let cases = [
            (1, "completed"),
            (2, "was deleted"),
            (3, "failed to build"),
            (4, "was cancelled"),
        ];
        for (new, verb) in cases {
            let e = env(
                "org.fedoraproject.stg.buildsys.build.state.change",
                json!({"name": "pkg", "version": "1", "release": "1", "owner": null, "new": new, "instance": "arm"}),
            );
            assert_eq!(usernames(&e), Names::new());
            assert_eq!(subtitle(&e), format!("pkg-1-1 {verb} (arm)"));
        }
    }

    #[test]
    fn bodhi_request_names_agent_and_submitter() {
        let e = env(
            "org.fedoraproject.prod.bodhi.update.request.testing",
            json!({"agent": "lmacken", "update": {
                "title": "gnome-settings-daemon-3.6.1-1.fc18,control-center-3.6.1-1.fc18",
                "submitter": "hadess", "request": "testing", "status": "pending",
                "comments": [], "builds": []}}),
        );
        assert_eq!(usernames(&e), names(&["hadess", "lmacken"]));
        assert_eq!(
            packages(&e),
            names(&["control-center", "gnome-settings-daemon"])
        );
        assert_eq!(
            subtitle(&e),
            "lmacken submitted gnome-settings-daemon-3.6.1-1.fc18,contr... to testing"
        );
    }

    #[test]
    fn bodhi_unpush_comment_mentions_and_builds() {
        let e = env(
            "org.fedoraproject.prod.bodhi.update.request.unpush",
            json!({"agent": "lmacken", "update": {"builds": [{"nvr": "foo-1.0-1.fc40"}, {"nvr": "bar-baz-2-3.fc40"}],
                   "user": {"name": "ralph"}}}),
        );
        assert_eq!(usernames(&e), names(&["lmacken", "ralph"]));
        assert_eq!(packages(&e), names(&["bar-baz", "foo"]));
        assert_eq!(
            subtitle(&e),
            "lmacken unpushed foo-1.0-1.fc40 bar-baz-2-3.fc40"
        );

        let e = env(
            "org.fedoraproject.prod.bodhi.update.comment",
            json!({"agent": "kevin", "comment": {"text": "cc @adamw and @pingou_2, fine", "karma": 1,
                   "user": {"name": "kevin"}, "update": {"title": "kernel-6.1-1.fc40", "user": {"name": "jforbes"}}}}),
        );
        assert_eq!(usernames(&e), names(&["adamw", "kevin", "pingou_2"]));
        assert_eq!(packages(&e), names(&["kernel"]));
        assert_eq!(
            subtitle(&e),
            "kevin commented on bodhi update kernel-6.1-1.fc40 (karma: 1)"
        );

        let e = env(
            "org.fedoraproject.prod.bodhi.buildroot_override.tag",
            json!({"override": {"submitter": {"name": "ralph"}, "build": {"nvr": "python-x-1-1.fc40"}}}),
        );
        assert_eq!(usernames(&e), names(&["ralph"]));
        assert_eq!(packages(&e), names(&["python-x"]));
    }

    #[test]
    fn badge_award_and_person_topics() {
        let e = env(
            "org.fedoraproject.prod.fedbadges.badge.award",
            json!({"badge": {"name": "Junior Tagger (Tagger I)", "image_url": "x"},
                   "user": {"username": "ralph", "badges_user_id": 191}}),
        );
        assert_eq!(usernames(&e), names(&["ralph"]));
        assert_eq!(packages(&e), Names::new());
        assert_eq!(
            subtitle(&e),
            "ralph has been awarded the \"Junior Tagger (Tagger I)\" badge"
        );
        let e = env(
            "org.fedoraproject.prod.fedbadges.person.rank.advance",
            json!({"person": {"nickname": "toshio", "rank": 12}, "old_rank": 13}),
        );
        assert_eq!(usernames(&e), names(&["toshio"]));
    }

    #[test]
    fn planet_post_with_and_without_username() {
        let e = env(
            "org.fedoraproject.prod.planet.post.new",
            json!({"username": "adamw", "name": "Adam", "post": {"title": "Test day", "link": "https://x"}}),
        );
        assert_eq!(usernames(&e), names(&["adamw"]));
        assert_eq!(subtitle(&e), "adamw posted \"Test day\"");
        let e = env(
            "org.fedoraproject.prod.planet.post.new",
            json!({"name": "Someone", "post": {"title": "Hi"}}),
        );
        assert_eq!(usernames(&e), Names::new());
        assert_eq!(subtitle(&e), "New post: \"Hi\"");
    }

    #[test]
    fn git_receive_current_and_legacy_topics() {
        let e = env(
            "org.fedoraproject.prod.git.receive",
            json!({"agent": "pingou", "commit": {"username": "pingou", "repo": "guake", "namespace": "rpms",
                   "branch": "master", "summary": "Update to 3.0", "message": "Update to 3.0\n\nmore text\n",
                   "email": "pingou@fedoraproject.org"}}),
        );
        assert_eq!(usernames(&e), names(&["pingou"]));
        assert_eq!(packages(&e), names(&["guake"]));
        assert_eq!(
            subtitle(&e),
            "pingou pushed to rpms/guake (master).  \"Update to 3.0 (..more)\""
        );

        let e = env(
            "org.fedoraproject.prod.git.receive",
            json!({"commit": {"username": "ralph", "repo": "ansible", "namespace": "tests"}}),
        );
        assert_eq!(usernames(&e), names(&["ralph"]));
        assert_eq!(packages(&e), Names::new());

        let e = env(
            "org.fedoraproject.prod.git.receive.valgrind.master",
            json!({"commit": {"email": "mjw@redhat.com", "branch": "master", "summary": "Fix", "message": "Fix\n"}}),
        );
        assert_eq!(usernames(&e), Names::new());
        assert_eq!(packages(&e), names(&["valgrind"]));
        assert_eq!(
            subtitle(&e),
            "mjw@redhat.com pushed to valgrind (master).  \"Fix\""
        );
    }

    #[test]
    fn fas_update_with_string_and_object_people() {
        let e = env(
            "org.fedoraproject.prod.fas.user.update",
            json!({"agent": {"username": "ralph"}, "user": {"name": "toshio"}, "fields": ["telephone", "ircnick"]}),
        );
        assert_eq!(usernames(&e), names(&["ralph", "toshio"]));
        assert_eq!(packages(&e), Names::new());
        assert_eq!(
            subtitle(&e),
            "ralph edited the following fields of toshio's FAS profile:  telephone, ircnick"
        );
        let e = env(
            "org.fedoraproject.prod.fas.user.update",
            json!({"agent": "kevin", "user": "kevin", "fields": []}),
        );
        assert_eq!(usernames(&e), names(&["kevin"]));
    }

    #[test]
    fn pkgdb_acl_update() {
        let e = env(
            "org.fedoraproject.prod.pkgdb.acl.update",
            json!({"agent": ["ralph", "other"], "username": "pingou", "acl": "commit", "status": "Approved",
                   "package_listing": {"package": {"name": "python-sh", "namespace": "rpms"},
                                       "collection": {"branchname": "f40"}}}),
        );
        assert_eq!(usernames(&e), names(&["pingou", "ralph"]));
        assert_eq!(packages(&e), names(&["python-sh"]));
        assert_eq!(
            subtitle(&e),
            "ralph changed pingou's 'commit' permission on rpms/python-sh (f40) to 'Approved'"
        );
        let e = env(
            "org.fedoraproject.prod.pkgdb.acl.update",
            json!({"agent": "orphan", "acl": {"fas_name": "kevin", "acl": "commit",
                   "packagelist": {"package": {"name": "guake"}}},
                   "package_listing": {"package": {"name": "other-ns-pkg", "namespace": "modules"}}}),
        );
        assert_eq!(usernames(&e), names(&["kevin"]));
        assert_eq!(packages(&e), names(&["guake"]));
    }

    #[test]
    fn meeting_complete_lists_attendees_without_zodbot() {
        let e = env(
            "org.fedoraproject.prod.meetbot.meeting.complete",
            json!({"owner": "threebean", "channel": "#fedora-meeting", "meeting_topic": "Infrastructure",
                   "url": "http://meetbot.fedoraproject.org/fedora-meeting/2013-10-03/infra.2013-10-03-19.00",
                   "attendees": {"zodbot": 2, "threebean": 2, "nirik": 40, "relrod": 3, "abadger1999": 1,
                                 "puiterwijk": 9, "lmacken": 2, "dgilmore": 1, "pingou": 6}}),
        );
        let users = usernames(&e);
        assert_eq!(users.len(), 8);
        assert!(!users.contains("zodbot"));
        assert!(users.contains("threebean"));
        assert_eq!(
            subtitle(&e),
            "threebean's meeting titled \"Infrastructure\" ended in #fedora-meeting"
        );
    }

    #[test]
    fn unknown_topics_and_bad_shapes_fall_back_quietly() {
        for topic in [
            "org.fedoraproject.prod.copr.build.end",
            "org.example.prod.buildsys.build.state.change",
            "org.fedoraproject.qa.buildsys.build.state.change",
            "x",
        ] {
            let e = env(topic, json!({"owner": "ralph", "name": "p", "agent": "a"}));
            assert_eq!(usernames(&e), Names::new(), "{topic}");
            assert_eq!(packages(&e), Names::new(), "{topic}");
            assert_eq!(subtitle(&e), "", "{topic}");
        }
        // Wrong types contribute nothing instead of failing.
        let e = env(
            "org.fedoraproject.prod.bodhi.update.request.stable",
            json!({"agent": 5, "update": {"title": ["x"], "user": []}, "comment": "text"}),
        );
        assert_eq!(usernames(&e), Names::new());
        assert_eq!(packages(&e), Names::new());
        let e = env("org.fedoraproject.prod.git.receive", json!("just a string"));
        assert_eq!(usernames(&e), Names::new());
        assert_eq!(packages(&e), Names::new());
    }

    #[test]
    fn titles_and_name_parts() {
        assert_eq!(
            title("org.fedoraproject.prod.buildsys.build.state.change"),
            "buildsys.build.state.change"
        );
        assert_eq!(title("/topic/org.x"), "/topic/org.x");
        assert_eq!(title("a.b"), "");
        assert_eq!(nvr_name("python-foo-1.2-3.fc40"), "python-foo");
        assert_eq!(nvr_name("foo-1"), "foo");
        assert_eq!(nvr_name("foo"), "foo");
        assert_eq!(mentions("@a, @b_c! email@x @"), vec!["a", "b_c", "x"]);
    }

    #[test]
    fn links_follow_fedmsg_meta() {
        let cases = [
            (
                "org.fedoraproject.prod.buildsys.build.state.change",
                json!({"build_id": 16058, "name": "eclipse-ptp", "instance": "primary", "new": 0}),
                "http://koji.fedoraproject.org/koji/buildinfo?buildID=16058",
            ),
            (
                "org.fedoraproject.prod.buildsys.build.state.change",
                json!({"build_id": 7, "instance": "arm", "new": 1}),
                "http://arm.koji.fedoraproject.org/koji/buildinfo?buildID=7",
            ),
            (
                "org.fedoraproject.stg.buildsys.build.state.change",
                json!({"build_id": 7, "instance": "ppc", "new": 1}),
                "http://koji.stg.fedoraproject.org/koji/buildinfo?buildID=7",
            ),
            (
                "org.fedoraproject.prod.bodhi.update.request.testing",
                json!({"agent": "lmacken", "update": {"title": "gnome-settings-daemon-3.6.1-1.fc18"}}),
                "https://bodhi.fedoraproject.org/updates/gnome-settings-daemon-3.6.1-1.fc18",
            ),
            (
                "org.fedoraproject.prod.bodhi.update.comment",
                json!({"comment": {"update": {"alias": "FEDORA-2017-1a2b", "title": "x-1-1"}}}),
                "https://bodhi.fedoraproject.org/updates/FEDORA-2017-1a2b",
            ),
            (
                "org.fedoraproject.prod.fedbadges.badge.award",
                json!({"user": {"username": "ralph"}, "badge": {"name": "b"}}),
                "https://badges.fedoraproject.org/user/ralph",
            ),
            (
                "org.fedoraproject.prod.planet.post.new",
                json!({"post": {"link": "https://example.org/post"}}),
                "https://example.org/post",
            ),
            (
                "org.fedoraproject.prod.git.receive",
                json!({"commit": {"repo": "guake", "namespace": "rpms", "rev": "abc", "branch": "master"}}),
                "https://src.fedoraproject.org/rpms/guake/c/abc?branch=master",
            ),
            (
                "org.fedoraproject.prod.git.receive",
                json!({"commit": {"repo": "tests-x", "namespace": "tests", "rev": "d", "branch": "f40"}}),
                "https://src.fedoraproject.org/tests/tests-x/c/d?branch=f40",
            ),
            (
                "org.fedoraproject.prod.fas.user.update",
                json!({"agent": "ralph", "user": "ralph", "fields": []}),
                "",
            ),
            (
                "org.fedoraproject.prod.pkgdb.acl.update",
                json!({"package_listing": {"package": {"name": "python-sh", "namespace": "rpms"}}}),
                "https://admin.fedoraproject.org/pkgdb/package/rpms/python-sh/",
            ),
            (
                "org.fedoraproject.prod.meetbot.meeting.complete",
                json!({"url": "http://meetbot.fedoraproject.org/fedora-meeting/2013-06-24/infrastructure.2013-06-24-19.00"}),
                "https://meetbot.fedoraproject.org/fedora-meeting/2013-06-24/infrastructure.2013-06-24-19.00.html",
            ),
            ("org.fedoraproject.prod.buildsys.build.state.change", json!({"new": 1}), ""),
            ("org.fedoraproject.prod.unknown.thing", json!({"url": "http://x"}), ""),
        ];
        for (topic, msg, link) in cases {
            assert_eq!(link_of(topic, &msg), link, "{topic} {msg}");
        }
    }
}
