//! The leaderboard, brought up to date after awards in passes.
//!
//! An award only notes its winner ([`RankKeeper::note`]); a pass
//! ([`RankKeeper::update`]) ranks everyone again from the badge counts in one
//! transaction ([`Tahrir::update_ranks`]) and publishes
//! `fedbadges.person.rank.advance` for the winners whose rank got better
//! since before their first award of the pass. Moving the ranks with every
//! award rewrote whole tie groups (everyone holding as many badges as the
//! winner had) once per award; a pass rewrites each changed rank once, however
//! many awards it covers. fedbadges 2.x, too, ranks apart from the award (on
//! the `fedbadges.badge.award` message).
//!
//! The consumer runs passes on a producer of its own (`RankProducer`, every
//! `rank_interval_secs`); a pass that takes long spaces the next ones out
//! ([`RankKeeper::pause_after`]), so ranking takes at most a twentieth of the
//! time however large the tables grow.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use fedhub_storage::StorageError;
use serde_json::{json, Value};

use crate::awarder::PublishFn;
use crate::tahrir::{Award, Tahrir};

/// A pass may take at most this share of the time: the next one waits at
/// least this many times as long as it took.
const SLOWDOWN: u32 = 20;

/// Keeps the leaderboard of one badge database; shared by the awarder (which
/// notes winners) and the producer (which runs the passes).
pub struct RankKeeper {
    tahrir: Tahrir,
    /// Winners since the last pass: person id → rank before their first
    /// award since then.
    pending: Mutex<BTreeMap<i64, Option<i64>>>,
    passes: AtomicU64,
    advances: AtomicU64,
    failures: AtomicU64,
    last_pass_micros: AtomicU64,
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RankPass {
    /// Winners whose ranks it settled.
    pub winners: usize,
    /// Rank advances published.
    pub advances: usize,
    /// How long it took.
    pub took: Duration,
}

impl RankKeeper {
    /// A keeper for the ranks in `tahrir`.
    pub fn new(tahrir: Tahrir) -> RankKeeper {
        RankKeeper {
            tahrir,
            pending: Mutex::default(),
            passes: AtomicU64::new(0),
            advances: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            last_pass_micros: AtomicU64::new(0),
        }
    }

    /// Notes a committed award: the next pass settles its winner's rank.
    pub fn note(&self, award: &Award) {
        self.lock()
            .entry(award.person_id)
            .or_insert(award.rank_before);
    }

    /// Winners waiting for a pass.
    pub fn pending(&self) -> usize {
        self.lock().len()
    }

    /// Runs a pass if an award is waiting, publishing the rank advances
    /// through `publish` (one that cannot be published is logged: the rank
    /// itself is stored). When the pass fails its winners wait for the next.
    pub fn update(&self, publish: PublishFn<'_>) -> Result<RankPass, StorageError> {
        let winners: Vec<(i64, Option<i64>)> =
            std::mem::take(&mut *self.lock()).into_iter().collect();
        if winners.is_empty() {
            return Ok(RankPass::default());
        }
        let began = Instant::now();
        let advances = match self.tahrir.update_ranks(&winners) {
            Ok(advances) => advances,
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                // Back in the queue; their ranks from before these awards
                // are older than any noted since.
                let mut pending = self.lock();
                for (person, before) in winners {
                    pending.insert(person, before);
                }
                return Err(error);
            }
        };
        for advance in &advances {
            if let Err(e) = publish("fedbadges.person.rank.advance", advance.message.clone()) {
                tracing::warn!(person = %advance.message["person"]["nickname"], error = %e, "cannot publish the rank advance");
            }
        }
        let took = began.elapsed();
        self.passes.fetch_add(1, Ordering::Relaxed);
        self.advances
            .fetch_add(advances.len() as u64, Ordering::Relaxed);
        self.last_pass_micros
            .store(took.as_micros() as u64, Ordering::Relaxed);
        Ok(RankPass {
            winners: winners.len(),
            advances: advances.len(),
            took,
        })
    }

    /// How long to wait after a pass that took `took` before the next: the
    /// interval, or longer when passes are slow.
    pub fn pause_after(interval: Duration, took: Duration) -> Duration {
        interval.max(took * SLOWDOWN)
    }

    /// Passes, advances, failures, the last pass's duration and the winners
    /// waiting, as JSON (for `/badges/rules`).
    pub fn to_json(&self) -> Value {
        json!({
            "passes_total": self.passes.load(Ordering::Relaxed),
            "advances_total": self.advances.load(Ordering::Relaxed),
            "failures_total": self.failures.load(Ordering::Relaxed),
            "last_pass_seconds": self.last_pass_micros.load(Ordering::Relaxed) as f64 / 1e6,
            "pending_winners": self.pending(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<i64, Option<i64>>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}
