//! `fedhub-bench`: the benchmark tools `benches/run.sh` drives. Each subcommand
//! prints one JSON line on stdout (and to `--out` when given).

use std::io::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use fedhub_bench::backlog::{self, BacklogOptions};
use fedhub_bench::bare::{self, BareOptions, Mode};
use fedhub_bench::corpus::Corpus;
use fedhub_bench::publisher::{self, PublishOptions};
use fedhub_bench::scrape::{self, ScrapeOptions};
use fedhub_bench::watch::{self, Source, WatchOptions};
use fedhub_bench::{latency, probe, report, sysmon};
use serde_json::Value;

#[derive(Parser)]
#[command(
    name = "fedhub-bench",
    about = "fedhub benchmark tools (driven by benches/run.sh)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate a corpus of pre-encoded fedmsg messages and save it.
    Corpus {
        /// Messages.
        #[arg(long)]
        count: usize,
        /// Generator seed.
        #[arg(long, default_value_t = 2)]
        seed: u64,
        /// Output file.
        #[arg(long)]
        out: PathBuf,
        /// Sign every message with this PEM RSA key (fedmsg's x509 signature;
        /// needs --sign-cert).
        #[arg(long, requires = "sign_cert")]
        sign_key: Option<PathBuf>,
        /// The certificate of --sign-key.
        #[arg(long, requires = "sign_key")]
        sign_cert: Option<PathBuf>,
    },
    /// Publish a corpus (PUB, or XPUB with --wait-sub) and print the send rate.
    Pub {
        #[command(flatten)]
        publish: PublishArgs,
        /// Also write the JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// A bare SUB: count (or parse) messages and print the receive rate.
    Sub {
        /// Address to bind (repeatable).
        #[arg(long)]
        bind: Vec<String>,
        /// Address to connect to (repeatable).
        #[arg(long)]
        connect: Vec<String>,
        /// Stop after this many messages.
        #[arg(long)]
        count: u64,
        /// What to do with each message.
        #[arg(long, value_enum, default_value = "count")]
        mode: Mode,
        /// Stop when no message came for this long after the first.
        #[arg(long, default_value_t = 5.0)]
        idle_timeout_s: f64,
        /// Stop when nothing came at all for this long.
        #[arg(long, default_value_t = 60.0)]
        max_wait_s: f64,
        /// ZMQ_RCVHWM (0 = unlimited, as fedhub).
        #[arg(long, default_value_t = 0)]
        rcvhwm: i32,
        /// Also write the JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Follow a hub through a burst: consumed rate, loss, RSS, CPU.
    Watch {
        #[command(flatten)]
        source: SourceArgs,
        /// The hub's PID (for /proc).
        #[arg(long)]
        pid: u32,
        /// Handled count that ends the burst.
        #[arg(long)]
        until: u64,
        /// Counter polling period, ms.
        #[arg(long, default_value_t = 20)]
        poll_ms: u64,
        /// RSS sampling period, ms.
        #[arg(long, default_value_t = 100)]
        rss_ms: u64,
        /// Keep sampling this long after the target (memory after drain), s.
        #[arg(long, default_value_t = 0.0)]
        after_s: f64,
        /// Give up after no progress for this long, s.
        #[arg(long, default_value_t = 6.0)]
        stall_s: f64,
        /// Give up when nothing was handled for this long, s.
        #[arg(long, default_value_t = 60.0)]
        max_wait_s: f64,
        /// Write every sample here (CSV).
        #[arg(long)]
        series: Option<PathBuf>,
        /// Also write the JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Publish a burst while sampling reported backlog beside true backlog.
    Backlog {
        #[command(flatten)]
        source: SourceArgs,
        #[command(flatten)]
        publish: PublishArgs,
        /// Sampling period, ms.
        #[arg(long, default_value_t = 50)]
        poll_ms: u64,
        /// Give up after no progress for this long, s.
        #[arg(long, default_value_t = 6.0)]
        stall_s: f64,
        /// Write every sample here (CSV).
        #[arg(long)]
        series: Option<PathBuf>,
        /// Also write the JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// CPU cost per message of the ingress steps (one thread, no sockets).
    Cost {
        /// Corpus file (from `corpus`).
        #[arg(long)]
        corpus: PathBuf,
        /// Messages to time per step.
        #[arg(long, default_value_t = 200_000)]
        count: usize,
        /// Also write the JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Scrape a hub's HTTP paths every tick (and read its monitoring socket) until
    /// SIGINT/SIGTERM; print the latency of each path.
    Scrape {
        /// fedhub's HTTP address (host:port or http://host:port).
        #[arg(long)]
        url: String,
        /// Paths fetched at every tick, in order (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "/metrics,/state")]
        paths: Vec<String>,
        /// Time between the starts of two ticks, ms.
        #[arg(long, default_value_t = 1000.0)]
        interval_ms: f64,
        /// A moksha monitoring socket to read with a SUB (e.g. tcp://127.0.0.1:PORT).
        #[arg(long)]
        monitor: Option<String>,
        /// Timeout of one request, s.
        #[arg(long, default_value_t = 5.0)]
        timeout_s: f64,
        /// Stop after this long even without a signal, s.
        #[arg(long, default_value_t = 600.0)]
        max_s: f64,
        /// Write every request here (CSV).
        #[arg(long)]
        series: Option<PathBuf>,
        /// Also write the JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Print the tables and the JSON summary of a run directory.
    Report {
        /// The run directory.
        dir: PathBuf,
        /// Also write the JSON summary here.
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
    /// Record what else is running until PID exits (CSV, once per period).
    Sysmon {
        /// The driver's PID: it and its descendants are the benchmark.
        #[arg(long)]
        root: u32,
        /// Processes whose command line contains this are the benchmark too.
        #[arg(long, default_value = "")]
        marker: String,
        /// Sampling period, ms.
        #[arg(long, default_value_t = 1000)]
        period_ms: u64,
        /// CSV file (appended).
        #[arg(long)]
        out: PathBuf,
    },
    /// Print free TCP ports on 127.0.0.1, one per line.
    FreePort {
        /// How many.
        #[arg(long, default_value_t = 1)]
        count: usize,
    },
    /// Run a fedhub whose only consumer records end-to-end latency (send -> start
    /// of consume, from the publisher's `sent_ns` stamp); print p50/p99/max.
    LatencyHub {
        /// fedhub TOML config with a [consumers.LatencyConsumer] section.
        #[arg(short = 'c', long = "config")]
        config: PathBuf,
        /// Stop after this long even if not everything was recorded, s.
        #[arg(long, default_value_t = 600.0)]
        max_s: f64,
        /// Write count and p50/p99/max per window of consume time here (CSV).
        #[arg(long)]
        series: Option<PathBuf>,
        /// The series' window, ms.
        #[arg(long, default_value_t = 100)]
        window_ms: u64,
        /// Also write the JSON here.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Wait until a hub's /state answers.
    WaitHttp {
        /// host:port or http://host:port.
        #[arg(long)]
        url: String,
        /// Give up after this long, s.
        #[arg(long, default_value_t = 30.0)]
        timeout_s: f64,
    },
}

#[derive(Args, Clone)]
struct PublishArgs {
    /// Corpus file (from `corpus`); without it, --count messages are generated first.
    #[arg(long)]
    corpus: Option<PathBuf>,
    /// Messages to send.
    #[arg(long)]
    count: usize,
    /// Address to bind (repeatable).
    #[arg(long = "pub-bind")]
    bind: Vec<String>,
    /// Address to connect to (repeatable).
    #[arg(long = "pub-connect")]
    connect: Vec<String>,
    /// Messages per second in total (0 = as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Subscriptions each socket waits for (XPUB handshake; 0 = plain PUB).
    #[arg(long, default_value_t = 1)]
    wait_sub: usize,
    /// Seconds to wait for them.
    #[arg(long, default_value_t = 30.0)]
    wait_timeout_s: f64,
    /// Sending threads (each its own socket; connect only).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// ZMQ_SNDHWM (0 = unlimited).
    #[arg(long, default_value_t = 0)]
    sndhwm: i32,
    /// Seconds closing may wait for queued messages.
    #[arg(long, default_value_t = 60.0)]
    linger_s: f64,
    /// Stamp each body's msg with sent_ns (wall clock at send, ns since the epoch).
    #[arg(long)]
    stamp: bool,
    /// With --rate: sleep until this long before each send's due time, then spin, us.
    #[arg(long, default_value_t = 100.0)]
    spin_us: f64,
}

impl PublishArgs {
    fn options(&self) -> PublishOptions {
        PublishOptions {
            count: self.count,
            bind: self.bind.clone(),
            connect: self.connect.clone(),
            rate: self.rate,
            wait_sub: self.wait_sub,
            wait_timeout: Duration::from_secs_f64(self.wait_timeout_s),
            threads: self.threads,
            sndhwm: self.sndhwm,
            linger: Duration::from_secs_f64(self.linger_s),
            stamp: self.stamp,
            spin: Duration::from_secs_f64(self.spin_us.max(0.0) / 1e6),
        }
    }

    fn corpus(&self) -> anyhow::Result<Corpus> {
        match &self.corpus {
            Some(path) => Corpus::load(path),
            None => Ok(Corpus::generate(self.count, 2)),
        }
    }
}

#[derive(Args, Clone)]
struct SourceArgs {
    /// fedhub's HTTP address (host:port or http://host:port).
    #[arg(long)]
    url: Option<String>,
    /// The consumer's name in /state.
    #[arg(long, default_value = "NullConsumer")]
    consumer: String,
    /// The Python peer's consumer stats file ($PEER_STATS) instead of --url.
    #[arg(long)]
    peer_stats: Option<PathBuf>,
}

impl SourceArgs {
    fn source(&self) -> anyhow::Result<Source> {
        match (&self.url, &self.peer_stats) {
            (Some(url), None) => Ok(Source::Hub {
                addr: probe::host_port(url).to_string(),
                consumer: self.consumer.clone(),
            }),
            (None, Some(path)) => Ok(Source::Peer {
                stats_file: path.clone(),
            }),
            _ => bail!("give exactly one of --url and --peer-stats"),
        }
    }
}

fn emit(value: &Value, out: Option<&PathBuf>) -> anyhow::Result<()> {
    let line = serde_json::to_string(value)?;
    println!("{line}");
    if let Some(path) = out {
        std::fs::write(path, format!("{line}\n"))
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Corpus {
            count,
            seed,
            out,
            sign_key,
            sign_cert,
        } => {
            let started = Instant::now();
            let corpus = match (sign_key, sign_cert) {
                (Some(key), Some(cert)) => {
                    let key = fedhub::SigningKey::from_files(&key, &cert, "bench")?;
                    Corpus::generate_signed(count, seed, &key)
                }
                _ => Corpus::generate(count, seed),
            };
            corpus.save(&out)?;
            emit(
                &serde_json::json!({
                    "tool": "corpus",
                    "messages": corpus.len(),
                    "body_bytes_mean": fedhub_bench::round(corpus.mean_body_bytes(), 1),
                    "seconds": fedhub_bench::round(started.elapsed().as_secs_f64(), 3),
                    "file": out,
                }),
                None,
            )
        }
        Command::Pub { publish, out } => {
            let corpus = publish.corpus()?;
            let result = publisher::publish(&corpus, &publish.options(), None)?;
            emit(&result, out.as_ref())
        }
        Command::Sub {
            bind,
            connect,
            count,
            mode,
            idle_timeout_s,
            max_wait_s,
            rcvhwm,
            out,
        } => {
            let result = bare::receive(&BareOptions {
                bind,
                connect,
                count,
                mode,
                idle_timeout: Duration::from_secs_f64(idle_timeout_s),
                max_wait: Duration::from_secs_f64(max_wait_s),
                rcvhwm,
            })?;
            emit(&result, out.as_ref())
        }
        Command::Watch {
            source,
            pid,
            until,
            poll_ms,
            rss_ms,
            after_s,
            stall_s,
            max_wait_s,
            series,
            out,
        } => {
            let result = watch::watch(&WatchOptions {
                source: source.source()?,
                pid,
                until,
                poll: Duration::from_millis(poll_ms.max(1)),
                rss_every: Duration::from_millis(rss_ms.max(1)),
                after: Duration::from_secs_f64(after_s),
                stall: Duration::from_secs_f64(stall_s),
                max_wait: Duration::from_secs_f64(max_wait_s),
                series,
            })?;
            emit(&result, out.as_ref())
        }
        Command::Backlog {
            source,
            publish,
            poll_ms,
            stall_s,
            series,
            out,
        } => {
            let corpus = publish.corpus()?;
            let result = backlog::run(
                &corpus,
                &BacklogOptions {
                    source: source.source()?,
                    publish: publish.options(),
                    poll: Duration::from_millis(poll_ms.max(1)),
                    stall: Duration::from_secs_f64(stall_s),
                    series,
                },
            )?;
            emit(&result, out.as_ref())
        }
        Command::Cost { corpus, count, out } => {
            let corpus = Corpus::load(&corpus)?;
            emit(&fedhub_bench::cost::run(&corpus, count), out.as_ref())
        }
        Command::Scrape {
            url,
            paths,
            interval_ms,
            monitor,
            timeout_s,
            max_s,
            series,
            out,
        } => {
            let result = scrape::run(&ScrapeOptions {
                addr: probe::host_port(&url).to_string(),
                paths,
                interval: Duration::from_secs_f64(interval_ms.max(0.0) / 1000.0),
                monitor,
                timeout: Duration::from_secs_f64(timeout_s),
                max: Duration::from_secs_f64(max_s),
                series,
            })?;
            emit(&result, out.as_ref())
        }
        Command::Report { dir, json_out } => {
            let mut text = String::new();
            let summary = report::report(&dir, &mut text)?;
            print!("{text}");
            let pretty = serde_json::to_string_pretty(&summary)?;
            if let Some(path) = json_out {
                std::fs::write(&path, format!("{pretty}\n"))
                    .with_context(|| format!("writing {}", path.display()))?;
            }
            println!(
                "\n== JSON summary ==\n{}",
                serde_json::to_string(&compact(&summary))?
            );
            std::io::stdout().flush()?;
            Ok(())
        }
        Command::Sysmon {
            root,
            marker,
            period_ms,
            out,
        } => sysmon::run(
            root,
            &marker,
            Duration::from_millis(period_ms.max(100)),
            &out,
        ),
        Command::FreePort { count } => {
            // Hold every listener until all are chosen, so the ports differ.
            let listeners: Vec<std::net::TcpListener> = (0..count)
                .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
                .collect::<Result<_, _>>()?;
            for l in &listeners {
                println!("{}", l.local_addr()?.port());
            }
            Ok(())
        }
        Command::LatencyHub {
            config,
            max_s,
            series,
            window_ms,
            out,
        } => {
            fedhub::init_logging();
            let result = latency::run_hub(&latency::HubOptions {
                config,
                max: Duration::from_secs_f64(max_s),
                series,
                window_ms,
            })?;
            emit(&result, out.as_ref())
        }
        Command::WaitHttp { url, timeout_s } => {
            let addr = probe::host_port(&url).to_string();
            let deadline = Instant::now() + Duration::from_secs_f64(timeout_s);
            loop {
                if probe::http_get(&addr, "/state", Duration::from_secs(1)).is_ok() {
                    return Ok(());
                }
                if Instant::now() >= deadline {
                    bail!("{addr}/state did not answer within {timeout_s} s");
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

/// The summary without the per-run raw documents (those stay in the JSON file).
fn compact(summary: &Value) -> Value {
    match summary {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(k, _)| k.as_str() != "runs" && k.as_str() != "series")
                .map(|(k, v)| (k.clone(), compact(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(compact).collect()),
        other => other.clone(),
    }
}
