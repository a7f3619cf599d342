//! Certificate rotation without a restart: the configuration a [`TlsAcceptor`] or a
//! [`TlsConnector`] hands each new handshake can be swapped while connections run, by hand
//! ([`TlsAcceptor::reload`], [`TlsConnector::reload`]) or by a [`TlsWatcher`] that polls the
//! files the material comes from. A connection keeps the session it was made with; a
//! configuration that does not build (a half-written file, a key that does not match its
//! certificate) is refused, and the previous one stays.
//!
//! [`TlsAcceptor`]: super::TlsAcceptor
//! [`TlsConnector`]: super::TlsConnector
//! [`TlsAcceptor::reload`]: super::TlsAcceptor::reload
//! [`TlsConnector::reload`]: super::TlsConnector::reload

use std::fmt;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::TlsError;

/// The configuration new handshakes get, swapped whole; shared by every clone of the
/// acceptor or connector holding it.
pub(crate) struct Current<T>(Arc<RwLock<Arc<T>>>);

impl<T> Clone for Current<T> {
    fn clone(&self) -> Self {
        Current(Arc::clone(&self.0))
    }
}

impl<T> Current<T> {
    pub(crate) fn new(value: Arc<T>) -> Current<T> {
        Current(Arc::new(RwLock::new(value)))
    }

    /// The configuration for a handshake starting now.
    pub(crate) fn get(&self) -> Arc<T> {
        Arc::clone(&self.0.read().unwrap_or_else(PoisonError::into_inner))
    }

    pub(crate) fn set(&self, value: Arc<T>) {
        *self.0.write().unwrap_or_else(PoisonError::into_inner) = value;
    }
}

/// What a reload attempt of a [`TlsWatcher`] came to: `Ok` when the new material is in use,
/// the error when it was refused (the previous material stays).
pub type ReloadOutcome = Result<(), Arc<TlsError>>;

/// Watches the files a TLS configuration is made from, and reloads it when they change:
/// made by [`TlsAcceptor::watch_files`](super::TlsAcceptor::watch_files) and
/// [`TlsConnector::watch_files`](super::TlsConnector::watch_files).
///
/// Every interval it reads the files and compares their contents with the last seen (the
/// files are small; contents, unlike modification times, cannot miss two writes in the same
/// second). When any differs it loads the configuration again: a load that fails is logged
/// at `warn` with its cause, reported by [`next_reload`](Self::next_reload), and not retried
/// until the files change again. A file that cannot be read counts as changed (it is being
/// replaced), so the load reports why. Replace files by renaming a complete new file over
/// the old one where you can: a reader can then never see half of one.
///
/// The files are read and the configuration loaded on the runtime's blocking threads
/// (`spawn_blocking`), never on a worker that drives connections. The watching stops when
/// the watcher is dropped; it needs a Tokio runtime.
pub struct TlsWatcher {
    task: JoinHandle<()>,
    outcomes: watch::Receiver<Option<ReloadOutcome>>,
}

impl fmt::Debug for TlsWatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsWatcher").field("last", &*self.outcomes.borrow()).finish_non_exhaustive()
    }
}

impl Drop for TlsWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TlsWatcher {
    /// Waits for the next reload attempt (one that begins after the previous call returned)
    /// and says how it went. If several happen before it is polled, the last one's outcome.
    pub async fn next_reload(&mut self) -> ReloadOutcome {
        loop {
            if self.outcomes.changed().await.is_err() {
                // The task never ends on its own while the watcher lives.
                std::future::pending::<()>().await;
            }
            if let Some(outcome) = self.outcomes.borrow_and_update().clone() {
                return outcome;
            }
        }
    }

    /// The outcome of the last reload attempt, if there was one.
    pub fn last_reload(&self) -> Option<ReloadOutcome> {
        self.outcomes.borrow().clone()
    }

    /// Starts watching `files` every `interval`; `reload` loads and applies the material.
    pub(crate) fn spawn(
        files: Vec<PathBuf>,
        interval: Duration,
        what: &'static str,
        reload: impl FnMut() -> Result<(), TlsError> + Send + 'static,
    ) -> TlsWatcher {
        let (report, outcomes) = watch::channel(None);
        // Taken before returning, so a change made right after is seen as one.
        let seen = fingerprint(&files);
        let mut state = Watched { files, seen, reload };
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                // Reading the files and loading the material block: on the runtime's
                // blocking threads, so that a slow file system (a network mount) holds up
                // no worker and none of the connections on it.
                let checked = tokio::task::spawn_blocking(move || {
                    let outcome = state.check();
                    (state, outcome)
                });
                let outcome;
                (state, outcome) = match checked.await {
                    Ok(done) => done,
                    Err(err) => {
                        tracing::error!(what, %err, "TLS reload panicked: the files are no longer watched");
                        return;
                    }
                };
                let Some(outcome) = outcome else { continue };
                let outcome = match outcome {
                    Ok(()) => {
                        tracing::info!(what, files = ?state.files, "TLS material reloaded: new handshakes use it");
                        Ok(())
                    }
                    Err(err) => {
                        tracing::warn!(
                            what, files = ?state.files, %err,
                            "TLS reload failed: keeping the previous certificates"
                        );
                        Err(Arc::new(err))
                    }
                };
                report.send_replace(Some(outcome));
            }
        });
        TlsWatcher { task, outcomes }
    }
}

/// What a watcher's task carries from one check to the next.
struct Watched<F> {
    files: Vec<PathBuf>,
    /// The files' fingerprint when last looked at.
    seen: Vec<Option<u64>>,
    reload: F,
}

impl<F: FnMut() -> Result<(), TlsError>> Watched<F> {
    /// Reloads if the files changed since the last look: `None` if they did not.
    fn check(&mut self) -> Option<Result<(), TlsError>> {
        let now = fingerprint(&self.files);
        if now == self.seen {
            return None;
        }
        self.seen = now;
        Some((self.reload)())
    }
}

/// A hash of each file's contents, or `None` for one that cannot be read.
fn fingerprint(files: &[PathBuf]) -> Vec<Option<u64>> {
    files
        .iter()
        .map(|path| {
            std::fs::read(path).ok().map(|contents| {
                let mut hasher = DefaultHasher::new();
                contents.hash(&mut hasher);
                hasher.finish()
            })
        })
        .collect()
}
