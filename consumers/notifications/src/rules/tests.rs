use serde_json::json;

use super::*;
use crate::model::default_filters;
use crate::ownership::{FileSource, OwnershipFile};

fn ownership() -> Ownership {
    let data: OwnershipFile = serde_json::from_value(json!({
        "packages": {
            "kernel": {"owner": ["ralph"], "watch": ["alice"]},
            "python-requests": {"commit": ["group::python-sig"]}
        },
        "groups": {"python-sig": ["bob", "carol"], "packager": ["ralph", "bob"]}
    }))
    .unwrap();
    Ownership::new(Arc::new(FileSource::from_data(data)))
}

fn build(owner: &str, name: &str, new: i64, instance: &str) -> Value {
    json!({"msg": {"owner": owner, "name": name, "version": "1", "release": "1.fc41", "new": new, "build_id": 7, "instance": instance}})
}

const BUILD: &str = "org.fedoraproject.prod.buildsys.build.state.change";

fn eval(code_path: &str, args: Value, topic: &str, body: &Value) -> bool {
    let rule = RuleLibrary::standard().compile(code_path, &args).unwrap();
    rule.evaluate(
        &MessageFacts::new(topic, body.as_object().unwrap()),
        &ownership(),
    )
    .unwrap()
}

#[test]
fn every_default_rule_exists_and_compiles() {
    let library = RuleLibrary::standard();
    assert!(library.len() > 300, "{} rules", library.len());
    for filter in default_filters("ralph") {
        for rule in &filter.rules {
            library
                .compile(&rule.code_path, &rule.arguments)
                .unwrap_or_else(|e| panic!("{}: {e}", filter.name));
        }
    }
}

#[test]
fn data_rules_check_topic_category_and_fields() {
    let started = build("ralph", "kernel", 0, "primary");
    let done = build("ralph", "kernel", 1, "primary");
    assert!(eval(
        "fmn.rules:koji_build_started",
        Value::Null,
        BUILD,
        &started
    ));
    assert!(!eval(
        "fmn.rules:koji_build_started",
        Value::Null,
        BUILD,
        &done
    ));
    assert!(eval(
        "fmn.rules:koji_build_completed",
        Value::Null,
        BUILD,
        &done
    ));
    assert!(eval("fmn.rules:koji_catchall", Value::Null, BUILD, &done));
    assert!(!eval("fmn.rules:bodhi_catchall", Value::Null, BUILD, &done));
    assert!(eval(
        "fmn.rules:bodhi_catchall",
        Value::Null,
        "org.fedoraproject.prod.bodhi.update.comment",
        &json!({"msg": {}})
    ));
}

#[test]
fn generic_rules_follow_fmn() {
    let body = build("ralph", "kernel", 1, "primary");
    assert!(eval(
        "fmn.rules:user_filter",
        json!({"fasnick": "ralph"}),
        BUILD,
        &body
    ));
    assert!(!eval(
        "fmn.rules:user_filter",
        json!({"fasnick": "kevin"}),
        BUILD,
        &body
    ));
    assert!(eval(
        "fmn.rules:not_user_filter",
        json!({"fasnick": "kevin, bob"}),
        BUILD,
        &body
    ));
    assert!(!eval(
        "fmn.rules:not_user_filter",
        json!({"fasnick": "kevin,ralph"}),
        BUILD,
        &body
    ));
    assert!(eval(
        "fmn.rules:package_filter",
        json!({"package": "kernel"}),
        BUILD,
        &body
    ));
    assert!(eval(
        "fmn.rules:package_regex_filter",
        json!({"pattern": "^ker"}),
        BUILD,
        &body
    ));
    assert!(eval(
        "fmn.rules:regex_filter",
        json!({"pattern": "fc41"}),
        BUILD,
        &body
    ));
    assert!(eval(
        "fmn.rules:koji_instance",
        json!({"instance": "ppc, primary"}),
        BUILD,
        &body
    ));
    assert!(!eval(
        "fmn.rules:koji_instance",
        json!({"instance": "ppc,s390,arm"}),
        BUILD,
        &body
    ));
    assert!(eval(
        "fmn.rules:fas_group_member_filter",
        json!({"group": "packager"}),
        BUILD,
        &body
    ));
    // Packages of a user, directly or through a group, by ACL.
    let kevin_kernel = build("kevin", "kernel", 1, "primary");
    assert!(eval(
        "fmn.rules:user_package_filter",
        json!({"fasnick": "ralph"}),
        BUILD,
        &kevin_kernel
    ));
    assert!(eval(
        "fmn.rules:user_package_commit_filter",
        json!({"fasnick": "ralph"}),
        BUILD,
        &kevin_kernel
    ));
    assert!(!eval(
        "fmn.rules:user_package_commit_filter",
        json!({"fasnick": "alice"}),
        BUILD,
        &kevin_kernel
    ));
    assert!(eval(
        "fmn.rules:user_package_watch_filter",
        json!({"fasnick": "alice"}),
        BUILD,
        &kevin_kernel
    ));
    let requests = build("kevin", "python-requests", 1, "primary");
    assert!(eval(
        "fmn.rules:user_package_filter",
        json!({"fasnick": "carol"}),
        BUILD,
        &requests
    ));
    assert!(!eval(
        "fmn.rules:user_package_filter",
        json!({"fasnick": "ralph"}),
        BUILD,
        &requests
    ));
}

