//! fedhub's collectd read plugin.
//!
//! Built as a cdylib (`libfedhub_collectd.so`), installed as `fedhub.so` in collectd's
//! `PluginDir` and loaded with `LoadPlugin fedhub`. At every collectd interval it
//! reads the hub's `/state` over HTTP and dispatches each initialized consumer's
//! backlog, per-interval in/out/exception counts and handling times under the
//! names Fedora's collectd exec script used against moksha's monitoring socket
//! (plugin `fedmsg`, instance `hub`, `queue_length-<C>_backlog`, ...), so the
//! existing graphs keep working. See `examples/collectd/fedhub.conf`.
//!
//! - [`config`]: the `<Plugin fedhub>` block.
//! - [`readings`]: `/state` -> collectd values, with per-read deltas of the totals.
//!
//! The bounded HTTP GET (no runtime, no thread inside collectd), the typed
//! `/state` document and collectd's names come from `fedhub_probe`.
//!
//! A hub that is down, slow or answering garbage is logged as a warning and the
//! read returns success with nothing dispatched: collectd suspends a failing read
//! callback with a doubling back-off (up to a day by default), which would hide the
//! hub's recovery. Panics are caught by collectd-plugin; the crate is never built
//! with `panic = "abort"`.

pub mod config;
pub mod readings;

use std::error::Error;
use std::sync::Mutex;

use collectd_plugin::{
    collectd_plugin, CollectdLoggerBuilder, ConfigItem, Plugin, PluginCapabilities, PluginManager,
    PluginRegistration, Value, ValueListBuilder,
};

use fedhub_probe::client::{self, Limits};

use crate::config::{PluginSettings, NAME_MAX_BYTES};
use crate::readings::{Reading, Tracker};

/// The largest `/state` response accepted; a bigger one is an error, not an allocation.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024 * 1024;

/// How many `TimeoutMs` the whole exchange may take (connect, and each read, take one).
pub const TIMEOUTS_PER_READ: u32 = 4;

/// The name collectd knows the plugin by: `LoadPlugin fedhub`, `<Plugin fedhub>`.
pub const PLUGIN_NAME: &str = "fedhub";

/// Registers the plugin with collectd.
pub struct FedhubManager;

impl PluginManager for FedhubManager {
    fn name() -> &'static str {
        PLUGIN_NAME
    }

    fn plugins(config: Option<&[ConfigItem<'_>]>) -> Result<PluginRegistration, Box<dyn Error>> {
        // Log through collectd (its LogLevel and log plugins decide what is kept),
        // prefixed "fedhub: ". Only the first plugin instance sets the logger.
        let _ = CollectdLoggerBuilder::new()
            .prefix_plugin::<Self>()
            .filter_level(log::LevelFilter::Info)
            .format(|buf, record| write!(buf, "{}", record.args()))
            .try_init();
        let settings = PluginSettings::from_config(config)?;
        log::info!(
            "reading {} every interval as plugin {}{}{} (timeout {:?})",
            settings.hub,
            settings.plugin,
            if settings.plugin_instance.is_empty() {
                ""
            } else {
                "-"
            },
            settings.plugin_instance,
            settings.timeout
        );
        Ok(PluginRegistration::Single(Box::new(FedhubPlugin::new(
            settings,
        ))))
    }
}

/// The read plugin: one hub, its previous totals.
pub struct FedhubPlugin {
    settings: PluginSettings,
    tracker: Mutex<Tracker>,
}

impl FedhubPlugin {
    /// A plugin reading the hub these settings name.
    pub fn new(settings: PluginSettings) -> FedhubPlugin {
        FedhubPlugin {
            settings,
            tracker: Mutex::new(Tracker::new()),
        }
    }

    /// Fetches `/state` and turns it into readings; errors are the warning to log.
    pub fn collect(&self) -> Result<Vec<Reading>, String> {
        let mut tracker = match self.tracker.lock() {
            Ok(t) => t,
            Err(poisoned) => poisoned.into_inner(),
        };
        let limits = Limits {
            step: self.settings.timeout,
            total: self.settings.timeout * TIMEOUTS_PER_READ,
            max_response_bytes: MAX_RESPONSE_BYTES,
            user_agent: "fedhub-collectd",
        };
        let body = match client::get(&self.settings.hub, &limits) {
            Ok(body) => body,
            Err(e) => {
                // The next successful read starts a new baseline: counts across
                // the outage would be attributed to a single interval.
                tracker.reset();
                return Err(format!("cannot read the hub's state: {e}"));
            }
        };
        match tracker.read_body(&body) {
            Ok((readings, skipped)) => {
                for problem in skipped {
                    log::warn!("{}: skipping an entry: {problem}", self.settings.hub);
                }
                Ok(readings)
            }
            Err(e) => {
                tracker.reset();
                Err(format!(
                    "cannot read the hub's state: {}: {e}",
                    self.settings.hub
                ))
            }
        }
    }

