//! fedhub: an actor-based runtime for the fedmsg message bus, a successor to
//! `fedmsg-hub` (moksha.hub) with health monitoring built in.
//!
//! # Layout
//!
//! The data path, in the order a message travels (every module is private; what
//! consumers, tools and tests use is re-exported below, deliberately):
//!
//! - `ingress`: ZeroMQ SUB sockets drained continuously by a receiving thread
//!   (topic match, admission, backlog counts), a decoding thread behind it.
//! - `message`: the fedmsg [`Envelope`], decoded from `[topic, json]` or
//!   `topic\0json` frames, body kept raw until a consumer asks for the tree.
//! - `canonical`: fedmsg's canonical JSON, byte for byte (what signatures cover).
//! - `topic`: moksha's topic matching (prefixes, `*`, lists).
//! - `router`: topic -> consumers: admission (bounds, `when_full`) on the
//!   receiving thread, batched `try_send` to the mailboxes on the decoding one.
//! - `backlog`: the exact backlog count that travels with each message.
//! - `after`: ordering between consumers (`after = [...]`): a message reaches
//!   a consumer once the consumers it waits for have finished it.
//! - `actor`: one actix actor per consumer on its own thread: bounded mailbox,
//!   panics caught, handling time recorded, restarts.
//! - `consumer`: the [`Consumer`] trait developers implement, its [`Context`],
//!   and the [`ConsumerFactory`] that registers it (routes, commands, defaults);
//!   a consumer's periodic jobs (moksha "producers") report their runs through
//!   a [`ProducerHandle`], shown by the monitoring socket, `/metrics` and `/state`,
//!   and run on a [`ProducerThread`].
//! - `publish`: fedmsg envelopes built and sent from one PUB thread.
//! - `stats`: the one registry of counters and gauges every exporter reads;
//!   `metric_names`: every metric's name, in one place.
//! - `events`: typed internal events (one place logs and counts).
//! - `monitoring`: the moksha-compatible monitoring socket (per-window documents).
//! - `http`: `/metrics`, `/health/livez`, `/health/readyz`, `/state`, and each
//!   consumer's routes under its own prefix; `status`: the status page at `/`.
//! - `security`: fedmsg's x509 signatures: validation on the decoding thread
//!   (CA, CRL, routing policy; per-certificate work cached), signing on publish.
//! - `config`: TOML plus `FEDHUB_SECTION__KEY` environment overrides.
//! - `hub`: startup (named steps) and shutdown of all of the above.
//! - `reload`: the broadcast of reload requests (SIGHUP) the hub offers.
//! - `memory`, `priority`, `socket`: returning memory after a burst, data-path
//!   thread priority, ZeroMQ socket setup errors.
//! - `logging`: logging to stderr; the HTTP server's per-connection error
//!   lines counted and rate limited.

mod actor;
mod after;
mod backlog;
mod canonical;
mod config;
mod consumer;
mod events;
mod http;
mod hub;
mod ingress;
mod logging;
mod memory;
mod message;
mod metric_names;
mod monitoring;
mod priority;
mod publish;
mod reload;
mod router;
mod security;
mod socket;
mod stats;
mod status;
mod topic;

pub use backlog::BacklogGuard;
pub use canonical::{canonicalize, to_canonical_string, CanonicalError};
pub use config::{
    check_zmq_address, BusConfig, Config, ConfigError, ConsumerSection, HttpConfig, HubConfig,
    MonitoringConfig, OneOrMany, PublishConfig, SecurityConfig, Settings, WhenFull,
};
pub use consumer::{
    BoxError, Clock, CommandError, Consumer, ConsumerCommand, ConsumerError, ConsumerFactory,
    Context, HttpRoutes, NullConsumer, NullOptions, ProducerHandle, ProducerThread, Readiness,
    StateCounter,
};
pub use hub::{
    run, shutdown_signal, wait_for_shutdown_signal, HubBuilder, HubError, RunningHub,
    ShutdownReport, ShutdownSignal,
};
pub use logging::{init_logging, init_logging_with_default};
pub use memory::release_free_memory;
pub use message::{DecodeError, Envelope, MAX_JSON_DEPTH};
pub use publish::{build_topic, new_msg_id, PublishError, Publisher};
pub use reload::ReloadHook;
pub use security::{
    lenient_base64, short_hostname, RejectReason, Rejection, Reloaded, SigningKey, TrustError,
    TrustReloader, Validator,
};
pub use socket::BusError;
pub use stats::{register_metrics, SecurityStats, Stats};
pub use topic::category;

/// The README's examples, compiled as doctests so they stay true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// Re-exported so consumers can mount routes without a direct dependency.
pub use actix_web;

/// An error and its causes as one line, `outer: cause: cause`, for logs and
/// command-line messages. A cause whose text the line already shows (an error
/// that quotes its source) is not repeated.
pub fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut line = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let text = next.to_string();
        if !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        cause = next.source();
    }
    line
}
