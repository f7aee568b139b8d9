//! Fedora's NRPE forms (`backlog`, `exceptions`, `consumers`,
//! `producer-last-ran`) run as a process against a live hub's moksha
//! monitoring socket: exact lines and exit codes, Fedora's socket paths, and
//! every kind of bad input.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use serde_json::json;

fn dir_arg(dir: &Path) -> String {
    dir.display().to_string()
}

#[test]
fn every_form_against_a_live_hub_on_fedoras_socket_path() {
    let dir = open_tempdir();
    let bus = Bus::new();
    let monitoring = ipc(dir.path(), "monitoring-fedmsg-hub.socket");
    let hub = start_hub(
        &bus,
        hub_config(&bus, &monitoring, null_settings(0.0, 0)),
        vec![],
    );
    let d = dir_arg(dir.path());
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--socket-dir", &d]);
        check(&all)
    };
    let cases: &[(&[&str], i32, &str)] = &[
        (
            &["backlog", "fedmsg-hub", "NullConsumer", "10", "50"],
            0,
            "OK: fedmsg consumer NullConsumer backlog value is 0",
        ),
        (
            &["backlog", "fedmsg-hub", "NullConsumer", "-1", "50"],
            1,
            "WARNING: fedmsg consumer NullConsumer backlog value is 0",
        ),
        (
            &["backlog", "fedmsg-hub", "NullConsumer", "-2", "-1"],
            2,
            "CRITICAL: fedmsg consumer NullConsumer backlog value is 0",
        ),
        (
            &["backlog", "fedmsg-hub", "Ghost", "10", "50"],
            3,
            "UNKNOWN: fedmsg consumer Ghost not found",
        ),
        (
            &["exceptions", "fedmsg-hub", "NullConsumer", "1", "10"],
            0,
            "OK: fedmsg consumer NullConsumer exceptions value is 0",
        ),
        (
            &["exceptions", "fedmsg-hub", "NullConsumer", "-1", "10"],
            1,
            "WARNING: fedmsg consumer NullConsumer exceptions value is 0",
        ),
        (
            &["exceptions", "fedmsg-hub", "NullConsumer", "-5", "-1"],
            2,
            "CRITICAL: fedmsg consumer NullConsumer exceptions value is 0",
        ),
        (
            &["exceptions", "fedmsg-hub", "Ghost", "1", "10"],
            3,
            "UNKNOWN: fedmsg consumers Ghost not found",
        ),
        (
            &[
                "consumers",
                "fedmsg-hub",
                "NullConsumer",
                "MonitoringProducer",
            ],
            0,
            "OK: fedmsg consumer(s) and producer(s) initialized",
        ),
        (
            &["consumers", "fedmsg-hub", "NullConsumer", "Ghost"],
            2,
            "ERROR: Ghost not found among installed plugins",
        ),
        (
            &["producer-last-ran", "fedmsg-hub", "Ghost", "90", "600"],
            3,
            "UNKNOWN: fedmsg producer Ghost not found",
        ),
    ];
    for (args, code, line) in cases {
        let run = run(args);
        assert_eq!(run.result(), (*code, *line), "{args:?}");
    }
    // The producer's age is a few tenths of a second: "just now (0 seconds ago)".
    for (warn, crit, code, state) in [
        ("90", "600", 0, "OK"),
        ("-1", "600", 1, "WARNING"),
        ("-2", "-1", 2, "CRITICAL"),
    ] {
        let run = run(&[
            "producer-last-ran",
            "fedmsg-hub",
            "MonitoringProducer",
            warn,
            crit,
        ]);
        let line = run.line();
        assert_eq!(run.code, code, "{line}");
        let prefix = format!("{state}: MonitoringProducer last ran just now (");
        assert!(
            line.starts_with(&prefix) && line.ends_with(" seconds ago)"),
            "{line}"
        );
    }
    drop(hub);
}

