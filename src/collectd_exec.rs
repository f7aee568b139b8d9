//! `fedhub collectd-exec`: PUTVAL lines for collectd's exec plugin.
