//! Command-line parsing for both forms, by hand so that every mistake becomes
//! an UNKNOWN line on stdout (exit 3) that names the argument at fault.

use std::path::PathBuf;
use std::time::Duration;

use fedhub_probe::client::Target;

use crate::fedora::{FedoraCheck, Kind, DEFAULT_SOCKET_DIR, DEFAULT_TIMEOUT_MS};
use crate::plugin::{Metric, PluginCheck, DEFAULT_PORT, DEFAULT_TIMEOUT};
use crate::range::{parse_decimal, Range, Thresholds};
use crate::status::{Outcome, State};

/// What the command line asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// `-h/--help`
    Help,
    /// `-V/--version`
    Version,
    /// One of Fedora's positional forms.
    Fedora(FedoraCheck),
    /// The monitoring-plugins form.
    Plugin(PluginCheck),
}

/// Which form a usage error belongs to (it decides the line's prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Form {
    /// `UNKNOWN: ...`, as Fedora's scripts report errors.
    Fedora,
    /// `FEDHUB UNKNOWN - ...`
    Plugin,
}

/// A command line that cannot be run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UsageError {
    /// The form being parsed.
    pub form: Form,
    /// What is wrong, naming the argument.
    pub message: String,
}

impl UsageError {
    /// The UNKNOWN outcome to print.
    pub fn outcome(&self) -> Outcome {
        let text = match self.form {
            Form::Fedora => format!("UNKNOWN: {}", self.message),
            Form::Plugin => format!("FEDHUB UNKNOWN - {}", self.message),
        };
        Outcome::new(State::Unknown, text)
    }
}

/// The Fedora forms' names.
pub const SUBCOMMANDS: [&str; 4] = ["backlog", "exceptions", "consumers", "producer-last-ran"];

