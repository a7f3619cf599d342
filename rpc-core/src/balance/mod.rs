//! Client-side load balancing: which instance of a service each call goes to.
//!
//! A balanced [`Channel`], made with
//! [`Channel::balanced`](crate::Channel::balanced), follows a service's instances through a
//! [`Registry`](crate::discovery::Registry) watch and keeps a connection per instance,
//! opened on its first call and closed when the instance leaves. Calls in flight are never
//! failed by a change of the list: they finish on the connection they started on.
//!
//! Each call is sent to the instance its [`Policy`] picks. An instance whose connection
//! fails, that answers `Unavailable`, or whose connection is still not up when a call's
//! deadline passes, is *ejected*: no call is sent to it for a back-off period (doubling with
//! each failed probe, up to a maximum). When the period is over, a single call is let through
//! as a probe (the others keep away while it runs): if it succeeds the instance is back in
//! rotation, if it fails the next period is longer. Outcomes of calls sent before an ejection
//! change nothing: a slow success from before cannot end it. When every instance is ejected,
//! calls go to them anyway rather than fail without trying. With
//! [`health_check`](crate::balance::BalancedBuilder::health_check), instances are also asked
//! regularly through the health service ([`health`](crate::health)); those not serving are
//! left out, and a successful check is a probe that brings an ejected instance back.
//!
//! A unary call that failed on one instance is sent to another when that is safe: when the
//! call never reached the instance (the connection could not be made, or the server refused
//! the call unprocessed), or when its method is marked
//! [idempotent](crate::balance::BalancedBuilder::idempotent) and it failed with
//! `Unavailable`. A [`Retry`](crate::interceptors::Retry) interceptor on the channel runs
//! around all of that: each of its attempts may itself try several instances.
//!
//! Streaming calls go to the instance the policy picks, count as in flight there until they
//! end, and their failures eject instances like unary calls'; but a stream is never sent to
//! another instance: its messages cannot be replayed.
//!
//! Picking takes no lock: the instance list and the policy's precomputed state are one
//! immutable snapshot, swapped whole when the list changes; the per-instance state (calls in
//! flight, ejection) is atomics, kept across changes of an instance's registration.

mod builder;
mod picker;

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use futures_util::StreamExt;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, DropGuard};

pub use builder::BalancedBuilder;

use crate::client::{Channel, ChannelConfig, Endpoint, InFlight, Node, Router};
use crate::discovery::{Instance, Update, Watch};
use crate::health::{HealthCheckRequest, HealthClient, ServingStatus};
use crate::metadata::{Metadata, MetadataKey};
use crate::method::MethodPatterns;
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
    pub(crate) idempotent: MethodPatterns,
    pub(crate) failover_attempts: u32,
    pub(crate) ejection: Duration,
    pub(crate) max_ejection: Duration,
    pub(crate) health_check: Option<Duration>,
    /// Whether the channel's TLS applies only to instances registered as serving TLS.
    pub(crate) tls_where_registered: bool,
}