#[test]
fn producer_last_ran_reads_a_consumers_producers() {
    let dir = open_tempdir();
    let bus = Bus::new();
    let monitoring = ipc(dir.path(), "monitoring-fedmsg-hub.socket");
    let hub = start_hub(
        &bus,
        hub_config(&bus, &monitoring, null_settings(0.0, 0)),
        vec![
            fedhub_testkit::polling_consumer(
                "Digests",
                "DigestProducer",
                "fmn.producers",
                Duration::from_millis(100),
            ),
            // Runs once an hour: has not run yet.
            fedhub_testkit::polling_consumer(
                "Hourly",
                "HourlyProducer",
                "fmn.producers",
                Duration::from_secs(3600),
            ),
        ],
    );
    let d = dir_arg(dir.path());
    let run = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--socket-dir", &d]);
        check(&all)
    };
    let ran = |name: &str| {
        hub.stats()
            .producers()
            .iter()
            .any(|p| p.name() == name && p.last_ran().is_some())
    };
    assert!(wait_until(Duration::from_secs(10), || ran(
        "DigestProducer"
    )));
    let digests = run(&[
        "producer-last-ran",
        "fedmsg-hub",
        "DigestProducer",
        "90",
        "600",
    ]);
    let line = digests.line();
    assert_eq!(digests.code, 0, "{line}");
    assert!(
        line.starts_with("OK: DigestProducer last ran just now (")
            && line.ends_with(" seconds ago)"),
        "{line}"
    );
    assert_eq!(
        run(&[
            "producer-last-ran",
            "fedmsg-hub",
            "HourlyProducer",
            "90",
            "600"
        ])
        .result(),
        (
            3,
            "UNKNOWN: fedmsg producer HourlyProducer has not run yet (last_ran is null)"
        )
    );
    assert_eq!(
        run(&[
            "consumers",
            "fedmsg-hub",
            "Digests",
            "DigestProducer",
            "HourlyProducer",
            "MonitoringProducer"
        ])
        .result(),
        (0, "OK: fedmsg consumer(s) and producer(s) initialized")
    );
    drop(hub);
}

