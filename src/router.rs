//! The routing table: topic -> every consumer whose patterns match, in two halves
//! for the two ingress threads.
//!
//! - [`Admission`], on the receiving thread, matches the topic frame as soon as a
//!   message leaves ZeroMQ, applies each consumer's bound (`capacity_messages`,
//!   against its exact backlog) and `when_full` policy, and counts the message in
//!   the backlog of every consumer that admits it. From then on the message is
//!   visible: nothing waits uncounted, neither inside libzmq nor between threads.
//! - [`Dispatcher`], on the decoding thread, takes each decoded message to the
//!   consumers that admitted it, in batches: it hands a consumer's batch to its
//!   mailbox when the decoding thread has nothing more for the moment ([`flush`]),
//!   or when the batch reaches [`MAX_BATCH_MESSAGES`]. A quiet bus sees each
//!   message delivered alone and at once; a burst costs one mailbox send and one
//!   wake-up of the consumer's thread per batch. A message that fails to decode
//!   is uncounted from the backlogs it was admitted to.
//!
//! Mailbox sends use `try_send`, never `do_send`: that ignores the mailbox bound
//! and would let the queue grow without limit.
//!
//! [`flush`]: Dispatcher::flush

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::Recipient;

use crate::actor::Deliver;
use crate::after::{Handoff, Handoffs};
use crate::backlog::BatchBacklog;
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
    topics: TopicSet,
    mailbox: Recipient<Deliver>,
    stats: Arc<ConsumerStats>,
    when_full: WhenFull,
    capacity: i64,
    after: Vec<usize>,
}

impl Route {
    /// A consumer's route: its topics, mailbox, stats, `when_full` policy and
    /// bound (`capacity_messages`, at least 1).
    pub fn new(
        topics: TopicSet,
        mailbox: Recipient<Deliver>,
        stats: Arc<ConsumerStats>,
        when_full: WhenFull,
        capacity: usize,
    ) -> Route {
        Route {
            topics,
            mailbox,
            stats,
            when_full,
            capacity: i64::try_from(capacity.max(1)).unwrap_or(i64::MAX),
            after: Vec::new(),
        }
    }

    /// The consumers (positions in the table) that must finish a message
    /// before this one receives it (`after`; see the `after` module).
    pub fn after(mut self, predecessors: Vec<usize>) -> Route {
        self.after = predecessors;
        self
    }
}

/// A set of consumers, by their position in the routing table (no allocation
/// up to 64 consumers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RouteSet {
    low: u64,
    high: Vec<u64>,
}

impl RouteSet {
    /// Adds consumer `index`.
    pub fn insert(&mut self, index: usize) {
        if index < 64 {
            self.low |= 1 << index;
        } else {
            let word = index / 64 - 1;
            if self.high.len() <= word {
                self.high.resize(word + 1, 0);
            }
            self.high[word] |= 1 << (index % 64);
        }
    }

    /// Whether consumer `index` is in the set.
    pub fn contains(&self, index: usize) -> bool {
        if index < 64 {
            self.low & (1 << index) != 0
        } else {
            self.high
                .get(index / 64 - 1)
                .is_some_and(|w| w & (1 << (index % 64)) != 0)
        }
    }

    /// True when no consumer is in the set.
    pub fn is_empty(&self) -> bool {
        self.low == 0 && self.high.iter().all(|w| *w == 0)
    }

    /// The consumers in the set, in table order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.low)
            .chain(self.high.iter().copied())
            .enumerate()
            .flat_map(|(word, bits)| SetBits(bits).map(move |bit| word * 64 + bit))
    }
}

/// The positions of the set bits of a word, lowest first.
struct SetBits(u64);

impl Iterator for SetBits {
    type Item = usize;

    fn next(&mut self) -> Option<usize> {
        if self.0 == 0 {
            return None;
        }
        let bit = self.0.trailing_zeros() as usize;
        self.0 &= self.0 - 1;
        Some(bit)
    }
}

/// The table split for the two ingress threads.
pub struct Router {
    /// The receiving thread's half.
    pub admission: Admission,
    /// The decoding thread's half.
    pub dispatcher: Dispatcher,
}

impl Router {
    /// A table over these consumers.
    pub fn new(routes: Vec<Route>, stats: Arc<Stats>) -> Router {
        let consumers: Arc<[Arc<ConsumerStats>]> = routes.iter().map(|r| r.stats.clone()).collect();
        let mut gates = Vec::with_capacity(routes.len());
        let mut outlets = Vec::with_capacity(routes.len());
        let has_after = routes.iter().any(|r| !r.after.is_empty());
        for route in routes {
            gates.push(Gate {
                topics: route.topics,
                stats: route.stats.clone(),
                when_full: route.when_full,
                capacity: route.capacity,
            });
            outlets.push(Outlet {
                mailbox: route.mailbox,
                stats: route.stats,
                pending: Vec::new(),
                pending_after: Vec::new(),
                after: route.after,
            });
        }
        Router {
            admission: Admission {
                gates,
                consumers: consumers.clone(),
                stats: stats.clone(),
            },
            dispatcher: Dispatcher {
                outlets,
                consumers,
                stats,
                has_after,
            },
        }
    }
}

