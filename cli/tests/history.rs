//! `fedhub history import | query | user` as users run them, on a real SQLite file;
//! and `fedhub run` processes sharing one PostgreSQL server (the testkit's throwaway
//! cluster): several hubs, one database, and the server failing under a running hub.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

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
fn query_and_user_print_no_log_lines() {
    let dir = tempfile::tempdir().unwrap();
    let (database, _) = import(dir.path());
    for args in [&["query", "--user", "ralph"][..], &["user", "ralph"][..]] {
        // As users run them: no RUST_LOG.
        let output = Command::new(env!("CARGO_BIN_EXE_fedhub"))
            .env_remove("RUST_LOG")
            .args(["history", "--database"])
            .arg(&database)
            .args(args)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            text(&output.stderr)
        );
        assert!(!text(&output.stdout).is_empty(), "{args:?}");
        assert_eq!(text(&output.stderr), "", "{args:?}: stderr is for problems");
    }
}

/// The rows a terminal shows of `typescript` (what `script` recorded): every
/// run of text between line starts and clears, escape sequences removed.
fn terminal_segments(typescript: &str) -> Vec<String> {
    let mut segments = vec![String::new()];
    let mut chars = typescript.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => {
                // CSI: ESC [ parameters final-byte.
                if chars.peek() == Some(&'[') {
                    chars.next();
                    for c in chars.by_ref() {
                        if c.is_ascii_alphabetic() {
                            break;
                        }
                    }
                }
                segments.push(String::new());
            }
            '\r' | '\n' => segments.push(String::new()),
            c => segments.last_mut().unwrap().push(c),
        }
    }
    segments
}

