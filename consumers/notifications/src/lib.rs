//! fedhub's notification matcher, `FMNConsumer` (FMN's class name, so sites'
//! Nagios and collectd definitions keep working).
//!
//! # Modules
//!
//! - [`delivery`]: sending notifications by webhook and e-mail, with retries,
//!   backoff and a dead-letter state kept in the store.

#![warn(missing_docs)]

pub mod delivery;
