//! What ingress, publishing and the monitoring socket share about ZeroMQ
//! sockets: a setup failure that names the address.
//!
//! ZeroMQ sockets are blocking and not thread-safe, so each side owns its sockets
//! on a plain thread: ingress drains every SUB socket continuously, the publisher
//! thread takes encoded messages from a bounded queue.

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
        #[source]
        source: zmq::Error,
    },
    /// libzmq refused to bind or connect the address of a setting.
    #[error("{setting} = {address:?}: cannot {action}: {source}")]
    Setting {
        /// The setting that holds the address (`[monitoring] socket`).
        setting: String,
        /// What was being done (`bind`, `connect`).
        action: &'static str,
        /// The address.
        address: String,
        /// libzmq's error.
        #[source]
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

    /// A failure to bind or connect the address of `setting`, naming both.
    pub(crate) fn setting(
        setting: &str,
        action: &'static str,
        address: &str,
        source: zmq::Error,
    ) -> BusError {
        BusError::Setting {
            setting: setting.to_string(),
            action,
            address: address.to_string(),
            source,
        }
    }
}
