//! The builder of balanced channels, and what a [`Channel`] says about its instances.

use std::sync::Arc;
use std::time::Duration;

use super::{BalanceOptions, Balancer, InstanceState, Policy};
use crate::client::{Channel, ChannelConfig, Router, channel_option_methods};
use crate::discovery::{AnyRegistry, Registry};
use crate::interceptor::ClientChain;
use crate::status::Status;

impl Channel {
    /// A channel to the instances of `service`, found in `registry`: each call goes to the
    /// instance a [`Policy`] picks, failing instances are ejected and probed back, and a
    /// failed call is sent to another instance when that is safe. See
    /// [`balance`](crate::balance).
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use rpc_core::Channel;
    /// use rpc_core::balance::Policy;
    /// use rpc_core::discovery::MemoryRegistry;
    ///
    /// # async fn run(registry: MemoryRegistry) -> Result<(), rpc_core::Status> {
    /// let channel = Channel::balanced(registry, "acme.users.v1.Users")
    ///     .policy(Policy::PowerOfTwoChoices)
    ///     .idempotent("/acme.users.v1.Users/GetUser")
    ///     .timeout(Duration::from_secs(2))
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn balanced(registry: impl Registry, service: impl Into<String>) -> BalancedBuilder {
        BalancedBuilder::new(AnyRegistry::new(registry), service.into())
    }

    /// What a balanced channel knows of the service's instances now (an empty list for a
    /// direct channel): their registrations, calls in flight, ejections and health.
    pub fn instances(&self) -> Vec<InstanceState> {
        self.router()
            .and_then(|router| router.as_any().downcast_ref::<Balancer>())
            .map_or_else(Vec::new, Balancer::instances)
    }
}

/// Options for a balanced [`Channel`], made with [`Channel::balanced`]: how calls are spread
/// over the service's instances and what happens when one fails, and the options of each
/// instance's connection (the same as a direct channel's).
#[derive(Debug, Clone)]
pub struct BalancedBuilder {
    registry: AnyRegistry,
    service: String,
    options: BalanceOptions,
    config: ChannelConfig,
    chain: ClientChain,
}

impl BalancedBuilder {
    fn new(registry: AnyRegistry, service: String) -> BalancedBuilder {
        BalancedBuilder {
            registry,
            service,
            options: BalanceOptions::default(),
            config: ChannelConfig::default(),
            chain: ClientChain::new(),
        }
    }

    /// How each call's instance is picked (default [`Policy::WeightedRoundRobin`]).
    pub fn policy(mut self, policy: Policy) -> BalancedBuilder {
        self.options.policy = policy;
        self
    }

    /// Marks methods as idempotent, so that a call that failed with `Unavailable` on one
    /// instance is sent to another: a full method name (`/acme.users.v1.Users/GetUser`), or
    /// every method of a service (`/acme.users.v1.Users/*`). Calls that never reached an
    /// instance are sent to another whatever their method. May be called many times.
    pub fn idempotent(mut self, pattern: impl Into<String>) -> BalancedBuilder {
        self.options.idempotent.add(pattern.into());
        self
    }

    /// Marks every method as idempotent.
    pub fn all_idempotent(mut self) -> BalancedBuilder {
        self.options.idempotent.all = true;
        self
    }

    /// The most instances one unary call is sent to, the first included (default
    /// [`DEFAULT_FAILOVER_ATTEMPTS`](crate::balance::DEFAULT_FAILOVER_ATTEMPTS); 1 turns
    /// failover off). A [`Retry`](crate::interceptors::Retry) interceptor on the channel
    /// multiplies it: each of its attempts is failed over on its own.
    pub fn failover_attempts(mut self, attempts: u32) -> BalancedBuilder {
        self.options.failover_attempts = attempts.max(1);
        self
    }

    /// How long a failing instance is left out: `first` after its first failure, doubling
    /// with each failed probe, up to `max` (defaults
    /// [`DEFAULT_EJECTION`](crate::balance::DEFAULT_EJECTION) and
    /// [`DEFAULT_MAX_EJECTION`](crate::balance::DEFAULT_MAX_EJECTION)).
    pub fn ejection(mut self, first: Duration, max: Duration) -> BalancedBuilder {
        self.options.ejection = first;
        self.options.max_ejection = max.max(first);
        self
    }

    /// Asks each instance's [health service](crate::health) every `interval` whether it
    /// serves this service; instances that say they do not are left out until they do, and a
    /// successful check brings an ejected instance back. Off by default.
    pub fn health_check(mut self, interval: Duration) -> BalancedBuilder {
        self.options.health_check = Some(interval);
        self
    }

    channel_option_methods!();

    /// Speaks TLS (with `config`, as [`tls_config`](Self::tls_config) does) only to the
    /// instances whose registration says they serve it (the tag
    /// [`Instance::TLS_TAG`](crate::discovery::Instance::TLS_TAG), which servers with TLS
    /// add), and plaintext to the others: for a service part-way through moving to TLS.
    /// Without it, the channel's TLS configuration applies to every instance.
    #[cfg(feature = "tls")]
    pub fn tls_where_registered(
        self,
        config: crate::transport::tls::ClientTlsConfig,
    ) -> Result<BalancedBuilder, crate::transport::tls::TlsError> {
        let mut builder = self.tls_config(config)?;
        builder.options.tls_where_registered = true;
        Ok(builder)
    }

    /// Resolves the service: watches it in the registry and waits for its first list of
    /// instances, for at most the connect timeout if the list is empty. Connections to the
    /// instances are opened on their first calls. Fails with `Unavailable` if the registry
    /// cannot be reached or lists no instance in time. Must be called inside a Tokio
    /// runtime.
    pub async fn connect(self) -> Result<Channel, Status> {
        let service: Arc<str> = self.service.into();
        let watch = self
            .registry
            .watch(&service)
            .await
            .map_err(|err| Status::unavailable(format!("cannot resolve {service}: {err}")))?;
        let plaintext_config = self.options.tls_where_registered.then(|| Arc::new(self.config.without_tls()));
        let config = Arc::new(self.config.with_connector_options());
        let balancer =
            Balancer::start(Arc::clone(&service), watch, self.options, Arc::clone(&config), plaintext_config)
                .await?;
        Ok(Channel::routed(balancer as Arc<dyn Router>, service, config, self.chain))
    }
}
