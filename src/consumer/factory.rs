//! How a consumer is registered with the hub: its [`ConsumerFactory`], and
//! everything a consumer crate declares about itself so that shipping it takes
//! one line in the binary's list of consumers: its HTTP prefix, whether it runs
//! on the embedded defaults, its documented config section and its subcommand
//! of the `fedhub` command ([`ConsumerCommand`]).

use std::ffi::OsString;
use std::process::ExitCode;
use std::sync::Arc;

use crate::config::{ConfigError, Settings};

use super::Consumer;

type BuildFn = dyn Fn(&Settings) -> Result<Box<dyn Consumer>, ConfigError> + Send + Sync;

/// The error a consumer's subcommand ends with (the binary prints it, with its
/// causes, and exits 2).
pub type CommandError = Box<dyn std::error::Error + Send + Sync>;

type CommandFn = dyn Fn(Vec<OsString>) -> Result<ExitCode, CommandError> + Send + Sync;

/// A subcommand of the `fedhub` binary that a consumer crate brings, such as
/// `fedhub history` for the history store. The binary lists it in its help and
/// hands it every argument after its name; the consumer parses them itself.
#[derive(Clone)]
pub struct ConsumerCommand {
    name: String,
    about: String,
    run: Arc<CommandFn>,
}

impl ConsumerCommand {
    /// A subcommand `name` described by `about` (one line, for `fedhub --help`).
    /// `run` receives the program name (`fedhub <name>`) followed by the
    /// subcommand's arguments, as `clap`'s `parse_from` expects them.
    pub fn new(
        name: &str,
        about: &str,
        run: impl Fn(Vec<OsString>) -> Result<ExitCode, CommandError> + Send + Sync + 'static,
    ) -> ConsumerCommand {
        ConsumerCommand {
            name: name.to_string(),
            about: about.to_string(),
            run: Arc::new(run),
        }
    }

    /// The subcommand's name (`history`).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Its one-line description.
    pub fn about(&self) -> &str {
        &self.about
    }

    /// Runs it with `args` (the program name first).
    pub fn run(&self, args: Vec<OsString>) -> Result<ExitCode, CommandError> {
        (self.run)(args)
    }
}

/// How the hub makes a consumer: a name (its config section and monitoring
/// name), default topics, whether it runs without being enabled, and a builder;
/// and what the consumer crate declares about itself: the prefix its HTTP routes
/// are mounted under, whether it runs on the embedded defaults, its documented
/// config section and its subcommand.
pub struct ConsumerFactory {
    name: String,
    topics: Vec<String>,
    enabled_by_default: bool,
    on_embedded_defaults: bool,
    http_prefix: Option<String>,
    example_config: Option<String>,
    command: Option<ConsumerCommand>,
    build: Box<BuildFn>,
}

impl ConsumerFactory {
    /// A factory for `name`, subscribed to everything and disabled unless its
    /// section says `enabled = true` (fedmsg's `config_key` convention).
    pub fn new(
        name: &str,
        build: impl Fn(&Settings) -> Result<Box<dyn Consumer>, ConfigError> + Send + Sync + 'static,
    ) -> ConsumerFactory {
        ConsumerFactory {
            name: name.to_string(),
            topics: vec!["*".to_string()],
            enabled_by_default: false,
            on_embedded_defaults: false,
            http_prefix: None,
            example_config: None,
            command: None,
            build: Box::new(build),
        }
    }

    /// Sets the default topics.
    pub fn topics<S: Into<String>>(mut self, topics: impl IntoIterator<Item = S>) -> Self {
        self.topics = topics.into_iter().map(Into::into).collect();
        self
    }

    /// Runs the consumer unless its section says `enabled = false`.
    pub fn enabled_by_default(mut self) -> Self {
        self.enabled_by_default = true;
        self
    }

    /// Runs the consumer when the hub runs on its embedded defaults (`fedhub
    /// run` without a config file), even though it is not enabled by default
    /// otherwise: for consumers that need nothing outside the working directory.
    pub fn on_embedded_defaults(mut self) -> Self {
        self.on_embedded_defaults = true;
        self
    }

    /// Mounts the consumer's [`http_routes`](super::Consumer::http_routes) under
    /// `prefix` (such as `/datagrepper`): its routes are written relative to it.
    /// Every consumer that serves HTTP declares one; the hub refuses to start
    /// when two consumers claim overlapping prefixes, or one claims a hub route.
    pub fn http_prefix(mut self, prefix: &str) -> Self {
        self.http_prefix = Some(prefix.to_string());
        self
    }

    /// The consumer's documented section of the example configuration, every
    /// option with its default (TOML, starting with `[consumers.<Name>]`).
    /// `examples/fedhub.toml` carries it verbatim, which a test checks.
    pub fn example_config(mut self, toml: &str) -> Self {
        self.example_config = Some(toml.to_string());
        self
    }

    /// A subcommand of the `fedhub` binary this consumer brings.
    pub fn command(mut self, command: ConsumerCommand) -> Self {
        self.command = Some(command);
        self
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The default topics.
    pub fn default_topics(&self) -> &[String] {
        &self.topics
    }

    /// Whether it runs without `enabled = true`.
    pub fn is_enabled_by_default(&self) -> bool {
        self.enabled_by_default
    }

    /// Whether it runs on the embedded defaults.
    pub fn runs_on_embedded_defaults(&self) -> bool {
        self.on_embedded_defaults
    }

    /// The prefix its HTTP routes are mounted under, if it declared one.
    pub fn prefix(&self) -> Option<&str> {
        self.http_prefix.as_deref()
    }

    /// Its documented example config section, if it declared one.
    pub fn example(&self) -> Option<&str> {
        self.example_config.as_deref()
    }

    /// Its subcommand of the `fedhub` binary, if any.
    pub fn subcommand(&self) -> Option<&ConsumerCommand> {
        self.command.as_ref()
    }

    /// Builds the consumer from its settings.
    pub fn build(&self, settings: &Settings) -> Result<Box<dyn Consumer>, ConfigError> {
        (self.build)(settings)
    }
}
