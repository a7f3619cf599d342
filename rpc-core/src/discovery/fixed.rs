//! A fixed list of instances.

use std::collections::BTreeMap;

use super::{Instance, Lease, Registry, RegistryError, Watch};

/// A registry that is a fixed list of instances, given when it is built: for tests and for
/// deployments whose addresses do not change. It cannot register instances, and its
/// watches yield the list once.
///
/// ```
/// use rpc_core::discovery::{Instance, StaticRegistry};
///
/// let registry = StaticRegistry::new()
///     .with("acme.users.v1.Users", "10.0.0.7:50051")
///     .with("acme.users.v1.Users", "10.0.0.8:50051")
///     .with_instance(Instance::new("acme.users.v1.Users", "10.0.0.9:50051").with_weight(300));
/// ```
#[derive(Debug, Clone, Default)]
pub struct StaticRegistry {
    services: BTreeMap<String, Vec<Instance>>,
}

impl StaticRegistry {
    /// An empty list.
    pub fn new() -> StaticRegistry {
        StaticRegistry::default()
    }

    /// Adds an instance of `service` at `address`, with the default weight.
    pub fn with(self, service: impl Into<String>, address: impl Into<String>) -> StaticRegistry {
        self.with_instance(Instance::new(service, address))
    }

    /// Adds `instance` (replacing one of the same service at the same address).
    pub fn with_instance(mut self, instance: Instance) -> StaticRegistry {
        let list = self.services.entry(instance.service().to_owned()).or_default();
        list.retain(|i| i.address() != instance.address());
        list.push(instance);
        list.sort_by(|a, b| a.address().cmp(b.address()));
        self
    }
}

impl Registry for StaticRegistry {
    async fn register(&self, _instance: Instance) -> Result<Lease, RegistryError> {
        Err(RegistryError::Unsupported("a static registry's instances are fixed when it is built"))
    }

    async fn discover(&self, service: &str) -> Result<Vec<Instance>, RegistryError> {
        Ok(self.services.get(service).cloned().unwrap_or_default())
    }

    async fn watch(&self, service: &str) -> Result<Watch, RegistryError> {
        let list = self.services.get(service).cloned().unwrap_or_default();
        let once = futures_util::stream::once(std::future::ready(Ok(list)));
        // The list never changes: after it, the stream waits forever rather than end, since
        // an ended watch means the registry went away.
        Ok(Watch::from_snapshots(futures_util::StreamExt::chain(once, futures_util::stream::pending())))
    }
}