/// `--help` text.
pub fn help() -> String {
    format!(
        "check_fedhub {version}: Nagios/NRPE check for fedhub (and moksha) hubs

Fedora-compatible forms (drop-in replacements for Fedora's NRPE scripts; they read one
document from the monitoring socket {dir}/monitoring-<service>.socket):
  check_fedhub backlog <service> <Consumer> <warn> <crit>
  check_fedhub exceptions <service> <Consumer> <warn> <crit>
  check_fedhub consumers <service> <Name> [<Name>...]
  check_fedhub producer-last-ran <service> <Producer> <warn_s> <crit_s>
    --socket ADDR      read tcp://HOST:PORT or ipc://PATH instead of the service's socket
    --socket-dir DIR   directory of monitoring-<service>.socket (default {dir})
    -t, --timeout SECS seconds to wait for a document (default {fedora_secs})
  Values strictly greater than <warn>/<crit> are WARNING/CRITICAL; output and exit codes
  are those of Fedora's scripts (no perfdata).

monitoring-plugins form (reads the hub's HTTP /state):
  check_fedhub -H HOST[:PORT] | --url http://HOST:PORT[/PREFIX] [options]
    -H, --hostname HOST[:PORT]  hub HTTP address (port default {port}, or -p)
    -p, --port PORT             hub HTTP port
    --url URL                   hub HTTP base URL (/state is appended)
    -w, --warning RANGE         warning range
    -c, --critical RANGE        critical range
    -C, --consumer NAME         consumer to check (repeatable; default: all)
    -m, --metric NAME           backlog (default), exceptions (total since start),
                                dropped (total since start) or utilization (% of mailbox)
    -t, --timeout SECS[:STATE]  time budget in seconds (default {plugin_secs}); a timeout is
                                UNKNOWN unless STATE (OK, WARNING, CRITICAL, UNKNOWN) says otherwise
  RANGE is [@]START:END: alert outside START..END (inclusive), or inside with @;
  START defaults to 0, ~ is minus infinity, an empty END is infinity
  (10, 10:, ~:10, 10:20, @10:20). The worst consumer decides the state
  (CRITICAL > WARNING > UNKNOWN > OK). Output: one line with perfdata, e.g.
  FEDHUB BACKLOG OK - NullConsumer backlog 0 | 'NullConsumer_backlog'=0;30;60;0;

  -h, --help     this text (exit 3)
  -V, --version  the version (exit 3)
Exit codes: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.",
        version = env!("CARGO_PKG_VERSION"),
        dir = DEFAULT_SOCKET_DIR,
        fedora_secs = DEFAULT_TIMEOUT_MS / 1000,
        port = DEFAULT_PORT,
        plugin_secs = DEFAULT_TIMEOUT.as_secs(),
    )
}

/// `--version` text.
pub fn version() -> String {
    format!("check_fedhub {}", env!("CARGO_PKG_VERSION"))
}

/// An option: short letter, long name, whether it takes a value.
struct Spec {
    short: Option<char>,
    long: &'static str,
    value: bool,
}

const FEDORA_OPTIONS: &[Spec] = &[
    Spec {
        short: Some('t'),
        long: "timeout",
        value: true,
    },
    Spec {
        short: None,
        long: "socket",
        value: true,
    },
    Spec {
        short: None,
        long: "socket-dir",
        value: true,
    },
];

const PLUGIN_OPTIONS: &[Spec] = &[
    Spec {
        short: Some('t'),
        long: "timeout",
        value: true,
    },
    Spec {
        short: Some('H'),
        long: "hostname",
        value: true,
    },
    Spec {
        short: Some('p'),
        long: "port",
        value: true,
    },
    Spec {
        short: None,
        long: "url",
        value: true,
    },
    Spec {
        short: Some('w'),
        long: "warning",
        value: true,
    },
    Spec {
        short: Some('c'),
        long: "critical",
        value: true,
    },
    Spec {
        short: Some('C'),
        long: "consumer",
        value: true,
    },
    Spec {
        short: Some('m'),
        long: "metric",
        value: true,
    },
];

/// Options (long name, value) in order, and positional arguments.
type Split = (Vec<(&'static str, String)>, Vec<String>);

fn split(args: &[String], specs: &'static [Spec]) -> Result<Split, String> {
    let mut options = Vec::new();
    let mut positional = Vec::new();
    let mut i = 0;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        if arg == "--" {
            positional.extend(args[i..].iter().cloned());
            break;
        }
        // Negative numbers are thresholds, not options.
        if !arg.starts_with('-') || arg == "-" || parse_decimal(arg).is_some() {
            positional.push(arg.clone());
            continue;
        }
        let (spec, inline) = if let Some(long) = arg.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((n, v)) => (n, Some(v.to_string())),
                None => (long, None),
            };
            let spec = specs
                .iter()
                .find(|s| s.long == name)
                .ok_or_else(|| format!("unknown option '--{name}'"))?;
            (spec, inline)
        } else {
            let mut chars = arg[1..].chars();
            let letter = chars.next().unwrap_or('-');
            let rest: String = chars.collect();
            let spec = specs
                .iter()
                .find(|s| s.short == Some(letter))
                .ok_or_else(|| format!("unknown option '-{letter}'"))?;
            (spec, (!rest.is_empty()).then_some(rest))
        };
        if !spec.value {
            if inline.is_some() {
                return Err(format!("option '--{}' takes no value", spec.long));
            }
            options.push((spec.long, String::new()));
            continue;
        }
        let value = match inline {
            Some(v) => v,
            None => {
                let v = args
                    .get(i)
                    .ok_or_else(|| format!("option '--{}' needs a value", spec.long))?;
                i += 1;
                v.clone()
            }
        };
        options.push((spec.long, value));
    }
    Ok((options, positional))
}

