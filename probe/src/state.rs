//! The hub's `/state` document, typed.
//!
//! The hub builds a [`State`] from its stats registry and serves it as JSON at
//! `/state`; `check_fedhub` and the collectd read plugin read it back. Both sides
//! use these structs, so a field renamed here fails to compile on both.
//!
//! Every struct comes in two forms generated from one field list:
//! - the document as the hub writes it ([`State`], [`ConsumerState`],
//!   [`HandlingWindow`], [`BusState`]): every field present, with the hub's types;
//! - the document as a probe reads it ([`StateView`], [`ConsumerView`],
//!   [`HandlingWindowView`], [`BusView`]): the same field names, each one an
//!   `Option` that is `None` when the field is missing or has another type, and
//!   list entries that are `None` when they are not objects. A probe pointed at
//!   an older hub, at another program or at a broken document reads what is there
//!   and reports the rest, rather than rejecting the whole document.
//!
//! Field order is alphabetical, as the hub's JSON has always been (a
//! `serde_json::Map` without `preserve_order` is sorted), so the bytes served do
//! not change. This module depends on serde only.

use std::collections::BTreeMap;

use serde::de::{Deserializer, IgnoredAny};
use serde::{Deserialize, Serialize};

/// A value that reads as `Some` when it has the expected shape and as `None`
/// otherwise (missing, `null`, another type), without failing the document
/// around it.
#[derive(Debug, Clone, PartialEq)]
pub struct Lenient<T>(pub Option<T>);

impl<T> Default for Lenient<T> {
    fn default() -> Self {
        Lenient(None)
    }
}

impl<T> Lenient<T> {
    /// The value, if it had the expected shape.
    pub fn get(&self) -> Option<&T> {
        self.0.as_ref()
    }
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        /// `T` if the value is one, else anything (skipped).
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either<T> {
            Expected(T),
            Other(IgnoredAny),
        }
        Ok(match Either::<T>::deserialize(deserializer)? {
            Either::Expected(value) => Lenient(Some(value)),
            Either::Other(_) => Lenient(None),
        })
    }
}

/// serde `deserialize_with` for the view fields: `None` instead of an error.
fn lenient<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Lenient::<T>::deserialize(deserializer).map(|value| value.0)
}

