//! The `fedhub` command: parse the command line, load config, hand over to the library.

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use fedhub::{Config, ConsumerFactory, HubBuilder, NullConsumer};
use fedhub_tools::{PublishOptions, TailOptions};

mod collectd;
mod history;

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
        /// fedmsg topic_prefix.
        #[arg(long, default_value = "org.fedoraproject")]
        topic_prefix: String,
        /// fedmsg environment.
        #[arg(long, default_value = "dev")]
        environment: String,
        /// With --bind: wait for this many subscribers before sending.
        #[arg(long, default_value_t = 1)]
        wait_subscribers: usize,
        /// Seconds to wait for the connection (or, with --bind, for subscribers).
        #[arg(long, default_value_t = 1.0)]
        wait_secs: f64,
    },
    /// Print messages from fedmsg endpoints, one JSON envelope per line (like fedmsg-tail).
    Tail {
        /// Address to connect to (repeatable), or to bind with --bind.
        #[arg(long, required = true)]
        endpoint: Vec<String>,
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
    /// The history store (the Nommer consumer's database): import, query, user activity.
    History(history::HistoryArgs),
}

/// The consumers this binary ships.
fn shipped_consumers() -> Vec<ConsumerFactory> {
    vec![NullConsumer::factory(), fedhub_history::factory()]
}

fn main() -> ExitCode {
    fedhub::init_logging();
    let cli = Cli::parse();
    match dispatch(cli.command) {
        Ok(code) => code,
        Err(error) => {
            tracing::error!("{error:#}");
            eprintln!("fedhub: {error:#}");
            ExitCode::from(2)
        }
    }
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
            topic_prefix,
            environment,
            wait_subscribers,
            wait_secs,
        } => {
            let options = PublishOptions {
                endpoint,
                bind,
                topic,
                topic_prefix,
                environment,
                wait_subscribers,
                wait_secs,
            };
            let stdin = std::io::stdin();
            let summary = fedhub_tools::publish(
                &options,
                json.as_deref(),
                stdin.lock(),
                std::io::stdout().lock(),
                std::io::stderr(),
            )?;
            Ok(if summary.rejected > 0 {
                ExitCode::from(1)
            } else {
                ExitCode::SUCCESS
            })
        }
        Command::Tail {
            endpoint,
            bind,
            topic,
            count,
            idle_timeout_secs,
        } => {
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
                if fedhub::hub::wait_for_shutdown_signal().is_ok() {
                    signal_stop.store(true, Ordering::Release);
                }
            });
            let mut out = std::io::stdout().lock();
            fedhub_tools::tail(&options, stop, &mut out, std::io::stderr())?;
            out.flush()?;
            Ok(ExitCode::SUCCESS)
        }
        Command::CollectdExec(args) => collectd::collectd_exec(args),
        Command::History(args) => history::history(args),
    }
}

fn run(path: Option<PathBuf>, demo: bool, demo_rate: f64, check: bool) -> anyhow::Result<ExitCode> {
    let mut config = Config::load(path.as_deref())?;
    if path.is_none() {
        let embedded = Config::embedded_default();
        for (name, section) in embedded.consumers {
            config.consumers.entry(name).or_insert(section);
        }
        // The history store runs too, on its embedded SQLite file in the working
        // directory, so /datagrepper/raw answers out of the box.
        config
            .consumers
            .entry(fedhub_history::consumer::NAME.to_string())
            .or_default()
            .entry("enabled")
            .or_insert(serde_json::Value::Bool(true));
    }
    if demo {
        config.hub.status_log_interval_secs = config.hub.status_log_interval_secs.min(5);
        anyhow::ensure!(
            !config.bus.inbound.is_empty(),
            "--demo publishes into the inbound socket: set [bus] inbound"
        );
    }
    // Building checks that every [consumers.X] section names a shipped consumer.
    let builder = shipped_consumers()
        .into_iter()
        .fold(HubBuilder::new(config.clone()), HubBuilder::consumer);
    if check {
        let enabled = builder.check()?;
        println!(
            "configuration is valid; consumers enabled: {}",
            enabled.join(", ")
        );
        return Ok(ExitCode::SUCCESS);
    }
    let hub = builder.start()?;
    let demo_stop = Arc::new(AtomicBool::new(false));
    let demo_thread = if demo {
        let endpoint = hub
            .inbound_endpoint()
            .context("the inbound socket is not bound")?
            .replace("0.0.0.0", "127.0.0.1");
        tracing::info!(endpoint = %endpoint, rate = demo_rate, "demo traffic starting");
        Some(fedhub_tools::demo::spawn_demo_publisher(
            &zmq_context(),
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
        tracing::info!("metrics at http://{addr}/metrics, state at http://{addr}/state");
    }
    fedhub::hub::wait_for_shutdown_signal()?;
    tracing::info!("shutdown requested");
    demo_stop.store(true, Ordering::Release);
    if let Some(thread) = demo_thread {
        let _ = thread.join();
    }
    let report = hub.shutdown();
    Ok(if report.undrained.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn zmq_context() -> fedhub::bus::ZmqContext {
    fedhub::bus::ZmqContext::new()
}
