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
use crate::config::{Config, ConfigError, ConsumerSection, Settings, WhenFull};
use crate::consumer::{Consumer, ConsumerError, ConsumerFactory, Context};
use crate::http::{HttpState, MountedRoutes};
use crate::ingress::{SocketPlan, Subscriber, SubscriberOptions};
use crate::memory::Trimmer;
use crate::monitoring::{ConsumerInfo, DocumentBuilder, MonitoringSocket};
use crate::publish::{Publisher, PublisherThread};
use crate::reload::ReloadHook;
use crate::router::{Route, Router};
use crate::security::{SigningKey, TrustError, TrustReloader, Validator};
use crate::socket::BusError;
use crate::stats::Stats;
use crate::status::StatusHistory;
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
    /// The CA certificate, CRL or signing key of `[security]` could not be loaded.
    #[error(transparent)]
    Trust(#[from] TrustError),
    /// A consumer's `start` failed.
    #[error("consumer {name} failed to start: {source}")]
    ConsumerStart {
        /// The consumer.
        name: String,
        /// Its error.
        #[source]
        source: ConsumerError,
    },
    /// The HTTP server could not start.
    #[error("[http] listen = {listen:?}: cannot listen: {source}")]
    Http {
        /// The configured address.
        listen: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// A thread or runtime of the hub could not be started.
    #[error("cannot start the {what}")]
    Thread {
        /// Which one.
        what: &'static str,
        /// The system's error.
        #[source]
        source: std::io::Error,
    },
    /// The actor system's thread ended while the hub was starting.
    #[error("the actor system exited during startup")]
    SystemExited,
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
    http_prefix: Option<String>,
    /// Positions (among the prepared consumers) of those it runs `after`.
    after: Vec<usize>,
}

/// A consumer's actor, once started: its mailbox, its stop handle, and the
/// channel on which its `start` reports.
struct StartedActor {
    name: String,
    mailbox: Recipient<Deliver>,
    stop: Recipient<StopConsumer>,
}

/// What the actor system's thread hands back once it is up.
struct SystemReady {
    system: actix::System,
    arbiters: Vec<actix::Arbiter>,
    actors: Vec<StartedActor>,
    server: Option<actix_web::dev::ServerHandle>,
    http_addr: Option<SocketAddr>,
}

/// Everything the actor system's thread needs, moved there in one piece.
struct ActorSystemPlan {
    actors: Vec<(Box<dyn Consumer>, Context, ActorSetup)>,
    http: crate::config::HttpConfig,
    http_state: HttpState,
    http_routes: Vec<MountedRoutes>,
    nice: i32,
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

    /// Registers several consumers (the list a binary ships).
    pub fn consumers(self, factories: impl IntoIterator<Item = ConsumerFactory>) -> HubBuilder {
        factories.into_iter().fold(self, HubBuilder::consumer)
    }

    /// The embedded defaults (`fedhub run` without a config file): every
    /// registered consumer that declared
    /// [`on_embedded_defaults`](ConsumerFactory::on_embedded_defaults) is enabled,
    /// unless the config already says otherwise.
    pub fn with_embedded_defaults(mut self) -> HubBuilder {
        for factory in self
            .factories
            .iter()
            .filter(|f| f.runs_on_embedded_defaults())
        {
            let section = match self
                .config
                .consumers
                .keys()
                .find(|k| k.eq_ignore_ascii_case(factory.name()))
                .cloned()
            {
                Some(existing) => self.config.consumers.entry(existing),
                None => self.config.consumers.entry(factory.name().to_string()),
            };
            section
                .or_default()
                .entry("enabled")
                .or_insert(serde_json::Value::Bool(true));
        }
        self
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The registered consumers.
    pub fn factories(&self) -> &[ConsumerFactory] {
        &self.factories
    }

    /// Builds the enabled consumers; rejects sections naming unknown consumers
    /// and HTTP prefixes that collide.
    fn prepare(&self) -> Result<Vec<Prepared>, ConfigError> {
        self.reject_unknown_sections()?;
        let mut prepared = Vec::new();
        for factory in &self.factories {
            if let Some(consumer) = self.prepare_one(factory)? {
                prepared.push(consumer);
            }
        }
        let claims: Vec<(&str, &str)> = prepared
            .iter()
            .filter_map(|p| {
                p.http_prefix
                    .as_deref()
                    .map(|prefix| (p.name.as_str(), prefix))
            })
            .collect();
        crate::http::check_prefixes(&claims)?;
        let names: Vec<String> = prepared.iter().map(|p| p.name.clone()).collect();
        let wanted: Vec<Vec<String>> = prepared.iter().map(|p| p.section.after.clone()).collect();
        let resolved = crate::after::resolve(&names, &wanted).map_err(ConfigError::Invalid)?;
        for (p, after) in prepared.iter_mut().zip(resolved) {
            p.after = after;
        }
        Ok(prepared)
    }

    fn reject_unknown_sections(&self) -> Result<(), ConfigError> {
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
        Ok(())
    }

    /// Builds one consumer from its section, or `None` when it is disabled.
    fn prepare_one(&self, factory: &ConsumerFactory) -> Result<Option<Prepared>, ConfigError> {
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
            return Ok(None);
        }
        if let Some(path) = &section.dead_letter_file {
            check_dead_letter_directory(factory.name(), path)?;
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
        if consumer.http_routes().is_some() && factory.prefix().is_none() {
            return Err(ConfigError::Invalid(format!(
                "consumer {} serves HTTP routes but declares no prefix for them (ConsumerFactory::http_prefix)",
                factory.name()
            )));
        }
        tracing::info!(consumer = factory.name(), topics = ?topic_list, capacity = section.capacity_messages, when_full = ?section.when_full, "enabled by config");
        Ok(Some(Prepared {
            name: factory.name().to_string(),
            consumer,
            topics,
            section,
            settings,
            http_prefix: factory.prefix().map(str::to_string),
            after: Vec::new(),
        }))
    }

    /// Validates the configuration and builds every enabled consumer without
    /// starting anything; returns the names of the consumers that would run.
    pub fn check(&self) -> Result<Vec<String>, HubError> {
        self.config.validate()?;
        if self.config.security.validate_signatures {
            Validator::load(&self.config.security, Stats::new().security().clone())?;
        }
        if self.config.security.sign_messages {
            SigningKey::load(&self.config.security)?;
        }
        Ok(self.prepare()?.into_iter().map(|p| p.name).collect())
    }

    /// Starts the hub. Returns once every consumer has started and the bus is
    /// connected. A step that fails stops what the steps before it started
    /// (dropping the partly started hub does that) and names what failed.
    pub fn start(self) -> Result<RunningHub, HubError> {
        self.config.validate()?;
        crate::actor::install_panic_hook();
        let prepared = self.prepare()?;
        let mut hub = RunningHub::with_publisher(self.config)?;
        let routing = hub.start_consumers_and_http(prepared)?;
        hub.wait_until_consumers_started(&routing)?;
        hub.connect_ingress(routing)?;
        hub.start_monitoring_socket()?;
        hub.start_housekeeping();
        tracing::info!(
            name = %hub.config.hub.name,
            consumers = ?hub.consumer_names(),
            http = ?hub.http_addr,
            "hub running"
        );
        Ok(hub)
    }
}

/// A dead-letter file must be creatable: its directory has to exist when the
/// hub starts (the file itself is created on the first dead letter).
fn check_dead_letter_directory(consumer: &str, path: &std::path::Path) -> Result<(), ConfigError> {
    let directory = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => std::path::Path::new("."),
    };
    if directory.is_dir() {
        Ok(())
    } else {
        Err(ConfigError::Invalid(format!(
            "[consumers.{consumer}] dead_letter_file = {:?}: expected a file in an existing directory ({} is not a directory)",
            path.display().to_string(),
            directory.display()
        )))
    }
}

/// What the router needs of each started consumer, and how each reports its start.
struct Routing {
    consumers: Vec<ConsumerRouting>,
}

struct ConsumerRouting {
    name: String,
    topics: TopicSet,
    when_full: WhenFull,
    capacity: usize,
    mailbox: Recipient<Deliver>,
    started: Receiver<Result<(), ConsumerError>>,
    after: Vec<usize>,
}

fn start_actor_system(plan: ActorSystemPlan) -> Result<SystemReady, HubError> {
    let ActorSystemPlan {
        actors,
        http,
        http_state,
        http_routes,
        nice,
    } = plan;
    let mut arbiters = Vec::new();
    let mut started = Vec::new();
    for (consumer, ctx, setup) in actors {
        let arbiter = actix::Arbiter::new();
        let name = setup.name.clone();
        // The closure runs on the consumer's own thread.
        let addr = ConsumerActor::start_in_arbiter(&arbiter.handle(), move |_| {
            crate::priority::lower_current_thread(nice);
            ConsumerActor::new(consumer, ctx, setup)
        });
        started.push(StartedActor {
            name,
            mailbox: addr.clone().recipient(),
            stop: addr.recipient(),
        });
        arbiters.push(arbiter);
    }
    let listen = http.listen.clone();
    let (server, http_addr) = if listen.is_empty() {
        (None, None)
    } else {
        // The status page's history, sampled on this thread while it runs.
        let history = http_state.history.clone();
        let stats = http_state.stats.clone();
        actix::spawn(async move {
            let mut every = actix::clock::interval(crate::status::SAMPLE_EVERY);
            loop {
                every.tick().await;
                history.sample(&stats);
            }
        });
        let limits = http.clone();
        let server = actix_web::HttpServer::new(move || {
            let state = http_state.clone();
            let routes = http_routes.clone();
            let limits = limits.clone();
            actix_web::App::new()
                .wrap(actix_web::middleware::from_fn(crate::http::limit_requests))
                .configure(move |cfg| crate::http::configure_limits(cfg, &limits))
                .configure(move |cfg| crate::http::configure(cfg, state, &routes))
        })
        .workers(1)
        .max_connections(http.max_connections)
        .client_request_timeout(Duration::from_secs(http.request_head_timeout_secs))
        .client_disconnect_timeout(Duration::from_secs(http.disconnect_timeout_secs))
        .keep_alive(match http.keep_alive_secs {
            0 => actix_web::http::KeepAlive::Disabled,
            secs => actix_web::http::KeepAlive::Timeout(Duration::from_secs(secs)),
        })
        .disable_signals()
        .shutdown_timeout(1)
        .bind(&listen);
        let server = match server {
            Ok(server) => server,
            Err(source) => {
                // Nothing will use the actors: stop them and the system, so
                // the partly started hub can be joined and dropped.
                for arbiter in &arbiters {
                    arbiter.stop();
                }
                actix::System::current().stop();
                return Err(HubError::Http { listen, source });
            }
        };
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
        actors: started,
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
            setting: format!("[bus] endpoints.{name}"),
            connect: addrs.to_vec(),
            bind: vec![],
        })
        .filter(|p| !p.connect.is_empty())
        .collect();
    if !config.bus.inbound.is_empty() {
        plans.push(SocketPlan {
            name: "inbound".into(),
            setting: "[bus] inbound".into(),
            connect: vec![],
            bind: vec![config.bus.inbound.clone()],
        });
    }
    plans
}

