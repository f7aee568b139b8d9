//! fedhub's decisions against fedbadges' own: the rule code of fedbadges
//! 1.0.2 from PyPI (`BadgeRule`: trigger, `%(msg.x)s` substitution of the
//! recipient and the filter, the condition) run under Python 2.7 (its code is
//! Python 2 only) by `tests/upstream/fedbadges_decisions.py`, on the same rules
//! and messages as our awarder. Neither side reaches a database of people or
//! messages: Tahrir's tables start empty for every message (nobody holds a
//! badge), and both sides' history answers the same stub count for a filter
//! (the characters of its users, plus two per topic, plus one per category),
//! so the conditions see the same value. Compared, per message and rule:
//! whether the trigger matched, who was awarded, whether the rule failed, and
//! the history filters asked for.
//!
//! The rules: the examples (their `expression` nodes given to fedbadges as the
//! equivalent Python `lambda`; `speak-up-i` is left out, its recipient is an
//! expression, which 1.x cannot express) and rules made here for topics,
//! categories, operators, every condition phrase, list and missing recipients,
//! IP-like and OpenID names. One difference is expected and checked: the
//! README's `category: {any: [...]}` (one example rule and one made here use
//! it), which 1.x never matches and fedhub does.
//! Rules without `recipient` are not compared: 1.x then asks
//! fedmsg_meta_fedora_infrastructure for the message's users, which cannot be
//! installed here (it needs gssapi).
//!
//! Needs `scripts/python-env.sh` run with a Python 2.7 available; fails (never
//! skips) without it.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::sync::{Arc, Mutex};

use common::*;
use fedhub_history::{BatchReport, Filter, NewMessage, Page, Store, StoreError, StoredMessage};
use fedhub_storage::Backend;
use serde_json::{json, Value};

/// The stub history: answers every count with [`stub_total`] and records the
/// filters it was asked.
#[derive(Default)]
struct StubHistory {
    asked: Mutex<Vec<Filter>>,
}

fn stub_total(filter: &Filter) -> u64 {
    (filter.users.iter().map(|u| u.len()).sum::<usize>()
        + 2 * filter.topics.len()
        + filter.categories.len()) as u64
}

impl Store for StubHistory {
    fn insert_batch(&self, _: &[NewMessage]) -> Result<BatchReport, StoreError> {
        Ok(BatchReport::default())
    }
    fn grep(&self, filter: &Filter) -> Result<Page, StoreError> {
        Ok(Page::new(self.count(filter)?, 100, Vec::new()))
    }
    fn count(&self, filter: &Filter) -> Result<u64, StoreError> {
        self.asked.lock().unwrap().push(filter.clone());
        Ok(stub_total(filter))
    }
    fn get(&self, _: &str) -> Result<Option<StoredMessage>, StoreError> {
        Ok(None)
    }
    fn message_count(&self) -> Result<u64, StoreError> {
        Ok(0)
    }
    fn location(&self) -> String {
        "stub".into()
    }
    fn backend(&self) -> Backend {
        Backend::Sqlite
    }
    fn import_checkpoint(&self, _: &str) -> Result<Option<i64>, StoreError> {
        Ok(None)
    }
    fn save_import_checkpoint(&self, _: &str, _: i64) -> Result<(), StoreError> {
        Ok(())
    }
}

/// Our expressions in the examples, and the Python lambda fedbadges gets.
const LAMBDAS: [(&str, &str); 3] = [
    (
        "- expression: msg.msg[\"new\"] == 1",
        "- lambda: msg['msg']['new'] == 1",
    ),
    (
        "- expression: '\"gpg_keyid\" in msg.msg.fields'",
        "- lambda: \"'gpg_keyid' in msg['msg']['fields']\"",
    ),
    (
        "- expression: msg.msg.comment.karma != 0",
        "- lambda: msg['msg']['comment']['karma'] != 0",
    ),
];

/// The README's category form: fedhub matches it, 1.x never does.
const README_FORM: &str = "Readme Category Form";

fn criteria(filter: &str, condition: &str) -> String {
    format!(
        "  datanommer:\n    filter:\n{filter}\n    operation: count\n    condition:\n      {condition}"
    )
}

