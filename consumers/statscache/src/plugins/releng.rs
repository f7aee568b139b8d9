//! The release engineering dashboard's "latest value per (category,
//! constraint)" (statscache_plugins' `releng`), with its sub-plugins
//! (compose, amis, artifacts, updates) and its `layout`.
//!
//! Upstream bugs fixed: `updates` rows carry their constraint (upstream left
//! it out, so every sync added a row instead of replacing the last one); an
//! AMI whose image name has too few parts is skipped and counted instead of
//! raising; messages are kept as JSON values, not strings inside JSON.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};

use serde_json::{json, Value};

use crate::plugin::{Message, Outcome, Plugin, PluginError, Shape, Update};
use crate::window::Window;

/// What a sub-plugin found in a message: the key and the value to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The dashboard component (`compose-rawhide_primary`, `updates-epel`…).
    pub category: String,
    /// The thing within the component (`mash`, `f40-updates`…).
    pub constraint: String,
    /// What the dashboard shows (`name`, `status`, links).
    pub message: Value,
}

/// One of the releng plugin's sources of events.
pub trait SubPlugin: Send {
    /// Its name, for logs and error counts.
    fn name(&self) -> &str;
    /// The event a message makes, if any.
    fn event(&self, m: &Message<'_>) -> Result<Option<Event>, PluginError>;
}

/// The topic's tokens after `<org>.<org2>.<env>`: `compose.rawhide.mash.start`.
fn tail(topic: &str) -> Vec<&str> {
    topic.split('.').skip(3).collect()
}

/// Composes starting and completing: rawhide and branched, and their
/// mash, pungify and rsync steps.
pub struct Compose;

impl SubPlugin for Compose {
    fn name(&self) -> &str {
        "compose"
    }
    fn event(&self, m: &Message<'_>) -> Result<Option<Event>, PluginError> {
        if !m.topic().contains(".compose.") {
            return Ok(None);
        }
        let tail = tail(m.topic());
        let (branch, step, status) = match tail.as_slice() {
            ["compose", branch @ ("rawhide" | "branched"), status @ ("start" | "complete")] => {
                (*branch, *branch, *status)
            }
            ["compose", branch @ ("rawhide" | "branched"), step @ ("mash" | "pungify" | "rsync"), status @ ("start" | "complete")] => {
                (*branch, *step, *status)
            }
            _ => return Ok(None),
        };
        let arch = match m.msg().get("arch") {
            None | Some(Value::Null) => "primary",
            Some(Value::String(a)) if a.is_empty() => "primary",
            Some(Value::String(a)) if !a.is_empty() => a.as_str(),
            Some(_) => return Err(PluginError::missing("msg.arch", "an architecture name")),
        };
        let mut name = step.to_string();
        if let Some(first) = name.get_mut(0..1) {
            first.make_ascii_uppercase();
        }
        Ok(Some(Event {
            category: format!("compose-{branch}_{arch}"),
            constraint: step.to_string(),
            message: json!({"name": name, "status": status}),
        }))
    }
}

/// Cloud images uploaded to or tested in EC2 regions (fedimg).
pub struct Amis;

impl SubPlugin for Amis {
    fn name(&self) -> &str {
        "amis"
    }
    fn event(&self, m: &Message<'_>) -> Result<Option<Event>, PluginError> {
        if !m.topic().contains(".fedimg.image.") {
            return Ok(None);
        }
        if !matches!(
            tail(m.topic()).as_slice(),
            ["fedimg", "image", "upload" | "test"]
        ) {
            return Ok(None);
        }
        if m.msg_str("status") != Some("completed") {
            return Ok(None);
        }
        let image = m
            .msg_str("image_name")
            .ok_or_else(|| PluginError::missing("msg.image_name", "the image's name"))?;
        let version = image
            .split('.')
            .next()
            .and_then(|s| s.split('-').nth(3))
            .ok_or_else(|| {
                PluginError::missing(
                    "msg.image_name",
                    "a name such as Fedora-Cloud-Base-rawhide-20150901.x86_64 (its fourth dash-separated part is the version)",
                )
            })?;
        let region = m.msg_str("destination").unwrap_or("");
        let id = m.msg_str("extra.id").unwrap_or("");
        let branch = if version == "rawhide" {
            "rawhide"
        } else {
            "branched"
        };
        Ok(Some(Event {
            category: format!("ami-{branch}"),
            constraint: format!("{image}-{region}"),
            message: json!({
                "name": image,
                "extra_text": region,
                "extra_link": format!(
                    "https://console.aws.amazon.com/ec2/v2/home?region={region}#LaunchInstanceWizard:ami={id}"
                ),
                "status": "completed",
            }),
        }))
    }
}

/// Appliance and live CD images built by the masher (koji task messages).
pub struct Artifacts;

impl SubPlugin for Artifacts {
    fn name(&self) -> &str {
        "artifacts"
    }
    fn event(&self, m: &Message<'_>) -> Result<Option<Event>, PluginError> {
        if m.msg_str("owner") != Some("masher") {
            return Ok(None);
        }
        let method = match m.msg_str("method") {
            Some(method @ ("appliance" | "livecd")) => method,
            _ => return Ok(None),
        };
        let srpm = m
            .msg_str("srpm")
            .ok_or_else(|| PluginError::missing("msg.srpm", "the image's source label"))?;
        let arch = m
            .msg_str("arch")
            .or_else(|| srpm.rsplit('.').next())
            .unwrap_or("noarch");
        let id = m.msg().get("id").and_then(Value::as_i64);
        let status = m.msg().get("new").cloned().unwrap_or(Value::Null);
        let mut message = json!({
            "name": srpm,
            "status": status,
            "extra_text": "(details)",
            "extra_link": id.map(|id| format!("https://koji.fedoraproject.org/koji/taskinfo?taskID={id}")),
        });
        if let (Some(id), "livecd") = (id, method) {
            message["link"] = json!(format!(
                "https://kojipkgs.fedoraproject.org/work/tasks/{}/{id}/",
                id % 10_000
            ));
        }
        Ok(Some(Event {
            category: format!("artifact-{method}_{arch}"),
            constraint: srpm.to_string(),
            message,
        }))
    }
}

/// Updates repositories synced out by bodhi.
pub struct Updates;

impl SubPlugin for Updates {
    fn name(&self) -> &str {
        "updates"
    }
    fn event(&self, m: &Message<'_>) -> Result<Option<Event>, PluginError> {
        if !m.topic().contains(".bodhi.updates.") {
            return Ok(None);
        }
        let product = match tail(m.topic()).as_slice() {
            ["bodhi", "updates", product @ ("fedora" | "epel"), "sync"] => *product,
            _ => return Ok(None),
        };
        let release = m
            .msg_str("release")
            .ok_or_else(|| PluginError::missing("msg.release", "the release (f40, el9…)"))?;
        let repo = m.msg_str("repo").ok_or_else(|| {
            PluginError::missing("msg.repo", "the repository (updates, updates-testing…)")
        })?;
        let name = format!("{release}-{repo}");
        Ok(Some(Event {
            category: format!("updates-{product}"),
            constraint: name.clone(),
            message: json!({"name": name, "status": "synced out"}),
        }))
    }
}

/// The releng dashboard plugin: the newest event per (category, constraint).
pub struct Releng {
    subs: Vec<Box<dyn SubPlugin>>,
    seen: HashMap<(String, String), f64>,
    queue: HashMap<(String, String), (f64, Value)>,
}

impl Releng {
    /// The plugin with its four sub-plugins.
    pub fn new() -> Releng {
        Releng::with_subplugins(vec![
            Box::new(Compose),
            Box::new(Amis),
            Box::new(Artifacts),
            Box::new(Updates),
        ])
    }

