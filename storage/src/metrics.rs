//! The storage layer's metrics, in the hub's registry (`Context::metrics`), one
//! set of series per consumer and backend (const labels `consumer` and
//! `backend`). The names are here, in one place; the events in
//! [`crate::events`] update them.
//!
//! A consumer that is restarted, or opens its database twice, gets the same
//! series again (they are kept per consumer and backend for the life of the
//! process), so counters never go back to zero while the hub runs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry};

use crate::url::Backend;

/// The `fedhub_storage_*` metric families, by name.
pub mod names {
    /// Time to write and commit one batch, in seconds (histogram).
    pub const COMMIT_SECONDS: &str = "fedhub_storage_commit_seconds";
    /// Items per committed batch (histogram).
    pub const BATCH_ITEMS: &str = "fedhub_storage_batch_items";
    /// Items committed.
    pub const ITEMS_COMMITTED_TOTAL: &str = "fedhub_storage_items_committed_total";
    /// Items the database refused for good (dead-lettered).
    pub const DEAD_LETTERS_TOTAL: &str = "fedhub_storage_dead_letters_total";
    /// Failed database operations, by kind (`busy`, `unavailable`, `constraint`, ...).
    pub const ERRORS_TOTAL: &str = "fedhub_storage_errors_total";
    /// Time spent waiting for a pooled connection, in seconds (histogram).
    pub const POOL_WAIT_SECONDS: &str = "fedhub_storage_pool_wait_seconds";
    /// Items handed to a writer and not yet committed (gauge).
    pub const QUEUE_ITEMS: &str = "fedhub_storage_queue_items";
}

/// One consumer's storage series on one backend.
#[derive(Clone)]
pub struct StorageMetrics {
    pub(crate) commit_seconds: Histogram,
    pub(crate) batch_items: Histogram,
    pub(crate) committed: IntCounter,
    pub(crate) dead_letters: IntCounter,
    pub(crate) errors: IntCounterVec,
    pub(crate) pool_wait_seconds: Histogram,
    pub(crate) queue: IntGauge,
}

type Key = (String, Backend);

fn cache() -> &'static Mutex<HashMap<Key, Arc<StorageMetrics>>> {
    static CACHE: OnceLock<Mutex<HashMap<Key, Arc<StorageMetrics>>>> = OnceLock::new();
    CACHE.get_or_init(Default::default)
}

impl StorageMetrics {
    /// The series of `consumer` on `backend`, registered in `registry` (the
    /// same series on every call for that consumer and backend).
    pub fn for_consumer(
        registry: &Registry,
        consumer: &str,
        backend: Backend,
    ) -> prometheus::Result<Arc<StorageMetrics>> {
        let metrics = {
            let mut cache = cache().lock().unwrap_or_else(|p| p.into_inner());
            match cache.get(&(consumer.to_string(), backend)) {
                Some(m) => m.clone(),
                None => {
                    let m = Arc::new(StorageMetrics::new(consumer, backend)?);
                    cache.insert((consumer.to_string(), backend), m.clone());
                    m
                }
            }
        };
        metrics.register(registry)?;
        Ok(metrics)
    }

    fn new(consumer: &str, backend: Backend) -> prometheus::Result<StorageMetrics> {
        let opts = |name: &str, help: &str| {
            Opts::new(name, help)
                .const_label("consumer", consumer)
                .const_label("backend", backend.as_str())
        };
        let histogram = |name: &str, help: &str, buckets: Vec<f64>| {
            Histogram::with_opts(HistogramOpts::from(opts(name, help)).buckets(buckets))
        };
        let seconds = vec![
            0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ];
        Ok(StorageMetrics {
            commit_seconds: histogram(
                names::COMMIT_SECONDS,
                "Time to write and commit one batch",
                seconds.clone(),
            )?,
            batch_items: histogram(
                names::BATCH_ITEMS,
                "Items per committed batch",
                vec![1.0, 10.0, 100.0, 1000.0, 5000.0, 10000.0, 50000.0, 100000.0],
            )?,
            committed: IntCounter::with_opts(opts(
                names::ITEMS_COMMITTED_TOTAL,
                "Items committed to the database",
            ))?,
            dead_letters: IntCounter::with_opts(opts(
                names::DEAD_LETTERS_TOTAL,
                "Items the database refused for good (dead-lettered)",
            ))?,
            errors: IntCounterVec::new(
                opts(
                    names::ERRORS_TOTAL,
                    "Failed database operations, by kind of failure",
                ),
                &["kind"],
            )?,
            pool_wait_seconds: histogram(
                names::POOL_WAIT_SECONDS,
                "Time spent waiting for a pooled database connection",
                seconds,
            )?,
            queue: IntGauge::with_opts(opts(
                names::QUEUE_ITEMS,
                "Items handed to the database writer and not yet committed",
            ))?,
        })
    }

    fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        let collectors: Vec<Box<dyn prometheus::core::Collector>> = vec![
            Box::new(self.commit_seconds.clone()),
            Box::new(self.batch_items.clone()),
            Box::new(self.committed.clone()),
            Box::new(self.dead_letters.clone()),
            Box::new(self.errors.clone()),
            Box::new(self.pool_wait_seconds.clone()),
            Box::new(self.queue.clone()),
        ];
        fedhub::register_metrics(registry, collectors)
    }

    /// Items committed so far.
    pub fn committed(&self) -> u64 {
        self.committed.get()
    }

    /// Items dead-lettered so far.
    pub fn dead_letters(&self) -> u64 {
        self.dead_letters.get()
    }

    /// Failed operations of `kind` so far.
    pub fn errors(&self, kind: crate::ErrorKind) -> u64 {
        self.errors.with_label_values(&[kind.as_str()]).get()
    }

    /// Batches committed so far.
    pub fn batches(&self) -> u64 {
        self.batch_items.get_sample_count()
    }

    /// Connection checkouts so far.
    pub fn checkouts(&self) -> u64 {
        self.pool_wait_seconds.get_sample_count()
    }
}
