//! `fedhub history`: import JSON lines into the history store, query it the way
//! datagrepper's `/raw` does, and show one user's recent activity (userwat).
//!
//! The database is `--database`, else `[consumers.Nommer] database` from the
//! config file (`-c`), else `fedhub-history.sqlite`: a SQLite file or a
//! `postgres://` URL.

use std::io::{BufRead, BufReader, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};
use fedhub::{Config, ConsumerCommand, ConsumerSection, Settings};
use fedhub_storage::DatabaseUrl;

use crate::http::{message_json, parse_raw, raw_body, ApiOptions};
use crate::{import_jsonl, user_activity, ImportProgress, NommerConfig, Store};

/// `fedhub history`, as the history store declares it to the binary.
pub fn command() -> ConsumerCommand {
    ConsumerCommand::new(
        "history",
        "The history store (the Nommer consumer's database): import, query, user activity",
        |args| {
            let args = HistoryArgs::parse_from(args);
            history(args).map_err(Into::into)
        },
    )
}

/// Options of `fedhub history`.
#[derive(Parser)]
#[command(
    name = "fedhub history",
    about = "The history store (the Nommer consumer's database): import, query, user activity"
)]
pub struct HistoryArgs {
    /// The hub's config file: its [consumers.Nommer] section names the database.
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    /// The database: a SQLite file or postgres://user:password@host:port/dbname
    /// (overrides the config's [consumers.Nommer] database).
    #[arg(long, global = true)]
    database: Option<String>,
    #[command(subcommand)]
    command: HistoryCommand,
}

#[derive(Subcommand)]
enum HistoryCommand {
    /// Store messages from a JSON lines file (`-` for stdin): fedmsg bodies, envelopes
    /// as `fedhub tail` prints them, or datagrepper /raw responses. Duplicates are skipped.
    ///
    /// With --from-datanommer URL, copies a datanommer PostgreSQL database instead,
    /// with the users and packages it recorded; resumable (a second run continues
    /// where the first stopped) and idempotent.
    Import {
        /// The file to read.
        #[arg(
            required_unless_present = "from_datanommer",
            conflicts_with = "from_datanommer"
        )]
        file: Option<PathBuf>,
        /// A datanommer database to copy: postgres://user:password@host:port/dbname.
        #[arg(long, value_name = "URL")]
        from_datanommer: Option<String>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Query stored messages with datagrepper's /raw arguments; prints one message
    /// per line (JSON), or with --raw the whole /raw response.
    Query(Box<QueryArgs>),
    /// A user's recent activity, newest first, one line each: time, topic, summary.
    User {
        /// The FAS user name.
        name: String,
        /// Most lines to print.
        #[arg(long, default_value_t = 25)]
        limit: usize,
    },
}

/// datagrepper's `/raw` arguments as flags (repeatable ones may be given again).
#[derive(Args)]
struct QueryArgs {
    /// Messages about this user.
    #[arg(long)]
    user: Vec<String>,
    /// Messages about this package.
    #[arg(long)]
    package: Vec<String>,
    /// Messages in this category (buildsys, bodhi, …).
    #[arg(long)]
    category: Vec<String>,
    /// Messages with this exact topic.
    #[arg(long)]
    topic: Vec<String>,
    /// Messages whose payload contains this text (needs --topic or --category and a window).
    #[arg(long)]
    contains: Vec<String>,
    /// Not about this user.
    #[arg(long)]
    not_user: Vec<String>,
    /// Not about this package.
    #[arg(long)]
    not_package: Vec<String>,
    /// Not in this category.
    #[arg(long)]
    not_category: Vec<String>,
    /// Not with this topic.
    #[arg(long)]
    not_topic: Vec<String>,
    /// Window start: unix seconds or an ISO 8601 time.
    #[arg(long)]
    start: Option<String>,
    /// Window end: unix seconds or an ISO 8601 time.
    #[arg(long)]
    end: Option<String>,
    /// Window length in seconds.
    #[arg(long)]
    delta: Option<String>,
    /// Page number, from 1.
    #[arg(long)]
    page: Option<String>,
    /// Messages per page, 1 to 100 (default 25).
    #[arg(long)]
    rows_per_page: Option<String>,
    /// `desc` (newest first, the default) or `asc`.
    #[arg(long)]
    order: Option<String>,
    /// Add a meta field to each message: title, subtitle, link, usernames or packages.
    #[arg(long)]
    meta: Vec<String>,
    /// Print the whole datagrepper /raw response instead of one message per line.
    #[arg(long)]
    raw: bool,
}

