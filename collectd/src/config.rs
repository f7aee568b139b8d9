//! The `<Plugin fedhub>` block of collectd.conf.
//!
//! ```text
//! LoadPlugin fedhub
//! <Plugin fedhub>
//!   Hub "127.0.0.1:8940"      # the hub's [http] listen address (default)
//!   Service "fedmsg-hub"      # the hub's [hub] name (default): plugin "fedmsg", instance "hub"
//!   Instance "hub"            # optional: overrides the plugin instance only
//!   TimeoutMs 500             # optional: connect and per-read timeout (default 500)
//! </Plugin>
//! ```
//!
//! The service name is split the way collectd splits `fedmsg-hub` in Fedora's
//! exec script's identifiers (at the first `-`): `fedmsg-hub` gives plugin
//! `fedmsg` and instance `hub`, `fedmsg-relay` gives `fedmsg`/`relay`,
//! `fedmsg-hub-3` gives `fedmsg`/`hub-3`, and a name without `-` is the plugin
//! with no instance. Both forms (this plugin and `fedhub collectd-exec`) therefore
//! write the same files.

use std::time::Duration;

use collectd_plugin::ConfigItem;
use serde::Deserialize;

use crate::http::HubAddress;

/// The hub's HTTP address when the block does not name one (fedhub's default).
pub const DEFAULT_HUB: &str = "127.0.0.1:8940";

/// The service name when the block does not name one (fedhub's default `[hub] name`).
pub const DEFAULT_SERVICE: &str = "fedmsg-hub";

/// Connect and read timeout when the block does not set `TimeoutMs`.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(500);

/// Longest accepted `TimeoutMs`: a read must never hold a collectd read thread long.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(10);

/// The block as written.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", deny_unknown_fields)]
struct RawConfig {
    hub: Option<String>,
    service: Option<String>,
    instance: Option<String>,
    timeout_ms: Option<f64>,
}

/// What the plugin runs with.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Where `/state` is read.
    pub hub: HubAddress,
    /// The collectd plugin name values are dispatched under (`fedmsg`).
    pub plugin: String,
    /// The collectd plugin instance (`hub`), empty for none.
    pub plugin_instance: String,
    /// Connect timeout, and longest wait for each read from the socket.
    pub timeout: Duration,
}

/// A bad `<Plugin fedhub>` block: collectd reports it and does not load the plugin.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A key collectd-plugin could not map (unknown key, wrong value type, ...).
    #[error("invalid <Plugin fedhub> block: {0}")]
    Syntax(String),
    /// `Hub` is not `host:port` or `http://host:port[/path]`.
    #[error("invalid Hub {value:?}: {reason}")]
    Hub {
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: String,
    },
    /// `Service` or `Instance` cannot be used in a collectd identifier.
    #[error("invalid {key} {value:?}: {reason}")]
    Name {
        /// `Service` or `Instance`.
        key: &'static str,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// `TimeoutMs` is not a positive number of milliseconds up to 10000.
    #[error("invalid TimeoutMs {0}: expected milliseconds, more than 0 and at most 10000")]
    Timeout(f64),
}

/// collectd's limit on the length of plugin, instance and type names (with the NUL).
pub const NAME_MAX_BYTES: usize = 128;

