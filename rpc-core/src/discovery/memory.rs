//! The in-process registry: the embedded default.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{Instance, Lease, LeaseKeeper, Registry, RegistryError, Watch};
use futures_util::future::BoxFuture;

/// A registry held in memory, shared by everything in one process that holds a clone.
///
/// It is the embedded default: services and their clients in one process find each other
/// through it with no infrastructure. Registrations are kept alive by a heartbeat task
/// (every third of the TTL) and expire if the heartbeats stop, as they would in a remote
/// registry; expired instances are removed and reported to watchers within the TTL.
///
/// ```
/// use rpc_core::discovery::{Instance, MemoryRegistry, Registry};
///
/// # #[tokio::main(flavor = "current_thread")] async fn main() -> Result<(), rpc_core::discovery::RegistryError> {
/// let registry = MemoryRegistry::new();
/// let _lease = registry.register(Instance::new("demo.Echo", "127.0.0.1:7000")).await?;
/// assert_eq!(registry.discover("demo.Echo").await?.len(), 1);
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct MemoryRegistry {
    inner: Arc<Inner>,
}

struct Inner {
    ttl: Duration,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    services: HashMap<String, Entry>,
    next_lease: u64,
    /// The leases not revoked: only those may register again after expiring.
    live_leases: HashSet<u64>,
}

/// One service: its registrations by address, and the list its watchers see.
struct Entry {
    registered: BTreeMap<String, Registered>,
    watchers: watch::Sender<Vec<Instance>>,
}

struct Registered {
    instance: Instance,
    lease: u64,
    expires: Instant,
}

impl MemoryRegistry {
    /// The default time a registration lives without a heartbeat.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
    /// The shortest TTL; shorter ones are raised to it.
    pub const MIN_TTL: Duration = Duration::from_millis(30);

    /// An empty registry with the default TTL.
    pub fn new() -> MemoryRegistry {
        MemoryRegistry::with_ttl(MemoryRegistry::DEFAULT_TTL)
    }

    /// An empty registry whose registrations expire `ttl` after their last heartbeat (at
    /// least [`MIN_TTL`](MemoryRegistry::MIN_TTL)).
    pub fn with_ttl(ttl: Duration) -> MemoryRegistry {
        let ttl = ttl.max(MemoryRegistry::MIN_TTL);
        MemoryRegistry { inner: Arc::new(Inner { ttl, state: Mutex::new(State::default()) }) }
    }

    /// The time a registration lives without a heartbeat.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }
}

impl Default for MemoryRegistry {
    fn default() -> Self {
        MemoryRegistry::new()
    }
}

impl fmt::Debug for MemoryRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.inner.lock();
        let counts: BTreeMap<&str, usize> =
            state.services.iter().map(|(name, entry)| (name.as_str(), entry.registered.len())).collect();
        f.debug_struct("MemoryRegistry").field("ttl", &self.inner.ttl).field("instances", &counts).finish()
    }
}

impl Registry for MemoryRegistry {
    async fn register(&self, instance: Instance) -> Result<Lease, RegistryError> {
        instance.validate()?;
        let lease = {
            let mut state = self.inner.lock();
            state.next_lease += 1;
            let lease = state.next_lease;
            state.live_leases.insert(lease);
            let expires = Instant::now() + self.inner.ttl;
            let entry = state.entry(instance.service());
            let registered = Registered { instance: instance.clone(), lease, expires };
            entry.registered.insert(instance.address().to_owned(), registered);
            entry.publish();
            lease
        };
        let heartbeat = tokio::spawn(heartbeat(Arc::downgrade(&self.inner), instance.clone(), lease));
        let keeper = MemoryLease {
            inner: Arc::downgrade(&self.inner),
            service: instance.service().to_owned(),
            address: instance.address().to_owned(),
            lease,
            heartbeat,
        };
        Ok(Lease::new(instance, keeper))
    }

    async fn discover(&self, service: &str) -> Result<Vec<Instance>, RegistryError> {
        let mut state = self.inner.lock();
        Ok(state.services.get_mut(service).map(|entry| entry.purge(Instant::now()).1).unwrap_or_default())
    }

