//! The consumer API: what a consumer developer implements, and what they get.
//!
//! Implement [`Consumer`], register it with a [`ConsumerFactory`], and the hub
//! gives it a bounded mailbox on its own thread, metrics, panic isolation,
//! restarts, config and an HTTP surface.
//!
//! ```no_run
//! use fedhub::{Consumer, ConsumerError, Context, Envelope};
//!
//! struct Printer;
//!
//! impl Consumer for Printer {
//!     fn consume(&mut self, envelope: &Envelope, _ctx: &mut Context) -> Result<(), ConsumerError> {
//!         println!("{}", envelope.topic());
//!         Ok(())
//!     }
//! }
//! ```

mod context;
mod factory;
mod null;
mod producer;

pub use context::{Clock, Context, ProducerHandle, Readiness, StateCounter};
pub use factory::{CommandError, ConsumerCommand, ConsumerFactory};
pub use null::{NullConsumer, NullOptions};
pub use producer::ProducerThread;

use std::sync::Arc;

use crate::message::Envelope;
use crate::publish::PublishError;

/// The cause an error carries: any error, kept whole so a log line can show
/// the chain ([`error_chain`](crate::error_chain)).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why handling a message failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsumerError {
    /// This message could not be handled; the consumer goes on with the next one.
    #[error("{message}")]
    Message {
        /// What failed.
        message: String,
        /// The error behind it, if any.
        #[source]
        source: Option<BoxError>,
    },
    /// The consumer is in a bad state: it is stopped and started again.
    #[error("fatal: {message}")]
    Fatal {
        /// What failed.
        message: String,
        /// The error behind it, if any.
        #[source]
        source: Option<BoxError>,
    },
}

impl ConsumerError {
    /// A per-message failure.
    pub fn msg(text: impl std::fmt::Display) -> ConsumerError {
        ConsumerError::Message {
            message: text.to_string(),
            source: None,
        }
    }

    /// A failure that needs a restart.
    pub fn fatal(text: impl std::fmt::Display) -> ConsumerError {
        ConsumerError::Fatal {
            message: text.to_string(),
            source: None,
        }
    }

    /// A per-message failure saying what failed, caused by `source`.
    pub fn msg_from(text: impl std::fmt::Display, source: impl Into<BoxError>) -> ConsumerError {
        ConsumerError::Message {
            message: text.to_string(),
            source: Some(source.into()),
        }
    }

    /// A failure that needs a restart, saying what failed, caused by `source`.
    pub fn fatal_from(text: impl std::fmt::Display, source: impl Into<BoxError>) -> ConsumerError {
        ConsumerError::Fatal {
            message: text.to_string(),
            source: Some(source.into()),
        }
    }

    /// Whether the consumer must be restarted.
    pub fn is_fatal(&self) -> bool {
        matches!(self, ConsumerError::Fatal { .. })
    }
}

impl From<serde_json::Error> for ConsumerError {
    fn from(e: serde_json::Error) -> Self {
        ConsumerError::msg_from(format!("invalid JSON: {e}"), e)
    }
}

impl From<std::io::Error> for ConsumerError {
    fn from(e: std::io::Error) -> Self {
        ConsumerError::msg_from(e.to_string(), e)
    }
}

impl From<PublishError> for ConsumerError {
    fn from(e: PublishError) -> Self {
        ConsumerError::msg_from(format!("cannot publish: {e}"), e)
    }
}

/// Routes a consumer mounts on the hub's HTTP server.
pub type HttpRoutes = Arc<dyn Fn(&mut actix_web::web::ServiceConfig) + Send + Sync>;

/// A message consumer. Each one runs on its own thread, so `consume` may block.
pub trait Consumer: Send + 'static {
    /// Called once on the consumer's thread before the first message, and again
    /// after a restart.
    fn start(&mut self, _ctx: &mut Context) -> Result<(), ConsumerError> {
        Ok(())
    }

    /// Handles one message.
    fn consume(&mut self, envelope: &Envelope, ctx: &mut Context) -> Result<(), ConsumerError>;

    /// Called at shutdown after the mailbox drained, and before a restart.
    fn stop(&mut self, _ctx: &mut Context) {}

    /// Routes to mount on the hub's HTTP server (collected before `start`).
    fn http_routes(&self) -> Option<HttpRoutes> {
        None
    }

    /// The moksha `module` shown in monitoring output.
    fn module(&self) -> &str {
        "fedhub.consumers"
    }
}