/// Rules made for the comparison: (name, trigger, criteria, recipient lines).
fn crafted() -> Vec<(String, String)> {
    let user_topic = "      topics: [\"%(topic)s\"]\n      users: [\"%(msg.agent)s\"]";
    let made = [
        (
            "Comment Not Build",
            "  all:\n  - topic: bodhi.update.comment\n  - not: {category: buildsys}",
            criteria(user_topic, "greater than or equal to: 1"),
            "recipient: \"%(msg.agent)s\"",
        ),
        (
            "Git Or Planet Agent",
            "  any:\n  - category: git\n  - category: planet",
            criteria(user_topic, "greater than: 8"),
            "recipient: \"%(msg.agent)s\"",
        ),
        (
            README_FORM,
            "  category: {any: [bodhi, git]}",
            criteria(user_topic, "greater than or equal to: 1"),
            "recipient: \"%(msg.agent)s\"",
        ),
        (
            "Fields As Names",
            "  topic: fas.user.update",
            criteria(
                "      users: \"%(msg.fields)s\"\n      categories: [fas]",
                "is not: 3",
            ),
            "recipient: \"%(msg.fields)s\"",
        ),
        (
            "Short Owner",
            "  all:\n  - category: buildsys\n  - not:\n      any:\n      - topic: bodhi.update.comment\n      - topic: git.receive",
            criteria(
                "      users: [\"%(msg.owner)s\"]\n      topics: [\"%(topic)s\"]",
                "less than: 8",
            ),
            "recipient: \"%(msg.owner)s\"",
        ),
        (
            "Exactly Seven",
            "  topic: buildsys.build.state.change",
            criteria(
                "      users: [\"%(msg.owner)s\"]\n      topics: [\"%(topic)s\"]",
                "equal to: 7",
            ),
            "recipient: \"%(msg.owner)s\"",
        ),
        (
            "At Most Nine",
            "  topic: bodhi.update.request.testing",
            criteria(
                "      users: [\"%(msg.update.user.name)s\"]\n      topics: [\"%(topic)s\"]",
                "is less than or equal to: 9",
            ),
            "recipient: \"%(msg.update.user.name)s\"",
        ),
        (
            "Openid Agent",
            "  topic: openid.login",
            criteria(user_topic, "is greater than or equal to: 1"),
            "recipient: \"%(msg.agent)s\"\nrecipient_openid2fas: true",
        ),
        (
            "Templated Text",
            "  topic: planet.post.new",
            criteria(
                "      users: [\"%(msg.username)s\"]\n      topics: [\"org.fedoraproject.%(msg.username)s.planet\"]",
                "is equal to: 9",
            ),
            "recipient: \"%(msg.username)s\"",
        ),
    ];
    made.iter()
        .map(|(name, trigger, criteria, recipient)| {
            (name.to_string(), rule(name, trigger, criteria, recipient))
        })
        .collect()
}

fn messages() -> Vec<Value> {
    let t = now();
    let mut generator = fedhub_tools::demo::Generator::new(7, "org.fedoraproject", "prod");
    let mut out: Vec<Value> = (0..150)
        .map(|_| Value::Object(generator.next_envelope(t as u64)))
        .collect();
    let made = [
        (
            "bodhi.update.comment",
            json!({"agent": "KevinF", "comment": {"karma": 1, "text": "ok"}}),
        ),
        (
            "bodhi.update.comment",
            json!({"agent": "10.0.0.7", "comment": {"karma": 1}}),
        ),
        (
            "bodhi.update.comment",
            json!({"agent": "192.168.1.1", "comment": {"karma": -1}}),
        ),
        (
            "bodhi.update.comment",
            json!({"agent": null, "comment": {"karma": 0}}),
        ),
        (
            "git.receive",
            json!({"agent": "Pingou", "commit": {"username": "Pingou"}}),
        ),
        (
            "planet.post.new",
            json!({"username": "Sparks", "name": "sparks"}),
        ),
        (
            "openid.login",
            json!({"agent": "http://ralph.id.fedoraproject.org"}),
        ),
        (
            "openid.login",
            json!({"agent": "https://adamw.id.fedoraproject.org"}),
        ),
        (
            "openid.login",
            json!({"agent": "https://example.org/adamw"}),
        ),
        (
            "fas.user.update",
            json!({"agent": "x", "user": "x", "fields": ["ircnick", "gpg_keyid"]}),
        ),
        (
            "buildsys.build.state.change",
            json!({"owner": "Ab", "new": 1}),
        ),
        (
            "buildsys.build.state.change",
            json!({"owner": "abcde", "new": 0}),
        ),
    ];
    for (i, (suffix, msg)) in made.into_iter().enumerate() {
        out.push(body(suffix, &format!("2026-upstream-{i}"), t, msg));
    }
    out
}