impl Default for BalanceOptions {
    fn default() -> Self {
        BalanceOptions {
            policy: Policy::default(),
            idempotent: MethodPatterns::default(),
            failover_attempts: DEFAULT_FAILOVER_ATTEMPTS,
            ejection: DEFAULT_EJECTION,
            max_ejection: DEFAULT_MAX_EJECTION,
            health_check: None,
            tls_where_registered: false,
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
    /// The configuration for instances not registered as serving TLS, when the channel's TLS
    /// applies only to those that are (`config` is for those).
    plaintext_config: Option<Arc<ChannelConfig>>,
    /// The zero of the instances' ejection clocks.
    epoch: Instant,
    /// Stops the background tasks (the watch, the health checks) when the balancer goes.
    _tasks: DropGuard,
}

/// One list of instances and the policy's state for it: immutable, swapped whole.
struct Snapshot {
    nodes: Box<[Listed]>,
    picker: Picker,
    /// Instances listed with weight 0, left out (for error messages).
    drained: usize,
}

/// One instance as registered, and its state.
struct Listed {
    instance: Instance,
    state: Arc<NodeState>,
}

/// What the balancer keeps about one address: its connection, the calls in flight on it,
/// and its ejection. Shared by every snapshot that lists the address, so that a change of
/// registration (a new weight) loses none of it.
pub(crate) struct NodeState {
    address: Arc<str>,
    endpoint: Endpoint,
    config: Arc<ChannelConfig>,
    in_flight: AtomicUsize,
    /// Ejections in a row, each after a failed probe; reset by a success.
    failures: AtomicU32,
    /// Until when it is ejected, in milliseconds since the balancer's epoch; 0 when it is in
    /// rotation. Once that time has passed it is due for a probe: the one call that claims
    /// the probe moves this on by a probe window, so that the others keep away meanwhile.
    ejected_until: AtomicU64,
    /// Counts ejections: the outcome of a call sent before the latest one says nothing about
    /// the instance since.
    generation: AtomicU32,
    serving: AtomicBool,
}

impl NodeState {
    fn new(address: &str, config: &Arc<ChannelConfig>) -> NodeState {
        NodeState {
            address: address.into(),
            endpoint: Endpoint::new(address, Arc::clone(config)),
            config: Arc::clone(config),
            in_flight: AtomicUsize::new(0),
            failures: AtomicU32::new(0),
            ejected_until: AtomicU64::new(0),
            generation: AtomicU32::new(0),
            serving: AtomicBool::new(true),
        }
    }

    /// Whether calls may go to it now: serving, and not ejected (or due for a probe).
    fn is_available(&self, now_ms: impl FnOnce() -> u64) -> bool {
        if !self.serving.load(Ordering::Relaxed) {
            return false;
        }
        let until = self.ejected_until.load(Ordering::Relaxed);
        until == 0 || now_ms() >= until
    }

    fn is_ejected(&self, now_ms: u64) -> bool {
        let until = self.ejected_until.load(Ordering::Relaxed);
        until != 0 && now_ms < until
    }
}

impl Node for NodeState {
    fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    fn address(&self) -> &Arc<str> {
        &self.address
    }

    fn enter(&self) -> u32 {
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        self.generation.load(Ordering::Relaxed)
    }

    fn leave(&self) {
        self.in_flight.fetch_sub(1, Ordering::Relaxed);
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

impl Router for Balancer {
    fn pick(&self, metadata: &Metadata, tried: &[Arc<str>]) -> Result<InFlight, Status> {
        Balancer::pick(self, metadata, tried)
    }

    fn record(&self, call: &InFlight, status: Option<&Status>) {
        Balancer::record(self, call, status);
    }

    fn may_fail_over(&self, method: &str, status: &Status, attempts: u32) -> bool {
        Balancer::may_fail_over(self, method, status, attempts)
    }

    fn as_any(&self) -> &dyn Any {
        self
    }
}

/// The balancer's own state of the instance a call went to.
fn node_of(call: &InFlight) -> Option<&NodeState> {
    call.node().as_any().downcast_ref::<NodeState>()
}

impl Balancer {
    /// Follows `service` through `watch`: waits for its first list with an instance to call
    /// (up to the connect timeout in all), then keeps following it in a task.
    pub(crate) async fn start(
        service: Arc<str>,
        mut watch: Watch,
        options: BalanceOptions,
        config: Arc<ChannelConfig>,
        plaintext_config: Option<Arc<ChannelConfig>>,
    ) -> Result<Arc<Balancer>, Status> {
        let stop = CancellationToken::new();
        let empty = Snapshot { nodes: Box::new([]), picker: Picker::new(&options.policy, &[]), drained: 0 };
        let balancer = Arc::new(Balancer {
            service: Arc::clone(&service),
            snapshot: ArcSwap::from_pointee(empty),
            options,
            config: Arc::clone(&config),
            plaintext_config,
            epoch: Instant::now(),
            _tasks: stop.clone().drop_guard(),
        });
        let deadline = Instant::now() + config.connect_timeout;
        let mut listed = false;
        while !listed || balancer.snapshot.load().nodes.is_empty() {
            match tokio::time::timeout_at(deadline, watch.next()).await {
                Ok(Some(Ok(update))) => {
                    balancer.apply(&update);
                    listed = true;
                }
                Ok(Some(Err(err))) => {
                    return Err(Status::unavailable(format!("cannot resolve {service}: {err}")));
                }
                Ok(None) => {
                    return Err(Status::unavailable(format!("the registry ended the watch of {service}")));
                }
                Err(_) => {
                    let limit = config.connect_timeout;
                    return Err(Status::unavailable(match balancer.snapshot.load().drained {
                        0 if listed => format!("no instances of {service} registered within {limit:?}"),
                        0 => format!("the registry did not list {service} within {limit:?}"),
                        n => format!(
                            "the {n} instances of {service} registered within {limit:?} have weight 0"
                        ),
                    }));
                }
            }
        }
        tokio::spawn(follow(Arc::downgrade(&balancer), watch, stop.clone()));
        if let Some(interval) = balancer.options.health_check {
            tokio::spawn(check_health(Arc::downgrade(&balancer), interval, stop));
        }
        Ok(balancer)
    }

    /// Installs a new list of instances, keeping the state (and connection) of the addresses
    /// that stay. Instances of weight 0 are left out.
    fn apply(&self, update: &Update) {
        let old = self.snapshot.load();
        let known: HashMap<&str, &Arc<NodeState>> =
            old.nodes.iter().map(|node| (&*node.state.address, &node.state)).collect();
        let nodes: Box<[Listed]> = update
            .instances()
            .iter()
            .filter(|instance| instance.weight() > 0)
            .map(|instance| {
                let config = self.config_for(instance);
                Listed {
                    instance: instance.clone(),
                    // An instance that starts or stops serving TLS needs a connection of the
                    // other kind.
                    state: match known.get(instance.address()) {
                        Some(state) if Arc::ptr_eq(&state.config, config) => Arc::clone(state),
                        _ => Arc::new(NodeState::new(instance.address(), config)),
                    },
                }
            })
            .collect();
        let drained = update.instances().len() - nodes.len();
        let members: Vec<Member<'_>> = nodes
            .iter()
            .map(|node| Member { address: node.instance.address(), weight: node.instance.weight() })
            .collect();
        let picker = Picker::new(&self.options.policy, &members);
        for instance in update.added() {
            tracing::info!(service = %self.service, address = instance.address(), "instance added");
        }
        for instance in update.removed() {
            tracing::info!(service = %self.service, address = instance.address(), "instance removed");
        }
        self.snapshot.store(Arc::new(Snapshot { nodes, picker, drained }));
    }

    /// The connection options for `instance`: with the channel's TLS, unless that applies
    /// only to instances registered as serving TLS and this one is not.
    fn config_for(&self, instance: &Instance) -> &Arc<ChannelConfig> {
        match &self.plaintext_config {
            Some(plaintext) if !instance.serves_tls() => plaintext,
            _ => &self.config,
        }
    }

    /// The instance for a call with `metadata`, other than the addresses `tried`: one in
    /// rotation if there is one (claiming the probe of an instance due for one), else any.
    pub(crate) fn pick(&self, metadata: &Metadata, tried: &[Arc<str>]) -> Result<InFlight, Status> {
        let snapshot = self.snapshot.load();
        let nodes = &snapshot.nodes;
        if nodes.is_empty() {
            let message = match snapshot.drained {
                0 => format!("no instances of {} are registered", self.service),
                n => format!("the {n} instances of {} registered have weight 0", self.service),
            };
            return Err(Status::unavailable(message).refused());
        }
        let key = match &self.options.policy {
            Policy::ConsistentHash { key, .. } => metadata.get(key.as_str()).map(|value| &value[..]),
            _ => None,
        };
        let load = |i: usize| nodes[i].state.in_flight.load(Ordering::Relaxed);
        let untried = |i: usize| tried.is_empty() || !tried.contains(&nodes[i].state.address);
        // Probes lost to another caller: out for this pick.
        let mut lost: Option<Vec<usize>> = None;
        loop {
            let available = |i: usize| {
                untried(i)
                    && lost.as_ref().is_none_or(|lost| !lost.contains(&i))
                    && nodes[i].state.is_available(|| self.now_ms())
            };
            let Some(index) = snapshot.picker.pick(key, &available, &load) else { break };
            let node = &nodes[index].state;
            if self.claim(node) {
                return Ok(InFlight::new(Arc::clone(node) as Arc<dyn Node>));
            }
            lost.get_or_insert_with(Vec::new).push(index);
        }
        // Every instance is out: try them anyway, rather than fail without trying.
        match snapshot.picker.pick(key, &untried, &load) {
            Some(index) => Ok(InFlight::new(Arc::clone(&nodes[index].state) as Arc<dyn Node>)),
            None => Err(Status::unavailable(format!(
                "no instance of {} left to try ({} tried)",
                self.service,
                tried.len()
            ))
            .refused()),
        }
    }

    /// Whether a call may go to `node`, picked as available: always when it is in rotation;
    /// when it is due for a probe, only for the one caller that claims the probe.
    fn claim(&self, node: &NodeState) -> bool {
        let until = node.ejected_until.load(Ordering::Relaxed);
        if until == 0 {
            return true;
        }
        let window = self.now_ms().saturating_add(millis(self.options.ejection));
        node.ejected_until.compare_exchange(until, window, Ordering::Relaxed, Ordering::Relaxed).is_ok()
    }

    /// Whether a call to `method` that failed with `status` may be sent to another instance.
    pub(crate) fn may_fail_over(&self, method: &str, status: &Status, attempts: u32) -> bool {
        attempts < self.options.failover_attempts
            && (status.is_refused()
                || (status.code() == Code::Unavailable && self.options.idempotent.matches(method)))
    }

    /// Records the outcome of a call: `Unavailable` ejects the instance, and so does a
    /// deadline that passed while its connection was not even up (a hung handshake); another
    /// deadline says nothing; anything else shows the instance answers.
    pub(crate) fn record(&self, call: &InFlight, status: Option<&Status>) {
        let Some(node) = node_of(call) else { return };
        match status.map(Status::code) {
            Some(Code::Unavailable) => self.eject(node, call.generation(), status),
            Some(Code::DeadlineExceeded) if !node.endpoint.is_established() => {
                self.eject(node, call.generation(), status);
            }
            Some(Code::DeadlineExceeded) => {}
            _ => self.restore(node, call.generation()),
        }
    }

    /// Ejects `node` after a failure of a call sent in `generation`; failures of calls sent
    /// before its latest ejection change nothing.
    fn eject(&self, node: &NodeState, generation: u32, status: Option<&Status>) {
        if node
            .generation
            .compare_exchange(generation, generation.wrapping_add(1), Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return;
        }
        let failures = node.failures.fetch_add(1, Ordering::Relaxed).saturating_add(1);
        let exponent = failures.saturating_sub(1).min(20);
        let period = self.options.ejection.saturating_mul(1 << exponent).min(self.options.max_ejection);
        let until = self.now_ms().saturating_add(millis(period));
        node.ejected_until.store(until, Ordering::Relaxed);
        tracing::info!(
            service = %self.service,
            address = %node.address,
            ?period,
            failures,
            reason = status.map(Status::message).unwrap_or_default(),
            "instance ejected"
        );
    }

    /// Puts `node` back in rotation after a success of a call sent in `generation` (the
    /// probe, or a call sent since): successes of calls sent before its latest ejection do
    /// not count.
    fn restore(&self, node: &NodeState, generation: u32) {
        // The common case reads one atomic and writes nothing.
        if node.failures.load(Ordering::Relaxed) == 0 || node.generation.load(Ordering::Relaxed) != generation
        {
            return;
        }
        node.failures.store(0, Ordering::Relaxed);
        node.ejected_until.store(0, Ordering::Relaxed);
        tracing::info!(service = %self.service, address = %node.address, "instance back in rotation");
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
                in_flight: node.state.in_flight.load(Ordering::Relaxed),
                ejected: node.state.is_ejected(now),
                serving: node.state.serving.load(Ordering::Relaxed),
            })
            .collect()
    }
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
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
        let checks = snapshot.nodes.iter().map(|node| check_one(&strong, &node.state, interval));
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

/// One health check of one instance, recorded on its state.
async fn check_one(balancer: &Balancer, node: &NodeState, timeout: Duration) {
    // The check counts as a call sent now: its outcome is current.
    let generation = node.generation.load(Ordering::Relaxed);
    let client = HealthClient::new(Channel::on_endpoint(node.endpoint.clone(), Arc::clone(&node.config)));
    let request = HealthCheckRequest { service: balancer.service.to_string() };
    let serving = match client.check(request).timeout(timeout).await {
        Ok(response) => response.status() == ServingStatus::Serving,
        // A server without the health service cannot say; its calls will.
        Err(status) if status.code() == Code::Unimplemented => true,
        Err(status) if status.code() == Code::Unavailable => {
            balancer.eject(node, generation, Some(&status));
            return;
        }
        Err(status) if status.code() == Code::DeadlineExceeded => {
            if !node.endpoint.is_established() {
                balancer.eject(node, generation, Some(&status));
            }
            return;
        }
        Err(_) => false,
    };
    let was = node.serving.swap(serving, Ordering::Relaxed);
    if serving {
        // A check that succeeds is a probe: an ejected instance comes back.
        balancer.restore(node, generation);
    }
    if was != serving {
        tracing::info!(service = %balancer.service, address = %node.address, serving, "health changed");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::{Registry, StaticRegistry};

    const SERVICE: &str = "test.v1.Test";

    /// A balancer over instances at unreachable addresses: nothing here sends a call.
    async fn balancer(addresses: &[&str], options: BalanceOptions) -> Arc<Balancer> {
        let registry = addresses
            .iter()
            .fold(StaticRegistry::new(), |registry, address| registry.with(SERVICE, *address));
        let watch = registry.watch(SERVICE).await.expect("watch");
        Balancer::start(SERVICE.into(), watch, options, Arc::new(ChannelConfig::default()), None)
            .await
            .expect("start")
    }

    fn options(ejection_ms: u64, max_ms: u64) -> BalanceOptions {
        BalanceOptions {
            policy: Policy::RoundRobin,
            ejection: Duration::from_millis(ejection_ms),
            max_ejection: Duration::from_millis(max_ms),
            ..BalanceOptions::default()
        }
    }

    fn unavailable() -> Status {
        Status::unavailable("down")
    }

    fn ejected(balancer: &Balancer) -> Vec<bool> {
        balancer.instances().iter().map(|i| i.ejected).collect()
    }

    fn advance(ms: u64) -> impl Future<Output = ()> {
        tokio::time::advance(Duration::from_millis(ms))
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_doubles_with_each_failed_probe_up_to_the_maximum() {
        let balancer = balancer(&["10.0.0.1:1"], options(100, 350)).await;
        let call = balancer.pick(&Metadata::new(), &[]).expect("pick");
        balancer.record(&call, Some(&unavailable()));
        assert_eq!(ejected(&balancer), [true]);
        advance(100).await;
        assert_eq!(ejected(&balancer), [false], "due for a probe after the first 100 ms");
        for period in [200, 350, 350] {
            // A probe goes out, and fails: a longer period, up to the maximum.
            let probe = balancer.pick(&Metadata::new(), &[]).expect("probe");
            balancer.record(&probe, Some(&unavailable()));
            advance(period - 1).await;
            assert_eq!(ejected(&balancer), [true], "still out just before {period} ms");
            advance(1).await;
            assert_eq!(ejected(&balancer), [false], "due for a probe after {period} ms");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_probe_goes_out_when_an_ejection_ends_and_its_success_ends_it() {
        let balancer = balancer(&["10.0.0.1:1", "10.0.0.2:1"], options(100, 1000)).await;
        let first = balancer.pick(&Metadata::new(), &[]).expect("pick");
        assert_eq!(&**first.node().address(), "10.0.0.1:1");
        balancer.record(&first, Some(&unavailable()));
        let addresses = |n: usize| -> Vec<String> {
            (0..n)
                .map(|_| balancer.pick(&Metadata::new(), &[]).expect("pick").node().address().to_string())
                .collect()
        };
        assert!(addresses(6).iter().all(|a| a == "10.0.0.2:1"), "the ejected instance gets no calls");
        advance(100).await;
        let picks: Vec<InFlight> =
            (0..6).map(|_| balancer.pick(&Metadata::new(), &[]).expect("pick")).collect();
        let probes: Vec<&InFlight> = picks.iter().filter(|p| &**p.node().address() == "10.0.0.1:1").collect();
        assert_eq!(probes.len(), 1, "exactly one probe");
        balancer.record(probes[0], None);
        let after = addresses(6);
        assert_eq!(after.iter().filter(|a| *a == "10.0.0.1:1").count(), 3, "back in rotation: {after:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_of_a_call_sent_before_the_ejection_does_not_end_it() {
        let balancer = balancer(&["10.0.0.1:1"], options(100, 1000)).await;
        let slow = balancer.pick(&Metadata::new(), &[]).expect("pick");
        let failed = balancer.pick(&Metadata::new(), &[]).expect("pick");
        let failed_too = balancer.pick(&Metadata::new(), &[]).expect("pick");
        balancer.record(&failed, Some(&unavailable()));
        // Outcomes of calls sent before the ejection: a failure does not extend it, and a
        // success does not end it.
        balancer.record(&failed_too, Some(&unavailable()));
        balancer.record(&slow, None);
        assert_eq!(ejected(&balancer), [true]);
        advance(100).await;
        assert_eq!(ejected(&balancer), [false], "the first period was not doubled");
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_ejects_only_an_instance_whose_connection_is_not_up() {
        let balancer = balancer(&["10.0.0.1:1"], options(100, 1000)).await;
        let call = balancer.pick(&Metadata::new(), &[]).expect("pick");
        // Never connected: the call never left, the instance is not answering.
        balancer.record(&call, Some(&Status::deadline_exceeded("late")));
        assert_eq!(ejected(&balancer), [true]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_registration_of_an_address_keeps_its_calls_in_flight_and_ejection() {
        let balancer = balancer(&["10.0.0.1:1", "10.0.0.2:1"], options(100, 1000)).await;
        // Round-robin: one call on each.
        let running = balancer.pick(&Metadata::new(), &[]).expect("pick");
        let failed = balancer.pick(&Metadata::new(), &[]).expect("pick");
        balancer.record(&failed, Some(&unavailable()));
        let reweighted = vec![
            Instance::new(SERVICE, "10.0.0.1:1").with_weight(7),
            Instance::new(SERVICE, "10.0.0.2:1").with_weight(3),
        ];
        let previous: Vec<Instance> = balancer.instances().into_iter().map(|i| i.instance).collect();
        balancer.apply(&Update::between(&previous, reweighted));
        let states = balancer.instances();
        assert_eq!(states.iter().map(|s| s.instance.weight()).collect::<Vec<_>>(), [7, 3]);
        assert_eq!(states.iter().map(|s| s.in_flight).collect::<Vec<_>>(), [1, 1], "{states:?}");
        assert_eq!(states.iter().map(|s| s.ejected).collect::<Vec<_>>(), [false, true]);
        drop((running, failed));
        assert!(balancer.instances().iter().all(|s| s.in_flight == 0));
    }
}
