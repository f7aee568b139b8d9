//! The `fedhub` command: parse the command line, load config, hand over to the library.

use std::ffi::OsString;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{CommandFactory, FromArgMatches, Parser, Subcommand};
use fedhub::{Config, ConsumerCommand, HubBuilder};
use fedhub_cli::shipped_consumers;
use fedhub_tools::{PublishOptions, TailOptions};

mod collectd;

#[derive(Parser)]
#[command(
    name = "fedhub",
    version,
    about = "An actor-based fedmsg hub with health monitoring built in"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the hub (without -c: loopback defaults, no external bus or database needed).
    Run {
        /// TOML config file (see examples/fedhub.toml).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// Feed the hub synthetic Fedora traffic through its inbound socket.
        #[arg(long)]
        demo: bool,
        /// Messages per second for --demo.
        #[arg(long, default_value_t = 20.0)]
        demo_rate: f64,
        /// Only load and check the configuration, then exit.
        #[arg(long)]
        check: bool,
    },
    /// Publish fedmsg messages: --json BODY, or one JSON body per stdin line (like fedmsg-logger).
    Publish {
        /// Address to connect to (a hub's inbound socket, a relay), or to bind with --bind.
        #[arg(long)]
        endpoint: String,
        /// Bind the endpoint instead of connecting (subscribers connect to it).
        #[arg(long)]
        bind: bool,
        /// Topic: modname.event (prefix and environment are added) or fully qualified.
        #[arg(long)]
        topic: String,
        /// The message body (the envelope's msg), as JSON.
        #[arg(long)]
        json: Option<String>,
        /// A fedhub config: its [hub] topic_prefix and environment are the
        /// defaults, and with [security] sign_messages each message is signed
        /// with the certificate fedmsg would choose (certnames, cert_prefix).
        #[arg(short = 'c', long = "config")]
        config: Option<PathBuf>,
        /// fedmsg topic_prefix [default: org.fedoraproject, or the config's].
        #[arg(long)]
        topic_prefix: Option<String>,
        /// fedmsg environment [default: the -c config's [hub] environment, else dev].
        #[arg(long)]
        environment: Option<String>,
        /// With --bind: wait for this many subscribers before sending.
        #[arg(long, default_value_t = 1)]
        wait_subscribers: usize,
        /// Seconds to wait for the connection (or, with --bind, for subscribers).
        #[arg(long, default_value_t = 1.0)]
        wait_secs: f64,
    },
    /// Print messages from fedmsg endpoints, one JSON envelope per line (like fedmsg-tail).
    Tail {
        /// Address to connect to (repeatable), or to bind with --bind: a
        /// hub's [bus] outbound, a publisher, a relay's relay_outbound.
        #[arg(long, required_unless_present = "config")]
        endpoint: Vec<String>,
        /// A fedhub config: follow every address of its [bus] endpoints and
        /// its [bus] outbound, as fedmsg-tail follows fedmsg.d's endpoints.
        #[arg(short = 'c', long = "config", conflicts_with = "bind")]
        config: Option<PathBuf>,
        /// Bind instead of connecting.
        #[arg(long)]
        bind: bool,
        /// Topic prefix to subscribe to (repeatable; '*' is removed as in moksha).
        #[arg(long)]
        topic: Vec<String>,
        /// Exit after this many messages.
        #[arg(long)]
        count: Option<u64>,
        /// Exit after this many seconds without a message.
        #[arg(long)]
        idle_timeout_secs: Option<f64>,
    },
    /// Print the hub's monitoring values as PUTVAL lines, for collectd's exec plugin.
    CollectdExec(collectd::CollectdExecArgs),
}

fn main() -> ExitCode {
    let commands: Vec<ConsumerCommand> = shipped_consumers()
        .iter()
        .filter_map(|f| f.subcommand().cloned())
        .collect();
    let matches = with_consumer_commands(Cli::command(), &commands).get_matches();
    // The hub logs what it does; the commands around it print their results
    // and keep stderr for what went wrong (RUST_LOG overrides both).
    if matches.subcommand_name() == Some("run") {
        fedhub::init_logging();
    } else {
        fedhub::init_logging_with_default("warn");
    }
    let outcome = match matches.subcommand() {
        Some((name, sub)) if commands.iter().any(|c| c.name() == name) => {
            run_consumer_command(&commands, name, sub)
        }
        _ => Cli::from_arg_matches(&matches)
            .map_err(|e| e.exit())
            .and_then(|cli| dispatch(cli.command)),
    };
    match outcome {
        Ok(code) => code,
        Err(error) => {
            // One line, not a log line and a copy of it.
            eprintln!("fedhub: {}", fedhub::error_chain(error.as_ref()));
            ExitCode::from(2)
        }
    }
}

/// The built-in subcommands plus one per consumer that brings its own: each
/// takes every argument after its name (`--help` too) and parses them itself.
fn with_consumer_commands(mut cli: clap::Command, commands: &[ConsumerCommand]) -> clap::Command {
    for command in commands {
        cli = cli.subcommand(
            clap::Command::new(command.name().to_string())
                .about(command.about().to_string())
                .disable_help_flag(true)
                .arg(
                    clap::Arg::new("args")
                        .num_args(0..)
                        .trailing_var_arg(true)
                        .allow_hyphen_values(true)
                        .value_parser(clap::value_parser!(OsString)),
                ),
        );
    }
    cli
}

