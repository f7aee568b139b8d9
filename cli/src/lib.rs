//! The consumers the `fedhub` binary ships. Shipping a consumer crate takes its
//! folder under `consumers/`, its dependency in `cli/Cargo.toml`, and one line
//! here: everything else (HTTP prefix, embedded defaults, example config
//! section, subcommand) the crate declares on its [`ConsumerFactory`].

use fedhub::{ConsumerFactory, NullConsumer};

/// Every consumer this binary can run, in the order they are listed in help
/// and started.
pub fn shipped_consumers() -> Vec<ConsumerFactory> {
    vec![
        NullConsumer::factory(),
        fedhub_history::factory(),
        fedhub_statscache::factory(),
        fedhub_badges::factory(),
        fedhub_notifications::factory(),
    ]
}
