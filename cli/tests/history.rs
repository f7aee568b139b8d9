//! `fedhub history import | query | user` as users run them, on a real SQLite file.

use std::path::Path;
use std::process::{Command, Output};

use serde_json::{json, Value};

const T0: f64 = 1_700_000_000.0;

fn fedhub() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fedhub"));
    command.env("RUST_LOG", "warn");
    command
}

fn run(args: &[&str], database: &Path) -> Output {
    fedhub()
        .args(["history", "--database"])
        .arg(database)
        .args(args)
        .output()
        .unwrap()
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Build messages by `owner` for `package`, one a minute from T0, as JSON lines
/// in the three shapes the importer reads (body, envelope, datagrepper response).
fn lines() -> (Vec<String>, Vec<(String, String, f64)>) {
    let owners = ["ralph", "pingou", "ralph", "kevin", "ralph", "pingou"];
    let mut out = Vec::new();
    let mut sent = Vec::new();
    for (k, owner) in owners.iter().enumerate() {
        let msg_id = format!("2023-00000000-0000-4000-8000-{k:012}");
        let ts = T0 + 60.0 * k as f64;
        let body = json!({
            "topic": "org.fedoraproject.prod.buildsys.build.state.change",
            "msg_id": msg_id,
            "timestamp": ts,
            "i": k,
            "username": "apache",
            "msg": {"owner": owner, "name": format!("pkg{k}"), "version": "1", "release": "1.fc40",
                    "new": 1, "build_id": k, "instance": "primary"},
        });
        out.push(match k % 3 {
            0 => body.to_string(),
            1 => json!({"topic": body["topic"], "body": body}).to_string(),
            _ => json!({"raw_messages": [body]}).to_string(),
        });
        sent.push((msg_id, owner.to_string(), ts));
    }
    (out, sent)
}

fn import(dir: &Path) -> (std::path::PathBuf, Vec<(String, String, f64)>) {
    let (mut input, sent) = lines();
    // A duplicate and a bad line.
    input.push(input[0].clone());
    input.push("{not json".into());
    let file = dir.join("messages.jsonl");
    std::fs::write(&file, input.join("\n") + "\n").unwrap();
    let database = dir.join("history.sqlite");
    let output = run(&["import", file.to_str().unwrap()], &database);
    let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
    // Some lines were bad: exit 1, the good ones are stored.
    assert_eq!(output.status.code(), Some(1), "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!(
            "imported {} messages into {} (1 duplicates skipped, 1 bad lines)",
            sent.len(),
            database.display()
        )),
        "{stdout}"
    );
    assert!(stderr.contains("100%"), "progress bar: {stderr}");
    assert!(
        stderr.contains(&format!("line {}: not valid JSON", sent.len() + 2)),
        "{stderr}"
    );
    (database, sent)
}

#[test]
fn import_then_query_as_json_lines_and_as_a_raw_response() {
    let dir = tempfile::tempdir().unwrap();
    let (database, sent) = import(dir.path());

    let output = run(&["query", "--user", "ralph", "--order", "asc"], &database);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let got: Vec<String> = text(&output.stdout)
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["msg_id"]
                .as_str()
                .unwrap()
                .to_string()
        })
        .collect();
    let expected: Vec<String> = sent
        .iter()
        .filter(|(_, owner, _)| owner == "ralph")
        .map(|(id, _, _)| id.clone())
        .collect();
    assert_eq!(got, expected);

    let start = T0 + 60.0;
    let end = T0 + 240.0;
    let output = run(
        &[
            "query",
            "--category",
            "buildsys",
            "--not-user",
            "pingou",
            "--start",
            &start.to_string(),
            "--end",
            &end.to_string(),
            "--rows-per-page",
            "2",
            "--meta",
            "subtitle",
            "--raw",
        ],
        &database,
    );
    assert!(output.status.success(), "{}", text(&output.stderr));
    let response: Value = serde_json::from_str(text(&output.stdout).trim()).unwrap();
    let matching: Vec<&(String, String, f64)> = sent
        .iter()
        .filter(|(_, owner, ts)| owner != "pingou" && *ts >= start && *ts <= end)
        .collect();
    assert_eq!(response["total"], json!(matching.len()));
    assert_eq!(response["pages"], json!(matching.len().div_ceil(2)));
    assert_eq!(response["count"], json!(2));
    assert_eq!(response["arguments"]["not_users"], json!(["pingou"]));
    let newest = matching.last().unwrap();
    assert_eq!(response["raw_messages"][0]["msg_id"], json!(newest.0));
    let subtitle = response["raw_messages"][0]["meta"]["subtitle"]
        .as_str()
        .unwrap();
    assert!(
        subtitle.starts_with(&format!("{}'s pkg", newest.1)),
        "{subtitle}"
    );
}

