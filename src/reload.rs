//! Reload requests: what the hub broadcasts when it is asked to read again what
//! it loaded from outside (the CA and CRL of `[security]`, a consumer's rules),
//! without a restart. The `fedhub` binary sends one on SIGHUP; anything that
//! holds a [`ReloadHook`] (the running hub, each consumer's [`Context`]) can
//! listen, and tests can request one directly.
//!
//! [`Context`]: crate::Context

use std::sync::mpsc::{channel, Receiver};
use std::sync::{Arc, Mutex};

type Listener = Box<dyn Fn() + Send + Sync>;

/// A broadcast of reload requests. Cloning it gives another handle on the same
/// broadcast; listeners live as long as the broadcast does.
#[derive(Clone, Default)]
pub struct ReloadHook {
    listeners: Arc<Mutex<Vec<Listener>>>,
}

impl std::fmt::Debug for ReloadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadHook")
            .field("listeners", &self.listener_count())
            .finish()
    }
}

impl ReloadHook {
    /// A broadcast nobody listens to yet.
    pub fn new() -> ReloadHook {
        ReloadHook::default()
    }

    /// Calls `listener` on every later request, on the requesting thread: it
    /// should only hand the request over (send on a channel, `do_send` to an
    /// actor), not do the reloading itself.
    pub fn on_reload(&self, listener: impl Fn() + Send + Sync + 'static) {
        self.listeners
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Box::new(listener));
    }

    /// A channel that receives `()` for every later request (for a thread that
    /// waits with `recv` or `recv_timeout`). Dropping the receiver is fine.
    pub fn subscribe(&self) -> Receiver<()> {
        let (tx, rx) = channel();
        self.on_reload(move || {
            let _ = tx.send(());
        });
        rx
    }

    /// Asks every listener to reload; returns how many were asked.
    pub fn request(&self) -> usize {
        let listeners = self.listeners.lock().unwrap_or_else(|p| p.into_inner());
        for listener in listeners.iter() {
            listener();
        }
        listeners.len()
    }

    /// How many listeners there are.
    pub fn listener_count(&self) -> usize {
        self.listeners
            .lock()
            .map(|l| l.len())
            .unwrap_or_else(|p| p.into_inner().len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn every_listener_hears_every_request() {
        let hook = ReloadHook::new();
        assert_eq!(hook.request(), 0, "no listener yet");
        let calls = Arc::new(AtomicUsize::new(0));
        let counted = calls.clone();
        hook.on_reload(move || {
            counted.fetch_add(1, Ordering::SeqCst);
        });
        let rx = hook.clone().subscribe();
        assert_eq!(hook.request(), 2);
        assert_eq!(hook.request(), 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
        assert_eq!(rx.try_iter().count(), 2);
        drop(rx);
        assert_eq!(hook.request(), 2, "a dropped receiver is not an error");
    }
}
