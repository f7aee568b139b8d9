//! The routing table: topic -> every consumer whose patterns match.
//!
//! Messages are admitted one at a time, each counted in the consumer's backlog at
//! once, and handed to the consumer's mailbox in batches: the ingress thread
//! [`flush`](Router::flush)es when the bus has nothing more for the moment, or
//! when a batch reaches [`MAX_BATCH_MESSAGES`]. A quiet bus therefore sees each
//! message delivered alone and at once; a burst costs one mailbox send and one
//! wake-up of the consumer's thread per batch.
//!
//! The bound is `capacity_messages`, checked against the consumer's exact backlog
//! (messages admitted and not yet handled, including any a consumer still holds,
//! see [`Context::hold_backlog`](crate::Context::hold_backlog)), and the
//! consumer's `when_full` policy applies when it is reached. Mailbox sends use
//! `try_send`, never `do_send`: that ignores the bound and would let the queue grow
//! without limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::Recipient;

use crate::actor::{BatchBacklog, Deliver};
use crate::config::WhenFull;
use crate::events::MessageDropped;
use crate::message::Envelope;
use crate::stats::{ConsumerStats, DropReason, Stats};
use crate::topic::TopicSet;

/// A consumer's batch is handed over once it holds this many messages, even
/// while more keep arriving.
pub const MAX_BATCH_MESSAGES: usize = 256;

/// One consumer as the router sees it.
pub struct Route {
    name: String,
    topics: TopicSet,
    mailbox: Recipient<Deliver>,
    stats: Arc<ConsumerStats>,
    when_full: WhenFull,
    capacity: i64,
    /// Admitted, counted in the backlog, not yet in the mailbox.
    pending: Vec<Arc<Envelope>>,
}

/// What happened to a message for one consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Admitted: counted in the backlog, on its way to the mailbox.
    Queued,
    /// Not delivered, counted.
    Dropped(DropReason),
}

impl Route {
    /// A consumer's route: its name, topics, mailbox, stats, `when_full` policy and
    /// bound (`capacity_messages`, at least 1).
    pub fn new(
        name: String,
        topics: TopicSet,
        mailbox: Recipient<Deliver>,
        stats: Arc<ConsumerStats>,
        when_full: WhenFull,
        capacity: usize,
    ) -> Route {
        Route {
            name,
            topics,
            mailbox,
            stats,
            when_full,
            capacity: i64::try_from(capacity.max(1)).unwrap_or(i64::MAX),
            pending: Vec::new(),
        }
    }

    /// The consumer's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The topics it subscribes to.
    pub fn topics(&self) -> &TopicSet {
        &self.topics
    }

    /// True when its backlog has reached its bound.
    fn is_full(&self) -> bool {
        self.stats.backlog() >= self.capacity
    }

    /// Admits `envelope` for this consumer, applying `when_full` when its backlog is
    /// at the bound. The caller flushes every route before calling this on a full
    /// one, so nothing admitted earlier waits behind a blocked ingress.
    /// `stop` ends a blocking wait when the hub shuts down.
    fn admit(&mut self, envelope: &Arc<Envelope>, stop: &AtomicBool, stats: &Stats) -> Delivery {
        if self.is_full() {
            match self.when_full {
                WhenFull::Shed => return self.dropped(envelope, DropReason::MailboxFull),
                WhenFull::Block => {
                    let since = Instant::now();
                    let mut attempt = 0u32;
                    while self.is_full() && !stop.load(Ordering::Acquire) {
                        backoff(attempt);
                        attempt = attempt.saturating_add(1);
                    }
                    stats.add_ingress_blocked(since.elapsed());
                    if self.is_full() {
                        return self.dropped(envelope, DropReason::Shutdown);
                    }
                }
            }
        }
        if !self.mailbox.connected() {
            return self.dropped(envelope, DropReason::ConsumerStopped);
        }
        self.stats.backlog_inc();
        self.stats.count_received();
        self.pending.push(envelope.clone());
        if self.pending.len() >= MAX_BATCH_MESSAGES {
            self.flush(stop);
        }
        Delivery::Queued
    }

    fn dropped(&self, envelope: &Envelope, reason: DropReason) -> Delivery {
        MessageDropped {
            consumer: &self.stats,
            reason,
            topic: envelope.topic(),
        }
        .emit();
        Delivery::Dropped(reason)
    }

    /// Hands the pending batch to the mailbox.
    fn flush(&mut self, stop: &AtomicBool) {
        if self.pending.is_empty() {
            return;
        }
        let envelopes = std::mem::replace(
            &mut self.pending,
            Vec::with_capacity(MAX_BATCH_MESSAGES.min(64)),
        );
        let held = envelopes.len();
        let mut batch = Deliver {
            envelopes,
            backlog: BatchBacklog::adopt(&self.stats, held),
        };
        let mut attempt = 0u32;
        loop {
            // Every batch holds at least one message counted against the bound, and
            // the mailbox is sized to the bound, so it is full only for a moment.
            match self.mailbox.try_send(batch) {
                Ok(()) => return,
                Err(SendError::Full(back)) if !stop.load(Ordering::Acquire) => {
                    batch = back;
                    backoff(attempt);
                    attempt = attempt.saturating_add(1);
                }
                Err(SendError::Full(back)) => return self.drop_batch(back, DropReason::Shutdown),
                Err(SendError::Closed(back)) => {
                    return self.drop_batch(back, DropReason::ConsumerStopped)
                }
            }
        }
    }

    fn drop_batch(&self, batch: Deliver, reason: DropReason) {
        for envelope in &batch.envelopes {
            self.dropped(envelope, reason);
        }
    }
}

/// Spin briefly, then yield, then sleep: a full mailbox usually frees a slot soon.
fn backoff(attempt: u32) {
    if attempt < 32 {
        std::hint::spin_loop();
    } else if attempt < 64 {
        std::thread::yield_now();
    } else {
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// The routing table, owned by the ingress thread.
pub struct Router {
    routes: Vec<Route>,
    stats: Arc<Stats>,
}

impl Router {
    /// A table over these consumers.
    pub fn new(routes: Vec<Route>, stats: Arc<Stats>) -> Router {
        Router { routes, stats }
    }

    /// The consumers' topic sets (for ZeroMQ subscriptions).
    pub fn topic_sets(&self) -> impl Iterator<Item = &TopicSet> {
        self.routes.iter().map(|r| &r.topics)
    }

    /// Admits `envelope` for every matching consumer. It reaches their mailboxes
    /// with the next [`flush`](Self::flush), or sooner when a batch fills.
    pub fn route(&mut self, envelope: Arc<Envelope>, stop: &AtomicBool) {
        let mut matched = false;
        for index in 0..self.routes.len() {
            if !self.routes[index].topics.matches(envelope.topic()) {
                continue;
            }
            matched = true;
            if self.routes[index].is_full() {
                // The consumer must see its own pending messages to make room, and
                // the others must not wait behind a blocked ingress.
                self.flush(stop);
            }
            self.routes[index].admit(&envelope, stop, &self.stats);
        }
        if !matched {
            self.stats.count_unrouted();
        }
    }

    /// Hands every pending batch to its mailbox.
    pub fn flush(&mut self, stop: &AtomicBool) {
        for route in &mut self.routes {
            route.flush(stop);
        }
    }
}