fn run_consumer_command(
    commands: &[ConsumerCommand],
    name: &str,
    matches: &clap::ArgMatches,
) -> anyhow::Result<ExitCode> {
    let command = commands
        .iter()
        .find(|c| c.name() == name)
        .context("no such subcommand")?;
    let mut args = vec![OsString::from(format!("fedhub {name}"))];
    args.extend(
        matches
            .get_many::<OsString>("args")
            .into_iter()
            .flatten()
            .cloned(),
    );
    command.run(args).map_err(anyhow::Error::from_boxed)
}

fn dispatch(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        Command::Run {
            config,
            demo,
            demo_rate,
            check,
        } => run(config, demo, demo_rate, check),
        Command::Publish {
            endpoint,
            bind,
            topic,
            json,
            config,
            topic_prefix,
            environment,
            wait_subscribers,
            wait_secs,
        } => {
            let config = match &config {
                Some(path) => Config::load(Some(path))?,
                None => Config::default(),
            };
            let signing = if config.security.sign_messages {
                Some(Arc::new(fedhub::SigningKey::load(&config.security)?))
            } else {
                None
            };
            let options = PublishOptions {
                endpoint,
                bind,
                topic,
                topic_prefix: topic_prefix.unwrap_or(config.hub.topic_prefix),
                environment: environment.unwrap_or(config.hub.environment),
                wait_subscribers,
                wait_secs,
                signing,
            };
            let stdin = std::io::stdin();
            let summary = fedhub_tools::publish(
                &options,
                json.as_deref(),
                stdin.lock(),
                std::io::stdout().lock(),
                std::io::stderr(),
            )?;
            Ok(if summary.rejected > 0 || summary.filtered {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Tail {
            mut endpoint,
            config,
            bind,
            topic,
            count,
            idle_timeout_secs,
        } => {
            if let Some(path) = &config {
                endpoint.extend(endpoints_to_follow(path)?);
            }
            let options = TailOptions {
                endpoints: endpoint,
                bind,
                topics: topic,
                count,
                idle_timeout: idle_timeout_secs.map(Duration::from_secs_f64),
            };
            let stop = Arc::new(AtomicBool::new(false));
            let signal_stop = stop.clone();
            std::thread::spawn(move || {
                if fedhub::wait_for_shutdown_signal().is_ok() {
                    signal_stop.store(true, Ordering::Release);
                }
            });
            let mut out = std::io::stdout().lock();
            fedhub_tools::tail(&options, stop, &mut out, std::io::stderr())?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CollectdExec(args) => collectd::collectd_exec(args),
    }
}

/// What `fedhub tail -c FILE` connects to: every address of `[bus]
/// endpoints` and `[bus] outbound` (a bound wildcard host read as 127.0.0.1).
fn endpoints_to_follow(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let config = Config::load(Some(path))?;
    let mut addresses: Vec<String> = config
        .bus
        .endpoints
        .values()
        .flat_map(|addresses| addresses.to_vec())
        .collect();
    if !config.bus.outbound.is_empty() {
        addresses.push(
            config
                .bus
                .outbound
                .replace("://*:", "://127.0.0.1:")
                .replace("://0.0.0.0:", "://127.0.0.1:"),
        );
    }
    anyhow::ensure!(
        !addresses.is_empty(),
        "{} has no [bus] endpoints and no [bus] outbound to follow: set [bus] outbound = \"tcp://127.0.0.1:9940\" for the hub to re-publish what it receives there",
        path.display()
    );
    Ok(addresses)
}

fn run(path: Option<PathBuf>, demo: bool, demo_rate: f64, check: bool) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(path.as_deref())?;
    if demo {
        config.hub.status_log_interval_secs = config.hub.status_log_interval_secs.min(5);
        anyhow::ensure!(
            !config.bus.inbound.is_empty(),
            "--demo publishes into the inbound socket: set [bus] inbound"
        );
    }
    // Building checks that every [consumers.X] section names a shipped consumer.
    let mut builder = HubBuilder::new(config.clone()).consumers(shipped_consumers());
    if path.is_none() {
        // The embedded defaults: each consumer that declared it runs without a
        // config (NullConsumer, and the history store on its SQLite file in the
        // working directory, so /datagrepper/raw answers out of the box).
        builder = builder.with_embedded_defaults();
    }
    if check {
        let enabled = builder.check()?;
        println!(
            "configuration is valid; consumers enabled: {}",
            enabled.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    // Before starting: a signal during startup then stops the hub once it runs.
    let signal = fedhub::ShutdownSignal::install()?;
    let hub = builder.start()?;
    let demo_stop = Arc::new(AtomicBool::new(false));
    let demo_thread = if demo {
        let endpoint = hub
            .inbound_endpoint()
            .context("the inbound socket is not bound")?
            .replace("0.0.0.0", "127.0.0.1");
        tracing::info!(endpoint = %endpoint, rate = demo_rate, "demo traffic starting");
        Some(fedhub_tools::demo::spawn_demo_publisher(
            &endpoint,
            demo_rate,
            &config.hub.topic_prefix,
            &config.hub.environment,
            demo_stop.clone(),
        )?)
    } else {
        None
    };
    if let Some(addr) = hub.http_addr() {
        tracing::info!(
            "status page at http://{addr}/, metrics at http://{addr}/metrics, state at http://{addr}/state"
        );
    }
    // SIGHUP reloads what the hub read from files (the CA and CRL, consumers' rules).
    signal.wait_reloading(hub.reload_hook());
    tracing::info!("shutdown requested");
    demo_stop.store(true, Ordering::Release);
    if let Some(thread) = demo_thread {
        let _ = thread.join();
    }
    // Exit 1 when the grace ran out with messages not handled (logged per
    // consumer and counted as dropped, reason shutdown); 0 when all were.
    let report = hub.shutdown();
    Ok(if report.undrained.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
