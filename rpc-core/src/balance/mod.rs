//! Client-side load balancing: which instance of a service each call goes to.
//!
//! A balanced [`Channel`], made with
//! [`Channel::balanced`](crate::Channel::balanced), follows a service's instances through a
//! [`Registry`](crate::discovery::Registry) watch and keeps a connection per instance,
//! opened on its first call and closed when the instance leaves. Calls in flight are never
//! failed by a change of the list: they finish on the connection they started on.
//!
//! Each call is sent to the instance its [`Policy`] picks. An instance whose connection
//! fails, or that answers `Unavailable`, is *ejected*: no call is sent to it for a back-off
//! period (doubling while it keeps failing), after which the next call to it is a probe that
//! brings it back if it succeeds. When every instance is ejected, calls go to them anyway
//! rather than fail without trying. With [`health_check`](crate::client::BalancedBuilder::health_check),
//! instances are also asked regularly through the health service
//! ([`health`](crate::health)), and those not serving are left out.
//!
//! A call that failed on one instance is sent to another when that is safe: when the call
//! never reached the instance (the connection could not be made, or the server refused the
//! call unprocessed), or when its method is marked
//! [idempotent](crate::client::BalancedBuilder::idempotent) and it failed with
//! `Unavailable`.
//!
//! Picking takes no lock: the instance list and the policy's precomputed state are one
//! immutable snapshot, swapped whole when the list changes.

mod picker;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::client::{Channel, ChannelConfig, Endpoint};
use crate::discovery::{Instance, Update, Watch};
use crate::health::{HealthCheckRequest, HealthClient, ServingStatus};
use crate::interceptors::Idempotent;
use crate::metadata::{Metadata, MetadataKey};
use crate::status::{Code, Status};
use picker::{Member, Picker};

/// The default number of points each instance has on a consistent-hashing ring.
pub const DEFAULT_VIRTUAL_NODES: u32 = 160;

/// The default first ejection of a failing instance; it doubles with each failed probe.
pub const DEFAULT_EJECTION: Duration = Duration::from_secs(1);

/// The default longest ejection.
pub const DEFAULT_MAX_EJECTION: Duration = Duration::from_secs(30);

/// The default number of instances a call may be sent to (the first included), when it is
/// safe to send it again after a failure.
pub const DEFAULT_FAILOVER_ATTEMPTS: u32 = 3;

/// How a balanced channel picks the instance for each call.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum Policy {
    /// Each instance in turn, ignoring weights.
    RoundRobin,
    /// Smooth weighted round-robin (nginx's algorithm): instances in proportion to their
    /// weights, interleaved (weights 5, 1, 1 give `a a b a c a a`), not in bursts. With equal
    /// weights, plain round-robin. The default.
    #[default]
    WeightedRoundRobin,
    /// An instance at random, in proportion to its weight.
    Random,
    /// Consistent hashing on a request key: calls with the same value of metadata `key` go to
    /// the same instance while it is there, and adding or removing one of n instances moves
    /// only about 1/n of the keys. Each instance has `virtual_nodes` points on the ring on
    /// average, in proportion to its weight. Calls without the key go to a random instance.
    ConsistentHash {
        /// The metadata entry whose value is hashed.
        key: MetadataKey,
        /// Points per instance on the ring.
        virtual_nodes: u32,
    },
    /// Power of two choices: of two instances drawn at random, the one with fewer calls in
    /// flight from this channel. Adapts to slow instances without any configuration;
    /// ignores weights.
    PowerOfTwoChoices,
}

impl Policy {
    /// Consistent hashing on metadata `key`, with [`DEFAULT_VIRTUAL_NODES`] points per
    /// instance.
    pub fn consistent_hash(key: impl Into<MetadataKey>) -> Policy {
        Policy::ConsistentHash { key: key.into(), virtual_nodes: DEFAULT_VIRTUAL_NODES }
    }
}

/// A balanced channel's options, set through its builder.
#[derive(Debug, Clone)]
pub(crate) struct BalanceOptions {
    pub(crate) policy: Policy,
    pub(crate) idempotent: Idempotent,
    pub(crate) failover_attempts: u32,
    pub(crate) ejection: Duration,
    pub(crate) max_ejection: Duration,
    pub(crate) health_check: Option<Duration>,
}