#[test]
fn user_prints_one_line_per_message_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let (database, sent) = import(dir.path());
    let output = run(&["user", "ralph", "--limit", "2"], &database);
    assert!(output.status.success(), "{}", text(&output.stderr));
    let stdout = text(&output.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    let mut ralph: Vec<&(String, String, f64)> = sent
        .iter()
        .filter(|(_, owner, _)| owner == "ralph")
        .collect();
    ralph.reverse();
    assert_eq!(lines.len(), 2, "{stdout}");
    for (line, (_, _, ts)) in lines.iter().zip(ralph) {
        let time = chrono::DateTime::from_timestamp(*ts as i64, 0)
            .unwrap()
            .format("%Y-%m-%dT%H:%M:%SZ")
            .to_string();
        let k = ((ts - T0) / 60.0) as usize;
        assert_eq!(
            *line,
            format!(
                "{time} org.fedoraproject.prod.buildsys.build.state.change ralph's pkg{k}-1-1.fc40 completed"
            )
        );
    }
}

#[test]
fn bad_arguments_are_refused_naming_the_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (database, _) = import(dir.path());
    let cases: [(&[&str], &str); 6] = [
        (&["query", "--rows-per-page", "10000"], "--rows-per-page"),
        (&["query", "--page=-1"], "--page"),
        (&["query", "--start", "yesterday"], "--start"),
        (&["query", "--user", "x' OR '1'='1"], "--user"),
        (&["user", "ralph; DROP TABLE messages"], "bad user name"),
        (&["user", "ralph", "--limit", "0"], "--limit"),
    ];
    for (args, needle) in cases {
        let output = run(args, &database);
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(stderr.contains("expected"), "{args:?}: {stderr}");
    }
    // Nothing was changed by the SQL-looking values.
    let output = run(&["query", "--rows-per-page", "100"], &database);
    assert_eq!(text(&output.stdout).lines().count(), 6);

    let output = run(&["user", "ralph"], &dir.path().join("missing.sqlite"));
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("missing.sqlite does not exist"));
}

#[test]
fn the_database_comes_from_the_nommer_section_and_run_knows_nommer() {
    let dir = tempfile::tempdir().unwrap();
    let (database, sent) = import(dir.path());
    let config = dir.path().join("fedhub.toml");
    std::fs::write(
        &config,
        format!(
            "[consumers.Nommer]\nenabled = true\ndatabase = \"{}\"\n",
            database.display()
        ),
    )
    .unwrap();
    let output = fedhub()
        .args(["history", "-c"])
        .arg(&config)
        .args(["query", "--rows-per-page", "100"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert_eq!(text(&output.stdout).lines().count(), sent.len());

    let output = fedhub()
        .args(["run", "--check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));
    assert!(
        text(&output.stdout).contains("consumers enabled: Nommer"),
        "{}",
        text(&output.stdout)
    );

    // The documented example's [consumers.Nommer] section is valid as written.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fedhub.toml");
    let output = fedhub()
        .args(["history", "-c"])
        .arg(&example)
        .arg("--database")
        .arg(&database)
        .args(["query", "--rows-per-page", "1"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{}", text(&output.stderr));

    std::fs::write(&config, "[consumers.Nommer]\nbatch_messages = 0\n").unwrap();
    let output = fedhub()
        .args(["history", "-c"])
        .arg(&config)
        .args(["query"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(text(&output.stderr).contains("batch_messages"));
}

#[test]
fn a_database_that_cannot_be_opened_stops_the_hub_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("fedhub.toml");
    let database = dir.path().join("no-such-directory/history.sqlite");
    std::fs::write(
        &config,
        format!(
            "[consumers.Nommer]\nenabled = true\ndatabase = \"{}\"\n",
            database.display()
        ),
    )
    .unwrap();
    let output = fedhub()
        .args(["run", "--check", "-c"])
        .arg(&config)
        .output()
        .unwrap();
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("[consumers.Nommer] database") && stderr.contains("no-such-directory"),
        "{stderr}"
    );
    let output = run(&["import", "-"], &database);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        text(&output.stderr).contains("cannot open the history database"),
        "{}",
        text(&output.stderr)
    );
}