/// What admission decided for one message.
#[derive(Debug, Clone, Default)]
pub struct Admitted {
    /// Consumers that admitted it (counted in their backlogs).
    pub routes: RouteSet,
    /// Consumers that matched but dropped it: full with `when_full = "shed"`.
    pub shed: RouteSet,
    /// Consumers that matched but dropped it: the hub stopped while waiting for room.
    pub shut_out: RouteSet,
    /// True when some consumer's topics matched, whether or not it admitted it.
    pub matched: bool,
}

impl Admitted {
    /// Counts, for a message that decoded, what admission refused: a drop for
    /// each consumer that matched but dropped it, or an unrouted message when no
    /// consumer matched.
    fn count_refusals(&self, envelope: &Envelope, consumers: &[Arc<ConsumerStats>], stats: &Stats) {
        if !self.matched {
            stats.count_unrouted();
            return;
        }
        for (set, reason) in [
            (&self.shed, DropReason::MailboxFull),
            (&self.shut_out, DropReason::Shutdown),
        ] {
            for index in set.iter() {
                MessageDropped {
                    consumer: &consumers[index],
                    reason,
                    topic: envelope.topic(),
                }
                .emit();
            }
        }
    }
}

struct Gate {
    topics: TopicSet,
    stats: Arc<ConsumerStats>,
    when_full: WhenFull,
    capacity: i64,
}

impl Gate {
    fn is_full(&self) -> bool {
        self.stats.backlog() >= self.capacity
    }
}

/// The receiving thread's half of the table: matching, bounds and backlog counts.
pub struct Admission {
    gates: Vec<Gate>,
    consumers: Arc<[Arc<ConsumerStats>]>,
    stats: Arc<Stats>,
}

impl Admission {
    /// Counts what admission refused for a message no consumer admitted, once it
    /// has decoded (see [`Dispatcher::deliver`] for the others).
    pub fn settle_unadmitted(&self, envelope: &Envelope, admitted: &Admitted) {
        admitted.count_refusals(envelope, &self.consumers, &self.stats);
    }

    /// The consumers' topic sets (for ZeroMQ subscriptions).
    pub fn topic_sets(&self) -> impl Iterator<Item = &TopicSet> {
        self.gates.iter().map(|g| &g.topics)
    }

    /// Admits a message with this topic frame for every matching consumer.
    /// When one of them is at its bound, its `when_full` policy applies: `shed`
    /// drops the message for it; `block` runs `before_waiting` (the caller hands
    /// on what it holds, so the consumer can make room), then waits for room, or
    /// until `stop` is set. Drops are counted once the message has
    /// decoded (a malformed message is a rejection, not a drop). A missing, empty
    /// or non-UTF-8 topic matches nothing (decoding rejects the message).
    pub fn admit(
        &self,
        topic: Option<&[u8]>,
        stop: &AtomicBool,
        mut before_waiting: impl FnMut(),
    ) -> Admitted {
        let mut admitted = Admitted::default();
        let Some(Ok(topic)) = topic.filter(|t| !t.is_empty()).map(std::str::from_utf8) else {
            return admitted;
        };
        let mut handed_on = false;
        for (index, gate) in self.gates.iter().enumerate() {
            if !gate.topics.matches(topic) {
                continue;
            }
            admitted.matched = true;
            if gate.is_full() {
                if !handed_on && matches!(gate.when_full, WhenFull::Block) {
                    before_waiting();
                    handed_on = true;
                }
                match self.wait_for_room(gate, stop) {
                    Ok(()) => {}
                    Err(DropReason::MailboxFull) => {
                        admitted.shed.insert(index);
                        continue;
                    }
                    Err(_) => {
                        admitted.shut_out.insert(index);
                        continue;
                    }
                }
            }
            gate.stats.backlog_inc();
            admitted.routes.insert(index);
        }
        admitted
    }

