//! The etcd registry (feature `etcd`); its key layout is documented on [`EtcdRegistry`].

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use self::client::EtcdClient;
use self::pb::mvccpb::event::EventType;
use super::{Instance, Lease, LeaseKeeper, Registry, RegistryError, Watch};
use crate::backoff::Backoff;
use futures_util::future::BoxFuture;

mod client;
mod pb;

/// The first delay before reconnecting to etcd; it doubles up to [`MAX_RETRY_DELAY`].
const FIRST_RETRY_DELAY: Duration = Duration::from_millis(100);

/// The longest delay between two attempts to reach etcd again.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(2);

/// How long deregistration waits for etcd on shutdown.
const REVOKE_TIMEOUT: Duration = Duration::from_secs(3);

/// Options for an [`EtcdRegistry`].
#[derive(Debug, Clone)]
pub struct EtcdOptions {
    prefix: String,
    ttl: Duration,
    connect_timeout: Duration,
    user: Option<(String, String)>,
}

impl EtcdOptions {
    /// The default key prefix.
    pub const DEFAULT_PREFIX: &'static str = "/rpc/services";
    /// The default TTL of a registration: how long an instance whose process died stays
    /// listed.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(10);
    /// The shortest TTL (etcd's leases count in whole seconds).
    pub const MIN_TTL: Duration = Duration::from_secs(1);
    /// The default time allowed to connect to etcd.
    pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

    /// The defaults.
    pub fn new() -> EtcdOptions {
        EtcdOptions {
            prefix: EtcdOptions::DEFAULT_PREFIX.to_owned(),
            ttl: EtcdOptions::DEFAULT_TTL,
            connect_timeout: EtcdOptions::DEFAULT_CONNECT_TIMEOUT,
            user: None,
        }
    }

    /// The prefix of every key (default [`DEFAULT_PREFIX`](EtcdOptions::DEFAULT_PREFIX)); a
    /// trailing `/` is dropped.
    pub fn prefix(mut self, prefix: impl Into<String>) -> EtcdOptions {
        self.prefix = prefix.into().trim_end_matches('/').to_owned();
        self
    }

    /// The TTL of registrations, rounded up to whole seconds (default
    /// [`DEFAULT_TTL`](EtcdOptions::DEFAULT_TTL), at least [`MIN_TTL`](EtcdOptions::MIN_TTL)).
    /// The lease is renewed every third of it.
    pub fn ttl(mut self, ttl: Duration) -> EtcdOptions {
        self.ttl = ttl.max(EtcdOptions::MIN_TTL);
        self
    }

    /// The time allowed to connect to etcd (default 5 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> EtcdOptions {
        self.connect_timeout = timeout;
        self
    }

    /// Authenticates to etcd as `name`.
    pub fn user(mut self, name: impl Into<String>, password: impl Into<String>) -> EtcdOptions {
        self.user = Some((name.into(), password.into()));
        self
    }

    fn ttl_seconds(&self) -> i64 {
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        i64::try_from(secs).unwrap_or(i64::MAX)
    }
}

impl Default for EtcdOptions {
    fn default() -> Self {
        EtcdOptions::new()
    }
}

/// A registry kept in [etcd](https://etcd.io).
///
/// Key layout: one key per instance, `{prefix}/{service}/{address}` (the default prefix is
/// [`EtcdOptions::DEFAULT_PREFIX`], so `/rpc/services/acme.users.v1.Users/10.0.0.7:50051`),
/// whose value is the instance as JSON:
///
/// ```json
/// {"service":"acme.users.v1.Users","address":"10.0.0.7:50051","weight":100,"version":"1.4.2","tags":{"zone":"a"}}
/// ```
///
/// and which is attached to an etcd lease of the registry's TTL, kept alive by the
/// registering process: if the process dies, etcd deletes the key when the lease expires.
/// Anything that can write such keys (a deploy tool, a sidecar, another language) can
/// register instances: unknown JSON fields are ignored, `service` and `address` may be left
/// out (they are taken from the key), and so may `weight` (100), `version` and `tags`.
///
/// - A registration is a key attached to a lease of the TTL, renewed every third of it. If
///   etcd becomes unreachable the renewal retries with backoff; if the lease was lost
///   meanwhile (etcd restarted without its data, or the outage outlasted the TTL), the
///   instance is registered again as soon as etcd answers.
/// - A watch lists the service's keys, then follows a prefix watch from the revision of that
///   list. After a disconnect it resumes from the last revision it saw; if etcd compacted
///   that history, or was replaced by a store with an older history, it lists the keys
///   again, so watchers always end up with the true list.
///
/// ```no_run
/// use rpc_core::discovery::{EtcdOptions, EtcdRegistry};
///
/// # async fn run() -> Result<(), rpc_core::discovery::RegistryError> {
/// let registry = EtcdRegistry::connect(["http://127.0.0.1:2379"], EtcdOptions::new()).await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct EtcdRegistry {
    client: EtcdClient,
    options: Arc<EtcdOptions>,
}

