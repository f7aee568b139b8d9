//! collectd's names for fedhub's values, as Fedora's collectd exec script
//! (`fedmsg-service-collectd-<process>`) wrote them against moksha's
//! monitoring socket, so existing RRD files and graphs keep working.
//!
//! | type            | type instance       | value                                      |
//! |-----------------|---------------------|--------------------------------------------|
//! | `queue_length`  | `<C>_backlog`       | the consumer's backlog                     |
//! | `gauge`         | `<C>_exceptions`    | exceptions (per window)                    |
//! | `gauge`         | `<C>_in`            | messages received (per window)             |
//! | `gauge`         | `<C>_out`           | messages handled (per window)              |
//! | `response_time` | `<C>_min/_max/_avg` | handling time in ms over the window        |
//!
//! Producers have `gauge`-`<P>_exceptions` only. Values go under plugin `fedmsg`,
//! instance `hub`: the service name `fedmsg-hub` split at its first `-`, as
//! collectd splits `plugin-instance` in an identifier. The PUTVAL identifier is
//! `<host>/<plugin>-<instance>/<type>-<type_instance>`.
//!
//! The read plugin (`collectd/`) and `fedhub collectd-exec` both name their
//! values here, so the two forms write the same files.

use std::fmt;

/// The service name when none is configured (fedhub's default `[hub] name`).
pub const DEFAULT_SERVICE: &str = "fedmsg-hub";

/// The plugin name values go under with the default service.
pub const PLUGIN: &str = "fedmsg";

/// The plugin instance with the default service.
pub const PLUGIN_INSTANCE: &str = "hub";

/// collectd type of the backlog.
pub const TYPE_QUEUE_LENGTH: &str = "queue_length";

/// collectd type of the per-window counts.
pub const TYPE_GAUGE: &str = "gauge";

/// collectd type of the handling times.
pub const TYPE_RESPONSE_TIME: &str = "response_time";

/// One of the values written for each consumer (or, for
/// [`Series::Exceptions`], producer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Series {
    /// `queue_length-<C>_backlog`
    Backlog,
    /// `gauge-<C>_exceptions`
    Exceptions,
    /// `gauge-<C>_in`
    In,
    /// `gauge-<C>_out`
    Out,
    /// `response_time-<C>_min`
    ResponseMin,
    /// `response_time-<C>_max`
    ResponseMax,
    /// `response_time-<C>_avg`
    ResponseAvg,
}

impl Series {
    /// A consumer's series, in the order Fedora's script writes them.
    pub const CONSUMER: [Series; 7] = [
        Series::Backlog,
        Series::Exceptions,
        Series::In,
        Series::Out,
        Series::ResponseMin,
        Series::ResponseMax,
        Series::ResponseAvg,
    ];

    /// The collectd type.
    pub fn type_(self) -> &'static str {
        match self {
            Series::Backlog => TYPE_QUEUE_LENGTH,
            Series::Exceptions | Series::In | Series::Out => TYPE_GAUGE,
            Series::ResponseMin | Series::ResponseMax | Series::ResponseAvg => TYPE_RESPONSE_TIME,
        }
    }

    /// What follows the consumer's name and `_` in the type instance.
    pub fn suffix(self) -> &'static str {
        match self {
            Series::Backlog => "backlog",
            Series::Exceptions => "exceptions",
            Series::In => "in",
            Series::Out => "out",
            Series::ResponseMin => "min",
            Series::ResponseMax => "max",
            Series::ResponseAvg => "avg",
        }
    }

    /// The type instance for the consumer (or producer) `name`: `<name>_<suffix>`.
    pub fn type_instance(self, name: &str) -> String {
        format!("{name}_{}", self.suffix())
    }
}

