//! Service discovery: where the instances of a service are.
//!
//! A [`Registry`] holds, for each service name, the [`Instance`]s that serve it. A server
//! [registers](Registry::register) itself and keeps the returned [`Lease`]: the registry
//! keeps the registration alive by heartbeat while the lease lives, removes it when the lease
//! is dropped or [revoked](Lease::revoke), and lets it expire within its TTL if the process
//! dies without saying goodbye. A client [discovers](Registry::discover) a service's
//! instances, or [watches](Registry::watch) them as a stream of [`Update`]s, each carrying the
//! full list and what changed since the last one (so a missed update can never leave a
//! client with a wrong list).
//!
//! Three backends:
//!
//! - [`MemoryRegistry`]: in-process, for services that live in one process (tests, examples,
//!   a monolith being split), the embedded default;
//! - [`StaticRegistry`]: a fixed list of addresses, for simple deployments;
//! - `EtcdRegistry` (feature `etcd`): [etcd](https://etcd.io), the distributed store most
//!   service meshes and Go RPC frameworks use for this.
//!
//! Servers register with one builder call,
//! [`ServerBuilder::register`](crate::server::ServerBuilder::register); clients balance over
//! a service's instances with [`Channel::balanced`](crate::Channel::balanced).
//!
//! ```no_run
//! use rpc_core::discovery::{Instance, MemoryRegistry, Registry};
//!
//! # async fn run() -> Result<(), rpc_core::discovery::RegistryError> {
//! let registry = MemoryRegistry::new();
//! let lease = registry.register(Instance::new("acme.users.v1.Users", "10.0.0.7:50051").with_weight(50)).await?;
//! let instances = registry.discover("acme.users.v1.Users").await?;
//! assert_eq!(instances[0].address(), "10.0.0.7:50051");
//! drop(lease); // deregisters
//! # Ok(()) }
//! ```
//!
//! Other registries (Consul, ZooKeeper, Kubernetes endpoints...) plug in by implementing
//! [`Registry`]; a backend that can only list instances builds its [`Watch`] with
//! [`Watch::from_snapshots`], which works out the changes itself.

#[cfg(feature = "etcd")]
mod etcd;
mod fixed;
mod memory;

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use futures_util::{Stream, StreamExt};

use futures_util::future::BoxFuture;

#[cfg(feature = "etcd")]
pub use etcd::{EtcdOptions, EtcdRegistry};
pub use fixed::StaticRegistry;
pub use memory::MemoryRegistry;

/// One instance of a service: where it listens, how much traffic it takes, and what a client
/// may want to know about it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "etcd", derive(serde::Serialize, serde::Deserialize))]
pub struct Instance {
    #[cfg_attr(feature = "etcd", serde(default))]
    service: String,
    #[cfg_attr(feature = "etcd", serde(default))]
    address: String,
    #[cfg_attr(feature = "etcd", serde(default = "default_weight"))]
    weight: u32,
    #[cfg_attr(feature = "etcd", serde(default))]
    version: String,
    #[cfg_attr(feature = "etcd", serde(default))]
    tags: BTreeMap<String, String>,
}

#[cfg(feature = "etcd")]
fn default_weight() -> u32 {
    Instance::DEFAULT_WEIGHT
}

impl Instance {
    /// The weight of an instance that sets none.
    pub const DEFAULT_WEIGHT: u32 = 100;

    /// The tag that says an instance serves TLS: `tls` = `true`. Servers with TLS add it to
    /// their registrations; balanced channels built with
    /// [`tls_where_registered`](crate::balance::BalancedBuilder::tls_where_registered) speak
    /// TLS to the instances that have it, and plaintext to the others.
    pub const TLS_TAG: &str = "tls";

    /// An instance of `service` (its full name, e.g. `acme.users.v1.Users`) listening on
    /// `address` (`host:port`), with the default weight, no version and no tags.
    pub fn new(service: impl Into<String>, address: impl Into<String>) -> Instance {
        Instance {
            service: service.into(),
            address: address.into(),
            weight: Instance::DEFAULT_WEIGHT,
            version: String::new(),
            tags: BTreeMap::new(),
        }
    }

    /// Sets the weight (default [`DEFAULT_WEIGHT`](Instance::DEFAULT_WEIGHT)): under a
    /// weighted policy an instance gets traffic in proportion to it; 0 takes none.
    pub fn with_weight(mut self, weight: u32) -> Instance {
        self.weight = weight;
        self
    }