    /// The plugin with other sub-plugins.
    pub fn with_subplugins(subs: Vec<Box<dyn SubPlugin>>) -> Releng {
        Releng {
            subs,
            seen: HashMap::new(),
            queue: HashMap::new(),
        }
    }
}

impl Default for Releng {
    fn default() -> Self {
        Releng::new()
    }
}

impl Plugin for Releng {
    fn name(&self) -> &str {
        "Release engineering event logs"
    }
    fn summary(&self) -> &str {
        "The latest release engineering events"
    }
    fn description(&self) -> &str {
        "The newest event per dashboard component and constraint: composes (rawhide, \
         branched and their steps), cloud images (AMIs) per region, appliance and live CD \
         builds, and updates repositories synced out. The layout says how the release \
         engineering dashboard groups them."
    }
    fn window(&self) -> Option<Window> {
        None
    }
    fn shape(&self) -> Shape {
        Shape::Latest
    }

    /// Runs every sub-plugin; one failing (or panicking) does not stop the
    /// others, and the first failure is reported after they all ran.
    fn process(&mut self, m: &Message<'_>) -> Result<Outcome, PluginError> {
        let mut outcome = Outcome::Ignored;
        let mut failure = None;
        let mut timestamp = None;
        for sub in &self.subs {
            let found = catch_unwind(AssertUnwindSafe(|| sub.event(m))).unwrap_or_else(|_| {
                Err(PluginError::Failed(format!(
                    "sub-plugin {} panicked",
                    sub.name()
                )))
            });
            let event = match found {
                Ok(Some(event)) => event,
                Ok(None) => continue,
                Err(e) => {
                    failure.get_or_insert(e);
                    continue;
                }
            };
            let t = match timestamp {
                Some(t) => t,
                None => match m.timestamp() {
                    Ok(t) => *timestamp.insert(t),
                    Err(e) => return Err(e),
                },
            };
            let key = (event.category, event.constraint);
            if self.seen.get(&key).is_some_and(|&newest| newest >= t) {
                continue; // an older or repeated event
            }
            self.seen.insert(key.clone(), t);
            self.queue.insert(key, (t, event.message));
            outcome = Outcome::Counted;
        }
        match failure {
            Some(e) => Err(e),
            None => Ok(outcome),
        }
    }

