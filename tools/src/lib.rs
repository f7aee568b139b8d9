//! The command-line tools around a hub, outside the data path:
//!
//! - [`publish`]: `fedhub publish`, fedmsg envelopes onto a socket (like fedmsg-logger);
//! - [`tail`]: `fedhub tail`, one canonical JSON envelope per line (like fedmsg-tail);
//! - [`demo`]: synthetic Fedora traffic for `fedhub run --demo`, benchmarks and corpora;
//! - [`collectd_exec`]: `fedhub collectd-exec`, PUTVAL lines for collectd's exec plugin.

pub mod collectd_exec;
pub mod demo;
pub mod publish;
pub mod tail;

pub use publish::{publish, PublishOptions, PublishSummary};
pub use tail::{tail, TailOptions};

/// A tool failure, naming what went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    /// A socket could not be set up.
    #[error("{action} {address}: {source}")]
    Socket {
        /// What was being done.
        action: &'static str,
        /// The address.
        address: String,
        /// libzmq's error.
        source: zmq::Error,
    },
    /// Nothing accepted the connection to the address.
    #[error("nothing accepted a connection at {address} within {waited_secs:.1} s, so nothing was sent: is the hub running, and is this its [bus] inbound address? (--wait-secs waits longer)")]
    Unreachable {
        /// The address.
        address: String,
        /// How long publish waited.
        waited_secs: f64,
    },
    /// Bad input given to the tool.
    #[error("{0}")]
    Input(String),
    /// Writing the output failed.
    #[error("cannot write output: {0}")]
    Output(#[from] std::io::Error),
}

pub(crate) fn socket_error<'a>(
    action: &'static str,
    address: &'a str,
) -> impl FnOnce(zmq::Error) -> ToolError + 'a {
    move |source| ToolError::Socket {
        action,
        address: address.to_string(),
        source,
    }
}

/// Checks that `endpoint` is a ZeroMQ address, naming the option and what was
/// expected (libzmq itself only says "Invalid argument").
pub fn check_endpoint(option: &str, endpoint: &str) -> Result<(), ToolError> {
    fedhub::check_zmq_address(option, endpoint).map_err(|e| match e {
        fedhub::ConfigError::Invalid(message) => ToolError::Input(message),
        other => ToolError::Input(other.to_string()),
    })
}
