//! Ordering between consumers: `after = ["Nommer"]` in a consumer's section
//! makes the hub hand it a message only once `Nommer` has finished that
//! message, including work `Nommer` still holds after `consume` returned
//! (`Context::hold_backlog`: a batch not yet committed). A badge awarder that
//! counts messages in the history store then sees the message it is handling
//! in its counts, with no sleeping.
//!
//! How: when a message is admitted both by a consumer and by consumers it
//! waits for, the dispatcher does not put it in the follower's batch; it
//! attaches a [`Handoff`] to the message in each predecessor's batch. The
//! predecessor's actor lends it to the backlog holds made while the message is
//! handled; when the last of them is dropped (handled, and held work done),
//! the handoff delivers the message to the follower's mailbox. The follower
//! counts the message in its backlog from admission, so the waiting shows as
//! its backlog in `/metrics`, `/state` and the monitoring socket.
//!
//! A consumer waits only for consumers that admitted the message (a message
//! outside the predecessor's topics, or shed by it, goes straight through).
//! `after` names running consumers, never itself, and one level only: a
//! consumer that others wait for does not itself wait (checked at start).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::dev::SendError;
use actix::Recipient;

use crate::actor::Deliver;
use crate::backlog::BatchBacklog;
use crate::events::MessageDropped;
use crate::message::Envelope;
use crate::stats::{ConsumerStats, DropReason};

/// How long a handoff waits for room in the follower's mailbox (full only for
/// a moment: the mailbox is sized to the backlog bound) before dropping the
/// message, counted.
const HANDOFF_PATIENCE: Duration = Duration::from_secs(30);

/// A message waiting for its predecessors; delivered to the follower when the
/// last reference is dropped.
pub struct Handoff {
    envelope: Option<Arc<Envelope>>,
    mailbox: Recipient<Deliver>,
    stats: Arc<ConsumerStats>,
}

/// The handoffs attached to one message of a predecessor's batch.
pub type Handoffs = Vec<Arc<Handoff>>;

impl Handoff {
    /// A message for the follower with this mailbox and stats, already
    /// counted in its backlog.
    pub(crate) fn new(
        envelope: Arc<Envelope>,
        mailbox: Recipient<Deliver>,
        stats: Arc<ConsumerStats>,
    ) -> Handoff {
        Handoff {
            envelope: Some(envelope),
            mailbox,
            stats,
        }
    }
}

impl Drop for Handoff {
    fn drop(&mut self) {
        let Some(envelope) = self.envelope.take() else {
            return;
        };
        self.stats.count_received();
        let mut batch = Deliver {
            envelopes: vec![envelope],
            backlog: BatchBacklog::adopt(&self.stats, 1),
            after: Vec::new(),
        };
        let began = Instant::now();
        let mut attempt = 0u32;
        let reason = loop {
            match self.mailbox.try_send(batch) {
                Ok(()) => return,
                Err(SendError::Full(back)) if began.elapsed() < HANDOFF_PATIENCE => {
                    batch = back;
                    if attempt < 64 {
                        std::thread::yield_now();
                    } else {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                    attempt = attempt.saturating_add(1);
                }
                Err(SendError::Full(back)) => {
                    batch = back;
                    break DropReason::MailboxFull;
                }
                Err(SendError::Closed(back)) => {
                    batch = back;
                    break DropReason::ConsumerStopped;
                }
            }
        };
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

/// Resolves every consumer's `after` names to positions in `names` and
/// checks them; the error names the consumer and what is wrong.
pub fn resolve(names: &[String], after: &[Vec<String>]) -> Result<Vec<Vec<usize>>, String> {
    let position = |name: &str| names.iter().position(|n| n.eq_ignore_ascii_case(name));
    let mut resolved = Vec::with_capacity(after.len());
    for (index, wanted) in after.iter().enumerate() {
        let mut indices = Vec::new();
        for name in wanted {
            let Some(p) = position(name) else {
                return Err(format!(
                    "[consumers.{}] after = {wanted:?}: {name:?} is not a running consumer (running: {}); enable it or remove it from after",
                    names[index],
                    names.join(", ")
                ));
            };
            if p == index {
                return Err(format!(
                    "[consumers.{}] after = {wanted:?}: a consumer cannot wait for itself",
                    names[index]
                ));
            }
            if !indices.contains(&p) {
                indices.push(p);
            }
        }
        resolved.push(indices);
    }
    for (index, preds) in resolved.iter().enumerate() {
        for &p in preds {
            if !resolved[p].is_empty() {
                return Err(format!(
                    "[consumers.{}] after = {:?}: {} itself waits for other consumers; after orders one level only",
                    names[index], after[index], names[p]
                ));
            }
        }
    }
    Ok(resolved)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn after_names_resolve_to_running_consumers_one_level_deep() {
        let running = names(&["Nommer", "FedoraBadgesConsumer", "Stats"]);
        let ok = resolve(
            &running,
            &[vec![], names(&["nommer", "Nommer"]), names(&["Nommer"])],
        )
        .unwrap();
        assert_eq!(ok, vec![vec![], vec![0], vec![0]]);
        let cases = [
            (
                vec![vec![], names(&["FMN"]), vec![]],
                "\"FMN\" is not a running consumer",
            ),
            (
                vec![names(&["Nommer"]), vec![], vec![]],
                "cannot wait for itself",
            ),
            (
                vec![vec![], names(&["Nommer"]), names(&["FedoraBadgesConsumer"])],
                "FedoraBadgesConsumer itself waits",
            ),
        ];
        for (after, expected) in cases {
            let err = resolve(&running, &after).unwrap_err();
            assert!(err.contains(expected), "{err}");
        }
    }
}
