//! Exact backlog accounting: a message is counted in its consumer's backlog when
//! it is admitted, and uncounted when its handling ends, by whichever guard holds
//! it being dropped, so the count stays exact also when an actor dies.
//!
//! actix has no public mailbox length, and a batch holds many messages, so the
//! backlog is counted: a [`BatchBacklog`] travels inside every batch, releasing
//! one message as each is handled and the rest when dropped (also when actix
//! discards the batch because the actor is gone). A consumer that hands work to
//! a thread of its own keeps the message counted with a [`BacklogGuard`]
//! (`Context::hold_backlog`) until the work is done.

use std::sync::Arc;

use crate::after::Handoffs;
use crate::stats::ConsumerStats;

/// Counts one message in a consumer's backlog for as long as it lives (and
/// keeps the consumers waiting for it with `after` waiting).
pub struct BacklogGuard(Arc<ConsumerStats>, Handoffs);

impl BacklogGuard {
    /// Counts a new message in `stats`' backlog, holding back the handoffs of
    /// the message to the consumers that wait for this one.
    pub(crate) fn holding(stats: &Arc<ConsumerStats>, handoffs: Handoffs) -> BacklogGuard {
        stats.backlog_inc();
        BacklogGuard(stats.clone(), handoffs)
    }

    /// Takes over one message already counted in `stats`' backlog, holding
    /// back its handoffs likewise.
    pub(crate) fn adopting(stats: &Arc<ConsumerStats>, handoffs: Handoffs) -> BacklogGuard {
        BacklogGuard(stats.clone(), handoffs)
    }
}

impl Drop for BacklogGuard {
    fn drop(&mut self) {
        self.0.backlog_dec();
        // Then the handoffs go (delivering to the followers when last).
        self.1.clear();
    }
}

/// The messages of one batch still counted in a consumer's backlog: each
/// [`release_one`](Self::release_one) uncounts one, dropping uncounts the rest.
pub struct BatchBacklog {
    stats: Arc<ConsumerStats>,
    held: usize,
}

impl BatchBacklog {
    /// Takes over `held` messages already counted in `stats`' backlog.
    pub(crate) fn adopt(stats: &Arc<ConsumerStats>, held: usize) -> BatchBacklog {
        BatchBacklog {
            stats: stats.clone(),
            held,
        }
    }

    /// Uncounts one message (its handling ended).
    pub fn release_one(&mut self) {
        if self.held > 0 {
            self.held -= 1;
            self.stats.backlog_dec();
        }
    }

    /// Hands one message's count over to a [`BacklogGuard`] that adopted it:
    /// the batch stops counting it without uncounting it.
    pub fn hand_over_one(&mut self) {
        self.held = self.held.saturating_sub(1);
    }

    /// Messages still counted.
    #[cfg(test)]
    pub fn held(&self) -> usize {
        self.held
    }
}

impl Drop for BatchBacklog {
    fn drop(&mut self) {
        if self.held > 0 {
            self.stats.backlog_sub(self.held);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Stats;

    #[test]
    fn a_batch_uncounts_each_handled_message_and_the_rest_when_dropped() {
        let stats = Stats::new().consumer("c");
        for _ in 0..5 {
            stats.backlog_inc();
        }
        let mut batch = BatchBacklog::adopt(&stats, 3);
        batch.release_one();
        assert_eq!((batch.held(), stats.backlog()), (2, 4));
        drop(batch);
        assert_eq!(stats.backlog(), 2, "the two unhandled ones are uncounted");
        let guard = BacklogGuard::holding(&stats, Vec::new());
        assert_eq!(stats.backlog(), 3);
        drop(guard);
        assert_eq!(stats.backlog(), 2);
        // Releasing more than a batch holds never uncounts other messages.
        let mut empty = BatchBacklog::adopt(&stats, 0);
        empty.release_one();
        assert_eq!(stats.backlog(), 2);
    }
}
