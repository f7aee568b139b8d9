//! What fedhub's probes share with the hub and with each other.
//!
//! - [`state`]: the `/state` document as typed structs, written by the hub and
//!   read by `check_fedhub` and the collectd read plugin (serde only, so the
//!   core crate depends on it cheaply).
//! - [`collectd`]: collectd's names for fedhub's values (plugin, instance,
//!   types, type instances, PUTVAL identifiers), used by the read plugin and by
//!   `fedhub collectd-exec`.
//! - `client` (feature `client`): a bounded HTTP GET of a hub's `/state`, for
//!   the probes; the core crate does not build it.

#![warn(missing_docs)]

pub mod collectd;
pub mod state;

#[cfg(feature = "client")]
pub mod client;