impl Default for BalanceOptions {
    fn default() -> Self {
        BalanceOptions {
            policy: Policy::default(),
            idempotent: Idempotent::default(),
            failover_attempts: DEFAULT_FAILOVER_ATTEMPTS,
            ejection: DEFAULT_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            health_check: None,
        }
    }
}

/// What a balanced channel knows of one instance; see
/// [`Channel::instances`](crate::Channel::instances).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct InstanceState {
    /// The instance, as registered.
    pub instance: Instance,
    /// Calls from this channel in flight on it now.
    pub in_flight: usize,
    /// Whether it is ejected after failing, and not yet due for a probe.
    pub ejected: bool,
    /// Whether its last health check said it serves (true until a check says otherwise).
    pub serving: bool,
}

/// The instances a balanced channel sends to, and how it picks among them.
pub(crate) struct Balancer {
    service: Arc<str>,
    snapshot: ArcSwap<Snapshot>,
    options: BalanceOptions,
    config: Arc<ChannelConfig>,
    /// The zero of the instances' ejection clocks.
    epoch: Instant,
    /// Stops the background tasks (the watch, the health checks) when the balancer goes.
    _tasks: DropGuard,
}

/// One list of instances and the policy's state for it: immutable, swapped whole.
struct Snapshot {
    nodes: Box<[Arc<Node>]>,
    picker: Picker,
}

/// One instance and the channel to it.
pub(crate) struct Node {
    instance: Instance,
    channel: Channel,
    in_flight: AtomicUsize,
    /// Failures in a row; reset by a success.
    failures: AtomicU32,
    /// Until when it is ejected, in milliseconds since the balancer's epoch (0: it is not).
    ejected_until: AtomicU64,
    serving: AtomicBool,
}

impl Node {
    fn new(instance: Instance, config: &Arc<ChannelConfig>) -> Node {
        Node {
            channel: Channel::direct(instance.address(), Arc::clone(config)),
            instance,
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            serving: AtomicBool::new(true),
        }
    }

    /// The connection task of the instance's channel.
    pub(crate) fn endpoint(&self) -> &Endpoint {
        // A node's channel is always direct.
        match self.channel.endpoint() {
            Some(endpoint) => endpoint,
            None => unreachable_balanced(),
        }
    }

    /// The instance's address.
    pub(crate) fn address(&self) -> &str {
        self.instance.address()
    }

    fn is_ejected(&self, now_ms: impl FnOnce() -> u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms() < until
    }
}

#[cold]
#[allow(clippy::panic)] // Nodes are only ever built with direct channels, in `Node::new`.
fn unreachable_balanced() -> ! {
    panic!("a balancer node holds a balanced channel")
}

/// A call in flight on a node: counted while it lives, for the two-choices policy.
pub(crate) struct InFlight {
    node: Arc<Node>,
}

impl InFlight {
    pub(crate) fn new(node: Arc<Node>) -> InFlight {
        node.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight { node }
    }