impl fmt::Debug for EtcdRegistry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdRegistry").field("options", &self.options).finish_non_exhaustive()
    }
}

impl EtcdRegistry {
    /// A registry on the etcd cluster at `endpoints` (such as `http://127.0.0.1:2379`). The
    /// connection is made on first use, and remade whenever it drops.
    pub async fn connect(
        endpoints: impl IntoIterator<Item = impl AsRef<str>>,
        options: EtcdOptions,
    ) -> Result<EtcdRegistry, RegistryError> {
        let endpoints: Vec<String> = endpoints.into_iter().map(|e| e.as_ref().to_owned()).collect();
        let client = EtcdClient::connect(&endpoints, options.connect_timeout, options.user.clone()).await?;
        Ok(EtcdRegistry { client, options: Arc::new(options) })
    }

    /// The options the registry runs with.
    pub fn options(&self) -> &EtcdOptions {
        &self.options
    }

    /// The key prefix under which a service's instances are kept, ending in `/`.
    fn service_prefix(&self, service: &str) -> String {
        format!("{}/{}/", self.options.prefix, service)
    }
}

impl Registry for EtcdRegistry {
    async fn register(&self, instance: Instance) -> Result<Lease, RegistryError> {
        instance.validate()?;
        let registration = Arc::new(Registration {
            key: format!("{}{}", self.service_prefix(instance.service()), instance.address()),
            value: serde_json::to_vec(&instance)
                .map_err(|err| RegistryError::Invalid(format!("instance does not serialize: {err}")))?,
            ttl: self.options.ttl_seconds(),
        });
        let client = self.client.clone();
        let lease = registration.put(&client).await?;
        let current = Arc::new(AtomicI64::new(lease));
        let stop = CancellationToken::new();
        tokio::spawn(keep_alive(
            client.clone(),
            Arc::clone(&registration),
            Arc::clone(&current),
            stop.clone(),
        ));
        tracing::debug!(key = %registration.key, lease, "registered in etcd");
        Ok(Lease::new(instance, EtcdLease { client, registration, current, stop }))
    }

    async fn discover(&self, service: &str) -> Result<Vec<Instance>, RegistryError> {
        let (instances, _) = list(&self.client, &self.service_prefix(service)).await?;
        Ok(instances.into_values().collect())
    }

    async fn watch(&self, service: &str) -> Result<Watch, RegistryError> {
        let prefix = self.service_prefix(service);
        let client = self.client.clone();
        // The first list is fetched here, so that an unreachable etcd fails the call.
        let (instances, revision) = list(&client, &prefix).await?;
        let (tx, mut rx) = mpsc::channel(16);
        let _ = tx.send(Ok(instances.values().cloned().collect())).await;
        tokio::spawn(follow(client, prefix, instances, revision, tx));
        let snapshots = futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx));
        Ok(Watch::from_snapshots(snapshots))
    }
}

/// One registration's key, value and lease TTL.
struct Registration {
    key: String,
    value: Vec<u8>,
    ttl: i64,
}

impl Registration {
    /// Grants a lease and writes the key under it; returns the lease.
    async fn put(&self, client: &EtcdClient) -> Result<i64, RegistryError> {
        let lease = client.lease_grant(self.ttl).await?;
        client.put(self.key.as_bytes(), &self.value, lease).await?;
        Ok(lease)
    }
}

