//! fedhub's benchmark tools, driven by `benches/run.sh`.
//!
//! Each tool prints one JSON line on stdout, so the driver can keep every run's
//! figures and [`report`] can put them side by side:
//!
//! - [`corpus`]: realistic fedmsg messages from [`fedhub_tools::demo::Generator`],
//!   encoded once and stored, so publishing measures only the send path.
//! - [`publisher`]: a PUB (or XPUB waiting for subscribers) sending a corpus as
//!   fast as possible or at a set rate, from one or more threads.
//! - [`bare`]: the physical limit, a SUB that only counts messages, or that also
//!   parses each body (into a `serde_json::Value`, or into fedhub's envelope).
//! - [`watch`]: follows a running hub (fedhub's `/state`, or the Python peer's
//!   consumer stats file) and its `/proc` entry: consumed rate, loss, RSS, CPU.
//! - [`backlog`]: publishes a burst while sampling the reported backlog, and
//!   sets it beside the true backlog (sent minus handled at the same instant).
//! - [`scrape`]: what monitoring does to a hub (HTTP scrapes, a SUB on the
//!   monitoring socket), with the latency of every request.
//! - [`stamp`]: the `sent_ns` send-time stamp in each body, for [`latency`].
//! - [`latency`]: a fedhub hub whose consumer records the time from the
//!   publisher's send to the start of `consume` (`latency-hub`).
//! - [`cost`]: CPU per message of the ingress steps, in one thread, no sockets.
//! - [`monreport`]: the report's monitoring-cost and probe-latency sections.
//! - [`latreport`]: the report's end-to-end latency section.
//! - [`report`]: the results table and a JSON summary with medians.
//! - [`sysmon`]: what else is running, once a second, for the record.
//! - [`probe`]: the small readers the others share (`/proc`, a plain HTTP GET).

pub mod backlog;
pub mod bare;
pub mod corpus;
pub mod cost;
pub mod latency;
pub mod latreport;
pub mod monreport;
pub mod probe;
pub mod publisher;
pub mod report;
pub mod scrape;
pub mod stamp;
pub mod sysmon;
pub mod watch;

/// Seconds since the Unix epoch, as a float (the timestamps every tool prints).
pub fn now_epoch() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// Rounds to `digits` decimal places, for readable JSON.
pub fn round(x: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (x * scale).round() / scale
}