    pub(crate) fn node(&self) -> &Arc<Node> {
        &self.node
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.node.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Balancer {
    /// Follows `service` through `watch`: waits for its first list of instances (up to the
    /// connect timeout for a list with at least one), then keeps following it in a task.
    pub(crate) async fn start(
        service: Arc<str>,
        mut watch: Watch,
        options: BalanceOptions,
        config: Arc<ChannelConfig>,
    ) -> Result<Arc<Balancer>, Status> {
        let first = match tokio::time::timeout(config.connect_timeout, watch.next()).await {
            Ok(Some(Ok(update))) => update,
            Ok(Some(Err(err))) => {
                return Err(Status::unavailable(format!("cannot resolve {service}: {err}")));
            }
            Ok(None) => {
                return Err(Status::unavailable(format!("the registry ended the watch of {service}")));
            }
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "the registry did not list {service} within {:?}",
                    config.connect_timeout
                )));
            }
        };
        let stop = CancellationToken::new();
        let empty = Snapshot { nodes: Box::new([]), picker: Picker::new(&options.policy, &[]) };
        let balancer = Arc::new(Balancer {
            service: Arc::clone(&service),
            snapshot: ArcSwap::from_pointee(empty),
            options,
            config: Arc::clone(&config),
            epoch: Instant::now(),
            _tasks: stop.clone().drop_guard(),
        });
        balancer.apply(&first);
        let deadline = Instant::now() + config.connect_timeout;
        let mut waited = false;
        while balancer.snapshot.load().nodes.is_empty() {
            waited = true;
            match tokio::time::timeout_at(deadline, watch.next()).await {
                Ok(Some(Ok(update))) => balancer.apply(&update),
                Ok(Some(Err(err))) => tracing::warn!(%service, %err, "registry watch error"),
                Ok(None) | Err(_) => {
                    return Err(Status::unavailable(format!(
                        "no instances of {service} registered within {:?}",
                        config.connect_timeout
                    )));
                }
            }
        }
        if waited {
            tracing::debug!(%service, "instances appeared");
        }
        tokio::spawn(follow(Arc::downgrade(&balancer), watch, stop.clone()));
        if let Some(interval) = balancer.options.health_check {
            tokio::spawn(check_health(Arc::downgrade(&balancer), interval, stop));
        }
        Ok(balancer)
    }

    /// Installs a new list of instances, keeping the nodes (and connections) of those that
    /// stay. Instances of weight 0 are left out.
    fn apply(&self, update: &Update) {
        let old = self.snapshot.load();
        let nodes: Box<[Arc<Node>]> = update
            .instances()
            .iter()
            .filter(|instance| instance.weight() > 0)
            .map(|instance| {
                match old.nodes.iter().find(|node| node.address() == instance.address()) {
                    Some(node) if node.instance == *instance => Arc::clone(node),
                    Some(node) => {
                        // Same instance, new registration: keep its connection and state.
                        Arc::new(Node {
                            instance: instance.clone(),
                            channel: node.channel.clone(),
                            in_flight: AtomicUsize::new(0),
                            failures: AtomicU32::new(node.failures.load(Ordering::Relaxed)),
                            ejected_until: AtomicU64::new(node.ejected_until.load(Ordering::Relaxed)),
                            serving: AtomicBool::new(node.serving.load(Ordering::Relaxed)),
                        })
                    }
                    None => Arc::new(Node::new(instance.clone(), &self.config)),
                }
            })
            .collect();
        let members: Vec<Member<'_>> = nodes
            .iter()
            .map(|node| Member { address: node.address(), weight: node.instance.weight() })
            .collect();
        let picker = Picker::new(&self.options.policy, &members);
        for instance in update.added() {
            tracing::info!(service = %self.service, address = instance.address(), "instance added");
        }
        for instance in update.removed() {
            tracing::info!(service = %self.service, address = instance.address(), "instance removed");
        }
        self.snapshot.store(Arc::new(Snapshot { nodes, picker }));
    }

    /// The instance for a call with `metadata`, other than those `tried` (by node address in
    /// memory): one that is not ejected if there is one.
    pub(crate) fn pick(&self, metadata: &Metadata, tried: &[usize]) -> Result<Arc<Node>, Status> {
        let snapshot = self.snapshot.load();
        let nodes = &snapshot.nodes;
        if nodes.is_empty() {
            return Err(
                Status::unavailable(format!("no instances of {} are registered", self.service)).refused()
            );
        }
        let key = match &self.options.policy {
            Policy::ConsistentHash { key, .. } => metadata.get(key.as_str()).map(|value| &value[..]),
            _ => None,
        };
        let untried = |i: usize| tried.is_empty() || !tried.contains(&node_id(&nodes[i]));
        let healthy = |i: usize| {
            let node = &nodes[i];
            untried(i) && node.serving.load(Ordering::Relaxed) && !node.is_ejected(|| self.now_ms())
        };
        let load = |i: usize| nodes[i].in_flight.load(Ordering::Relaxed);
        let picked =
            snapshot.picker.pick(key, &healthy, &load).or_else(|| snapshot.picker.pick(key, &untried, &load));
        match picked {
            Some(index) => Ok(Arc::clone(&nodes[index])),
            None => Err(Status::unavailable(format!(
                "no instance of {} left to try ({} tried)",
                self.service,
                tried.len()
            ))
            .refused()),
        }
    }

    /// Whether a call to `method` that failed with `status` may be sent to another instance.
    pub(crate) fn may_fail_over(&self, method: &str, status: &Status, attempts: u32) -> bool {
        attempts < self.options.failover_attempts
            && (status.is_refused()
                || (status.code() == Code::Unavailable && self.options.idempotent.matches(method)))
    }

    /// Records the outcome of a call on `node`: an `Unavailable` ejects it, anything else
    /// shows it is up.
    pub(crate) fn record(&self, node: &Node, status: Option<&Status>) {
        match status {
            Some(status) if status.code() == Code::Unavailable => self.eject(node, status),
            _ => self.restore(node),
        }
    }

    fn eject(&self, node: &Node, status: &Status) {
        let now = self.now_ms();
        if node.is_ejected(|| now) {
            // Calls that were in flight when it failed: one ejection is enough.
            return;
        }
        let failures = node.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let exponent = failures.saturating_sub(1).min(20);
        let period = self.options.ejection.saturating_mul(1 << exponent).min(self.options.max_ejection);
        let until = now.saturating_add(u64::try_from(period.as_millis()).unwrap_or(u64::MAX)).max(1);
        node.ejected_until.store(until, Ordering::Relaxed);
        tracing::info!(
            service = %self.service,
            address = node.address(),
            ?period,
            failures,
            reason = %status.message(),
            "instance ejected"
        );
    }

    fn restore(&self, node: &Node) {
        // The common case reads one atomic and writes nothing.
        if node.failures.load(Ordering::Relaxed) != 0 {
            node.failures.store(0, Ordering::Relaxed);
            node.ejected_until.store(0, Ordering::Relaxed);
            tracing::info!(service = %self.service, address = node.address(), "instance back in rotation");
        }
    }

    fn now_ms(&self) -> u64 {
        // Offset by one so that 0 can mean "not ejected".
        u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX).saturating_add(1)
    }

    /// What the balancer knows of each instance now.
    pub(crate) fn instances(&self) -> Vec<InstanceState> {
        let snapshot = self.snapshot.load();
        let now = self.now_ms();
        snapshot
            .nodes
            .iter()
            .map(|node| InstanceState {
                instance: node.instance.clone(),
                in_flight: node.in_flight.load(Ordering::Relaxed),
                ejected: node.is_ejected(|| now),
                serving: node.serving.load(Ordering::Relaxed),
            })
            .collect()
    }
}

