//! fedhub: an actor-based runtime for the fedmsg message bus, a successor to
//! `fedmsg-hub` (moksha.hub) with health monitoring built in.
//!
//! # Layout
//!
//! The data path, in the order a message travels:
//!
//! - [`bus`]: ZeroMQ SUB sockets drained continuously by a receiving thread, a
//!   decoding thread behind it; the PUB side consumers publish through.
//! - [`message`]: the fedmsg [`Envelope`], decoded from `[topic, json]` or
//!   `topic\0json` frames, body kept raw until a consumer asks for the tree.
//! - [`canonical`]: fedmsg's canonical JSON, byte for byte (what signatures cover).
//! - [`topic`]: moksha's topic matching (prefixes, `*`, lists).
//! - [`router`]: topic -> consumers: admission (bounds, `when_full`, backlog counts)
//!   on the receiving thread, batched `try_send` to the mailboxes on the decoding one.
//! - [`actor`]: one actix actor per consumer on its own thread: bounded mailbox,
//!   exact backlog, panics caught, handling time recorded.
//! - [`consumer`]: the [`Consumer`] trait developers implement, its [`Context`],
//!   and the [`ConsumerFactory`] that registers it.
//! - [`stats`]: the one registry of counters and gauges every exporter reads.
//! - [`events`]: typed internal events (one place logs and counts).
//! - [`monitoring`]: the moksha-compatible monitoring socket (per-window documents).
//! - [`http`]: `/metrics`, `/health/livez`, `/health/readyz`, `/state`, consumer routes.
//! - [`config`]: TOML plus `FEDHUB_SECTION__KEY` environment overrides.
//! - [`hub`]: startup and shutdown of all of the above.
//! - [`memory`]: returning freed memory to the system after a burst.
//! - [`priority`]: data-path threads yield the CPU to probes.

pub mod actor;
pub mod bus;
pub mod canonical;
pub mod config;
pub mod consumer;
pub mod events;
pub mod http;
pub mod hub;
pub mod memory;
pub mod message;
pub mod monitoring;
pub mod priority;
pub mod router;
pub mod stats;
pub mod topic;

pub use actor::BacklogGuard;
pub use config::{Config, ConfigError, Settings, WhenFull};
pub use consumer::{
    Clock, Consumer, ConsumerError, ConsumerFactory, Context, HttpRoutes, NullConsumer, Readiness,
};
pub use hub::{run, HubBuilder, HubError, RunningHub, ShutdownReport};
pub use message::{DecodeError, Envelope};
pub use stats::Stats;

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Re-exported so consumers can mount routes without a direct dependency.
pub use actix_web;

/// Sets up logging to stderr (`RUST_LOG` style filter, default `info`), without
/// colours unless stderr is a terminal: stdout stays clean for tools that print
/// data (tail, collectd exec).
pub fn init_logging() {
    use std::io::IsTerminal;
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
}
