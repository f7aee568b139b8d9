//! Putting it together: consumers on their own arbiters, the HTTP server, the
//! publisher and the ingress thread, started in that order and stopped in reverse.
//!
//! Startup: build every enabled consumer from its config section, start one
//! actor per consumer (waiting for each `start`), start HTTP, then connect the
//! bus. Shutdown: stop ingress, let mailboxes drain within
//! `[hub] shutdown_grace_secs`, stop consumers, stop HTTP and the actor system.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use actix::{Actor, Recipient};

use crate::actor::{ActorSetup, ConsumerActor, Deliver, StopConsumer};
use crate::bus::{BusError, Publisher, PublisherThread, SocketPlan, Subscriber, SubscriberOptions};
use crate::config::{Config, ConfigError, ConsumerSection, Settings};
use crate::consumer::{Consumer, ConsumerFactory, Context, HttpRoutes};
use crate::http::HttpState;
use crate::memory::Trimmer;
use crate::monitoring::{ConsumerInfo, DocumentBuilder, MonitoringSocket};
use crate::router::{Route, Router};
use crate::stats::Stats;
use crate::topic::{subscriptions, TopicSet};

/// Why the hub could not start.
#[derive(Debug, thiserror::Error)]
pub enum HubError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A socket could not be set up.
    #[error(transparent)]
    Bus(#[from] BusError),
    /// A consumer's `start` failed.
    #[error("consumer {name} failed to start: {reason}")]
    ConsumerStart {
        /// The consumer.
        name: String,
        /// Its error.
        reason: String,
    },
    /// The HTTP server could not start.
    #[error("http server on {listen}: {reason}")]
    Http {
        /// The configured address.
        listen: String,
        /// What went wrong.
        reason: String,
    },
    /// The actor system failed to come up.
    #[error("actor system: {0}")]
    System(String),
}

/// Builds a hub from a config and the consumers it may run.
pub struct HubBuilder {
    config: Config,
    factories: Vec<ConsumerFactory>,
}

/// A consumer built and ready to move onto its thread.
struct Prepared {
    name: String,
    consumer: Box<dyn Consumer>,
    topics: TopicSet,
    section: ConsumerSection,
    settings: Settings,
}

struct SystemReady {
    system: actix::System,
    arbiters: Vec<actix::Arbiter>,
    routes: Vec<(String, Recipient<Deliver>, Recipient<StopConsumer>)>,
    server: Option<actix_web::dev::ServerHandle>,
    http_addr: Option<SocketAddr>,
}

impl HubBuilder {
    /// A builder with no consumers registered.
    pub fn new(config: Config) -> HubBuilder {
        HubBuilder {
            config,
            factories: Vec::new(),
        }
    }