/// Parses the arguments after the program name.
pub fn parse(args: &[String]) -> Result<Command, UsageError> {
    let form = match args.first() {
        Some(first) if SUBCOMMANDS.contains(&first.as_str()) => Form::Fedora,
        _ => Form::Plugin,
    };
    let error = |message: String| UsageError { form, message };
    // Help and version win over everything else, as in the C plugins.
    if args.iter().any(|a| a == "-h" || a == "--help") {
        return Ok(Command::Help);
    }
    if args.iter().any(|a| a == "-V" || a == "--version") {
        return Ok(Command::Version);
    }
    match form {
        Form::Fedora => parse_fedora(&args[0], &args[1..]).map(Command::Fedora),
        Form::Plugin => parse_plugin(args).map(Command::Plugin),
    }
    .map_err(error)
}

fn seconds(text: &str, what: &str) -> Result<Duration, String> {
    parse_decimal(text)
        .filter(|s| *s > 0.0 && *s <= 86_400.0)
        .map(Duration::from_secs_f64)
        .ok_or_else(|| {
            format!("invalid {what} '{text}': expected a number of seconds between 0 and 86400")
        })
}

fn usage_of(subcommand: &str) -> &'static str {
    match subcommand {
        "backlog" => "check_fedhub backlog <service> <Consumer> <warn> <crit>",
        "exceptions" => "check_fedhub exceptions <service> <Consumer> <warn> <crit>",
        "consumers" => "check_fedhub consumers <service> <Name> [<Name>...]",
        _ => "check_fedhub producer-last-ran <service> <Producer> <warn_s> <crit_s>",
    }
}

/// Python's `int()` on a threshold, minus its exceptions.
fn integer(text: &str, what: &str) -> Result<f64, String> {
    let t = text.trim();
    let digits = t.strip_prefix(['+', '-']).unwrap_or(t);
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid {what} threshold '{text}': expected an integer"
        ));
    }
    t.parse::<i64>()
        .map(|v| v as f64)
        .map_err(|_| format!("invalid {what} threshold '{text}': expected an integer"))
}

fn parse_fedora(subcommand: &str, args: &[String]) -> Result<FedoraCheck, String> {
    let (options, positional) = split(args, FEDORA_OPTIONS)?;
    let mut check = FedoraCheck {
        kind: Kind::Consumers { names: vec![] },
        service: String::new(),
        socket: None,
        socket_dir: PathBuf::from(DEFAULT_SOCKET_DIR),
        timeout_ms: DEFAULT_TIMEOUT_MS,
    };
    for (name, value) in options {
        match name {
            "timeout" => {
                let d = seconds(&value, "timeout")?;
                check.timeout_ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
            }
            "socket" => check.socket = Some(value),
            "socket-dir" => {
                if value.is_empty() {
                    return Err("--socket-dir needs a directory".into());
                }
                check.socket_dir = PathBuf::from(value);
            }
            _ => {}
        }
    }
    let usage = || format!("usage: {} [--socket ADDR] [-t SECS]", usage_of(subcommand));
    let Some(service) = positional.first() else {
        return Err(format!("missing <service>; {}", usage()));
    };
    if service.is_empty() || service.contains('/') {
        return Err(format!(
            "invalid service name '{service}': expected a process name such as fedmsg-hub"
        ));
    }
    check.service = service.clone();
    let rest = &positional[1..];
    let four = |names: [&str; 3]| -> Result<(String, String, String), String> {
        match rest {
            [name, warn, crit] => Ok((name.clone(), warn.clone(), crit.clone())),
            [] | [_] | [_, _] => Err(format!(
                "missing {}; {}",
                names[rest.len()..]
                    .iter()
                    .map(|n| format!("<{n}>"))
                    .collect::<Vec<_>>()
                    .join(" "),
                usage()
            )),
            [_, _, _, extra, ..] => Err(format!("unexpected argument '{extra}'; {}", usage())),
        }
    };
    check.kind = match subcommand {
        "backlog" | "exceptions" => {
            let (consumer, warn, crit) = four(["Consumer", "warn", "crit"])?;
            let (warn, crit) = (integer(&warn, "warn")?, integer(&crit, "crit")?);
            if subcommand == "backlog" {
                Kind::Backlog {
                    consumer,
                    warn,
                    crit,
                }
            } else {
                Kind::Exceptions {
                    consumer,
                    warn,
                    crit,
                }
            }
        }
        "producer-last-ran" => {
            let (producer, warn, crit) = four(["Producer", "warn_s", "crit_s"])?;
            let number = |text: &str, what: &str| {
                parse_decimal(text.trim()).ok_or_else(|| {
                    format!("invalid {what} threshold '{text}': expected a number of seconds")
                })
            };
            Kind::ProducerLastRan {
                producer,
                warn: number(&warn, "warn_s")?,
                crit: number(&crit, "crit_s")?,
            }
        }
        _ => Kind::Consumers {
            names: rest.to_vec(),
        },
    };
    Ok(check)
}

