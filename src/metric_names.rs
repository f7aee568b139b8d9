//! Every metric the runtime registers, by name, in one place: the Prometheus
//! families `/metrics` serves (what dashboards and alerts are written against).
//! Consumers register their own families with names of their own
//! (`fedhub_<consumer>_...`), through `Context::metrics`.

/// Messages accepted for a consumer and not yet handled (gauge).
pub const CONSUMER_BACKLOG: &str = "fedhub_consumer_backlog";
/// A consumer's configured backlog bound (gauge).
pub const CONSUMER_MAILBOX_CAPACITY: &str = "fedhub_consumer_mailbox_capacity";
/// Messages admitted for a consumer (moksha headcount_in).
pub const CONSUMER_RECEIVED_TOTAL: &str = "fedhub_consumer_received_total";
/// Messages a consumer finished handling (moksha headcount_out).
pub const CONSUMER_HANDLED_TOTAL: &str = "fedhub_consumer_handled_total";
/// Messages whose handling returned an error or panicked.
pub const CONSUMER_EXCEPTIONS_TOTAL: &str = "fedhub_consumer_exceptions_total";
/// Panics caught in a consumer.
pub const CONSUMER_PANICS_TOTAL: &str = "fedhub_consumer_panics_total";
/// Messages routed to a consumer but not delivered, by reason.
pub const CONSUMER_DROPPED_TOTAL: &str = "fedhub_consumer_dropped_total";
/// Dead letters that could not be written to a consumer's `dead_letter_file`.
pub const CONSUMER_DEAD_LETTER_ERRORS_TOTAL: &str = "fedhub_consumer_dead_letter_errors_total";
/// Restarts of a consumer after a fatal error.
pub const CONSUMER_RESTARTS_TOTAL: &str = "fedhub_consumer_restarts_total";
/// Handling time per message (histogram).
pub const CONSUMER_HANDLING_SECONDS: &str = "fedhub_consumer_handling_seconds";
/// When a producer's periodic job last started a run, Unix seconds (gauge).
pub const PRODUCER_LAST_RAN_SECONDS: &str = "fedhub_producer_last_ran_seconds";
/// Runs of a producer's periodic job that failed in a row (gauge, 0 after a success).
pub const PRODUCER_EXCEPTIONS: &str = "fedhub_producer_exceptions";
/// ZeroMQ messages received on a bus socket, valid or not.
pub const BUS_MESSAGES_RECEIVED_TOTAL: &str = "fedhub_bus_messages_received_total";
/// Bytes of frames received on a bus socket.
pub const BUS_RECEIVED_BYTES_TOTAL: &str = "fedhub_bus_received_bytes_total";
/// Messages rejected on a bus socket, by reason.
pub const BUS_MALFORMED_TOTAL: &str = "fedhub_bus_malformed_total";
/// Whether an endpoint a bus socket connects to is connected now (gauge, 0 or 1).
pub const BUS_ENDPOINT_CONNECTED: &str = "fedhub_bus_endpoint_connected";
/// Connections made to an endpoint (ZeroMQ monitor event CONNECTED).
pub const BUS_ENDPOINT_CONNECTS_TOTAL: &str = "fedhub_bus_endpoint_connects_total";
/// Connections to an endpoint that were lost (DISCONNECTED).
pub const BUS_ENDPOINT_DISCONNECTS_TOTAL: &str = "fedhub_bus_endpoint_disconnects_total";
/// Failed connection attempts to an endpoint, each retried (CONNECT_RETRIED).
pub const BUS_ENDPOINT_CONNECT_RETRIES_TOTAL: &str = "fedhub_bus_endpoint_connect_retries_total";
/// Valid messages that matched no consumer.
pub const ROUTER_UNROUTED_TOTAL: &str = "fedhub_router_unrouted_total";
/// Time ingress waited for room in a full mailbox.
pub const INGRESS_BLOCKED_SECONDS_TOTAL: &str = "fedhub_ingress_blocked_seconds_total";
/// Messages this hub published.
pub const PUBLISHED_TOTAL: &str = "fedhub_published_total";
/// Messages that could not be published, by reason.
pub const PUBLISH_ERRORS_TOTAL: &str = "fedhub_publish_errors_total";
/// Requests the HTTP server dropped before any handler saw them, by reason.
pub const HTTP_REQUESTS_REJECTED_TOTAL: &str = "fedhub_http_requests_rejected_total";
/// Messages rejected by signature validation, by reason.
pub const MESSAGES_REJECTED_TOTAL: &str = "fedhub_messages_rejected_total";
/// Messages whose signature, certificate and routing policy validation accepted.
pub const MESSAGES_VALIDATED_TOTAL: &str = "fedhub_messages_validated_total";
/// Distinct signer certificates whose checks are cached (gauge).
pub const SECURITY_CERTIFICATES_CACHED: &str = "fedhub_security_certificates_cached";
/// When the CA certificate and CRL were last loaded, Unix seconds (gauge).
pub const SECURITY_TRUST_LOADED_TIMESTAMP_SECONDS: &str =
    "fedhub_security_trust_loaded_timestamp_seconds";
/// Reloads of the CA certificate and CRL that failed.
pub const SECURITY_TRUST_RELOAD_FAILURES_TOTAL: &str =
    "fedhub_security_trust_reload_failures_total";
