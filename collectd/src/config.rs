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
//! exec script's identifiers (at the first `-`, see
//! [`fedhub_probe::collectd::split_service`]): `fedmsg-hub` gives plugin
//! `fedmsg` and instance `hub`, `fedmsg-relay` gives `fedmsg`/`relay`,
//! `fedmsg-hub-3` gives `fedmsg`/`hub-3`, and a name without `-` is the plugin
//! with no instance. Both forms (this plugin and `fedhub collectd-exec`) therefore
//! write the same files.

use std::time::Duration;

use collectd_plugin::ConfigItem;
use fedhub_probe::client::Target;
use serde::Deserialize;

pub use fedhub_probe::collectd::{split_service, DEFAULT_SERVICE};

/// The hub's HTTP address when the block does not name one (fedhub's default).
pub const DEFAULT_HUB: &str = "127.0.0.1:8940";

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

/// What the plugin runs with, from its `<Plugin fedhub>` block (the hub's own
/// settings are `fedhub::Config`).
#[derive(Debug, Clone, PartialEq)]
pub struct PluginSettings {
    /// Where `/state` is read.
    pub hub: Target,
    /// The collectd plugin name values are dispatched under (`fedmsg`).
    pub plugin: String,
    /// The collectd plugin instance (`hub`), empty for none.
    pub plugin_instance: String,
    /// Connect timeout, and longest wait for each read from the socket.
    pub timeout: Duration,
}

/// A bad `<Plugin fedhub>` block: collectd reports it and does not load the plugin.
#[derive(Debug, thiserror::Error)]
pub enum PluginConfigError {
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

impl PluginSettings {
    /// Settings from the block (`None`: no block, all defaults).
    pub fn from_config(
        items: Option<&[ConfigItem<'_>]>,
    ) -> Result<PluginSettings, PluginConfigError> {
        let raw: RawConfig = match items {
            Some(items) => collectd_plugin::de::from_collectd(items)
                .map_err(|e| PluginConfigError::Syntax(e.to_string()))?,
            None => RawConfig::default(),
        };
        PluginSettings::from_raw(raw)
    }

    fn from_raw(raw: RawConfig) -> Result<PluginSettings, PluginConfigError> {
        let hub_text = raw.hub.unwrap_or_else(|| DEFAULT_HUB.to_string());
        let hub = parse_hub(&hub_text).map_err(|reason| PluginConfigError::Hub {
            value: hub_text.clone(),
            reason,
        })?;
        let service = raw.service.unwrap_or_else(|| DEFAULT_SERVICE.to_string());
        check_name("Service", &service)?;
        if service.is_empty() {
            return Err(PluginConfigError::Name {
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
            Some(ms) => return Err(PluginConfigError::Timeout(ms)),
        };
        Ok(PluginSettings {
            hub,
            plugin: plugin.to_string(),
            plugin_instance,
            timeout,
        })
    }
}

/// Parses `Hub`: `host:port`, `[v6]:port`, or `http://host:port[/base]` (the
/// state document is then `<base>/state`).
pub fn parse_hub(text: &str) -> Result<Target, String> {
    let text = text.trim();
    let rest = match text.split_once("://") {
        Some(("http", rest)) => rest,
        Some((scheme, _)) => {
            return Err(format!(
                "scheme {scheme:?} is not supported: expected host:port or http://host:port"
            ))
        }
        None => text,
    };
    let (authority, base) = match rest.find('/') {
        Some(slash) => (&rest[..slash], &rest[slash..]),
        None => (rest, ""),
    };
    let (host, port) = authority
        .rsplit_once(':')
        .ok_or_else(|| "expected host:port (the hub's [http] listen address)".to_string())?;
    if host.is_empty() || host == "[]" {
        return Err("the host is empty".into());
    }
    if host.contains(char::is_whitespace) || host.contains('@') {
        return Err(format!("{host:?} is not a host name or address"));
    }
    let port = match port.parse::<u16>() {
        Ok(p) if p > 0 => p,
        _ => return Err(format!("{port:?} is not a port (1-65535)")),
    };
    if base.contains(|c: char| c.is_whitespace() || c.is_control()) {
        return Err("the path must not contain spaces".into());
    }
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    Ok(Target {
        host: host.to_string(),
        port,
        path: format!("{}/state", base.trim_end_matches('/')),
    })
}

fn check_name(key: &'static str, value: &str) -> Result<(), PluginConfigError> {
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
        Some(reason) => Err(PluginConfigError::Name {
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
        let settings = PluginSettings::from_config(None).unwrap();
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
        let settings = PluginSettings::from_config(Some(&items)).unwrap();
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
        let settings = PluginSettings::from_config(Some(&items)).unwrap();
        assert_eq!(
            (settings.plugin.as_str(), settings.plugin_instance.as_str()),
            ("fedmsg", "bus1")
        );
    }

    #[test]
    fn addresses_parse() {
        let a = parse_hub("127.0.0.1:8940").unwrap();
        assert_eq!(
            (a.authority().as_str(), a.path()),
            ("127.0.0.1:8940", "/state")
        );
        let a = parse_hub("http://[::1]:8940/").unwrap();
        assert_eq!((a.authority().as_str(), a.path()), ("[::1]:8940", "/state"));
        let a = parse_hub("http://hub.example:80/x/y").unwrap();
        assert_eq!(a.to_string(), "http://hub.example:80/x/y/state");
        for bad in [
            "",
            "host",
            ":80",
            "h:0",
            "h:x",
            "ftp://h:1",
            "a b:1",
            "h:1/a b",
        ] {
            assert!(parse_hub(bad).is_err(), "{bad:?} should be rejected");
        }
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
            let error = PluginSettings::from_config(Some(&items))
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(expected),
                "{error:?} should mention {expected:?}"
            );
        }
    }
}