/// Keeps a registration alive until `stop`: renews its lease every third of the TTL,
/// reconnects after errors, and registers again if the lease was lost.
async fn keep_alive(
    client: EtcdClient,
    registration: Arc<Registration>,
    current: Arc<AtomicI64>,
    stop: CancellationToken,
) {
    let period = Duration::from_secs(u64::try_from(registration.ttl).unwrap_or(1)) / 3;
    let backoff = Backoff::doubling(FIRST_RETRY_DELAY, MAX_RETRY_DELAY, 0.0);
    let mut failures = 1;
    loop {
        let outcome = tokio::select! {
            () = stop.cancelled() => return,
            outcome = renew(&client, &registration, &current, period) => outcome,
        };
        match outcome {
            Renewal::LeaseLost => {
                tracing::warn!(key = %registration.key, "etcd lost the registration's lease; registering again");
                match tokio::select! {
                    () = stop.cancelled() => return,
                    put = registration.put(&client) => put,
                } {
                    Ok(lease) => {
                        current.store(lease, Ordering::Release);
                        tracing::info!(key = %registration.key, lease, "registered in etcd again");
                        failures = 1;
                        continue;
                    }
                    Err(err) => tracing::warn!(key = %registration.key, %err, "cannot register again yet"),
                }
            }
            Renewal::Failed(err) => {
                tracing::warn!(key = %registration.key, %err, "cannot renew the registration's lease; retrying");
            }
        }
        tokio::select! {
            () = stop.cancelled() => return,
            () = tokio::time::sleep(backoff.delay(failures)) => {}
        }
        failures += 1;
    }
}

/// Why renewing a lease stopped.
enum Renewal {
    /// etcd no longer has the lease (and so no longer has the key).
    LeaseLost,
    /// etcd could not be reached, or the stream broke.
    Failed(RegistryError),
}

/// Renews the current lease every `period` until something goes wrong.
async fn renew(
    client: &EtcdClient,
    registration: &Registration,
    current: &AtomicI64,
    period: Duration,
) -> Renewal {
    let lease = current.load(Ordering::Acquire);
    let mut keeper = match client.lease_keep_alive(lease).await {
        Ok(keeper) => keeper,
        Err(err) => {
            // Opening the stream fails both when etcd is unreachable and when the lease is
            // gone: ask which.
            return match client.lease_time_to_live(lease).await {
                Ok(ttl) if ttl <= 0 => Renewal::LeaseLost,
                _ => Renewal::Failed(err),
            };
        }
    };
    loop {
        if let Err(err) = keeper.keep_alive().await {
            return Renewal::Failed(err);
        }
        match tokio::time::timeout(period.max(Duration::from_millis(300)), keeper.message()).await {
            Ok(Ok(Some(ttl))) if ttl > 0 => {}
            Ok(Ok(Some(_))) => return Renewal::LeaseLost,
            Ok(Ok(None)) => {
                return Renewal::Failed(RegistryError::Unavailable("keep-alive stream ended".into()));
            }
            Ok(Err(err)) => return Renewal::Failed(err),
            Err(_) => {
                return Renewal::Failed(RegistryError::Unavailable("keep-alive went unanswered".into()));
            }
        }
        tracing::trace!(key = %registration.key, lease, "lease renewed");
        // The lease lives, but the key may not (someone deleted it): write it back, unless
        // another registration of the same address now owns it.
        match client.get(registration.key.as_bytes()).await {
            Ok(found) if found.kvs.is_empty() => {
                tracing::warn!(key = %registration.key, "the registration's key was deleted; writing it back");
                if let Err(err) = client.put(registration.key.as_bytes(), &registration.value, lease).await {
                    return Renewal::Failed(err);
                }
            }
            Ok(_) => {}
            Err(err) => return Renewal::Failed(err),
        }
        tokio::time::sleep(period).await;
    }
}

/// What a [`Lease`] from an [`EtcdRegistry`] holds.
struct EtcdLease {
    client: EtcdClient,
    registration: Arc<Registration>,
    current: Arc<AtomicI64>,
    stop: CancellationToken,
}

impl LeaseKeeper for EtcdLease {
    fn revoke(self: Box<Self>) -> BoxFuture<'static, Result<(), RegistryError>> {
        self.stop.cancel();
        Box::pin(async move {
            let EtcdLease { client, registration, current, .. } = *self;
            let revoking = async {
                // Revoking the lease deletes the key with it. The key is also deleted if it is
                // still under this lease (covering a lease etcd had lost), but not if another
                // registration of the same address has taken it over since.
                let lease = current.load(Ordering::Acquire);
                let revoked = client.lease_revoke(lease).await;
                let deleted = client.delete_if_leased_by(registration.key.as_bytes(), lease).await;
                match (revoked, deleted) {
                    (_, Ok(())) | (Ok(()), _) => Ok(()),
                    (Err(err), Err(_)) => Err(err),
                }
            };
            match tokio::time::timeout(REVOKE_TIMEOUT, revoking).await {
                Ok(result) => result,
                Err(_) => Err(RegistryError::Unavailable("etcd did not answer the deregistration".into())),
            }
        })
    }
}

