//! Budgets for received bytes held in memory: what a connection has read and not yet handed
//! over (stream messages its consumers have not taken, the part of a large frame read so
//! far). Each connection has its own, and a server has one for all its connections together;
//! a connection over either stops reading its socket until enough has been taken, and the
//! peer, whose writes then block, is pushed back on by TCP itself.
//!
//! Counted in real bytes: a stream message costs its frame's bytes plus the bookkeeping that
//! holds it, so a peer cannot make many tiny messages cost more than they are counted at.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Mutex, PoisonError};
use std::task::Waker;

/// A connection holding no more than this is never paused for the server-wide budget: a
/// server over its budget stops reading from the connections that hold the most, not from
/// every client (whose small calls go on).
pub(crate) const FAIR_SHARE: usize = 256 * 1024;

/// The budget all of a server's connections share.
#[derive(Debug)]
pub(crate) struct InputBudget {
    held: AtomicUsize,
    limit: usize,
    /// Drivers paused for the budget, woken when it has room again.
    waiting: Mutex<Vec<Waker>>,
    any_waiting: AtomicBool,
}

impl InputBudget {
    pub(crate) fn new(limit: usize) -> InputBudget {
        InputBudget {
            held: AtomicUsize::new(0),
            limit,
            waiting: Mutex::new(Vec::new()),
            any_waiting: AtomicBool::new(false),
        }
    }

    /// Bytes held across the server's connections.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    pub(crate) fn add(&self, bytes: usize) {
        self.held.fetch_add(bytes, Ordering::SeqCst);
    }

    pub(crate) fn sub(&self, bytes: usize) {
        let now = self.held.fetch_sub(bytes, Ordering::SeqCst) - bytes;
        if now <= self.limit && self.any_waiting.load(Ordering::SeqCst) {
            let waiting = {
                let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
                self.any_waiting.store(false, Ordering::SeqCst);
                std::mem::take(&mut *waiting)
            };
            for waker in waiting {
                waker.wake();
            }
        }
    }

    /// Whether the server holds more than its budget; if so, `waker` is woken once it does
    /// not.
    pub(crate) fn is_over(&self, waker: &Waker) -> bool {
        if self.held() <= self.limit {
            return false;
        }
        {
            let mut waiting = self.waiting.lock().unwrap_or_else(PoisonError::into_inner);
            if !waiting.iter().any(|w| w.will_wake(waker)) {
                waiting.push(waker.clone());
            }
            self.any_waiting.store(true, Ordering::SeqCst);
        }
        // Taken meanwhile: the waker may never be called, so read again now.
        self.held() > self.limit
    }
}

/// One connection's count of held input, and its share of the server's.
#[derive(Debug)]
pub(crate) struct ConnInput {
    held: AtomicUsize,
    limit: usize,
    /// The driver stopped reading for this connection's own limit.
    paused: AtomicBool,
    server: Option<std::sync::Arc<InputBudget>>,
}

impl ConnInput {
    pub(crate) fn new(limit: usize, server: Option<std::sync::Arc<InputBudget>>) -> ConnInput {
        ConnInput { held: AtomicUsize::new(0), limit, paused: AtomicBool::new(false), server }
    }

    /// Bytes held.
    pub(crate) fn held(&self) -> usize {
        self.held.load(Ordering::SeqCst)
    }

    /// `bytes` more are held.
    pub(crate) fn add(&self, bytes: usize) {
        if bytes == 0 {
            return;
        }
        self.held.fetch_add(bytes, Ordering::SeqCst);
        if let Some(server) = &self.server {
            server.add(bytes);
        }
    }

    /// `bytes` are no longer held. Returns whether the driver, paused for this connection's
    /// limit, should be woken.
    #[must_use]
    pub(crate) fn sub(&self, bytes: usize) -> bool {
        if bytes == 0 {
            return false;
        }
        let now = self.held.fetch_sub(bytes, Ordering::SeqCst) - bytes;
        if let Some(server) = &self.server {
            server.sub(bytes);
        }
        now <= self.limit && self.paused.load(Ordering::SeqCst)
    }

    /// For the driver: whether to stop reading, registering `waker` to be woken when it may
    /// go on.
    pub(crate) fn is_over(&self, waker: &Waker) -> bool {
        let held = self.held();
        if held > self.limit {
            self.paused.store(true, Ordering::SeqCst);
            // Taken meanwhile, before the flag was seen: go on.
            if self.held() > self.limit {
                return true;
            }
        }
        self.paused.store(false, Ordering::SeqCst);
        held > FAIR_SHARE && self.server.as_ref().is_some_and(|server| server.is_over(waker))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::AtomicUsize;
    use std::task::Wake;

    use super::*;

    struct Count(AtomicUsize);

    impl Wake for Count {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn a_connection_over_its_limit_pauses_and_is_woken_below_it() {
        let input = ConnInput::new(100, None);
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        input.add(150);
        assert!(input.is_over(&waker));
        assert!(!input.sub(20), "still over");
        assert!(input.sub(40), "below: the driver is to be woken");
        assert!(!input.is_over(&waker));
        assert!(!input.sub(90), "not paused: nobody to wake");
        assert_eq!(input.held(), 0);
    }

    #[test]
    fn the_server_budget_pauses_only_connections_holding_more_than_a_fair_share() {
        let server = Arc::new(InputBudget::new(3 * FAIR_SHARE));
        let big = ConnInput::new(usize::MAX, Some(Arc::clone(&server)));
        let small = ConnInput::new(usize::MAX, Some(Arc::clone(&server)));
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = Waker::from(Arc::clone(&count));
        big.add(4 * FAIR_SHARE);
        small.add(1000);
        assert!(big.is_over(&waker));
        assert!(!small.is_over(&waker), "a connection holding little reads on");
        let _ = big.sub(2 * FAIR_SHARE);
        assert_eq!(count.0.load(Ordering::SeqCst), 1, "woken when the server is back within budget");
        assert!(!big.is_over(&waker));
        assert_eq!(server.held(), 2 * FAIR_SHARE + 1000);
    }
}