impl Settings {
    /// Settings from the block (`None`: no block, all defaults).
    pub fn from_config(items: Option<&[ConfigItem<'_>]>) -> Result<Settings, ConfigError> {
        let raw: RawConfig = match items {
            Some(items) => collectd_plugin::de::from_collectd(items)
                .map_err(|e| ConfigError::Syntax(e.to_string()))?,
            None => RawConfig::default(),
        };
        Settings::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<Settings, ConfigError> {
        let hub_text = raw.hub.unwrap_or_else(|| DEFAULT_HUB.to_string());
        let hub = HubAddress::parse(&hub_text).map_err(|reason| ConfigError::Hub {
            value: hub_text.clone(),
            reason,
        })?;
        let service = raw.service.unwrap_or_else(|| DEFAULT_SERVICE.to_string());
        check_name("Service", &service)?;
        if service.is_empty() {
            return Err(ConfigError::Name {
                key: "Service",
                value: service,
                reason: "it must not be empty",
            });
        }
        let (plugin, derived_instance) = split_service(&service);
        let plugin_instance = match raw.instance {
            Some(instance) => {
                check_name("Instance", &instance)?;
                instance
            }
            None => derived_instance.to_string(),
        };
        let timeout = match raw.timeout_ms {
            None => DEFAULT_TIMEOUT,
            Some(ms) if ms.is_finite() && ms > 0.0 && ms <= MAX_TIMEOUT.as_millis() as f64 => {
                Duration::from_secs_f64(ms / 1000.0)
            }
            Some(ms) => return Err(ConfigError::Timeout(ms)),
        };
        Ok(Settings {
            hub,
            plugin: plugin.to_string(),
            plugin_instance,
            timeout,
        })
    }
}

/// Splits a service name at its first `-`, as collectd splits `plugin-instance`.
pub fn split_service(service: &str) -> (&str, &str) {
    service.split_once('-').unwrap_or((service, ""))
}

fn check_name(key: &'static str, value: &str) -> Result<(), ConfigError> {
    let reason = if value.len() >= NAME_MAX_BYTES {
        Some("it is longer than collectd's 127 bytes")
    } else if value.contains('/') {
        Some("collectd identifiers cannot contain '/'")
    } else if value.chars().any(|c| c.is_control() || c.is_whitespace()) {
        Some("it must not contain spaces or control characters")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(ConfigError::Name {
            key,
            value: value.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use collectd_plugin::ConfigValue;

    fn item<'a>(key: &'a str, value: ConfigValue<'a>) -> ConfigItem<'a> {
        ConfigItem {
            key,
            values: vec![value],
            children: vec![],
        }
    }

    #[test]
    fn no_block_means_fedoras_defaults() {
        let settings = Settings::from_config(None).unwrap();
        assert_eq!(settings.hub.authority(), "127.0.0.1:8940");
        assert_eq!(settings.hub.path(), "/state");
        assert_eq!(settings.plugin, "fedmsg");
        assert_eq!(settings.plugin_instance, "hub");
        assert_eq!(settings.timeout, DEFAULT_TIMEOUT);
    }

    #[test]
    fn a_full_block_is_read() {
        let items = vec![
            item("Hub", ConfigValue::String("http://10.0.0.5:9000/fedhub/")),
            item("Service", ConfigValue::String("fedmsg-relay")),
            item("TimeoutMs", ConfigValue::Number(250.0)),
        ];
        let settings = Settings::from_config(Some(&items)).unwrap();
        assert_eq!(settings.hub.authority(), "10.0.0.5:9000");
        assert_eq!(settings.hub.path(), "/fedhub/state");
        assert_eq!(
            (settings.plugin.as_str(), settings.plugin_instance.as_str()),
            ("fedmsg", "relay")
        );
        assert_eq!(settings.timeout, Duration::from_millis(250));
    }

    #[test]
    fn instance_overrides_only_the_instance() {
        let items = vec![
            item("Hub", ConfigValue::String("127.0.0.1:1")),
            item("Instance", ConfigValue::String("bus1")),
        ];
        let settings = Settings::from_config(Some(&items)).unwrap();
        assert_eq!(
            (settings.plugin.as_str(), settings.plugin_instance.as_str()),
            ("fedmsg", "bus1")
        );
    }

    #[test]
    fn services_split_like_collectd_identifiers() {
        assert_eq!(split_service("fedmsg-hub"), ("fedmsg", "hub"));
        assert_eq!(split_service("fedmsg-hub-3"), ("fedmsg", "hub-3"));
        assert_eq!(split_service("moksha-hub"), ("moksha", "hub"));
        assert_eq!(split_service("fedhub"), ("fedhub", ""));
    }

    #[test]
    fn bad_blocks_are_clear_errors() {
        let cases: Vec<(Vec<ConfigItem<'_>>, &str)> = vec![
            (vec![item("Hubb", ConfigValue::String("x:1"))], "Hubb"),
            (
                vec![item("Hub", ConfigValue::Number(8940.0))],
                "invalid <Plugin fedhub> block",
            ),
            (
                vec![item("Hub", ConfigValue::String("localhost"))],
                "invalid Hub \"localhost\"",
            ),
            (vec![item("Hub", ConfigValue::String("h:99999"))], "port"),
            (
                vec![item("Hub", ConfigValue::String("https://h:1"))],
                "http://",
            ),
            (
                vec![item("Service", ConfigValue::String("a/b"))],
                "invalid Service",
            ),
            (
                vec![item("Service", ConfigValue::String(""))],
                "must not be empty",
            ),
            (
                vec![item("Instance", ConfigValue::String("a b"))],
                "invalid Instance",
            ),
            (
                vec![item("TimeoutMs", ConfigValue::Number(0.0))],
                "invalid TimeoutMs",
            ),
            (
                vec![item("TimeoutMs", ConfigValue::Number(f64::NAN))],
                "invalid TimeoutMs",
            ),
            (
                vec![item("TimeoutMs", ConfigValue::String("500"))],
                "invalid <Plugin fedhub> block",
            ),
        ];
        for (items, expected) in cases {
            let error = Settings::from_config(Some(&items)).unwrap_err().to_string();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
        }
    }
}