/// The hub's housekeeping thread: the periodic status log (every
/// `[hub] status_log_interval_secs`, 0 for none) and, once a burst is over,
/// returning the freed memory to the system (see [`crate::memory`]).
fn housekeeping_thread(
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
                    let bytes: u64 = stats.buses().iter().map(|b| b.bytes()).sum();
                    if trimmer.observe(backlog, received, bytes, now) {
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
    /// `(consumer, messages not handled)` for consumers that did not drain
    /// within `[hub] shutdown_grace_secs`; each is counted as
    /// `fedhub_consumer_dropped_total{reason="shutdown"}` and logged.
    pub undrained: Vec<(String, i64)>,
}

/// A running hub. Dropping it shuts it down.
///
/// While the hub starts, each step fills in its part; a step that fails drops
/// the partly started hub, which stops exactly what was started.
pub struct RunningHub {
    stats: Arc<Stats>,
    config: Config,
    zmq: zmq::Context,
    http_addr: Option<SocketAddr>,
    subscriber: Option<Subscriber>,
    publisher: Publisher,
    publisher_thread: PublisherThread,
    validator: Option<Arc<Validator>>,
    reload: ReloadHook,
    trust_reloader: Option<TrustReloader>,
    system: Option<actix::System>,
    system_thread: Option<JoinHandle<()>>,
    arbiters: Vec<actix::Arbiter>,
    server: Option<actix_web::dev::ServerHandle>,
    stops: Vec<(String, Recipient<StopConsumer>)>,
    consumer_infos: Vec<ConsumerInfo>,
    shutting_down: Arc<AtomicBool>,
    grace_over: Arc<AtomicBool>,
    status_thread: Option<JoinHandle<()>>,
    monitoring: Option<MonitoringSocket>,
    stopped: bool,
}

/// The startup steps, in order (see [`HubBuilder::start`]).
impl RunningHub {
    /// Step 1: the stats registry and the publisher thread.
    fn with_publisher(config: Config) -> Result<RunningHub, HubError> {
        let stats = Stats::new();
        let reload = ReloadHook::new();
        let validator = if config.security.validate_signatures {
            let validator = Validator::load(&config.security, stats.security().clone())?;
            let prefix = format!("{}.", config.hub.topic_prefix);
            for topic in config.security.routing_policy.keys() {
                if !topic.starts_with(&prefix) {
                    tracing::warn!(topic = %topic, prefix = %config.hub.topic_prefix, "[security] routing_policy names a topic outside the topic prefix");
                }
            }
            tracing::info!(
                ca = %config.security.ca_cert_location,
                crl = %config.security.crl_location,
                policy_topics = config.security.routing_policy.len(),
                nitpicky = config.security.routing_nitpicky,
                reload_interval_secs = config.security.crl_cache_expiry,
                "validating message signatures"
            );
            Some(Arc::new(validator))
        } else {
            None
        };
        let trust_reloader = match &validator {
            Some(validator) => Some(TrustReloader::start(validator.clone(), &reload).map_err(
                |source| HubError::Thread {
                    what: "trust reload thread",
                    source,
                },
            )?),
            None => None,
        };
        let zmq = zmq::Context::new();
        let signing = if config.security.sign_messages {
            let key = SigningKey::load(&config.security)?;
            tracing::info!(certname = key.certname(), ssldir = %config.security.ssldir.display(), "signing published messages");
            Some(Arc::new(key))
        } else {
            None
        };
        let (mut publisher, publisher_thread) = PublisherThread::start(
            &zmq,
            &config.publish,
            &config.hub.topic_prefix,
            &config.hub.environment,
            stats.clone(),
        )?;
        if let Some(key) = signing {
            publisher = publisher.with_signing_key(key);
        }
        Ok(RunningHub {
            stats,
            config,
            zmq,
            http_addr: None,
            subscriber: None,
            publisher,
            publisher_thread,
            validator,
            reload,
            trust_reloader,
            system: None,
            system_thread: None,
            arbiters: Vec::new(),
            server: None,
            stops: Vec::new(),
            consumer_infos: Vec::new(),
            shutting_down: Arc::new(AtomicBool::new(false)),
            grace_over: Arc::new(AtomicBool::new(false)),
            status_thread: None,
            monitoring: None,
            stopped: false,
        })
    }

    /// Step 2: the actor system on its own thread, one actor (and arbiter
    /// thread) per consumer, and the HTTP server with each consumer's routes
    /// under its prefix.
    fn start_consumers_and_http(&mut self, prepared: Vec<Prepared>) -> Result<Routing, HubError> {
        let mut http_routes = Vec::new();
        let mut actors = Vec::new();
        let mut pending = Vec::new();
        for p in prepared {
            if let (Some(prefix), Some(routes)) = (&p.http_prefix, p.consumer.http_routes()) {
                http_routes.push(MountedRoutes {
                    prefix: prefix.clone(),
                    routes,
                });
            }
            self.consumer_infos.push(ConsumerInfo {
                name: p.name.clone(),
                module: p.consumer.module().to_string(),
                topic: p.topics.to_monitoring_json(),
            });
            let (started_tx, started_rx) = channel();
            let consumer_stats = self.stats.consumer(&p.name);
            consumer_stats.set_capacity(p.section.capacity_messages);
            let ctx = Context::new(
                &p.name,
                p.settings,
                self.publisher.clone(),
                self.stats.clone(),
            )
            .with_reload_hook(self.reload.clone());
            let setup = ActorSetup {
                name: p.name.clone(),
                stats: consumer_stats,
                capacity: p.section.capacity_messages,
                retries: p.section.retries,
                dead_letter_file: p.section.dead_letter_file.clone(),
                started_tx,
                shutting_down: self.shutting_down.clone(),
                grace_over: self.grace_over.clone(),
            };
            actors.push((p.consumer, ctx, setup));
            pending.push((
                p.topics,
                p.section.when_full,
                p.section.capacity_messages,
                started_rx,
                p.after,
            ));
        }
        let plan = ActorSystemPlan {
            actors,
            http: self.config.http.clone(),
            http_state: HttpState {
                stats: self.stats.clone(),
                consumers: Arc::new(self.consumer_names()),
                bus_unready_after: match self.config.bus.not_ready_after_disconnected_secs {
                    0 => None,
                    secs => Some(Duration::from_secs(secs)),
                },
                name: self.config.hub.name.clone(),
                history: StatusHistory::new(),
            },
            http_routes,
            nice: self.config.hub.data_threads_nice,
        };
        let (ready_tx, ready_rx) = channel::<Result<SystemReady, HubError>>();
        let system_thread = std::thread::Builder::new()
            .name("fedhub-system".into())
            .spawn(move || {
                let system = actix::System::new();
                system.block_on(async move {
                    let _ = ready_tx.send(start_actor_system(plan));
                });
                let _ = system.run();
            })
            .map_err(|source| HubError::Thread {
                what: "actor system thread",
                source,
            })?;
        self.system_thread = Some(system_thread);
        let ready = ready_rx.recv().map_err(|_| HubError::SystemExited)??;
        self.system = Some(ready.system);
        self.arbiters = ready.arbiters;
        self.server = ready.server;
        self.http_addr = ready.http_addr;
        self.stops = ready
            .actors
            .iter()
            .map(|a| (a.name.clone(), a.stop.clone()))
            .collect();
        let consumers = ready
            .actors
            .into_iter()
            .zip(pending)
            .map(
                |(actor, (topics, when_full, capacity, started, after))| ConsumerRouting {
                    name: actor.name,
                    topics,
                    when_full,
                    capacity,
                    mailbox: actor.mailbox,
                    started,
                    after,
                },
            )
            .collect();
        Ok(Routing { consumers })
    }

    /// Step 3: every consumer's `start` returned (within `[hub] start_timeout_secs`).
    fn wait_until_consumers_started(&self, routing: &Routing) -> Result<(), HubError> {
        let timeout = Duration::from_secs(self.config.hub.start_timeout_secs.max(1));
        for consumer in &routing.consumers {
            let source = match consumer.started.recv_timeout(timeout) {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error,
                Err(_) => {
                    ConsumerError::msg(format!("did not start within {} s", timeout.as_secs()))
                }
            };
            return Err(HubError::ConsumerStart {
                name: consumer.name.clone(),
                source,
            });
        }
        Ok(())
    }

    /// Step 4: the router and the ingress threads, subscribed to what the
    /// consumers want, on every configured socket.
    fn connect_ingress(&mut self, routing: Routing) -> Result<(), HubError> {
        let routes: Vec<Route> = routing
            .consumers
            .into_iter()
            .map(|c| {
                let stats = self.stats.consumer(&c.name);
                Route::new(c.topics, c.mailbox, stats, c.when_full, c.capacity).after(c.after)
            })
            .collect();
        let router = Router::new(routes, self.stats.clone());
        let bus = &self.config.bus;
        let options = SubscriberOptions {
            // A hub that re-publishes receives everything, as fedmsg-relay does.
            subscriptions: if bus.outbound.is_empty() {
                subscriptions(router.admission.topic_sets())
            } else {
                vec![String::new()]
            },
            rcvhwm: bus.rcvhwm_messages,
            reconnect_ivl_ms: bus.reconnect_ivl_ms,
            reconnect_ivl_max_ms: bus.reconnect_ivl_max_ms,
            tcp_keepalive: bus.tcp_keepalive.then_some((
                bus.tcp_keepalive_cnt,
                bus.tcp_keepalive_idle_secs,
                bus.tcp_keepalive_intvl_secs,
            )),
            max_message_bytes: bus.max_message_bytes,
            thread_nice: self.config.hub.data_threads_nice,
            outbound: (!bus.outbound.is_empty()).then(|| bus.outbound.clone()),
        };
        let plans = socket_plans(&self.config);
        self.subscriber = Some(Subscriber::start(
            &self.zmq,
            &plans,
            &options,
            router,
            self.stats.clone(),
            self.validator.clone(),
        )?);
        Ok(())
    }

    /// Step 5: the moksha monitoring socket, when `[monitoring] socket` is set.
    fn start_monitoring_socket(&mut self) -> Result<(), HubError> {
        if self.config.monitoring.socket.is_empty() {
            return Ok(());
        }
        let builder = DocumentBuilder::new(
            self.stats.clone(),
            self.consumer_infos.clone(),
            self.config.monitoring.interval_secs,
        );
        self.monitoring = Some(MonitoringSocket::start(
            &self.zmq,
            &self.config.monitoring,
            builder,
        )?);
        Ok(())
    }

    /// Step 6: the housekeeping thread (status log, returning memory).
    fn start_housekeeping(&mut self) {
        self.status_thread =
            housekeeping_thread(&self.config, self.stats.clone(), self.shutting_down.clone());
    }

    /// The names of the consumers this hub runs.
    fn consumer_names(&self) -> Vec<String> {
        self.consumer_infos.iter().map(|c| c.name.clone()).collect()
    }
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

    /// The outbound socket's actual address (port resolved), when
    /// `[bus] outbound` is set: every accepted message is re-published there.
    pub fn outbound_endpoint(&self) -> Option<&str> {
        self.subscriber.as_ref().and_then(|s| s.outbound_endpoint())
    }

    /// Actual addresses of the publish socket's binds.
    pub fn publish_endpoints(&self) -> &[String] {
        self.publisher_thread.bound_endpoints()
    }

    /// The hub's reload broadcast: [`request`](ReloadHook::request) asks
    /// everything that reads files or URLs (the CA and CRL, consumers that
    /// listen through their [`Context`]) to read them again; the `fedhub`
    /// binary requests it on SIGHUP.
    pub fn reload_hook(&self) -> &ReloadHook {
        &self.reload
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
        if self.stopped {
            return ShutdownReport::default();
        }
        self.stopped = true;
        let grace_secs = self.config.hub.shutdown_grace_secs;
        let grace = Duration::from_secs(grace_secs);
        let began = Instant::now();
        let deadline = began + grace;
        if let Some(mut subscriber) = self.subscriber.take() {
            subscriber.stop();
        }
        // Mailboxes drain until the grace is nearly over; the rest of it is
        // kept for the consumers' `stop` (a writer's last commit, say).
        let drain_until = deadline - (grace / 5).min(Duration::from_secs(2));
        while Instant::now() < drain_until && self.stats.consumers().iter().any(|c| c.backlog() > 0)
        {
            std::thread::sleep(Duration::from_millis(20));
        }
        // What is still in a mailbox is discarded (and counted) from now on.
        let consumers = self.stats.consumers();
        let dropped_before: Vec<u64> = consumers.iter().map(|c| c.dropped_at_shutdown()).collect();
        self.grace_over.store(true, Ordering::Release);
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
        // Stopping may use what is left of the grace, and a moment at least.
        let stop_until = deadline.max(Instant::now() + Duration::from_millis(200));
        while waiting > 0 {
            let left = stop_until.saturating_duration_since(Instant::now());
            match done_rx.recv_timeout(left) {
                Ok(name) => {
                    tracing::debug!(consumer = %name, "consumer stopped");
                    waiting -= 1;
                }
                Err(_) => {
                    tracing::warn!(
                        consumers = waiting,
                        "consumers did not stop within the shutdown grace"
                    );
                    break;
                }
            }
        }
        let mut undrained = Vec::new();
        for (consumer, before) in consumers.iter().zip(dropped_before) {
            let discarded = consumer.dropped_at_shutdown().saturating_sub(before);
            let held = consumer.backlog().max(0) as u64;
            if discarded + held > 0 {
                crate::events::ShutdownLeftMessages {
                    consumer,
                    discarded,
                    held,
                    grace_secs,
                }
                .emit();
                undrained.push((consumer.name().to_string(), (discarded + held) as i64));
            }
        }
        if let (Some(server), Some(system)) = (self.server.take(), &self.system) {
            let (tx, rx) = channel();
            let spawned = system.arbiter().spawn(async move {
                server.stop(true).await;
                let _ = tx.send(());
            });
            if spawned {
                let _ = rx.recv_timeout(Duration::from_secs(1));
            }
        }
        for arbiter in self.arbiters.drain(..) {
            arbiter.stop();
            let left = stop_until.saturating_duration_since(Instant::now());
            join_within(
                move || {
                    let _ = arbiter.join();
                },
                left.max(Duration::from_millis(100)),
            );
        }
        if let Some(system) = self.system.take() {
            system.stop();
        }
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
        drop(self.trust_reloader.take());
        tracing::info!("hub stopped");
        ShutdownReport { undrained }
    }
}

impl Drop for RunningHub {
    fn drop(&mut self) {
        self.stop_inner();
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
    let runtime = actix_rt::Runtime::new().map_err(|source| HubError::Thread {
        what: "signal runtime",
        source,
    })?;
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

/// What the signal thread saw.
enum Received {
    /// SIGINT or SIGTERM.
    Shutdown,
    /// SIGHUP.
    Hangup,
}

/// SIGINT, SIGTERM and SIGHUP handlers installed at once and waited for later,
/// so a signal that arrives while the hub is still starting is not lost (nor
/// does it kill the process the default way). SIGHUP asks for a reload
/// ([`wait_reloading`](Self::wait_reloading)); a SIGHUP during startup is
/// acted on once the hub runs.
pub struct ShutdownSignal {
    received: Receiver<Received>,
}

impl ShutdownSignal {
    /// Installs the handlers on a thread of their own; returns once they are.
    pub fn install() -> Result<ShutdownSignal, HubError> {
        use actix_rt::signal::unix::{signal, SignalKind};
        let (installed_tx, installed_rx) = channel::<std::io::Result<()>>();
        let (received_tx, received) = channel();
        std::thread::Builder::new()
            .name("fedhub-signals".into())
            .spawn(move || {
                let runtime = match actix_rt::Runtime::new() {
                    Ok(runtime) => runtime,
                    Err(error) => {
                        let _ = installed_tx.send(Err(error));
                        return;
                    }
                };
                runtime.block_on(async move {
                    let handlers = (|| {
                        Ok::<_, std::io::Error>((
                            signal(SignalKind::terminate())?,
                            signal(SignalKind::interrupt())?,
                            signal(SignalKind::hangup())?,
                        ))
                    })();
                    let (mut terminate, mut interrupt, mut hangup) = match handlers {
                        Ok(handlers) => handlers,
                        Err(error) => {
                            let _ = installed_tx.send(Err(error));
                            return;
                        }
                    };
                    let _ = installed_tx.send(Ok(()));
                    loop {
                        let seen = std::future::poll_fn(|cx| {
                            use std::task::Poll;
                            if terminate.poll_recv(cx).is_ready()
                                || interrupt.poll_recv(cx).is_ready()
                            {
                                Poll::Ready(Received::Shutdown)
                            } else if hangup.poll_recv(cx).is_ready() {
                                Poll::Ready(Received::Hangup)
                            } else {
                                Poll::Pending
                            }
                        })
                        .await;
                        let shutdown = matches!(seen, Received::Shutdown);
                        if received_tx.send(seen).is_err() || shutdown {
                            return;
                        }
                    }
                });
            })
            .map_err(|source| HubError::Thread {
                what: "signal thread",
                source,
            })?;
        match installed_rx.recv() {
            Ok(Ok(())) => Ok(ShutdownSignal { received }),
            Ok(Err(source)) => Err(HubError::Thread {
                what: "signal handlers",
                source,
            }),
            Err(_) => Err(HubError::Thread {
                what: "signal thread",
                source: std::io::Error::other("exited before installing the handlers"),
            }),
        }
    }

    /// Blocks until SIGINT or SIGTERM has arrived (at once if it already has).
    /// A SIGHUP meanwhile is logged and otherwise ignored.
    pub fn wait(&self) {
        self.wait_reloading(&ReloadHook::new());
    }

    /// Blocks until SIGINT or SIGTERM has arrived (at once if it already
    /// has); each SIGHUP meanwhile requests a reload on `hook` (the running
    /// hub's [`reload_hook`](RunningHub::reload_hook)).
    pub fn wait_reloading(&self, hook: &ReloadHook) {
        while let Ok(Received::Hangup) = self.received.recv() {
            let listeners = hook.request();
            tracing::info!(listeners, "SIGHUP: reload requested");
        }
    }
}

/// Blocks the calling thread until SIGINT or SIGTERM.
pub fn wait_for_shutdown_signal() -> Result<(), HubError> {
    let runtime = actix_rt::Runtime::new().map_err(|source| HubError::Thread {
        what: "signal runtime",
        source,
    })?;
    runtime.block_on(shutdown_signal());
    Ok(())
}
