//! Registering a server's services in a registry while it serves.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;

use crate::discovery::{AnyRegistry, Instance, Lease, Registry};
use crate::transport::Address;

/// How a server registers itself: see
/// [`ServerBuilder::register`](super::ServerBuilder::register).
///
/// ```no_run
/// use rpc_core::server::Registration;
///
/// let registration = Registration::new()
///     .address("10.0.0.7:50051")  // what clients dial; default: the listener's address
///     .weight(200)
///     .version("1.4.2")
///     .tag("zone", "eu-west-1a");
/// ```
#[derive(Debug, Clone, Default)]
pub struct Registration {
    address: Option<String>,
    weight: Option<u32>,
    version: String,
    tags: BTreeMap<String, String>,
    services: Option<Vec<String>>,
}

impl Registration {
    /// Registers every mounted service (but the health service) at the listener's address,
    /// with the default weight.
    pub fn new() -> Registration {
        Registration::default()
    }

    /// The address clients should dial, `host:port`. Needed when the server listens on an
    /// unspecified address (`0.0.0.0`, `::`) or behind an address translation; by default it
    /// is the listener's local address.
    pub fn address(mut self, address: impl Into<String>) -> Registration {
        self.address = Some(address.into());
        self
    }

    /// The weight of this instance (default
    /// [`Instance::DEFAULT_WEIGHT`](crate::discovery::Instance::DEFAULT_WEIGHT)).
    pub fn weight(mut self, weight: u32) -> Registration {
        self.weight = Some(weight);
        self
    }

    /// The version this instance runs.
    pub fn version(mut self, version: impl Into<String>) -> Registration {
        self.version = version.into();
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, key: impl Into<String>, value: impl Into<String>) -> Registration {
        self.tags.insert(key.into(), value.into());
        self
    }

    /// Registers only these services (full names), instead of every mounted one.
    pub fn services(mut self, services: impl IntoIterator<Item = impl Into<String>>) -> Registration {
        self.services = Some(services.into_iter().map(Into::into).collect());
        self
    }

    /// The service names to register, for a server with `mounted` services.
    pub(crate) fn names(&self, mounted: &[&str]) -> Vec<String> {
        match &self.services {
            Some(services) => services.clone(),
            None => mounted.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Registers `services` for a server listening on `local`; a server that serves TLS says
    /// so in a tag ([`Instance::TLS_TAG`]), unless the registration sets that tag itself.
    pub(crate) async fn register(
        &self,
        registry: &AnyRegistry,
        local: &Address,
        services: Vec<String>,
        tls: bool,
    ) -> io::Result<Vec<Lease>> {
        let unspecified = match local {
            Address::Tcp(address) => address.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_unspecified()),
            Address::Unix(_) => false,
        };
        let address = match &self.address {
            Some(address) => address.clone(),
            None if unspecified => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "the server listens on {local}, which clients cannot dial: give the address \
                         to register with Registration::address"
                    ),
                ));
            }
            None => local.to_string(),
        };
        let mut leases = Vec::with_capacity(services.len());
        for service in services {
            let mut instance = Instance::new(service, address.clone()).with_version(self.version.clone());
            if let Some(weight) = self.weight {
                instance = instance.with_weight(weight);
            }
            if tls {
                instance = instance.with_tag(Instance::TLS_TAG, "true");
            }
            for (key, value) in &self.tags {
                instance = instance.with_tag(key.clone(), value.clone());
            }
            let name = instance.service().to_owned();
            // On error, the leases already taken are dropped, which deregisters them.
            let lease = registry
                .register(instance)
                .await
                .map_err(|err| io::Error::other(format!("cannot register {name} at {address}: {err}")))?;
            leases.push(lease);
        }
        for lease in &leases {
            tracing::info!(service = lease.instance().service(), address = %address, "registered");
        }
        Ok(leases)
    }
}

/// Deregisters every lease, together.
pub(crate) async fn deregister(leases: Vec<Lease>) {
    let revocations = leases.into_iter().map(|lease| async move {
        let service = lease.instance().service().to_owned();
        match lease.revoke().await {
            Ok(()) => tracing::info!(%service, "deregistered"),
            Err(err) => tracing::warn!(%service, %err, "deregistration failed; the registration will expire"),
        }
    });
    futures_util::future::join_all(revocations).await;
}