    /// Sets the version the instance runs.
    pub fn with_version(mut self, version: impl Into<String>) -> Instance {
        self.version = version.into();
        self
    }

    /// Adds a tag (a key and a value, such as `zone` = `eu-west-1a`).
    pub fn with_tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Instance {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// The service's full name.
    pub fn service(&self) -> &str {
        &self.service
    }

    /// Where the instance listens, `host:port`. Within a service, the address identifies the
    /// instance: registering the same address again replaces the registration.
    pub fn address(&self) -> &str {
        &self.address
    }

    /// The instance's share of traffic under weighted policies.
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// The version the instance runs; empty if it said none.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The instance's tags.
    pub fn tags(&self) -> &BTreeMap<String, String> {
        &self.tags
    }

    /// Whether the instance says it serves TLS (its [`TLS_TAG`](Self::TLS_TAG) is `true`).
    pub fn serves_tls(&self) -> bool {
        self.tags.get(Instance::TLS_TAG).is_some_and(|value| value == "true")
    }

    /// Checks what a registry needs: a service name, and an address of the form `host:port`.
    pub fn validate(&self) -> Result<(), RegistryError> {
        if self.service.is_empty() {
            return Err(RegistryError::Invalid("an instance needs a service name".into()));
        }
        let port = self.address.rsplit_once(':').map(|(host, port)| (host, port.parse::<u16>()));
        match port {
            Some((host, Ok(_))) if !host.is_empty() => Ok(()),
            _ => Err(RegistryError::Invalid(format!(
                "instance address {:?} of {} is not host:port",
                self.address, self.service
            ))),
        }
    }
}

/// Why a registry could not do what was asked.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The registry could not be reached, or failed; the operation may succeed later.
    #[error("registry unavailable: {0}")]
    Unavailable(String),
    /// The registry does not do this (a static list cannot register instances).
    #[error("not supported by this registry: {0}")]
    Unsupported(&'static str),
    /// The request is malformed: an instance without a service name or a valid address.
    #[error("invalid registration: {0}")]
    Invalid(String),
}

/// A registry of service instances: see the [module docs](self).
///
/// Implement it to plug in another backend. The three methods are `async`; an
/// implementation may write them as `async fn`.
pub trait Registry: Send + Sync + 'static {
    /// Registers `instance` and keeps it registered while the returned [`Lease`] lives.
    fn register(&self, instance: Instance) -> impl Future<Output = Result<Lease, RegistryError>> + Send;

    /// The instances of `service` registered now, in address order.
    fn discover(&self, service: &str) -> impl Future<Output = Result<Vec<Instance>, RegistryError>> + Send;

    /// Follows the instances of `service`: the stream yields the current list at once, then a
    /// new [`Update`] each time the list changes. It ends only if the registry goes away; a
    /// backend that loses its connection reconnects and catches up on its own.
    fn watch(&self, service: &str) -> impl Future<Output = Result<Watch, RegistryError>> + Send;
}

/// The object-safe form of [`Registry`], behind [`AnyRegistry`].
trait DynRegistry: Send + Sync + 'static {
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<Lease, RegistryError>>;
    fn discover<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, RegistryError>>;
    fn watch<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Watch, RegistryError>>;
}

impl<R: Registry> DynRegistry for R {
    fn register(&self, instance: Instance) -> BoxFuture<'_, Result<Lease, RegistryError>> {
        Box::pin(Registry::register(self, instance))
    }

    fn discover<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Vec<Instance>, RegistryError>> {
        Box::pin(Registry::discover(self, service))
    }

    fn watch<'a>(&'a self, service: &'a str) -> BoxFuture<'a, Result<Watch, RegistryError>> {
        Box::pin(Registry::watch(self, service))
    }
}

/// Any registry, behind one type: for choosing the backend at run time, or storing one.
/// Cloning it is cheap, and clones share the registry.
///
/// ```no_run
/// use rpc_core::discovery::{AnyRegistry, MemoryRegistry, StaticRegistry};
///
/// let fixed = std::env::var("USERS_ADDR").ok();
/// let registry = match fixed {
///     Some(addr) => AnyRegistry::new(StaticRegistry::new().with("acme.users.v1.Users", addr)),
///     None => AnyRegistry::new(MemoryRegistry::new()),
/// };
/// ```
#[derive(Clone)]
pub struct AnyRegistry {
    inner: Arc<dyn DynRegistry>,
}