#[test]
fn a_real_backlog_and_exceptions_over_tcp() {
    let bus = Bus::new();
    let hub = start_hub(
        &bus,
        hub_config(&bus, "tcp://127.0.0.1:*", null_settings(30.0, 1)),
        vec![],
    );
    let socket = hub.monitoring_endpoint().unwrap().to_string();
    bus.burst("nagios", 200);
    let stats = hub.stats().clone();
    let consumer = stats.consumer("NullConsumer");
    assert!(
        wait_until(Duration::from_secs(10), || consumer.backlog() > 150),
        "the burst arrived"
    );
    let run = check(&[
        "backlog",
        "fedmsg-hub",
        "NullConsumer",
        "10",
        "50",
        "--socket",
        &socket,
    ]);
    let line = run.line();
    assert_eq!(run.code, 2, "{line}");
    let value: i64 = line
        .strip_prefix("CRITICAL: fedmsg consumer NullConsumer backlog value is ")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    assert!((51..=200).contains(&value), "{line}");
    // Every message fails: each 0.2 s window counts a few exceptions.
    let run = check(&[
        "exceptions",
        "fedmsg-hub",
        "NullConsumer",
        "0",
        "1000",
        "--socket",
        &socket,
    ]);
    let line = run.line();
    assert_eq!(run.code, 1, "{line}");
    let value: i64 = line
        .strip_prefix("WARNING: fedmsg consumer NullConsumer exceptions value is ")
        .unwrap_or_else(|| panic!("{line}"))
        .parse()
        .unwrap();
    assert!((1..=1000).contains(&value), "{line}");
    assert!(
        wait_until(Duration::from_secs(30), || consumer.backlog() == 0),
        "the backlog drained"
    );
    let run = check(&[
        "backlog",
        "fedmsg-hub",
        "NullConsumer",
        "10",
        "50",
        "--socket",
        &socket,
    ]);
    assert_eq!(
        run.result(),
        (0, "OK: fedmsg consumer NullConsumer backlog value is 0")
    );
    drop(hub);
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

#[test]
fn fallback_socket_names_and_documents_a_live_hub_never_sends() {
    let dir = open_tempdir();
    let d = dir_arg(dir.path());
    // Only the "-3" name exists, as after Fedora's Python 3 move.
    let document = json!({
        "consumers": [
            {"name": "FMNConsumer", "module": "fmn.consumer", "topic": "*", "initialized": true,
             "exceptions": 3, "jsonify": true, "backlog": 15001, "headcount_out": 0,
             "headcount_in": 0, "times": []},
            {"name": "Lazy", "module": "x", "topic": "*", "initialized": false,
             "exceptions": 0, "jsonify": true, "backlog": null, "headcount_out": 0,
             "headcount_in": 0, "times": []},
        ],
        "producers": [
            {"name": "DigestProducer", "module": "fmn.producers", "initialized": true,
             "exceptions": 0, "frequency": 60, "now": false, "last_ran": now() - 150.0},
            {"name": "Never", "module": "x", "initialized": true, "exceptions": 0,
             "frequency": 60, "now": false, "last_ran": null},
            {"name": "Broken", "module": "x", "initialized": false, "exceptions": 1,
             "frequency": 60, "now": false, "last_ran": 1.0},
        ],
    });
    let address = ipc(dir.path(), "monitoring-fedmsg-hub-3.socket");
    let _fake = FakeMonitoring::start(&address, document);
    let with_dir = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--socket-dir", &d]);
        check(&all)
    };
    assert_eq!(
        with_dir(&["backlog", "fedmsg-hub", "FMNConsumer", "15000", "20000"]).result(),
        (
            1,
            "WARNING: fedmsg consumer FMNConsumer backlog value is 15001"
        )
    );
    assert_eq!(
        with_dir(&["exceptions", "fedmsg-hub", "FMNConsumer", "1", "10"]).result(),
        (
            1,
            "WARNING: fedmsg consumer FMNConsumer exceptions value is 3"
        )
    );
    assert_eq!(
        with_dir(&["backlog", "fedmsg-hub", "Lazy", "10", "50"]).result(),
        (3, "ERROR: fedmsg consumer Lazy is not initialized")
    );
    // These two scripts only know the plain name.
    let plain = dir.path().join("monitoring-fedmsg-hub.socket");
    let missing = format!("UNKNOWN - {} does not exist", plain.display());
    assert_eq!(
        with_dir(&["consumers", "fedmsg-hub", "FMNConsumer"]).result(),
        (3, missing.as_str())
    );
    assert_eq!(
        with_dir(&[
            "producer-last-ran",
            "fedmsg-hub",
            "DigestProducer",
            "90",
            "600"
        ])
        .result(),
        (3, missing.as_str())
    );
    // Named explicitly, they read it.
    let explicit = |args: &[&str]| {
        let mut all = args.to_vec();
        all.extend(["--socket", &address]);
        check(&all)
    };
    assert_eq!(
        explicit(&["consumers", "fedmsg-hub", "FMNConsumer", "Lazy"]).result(),
        (2, "ERROR: fedmsg consumer Lazy is not initialized")
    );
    assert_eq!(
        explicit(&["consumers", "fedmsg-hub", "DigestProducer", "Broken"]).result(),
        (2, "ERROR: fedmsg producer Broken is not initialized")
    );
    let run = explicit(&[
        "producer-last-ran",
        "fedmsg-hub",
        "DigestProducer",
        "90",
        "600",
    ]);
    let line = run.line();
    assert_eq!(run.code, 1, "{line}");
    assert!(
        line.starts_with("WARNING: DigestProducer last ran 2 minutes ago (15"),
        "{line}"
    );
    assert!(line.ends_with(" seconds ago)"), "{line}");
    assert_eq!(
        explicit(&["producer-last-ran", "fedmsg-hub", "Never", "90", "600"]).result(),
        (
            3,
            "UNKNOWN: fedmsg producer Never has not run yet (last_ran is null)"
        )
    );
}

#[test]
fn missing_sockets_give_fedoras_lines() {
    let dir = open_tempdir();
    let d = dir_arg(dir.path());
    let plain = dir.path().join("monitoring-fedmsg-hub.socket");
    let missing = format!("UNKNOWN - {} does not exist", plain.display());
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["backlog", "fedmsg-hub", "C", "1", "2"],
            "UNKNOWN - socket file does not exists",
        ),
        (
            vec!["exceptions", "fedmsg-hub", "C", "1", "2"],
            "UNKNOWN - socket file does not exists",
        ),
        (vec!["consumers", "fedmsg-hub", "C"], missing.as_str()),
        (
            vec!["producer-last-ran", "fedmsg-hub", "P", "90", "600"],
            missing.as_str(),
        ),
        (
            vec!["consumers", "fedmsg-hub"],
            "UNKNOWN - empty list of fedmsg consumers and producers to check",
        ),
    ];
    for (mut args, line) in cases {
        args.extend(["--socket-dir", &d]);
        assert_eq!(check(&args).result(), (3, line), "{args:?}");
    }
    let gone = dir.path().join("gone.socket");
    let gone_address = format!("ipc://{}", gone.display());
    assert_eq!(
        check(&[
            "backlog",
            "fedmsg-hub",
            "C",
            "1",
            "2",
            "--socket",
            &gone_address
        ])
        .result(),
        (
            3,
            format!("UNKNOWN - {} does not exist", gone.display()).as_str()
        )
    );
}