/// A filter as a comparable value: the name lists that are not empty.
fn filter_key(lists: &[(&str, &[String])]) -> String {
    let map: BTreeMap<&str, Vec<String>> = lists
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (*k, v.to_vec()))
        .collect();
    serde_json::to_string(&map).unwrap()
}

fn our_filter_key(f: &Filter) -> String {
    filter_key(&[
        ("categories", &f.categories),
        ("contains", &f.contains),
        ("not_categories", &f.not_categories),
        ("not_packages", &f.not_packages),
        ("not_topics", &f.not_topics),
        ("not_users", &f.not_users),
        ("packages", &f.packages),
        ("topics", &f.topics),
        ("users", &f.users),
    ])
}

fn their_filter_key(kwargs: &Value) -> String {
    let list = |k: &str| -> Vec<String> {
        match &kwargs[k] {
            Value::Null => Vec::new(),
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .map(|v| {
                    v.as_str()
                        .map(str::to_string)
                        .unwrap_or_else(|| v.to_string())
                })
                .collect(),
            other => vec![other.to_string()],
        }
    };
    let keys = [
        "categories",
        "contains",
        "not_categories",
        "not_packages",
        "not_topics",
        "not_users",
        "packages",
        "topics",
        "users",
    ];
    let lists: Vec<(&str, Vec<String>)> = keys.iter().map(|k| (*k, list(k))).collect();
    let refs: Vec<(&str, &[String])> = lists.iter().map(|(k, v)| (*k, v.as_slice())).collect();
    filter_key(&refs)
}

