//! `fedhub stats`: read the statistics database from the command line.
//!
//! `fedhub stats quote CATEGORY` prints zodbot's `.quote` lines for a
//! category: its message volume over the last 24 hours against the 24 hours
//! before, and an hourly sparkline:
//!
//! ```text
//! BDG, fedbadges +1097.35% over yesterday
//! ▁▁▁▆▆█▂▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁▁ over 24 hours (2026-11-29 14:00 to 2026-11-30 14:00 UTC)
//! ```
//!
//! The database is `--database`, else `[consumers.StatsConsumer] database`
//! from the config file (`-c`), else `fedhub-statscache.sqlite`.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context as _};
use clap::{Parser, Subcommand};
use fedhub::{Config, ConsumerCommand, ConsumerSection, Settings};
use fedhub_storage::{Database, PoolOptions};

use crate::consumer::{StatsConfig, NAME};
use crate::plugin::Shape;
use crate::store::{Order, Reader, Row, RowsQuery};
use crate::window::Window;

/// `fedhub stats`, as the consumer declares it to the binary.
pub fn command() -> ConsumerCommand {
    ConsumerCommand::new(
        "stats",
        "Statistics (the StatsConsumer's database): quotes",
        |args| run(StatsArgs::parse_from(args)).map_err(Into::into),
    )
}

/// Options of `fedhub stats`.
#[derive(Parser)]
#[command(
    name = "fedhub stats",
    about = "Statistics (the StatsConsumer's database): quotes"
)]
pub struct StatsArgs {
    /// The hub's config file: its [consumers.StatsConsumer] section names the database.
    #[arg(short = 'c', long = "config", global = true)]
    config: Option<PathBuf>,
    /// The database: a SQLite file or postgres://user:password@host:port/dbname.
    #[arg(long, global = true)]
    database: Option<String>,
    #[command(subcommand)]
    command: StatsCommand,
}

#[derive(Subcommand)]
enum StatsCommand {
    /// A zodbot-style quote of a category: change over the previous day and a 24-hour sparkline.
    Quote {
        /// The category (buildsys, git, fedbadges, …).
        category: String,
        /// The end of the 24 hours (Unix seconds; default now).
        #[arg(long)]
        at: Option<f64>,
    },
}

