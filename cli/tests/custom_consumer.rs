//! `examples/custom-consumer` is a crate that works outside this repository:
//! copied to a temp directory, it builds there against this checkout (a path
//! dependency, offline), logs, serves its route and publishes.

use std::io::Read;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use fedhub_testkit::*;

const STEP: Duration = Duration::from_secs(30);

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let name = entry.file_name();
        if name == "target" {
            continue;
        }
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &to.join(&name));
        } else {
            std::fs::copy(entry.path(), to.join(&name)).unwrap();
        }
    }
}

#[test]
fn the_example_consumer_builds_and_runs_outside_the_repository() {
    let root = workspace_root();
    let dir = tempfile::tempdir().unwrap();
    let crate_dir = dir.path().join("wordcount");
    copy_dir(&root.join("examples/custom-consumer"), &crate_dir);
    // Nothing inherited from the workspace; only the dependency's path changes.
    let manifest = std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap();
    assert!(
        !manifest.contains(".workspace"),
        "the example inherits from fedhub's workspace:\n{manifest}"
    );
    let dependency = "fedhub = { path = \"../..\" }";
    assert!(manifest.contains(dependency), "{manifest}");
    let manifest = manifest.replace(
        dependency,
        &format!("fedhub = {{ path = {:?} }}", root.display().to_string()),
    );
    std::fs::write(crate_dir.join("Cargo.toml"), manifest).unwrap();
    // The same versions as this checkout, so it builds offline.
    std::fs::copy(root.join("Cargo.lock"), crate_dir.join("Cargo.lock")).unwrap();

    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let target = root.join("target/example-copy");
    let output = Command::new("nice")
        .args(["-n", "15"])
        .arg(&cargo)
        .args(["build", "--offline", "--quiet"])
        .current_dir(&crate_dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "building the copied example failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let binary = target.join("debug/fedhub-example-wordcount");
    assert!(binary.is_file(), "{}", binary.display());

    // Run it: the README's minimum for a consumer that publishes.
    let http: std::net::SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let inbound = format!("tcp://127.0.0.1:{}", free_port());
    let published = format!("tcp://127.0.0.1:{}", free_port());
    let config = dir.path().join("fedhub.toml");
    std::fs::write(
        &config,
        format!(
            "[bus]\ninbound = \"{inbound}\"\n[http]\nlisten = \"{http}\"\n\
             [publish]\nbind = [\"{published}\"]\n\
             [consumers.WordCount]\nannounce_every = 1\n"
        ),
    )
    .unwrap();
    let mut hub = Command::new(&binary)
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let ready = wait_until(STEP, || {
        std::net::TcpStream::connect(http).is_ok() && http_get(http, "/health/readyz").0 == 200
    });
    if !ready {
        let _ = hub.kill();
        panic!("the example hub never became ready");
    }
    let sent = Command::new(fedhub_binary())
        .args(["publish", "--endpoint", &inbound, "--topic", "logger.log"])
        .args(["--json", r#"{"log": "hello big world"}"#])
        .output()
        .unwrap();
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let counted = wait_until(STEP, || {
        http_get(http, "/wordcount").1 == r#"{"org.fedoraproject.dev.logger.log":3}"#
    });
    let (_, state) = http_get(http, "/state");
    let _ = hub.kill();
    let _ = hub.wait();
    let mut stderr = String::new();
    hub.stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    assert!(counted, "{:?}\n{stderr}", http_get(http, "/wordcount"));
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    let consumer = &state["consumers"][0];
    assert_eq!(consumer["name"], "WordCount");
    assert_eq!(
        consumer["exceptions_total"], 0,
        "publishing worked: {state}"
    );
    assert_eq!(state["published_total"], 1, "{state}");
    // fedhub::init_logging(): the hub's own log lines, and the start hook.
    assert!(stderr.contains("hub running"), "{stderr}");
    assert!(stderr.contains("wordcount: started"), "{stderr}");
}