#[test]
fn fedbadges_1_0_2_decides_as_we_do_on_the_same_rules_and_messages() {
    let env = fedhub_testkit::python_env();
    assert!(
        env.join("bin/fedbadges-py27").is_file(),
        "{} has no fedbadges-py27: run scripts/python-env.sh with a Python 2.7 available (PYTHON2=..., or pyenv install 2.7.18); this test does not skip",
        env.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let ours_dir = dir.path().join("rules");
    std::fs::create_dir(&ours_dir).unwrap();
    // (name, our YAML, theirs)
    let mut rules: Vec<(String, String, String)> = Vec::new();
    let mut examples: Vec<_> = walk(&example_rules());
    examples.sort();
    for path in examples {
        if path.ends_with("speak-up-i.yml") {
            continue;
        }
        let ours = std::fs::read_to_string(&path).unwrap();
        let mut theirs = ours.clone();
        for (expression, lambda) in LAMBDAS {
            theirs = theirs.replace(expression, lambda);
        }
        assert!(
            !theirs.contains("expression"),
            "a lambda for {}",
            path.display()
        );
        let name = serde_norway_name(&ours);
        rules.push((name, ours, theirs));
    }
    for (name, text) in crafted() {
        rules.push((name, text.clone(), text));
    }
    for (i, (_, ours, _)) in rules.iter().enumerate() {
        std::fs::write(ours_dir.join(format!("{i:02}.yml")), ours).unwrap();
    }
    let messages = messages();

    // Theirs.
    let input = json!({
        "rules": rules.iter().map(|(name, _, theirs)| json!({"name": name, "yaml": theirs})).collect::<Vec<_>>(),
        "messages": messages,
    });
    let work = dir.path().join("python");
    std::fs::create_dir_all(work.join("fedmsg.d")).unwrap();
    fedhub_testkit::write_fedmsg_config(
        &work.join("fedmsg.d/base.py"),
        &json!({"endpoints": {}, "sign_messages": false, "validate_signatures": false}),
    );
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/upstream/fedbadges_decisions.py");
    let mut child = fedhub_testkit::python_tool("fedbadges-py27", &work)
        .arg(&script)
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "fedbadges_decisions.py: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let theirs: Value = serde_json::from_slice(&output.stdout).unwrap_or_else(|e| {
        panic!(
            "{e}: {}; stderr {}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        )
    });

    // Ours: a fresh awarder and empty badge tables for every message.
    let tahrir = tahrir(dir.path().join("badges.sqlite").to_str().unwrap());
    let stub = Arc::new(StubHistory::default());
    let mut compared = BTreeMap::<&str, usize>::new();
    let mut readme_form_triggered = 0;
    let mut mismatches = Vec::new();
    for (m, msg) in messages.iter().enumerate() {
        tahrir
            .database()
            .transaction(|tx| {
                use fedhub_storage::sql::execute;
                let e =
                    |e| fedhub_storage::StorageError::database(tahrir.database().url(), "clear", e);
                execute(tx, "DELETE FROM assertions", &[]).map_err(e)?;
                execute(tx, "DELETE FROM persons", &[]).map_err(e)?;
                Ok(())
            })
            .unwrap();
        stub.asked.lock().unwrap().clear();
        let (mut awarder, shared) = awarder(&ours_dir, stub.clone(), tahrir.clone());
        let loaded = shared.read().unwrap().clone();
        assert!(loaded.errors.is_empty(), "{:?}", loaded.errors);
        let outcome = awarder.handle(
            msg["topic"].as_str().unwrap(),
            msg,
            std::time::SystemTime::now(),
            &|_, _| Ok(()),
        );
        let our_filters: BTreeSet<String> = stub
            .asked
            .lock()
            .unwrap()
            .iter()
            .map(our_filter_key)
            .collect();
        let mut their_filters = BTreeSet::new();
        let mut readme_form_here = false;
        for (r, (name, ours_text, _)) in rules.iter().enumerate() {
            let ours_rule = loaded
                .rules
                .iter()
                .find(|l| &l.rule.name == name)
                .unwrap_or_else(|| panic!("rule {name} loaded"));
            let their = &theirs["results"][m][r];
            let our_triggered = ours_rule
                .triggered
                .load(std::sync::atomic::Ordering::Relaxed)
                > 0;
            let their_triggered = their["triggered"].as_bool().unwrap();
            if ours_text.contains("category: {any:") {
                assert!(
                    !their_triggered,
                    "1.x never matches the README form ({name})"
                );
                if name == README_FORM {
                    let category = msg["topic"].as_str().unwrap().split('.').nth(3).unwrap();
                    assert_eq!(our_triggered, ["bodhi", "git"].contains(&category));
                }
                readme_form_triggered += usize::from(our_triggered);
                readme_form_here |= our_triggered;
                continue;
            }
            let our_awardees: BTreeSet<&str> = outcome
                .awards
                .iter()
                .filter(|a| a.badge_id == ours_rule.rule.badge_id)
                .map(|a| a.user.as_str())
                .collect();
            let their_awardees: BTreeSet<&str> = their["awardees"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_str().unwrap())
                .collect();
            let our_error = outcome.errors.iter().find(|(n, _)| n == name);
            let their_error = their["error"].as_str();
            for kwargs in their["filters"].as_array().unwrap() {
                their_filters.insert(their_filter_key(kwargs));
            }
            if our_triggered != their_triggered
                || our_awardees != their_awardees
                || our_error.is_some() != their_error.is_some()
            {
                mismatches.push(format!(
                    "message {m} ({}) rule {name}: ours triggered={our_triggered} awarded={our_awardees:?} error={our_error:?}; fedbadges triggered={their_triggered} awarded={their_awardees:?} error={their_error:?}",
                    msg["topic"]
                ));
            }
            *compared
                .entry(if their_triggered {
                    "triggered"
                } else {
                    "not triggered"
                })
                .or_default() += 1;
            if !their_awardees.is_empty() {
                *compared.entry("awarded").or_default() += 1;
            }
            if their_error.is_some() {
                *compared.entry("failed").or_default() += 1;
            }
        }
        // Our history is asked once per distinct filter (the awarder remembers
        // counts within a message); theirs once per rule. Where a README-form
        // rule triggered here, ours asked for its filter too.
        let same = if readme_form_here {
            their_filters.is_subset(&our_filters)
        } else {
            our_filters == their_filters
        };
        if !same {
            mismatches.push(format!(
                "message {m} ({}): filters ours {our_filters:?} fedbadges {their_filters:?}",
                msg["topic"]
            ));
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} differences:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    eprintln!(
        "{} rules x {} messages compared: {compared:?}; README form triggered {readme_form_triggered} times here, never in 1.x",
        rules.len(),
        messages.len()
    );
    // The comparison saw each kind of outcome.
    for kind in ["triggered", "not triggered", "awarded", "failed"] {
        assert!(
            compared.get(kind).copied().unwrap_or(0) > 0,
            "no {kind} decision: {compared:?}"
        );
    }
    assert!(readme_form_triggered > 0);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path.extension().is_some_and(|e| e == "yml") {
            out.push(path);
        }
    }
    out
}

/// The `name:` of a rule file.
fn serde_norway_name(text: &str) -> String {
    text.lines()
        .find_map(|l| l.strip_prefix("name: "))
        .unwrap()
        .trim()
        .to_string()
}
