//! The monitoring-plugins form (`-H`/`--url`, `-w`/`-c`, perfdata) run as a
//! process against a live hub's `/state`, and against servers that fail in
//! every way a hub can.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn states_lines_and_perfdata_from_a_live_hub() {
    let bus = Bus::new();
    let hub = start_hub(
        &bus,
        hub_config(&bus, "", null_settings(0.0, 0)),
        vec![second_consumer("Second")],
    );
    let h = http(&hub);
    let url = format!("http://{h}");
    let nope = format!("{url}/nope/");
    let cases: Vec<(Vec<&str>, i32, String)> = vec![
        (
            vec!["-H", &h, "-w", "30", "-c", "60", "-C", "NullConsumer"],
            0,
            "FEDHUB BACKLOG OK - NullConsumer backlog 0 | 'NullConsumer_backlog'=0;30;60;0;".into(),
        ),
        (
            vec!["-H", &h, "-w", "30", "-c", "60"],
            0,
            "FEDHUB BACKLOG OK - NullConsumer backlog 0, Second backlog 0 | 'NullConsumer_backlog'=0;30;60;0; 'Second_backlog'=0;30;60;0;".into(),
        ),
        (
            vec!["--url", &url, "-C", "Second", "-w", "~:-1", "-c", "60"],
            1,
            "FEDHUB BACKLOG WARNING - Second backlog 0 | 'Second_backlog'=0;~:-1;60;0;".into(),
        ),
        (
            vec!["-H", &h, "--critical=@0:0"],
            2,
            "FEDHUB BACKLOG CRITICAL - NullConsumer backlog 0 (CRITICAL), Second backlog 0 (CRITICAL) | 'NullConsumer_backlog'=0;;@0:0;0; 'Second_backlog'=0;;@0:0;0;".into(),
        ),
        (
            vec!["-H", &h, "-m", "utilization", "-w", "80", "-c", "90", "-C", "NullConsumer"],
            0,
            "FEDHUB UTILIZATION OK - NullConsumer utilization 0% | 'NullConsumer_utilization'=0%;80;90;0;100".into(),
        ),
        (
            vec!["-H", &h, "--metric", "dropped", "-c", "0", "-C", "Second"],
            0,
            "FEDHUB DROPPED OK - Second dropped 0 | 'Second_dropped'=0c;;0;0;".into(),
        ),
        (
            vec!["-H", &h, "-w", "1", "-c", "2", "-C", "Ghost"],
            3,
            "FEDHUB BACKLOG UNKNOWN - consumer 'Ghost' not found (the hub has: NullConsumer, Second)".into(),
        ),
        (
            vec!["-H", &h, "-w", "~:-1", "-C", "Ghost", "-C", "Second"],
            1,
            "FEDHUB BACKLOG WARNING - Second backlog 0 (WARNING), consumer 'Ghost' not found (the hub has: NullConsumer, Second) | 'Second_backlog'=0;~:-1;;0;".into(),
        ),
        (
            vec!["--url", &nope],
            3,
            format!("FEDHUB BACKLOG UNKNOWN - {url}/nope/state answered HTTP 404 (is this a fedhub?)"),
        ),
    ];
    for (args, code, line) in &cases {
        assert_eq!(check(args).result(), (*code, line.as_str()), "{args:?}");
    }
    drop(hub);
}