impl AnyRegistry {
    /// Wraps `registry`.
    pub fn new(registry: impl Registry) -> AnyRegistry {
        AnyRegistry { inner: Arc::new(registry) }
    }
}

impl fmt::Debug for AnyRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AnyRegistry").finish_non_exhaustive()
    }
}

impl Registry for AnyRegistry {
    async fn register(&self, instance: Instance) -> Result<Lease, RegistryError> {
        self.inner.register(instance).await
    }

    async fn discover(&self, service: &str) -> Result<Vec<Instance>, RegistryError> {
        self.inner.discover(service).await
    }

    async fn watch(&self, service: &str) -> Result<Watch, RegistryError> {
        self.inner.watch(service).await
    }
}

/// What keeps a registration alive, for a [`Lease`] to hold: implemented by each backend.
pub trait LeaseKeeper: Send + Sync + 'static {
    /// Stops keeping the registration alive and removes it. Work that needs no waiting (such
    /// as stopping a heartbeat task) is done before this returns; the future does the rest.
    fn revoke(self: Box<Self>) -> BoxFuture<'static, Result<(), RegistryError>>;
}

/// A registration, kept alive by heartbeat while this handle lives.
///
/// Dropping it deregisters the instance (in the background, for a remote registry);
/// [`revoke`](Lease::revoke) does it and waits. If the process dies, heartbeats stop and the
/// registration expires after the registry's TTL.
#[must_use = "dropping a lease deregisters the instance at once"]
pub struct Lease {
    instance: Instance,
    keeper: Option<Box<dyn LeaseKeeper>>,
}

impl Lease {
    /// A lease on `instance`, kept alive by `keeper`. Backends call this.
    pub fn new(instance: Instance, keeper: impl LeaseKeeper) -> Lease {
        Lease { instance, keeper: Some(Box::new(keeper)) }
    }

    /// The registered instance.
    pub fn instance(&self) -> &Instance {
        &self.instance
    }

    /// Deregisters the instance, and waits until the registry has removed it.
    pub async fn revoke(mut self) -> Result<(), RegistryError> {
        match self.keeper.take() {
            Some(keeper) => keeper.revoke().await,
            None => Ok(()),
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if let Some(keeper) = self.keeper.take() {
            let revoking = keeper.revoke();
            // Outside a runtime the remote part cannot run; the registration then expires
            // with its TTL, as if the process had died.
            if let Ok(runtime) = tokio::runtime::Handle::try_current() {
                runtime.spawn(async move {
                    if let Err(err) = revoking.await {
                        tracing::warn!(%err, "deregistration failed; the registration will expire");
                    }
                });
            }
        }
    }
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease").field("instance", &self.instance).finish_non_exhaustive()
    }
}

/// A change in a service's instances: the full list as it is now, and how it differs from
/// the list before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Update {
    instances: Arc<[Instance]>,
    added: Vec<Instance>,
    removed: Vec<Instance>,
    changed: Vec<Instance>,
}

impl Update {
    /// The update from `previous` to `current` (both in any order; instances are told apart by
    /// address). The update's list is `current`, sorted by address.
    pub fn between(previous: &[Instance], current: Vec<Instance>) -> Update {
        let mut current = current;
        current.sort_by(|a, b| a.address.cmp(&b.address));
        current.dedup_by(|a, b| a.address == b.address);
        let before: BTreeMap<&str, &Instance> = previous.iter().map(|i| (i.address(), i)).collect();
        let mut added = Vec::new();
        let mut changed = Vec::new();
        for instance in &current {
            match before.get(instance.address()) {
                None => added.push(instance.clone()),
                Some(old) if *old != instance => changed.push(instance.clone()),
                Some(_) => {}
            }
        }
        let now: BTreeMap<&str, ()> = current.iter().map(|i| (i.address(), ())).collect();
        let removed = previous.iter().filter(|i| !now.contains_key(i.address())).cloned().collect();
        Update { instances: current.into(), added, removed, changed }
    }

    /// Every instance of the service now, in address order.
    pub fn instances(&self) -> &[Instance] {
        &self.instances
    }