    /// Registers a consumer the config may enable.
    pub fn consumer(mut self, factory: ConsumerFactory) -> HubBuilder {
        self.factories.push(factory);
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Builds the enabled consumers; rejects sections naming unknown consumers.
    fn prepare(&self) -> Result<Vec<Prepared>, ConfigError> {
        for section in self.config.consumers.keys() {
            if !self
                .factories
                .iter()
                .any(|f| f.name().eq_ignore_ascii_case(section))
            {
                let known: Vec<&str> = self.factories.iter().map(|f| f.name()).collect();
                return Err(ConfigError::Invalid(format!(
                    "[consumers.{section}]: no such consumer (available: {})",
                    known.join(", ")
                )));
            }
        }
        let mut prepared = Vec::new();
        for factory in &self.factories {
            let raw = self
                .config
                .consumers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(factory.name()))
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let section = ConsumerSection::parse(factory.name(), &raw)?;
            let enabled = section.enabled.unwrap_or(factory.is_enabled_by_default());
            if !enabled {
                tracing::info!(consumer = factory.name(), "disabled by config");
                continue;
            }
            let topic_list = section
                .topics
                .clone()
                .unwrap_or_else(|| factory.default_topics().to_vec());
            if topic_list.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "[consumers.{}] topics is empty: the consumer would receive nothing",
                    factory.name()
                )));
            }
            let topics = TopicSet::new(&topic_list, self.config.bus.strict_topics);
            for pattern in topics.patterns() {
                if pattern.has_inner_wildcard() {
                    tracing::warn!(
                        consumer = factory.name(),
                        topic = pattern.as_str(),
                        "topic has a '*' before its end: topics are prefixes, not globs, so it matches only topics starting with {:?}",
                        pattern.subscription()
                    );
                }
            }
            let settings = Settings::new(factory.name(), section.settings.clone());
            let consumer = factory.build(&settings)?;
            tracing::info!(consumer = factory.name(), topics = ?topic_list, capacity = section.capacity_messages, when_full = ?section.when_full, "enabled by config");
            prepared.push(Prepared {
                name: factory.name().to_string(),
                consumer,
                topics,
                section,
                settings,
            });
        }
        Ok(prepared)
    }

    /// Validates the configuration and builds every enabled consumer without
    /// starting anything; returns the names of the consumers that would run.
    pub fn check(&self) -> Result<Vec<String>, HubError> {
        self.config.validate()?;
        Ok(self.prepare()?.into_iter().map(|p| p.name).collect())
    }

    /// Starts the hub. Returns once every consumer has started and the bus is connected.
    pub fn start(self) -> Result<RunningHub, HubError> {
        let config = self.config.clone();
        config.validate()?;
        let prepared = self.prepare()?;
        let stats = Stats::new();
        let zmq = zmq::Context::new();
        let (publisher, publisher_thread) = PublisherThread::start(
            &zmq,
            &config.publish,
            &config.hub.topic_prefix,
            &config.hub.environment,
            stats.clone(),
        )?;
        let shutting_down = Arc::new(AtomicBool::new(false));

        // Everything the actor thread needs, moved there in one piece.
        let http_routes: Vec<HttpRoutes> = prepared
            .iter()
            .filter_map(|p| p.consumer.http_routes())
            .collect();
        let names: Vec<String> = prepared.iter().map(|p| p.name.clone()).collect();
        let infos: Vec<ConsumerInfo> = prepared
            .iter()
            .map(|p| ConsumerInfo {
                name: p.name.clone(),
                module: p.consumer.module().to_string(),
                topic: p.topics.to_monitoring_json(),
            })
            .collect();
        let mut topic_sets = Vec::new();
        let mut policies = Vec::new();
        let mut starts: Vec<(String, Receiver<Result<(), String>>)> = Vec::new();
        let mut actors = Vec::new();
        for p in prepared {
            let (started_tx, started_rx) = channel();
            let consumer_stats = stats.consumer(&p.name);
            consumer_stats.set_capacity(p.section.capacity_messages);
            let ctx = Context::new(&p.name, p.settings, publisher.clone(), stats.clone());
            let setup = ActorSetup {
                name: p.name.clone(),
                stats: consumer_stats,
                capacity: p.section.capacity_messages,
                retries: p.section.retries,
                dead_letter_file: p.section.dead_letter_file.clone(),
                started_tx,
                shutting_down: shutting_down.clone(),
            };
            topic_sets.push(p.topics);
            policies.push((p.section.when_full, p.section.capacity_messages));
            starts.push((p.name.clone(), started_rx));
            actors.push((p.name, p.consumer, ctx, setup));
        }

        let (ready_tx, ready_rx) = channel::<Result<SystemReady, HubError>>();
        let listen = config.http.listen.clone();
        let nice = config.hub.data_threads_nice;
        let http_state = HttpState {
            stats: stats.clone(),
            consumers: Arc::new(names.clone()),
        };
        let system_thread = std::thread::Builder::new()
            .name("fedhub-system".into())
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    let ready =
                        start_actors_and_http(actors, listen, http_state, http_routes, nice);
                    let _ = ready_tx.send(ready);
                });
                let _ = system.run();
            })
            .map_err(|e| HubError::System(e.to_string()))?;
        let ready = ready_rx
            .recv()
            .map_err(|_| HubError::System("the actor system exited during startup".into()))??;

        let mut hub = RunningHub {
            stats: stats.clone(),
            config: config.clone(),
            http_addr: ready.http_addr,
            subscriber: None,
            publisher,
            publisher_thread,
            system: ready.system,
            system_thread: Some(system_thread),
            arbiters: ready.arbiters,
            server: ready.server,
            stops: ready
                .routes
                .iter()
                .map(|(n, _, s)| (n.clone(), s.clone()))
                .collect(),
            shutting_down,
            status_thread: None,
            monitoring: None,
        };

        let timeout = Duration::from_secs(config.hub.start_timeout_secs.max(1));
        for (name, rx) in &starts {
            let outcome = rx.recv_timeout(timeout);
            let failure = match outcome {
                Ok(Ok(())) => None,
                Ok(Err(reason)) => Some(reason),
                Err(_) => Some(format!("did not start within {} s", timeout.as_secs())),
            };
            if let Some(reason) = failure {
                hub.stop_inner();
                return Err(HubError::ConsumerStart {
                    name: name.clone(),
                    reason,
                });
            }
        }

        let routes: Vec<Route> = ready
            .routes
            .into_iter()
            .zip(topic_sets)
            .zip(policies)
            .map(|(((name, mailbox, _), topics), (when_full, capacity))| {
                Route::new(
                    name.clone(),
                    topics,
                    mailbox,
                    stats.consumer(&name),
                    when_full,
                    capacity,
                )
            })
            .collect();
        let router = Router::new(routes, stats.clone());
        let plans = socket_plans(&config);
        let options = SubscriberOptions {
            subscriptions: subscriptions(router.admission.topic_sets()),
            rcvhwm: config.bus.rcvhwm_messages,
            reconnect_ivl_ms: config.bus.reconnect_ivl_ms,
            reconnect_ivl_max_ms: config.bus.reconnect_ivl_max_ms,
            tcp_keepalive: config.bus.tcp_keepalive.then_some((
                config.bus.tcp_keepalive_cnt,
                config.bus.tcp_keepalive_idle_secs,
                config.bus.tcp_keepalive_intvl_secs,
            )),
            max_message_bytes: config.bus.max_message_bytes,
            thread_nice: config.hub.data_threads_nice,
        };
        match Subscriber::start(&zmq, &plans, &options, router, stats.clone()) {
            Ok(subscriber) => hub.subscriber = Some(subscriber),
            Err(e) => {
                hub.stop_inner();
                return Err(e.into());
            }
        }
        if !config.monitoring.socket.is_empty() {
            let builder =
                DocumentBuilder::new(stats.clone(), infos, config.monitoring.interval_secs);
            match MonitoringSocket::start(&zmq, &config.monitoring, builder) {
                Ok(socket) => hub.monitoring = Some(socket),
                Err(e) => {
                    hub.stop_inner();
                    return Err(e.into());
                }
            }
        }
        hub.status_thread = start_housekeeping(&config, stats, hub.shutting_down.clone());
        tracing::info!(
            name = %config.hub.name,
            consumers = ?names,
            http = ?hub.http_addr,
            "hub running"
        );
        Ok(hub)
    }
}

