//! The volume family: message counts per window, in total and by category,
//! topic, user and package (statscache_plugins' `volume*`, bucketed as the
//! spec says, with the `volume` plugin's missing bucketing fixed).

use std::collections::HashMap;

use crate::plugin::{Message, Outcome, Plugin, PluginError, Shape, Update};
use crate::window::Window;

/// What a volume plugin counts by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dimension {
    /// Every message.
    Total,
    /// `topic.split('.')[3]`.
    Category,
    /// The whole topic.
    Topic,
    /// Each user the message is about (`msg2usernames`).
    User,
    /// Each package the message is about (`msg2packages`).
    Package,
}

impl Dimension {
    /// Every dimension, in the order the built-ins are registered.
    pub const ALL: [Dimension; 5] = [
        Dimension::Total,
        Dimension::Category,
        Dimension::Topic,
        Dimension::User,
        Dimension::Package,
    ];

    fn name(self) -> &'static str {
        match self {
            Dimension::Total => "Volume",
            Dimension::Category => "Volume, by category",
            Dimension::Topic => "Volume, by topic",
            Dimension::User => "Volume, by user",
            Dimension::Package => "Volume, by package",
        }
    }

    fn key(self) -> Option<&'static str> {
        match self {
            Dimension::Total => None,
            Dimension::Category => Some("category"),
            Dimension::Topic => Some("topic"),
            Dimension::User => Some("user"),
            Dimension::Package => Some("package"),
        }
    }
}

/// Pending counts: bucket end -> key -> count.
#[derive(Debug, Default)]
pub struct Counts(HashMap<i64, HashMap<String, i64>>);

impl Counts {
    /// Adds one to (`bucket`, `key`), allocating the key only the first time.
    pub fn bump(&mut self, bucket: i64, key: &str) {
        let keys = self.0.entry(bucket).or_default();
        match keys.get_mut(key) {
            Some(n) => *n += 1,
            None => {
                keys.insert(key.to_string(), 1);
            }
        }
    }

    /// The pending counts as updates, emptied.
    pub fn drain(&mut self) -> Vec<Update> {
        let mut out = Vec::new();
        for (bucket, keys) in self.0.drain() {
            for (key, add) in keys {
                out.push(Update::Count { bucket, key, add });
            }
        }
        out
    }
}

/// Message volume by one [`Dimension`] in one [`Window`].
pub struct Volume {
    dimension: Dimension,
    window: Window,
    summary: String,
    description: String,
    pending: Counts,
}

impl Volume {
    /// A volume plugin.
    pub fn new(dimension: Dimension, window: Window) -> Volume {
        let by = match dimension {
            Dimension::Total => String::new(),
            d => format!(" per {}", d.key().unwrap_or_default()),
        };
        Volume {
            dimension,
            window,
            summary: format!("Messages{by} per {window} window"),
            description: format!(
                "The number of messages{by} seen in each {window} window; each row is labelled \
                 with its window's end (Unix seconds, UTC), the window being [end - {window}, end)."
            ),
            pending: Counts::default(),
        }
    }
}

impl Plugin for Volume {
    fn name(&self) -> &str {
        self.dimension.name()
    }
    fn summary(&self) -> &str {
        &self.summary
    }
    fn description(&self) -> &str {
        &self.description
    }
    fn window(&self) -> Option<Window> {
        Some(self.window)
    }
    fn shape(&self) -> Shape {
        Shape::Counts {
            key: self.dimension.key(),
        }
    }

    fn process(&mut self, m: &Message<'_>) -> Result<Outcome, PluginError> {
        let bucket = self.window.bucket_end(m.timestamp()?);
        match self.dimension {
            Dimension::Total => self.pending.bump(bucket, ""),
            Dimension::Category => {
                let category = m.category().ok_or_else(|| {
                    PluginError::missing("topic", "a topic with a category (org.env.x.CATEGORY…)")
                })?;
                self.pending.bump(bucket, category)
            }
            Dimension::Topic => self.pending.bump(bucket, m.topic()),
            Dimension::User => {
                if m.users().is_empty() {
                    return Ok(Outcome::Ignored);
                }
                for user in m.users() {
                    self.pending.bump(bucket, user);
                }
            }
            Dimension::Package => {
                if m.packages().is_empty() {
                    return Ok(Outcome::Ignored);
                }
                for package in m.packages() {
                    self.pending.bump(bucket, package);
                }
            }
        }
        Ok(Outcome::Counted)
    }

    fn flush(&mut self) -> Vec<Update> {
        self.pending.drain()
    }
}

/// Contributions per user per day: the data behind a GitHub-style calendar.
pub struct Contributions {
    pending: Counts,
}

impl Contributions {
    /// The plugin, ident `contributions-per-user-1d`.
    pub fn new() -> Contributions {
        Contributions {
            pending: Counts::default(),
        }
    }
}

impl Default for Contributions {
    fn default() -> Self {
        Contributions::new()
    }
}

impl Plugin for Contributions {
    fn name(&self) -> &str {
        "Contributions per user"
    }
    fn summary(&self) -> &str {
        "Each user's contributions per day"
    }
    fn description(&self) -> &str {
        "How many messages credit each user (fedmsg_meta's usernames) per UTC day, \
         robots and bridges left out: a year of one user's rows (?user=NAME) draws a \
         GitHub-style contributions calendar."
    }
    fn window(&self) -> Option<Window> {
        Some(Window::DAY)
    }
    fn shape(&self) -> Shape {
        Shape::Counts { key: Some("user") }
    }

    fn process(&mut self, m: &Message<'_>) -> Result<Outcome, PluginError> {
        // Messages sent on a user's behalf by automation do not count.
        if m.topic().contains(".fedbadges.") || m.topic().contains(".fedimg.") {
            return Ok(Outcome::Ignored);
        }
        let users = m.users();
        if users.is_empty() {
            return Ok(Outcome::Ignored);
        }
        let bucket = Window::DAY.bucket_end(m.timestamp()?);
        for user in users {
            if !is_robot(user) {
                self.pending.bump(bucket, user);
            }
        }
        Ok(Outcome::Counted)
    }

    fn flush(&mut self) -> Vec<Update> {
        self.pending.drain()
    }
}

/// Accounts that act for nobody in particular.
fn is_robot(user: &str) -> bool {
    matches!(
        user,
        "bodhi" | "masher" | "koschei" | "zodbot" | "releng" | "autopen" | "packagerbot"
    )
}