impl QueryArgs {
    /// The flags as a datagrepper query string, so the CLI checks its input
    /// exactly as `/datagrepper/raw` does.
    fn query_string(&self) -> String {
        let mut query = form_urlencoded::Serializer::new(String::new());
        let lists = [
            ("user", &self.user),
            ("package", &self.package),
            ("category", &self.category),
            ("topic", &self.topic),
            ("contains", &self.contains),
            ("not_user", &self.not_user),
            ("not_package", &self.not_package),
            ("not_category", &self.not_category),
            ("not_topic", &self.not_topic),
            ("meta", &self.meta),
        ];
        for (key, values) in lists {
            for v in values {
                query.append_pair(key, v);
            }
        }
        let singles = [
            ("start", &self.start),
            ("end", &self.end),
            ("delta", &self.delta),
            ("page", &self.page),
            ("rows_per_page", &self.rows_per_page),
            ("order", &self.order),
        ];
        for (key, value) in singles {
            if let Some(v) = value {
                query.append_pair(key, v);
            }
        }
        query.finish()
    }
}

/// Runs `fedhub history …`.
pub fn history(args: HistoryArgs) -> anyhow::Result<ExitCode> {
    let config = nommer_config(args.config.as_deref(), args.database)?;
    match args.command {
        HistoryCommand::Import {
            from_datanommer: Some(url),
            quiet,
            ..
        } => import_from_datanommer(&config, &url, quiet),
        HistoryCommand::Import {
            file: Some(file),
            quiet,
            ..
        } => import(&config, &file, quiet),
        HistoryCommand::Import { .. } => {
            bail!("import: expected a FILE or --from-datanommer URL")
        }
        HistoryCommand::Query(query) => run_query(&config, &query),
        HistoryCommand::User { name, limit } => user(&config, &name, limit),
    }
}

/// The `[consumers.Nommer]` settings of the config file (defaults without one),
/// with `--database` applied.
fn nommer_config(path: Option<&Path>, database: Option<String>) -> anyhow::Result<NommerConfig> {
    let mut nommer = match path {
        Some(path) => {
            let config = Config::load(Some(path))?;
            match config.consumers.get(crate::consumer::NAME) {
                Some(raw) => {
                    let section = ConsumerSection::parse(crate::consumer::NAME, raw)?;
                    Settings::new(crate::consumer::NAME, section.settings)
                        .parse::<NommerConfig>()?
                }
                None => NommerConfig::default(),
            }
        }
        None => NommerConfig::default(),
    };
    if let Some(db) = database {
        nommer.database = db;
    }
    nommer.validate()?;
    Ok(nommer)
}

/// The database as messages show it: a SQLite file's path, or the URL with
/// its password masked.
fn shown(config: &NommerConfig) -> String {
    match config.database_url() {
        Ok(DatabaseUrl::Sqlite(path)) => path.display().to_string(),
        Ok(url) => url.to_string(),
        Err(_) => fedhub_storage::mask_password(&config.database),
    }
}

/// Opens the store (SQLite or PostgreSQL), creating its schema if needed.
fn open_store(config: &NommerConfig) -> anyhow::Result<Arc<dyn Store>> {
    Ok(config.open_store(&prometheus::Registry::new())?)
}

/// Opens the database for reading; a SQLite file must exist.
fn open_existing(config: &NommerConfig) -> anyhow::Result<Arc<dyn Store>> {
    if let DatabaseUrl::Sqlite(path) = config.database_url()? {
        if !path.is_file() {
            bail!(
                "history database {} does not exist (give --database, or -c with a [consumers.Nommer] database)",
                path.display()
            );
        }
    }
    open_store(config)
}