#[test]
fn taskotron_rules() {
    let topic = "org.fedoraproject.prod.taskotron.result.new";
    let failed = json!({"msg": {"task": {"name": "dist.rpmdeplint"}, "result": {"outcome": "FAILED", "prev_outcome": "PASSED"}}});
    let passed = json!({"msg": {"task": {"name": "dist.rpmdeplint"}, "result": {"outcome": "PASSED", "prev_outcome": "PASSED"}}});
    assert!(eval(
        "fmn.rules:taskotron_release_critical_task",
        Value::Null,
        topic,
        &failed
    ));
    assert!(eval(
        "fmn.rules:taskotron_task_particular_or_changed_outcome",
        json!({"outcome": "FAILED"}),
        topic,
        &failed
    ));
    assert!(!eval(
        "fmn.rules:taskotron_task_particular_or_changed_outcome",
        json!({"outcome": "FAILED"}),
        topic,
        &passed
    ));
    assert!(eval(
        "fmn.rules:taskotron_task",
        json!({"task": "dist.*"}),
        topic,
        &passed
    ));
}

#[test]
fn bad_rules_are_refused_naming_the_input() {
    let library = RuleLibrary::standard();
    let e = library
        .compile("fmn.rules:no_such_rule", &Value::Null)
        .unwrap_err();
    assert!(
        e.to_string()
            .contains("unknown rule \"fmn.rules:no_such_rule\""),
        "{e}"
    );
    let e = library
        .compile("fmn.rules:user_filter", &json!({"nick": "ralph"}))
        .unwrap_err();
    assert!(
        e.to_string().contains("unknown argument \"nick\"")
            && e.to_string().contains("\"fasnick\""),
        "{e}"
    );
    let e = library
        .compile("fmn.rules:user_filter", &json!({}))
        .unwrap_err();
    assert!(e.to_string().contains("\"fasnick\" is missing"), "{e}");
    let e = library
        .compile("fmn.rules:regex_filter", &json!({"pattern": "(unclosed"}))
        .unwrap_err();
    assert!(
        e.to_string().contains("not a valid regular expression"),
        "{e}"
    );
    let e = library
        .compile("fmn.rules:user_filter", &json!(["ralph"]))
        .unwrap_err();
    assert!(e.to_string().contains("expected a JSON object"), "{e}");
    let e = library
        .compile("fmn.rules:user_filter", &json!({"fasnick": 3}))
        .unwrap_err();
    assert!(e.to_string().contains("expected a string"), "{e}");
}

#[test]
fn anchors_prefer_the_most_selective_positive_rule() {
    let library = RuleLibrary::standard();
    let user = library
        .compile("fmn.rules:user_filter", &json!({"fasnick": "ralph"}))
        .unwrap();
    let started = library
        .compile("fmn.rules:koji_build_started", &Value::Null)
        .unwrap();
    let bodhi = library
        .compile("fmn.rules:bodhi_catchall", &Value::Null)
        .unwrap();
    assert_eq!(user.anchor(), Some(Anchor::User("ralph".into())));
    assert_eq!(started.anchor(), Some(Anchor::LastSegment("change".into())));
    assert_eq!(bodhi.anchor(), Some(Anchor::Category("bodhi".into())));
    assert_eq!(
        Anchor::best([started.anchor().unwrap(), user.anchor().unwrap()]),
        Some(Anchor::User("ralph".into()))
    );
}

#[test]
fn globs() {
    assert!(glob_match("dist.*", "dist.abicheck"));
    assert!(glob_match("d?st.*", "dist.x"));
    assert!(!glob_match("dist.*", "rpmlint"));
}