/// Splits a service name at its first `-`, as collectd splits `plugin-instance`:
/// `fedmsg-hub` gives (`fedmsg`, `hub`), `fedmsg-hub-3` gives (`fedmsg`,
/// `hub-3`), and a name without `-` is the plugin with no instance (`""`).
pub fn split_service(service: &str) -> (&str, &str) {
    service.split_once('-').unwrap_or((service, ""))
}

/// The `<plugin>-<instance>` part of an identifier, from a service name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginName<'a> {
    /// The plugin (`fedmsg`).
    pub plugin: &'a str,
    /// The instance (`hub`); `None` when the service has no `-`.
    pub instance: Option<&'a str>,
}

impl<'a> PluginName<'a> {
    /// The plugin and instance a service name stands for (see [`split_service`]).
    pub fn from_service(service: &'a str) -> PluginName<'a> {
        match service.split_once('-') {
            Some((plugin, instance)) => PluginName {
                plugin,
                instance: Some(instance),
            },
            None => PluginName {
                plugin: service,
                instance: None,
            },
        }
    }
}

impl fmt::Display for PluginName<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.instance {
            Some(instance) => write!(f, "{}-{instance}", self.plugin),
            None => f.write_str(self.plugin),
        }
    }
}

/// A value's identifier as collectd's plain-text protocol (PUTVAL) writes it:
/// `<host>/<plugin>-<instance>/<type>-<type_instance>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Identifier<'a> {
    /// The host (`$COLLECTD_HOSTNAME`).
    pub host: &'a str,
    /// Plugin and instance.
    pub plugin: PluginName<'a>,
    /// Which value.
    pub series: Series,
    /// The consumer's (or producer's) name.
    pub name: &'a str,
}

impl fmt::Display for Identifier<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}/{}/{}-{}_{}",
            self.host,
            self.plugin,
            self.series.type_(),
            self.name,
            self.series.suffix()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fedoras_naming_table() {
        let table: Vec<(&str, String)> = Series::CONSUMER
            .iter()
            .map(|s| (s.type_(), s.type_instance("FMNConsumer")))
            .collect();
        let expected = [
            ("queue_length", "FMNConsumer_backlog"),
            ("gauge", "FMNConsumer_exceptions"),
            ("gauge", "FMNConsumer_in"),
            ("gauge", "FMNConsumer_out"),
            ("response_time", "FMNConsumer_min"),
            ("response_time", "FMNConsumer_max"),
            ("response_time", "FMNConsumer_avg"),
        ];
        assert_eq!(table.len(), expected.len());
        for ((type_, instance), (want_type, want_instance)) in table.iter().zip(expected) {
            assert_eq!((*type_, instance.as_str()), (want_type, want_instance));
        }
    }

    #[test]
    fn services_split_like_collectd_identifiers() {
        assert_eq!(split_service(DEFAULT_SERVICE), (PLUGIN, PLUGIN_INSTANCE));
        assert_eq!(split_service("fedmsg-hub-3"), ("fedmsg", "hub-3"));
        assert_eq!(split_service("fedmsg-relay"), ("fedmsg", "relay"));
        assert_eq!(split_service("fedhub"), ("fedhub", ""));
        for service in ["fedmsg-hub", "fedmsg-hub-3", "fedhub", "fedmsg-", "-x"] {
            assert_eq!(PluginName::from_service(service).to_string(), service);
        }
    }

    #[test]
    fn putval_identifiers() {
        let id = Identifier {
            host: "busgateway01.phx2.fedoraproject.org",
            plugin: PluginName::from_service("fedmsg-hub"),
            series: Series::Backlog,
            name: "FMNConsumer",
        };
        assert_eq!(
            id.to_string(),
            "busgateway01.phx2.fedoraproject.org/fedmsg-hub/queue_length-FMNConsumer_backlog"
        );
        let id = Identifier {
            host: "h",
            plugin: PluginName::from_service("fedhub"),
            series: Series::ResponseAvg,
            name: "C",
        };
        assert_eq!(id.to_string(), "h/fedhub/response_time-C_avg");
    }
}