#[test]
fn bad_input_is_unknown_with_a_clear_message() {
    let closed = format!("tcp://127.0.0.1:{}", closed_port());
    let cases: &[(&[&str], &str)] = &[
        (
            &["backlog", "fedmsg-hub", "C", "1", "2", "--socket", "garbage"],
            "UNKNOWN: invalid monitoring socket address 'garbage': expected tcp://HOST:PORT or ipc://PATH",
        ),
        (
            &["consumers", "fedmsg-hub", "C", "--socket", "tcp://nowhere"],
            "UNKNOWN: invalid monitoring socket address 'tcp://nowhere': expected tcp://HOST:PORT or ipc://PATH",
        ),
        (
            &["backlog", "fedmsg-hub", "C", "2:1", "5"],
            "UNKNOWN: invalid warn threshold '2:1': expected an integer",
        ),
        (
            &["exceptions", "fedmsg-hub", "C", "1", "abc"],
            "UNKNOWN: invalid crit threshold 'abc': expected an integer",
        ),
        (
            &["producer-last-ran", "fedmsg-hub", "P", "abc", "600"],
            "UNKNOWN: invalid warn_s threshold 'abc': expected a number of seconds",
        ),
        (
            &["backlog"],
            "UNKNOWN: missing <service>; usage: check_fedhub backlog <service> <Consumer> <warn> <crit> [--socket ADDR] [-t SECS]",
        ),
        (
            &["backlog", "fedmsg-hub", "C"],
            "UNKNOWN: missing <warn> <crit>; usage: check_fedhub backlog <service> <Consumer> <warn> <crit> [--socket ADDR] [-t SECS]",
        ),
        (
            &["producer-last-ran", "fedmsg-hub"],
            "UNKNOWN: missing <Producer> <warn_s> <crit_s>; usage: check_fedhub producer-last-ran <service> <Producer> <warn_s> <crit_s> [--socket ADDR] [-t SECS]",
        ),
        (
            &["backlog", "fedmsg-hub", "C", "1", "2", "-t", "never"],
            "UNKNOWN: invalid timeout 'never': expected a number of seconds between 0 and 86400",
        ),
    ];
    for (args, line) in cases {
        assert_eq!(check(args).result(), (3, *line), "{args:?}");
    }
    // Nothing listens: Fedora's timeout line, with the configured milliseconds.
    let run = check(&[
        "backlog",
        "fedmsg-hub",
        "C",
        "1",
        "2",
        "--socket",
        &closed,
        "-t",
        "0.5",
    ]);
    assert_eq!(
        run.result(),
        (3, "UNKNOWN - ZMQ timeout.  No message received in 500 ms")
    );
    assert!(run.elapsed < Duration::from_secs(5), "{:?}", run.elapsed);
}

#[test]
fn a_socket_the_caller_cannot_write_is_refused() {
    let dir = open_tempdir();
    let bus = Bus::new();
    let monitoring = ipc(dir.path(), "monitoring-fedmsg-hub.socket");
    let mut config = hub_config(&bus, &monitoring, null_settings(0.0, 0));
    config.monitoring.socket_mode = "550".into();
    let hub = start_hub(&bus, config, vec![]);
    let socket = dir.path().join("monitoring-fedmsg-hub.socket");
    let mut command = Command::new(CHECK);
    command.args([
        "consumers",
        "fedmsg-hub",
        "NullConsumer",
        "--socket-dir",
        &dir_arg(dir.path()),
    ]);
    // root may write anything: run as the unprivileged nagios user instead.
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        use std::os::unix::process::CommandExt;
        let (uid, gid) = nagios_ids();
        command.uid(uid).gid(gid);
    }
    let run = check_with(&mut command);
    assert_eq!(
        run.result(),
        (
            3,
            format!("UNKNOWN - cannot write to {}", socket.display()).as_str()
        )
    );
    drop(hub);
}

/// uid and gid of the `nagios` user (nagios4-core creates it).
fn nagios_ids() -> (u32, u32) {
    let name = std::ffi::CString::new("nagios").unwrap();
    // SAFETY: getpwnam gets a valid C string; the result is read before any other call.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    assert!(
        !entry.is_null(),
        "no nagios user: install nagios4-core (apt-get install nagios4-core monitoring-plugins-basic)"
    );
    // SAFETY: non-null pointer from getpwnam.
    unsafe { ((*entry).pw_uid, (*entry).pw_gid) }
}
