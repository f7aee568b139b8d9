//! collectd plugin.