/// The import's progress on stderr: an indicatif bar (by bytes read, when the
/// size is known) on a terminal; elsewhere (a log, a pipe) nothing while it
/// runs and the same line once at the end.
struct ImportBar {
    bar: indicatif::ProgressBar,
    began: Instant,
    enabled: bool,
    known_size: bool,
}

impl ImportBar {
    fn new(total_bytes: Option<u64>, enabled: bool) -> ImportBar {
        let known_size = total_bytes.is_some_and(|t| t > 0);
        let bar = if !enabled {
            indicatif::ProgressBar::hidden()
        } else if let Some(total) = total_bytes.filter(|_| known_size) {
            indicatif::ProgressBar::new(total).with_style(
                indicatif::ProgressStyle::with_template("[{bar:20}] {percent:>3}% {wide_msg}")
                    .expect("a valid progress template")
                    .progress_chars("#>-"),
            )
        } else {
            indicatif::ProgressBar::new_spinner().with_style(
                indicatif::ProgressStyle::with_template("{spinner} {wide_msg}")
                    .expect("a valid progress template"),
            )
        };
        ImportBar {
            bar,
            began: Instant::now(),
            enabled,
            known_size,
        }
    }

    fn counts(&self, p: &ImportProgress) -> String {
        let secs = self.began.elapsed().as_secs_f64().max(1e-3);
        let rate = (p.stored + p.duplicates) as f64 / secs;
        format!(
            "{} lines, {} stored, {} duplicates, {} bad, {:.0} msg/s",
            p.lines, p.stored, p.duplicates, p.bad_lines, rate
        )
    }

    fn update(&mut self, p: &ImportProgress) {
        if self.enabled {
            self.bar.set_position(p.bytes);
            self.bar.set_message(self.counts(p));
        }
    }

    fn finish(&mut self, p: &ImportProgress) {
        if !self.enabled {
            return;
        }
        if let Some(total) = self.bar.length() {
            self.bar.set_position(total);
        }
        self.bar.finish_with_message(self.counts(p));
        if self.bar.is_hidden() {
            // Not a terminal: no bar was drawn, so say once where it ended.
            let done = if self.known_size { "100% " } else { "" };
            let _ = writeln!(std::io::stderr().lock(), "{done}{}", self.counts(p));
        }
    }
}