#[test]
fn the_import_progress_bar_fits_one_terminal_row_and_no_log_line_breaks_it() {
    let script = fedhub_testkit::find_program(
        "script",
        &["/usr/bin/script"],
        "apt-get install bsdutils (util-linux's script)",
    );
    let dir = tempfile::tempdir().unwrap();
    let (mut input, _) = lines();
    // Enough lines for several redraws.
    for k in 0..20_000 {
        input.push(
            json!({"topic": "org.fedoraproject.prod.logger.log", "msg": {"log": k},
                   "msg_id": format!("2023-00000000-0000-4000-9000-{k:012}"),
                   "timestamp": T0 + k as f64, "i": 1, "username": "u"})
            .to_string(),
        );
    }
    let file = dir.path().join("many.jsonl");
    std::fs::write(&file, input.join("\n") + "\n").unwrap();
    let database = dir.path().join("history.sqlite");
    let command = format!(
        "stty cols 80 rows 24; exec {} history --database {} import {}",
        env!("CARGO_BIN_EXE_fedhub"),
        database.display(),
        file.display()
    );
    let output = Command::new(script)
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let typescript = text(&output.stdout);
    assert!(output.status.success(), "{typescript}");
    assert!(typescript.contains("100%"), "a bar was drawn: {typescript}");
    assert!(!typescript.contains("INFO"), "{typescript}");
    // The summary on stdout is plain text after the bar's full row (a
    // terminal wraps it, harmlessly): only the bar's rows are measured.
    for segment in terminal_segments(&typescript) {
        let bar = segment.split("imported ").next().unwrap_or_default();
        assert!(
            bar.trim_end().chars().count() <= 80,
            "a row wider than the terminal wraps, and its redraw leaves a copy: {segment:?}"
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

// ------------------------------------------------- several hubs, one PostgreSQL

/// A fedmsg publisher several hubs subscribe to: an XPUB in verbose mode, so
/// each hub's subscription is seen (not only the first).
struct Publisher {
    _context: zmq::Context,
    socket: zmq::Socket,
    endpoint: String,
}

impl Publisher {
    fn new() -> Publisher {
        let context = zmq::Context::new();
        let socket = context.socket(zmq::XPUB).unwrap();
        socket.set_xpub_verbose(true).unwrap();
        socket.set_sndhwm(0).unwrap();
        socket.bind("tcp://127.0.0.1:*").unwrap();
        let endpoint = socket.get_last_endpoint().unwrap().unwrap();
        Publisher {
            _context: context,
            socket,
            endpoint,
        }
    }

    /// Waits for `n` subscriptions.
    fn wait_subscribers(&self, n: usize) {
        self.socket.set_rcvtimeo(20_000).unwrap();
        for _ in 0..n {
            let frame = self
                .socket
                .recv_bytes(0)
                .expect("a hub subscribed within 20 s");
            assert_eq!(frame.first(), Some(&1), "a subscription frame");
        }
    }

    /// Publishes messages `range` (msg_ids `2026-…-<k>`, a second apart).
    fn publish(&self, range: std::ops::Range<usize>) {
        for k in range {
            let topic = "org.fedoraproject.prod.buildsys.build.state.change";
            let owner = ["ralph", "pingou"][k % 2];
            let body = json!({
                "topic": topic,
                "msg_id": msg_id(k),
                "timestamp": T0 + k as f64,
                "i": k,
                "username": "apache",
                "msg": {"owner": owner, "name": format!("pkg{}", k % 7),
                        "version": "1", "release": "1.fc40", "new": 1, "build_id": k,
                        "instance": "primary"},
            })
            .to_string();
            self.socket
                .send_multipart([topic.as_bytes(), body.as_bytes()], 0)
                .unwrap();
        }
    }
}

fn msg_id(k: usize) -> String {
    format!("2026-00000000-0000-4000-8000-{k:012}")
}

/// A `fedhub run` process with the history store on `database`, subscribed to
/// `publisher`, its HTTP server on a free port. Killed when dropped.
struct Hub {
    child: std::process::Child,
    addr: std::net::SocketAddr,
    _dir: tempfile::TempDir,
}

impl Hub {
    fn config(publisher: &str, database: &str, port: u16) -> String {
        format!(
            "[bus]\ninbound = \"\"\n[bus.endpoints]\ntest = [\"{publisher}\"]\n\
             [http]\nlisten = \"127.0.0.1:{port}\"\n[hub]\nstatus_log_interval_secs = 0\n\
             [consumers.Nommer]\nenabled = true\ndatabase = \"{database}\"\n\
             batch_messages = 50\nbatch_latency_ms = 20\nconnect_timeout_ms = 2000\n"
        )
    }

    fn start(publisher: &str, database: &str) -> Hub {
        let dir = tempfile::tempdir().unwrap();
        let port = fedhub_testkit::free_port();
        let config = dir.path().join("fedhub.toml");
        std::fs::write(&config, Hub::config(publisher, database, port)).unwrap();
        let child = fedhub()
            .args(["run", "-c"])
            .arg(&config)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        assert!(
            fedhub_testkit::wait_until(Duration::from_secs(30), || {
                std::net::TcpStream::connect(addr).is_ok()
                    && fedhub_testkit::http_get(addr, "/health/readyz").0 == 200
            }),
            "hub on {addr} never became ready"
        );
        Hub {
            child,
            addr,
            _dir: dir,
        }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = fedhub_testkit::http_get(self.addr, path);
        (
            status,
            serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}")),
        )
    }

    /// A series' value in /metrics (0 when absent).
    fn metric(&self, series: &str) -> f64 {
        let (_, text) = fedhub_testkit::http_get(self.addr, "/metrics");
        text.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (name, value) = l.rsplit_once(' ')?;
                (name == series).then(|| value.parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }

    fn stored(&self) -> f64 {
        self.metric("fedhub_history_messages_stored_total")
    }

    fn duplicates(&self) -> f64 {
        self.metric("fedhub_history_duplicates_total")
    }

    /// Every msg_id `/datagrepper/raw` returns, all pages, oldest first.
    fn all_ids(&self) -> Vec<String> {
        let mut ids = Vec::new();
        for page in 1.. {
            let (status, r) = self.get(&format!(
                "/datagrepper/raw?order=asc&rows_per_page=100&page={page}"
            ));
            assert_eq!(status, 200, "{r}");
            let messages = r["raw_messages"].as_array().unwrap();
            ids.extend(
                messages
                    .iter()
                    .map(|m| m["msg_id"].as_str().unwrap().to_string()),
            );
            if page as u64 >= r["pages"].as_u64().unwrap() {
                break;
            }
        }
        ids
    }

    /// The Nommer's backlog in /state.
    fn backlog(&self) -> i64 {
        let (_, state) = self.get("/state");
        state["consumers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == json!("Nommer"))
            .map(|c| c["backlog"].as_i64().unwrap())
            .unwrap()
    }
}

impl Drop for Hub {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

const LONG: Duration = Duration::from_secs(60);

#[test]
fn two_hubs_on_one_postgres_database_store_each_message_once_and_both_answer_with_all() {
    let pg = fedhub_testkit::PgCluster::start();
    let publisher = Publisher::new();
    let a = Hub::start(&publisher.endpoint, &pg.url());
    let b = Hub::start(&publisher.endpoint, &pg.url());
    publisher.wait_subscribers(2);
    let n = 600;
    publisher.publish(0..n);
    assert!(
        fedhub_testkit::wait_until(LONG, || {
            a.stored() + a.duplicates() == n as f64 && b.stored() + b.duplicates() == n as f64
        }),
        "each hub handled every message: a {}+{}, b {}+{}",
        a.stored(),
        a.duplicates(),
        b.stored(),
        b.duplicates()
    );
    // Each message stored once: what one hub stored, the other counted as a duplicate.
    assert_eq!(a.stored() + b.stored(), n as f64);
    assert_eq!(a.duplicates() + b.duplicates(), n as f64);
    assert_eq!(
        pg.psql(
            "fedhub",
            "SELECT count(*), count(DISTINCT msg_id) FROM history_messages"
        ),
        format!("{n}|{n}")
    );
    let expected: Vec<String> = (0..n).map(msg_id).collect();
    for hub in [&a, &b] {
        assert_eq!(hub.all_ids(), expected, "{}", hub.addr);
        assert_eq!(
            hub.get("/datagrepper/messagecount").1,
            json!({"messagecount": n})
        );
        let (_, r) = hub.get("/datagrepper/raw?user=ralph&rows_per_page=1");
        assert_eq!(r["total"], json!(n / 2));
        let (status, m) = hub.get(&format!("/datagrepper/id?id={}", msg_id(n - 1)));
        assert_eq!(status, 200, "{m}");
        assert_eq!(hub.get("/health/readyz").0, 200);
    }
}

#[test]
fn an_unreachable_server_or_wrong_credentials_stop_fedhub_run_naming_the_url() {
    let pg = fedhub_testkit::PgCluster::start();
    let dir = tempfile::tempdir().unwrap();
    let closed = fedhub_testkit::free_port();
    let cases = [
        (
            format!("postgres://fedhub:s3cret-pw@127.0.0.1:{closed}/fedhub"),
            format!("postgres://fedhub:***@127.0.0.1:{closed}/fedhub"),
            "refused",
            "s3cret-pw",
        ),
        (
            pg.url()
                .replace(fedhub_testkit::PgCluster::PASSWORD, "wrong-pw"),
            format!("postgres://postgres:***@127.0.0.1:{}/fedhub", pg.port()),
            "password authentication failed",
            "wrong-pw",
        ),
    ];
    for (url, shown, cause, password) in cases {
        let config = dir.path().join("fedhub.toml");
        std::fs::write(
            &config,
            Hub::config("tcp://127.0.0.1:1", &url, fedhub_testkit::free_port()),
        )
        .unwrap();
        let output = fedhub().args(["run", "-c"]).arg(&config).output().unwrap();
        let stderr = text(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{url}: {stderr}");
        assert!(stderr.contains("[consumers.Nommer] database"), "{stderr}");
        assert!(stderr.contains(&shown), "names the URL: {stderr}");
        assert!(
            stderr.to_lowercase().contains(cause),
            "names the cause: {stderr}"
        );
        assert!(!stderr.contains(password), "password masked: {stderr}");
    }
}

#[test]
fn postgres_stopped_mid_burst_holds_the_backlog_fails_readiness_and_loses_nothing() {
    let mut pg = fedhub_testkit::PgCluster::start();
    let publisher = Publisher::new();
    let hub = Hub::start(&publisher.endpoint, &pg.url());
    publisher.wait_subscribers(1);
    publisher.publish(0..200);
    assert!(fedhub_testkit::wait_until(LONG, || hub.stored() == 200.0));

    pg.stop();
    publisher.publish(200..500);
    assert!(
        fedhub_testkit::wait_until(LONG, || hub.get("/health/readyz").0 == 503),
        "readyz fails while the server is down"
    );
    let (_, ready) = hub.get("/health/readyz");
    let problems = ready["problems"].to_string();
    assert!(
        problems.contains("Nommer") && problems.contains("unavailable"),
        "{ready}"
    );
    assert!(
        problems.contains(&format!("postgres://postgres:***@127.0.0.1:{}", pg.port())),
        "{ready}"
    );
    assert!(
        !problems.contains(fedhub_testkit::PgCluster::PASSWORD),
        "{ready}"
    );
    assert!(
        fedhub_testkit::wait_until(LONG, || hub.backlog() == 300),
        "/state reports every message not stored: {}",
        hub.backlog()
    );
    let (status, health) = hub.get("/datagrepper/health");
    assert_eq!(status, 503, "{health}");
    assert!(hub.metric("fedhub_history_write_errors_total") >= 1.0);
    publisher.publish(500..600);
    assert!(
        fedhub_testkit::wait_until(LONG, || hub.backlog() == 400),
        "the backlog grows: {}",
        hub.backlog()
    );

    pg.restart();
    assert!(
        fedhub_testkit::wait_until(LONG, || hub.stored() == 600.0),
        "stored {}",
        hub.stored()
    );
    assert!(fedhub_testkit::wait_until(LONG, || hub
        .get("/health/readyz")
        .0
        == 200));
    assert_eq!(hub.backlog(), 0);
    assert_eq!(
        pg.psql(
            "fedhub",
            "SELECT count(*), count(DISTINCT msg_id) FROM history_messages"
        ),
        "600|600",
        "every message stored exactly once"
    );
    let expected: Vec<String> = (0..600).map(msg_id).collect();
    assert_eq!(hub.all_ids(), expected);
    assert_eq!(hub.duplicates(), 0.0);
}

// ------------------------------------------------- import from datanommer

/// datanommer's PostgreSQL schema (datanommer.models, 2017-2021).
const DATANOMMER_SCHEMA: &str = r#"
CREATE TABLE messages (
    id SERIAL PRIMARY KEY,
    msg_id TEXT UNIQUE,
    i INTEGER NOT NULL DEFAULT 0,
    topic TEXT NOT NULL,
    timestamp TIMESTAMP WITHOUT TIME ZONE NOT NULL,
    certificate TEXT,
    signature TEXT,
    category TEXT NOT NULL,
    username TEXT,
    crypto TEXT,
    source_name TEXT DEFAULT 'datanommer',
    source_version TEXT DEFAULT '0.8.2',
    _msg TEXT NOT NULL,
    _headers TEXT
);
CREATE INDEX ix_messages_msg_id ON messages (msg_id);
CREATE INDEX ix_messages_timestamp ON messages (timestamp);
CREATE INDEX ix_messages_topic ON messages (topic);
CREATE INDEX ix_messages_category ON messages (category);
CREATE TABLE "user" (name TEXT PRIMARY KEY);
CREATE TABLE package (name TEXT PRIMARY KEY);
CREATE TABLE user_messages (username TEXT REFERENCES "user" (name), msg INTEGER REFERENCES messages (id));
CREATE TABLE package_messages (package TEXT REFERENCES package (name), msg INTEGER REFERENCES messages (id));
"#;

/// Adds datanommer messages `range` (as datanommer's `add()` stores them):
/// owner ralph, pingou or kevin, package pkg0 to pkg3, a minute apart; one in
/// ten predates msg_id (NULL).
fn datanommer_add(pg: &fedhub_testkit::PgCluster, range: std::ops::Range<usize>) {
    let (first, last) = (range.start, range.end - 1);
    let owner = "(ARRAY['ralph', 'pingou', 'kevin'])[k % 3 + 1]";
    pg.psql(
        "datanommer",
        &format!(
            "BEGIN;
             INSERT INTO \"user\" VALUES ('ralph'), ('pingou'), ('kevin') ON CONFLICT DO NOTHING;
             INSERT INTO package SELECT 'pkg' || g FROM generate_series(0, 3) g ON CONFLICT DO NOTHING;
             INSERT INTO messages (id, msg_id, i, topic, timestamp, category, username, _msg)
                 SELECT k + 1,
                        CASE WHEN k % 10 = 9 THEN NULL
                             ELSE '2026-00000000-0000-4000-8000-' || lpad(k::text, 12, '0') END,
                        k, 'org.fedoraproject.prod.buildsys.build.state.change',
                        to_timestamp({T0} + 60 * k) AT TIME ZONE 'UTC', 'buildsys', 'apache',
                        json_build_object('owner', {owner}, 'name', 'pkg' || (k % 4), 'new', 1)::text
                 FROM generate_series({first}, {last}) k;
             INSERT INTO user_messages SELECT {owner}, k + 1 FROM generate_series({first}, {last}) k;
             INSERT INTO package_messages SELECT 'pkg' || (k % 4), k + 1 FROM generate_series({first}, {last}) k;
             COMMIT;"
        ),
    );
}

#[test]
fn import_from_datanommer_copies_users_and_packages_resumes_and_is_idempotent() {
    let pg = fedhub_testkit::PgCluster::start();
    let source = pg.create_database("datanommer");
    pg.psql("datanommer", DATANOMMER_SCHEMA);
    datanommer_add(&pg, 0..2500);
    let dir = tempfile::tempdir().unwrap();
    let sqlite = dir.path().join("history.sqlite").display().to_string();
    let targets = [sqlite, pg.create_database("history")];
    let import = |target: &str| {
        let output = fedhub()
            .args(["history", "--database", target])
            .args(["import", "--from-datanommer", &source])
            .output()
            .unwrap();
        let (stdout, stderr) = (text(&output.stdout), text(&output.stderr));
        assert!(output.status.success(), "{stdout}{stderr}");
        assert!(
            !stdout.contains(fedhub_testkit::PgCluster::PASSWORD)
                && !stderr.contains(fedhub_testkit::PgCluster::PASSWORD),
            "password masked: {stdout}{stderr}"
        );
        (stdout, stderr)
    };
    let mut in_datanommer = 2500;
    for target in &targets {
        let (stdout, stderr) = import(target);
        assert!(
            stdout.contains(&format!(
                "imported {in_datanommer} messages from postgres://postgres:***@"
            )),
            "{stdout}"
        );
        assert!(
            stdout.contains(&format!("last datanommer id {in_datanommer}")),
            "{stdout}"
        );
        assert!(stderr.contains("100%"), "progress bar: {stderr}");

        // Idempotent: run again, nothing new.
        let (stdout, stderr) = import(target);
        assert!(stdout.contains("imported 0 messages"), "{stdout}");
        assert!(
            stderr.contains(&format!(
                "resuming after datanommer message id {in_datanommer}"
            )),
            "{stderr}"
        );

        // Resumable: only later messages are read.
        datanommer_add(&pg, in_datanommer..in_datanommer + 100);
        in_datanommer += 100;
        let (stdout, _) = import(target);
        assert!(
            stdout.contains("imported 100 messages") && stdout.contains("0 duplicates"),
            "{stdout}"
        );
    }
    // The first target catches up with what was added since.
    let (stdout, _) = import(&targets[0]);
    assert!(stdout.contains("imported 100 messages"), "{stdout}");
    assert_eq!(in_datanommer, 2700);
    // Without its checkpoint an import reads everything again and stores nothing twice.
    pg.psql("history", "DELETE FROM history_imports");
    let (stdout, _) = import(&targets[1]);
    assert!(
        stdout.contains("imported 0 messages") && stdout.contains("(2700 duplicates skipped"),
        "{stdout}"
    );
    for target in &targets {
        let query = |args: &[&str]| {
            let output = fedhub()
                .args(["history", "--database", target, "query", "--raw"])
                .args(args)
                .output()
                .unwrap();
            assert!(output.status.success(), "{}", text(&output.stderr));
            serde_json::from_str::<Value>(text(&output.stdout).trim()).unwrap()
        };
        let all = query(&["--rows-per-page", "1"]);
        assert_eq!(all["total"], json!(2700), "{target}");
        // The users and packages datanommer recorded.
        assert_eq!(query(&["--user", "ralph"])["total"], json!(900));
        assert_eq!(
            query(&["--package", "pkg1", "--user", "kevin"])["total"],
            json!(2700 / 12)
        );
        let newest = &all["raw_messages"][0];
        assert_eq!(newest["msg"]["owner"], json!("kevin"));
        assert_eq!(newest["timestamp"], json!(T0 + 60.0 * 2699.0));
        // A message without msg_id got a stable one.
        let output = fedhub()
            .args(["history", "--database", target, "query", "--raw"])
            .args(["--start", &(T0 + 60.0 * 9.0).to_string()])
            .args(["--end", &(T0 + 60.0 * 9.0).to_string()])
            .output()
            .unwrap();
        let one: Value = serde_json::from_str(text(&output.stdout).trim()).unwrap();
        assert_eq!(one["raw_messages"][0]["msg_id"], json!("datanommer-10"));
    }
}