fn start_actors_and_http(
    actors: Vec<(String, Box<dyn Consumer>, Context, ActorSetup)>,
    listen: String,
    http_state: HttpState,
    http_routes: Vec<HttpRoutes>,
    nice: i32,
) -> Result<SystemReady, HubError> {
    let mut arbiters = Vec::new();
    let mut routes = Vec::new();
    for (name, consumer, ctx, setup) in actors {
        let arbiter = actix::Arbiter::new();
        // The closure runs on the consumer's own thread.
        let addr = ConsumerActor::start_in_arbiter(&arbiter.handle(), move |_| {
            crate::priority::lower_current_thread(nice);
            ConsumerActor::new(consumer, ctx, setup)
        });
        routes.push((name, addr.clone().recipient(), addr.recipient()));
        arbiters.push(arbiter);
    }
    let (server, http_addr) = if listen.is_empty() {
        (None, None)
    } else {
        let routes_for_app = http_routes.clone();
        let server = actix_web::HttpServer::new(move || {
            let state = http_state.clone();
            let routes = routes_for_app.clone();
            actix_web::App::new().configure(move |cfg| crate::http::configure(cfg, state, &routes))
        })
        .workers(1)
        .disable_signals()
        .shutdown_timeout(1)
        .bind(&listen)
        .map_err(|e| HubError::Http {
            listen: listen.clone(),
            reason: e.to_string(),
        })?;
        let addr = server.addrs().first().copied();
        let running = server.run();
        let handle = running.handle();
        actix::spawn(async move {
            if let Err(e) = running.await {
                tracing::error!(error = %e, "http server failed");
            }
        });
        tracing::info!(address = ?addr, "http server listening");
        (Some(handle), addr)
    };
    Ok(SystemReady {
        system: actix::System::current(),
        arbiters,
        routes,
        server,
        http_addr,
    })
}

