//! `fedhub collectd-exec`: the hub's values as PUTVAL lines for collectd's exec plugin.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use fedhub::Config;
use fedhub_tools::collectd_exec::{self, ExecError, ExecOptions};

/// Options of `fedhub collectd-exec`.
#[derive(Args)]
pub struct CollectdExecArgs {
    /// The hub's config file: its [hub] name and [monitoring] socket are the defaults.
    #[arg(short = 'c', long = "config")]
    config: Option<PathBuf>,
    /// Monitoring socket to read (default: the config's, else Fedora's
    /// ipc:///var/run/fedmsg/monitoring-<service>.socket).
    #[arg(long)]
    socket: Option<String>,
    /// Service name, the identifiers' plugin part (default: the config's [hub] name, fedmsg-hub).
    #[arg(long)]
    service: Option<String>,
    /// Host part of the identifiers (default: $COLLECTD_HOSTNAME, then the host name).
    #[arg(long)]
    host: Option<String>,
    /// interval= written on each line (default: $COLLECTD_INTERVAL, else each document's).
    #[arg(long)]
    interval_secs: Option<f64>,
    /// Give up (exit 1) when no document arrives for this long; 0 waits forever.
    #[arg(long, default_value_t = 60.0)]
    timeout_secs: f64,
}

/// Runs until SIGINT/SIGTERM, a timeout, or stdout closing. Exit codes: 0 when
/// stopped by a signal, 3 when an ipc socket file is missing (as Fedora's
/// script), 1 for a timeout or a broken stdout, 2 for bad options or config.
pub fn collectd_exec(args: CollectdExecArgs) -> anyhow::Result<ExitCode> {
    let config = match &args.config {
        Some(path) => Some(Config::load(Some(path))?),
        None => None,
    };
    let service = args
        .service
        .or_else(|| config.as_ref().map(|c| c.hub.name.clone()))
        .unwrap_or_else(|| "fedmsg-hub".to_string());
    let socket = args
        .socket
        .or_else(|| {
            config
                .as_ref()
                .map(|c| connectable(&c.monitoring.socket))
                .filter(|s| !s.is_empty())
        })
        .unwrap_or_else(|| collectd_exec::fedora_socket(&service));
    anyhow::ensure!(
        args.timeout_secs.is_finite() && args.timeout_secs >= 0.0,
        "--timeout-secs must be a number of seconds >= 0, got {}",
        args.timeout_secs
    );
    let interval_secs = match args.interval_secs {
        Some(v) if !v.is_finite() || v < 0.0 => {
            anyhow::bail!("--interval-secs must be a number of seconds >= 0, got {v}")
        }
        Some(v) => v,
        None => collectd_exec::default_interval_secs(),
    };
    let options = ExecOptions {
        socket,
        host: args.host.unwrap_or_else(collectd_exec::default_host),
        service,
        interval_secs,
        timeout: Duration::from_secs_f64(args.timeout_secs),
    };
    let stop = Arc::new(AtomicBool::new(false));
    let signal_stop = stop.clone();
    std::thread::spawn(move || {
        if fedhub::wait_for_shutdown_signal().is_ok() {
            signal_stop.store(true, Ordering::Release);
        }
    });
    match collectd_exec::run(&options, stop, std::io::stdout().lock()) {
        Ok(()) => Ok(ExitCode::SUCCESS),
        Err(error @ ExecError::MissingSocket { .. }) => {
            eprintln!("fedhub collectd-exec: {error}");
            Ok(ExitCode::from(3))
        }
        Err(error) => {
            eprintln!("fedhub collectd-exec: {error}");
            Ok(ExitCode::from(1))
        }
    }
}

/// The address to connect to for a bind address: a wildcard host becomes loopback.
fn connectable(bind: &str) -> String {
    bind.replacen("tcp://*:", "tcp://127.0.0.1:", 1).replacen(
        "tcp://0.0.0.0:",
        "tcp://127.0.0.1:",
        1,
    )
}