fn import(config: &NommerConfig, file: &Path, quiet: bool) -> anyhow::Result<ExitCode> {
    let (reader, total): (Box<dyn BufRead>, Option<u64>) = if file == Path::new("-") {
        (Box::new(BufReader::new(std::io::stdin())), None)
    } else {
        let f =
            std::fs::File::open(file).with_context(|| format!("cannot read {}", file.display()))?;
        let size = f.metadata().ok().map(|m| m.len());
        (Box::new(BufReader::with_capacity(1 << 20, f)), size)
    };
    let store = open_store(config)?;
    let mut bar = ImportBar::new(total, !quiet);
    let began = Instant::now();
    let report = import_jsonl(reader, &*store, |p| bar.update(p))
        .with_context(|| format!("importing {}", file.display()))?;
    let p = report.progress;
    bar.finish(&p);
    for error in &report.errors {
        eprintln!("fedhub: {}: {error}", file.display());
    }
    if p.bad_lines as usize > report.errors.len() {
        eprintln!(
            "fedhub: {}: {} more bad lines not shown",
            file.display(),
            p.bad_lines as usize - report.errors.len()
        );
    }
    println!(
        "imported {} messages into {} ({} duplicates skipped, {} bad lines) in {:.1} s",
        p.stored,
        shown(config),
        p.duplicates,
        p.bad_lines,
        began.elapsed().as_secs_f64()
    );
    Ok(if p.bad_lines > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn import_from_datanommer(
    config: &NommerConfig,
    source: &str,
    quiet: bool,
) -> anyhow::Result<ExitCode> {
    let url = DatabaseUrl::parse(source).context("--from-datanommer")?;
    if url.backend() != fedhub_storage::Backend::Postgres {
        bail!(
            "--from-datanommer {url}: expected a datanommer PostgreSQL database, postgres://user:password@host:port/dbname"
        );
    }
    let store = open_store(config)?;
    let began = Instant::now();
    let enabled = !quiet;
    let mut bar: Option<indicatif::ProgressBar> = None;
    let counts = |p: &crate::DatanommerProgress| {
        let secs = began.elapsed().as_secs_f64().max(1e-3);
        format!(
            "{} of {} read, {} stored, {} duplicates, {:.0} msg/s",
            p.read,
            p.total,
            p.stored,
            p.duplicates,
            p.read as f64 / secs
        )
    };
    let done = crate::import_datanommer(&url, &*store, |p| {
        if !enabled {
            return;
        }
        let bar = bar.get_or_insert_with(|| {
            if p.resumed_after > 0 {
                let _ = writeln!(
                    std::io::stderr().lock(),
                    "resuming after datanommer message id {}",
                    p.resumed_after
                );
            }
            indicatif::ProgressBar::new(p.total).with_style(
                indicatif::ProgressStyle::with_template("[{bar:20}] {percent:>3}% {wide_msg}")
                    .expect("a valid progress template")
                    .progress_chars("#>-"),
            )
        });
        bar.set_position(p.read);
        bar.set_message(counts(p));
    })?;
    if let Some(bar) = bar {
        let hidden = bar.is_hidden();
        bar.finish_with_message(counts(&done));
        if hidden {
            // Not a terminal: no bar was drawn, so say once where it ended.
            let _ = writeln!(std::io::stderr().lock(), "100% {}", counts(&done));
        }
    }
    println!(
        "imported {} messages from {} into {} ({} duplicates skipped; last datanommer id {}) in {:.1} s",
        done.stored,
        url,
        shown(config),
        done.duplicates,
        done.last_id,
        began.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

fn run_query(config: &NommerConfig, args: &QueryArgs) -> anyhow::Result<ExitCode> {
    let options = ApiOptions::default();
    let request =
        parse_raw(&args.query_string(), &options, crate::filter::now_secs()).map_err(|e| {
            anyhow::anyhow!(
                "bad query: --{}: {}",
                e.parameter.replace('_', "-"),
                e.problem
            )
        })?;
    let store = open_existing(config)?;
    let window = request.filter.window()?;
    let page = store.grep(&request.filter)?;
    let mut out = std::io::stdout().lock();
    if args.raw {
        writeln!(out, "{}", raw_body(&request, &page, window))?;
    } else {
        for m in &page.messages {
            writeln!(out, "{}", message_json(m, &request.meta))?;
        }
        if std::io::stderr().is_terminal() {
            eprintln!(
                "page {} of {}, {} messages in all",
                request.filter.page, page.pages, page.total
            );
        }
    }
    out.flush()?;
    Ok(ExitCode::SUCCESS)
}

fn user(config: &NommerConfig, name: &str, limit: usize) -> anyhow::Result<ExitCode> {
    // The same check as /raw?user=…, so bad names get the same clear error.
    let query = form_urlencoded::Serializer::new(String::new())
        .append_pair("user", name)
        .finish();
    parse_raw(&query, &ApiOptions::default(), 0.0)
        .map_err(|e| anyhow::anyhow!("bad user name: {}", e.problem))?;
    if limit == 0 {
        bail!("--limit 0: expected a positive number of lines");
    }
    let store = open_existing(config)?;
    let lines = user_activity(&*store, name, limit)?;
    let mut out = std::io::stdout().lock();
    for line in &lines {
        writeln!(out, "{line}")?;
    }
    out.flush()?;
    if lines.is_empty() {
        eprintln!("no stored activity for user {name:?} in {}", shown(config));
    }
    Ok(ExitCode::SUCCESS)
}
