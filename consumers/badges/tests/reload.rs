//! Rules reload without a restart: on SIGHUP, and on a change in the rules
//! directory. A file that stops parsing keeps its old rules in force, and its
//! error shows in `/badges/rules`.

use std::path::Path;
use std::time::Duration;

use fedhub::{HubBuilder, RunningHub};
use fedhub_testkit::{http_get, section, wait_until, TestBus};
use serde_json::{json, Value};

fn rule(name: &str) -> String {
    format!(
        "name: {name}\ndescription: d\ncreator: c\ndiscussion: https://example.org/d\nimage_url: https://example.org/i.png\nissuer_id: fedora-project\ntrigger:\n  topic: buildsys.build.state.change\ncriteria:\n  datanommer:\n    filter:\n      topics: [\"%(topic)s\"]\n    operation: count\n    condition:\n      greater than: 0\nrecipient: \"%(msg.owner)s\"\n"
    )
}

fn start(dir: &Path, watch: bool) -> (RunningHub, TestBus) {
    let bus = TestBus::new();
    let mut config = fedhub_testkit::config(&bus);
    config.consumers.insert(
        "FedoraBadgesConsumer".into(),
        section(&[
            ("enabled", json!(true)),
            ("rules_directory", json!(dir.join("rules"))),
            ("database", json!(dir.join("badges.sqlite"))),
            ("history_database", json!(dir.join("history.sqlite"))),
            ("watch_rules", json!(watch)),
        ]),
    );
    let hub = HubBuilder::new(config)
        .consumer(fedhub_badges::factory())
        .start()
        .unwrap();
    (hub, bus)
}

fn rules(hub: &RunningHub) -> Value {
    let (status, body) = http_get(hub.http_addr().unwrap(), "/badges/rules");
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).unwrap()
}

fn names(doc: &Value) -> Vec<String> {
    let mut names: Vec<String> = doc["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn a_change_in_the_directory_reloads_and_a_broken_file_keeps_its_old_rule() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/a.yml"), rule("Alpha")).unwrap();
    let (hub, _bus) = start(dir.path(), true);
    assert_eq!(names(&rules(&hub)), vec!["Alpha"]);
    std::fs::write(dir.path().join("rules/b.yml"), rule("Beta")).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || names(&rules(&hub)).len() == 2),
        "a new file is picked up: {}",
        rules(&hub)
    );
    std::fs::write(
        dir.path().join("rules/a.yml"),
        "name: Alpha\ntrigger: [oops\n",
    )
    .unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || !rules(&hub)["load_errors"]
            .as_array()
            .unwrap()
            .is_empty()),
        "the broken file is reported: {}",
        rules(&hub)
    );
    let doc = rules(&hub);
    assert_eq!(
        names(&doc),
        vec!["Alpha", "Beta"],
        "Alpha's old rule stays: {doc}"
    );
    let error = &doc["load_errors"][0];
    assert!(error["file"].as_str().unwrap().ends_with("a.yml"), "{doc}");
    assert!(
        error["problem"]
            .as_str()
            .unwrap()
            .contains("not valid YAML"),
        "{doc}"
    );
    hub.shutdown();
}

#[test]
fn sighup_reloads_the_rules() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    std::fs::write(dir.path().join("rules/a.yml"), rule("Alpha")).unwrap();
    let (hub, _bus) = start(dir.path(), false);
    let before = rules(&hub)["generation"].as_u64().unwrap();
    std::fs::write(dir.path().join("rules/c.yml"), rule("Gamma")).unwrap();
    std::thread::sleep(Duration::from_millis(800));
    assert_eq!(
        names(&rules(&hub)),
        vec!["Alpha"],
        "no watch: nothing reloads by itself"
    );
    signal_hook::low_level::raise(signal_hook::consts::SIGHUP).unwrap();
    assert!(
        wait_until(Duration::from_secs(10), || names(&rules(&hub)).len() == 2),
        "SIGHUP reloads: {}",
        rules(&hub)
    );
    assert!(rules(&hub)["generation"].as_u64().unwrap() > before);
    hub.shutdown();
}