/// One SUB socket per `endpoints` key, plus the bound inbound socket.
fn socket_plans(config: &Config) -> Vec<SocketPlan> {
    let mut plans: Vec<SocketPlan> = config
        .bus
        .endpoints
        .iter()
        .map(|(name, addrs)| SocketPlan {
            name: name.clone(),
            connect: addrs.to_vec(),
            bind: vec![],
        })
        .filter(|p| !p.connect.is_empty())
        .collect();
    if !config.bus.inbound.is_empty() {
        plans.push(SocketPlan {
            name: "inbound".into(),
            connect: vec![],
            bind: vec![config.bus.inbound.clone()],
        });
    }
    plans
}

/// The hub's housekeeping thread: the periodic status log (every
/// `[hub] status_log_interval_secs`, 0 for none) and, once a burst is over,
/// returning the freed memory to the system (see [`crate::memory`]).
fn start_housekeeping(
    config: &Config,
    stats: Arc<Stats>,
    stop: Arc<AtomicBool>,
) -> Option<JoinHandle<()>> {
    let status_every = config.hub.status_log_interval_secs;
    std::thread::Builder::new()
        .name("fedhub-housekeeping".into())
        .spawn(move || {
            let mut last_status = Instant::now();
            let mut last_check = Instant::now();
            let mut trimmer = Trimmer::new();
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(Duration::from_millis(100));
                let now = Instant::now();
                if now.duration_since(last_check) >= Duration::from_secs(1) {
                    last_check = now;
                    let backlog: i64 = stats.consumers().iter().map(|c| c.backlog()).sum();
                    let received: u64 = stats.buses().iter().map(|b| b.messages()).sum();
                    if trimmer.observe(backlog, received, now) {
                        let released = crate::memory::release_free_memory();
                        tracing::debug!(backlog, released, "burst over: returned free memory");
                    }
                }
                if status_every == 0 || last_status.elapsed() < Duration::from_secs(status_every) {
                    continue;
                }
                last_status = Instant::now();
                for c in stats.consumers() {
                    tracing::info!(
                        consumer = %c.name(),
                        backlog = c.backlog(),
                        received = c.received(),
                        handled = c.handled(),
                        exceptions = c.exceptions(),
                        dropped = c.dropped(),
                        "status"
                    );
                }
            }
        })
        .ok()
}

/// What shutdown left behind.
#[derive(Debug, Clone, Default)]
pub struct ShutdownReport {
    /// `(consumer, messages still queued)` for consumers that did not drain in time.
    pub undrained: Vec<(String, i64)>,
}

/// A running hub. Dropping it shuts it down.
pub struct RunningHub {
    stats: Arc<Stats>,
    config: Config,
    http_addr: Option<SocketAddr>,
    subscriber: Option<Subscriber>,
    publisher: Publisher,
    publisher_thread: PublisherThread,
    system: actix::System,
    system_thread: Option<JoinHandle<()>>,
    arbiters: Vec<actix::Arbiter>,
    server: Option<actix_web::dev::ServerHandle>,
    stops: Vec<(String, Recipient<StopConsumer>)>,
    shutting_down: Arc<AtomicBool>,
    status_thread: Option<JoinHandle<()>>,
    monitoring: Option<MonitoringSocket>,
}

impl RunningHub {
    /// The monitoring socket's actual address (port resolved), if enabled.
    pub fn monitoring_endpoint(&self) -> Option<&str> {
        self.monitoring.as_ref().map(|m| m.endpoint())
    }

    /// The stats registry.
    pub fn stats(&self) -> &Arc<Stats> {
        &self.stats
    }

    /// The HTTP server's address (port resolved), if enabled.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The inbound socket's actual address (port resolved), if enabled.
    pub fn inbound_endpoint(&self) -> Option<&str> {
        self.subscriber.as_ref().and_then(|s| {
            s.bound_endpoints()
                .iter()
                .find(|(name, _)| name == "inbound")
                .map(|(_, addr)| addr.as_str())
        })
    }

    /// Actual addresses of the publish socket's binds.
    pub fn publish_endpoints(&self) -> &[String] {
        self.publisher_thread.bound_endpoints()
    }