    fn flush(&mut self) -> Vec<Update> {
        self.queue
            .drain()
            .map(
                |((category, constraint), (timestamp, message))| Update::Latest {
                    category,
                    constraint,
                    timestamp,
                    message,
                },
            )
            .collect()
    }

    fn layout(&self) -> Option<Value> {
        Some(layout())
    }
}

/// The dashboard's layout: groups of components, each component id being a
/// row's `category`.
pub fn layout() -> Value {
    let compose = |branch: &str, arch: &str, name: &str| json!({"id": format!("compose-{branch}_{arch}"), "name": name, "show_status": true});
    json!({
        "default_options": {
            "show_time_at": true,
            "show_status": true,
            "status_verb_map": {"start": "started", "complete": "completed", "completed": "completed",
                                "synced out": "synced out", "CLOSED": "closed", "FAILED": "failed"},
            "status_class_map": {"start": "info", "complete": "success", "completed": "success",
                                 "synced out": "success", "FAILED": "danger"},
            "old_log_threshold": {"key": "hours", "value": 24},
        },
        "groups": [
            {"id": "compose", "name": "Composes", "components": [
                compose("rawhide", "primary", "Rawhide"),
                compose("rawhide", "arm", "Rawhide (arm)"),
                compose("branched", "primary", "Branched"),
                compose("branched", "arm", "Branched (arm)"),
            ]},
            {"id": "updates", "name": "Updates", "components": [
                {"id": "updates-fedora", "name": "Fedora updates", "show_status": true},
                {"id": "updates-epel", "name": "EPEL updates", "show_status": true},
            ]},
            {"id": "amis", "name": "Cloud images (AMIs)", "components": [
                {"id": "ami-rawhide", "name": "Rawhide AMIs", "link_for": "extra_link"},
                {"id": "ami-branched", "name": "Branched AMIs", "link_for": "extra_link"},
            ]},
            {"id": "appliance", "name": "Appliances", "components": [
                {"id": "artifact-appliance_x86_64", "name": "Appliance (x86_64)"},
            ]},
            {"id": "livecd", "name": "Live CDs", "components": [
                {"id": "artifact-livecd_x86_64", "name": "Live CD (x86_64)", "link_for": "link"},
                {"id": "artifact-livecd_i686", "name": "Live CD (i686)", "link_for": "link"},
            ]},
        ],
    })
}
