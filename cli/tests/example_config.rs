//! `examples/fedhub.toml` documents every shipped consumer: each consumer's own
//! example section (declared on its factory) appears in it verbatim, and the
//! whole file is a valid configuration for the shipped consumers.

use std::path::Path;

use fedhub::{Config, HubBuilder};
use fedhub_cli::shipped_consumers;

fn example_path() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/fedhub.toml")
}

#[test]
fn the_example_config_documents_every_shipped_consumer() {
    let text = std::fs::read_to_string(example_path()).unwrap();
    for factory in shipped_consumers() {
        let section = factory.example().unwrap_or_else(|| {
            panic!(
                "{} declares no example config section (ConsumerFactory::example_config)",
                factory.name()
            )
        });
        assert!(
            section.starts_with(&format!("[consumers.{}]", factory.name())),
            "{}'s example section starts with its header:\n{section}",
            factory.name()
        );
        assert!(
            text.contains(section),
            "examples/fedhub.toml lacks {}'s example section verbatim; add:\n{section}",
            factory.name()
        );
    }
}

#[test]
fn the_example_config_parses_and_checks_with_the_shipped_consumers() {
    let config = Config::load(Some(&example_path())).unwrap();
    let enabled = HubBuilder::new(config)
        .consumers(shipped_consumers())
        .check()
        .unwrap();
    assert!(
        enabled.is_empty(),
        "the example enables nothing: {enabled:?}"
    );
}
