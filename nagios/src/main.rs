//! `check_fedhub`: the Nagios/NRPE plugin for fedhub.
//!
//! Two forms share the binary:
//! - [`fedora`]: Fedora's positional NRPE scripts (`backlog`, `exceptions`,
//!   `consumers`, `producer-last-ran`), reading the moksha monitoring socket
//!   and printing exactly their lines and exit codes;
//! - [`plugin`]: the monitoring-plugins form (`-H`/`--url`, `-w`/`-c` ranges from
//!   [`range`], perfdata), reading the hub's `/state` with `fedhub_probe`'s
//!   client into its typed view of the document.
//!
//! [`cli`] parses both; [`status`] holds states and exit codes; [`humanize`]
//! words "2 minutes ago". Everything the plugin says goes to stdout on one line;
//! whatever goes wrong, including a bug, ends as UNKNOWN (exit 3), never as a
//! panic message on stderr.

mod cli;
mod fedora;
mod humanize;
mod plugin;
mod range;
mod status;

use std::io::Write;
use std::sync::mpsc;
use std::time::Duration;

use cli::Command;
use status::{Outcome, State};

/// Extra time the watchdog allows beyond a check's own timeout before it gives
/// the timeout answer itself (a stuck name lookup, for example).
const WATCHDOG_GRACE: Duration = Duration::from_secs(1);

fn main() {
    std::panic::set_hook(Box::new(|info| {
        finish(&Outcome::new(
            State::Unknown,
            format!("UNKNOWN - check_fedhub internal error: {info}").replace('\n', " "),
        ))
    }));
    let args: Vec<String> = std::env::args_os()
        .skip(1)
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    finish(&run(&args));
}

/// Parses and runs a command line.
fn run(args: &[String]) -> Outcome {
    match cli::parse(args) {
        Ok(Command::Help) => Outcome::new(State::Unknown, cli::help()),
        Ok(Command::Version) => Outcome::new(State::Unknown, cli::version()),
        Ok(Command::Fedora(check)) => {
            let limit = Duration::from_millis(check.timeout_ms) + WATCHDOG_GRACE;
            let on_timeout = check.timeout_outcome();
            with_watchdog(move || check.run(), limit, on_timeout)
        }
        Ok(Command::Plugin(check)) => {
            let limit = check.timeout + WATCHDOG_GRACE;
            let on_timeout = check.timeout_outcome();
            with_watchdog(move || check.run(), limit, on_timeout)
        }
        Err(usage) => usage.outcome(),
    }
}

/// Runs `check` on a thread and gives `on_timeout` if it has not answered
/// within `limit`; the thread is abandoned, the process exits right after.
fn with_watchdog(
    check: impl FnOnce() -> Outcome + Send + 'static,
    limit: Duration,
    on_timeout: Outcome,
) -> Outcome {
    let (sender, receiver) = mpsc::channel();
    let spawned = std::thread::Builder::new()
        .name("check".into())
        .spawn(move || {
            let _ = sender.send(check());
        });
    if let Err(e) = spawned {
        return Outcome::new(
            State::Unknown,
            format!("UNKNOWN - cannot start the check thread: {e}"),
        );
    }
    receiver.recv_timeout(limit).unwrap_or(on_timeout)
}

/// Prints the outcome on stdout and exits with its code.
fn finish(outcome: &Outcome) -> ! {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{}", outcome.text);
    let _ = stdout.flush();
    std::process::exit(outcome.state.code())
}