    /// The hub's publisher.
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// Stops ingress, drains mailboxes (within the grace period), stops
    /// consumers, HTTP and the actor system.
    pub fn shutdown(mut self) -> ShutdownReport {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> ShutdownReport {
        if let Some(mut subscriber) = self.subscriber.take() {
            subscriber.stop();
        }
        let grace = Duration::from_secs(self.config.hub.shutdown_grace_secs);
        let started = Instant::now();
        while started.elapsed() < grace && self.stats.consumers().iter().any(|c| c.backlog() > 0) {
            std::thread::sleep(Duration::from_millis(20));
        }
        let undrained: Vec<(String, i64)> = self
            .stats
            .consumers()
            .iter()
            .filter(|c| c.backlog() > 0)
            .map(|c| (c.name().to_string(), c.backlog()))
            .collect();
        for (name, left) in &undrained {
            tracing::warn!(consumer = %name, messages = left, "shutting down before the mailbox drained: these messages are not handled");
        }
        self.shutting_down.store(true, Ordering::Release);
        let (done_tx, done_rx) = channel();
        let mut waiting = 0;
        for (_, stop) in self.stops.drain(..) {
            if stop
                .try_send(StopConsumer {
                    done: done_tx.clone(),
                })
                .is_ok()
            {
                waiting += 1;
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while waiting > 0 {
            let left = deadline.saturating_duration_since(Instant::now());
            match done_rx.recv_timeout(left) {
                Ok(name) => {
                    tracing::debug!(consumer = %name, "consumer stopped");
                    waiting -= 1;
                }
                Err(_) => break,
            }
        }
        if let Some(server) = self.server.take() {
            let (tx, rx) = channel();
            let spawned = self.system.arbiter().spawn(async move {
                server.stop(true).await;
                let _ = tx.send(());
            });
            if spawned {
                let _ = rx.recv_timeout(Duration::from_secs(3));
            }
        }
        for arbiter in self.arbiters.drain(..) {
            arbiter.stop();
            join_within(
                move || {
                    let _ = arbiter.join();
                },
                Duration::from_secs(5),
            );
        }
        self.system.stop();
        if let Some(thread) = self.system_thread.take() {
            let _ = thread.join();
        }
        self.publisher_thread.stop();
        if let Some(mut monitoring) = self.monitoring.take() {
            monitoring.stop();
        }
        if let Some(thread) = self.status_thread.take() {
            let _ = thread.join();
        }
        tracing::info!("hub stopped");
        ShutdownReport { undrained }
    }
}

impl Drop for RunningHub {
    fn drop(&mut self) {
        if self.system_thread.is_some() {
            self.stop_inner();
        }
    }
}

/// Runs `f` (a join) on a helper thread and waits for it at most `limit`: a
/// consumer stuck in a handler must not hang shutdown.
fn join_within(f: impl FnOnce() + Send + 'static, limit: Duration) {
    let (tx, rx) = channel();
    let spawned = std::thread::Builder::new().spawn(move || {
        f();
        let _ = tx.send(());
    });
    if spawned.is_ok() && rx.recv_timeout(limit).is_err() {
        tracing::warn!("a consumer thread did not stop in time; leaving it behind");
    }
}

/// Starts the hub and runs it until `shutdown` completes (the binary passes
/// SIGINT/SIGTERM; tests pass a channel).
pub fn run(
    builder: HubBuilder,
    shutdown: impl Future<Output = ()>,
) -> Result<ShutdownReport, HubError> {
    let hub = builder.start()?;
    let runtime = actix_rt::Runtime::new().map_err(|e| HubError::System(e.to_string()))?;
    runtime.block_on(shutdown);
    tracing::info!("shutdown requested");
    Ok(hub.shutdown())
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use actix_rt::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            first_of(actix_rt::signal::ctrl_c(), terminate.recv()).await;
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only SIGINT stops the hub");
            let _ = actix_rt::signal::ctrl_c().await;
        }
    }
}

/// Waits for whichever of two futures finishes first.
async fn first_of<A: Future, B: Future>(a: A, b: B) {
    let mut a = std::pin::pin!(a);
    let mut b = std::pin::pin!(b);
    std::future::poll_fn(move |cx| {
        if a.as_mut().poll(cx).is_ready() || b.as_mut().poll(cx).is_ready() {
            std::task::Poll::Ready(())
        } else {
            std::task::Poll::Pending
        }
    })
    .await
}

/// Blocks the calling thread until SIGINT or SIGTERM.
pub fn wait_for_shutdown_signal() -> Result<(), HubError> {
    let runtime = actix_rt::Runtime::new().map_err(|e| HubError::System(e.to_string()))?;
    runtime.block_on(shutdown_signal());
    Ok(())
}
