//! The built-in plugins, registered by name in [`builtin`].

pub mod releng;
pub mod volume;

use crate::plugin::Plugin;
use crate::window::Window;
use volume::{Contributions, Dimension, Volume};

/// The windows of the volume family.
pub const WINDOWS: [Window; 3] = [Window::MINUTE, Window::HOUR, Window::DAY];

/// Every built-in plugin, in registration order: the volume family (total,
/// by category, topic, user, package; 1m, 1h, 1d), the releng dashboard,
/// contributions per user per day.
pub fn builtin() -> Vec<Box<dyn Plugin>> {
    let mut plugins: Vec<Box<dyn Plugin>> = Vec::new();
    for dimension in Dimension::ALL {
        for window in WINDOWS {
            plugins.push(Box::new(Volume::new(dimension, window)));
        }
    }
    plugins.push(Box::new(releng::Releng::new()));
    plugins.push(Box::new(Contributions::new()));
    plugins
}

/// The idents of every built-in plugin.
pub fn builtin_idents() -> Vec<String> {
    builtin().iter().map(|p| p.ident()).collect()
}