impl fmt::Debug for Balancer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Balancer")
            .field("service", &self.service)
            .field("instances", &self.snapshot.load().nodes.len())
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

/// A node's identity within one call's tries: its address in memory.
pub(crate) fn node_id(node: &Arc<Node>) -> usize {
    Arc::as_ptr(node) as usize
}

/// Applies the watch's updates to the balancer until it goes away. A broken watch keeps the
/// last list: stale instances are better than none, and ejection covers the dead ones.
async fn follow(balancer: std::sync::Weak<Balancer>, mut watch: Watch, stop: CancellationToken) {
    loop {
        let next = tokio::select! {
            () = stop.cancelled() => return,
            next = watch.next() => next,
        };
        let Some(balancer) = balancer.upgrade() else { return };
        match next {
            Some(Ok(update)) => balancer.apply(&update),
            Some(Err(err)) => tracing::warn!(service = %balancer.service, %err, "registry watch error"),
            None => {
                tracing::warn!(service = %balancer.service, "the registry ended its watch; keeping the last list");
                return;
            }
        }
    }
}

/// Asks every instance's health service, every `interval`, whether it serves the service.
async fn check_health(balancer: std::sync::Weak<Balancer>, interval: Duration, stop: CancellationToken) {
    loop {
        let Some(strong) = balancer.upgrade() else { return };
        let snapshot = strong.snapshot.load_full();
        let checks = snapshot.nodes.iter().map(|node| check_one(&strong, node, interval));
        tokio::select! {
            () = stop.cancelled() => return,
            _ = futures_util::future::join_all(checks) => {}
        }
        drop((strong, snapshot));
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(interval) => {}
        }
    }
}

/// One health check of one instance, recorded on its node.
async fn check_one(balancer: &Balancer, node: &Node, timeout: Duration) {
    let client = HealthClient::new(node.channel.clone());
    let request = HealthCheckRequest { service: balancer.service.to_string() };
    let serving = match client.check(request).timeout(timeout).await {
        Ok(response) => response.status() == ServingStatus::Serving,
        // A server without the health service cannot say; its calls will.
        Err(status) if status.code() == Code::Unimplemented => true,
        Err(status) if status.code() == Code::Unavailable || status.code() == Code::DeadlineExceeded => {
            balancer.eject(node, &status);
            return;
        }
        Err(_) => false,
    };
    let was = node.serving.swap(serving, Ordering::Relaxed);
    if serving {
        // A check that succeeds is a probe: an ejected instance comes back.
        balancer.restore(node);
    }
    if was != serving {
        tracing::info!(service = %balancer.service, address = node.address(), serving, "health changed");
    }
}