    /// Applies `when_full` to a full consumer: `Ok` once there is room.
    fn wait_for_room(&self, gate: &Gate, stop: &AtomicBool) -> Result<(), DropReason> {
        match gate.when_full {
            WhenFull::Shed => Err(DropReason::MailboxFull),
            WhenFull::Block => {
                let since = Instant::now();
                let mut attempt = 0u32;
                while gate.is_full() && !stop.load(Ordering::Acquire) {
                    backoff(attempt);
                    attempt = attempt.saturating_add(1);
                }
                self.stats.add_ingress_blocked(since.elapsed());
                if gate.is_full() {
                    Err(DropReason::Shutdown)
                } else {
                    Ok(())
                }
            }
        }
    }
}

struct Outlet {
    mailbox: Recipient<Deliver>,
    stats: Arc<ConsumerStats>,
    /// Decoded, counted in the backlog, not yet in the mailbox.
    pending: Vec<Arc<Envelope>>,
    /// Handoffs to followers of the pending messages, by position.
    pending_after: Vec<(usize, Handoffs)>,
    /// The consumers this one waits for (`after`).
    after: Vec<usize>,
}

impl Outlet {
    /// Hands the pending batch to the mailbox.
    fn flush(&mut self, stop: &AtomicBool) {
        if self.pending.is_empty() {
            return;
        }
        let envelopes = std::mem::take(&mut self.pending);
        let held = envelopes.len();
        let mut batch = Deliver {
            envelopes,
            backlog: BatchBacklog::adopt(&self.stats, held),
            after: std::mem::take(&mut self.pending_after),
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

    /// Counts every message of an undeliverable batch as dropped; dropping the
    /// batch uncounts them from the backlog.
    fn drop_batch(&self, batch: Deliver, reason: DropReason) {
        for envelope in &batch.envelopes {
            MessageDropped {
                consumer: &self.stats,
                reason,
                topic: envelope.topic(),
            }
            .emit();
        }
    }
}

/// The decoding thread's half of the table: batches and mailboxes.
pub struct Dispatcher {
    outlets: Vec<Outlet>,
    consumers: Arc<[Arc<ConsumerStats>]>,
    stats: Arc<Stats>,
    /// Some consumer waits for another (`after`).
    has_after: bool,
}

impl Dispatcher {
    /// Takes a decoded message to the consumers that admitted it. It reaches
    /// their mailboxes with the next [`flush`](Self::flush), or sooner when a
    /// batch fills.
    pub fn deliver(&mut self, envelope: Arc<Envelope>, admitted: &Admitted, stop: &AtomicBool) {
        admitted.count_refusals(&envelope, &self.consumers, &self.stats);
        // Followers (`after`) of a consumer that admitted the message get it
        // through a handoff once that consumer is done with it.
        let mut followers = RouteSet::default();
        let mut handoffs: Vec<(usize, Arc<Handoff>)> = Vec::new();
        if self.has_after {
            for index in admitted.routes.iter() {
                let outlet = &self.outlets[index];
                let mut waits_for = outlet
                    .after
                    .iter()
                    .copied()
                    .filter(|p| admitted.routes.contains(*p))
                    .peekable();
                if waits_for.peek().is_none() {
                    continue;
                }
                let handoff = Arc::new(Handoff::new(
                    envelope.clone(),
                    outlet.mailbox.clone(),
                    outlet.stats.clone(),
                ));
                handoffs.extend(waits_for.map(|p| (p, handoff.clone())));
                followers.insert(index);
            }
        }
        for index in admitted.routes.iter() {
            if followers.contains(index) {
                continue;
            }
            let outlet = &mut self.outlets[index];
            outlet.stats.count_received();
            if !handoffs.is_empty() {
                let mine: Handoffs = handoffs
                    .iter()
                    .filter(|(p, _)| *p == index)
                    .map(|(_, h)| h.clone())
                    .collect();
                if !mine.is_empty() {
                    outlet.pending_after.push((outlet.pending.len(), mine));
                }
            }
            outlet.pending.push(envelope.clone());
            if outlet.pending.len() >= MAX_BATCH_MESSAGES {
                outlet.flush(stop);
            }
        }
    }

    /// A message that failed to decode: uncounts it from the backlogs it was
    /// admitted to.
    pub fn discard(&mut self, admitted: &Admitted) {
        for index in admitted.routes.iter() {
            drop(BatchBacklog::adopt(&self.outlets[index].stats, 1));
        }
    }

    /// Hands every pending batch to its mailbox.
    pub fn flush(&mut self, stop: &AtomicBool) {
        for outlet in &mut self.outlets {
            outlet.flush(stop);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_sets_hold_any_number_of_consumers_in_order() {
        let mut set = RouteSet::default();
        assert!(set.is_empty());
        for index in [0, 5, 63, 64, 130] {
            set.insert(index);
        }
        set.insert(5);
        assert!(!set.is_empty());
        assert_eq!(set.iter().collect::<Vec<_>>(), vec![0, 5, 63, 64, 130]);
    }
}