    fn dispatch(&self, reading: &Reading) -> Result<(), String> {
        if reading.type_instance.len() >= NAME_MAX_BYTES {
            return Err(format!(
                "type instance {:?} is longer than collectd's {} bytes",
                reading.type_instance,
                NAME_MAX_BYTES - 1
            ));
        }
        let values = [Value::Gauge(reading.value)];
        let mut list = ValueListBuilder::new(self.settings.plugin.as_str(), reading.type_)
            .values(&values)
            .type_instance(reading.type_instance.as_str());
        if !self.settings.plugin_instance.is_empty() {
            list = list.plugin_instance(self.settings.plugin_instance.as_str());
        }
        list.submit().map_err(|e| {
            format!(
                "cannot dispatch {}-{}: {e}",
                reading.type_, reading.type_instance
            )
        })
    }
}

impl Plugin for FedhubPlugin {
    fn capabilities(&self) -> PluginCapabilities {
        PluginCapabilities::READ
    }

    fn read_values(&self) -> Result<(), Box<dyn Error>> {
        // Never an error: see the module documentation (collectd's back-off).
        match self.collect() {
            Ok(readings) => {
                for reading in &readings {
                    if let Err(e) = self.dispatch(reading) {
                        log::warn!("{e}");
                    }
                }
            }
            Err(warning) => log::warn!("{warning}"),
        }
        Ok(())
    }
}

collectd_plugin!(FedhubManager);

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// Answers `count` connections with `body` as a 200 response.
    fn fake_hub(bodies: Vec<&'static str>) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for body in bodies {
                let Ok((mut s, _)) = listener.accept() else {
                    return;
                };
                let mut buf = [0u8; 1024];
                let _ = s.read(&mut buf);
                let _ = write!(
                    s,
                    "HTTP/1.0 200 OK\r\nContent-Type: application/json\r\n\r\n{body}"
                );
            }
        });
        addr.to_string()
    }

    fn settings(hub: &str) -> PluginSettings {
        let items = vec![ConfigItem {
            key: "Hub",
            values: vec![collectd_plugin::ConfigValue::String(hub)],
            children: vec![],
        }];
        PluginSettings::from_config(Some(&items)).unwrap()
    }

    #[test]
    fn reads_dispatch_through_the_stub_and_never_fail() {
        let hub = fake_hub(vec![
            r#"{"started_at": 1, "consumers": [{"name": "C", "initialized": true, "backlog": 4,
                "received_total": 10, "handled_total": 6, "exceptions_total": 0}]}"#,
            r#"{"started_at": 1, "consumers": [{"name": "C", "initialized": true, "backlog": 0,
                "received_total": 10, "handled_total": 10, "exceptions_total": 1}]}"#,
            "not json",
        ]);
        let plugin = FedhubPlugin::new(settings(&hub));
        let first = plugin.collect().unwrap();
        assert_eq!(first[0].type_instance, "C_backlog");
        assert_eq!(first[0].value, 4.0);
        let second = plugin.collect().unwrap();
        let out = second.iter().find(|r| r.type_instance == "C_out").unwrap();
        assert_eq!(out.value, 4.0);
        let third = plugin.collect().unwrap_err();
        assert!(third.contains("not JSON"), "{third}");
        // The read callback itself reports success whatever happened.
        assert!(plugin.read_values().is_ok(), "hub gone: still Ok");
        let e = plugin.collect().unwrap_err();
        assert!(
            e.starts_with("cannot read the hub's state: cannot connect"),
            "{e}"
        );
    }

    #[test]
    fn over_long_names_are_refused_before_reaching_collectd() {
        let plugin = FedhubPlugin::new(settings("127.0.0.1:1"));
        let reading = Reading {
            type_: "gauge",
            type_instance: "x".repeat(200),
            value: 1.0,
        };
        assert!(plugin
            .dispatch(&reading)
            .unwrap_err()
            .contains("longer than"));
        let ok = Reading {
            type_: "gauge",
            type_instance: "C_in".into(),
            value: f64::NAN,
        };
        assert!(plugin.dispatch(&ok).is_ok());
    }
}