/// Declares a document struct and its lenient view from one field list:
/// `field: Type => ViewType` (the view holds `Option<ViewType>`). A field's
/// `#[serde(...)]` attributes, after its doc comment, apply to the document
/// struct only (the view reads every field leniently anyway).
macro_rules! document {
    (
        $(#[doc = $doc:literal])*
        pub struct $name:ident, read as $view:ident {
            $(
                $(#[doc = $field_doc:literal])*
                $(#[serde($($serde:tt)*)])*
                pub $field:ident: $ty:ty => $view_ty:ty,
            )*
        }
    ) => {
        $(#[doc = $doc])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            $(
                $(#[doc = $field_doc])*
                $(#[serde($($serde)*)])*
                pub $field: $ty,
            )*
        }

        impl $name {
            /// The JSON keys of this object, in the order they are written.
            pub const FIELDS: &'static [&'static str] = &[$(stringify!($field)),*];
        }

        #[doc = concat!("[`", stringify!($name), "`] as a probe reads it: the same fields, each `None` when missing or of another type.")]
        #[derive(Debug, Clone, Default, PartialEq, Deserialize)]
        pub struct $view {
            $(
                $(#[doc = $field_doc])*
                #[serde(default, deserialize_with = "lenient")]
                pub $field: Option<$view_ty>,
            )*
        }
    };
}

document! {
    /// The whole `/state` document: the stats registry at one moment.
    pub struct State, read as StateView {
        /// One entry per bus socket, sorted by name.
        pub buses: Vec<BusState> => Vec<Lenient<BusView>>,
        /// One entry per consumer, sorted by name.
        pub consumers: Vec<ConsumerState> => Vec<Lenient<ConsumerView>>,
        /// Requests the HTTP server turned away, by reason.
        pub http: HttpRequests => HttpRequestsView,
        /// Time ingress waited for room in a full mailbox, seconds (`when_full = block`).
        pub ingress_blocked_seconds_total: f64 => f64,
        /// One entry per producer (a consumer's periodic job), sorted by name.
        /// Absent from documents of hubs older than producers: read as empty.
        #[serde(default)]
        pub producers: Vec<ProducerState> => Vec<Lenient<ProducerView>>,
        /// Messages this hub published on the bus.
        pub published_total: u64 => u64,
        /// When the hub process started, Unix seconds (a new value means the totals restarted).
        pub started_at: f64 => f64,
        /// Valid messages that matched no consumer.
        pub unrouted_total: u64 => u64,
        /// Signature validation (`[security] validate_signatures`): what was
        /// accepted and rejected, and why.
        pub validation: ValidationState => ValidationView,
    }
}

document! {
    /// Signature validation's counters.
    pub struct ValidationState, read as ValidationView {
        /// Distinct signer certificates whose checks (parse, chain, CRL) are cached.
        pub certificates_cached: u64 => u64,
        /// Whether the hub validates signatures.
        pub enabled: bool => bool,
        /// The most recent rejection, `null` before the first.
        pub last_rejection: Option<RejectionState> => RejectionView,
        /// Rejected messages by reason, only reasons seen at least once.
        pub rejected_by_reason: BTreeMap<String, u64> => BTreeMap<String, u64>,
        /// Messages rejected by validation, all reasons.
        pub rejected_total: u64 => u64,
        /// When the CA certificate and CRL were last loaded, Unix seconds (0: never).
        pub trust_loaded_at: f64 => f64,
        /// Why the last reload of the CA and CRL failed (the ones loaded
        /// before stay in use); `null` once a load succeeds.
        pub trust_reload_error: Option<String> => String,
        /// Reloads of the CA certificate and CRL that failed.
        pub trust_reload_failures_total: u64 => u64,
        /// Messages whose signature, certificate and routing policy were accepted.
        pub validated_total: u64 => u64,
    }
}

document! {
    /// One message rejected by validation.
    pub struct RejectionState, read as RejectionView {
        /// When, Unix seconds.
        pub at: f64 => f64,
        /// What failed, in words.
        pub detail: String => String,
        /// The reason label (`unsigned`, `bad_signature`, `untrusted_certificate`,
        /// `revoked`, `expired`, `policy`, `topic_mismatch`).
        pub reason: String => String,
        /// The CN of the signer's certificate, when it could be read.
        pub signer: Option<String> => String,
        /// The message's topic.
        pub topic: String => String,
    }
}

document! {
    /// The HTTP server's own counters.
    pub struct HttpRequests, read as HttpRequestsView {
        /// Requests dropped before a handler saw them, by reason
        /// (`head_too_large`, `body_too_large`, `malformed`, `timeout`, `other`).
        pub requests_rejected_total: BTreeMap<String, u64> => BTreeMap<String, u64>,
    }
}

document! {
    /// One consumer's counters.
    pub struct ConsumerState, read as ConsumerView {
        /// Messages accepted for the consumer and not yet handled.
        pub backlog: i64 => i64,
        /// The consumer's own counters, by the names it gives them
        /// (`Context::state_counter`), e.g. messages it ignored and why.
        pub counters: BTreeMap<String, u64> => BTreeMap<String, u64>,
        /// Failed messages that could not be written to its dead-letter file.
        pub dead_letter_errors_total: u64 => u64,
        /// Messages routed to it but not delivered, all reasons.
        pub dropped_total: u64 => u64,
        /// Messages whose handling returned an error or panicked.
        pub exceptions_total: u64 => u64,
        /// Messages it finished handling, successfully or not.
        pub handled_total: u64 => u64,
        /// Handling times over the last complete window.
        pub handling_last_window: HandlingWindow => HandlingWindowView,
        /// Messages in the handling-time histogram.
        pub handling_seconds_count: u64 => u64,
        /// Sum of the handling times in the histogram, seconds.
        pub handling_seconds_sum: f64 => f64,
        /// Whether it started and is running.
        pub initialized: bool => bool,
        /// When it last finished a message, Unix milliseconds (0: never).
        pub last_progress_ms: u64 => u64,
        /// Configured mailbox capacity, messages.
        pub mailbox_capacity: i64 => i64,
        /// Backlog divided by capacity (0 when the capacity is 0).
        pub mailbox_utilization: f64 => f64,
        /// The consumer's name.
        pub name: String => String,
        /// Panics caught while it handled a message.
        pub panics_total: u64 => u64,
        /// The highest backlog since the hub started.
        pub peak_backlog: u64 => u64,
        /// Messages put in its mailbox.
        pub received_total: u64 => u64,
        /// Times it was restarted after a fatal error.
        pub restarts_total: u64 => u64,
    }
}

document! {
    /// One producer: a periodic job a consumer runs (moksha's `PollingProducer`).
    pub struct ProducerState, read as ProducerView {
        /// Runs that failed in a row (0 after a success).
        pub exceptions: u64 => u64,
        /// Time between runs, seconds.
        pub frequency_secs: f64 => f64,
        /// When the last run started, Unix seconds; `null` before the first.
        pub last_ran: Option<f64> => f64,
        /// The module it belongs to (moksha `module`).
        pub module: String => String,
        /// The producer's name.
        pub name: String => String,
    }
}

document! {
    /// Handling times aggregated over one fixed window.
    pub struct HandlingWindow, read as HandlingWindowView {
        /// Mean handling time, seconds (0 when nothing was handled).
        pub avg_seconds: f64 => f64,
        /// Messages handled in the window.
        pub count: u64 => u64,
        /// Longest handling time, seconds.
        pub max_seconds: f64 => f64,
        /// Shortest handling time, seconds.
        pub min_seconds: f64 => f64,
        /// Length of the window, seconds.
        pub window_secs: u64 => u64,
    }
}

document! {
    /// One bus socket's counters.
    pub struct BusState, read as BusView {
        /// Bytes of message frames received.
        pub bytes_total: u64 => u64,
        /// The addresses this socket connects to, with their connection state.
        pub endpoints: Vec<BusEndpoint> => Vec<Lenient<BusEndpointView>>,
        /// Rejected messages by reason, only reasons seen at least once.
        pub malformed_by_reason: BTreeMap<String, u64> => BTreeMap<String, u64>,
        /// Rejected messages, all reasons.
        pub malformed_total: u64 => u64,
        /// ZeroMQ messages received, valid or not.
        pub messages_total: u64 => u64,
        /// The socket's name (an `endpoints` key, or `inbound`).
        pub name: String => String,
    }
}

document! {
    /// One address a bus socket connects to, from ZeroMQ's socket monitor.
    pub struct BusEndpoint, read as BusEndpointView {
        /// The address (`tcp://host:port`).
        pub address: String => String,
        /// Connection attempts that failed so far.
        pub connect_retries_total: u64 => u64,
        /// Connections made so far.
        pub connects_total: u64 => u64,
        /// Connections lost so far.
        pub disconnects_total: u64 => u64,
        /// When it was last connected (or lost its connection), Unix milliseconds (0: never).
        pub last_connected_ms: u64 => u64,
        /// When it entered its state, Unix milliseconds.
        pub since_ms: u64 => u64,
        /// `connecting`, `connected`, `retrying` or `disconnected`.
        pub state: String => String,
    }
}

impl StateView {
    /// The consumer entry called `name`, if there is one.
    pub fn consumer(&self, name: &str) -> Option<&ConsumerView> {
        self.consumers
            .iter()
            .flatten()
            .filter_map(Lenient::get)
            .find(|c| c.name.as_deref() == Some(name))
    }

    /// The producer entry called `name`, if there is one.
    pub fn producer(&self, name: &str) -> Option<&ProducerView> {
        self.producers
            .iter()
            .flatten()
            .filter_map(Lenient::get)
            .find(|p| p.name.as_deref() == Some(name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A `/state` document as the hub serves it (captured from `GET /state`
    /// after one message was handled with an error and one frame was rejected).
    const SERVED: &str = r#"{"buses":[{"bytes_total":100,"endpoints":[],"malformed_by_reason":{"frame_count":1},"malformed_total":1,"messages_total":1,"name":"inbound"},{"bytes_total":0,"endpoints":[{"address":"tcp://127.0.0.1:9940","connect_retries_total":3,"connects_total":0,"disconnects_total":0,"last_connected_ms":0,"since_ms":1796036737190,"state":"retrying"}],"malformed_by_reason":{},"malformed_total":0,"messages_total":0,"name":"x"}],"consumers":[{"backlog":0,"counters":{},"dead_letter_errors_total":0,"dropped_total":0,"exceptions_total":0,"handled_total":0,"handling_last_window":{"avg_seconds":0.0,"count":0,"max_seconds":0.0,"min_seconds":0.0,"window_secs":5},"handling_seconds_count":0,"handling_seconds_sum":0.0,"initialized":false,"last_progress_ms":0,"mailbox_capacity":0,"mailbox_utilization":0.0,"name":"A","panics_total":0,"peak_backlog":0,"received_total":0,"restarts_total":0},{"backlog":1,"counters":{"too_old_ignored_total":3},"dead_letter_errors_total":0,"dropped_total":0,"exceptions_total":1,"handled_total":1,"handling_last_window":{"avg_seconds":0.0,"count":0,"max_seconds":0.0,"min_seconds":0.0,"window_secs":5},"handling_seconds_count":1,"handling_seconds_sum":0.003,"initialized":false,"last_progress_ms":1796036737183,"mailbox_capacity":10,"mailbox_utilization":0.1,"name":"B","panics_total":0,"peak_backlog":1,"received_total":1,"restarts_total":0}],"http":{"requests_rejected_total":{"body_too_large":0,"head_too_large":0,"malformed":0,"other":0,"timeout":0}},"ingress_blocked_seconds_total":0.0,"producers":[{"exceptions":0,"frequency_secs":60.0,"last_ran":1796036737.25,"module":"statscache","name":"Backfill"},{"exceptions":2,"frequency_secs":0.5,"last_ran":null,"module":"badges","name":"Never"}],"published_total":0,"started_at":1796036737.1835332,"unrouted_total":0,"validation":{"certificates_cached":1,"enabled":true,"last_rejection":{"at":1796036737.5,"detail":"signature does not match the message","reason":"bad_signature","signer":"shell-vm","topic":"org.fedoraproject.dev.x.y"},"rejected_by_reason":{"bad_signature":1},"rejected_total":1,"trust_loaded_at":1796036737.2,"trust_reload_error":null,"trust_reload_failures_total":0,"validated_total":2}}"#;

    #[test]
    fn a_served_document_round_trips_byte_for_byte() {
        let state: State = serde_json::from_str(SERVED).unwrap();
        assert_eq!(state.consumers[1].name, "B");
        assert_eq!(state.consumers[1].mailbox_utilization, 0.1);
        assert_eq!(state.buses[0].malformed_by_reason["frame_count"], 1);
        assert_eq!(state.started_at, 1796036737.1835332);
        assert_eq!(serde_json::to_string(&state).unwrap(), SERVED);
    }

    #[test]
    fn a_served_document_reads_completely_as_a_view() {
        let view: StateView = serde_json::from_str(SERVED).unwrap();
        assert_eq!(view.started_at, Some(1796036737.1835332));
        assert_eq!(view.unrouted_total, Some(0));
        let b = view.consumer("B").unwrap();
        assert_eq!(
            (
                b.backlog,
                b.received_total,
                b.exceptions_total,
                b.initialized
            ),
            (Some(1), Some(1), Some(1), Some(false))
        );
        assert_eq!(b.mailbox_capacity, Some(10));
        let window = b.handling_last_window.as_ref().unwrap();
        assert_eq!(window.window_secs, Some(5));
        assert_eq!(window.avg_seconds, Some(0.0));
        let bus = view.buses.as_ref().unwrap()[0].get().unwrap();
        assert_eq!(bus.name.as_deref(), Some("inbound"));
        assert_eq!(bus.malformed_total, Some(1));
        // Every field of every object was read: the view and the document agree.
        let as_value: serde_json::Value = serde_json::from_str(SERVED).unwrap();
        let keys = |v: &serde_json::Value| -> Vec<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(keys(&as_value), State::FIELDS);
        assert_eq!(keys(&as_value["consumers"][0]), ConsumerState::FIELDS);
        assert_eq!(
            keys(&as_value["consumers"][0]["handling_last_window"]),
            HandlingWindow::FIELDS
        );
        assert_eq!(keys(&as_value["buses"][0]), BusState::FIELDS);
        assert_eq!(keys(&as_value["producers"][0]), ProducerState::FIELDS);
        let backfill = view.producer("Backfill").unwrap();
        assert_eq!(backfill.last_ran, Some(1796036737.25));
        assert_eq!(backfill.frequency_secs, Some(60.0));
        assert_eq!(backfill.module.as_deref(), Some("statscache"));
        let never = view.producer("Never").unwrap();
        assert_eq!((never.last_ran, never.exceptions), (None, Some(2)));
        assert_eq!(keys(&as_value["validation"]), ValidationState::FIELDS);
        assert_eq!(
            keys(&as_value["validation"]["last_rejection"]),
            RejectionState::FIELDS
        );
        let validation = view.validation.as_ref().unwrap();
        assert_eq!(validation.enabled, Some(true));
        assert_eq!(validation.rejected_total, Some(1));
        let last = validation.last_rejection.as_ref().unwrap();
        assert_eq!(last.signer.as_deref(), Some("shell-vm"));
        assert_eq!(last.reason.as_deref(), Some("bad_signature"));
    }

    #[test]
    fn a_document_without_producers_still_parses() {
        // Hubs older than producers served no `producers` key.
        let mut older: serde_json::Value = serde_json::from_str(SERVED).unwrap();
        older.as_object_mut().unwrap().remove("producers");
        let state: State = serde_json::from_value(older.clone()).unwrap();
        assert_eq!(state.producers, Vec::new());
        assert_eq!(state.consumers.len(), 2);
        let view: StateView = serde_json::from_value(older).unwrap();
        assert_eq!(view.producers, None);
        assert!(view.producer("Backfill").is_none());
    }

    #[test]
    fn views_keep_what_is_there_and_drop_what_is_not() {
        let view: StateView = serde_json::from_str(
            r#"{"started_at": "yesterday", "consumers": [
                {"name": "NoNumbers", "initialized": true, "backlog": "many", "received_total": -1,
                 "handling_last_window": {"min_seconds": "x", "max_seconds": -1.0}},
                "not an object", null, {"name": 5}],
                "buses": {"inbound": 1}, "extra": [1, 2]}"#,
        )
        .unwrap();
        assert_eq!(view.started_at, None);
        assert_eq!(
            view.buses, None,
            "a map where a list belongs reads as absent"
        );
        let entries = view.consumers.as_ref().unwrap();
        assert_eq!(entries.len(), 4);
        let first = entries[0].get().unwrap();
        assert_eq!(first.name.as_deref(), Some("NoNumbers"));
        assert_eq!(first.initialized, Some(true));
        assert_eq!(first.backlog, None);
        assert_eq!(first.received_total, None, "a negative total is not a u64");
        let window = first.handling_last_window.as_ref().unwrap();
        assert_eq!((window.min_seconds, window.max_seconds), (None, Some(-1.0)));
        assert_eq!(entries[1].get(), None);
        assert_eq!(entries[2].get(), None);
        assert_eq!(entries[3].get().unwrap().name, None);
        // Whatever is not an object at the top reads as an empty view.
        for other in ["[1, 2]", "{}"] {
            let view: StateView = serde_json::from_str(other).unwrap();
            assert_eq!(view.consumers, None, "{other}");
        }
    }
}
