//! `fedhub run --demo -c examples/badges/demo.toml`: the demo traffic earns
//! badges from `examples/badges/rules` within a minute, as the README says.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fedhub_testkit::{free_port, http_get, workspace_root};
use serde_json::Value;

#[test]
fn demo_traffic_earns_the_example_badges_within_a_minute() {
    let dir = tempfile::tempdir().unwrap();
    let root = workspace_root();
    let (inbound, http) = (free_port(), free_port());
    let config = std::fs::read_to_string(root.join("examples/badges/demo.toml"))
        .unwrap()
        .replace("127.0.0.1:9941", &format!("127.0.0.1:{inbound}"))
        .replace("127.0.0.1:8940", &format!("127.0.0.1:{http}"))
        .replace(
            "\"examples/badges/rules\"",
            &format!("{:?}", root.join("examples/badges/rules")),
        );
    std::fs::write(dir.path().join("demo.toml"), config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fedhub"))
        .args(["run", "--demo", "-c", "demo.toml"])
        .current_dir(dir.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{http}").parse().unwrap();
    let began = Instant::now();
    let mut board = Value::Null;
    while began.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(500));
        if std::net::TcpStream::connect(addr).is_err() {
            continue;
        }
        let (status, body) = http_get(addr, "/badges/leaderboard");
        if status == 200 {
            board = serde_json::from_str(&body).unwrap();
            if board["leaderboard"]
                .as_array()
                .is_some_and(|b| !b.is_empty())
            {
                break;
            }
        }
    }
    let (_, rules) = http_get(addr, "/badges/rules");
    // SIGTERM: the hub stops within its grace.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = child.wait().unwrap();
    let rules: Value = serde_json::from_str(&rules).unwrap();
    assert!(
        board["leaderboard"]
            .as_array()
            .is_some_and(|b| !b.is_empty()),
        "no award within a minute: {board} {rules}"
    );
    assert_eq!(rules["rules"].as_array().unwrap().len(), 10, "{rules}");
    assert_eq!(rules["load_errors"], serde_json::json!([]), "{rules}");
    assert_eq!(rules["awarder"]["rule_errors_total"], 0, "{rules}");
    assert!(status.success(), "{status:?}");
}