    async fn watch(&self, service: &str) -> Result<Watch, RegistryError> {
        let watchers = self.inner.lock().entry(service).watchers.subscribe();
        let inner = Arc::clone(&self.inner);
        let service = service.to_owned();
        let snapshots = futures_util::stream::unfold(
            (inner, service, watchers, true),
            |(inner, service, mut watchers, first)| async move {
                if !first {
                    // Wait for a change, or for the next registration to expire: whoever
                    // watches a service is who needs its expiries noticed.
                    loop {
                        let next_expiry = inner.purge(&service);
                        if watchers.has_changed().unwrap_or(false) {
                            break;
                        }
                        let expiry = async {
                            match next_expiry {
                                Some(at) => tokio::time::sleep_until(at).await,
                                None => std::future::pending().await,
                            }
                        };
                        tokio::select! {
                            changed = watchers.changed() => {
                                if changed.is_err() {
                                    return None;
                                }
                                break;
                            }
                            () = expiry => {}
                        }
                    }
                }
                inner.purge(&service);
                let snapshot = watchers.borrow_and_update().clone();
                Some((Ok(snapshot), (inner, service, watchers, false)))
            },
        );
        Ok(Watch::from_snapshots(snapshots))
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // The state is only ever left consistent: a panic elsewhere does not poison it.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Removes the expired registrations of `service`, telling its watchers; returns when the
    /// next one expires.
    fn purge(&self, service: &str) -> Option<Instant> {
        let mut state = self.lock();
        state.services.get_mut(service).and_then(|entry| entry.purge(Instant::now()).0)
    }
}

impl State {
    fn entry(&mut self, service: &str) -> &mut Entry {
        self.services.entry(service.to_owned()).or_insert_with(|| Entry {
            registered: BTreeMap::new(),
            watchers: watch::Sender::new(Vec::new()),
        })
    }
}

impl Entry {
    /// Drops the registrations expired at `now`, publishing the list if that changed it;
    /// returns the next expiry and the live instances.
    fn purge(&mut self, now: Instant) -> (Option<Instant>, Vec<Instance>) {
        let before = self.registered.len();
        self.registered.retain(|address, r| {
            let live = r.expires > now;
            if !live {
                tracing::info!(service = r.instance.service(), %address, "registration expired");
            }
            live
        });
        if self.registered.len() != before {
            self.publish();
        }
        let next = self.registered.values().map(|r| r.expires).min();
        (next, self.registered.values().map(|r| r.instance.clone()).collect())
    }

    fn publish(&mut self) {
        let list: Vec<Instance> = self.registered.values().map(|r| r.instance.clone()).collect();
        self.watchers.send_replace(list);
    }
}

/// Refreshes one registration every third of the TTL, until its lease is revoked (which
/// stops this task) or another registration of the same address replaces it. A registration
/// that expired meanwhile (the process stalled for longer than the TTL) is made again.
async fn heartbeat(inner: Weak<Inner>, instance: Instance, lease: u64) {
    loop {
        let Some(ttl) = inner.upgrade().map(|inner| inner.ttl) else { return };
        tokio::time::sleep(ttl / 3).await;
        let Some(inner) = inner.upgrade() else { return };
        let mut state = inner.lock();
        if !state.live_leases.contains(&lease) {
            return;
        }
        let expires = Instant::now() + inner.ttl;
        let entry = state.entry(instance.service());
        match entry.registered.get_mut(instance.address()) {
            Some(r) if r.lease == lease => r.expires = expires,
            Some(_) => return,
            None => {
                tracing::warn!(
                    service = instance.service(),
                    address = instance.address(),
                    "registration had expired; registering again"
                );
                let registered = Registered { instance: instance.clone(), lease, expires };
                entry.registered.insert(instance.address().to_owned(), registered);
                entry.publish();
            }
        }
    }
}

/// What a [`Lease`] from a [`MemoryRegistry`] holds.
struct MemoryLease {
    inner: Weak<Inner>,
    service: String,
    address: String,
    lease: u64,
    heartbeat: JoinHandle<()>,
}

impl LeaseKeeper for MemoryLease {
    fn revoke(self: Box<Self>) -> BoxFuture<'static, Result<(), RegistryError>> {
        self.heartbeat.abort();
        if let Some(inner) = self.inner.upgrade() {
            let mut state = inner.lock();
            state.live_leases.remove(&self.lease);
            if let Some(entry) = state.services.get_mut(&self.service)
                && entry.registered.get(&self.address).is_some_and(|r| r.lease == self.lease)
            {
                entry.registered.remove(&self.address);
                entry.publish();
            }
        }
        Box::pin(std::future::ready(Ok(())))
    }
}