fn parse_host(text: &str, port: Option<u16>) -> Result<Target, String> {
    let bad = || {
        format!("invalid host '{text}': expected HOST, HOST:PORT, [IPv6]:PORT or an IPv6 address")
    };
    let (host, explicit_port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or_else(bad)?;
        match after {
            "" => (host.to_string(), None),
            p => (
                host.to_string(),
                Some(p.strip_prefix(':').ok_or_else(bad)?.to_string()),
            ),
        }
    } else if text.matches(':').count() == 1 {
        let (h, p) = text.split_once(':').ok_or_else(bad)?;
        (h.to_string(), Some(p.to_string()))
    } else {
        (text.to_string(), None)
    };
    // Names (ASCII; IDNs in punycode), IPv4, IPv6 with an optional %zone.
    if host.is_empty()
        || !host
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || ".-_:%".contains(c))
    {
        return Err(bad());
    }
    let port = match explicit_port {
        Some(p) => parse_port(&p)?,
        None => port.unwrap_or(DEFAULT_PORT),
    };
    Ok(Target {
        host,
        port,
        path: "/state".into(),
    })
}

fn parse_port(text: &str) -> Result<u16, String> {
    text.parse::<u16>()
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("invalid port '{text}': expected a number from 1 to 65535"))
}