/// The instances under `prefix` by key, and the store's revision when they were read.
async fn list(client: &EtcdClient, prefix: &str) -> Result<(BTreeMap<String, Instance>, i64), RegistryError> {
    let response = client.get_prefix(prefix.as_bytes()).await?;
    let revision = response.header.map_or(0, |h| h.revision);
    let mut instances = BTreeMap::new();
    for kv in &response.kvs {
        if let Some((key, instance)) = parse(&kv.key, &kv.value, prefix) {
            instances.insert(key, instance);
        }
    }
    Ok((instances, revision))
}

/// An instance from a key under `prefix` (`{base}/{service}/`) and its value. A value that
/// leaves out the service or the address gets them from the key, and one without a weight
/// gets the default; a value that is not an instance is skipped, with a warning.
fn parse(key: &[u8], value: &[u8], prefix: &str) -> Option<(String, Instance)> {
    let key = String::from_utf8_lossy(key).into_owned();
    let mut instance = match serde_json::from_slice::<Instance>(value) {
        Ok(instance) => instance,
        Err(err) => {
            tracing::warn!(%key, %err, "skipping an etcd key that does not hold an instance");
            return None;
        }
    };
    if instance.service.is_empty() {
        instance.service = prefix.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_owned();
    }
    if instance.address.is_empty() {
        instance.address = key.strip_prefix(prefix).unwrap_or_default().to_owned();
    }
    match instance.validate() {
        Ok(()) => Some((key, instance)),
        Err(err) => {
            tracing::warn!(%key, %err, "skipping an etcd key that does not hold a valid instance");
            None
        }
    }
}

/// Follows the keys under `prefix` from `revision`, sending the full list to `tx` after each
/// change, until the watcher goes away.
async fn follow(
    client: EtcdClient,
    prefix: String,
    mut instances: BTreeMap<String, Instance>,
    mut revision: i64,
    tx: mpsc::Sender<Result<Vec<Instance>, RegistryError>>,
) {
    let backoff = Backoff::doubling(FIRST_RETRY_DELAY, MAX_RETRY_DELAY, 0.0);
    let mut failures = 1;
    loop {
        let opened = tokio::select! {
            () = tx.closed() => return,
            opened = client.watch_prefix(prefix.as_bytes(), revision + 1) => opened,
        };
        match opened {
            Ok(mut stream) => loop {
                let message = tokio::select! {
                    () = tx.closed() => return,
                    message = stream.message() => message,
                };
                let response = match message {
                    Ok(Some(response)) => response,
                    Ok(None) => {
                        tracing::warn!(%prefix, "etcd watch ended; resuming");
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(%prefix, %err, "etcd watch broke; resuming");
                        break;
                    }
                };
                failures = 1;
                let store = response.header.as_ref().map_or(revision, |h| h.revision);
                let behind = response.created && store < revision;
                if response.canceled || behind {
                    // The history we would resume from is gone (compacted), or this is not the
                    // store we were following (it was replaced by one with less history):
                    // start over from a fresh list.
                    tracing::warn!(%prefix, revision, store, "etcd watch cannot resume; listing again");
                    match list(&client, &prefix).await {
                        Ok((fresh, at)) => {
                            instances = fresh;
                            revision = at;
                            if tx.send(Ok(instances.values().cloned().collect())).await.is_err() {
                                return;
                            }
                        }
                        Err(err) => tracing::warn!(%prefix, %err, "cannot list instances"),
                    }
                    break;
                }
                let mut changed = false;
                for event in &response.events {
                    let Some(kv) = &event.kv else { continue };
                    revision = revision.max(kv.mod_revision);
                    let key = String::from_utf8_lossy(&kv.key).into_owned();
                    match event.r#type() {
                        EventType::Put => {
                            if let Some((key, instance)) = parse(&kv.key, &kv.value, &prefix) {
                                changed |=
                                    instances.insert(key, instance.clone()).as_ref() != Some(&instance);
                            }
                        }
                        EventType::Delete => changed |= instances.remove(&key).is_some(),
                    }
                }
                if changed && tx.send(Ok(instances.values().cloned().collect())).await.is_err() {
                    return;
                }
            },
            Err(err) => tracing::warn!(%prefix, %err, "cannot watch etcd; retrying"),
        }
        tokio::select! {
            () = tx.closed() => return,
            () = tokio::time::sleep(backoff.delay(failures)) => {}
        }
        failures += 1;
    }
}
