//! The ZeroMQ side: SUB sockets that receive fedmsg traffic and the PUB socket
//! consumers publish through.
//!
//! ZeroMQ sockets are blocking and not thread-safe, so each side owns its sockets
//! on a plain thread: the subscriber thread drains every socket continuously and
//! hands decoded envelopes to the router; the publisher thread takes encoded
//! messages from a bounded queue.

mod publisher;
mod subscriber;

pub use publisher::{build_topic, new_msg_id, PublishError, Publisher, PublisherThread};
pub use subscriber::{SocketPlan, Subscriber, SubscriberOptions};

/// The ZeroMQ context type, re-exported for tools that open their own sockets.
pub use zmq::Context as ZmqContext;

/// A failure to set up a socket, naming the address.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// libzmq refused an option, bind or connect.
    #[error("{action} {address}: {source}")]
    Socket {
        /// What was being done (`bind`, `connect`, `set option on`).
        action: &'static str,
        /// The address or socket involved.
        address: String,
        /// libzmq's error.
        source: zmq::Error,
    },
}

impl BusError {
    pub(crate) fn socket(action: &'static str, address: &str, source: zmq::Error) -> BusError {
        BusError::Socket {
            action,
            address: address.to_string(),
            source,
        }
    }
}