fn run(args: StatsArgs) -> anyhow::Result<ExitCode> {
    let mut config = match &args.config {
        Some(path) => {
            let config = Config::load(Some(path))?;
            match config.consumers.get(NAME) {
                Some(raw) => Settings::new(NAME, ConsumerSection::parse(NAME, raw)?.settings)
                    .parse::<StatsConfig>()?,
                None => StatsConfig::default(),
            }
        }
        None => StatsConfig::default(),
    };
    if let Some(db) = args.database {
        config.database = db;
    }
    config.validate()?;
    let url = config.database_url()?;
    if url.sqlite_path().is_some_and(|p| !p.exists()) {
        bail!("the statistics database {url} does not exist: run the hub with [consumers.{NAME}] enabled first, or give --database");
    }
    let database = Database::open(
        &url,
        NAME,
        &PoolOptions::default(),
        &prometheus::Registry::new(),
    )
    .with_context(|| format!("opening {url}"))?;
    let reader = Reader::new(database);
    match args.command {
        StatsCommand::Quote { category, at } => {
            let now = at.unwrap_or_else(crate::now_secs);
            let hourly = hourly_volume(&reader, &category, now)?;
            let (first, second) = quote(&category, &hourly, now);
            println!("{first}");
            println!("{second}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// 48 hourly counts of `category` ending with the hour that holds `now`
/// (oldest first), from `volume-by-category-1h`.
pub fn hourly_volume(reader: &Reader, category: &str, now: f64) -> anyhow::Result<Vec<i64>> {
    let last = Window::HOUR.bucket_end(now);
    let first = last - 47 * 3600;
    let q = RowsQuery {
        start: Some(first as f64),
        stop: last as f64,
        key: Some(category.to_string()),
        order: Order::Asc,
        offset: 0,
        length: 48,
    };
    let (_, rows) = reader
        .rows(
            "volume-by-category-1h",
            Shape::Counts {
                key: Some("category"),
            },
            &q,
        )
        .context("reading volume-by-category-1h")?;
    let mut hours = vec![0i64; 48];
    for row in rows {
        if let Row::Count {
            timestamp, volume, ..
        } = row
        {
            let index = (timestamp - first) / 3600;
            if (0..48).contains(&index) {
                hours[index as usize] = volume;
            }
        }
    }
    Ok(hours)
}

/// A ticker symbol for a category: its consonants (a leading `fed` left out),
/// the first three, in capitals (`fedbadges` → `BDG`).
pub fn symbol(category: &str) -> String {
    let name = category
        .strip_prefix("fed")
        .filter(|r| !r.is_empty())
        .unwrap_or(category);
    let consonants: String = name
        .chars()
        .filter(|c| c.is_ascii_alphabetic() && !"aeiouAEIOU".contains(*c))
        .take(3)
        .collect();
    if consonants.is_empty() {
        name.chars().take(3).collect::<String>().to_uppercase()
    } else {
        consonants.to_uppercase()
    }
}

/// Bars for `values`, lowest `▁` to highest `█`.
pub fn sparkline(values: &[i64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (min, max) = (
        values.iter().copied().min().unwrap_or(0),
        values.iter().copied().max().unwrap_or(0),
    );
    values
        .iter()
        .map(|&v| {
            if max == min {
                BARS[0]
            } else {
                BARS[((v - min) * 7 / (max - min)) as usize]
            }
        })
        .collect()
}

fn utc(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rest = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}",
        rest / 3600,
        rest % 3600 / 60
    )
}

/// The two lines of a quote, from 48 hourly counts (oldest first) ending
/// with the hour holding `now`.
pub fn quote(category: &str, hourly: &[i64], now: f64) -> (String, String) {
    let split = hourly.len().saturating_sub(24);
    let (yesterday, today) = hourly.split_at(split);
    let (before, after) = (yesterday.iter().sum::<i64>(), today.iter().sum::<i64>());
    let change = if before == 0 {
        if after == 0 {
            "+0.00%".to_string()
        } else {
            "new (none the day before)".to_string()
        }
    } else {
        format!("{:+.2}%", (after - before) as f64 * 100.0 / before as f64)
    };
    let end = Window::HOUR.bucket_end(now);
    let first = format!("{}, {category} {change} over yesterday", symbol(category));
    let second = format!(
        "{} over 24 hours ({} to {} UTC)",
        sparkline(today),
        utc(end - 24 * 3600),
        utc(end)
    );
    (first, second)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symbols_like_zodbot() {
        assert_eq!(symbol("fedbadges"), "BDG");
        assert_eq!(symbol("buildsys"), "BLD");
        assert_eq!(symbol("git"), "GT");
    }

    #[test]
    fn quote_lines() {
        let mut hourly = vec![1i64; 24];
        hourly.extend([0, 0, 0, 5, 5, 7, 1, 0].iter().cycle().take(24));
        // now = 2026-11-30 13:30 UTC; the window ends at 14:00.
        let now = 1_796_045_400.0;
        let (first, second) = quote("fedbadges", &hourly, now);
        let today: i64 = hourly[24..].iter().sum();
        assert_eq!(
            first,
            format!(
                "BDG, fedbadges {:+.2}% over yesterday",
                (today - 24) as f64 * 100.0 / 24.0
            )
        );
        assert!(second.starts_with("▁▁▁▆▆█▂▁▁▁▁▆▆█▂▁"), "{second}");
        assert!(
            second.ends_with("over 24 hours (2026-11-29 14:00 to 2026-11-30 14:00 UTC)"),
            "{second}"
        );
        assert_eq!(sparkline(&[3, 3]), "▁▁");
    }
}