#[test]
fn a_backlog_rises_and_drains_and_exceptions_add_up() {
    let bus = Bus::new();
    let hub = start_hub(&bus, hub_config(&bus, "", null_settings(30.0, 1)), vec![]);
    let h = http(&hub);
    let consumer = hub.stats().consumer("NullConsumer");
    bus.burst("nagios", 200);
    assert!(
        wait_until(Duration::from_secs(10), || consumer.backlog() > 150),
        "the burst arrived"
    );
    let run = check(&["-H", &h, "-w", "10", "-c", "50"]);
    let line = run.line();
    assert_eq!(run.code, 2, "{line}");
    let value: i64 = line
        .strip_prefix("FEDHUB BACKLOG CRITICAL - NullConsumer backlog ")
        .and_then(|rest| rest.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{line}"));
    assert!((51..=200).contains(&value), "{line}");
    assert!(
        line.ends_with(&format!(" | 'NullConsumer_backlog'={value};10;50;0;")),
        "{line}"
    );
    assert!(
        wait_until(Duration::from_secs(30), || consumer.handled() == 200),
        "the backlog drained"
    );
    assert_eq!(
        check(&["-H", &h, "-w", "10", "-c", "50"]).result(),
        (
            0,
            "FEDHUB BACKLOG OK - NullConsumer backlog 0 | 'NullConsumer_backlog'=0;10;50;0;"
        )
    );
    // Every message failed once: 200 exceptions since start.
    assert_eq!(
        check(&["-H", &h, "-m", "exceptions", "-w", "100", "-c", "300"]).result(),
        (
            1,
            "FEDHUB EXCEPTIONS WARNING - NullConsumer exceptions 200 | 'NullConsumer_exceptions'=200c;100;300;0;"
        )
    );
    drop(hub);
}

#[test]
fn unreachable_slow_and_strange_hubs_are_unknown() {
    let port = closed_port();
    let run = check(&["-H", &format!("127.0.0.1:{port}"), "-w", "1", "-c", "2"]);
    let line = run.line();
    assert_eq!(run.code, 3, "{line}");
    assert!(
        line.starts_with(&format!(
            "FEDHUB BACKLOG UNKNOWN - cannot connect to the hub at 127.0.0.1:{port}: Connection refused"
        )),
        "{line}"
    );

    let silent = FakeServer::start(None);
    let run = check(&["-H", &silent.addr, "-t", "1"]);
    assert_eq!(
        run.result(),
        (
            3,
            format!(
                "FEDHUB BACKLOG UNKNOWN - no answer from http://{}/state within 1 s (timeout)",
                silent.addr
            )
            .as_str()
        )
    );
    assert!(run.elapsed < Duration::from_secs(4), "{:?}", run.elapsed);
    let run = check(&["-H", &silent.addr, "-t", "0.5:CRITICAL"]);
    assert_eq!(
        run.result(),
        (
            2,
            format!(
                "FEDHUB BACKLOG CRITICAL - no answer from http://{}/state within 0.5 s (timeout)",
                silent.addr
            )
            .as_str()
        )
    );

    let garbage = FakeServer::start(Some(b"hello\r\n\r\n"));
    assert_eq!(
        check(&["-H", &garbage.addr]).result(),
        (
            3,
            format!(
                "FEDHUB BACKLOG UNKNOWN - bad HTTP response from http://{}/state: not an HTTP/1.x status line: \"hello\"",
                garbage.addr
            )
            .as_str()
        )
    );
    let not_json = FakeServer::start(Some(
        b"HTTP/1.0 200 OK\r\nContent-Type: text/html\r\n\r\n<html>hi</html>",
    ));
    let run = check(&["-H", &not_json.addr]);
    let line = run.line();
    assert_eq!(run.code, 3, "{line}");
    assert!(
        line.starts_with(&format!(
            "FEDHUB BACKLOG UNKNOWN - http://{}/state is not valid JSON: ",
            not_json.addr
        )),
        "{line}"
    );
    let not_fedhub = FakeServer::start(Some(
        b"HTTP/1.0 200 OK\r\nContent-Length: 12\r\n\r\n{\"up\": true}",
    ));
    assert_eq!(
        check(&["-H", &not_fedhub.addr]).result(),
        (
            3,
            format!(
                "FEDHUB BACKLOG UNKNOWN - http://{}/state has no \"consumers\" list",
                not_fedhub.addr
            )
            .as_str()
        )
    );
    let closed_early = FakeServer::start(Some(b""));
    let run = check(&["-H", &closed_early.addr]);
    assert_eq!(run.code, 3, "{}", run.line());
    assert!(
        run.line()
            .contains("the connection closed without a response"),
        "{}",
        run.line()
    );
}

#[test]
fn bad_arguments_are_unknown_with_a_clear_message() {
    let cases: &[(&[&str], &str)] = &[
        (
            &["-H", "127.0.0.1:8940", "-w", "2:1"],
            "FEDHUB UNKNOWN - invalid warning threshold '2:1': start 2 is greater than end 1 (expected [@]START:END, e.g. 10, 10:, ~:10, 10:20, @10:20)",
        ),
        (
            &["-H", "127.0.0.1:8940", "-c", "abc"],
            "FEDHUB UNKNOWN - invalid critical threshold 'abc': end 'abc' is not a number (expected digits with an optional sign and decimal point) (expected [@]START:END, e.g. 10, 10:, ~:10, 10:20, @10:20)",
        ),
        (
            &["-H", "127.0.0.1:8940", "-w", "10%"],
            "FEDHUB UNKNOWN - invalid warning threshold '10%': end '10%' is not a number (expected digits with an optional sign and decimal point) (expected [@]START:END, e.g. 10, 10:, ~:10, 10:20, @10:20)",
        ),
        (
            &[],
            "FEDHUB UNKNOWN - no arguments; use -H HOST:PORT (or --url) for the HTTP form, or one of backlog, exceptions, consumers, producer-last-ran for Fedora's forms; see --help",
        ),
        (
            &["-w", "10"],
            "FEDHUB UNKNOWN - missing -H HOST:PORT or --url URL (see --help)",
        ),
        (&["-H"], "FEDHUB UNKNOWN - option '--hostname' needs a value"),
        (
            &["-H", "hub", "--frobnicate"],
            "FEDHUB UNKNOWN - unknown option '--frobnicate'",
        ),
        (
            &["-H", "hub:99999"],
            "FEDHUB UNKNOWN - invalid port '99999': expected a number from 1 to 65535",
        ),
        (
            &["-H", "hub", "-m", "load"],
            "FEDHUB UNKNOWN - invalid metric 'load': expected backlog, exceptions, dropped or utilization",
        ),
        (
            &["--url", "https://hub"],
            "FEDHUB UNKNOWN - invalid URL 'https://hub': https is not supported; use the hub's plain http listener",
        ),
        (
            &["-H", "hub", "-C", "A", "stray"],
            "FEDHUB UNKNOWN - unexpected argument 'stray'; the first argument must be one of backlog, exceptions, consumers, producer-last-ran or an option (see --help)",
        ),
    ];
    for (args, line) in cases {
        assert_eq!(check(args).result(), (3, *line), "{args:?}");
    }
}

#[test]
fn help_and_version_exit_3_on_stdout() {
    let run = check(&["--help"]);
    assert_eq!(run.code, 3);
    assert!(run.stderr.is_empty());
    assert!(run
        .stdout
        .contains("check_fedhub backlog <service> <Consumer> <warn> <crit>"));
    assert!(run
        .stdout
        .contains("check_fedhub -H HOST[:PORT] | --url http://HOST:PORT[/PREFIX] [options]"));
    let run = check(&["-V"]);
    assert_eq!(
        run.result(),
        (
            3,
            format!("check_fedhub {}", env!("CARGO_PKG_VERSION")).as_str()
        )
    );
    assert_eq!(check(&["backlog", "-h"]).code, 3);
}

#[test]
fn a_name_that_does_not_resolve_is_unknown() {
    let run = check(&["-H", "no-such-host.invalid:8940", "-t", "5"]);
    let line = run.line();
    assert_eq!(run.code, 3, "{line}");
    assert!(line.starts_with("FEDHUB BACKLOG UNKNOWN - "), "{line}");
    assert!(
        line.contains("no-such-host.invalid"),
        "the message names the host: {line}"
    );
}
