//! The routing table: topic -> every consumer whose patterns match, delivered with
//! `try_send` and the consumer's `when_full` policy. Never `do_send`: it ignores
//! the mailbox bound and the queue would grow without limit.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::Recipient;

use crate::actor::{BacklogGuard, Deliver};
use crate::config::WhenFull;
use crate::events::MessageDropped;
use crate::message::Envelope;
use crate::stats::{ConsumerStats, DropReason, Stats};
use crate::topic::TopicSet;

/// One consumer as the router sees it.
pub struct Route {
    /// The consumer's name.
    pub name: String,
    /// What it subscribes to.
    pub topics: TopicSet,
    /// Its mailbox.
    pub mailbox: Recipient<Deliver>,
    /// Its stats.
    pub stats: Arc<ConsumerStats>,
    /// What to do when its mailbox is full.
    pub when_full: WhenFull,
}

/// What happened to a message for one consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// In the mailbox.
    Queued,
    /// Not delivered, counted.
    Dropped(DropReason),
}

impl Route {
    /// Puts `envelope` in this consumer's mailbox, applying `when_full`.
    /// `stop` ends a blocking wait when the hub shuts down.
    pub fn deliver(&self, envelope: &Arc<Envelope>, stop: &AtomicBool, stats: &Stats) -> Delivery {
        let mut message = Deliver {
            envelope: envelope.clone(),
            guard: BacklogGuard::new(&self.stats),
        };
        let mut blocked_since: Option<Instant> = None;
        let mut attempts: u32 = 0;
        let outcome = loop {
            match self.mailbox.try_send(message) {
                Ok(()) => {
                    self.stats.count_received();
                    break Delivery::Queued;
                }
                Err(SendError::Full(back)) => match self.when_full {
                    WhenFull::Shed => {
                        drop(back);
                        break Delivery::Dropped(DropReason::MailboxFull);
                    }
                    WhenFull::Block => {
                        if stop.load(Ordering::Acquire) {
                            drop(back);
                            break Delivery::Dropped(DropReason::Shutdown);
                        }
                        message = back;
                        blocked_since.get_or_insert_with(Instant::now);
                        backoff(attempts);
                        attempts = attempts.saturating_add(1);
                    }
                },
                Err(SendError::Closed(back)) => {
                    drop(back);
                    break Delivery::Dropped(DropReason::ConsumerStopped);
                }
            }
        };
        if let Some(since) = blocked_since {
            stats.add_ingress_blocked(since.elapsed());
        }
        if let Delivery::Dropped(reason) = outcome {
            MessageDropped {
                consumer: &self.stats,
                reason,
                topic: envelope.topic(),
            }
            .emit();
        }
        outcome
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

/// The routing table.
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

    /// Delivers `envelope` to every matching consumer.
    pub fn route(&self, envelope: Arc<Envelope>, stop: &AtomicBool) {
        let mut matched = false;
        for route in &self.routes {
            if route.topics.matches(envelope.topic()) {
                matched = true;
                route.deliver(&envelope, stop, &self.stats);
            }
        }
        if !matched {
            self.stats.count_unrouted();
        }
    }
}