    /// The instances that appeared.
    pub fn added(&self) -> &[Instance] {
        &self.added
    }

    /// The instances that went away.
    pub fn removed(&self) -> &[Instance] {
        &self.removed
    }

    /// The instances still there whose registration changed (weight, version or tags).
    pub fn changed(&self) -> &[Instance] {
        &self.changed
    }

    /// Whether nothing changed.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty() && self.removed.is_empty() && self.changed.is_empty()
    }

    pub(crate) fn shared_instances(&self) -> Arc<[Instance]> {
        Arc::clone(&self.instances)
    }
}

/// The changes to a service's instances, as a [`Stream`] of [`Update`]s: what
/// [`Registry::watch`] returns.
pub struct Watch {
    inner: Pin<Box<dyn Stream<Item = Result<Update, RegistryError>> + Send>>,
}

impl Watch {
    /// A watch over a stream of updates.
    pub fn new(updates: impl Stream<Item = Result<Update, RegistryError>> + Send + 'static) -> Watch {
        Watch { inner: Box::pin(updates) }
    }

    /// A watch over a stream of full lists of instances, each compared with the one before:
    /// the first list is yielded as it is (every instance added); later lists that change
    /// nothing are skipped. Errors pass through, and the next list is compared with the last
    /// good one.
    pub fn from_snapshots(
        snapshots: impl Stream<Item = Result<Vec<Instance>, RegistryError>> + Send + 'static,
    ) -> Watch {
        let mut last: Option<Arc<[Instance]>> = None;
        let updates = snapshots.filter_map(move |snapshot| {
            let update = match snapshot {
                Err(err) => Some(Err(err)),
                Ok(list) => {
                    let update = Update::between(last.as_deref().unwrap_or(&[]), list);
                    let first = last.is_none();
                    last = Some(update.shared_instances());
                    (first || !update.is_empty()).then_some(Ok(update))
                }
            };
            std::future::ready(update)
        });
        Watch::new(updates)
    }
}

impl Stream for Watch {
    type Item = Result<Update, RegistryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(address: &str) -> Instance {
        Instance::new("svc", address)
    }

    #[test]
    fn update_between_lists_what_was_added_removed_and_changed() {
        let before = vec![at("a:1"), at("b:1"), at("c:1")];
        let after = vec![at("d:1"), at("a:1").with_weight(5), at("c:1")];
        let update = Update::between(&before, after);
        let addresses = |list: &[Instance]| list.iter().map(|i| i.address().to_owned()).collect::<Vec<_>>();
        assert_eq!(addresses(update.instances()), ["a:1", "c:1", "d:1"]);
        assert_eq!(addresses(update.added()), ["d:1"]);
        assert_eq!(addresses(update.removed()), ["b:1"]);
        assert_eq!(addresses(update.changed()), ["a:1"]);
        assert!(!update.is_empty());
        assert!(Update::between(&[at("a:1")], vec![at("a:1")]).is_empty());
    }

    #[test]
    fn instance_addresses_must_be_host_and_port() {
        assert!(at("10.0.0.1:80").validate().is_ok());
        assert!(at("[::1]:8080").validate().is_ok());
        assert!(at("localhost:8080").validate().is_ok());
        for bad in ["", "10.0.0.1", ":80", "host:port", "host:70000"] {
            assert!(matches!(at(bad).validate(), Err(RegistryError::Invalid(_))), "{bad:?} was accepted");
        }
        assert!(Instance::new("", "a:1").validate().is_err());
    }

    #[tokio::test]
    async fn snapshots_become_updates_and_unchanged_lists_are_skipped() {
        let snapshots = futures_util::stream::iter(vec![
            Ok(vec![at("a:1")]),
            Ok(vec![at("a:1")]),
            Err(RegistryError::Unavailable("blip".into())),
            Ok(vec![at("a:1"), at("b:1")]),
        ]);
        let updates: Vec<_> = Watch::from_snapshots(snapshots).collect().await;
        assert_eq!(updates.len(), 3, "{updates:?}");
        let first = updates[0].as_ref().expect("first update");
        assert_eq!(first.added().len(), 1);
        assert!(updates[1].is_err());
        let last = updates[2].as_ref().expect("last update");
        assert_eq!(last.added(), [at("b:1")]);
        assert_eq!(last.instances().len(), 2);
    }
}