fn parse_url(text: &str) -> Result<Target, String> {
    let Some(rest) = text.strip_prefix("http://") else {
        return Err(if text.starts_with("https://") {
            format!(
                "invalid URL '{text}': https is not supported; use the hub's plain http listener"
            )
        } else {
            format!("invalid URL '{text}': expected http://HOST:PORT[/PREFIX]")
        });
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    if path.contains(['?', '#']) || path.contains(char::is_whitespace) {
        return Err(format!(
            "invalid URL '{text}': expected http://HOST:PORT[/PREFIX] without query or fragment"
        ));
    }
    let mut target =
        parse_host(authority, Some(80)).map_err(|e| format!("invalid URL '{text}': {e}"))?;
    let base = path.trim_end_matches('/');
    target.path = if base.ends_with("/state") {
        base.to_string()
    } else {
        format!("{base}/state")
    };
    Ok(target)
}

fn parse_plugin(args: &[String]) -> Result<PluginCheck, String> {
    if args.is_empty() {
        return Err(format!(
            "no arguments; use -H HOST:PORT (or --url) for the HTTP form, or one of {} for Fedora's forms; see --help",
            SUBCOMMANDS.join(", ")
        ));
    }
    let (options, positional) = split(args, PLUGIN_OPTIONS)?;
    if let Some(first) = positional.first() {
        return Err(format!(
            "unexpected argument '{first}'; the first argument must be one of {} or an option (see --help)",
            SUBCOMMANDS.join(", ")
        ));
    }
    let mut host = None;
    let mut url = None;
    let mut port = None;
    let mut thresholds = Thresholds::default();
    let mut consumers = Vec::new();
    let mut metric = Metric::Backlog;
    let mut timeout = DEFAULT_TIMEOUT;
    let mut timeout_state = State::Unknown;
    for (name, value) in options {
        match name {
            "hostname" => host = Some(value),
            "url" => url = Some(value),
            "port" => port = Some(parse_port(&value)?),
            "warning" | "critical" => {
                let range = Range::parse(&value).map_err(|e| {
                    format!(
                        "invalid {name} threshold '{value}': {e} (expected [@]START:END, e.g. 10, 10:, ~:10, 10:20, @10:20)"
                    )
                })?;
                if name == "warning" {
                    thresholds.warning = Some(range);
                } else {
                    thresholds.critical = Some(range);
                }
            }
            "consumer" => {
                if value.is_empty() {
                    return Err("--consumer needs a consumer name".into());
                }
                consumers.push(value);
            }
            "metric" => {
                metric = Metric::parse(&value).ok_or_else(|| {
                    format!(
                        "invalid metric '{value}': expected backlog, exceptions, dropped or utilization"
                    )
                })?
            }
            "timeout" => {
                let (secs, state) = match value.split_once(':') {
                    Some((s, st)) => (
                        s,
                        Some(State::parse(st).ok_or_else(|| {
                            format!(
                                "invalid timeout state '{st}': expected OK, WARNING, CRITICAL or UNKNOWN"
                            )
                        })?),
                    ),
                    None => (value.as_str(), None),
                };
                timeout = seconds(secs, "timeout")?;
                if let Some(state) = state {
                    timeout_state = state;
                }
            }
            _ => {}
        }
    }
    let target = match (host, url) {
        (Some(_), Some(_)) => return Err("give either -H or --url, not both".into()),
        (Some(h), None) => parse_host(&h, port)?,
        (None, Some(u)) => {
            if port.is_some() {
                return Err("-p does not apply to --url; put the port in the URL".into());
            }
            parse_url(&u)?
        }
        (None, None) => return Err("missing -H HOST:PORT or --url URL (see --help)".into()),
    };
    Ok(PluginCheck {
        target,
        thresholds,
        consumers,
        metric,
        timeout,
        timeout_state,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(str::to_string).collect()
    }

    fn plugin(line: &str) -> PluginCheck {
        match parse(&args(line)) {
            Ok(Command::Plugin(c)) => c,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn fedora(line: &str) -> FedoraCheck {
        match parse(&args(line)) {
            Ok(Command::Fedora(c)) => c,
            other => panic!("{line}: {other:?}"),
        }
    }

    fn error(line: &str) -> String {
        match parse(&args(line)) {
            Err(e) => e.outcome().text,
            other => panic!("{line}: {other:?}"),
        }
    }

    #[test]
    fn plugin_form() {
        let c = plugin("-H 127.0.0.1:9000 -w 30 -c 60 -C A --consumer=B -mexceptions -t 2.5");
        assert_eq!(c.target.url(), "http://127.0.0.1:9000/state");
        assert_eq!(c.thresholds.warning.as_ref().unwrap().as_str(), "30");
        assert_eq!(c.thresholds.critical.as_ref().unwrap().as_str(), "60");
        assert_eq!(c.consumers, ["A", "B"]);
        assert_eq!(c.metric, Metric::Exceptions);
        assert_eq!(c.timeout, Duration::from_millis(2500));
        assert_eq!(c.timeout_state, State::Unknown);
        let c = plugin("-H hub -p 81 -w @10:20 -c ~:-5 -t 3:critical");
        assert_eq!(c.target.url(), "http://hub:81/state");
        assert_eq!(c.timeout_state, State::Critical);
        assert!(c.thresholds.critical.as_ref().unwrap().alerts(-4.0));
        assert_eq!(plugin("-H hub").target.url(), "http://hub:8940/state");
        assert_eq!(plugin("-H ::1").target.url(), "http://[::1]:8940/state");
        assert_eq!(plugin("-H [::1]:9").target.url(), "http://[::1]:9/state");
        assert_eq!(
            plugin("--url http://hub:8940").target.url(),
            "http://hub:8940/state"
        );
        assert_eq!(
            plugin("--url http://hub/fedhub/").target.url(),
            "http://hub:80/fedhub/state"
        );
        assert_eq!(
            plugin("--url http://hub:1/state").target.url(),
            "http://hub:1/state"
        );
    }

    #[test]
    fn plugin_form_errors() {
        let cases = [
            ("", "FEDHUB UNKNOWN - no arguments; use -H HOST:PORT"),
            ("-H h -w 2:1", "FEDHUB UNKNOWN - invalid warning threshold '2:1': start 2 is greater than end 1 (expected [@]START:END"),
            ("-H h -c abc", "FEDHUB UNKNOWN - invalid critical threshold 'abc': end 'abc' is not a number"),
            ("-H h -w", "FEDHUB UNKNOWN - option '--warning' needs a value"),
            ("-H h -x", "FEDHUB UNKNOWN - unknown option '-x'"),
            ("-H h --bogus=1", "FEDHUB UNKNOWN - unknown option '--bogus'"),
            ("-H h extra", "FEDHUB UNKNOWN - unexpected argument 'extra'"),
            ("-w 1", "FEDHUB UNKNOWN - missing -H HOST:PORT or --url URL"),
            ("-H h:0", "FEDHUB UNKNOWN - invalid port '0'"),
            ("-H h:x", "FEDHUB UNKNOWN - invalid port 'x'"),
            ("-H h -p 70000", "FEDHUB UNKNOWN - invalid port '70000'"),
            ("-H a/b", "FEDHUB UNKNOWN - invalid host 'a/b'"),
            ("-H [::1", "FEDHUB UNKNOWN - invalid host '[::1'"),
            ("-H=", "FEDHUB UNKNOWN - invalid host '='"),
            ("-H hé", "FEDHUB UNKNOWN - invalid host 'hé'"),
            ("-H []:80", "FEDHUB UNKNOWN - invalid host '[]:80'"),
            ("-H h --url http://h", "FEDHUB UNKNOWN - give either -H or --url, not both"),
            ("--url https://h", "FEDHUB UNKNOWN - invalid URL 'https://h': https is not supported"),
            ("--url ftp://h", "FEDHUB UNKNOWN - invalid URL 'ftp://h'"),
            ("--url http://h/x?y", "FEDHUB UNKNOWN - invalid URL 'http://h/x?y'"),
            ("-H h -m load", "FEDHUB UNKNOWN - invalid metric 'load'"),
            ("-H h -t 0", "FEDHUB UNKNOWN - invalid timeout '0'"),
            ("-H h -t x", "FEDHUB UNKNOWN - invalid timeout 'x'"),
            ("-H h -t 5:sometimes", "FEDHUB UNKNOWN - invalid timeout state 'sometimes'"),
            ("-H h -C", "FEDHUB UNKNOWN - option '--consumer' needs a value"),
            ("backlogs x", "FEDHUB UNKNOWN - unexpected argument 'backlogs'; the first argument must be one of backlog, exceptions, consumers, producer-last-ran"),
        ];
        for (line, want) in cases {
            let got = error(line);
            assert!(got.starts_with(want), "{line:?}: got {got:?}");
        }
    }

    #[test]
    fn fedora_forms() {
        let c = fedora("backlog fedmsg-hub FMNConsumer 15000 20000");
        assert_eq!(
            c.kind,
            Kind::Backlog {
                consumer: "FMNConsumer".into(),
                warn: 15000.0,
                crit: 20000.0
            }
        );
        assert_eq!(c.service, "fedmsg-hub");
        assert_eq!(c.timeout_ms, 20_000);
        assert_eq!(c.socket, None);
        let c = fedora("exceptions --socket tcp://h:1 fedmsg-hub X -1 10 -t 0.5");
        assert_eq!(
            c.kind,
            Kind::Exceptions {
                consumer: "X".into(),
                warn: -1.0,
                crit: 10.0
            }
        );
        assert_eq!(c.socket.as_deref(), Some("tcp://h:1"));
        assert_eq!(c.timeout_ms, 500);
        let c =
            fedora("consumers fedmsg-relay RelayConsumer MonitoringProducer --socket-dir /tmp/x");
        assert_eq!(
            c.kind,
            Kind::Consumers {
                names: vec!["RelayConsumer".into(), "MonitoringProducer".into()]
            }
        );
        assert_eq!(c.socket_dir, PathBuf::from("/tmp/x"));
        // No names is Fedora's own UNKNOWN line, decided when run.
        assert_eq!(
            fedora("consumers fedmsg-hub").kind,
            Kind::Consumers { names: vec![] }
        );
        assert_eq!(
            fedora("producer-last-ran fedmsg-hub DigestProducer 90 600.5").kind,
            Kind::ProducerLastRan {
                producer: "DigestProducer".into(),
                warn: 90.0,
                crit: 600.5
            }
        );
    }

    #[test]
    fn fedora_form_errors() {
        let cases = [
            ("backlog", "UNKNOWN: missing <service>; usage: check_fedhub backlog <service> <Consumer> <warn> <crit>"),
            ("backlog fedmsg-hub", "UNKNOWN: missing <Consumer> <warn> <crit>; usage: check_fedhub backlog"),
            ("backlog fedmsg-hub C 1", "UNKNOWN: missing <crit>; usage"),
            ("backlog fedmsg-hub C 1 2 3", "UNKNOWN: unexpected argument '3'"),
            ("backlog fedmsg-hub C abc 2", "UNKNOWN: invalid warn threshold 'abc': expected an integer"),
            ("exceptions fedmsg-hub C 1 2:1", "UNKNOWN: invalid crit threshold '2:1': expected an integer"),
            ("backlog fedmsg-hub C 1.5 2", "UNKNOWN: invalid warn threshold '1.5': expected an integer"),
            ("producer-last-ran fedmsg-hub P 90 soon", "UNKNOWN: invalid crit_s threshold 'soon': expected a number of seconds"),
            ("producer-last-ran fedmsg-hub P", "UNKNOWN: missing <warn_s> <crit_s>"),
            ("consumers", "UNKNOWN: missing <service>; usage: check_fedhub consumers"),
            ("backlog a/b C 1 2", "UNKNOWN: invalid service name 'a/b'"),
            ("backlog fedmsg-hub C 1 2 -t -1", "UNKNOWN: invalid timeout '-1'"),
            ("backlog fedmsg-hub C 1 2 -t 0", "UNKNOWN: invalid timeout '0'"),
            ("backlog fedmsg-hub C 1 2 --socket", "UNKNOWN: option '--socket' needs a value"),
            ("backlog fedmsg-hub C 1 2 -w 5", "UNKNOWN: unknown option '-w'"),
            ("backlog fedmsg-hub C 1 99999999999999999999", "UNKNOWN: invalid crit threshold"),
        ];
        for (line, want) in cases {
            let got = error(line);
            assert!(got.starts_with(want), "{line:?}: got {got:?}");
        }
    }

    #[test]
    fn help_and_version_win() {
        assert_eq!(parse(&args("-h")), Ok(Command::Help));
        assert_eq!(parse(&args("-H h -w 2:1 --help")), Ok(Command::Help));
        assert_eq!(parse(&args("backlog -V")), Ok(Command::Version));
        assert!(help().contains("check_fedhub backlog <service> <Consumer> <warn> <crit>"));
        assert_eq!(
            version(),
            format!("check_fedhub {}", env!("CARGO_PKG_VERSION"))
        );
    }
}
