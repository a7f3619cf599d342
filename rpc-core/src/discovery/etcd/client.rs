//! The few etcd v3 calls the registry makes, over the gRPC client generated from etcd's own
//! `.proto` files (see `pb`), with etcd's user/password authentication.
//!
//! Connections follow etcd's own clients: one balanced gRPC channel over every endpoint,
//! made on first use and remade whenever it drops, with HTTP/2 keep-alive so that a dead
//! etcd is noticed even on an idle connection. An expired or invalid auth token is renewed
//! once, transparently, and the call made again.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request, Status, Streaming};

use super::pb::etcdserverpb::auth_client::AuthClient;
use super::pb::etcdserverpb::compare::{CompareResult, CompareTarget, TargetUnion};
use super::pb::etcdserverpb::kv_client::KvClient;
use super::pb::etcdserverpb::lease_client::LeaseClient;
use super::pb::etcdserverpb::request_op::Request as Op;
use super::pb::etcdserverpb::watch_client::WatchClient;
use super::pb::etcdserverpb::watch_request::RequestUnion;
use super::pb::etcdserverpb::{
    AuthenticateRequest, Compare, DeleteRangeRequest, LeaseGrantRequest, LeaseKeepAliveRequest,
    LeaseKeepAliveResponse, LeaseRevokeRequest, LeaseTimeToLiveRequest, PutRequest, RangeRequest,
    RangeResponse, RequestOp, TxnRequest, WatchCreateRequest, WatchRequest, WatchResponse,
};
use crate::discovery::RegistryError;

/// The metadata key under which etcd expects the auth token.
const TOKEN_HEADER: &str = "token";

/// How often HTTP/2 pings an etcd connection, idle or not, and how long it waits for the
/// answer before it gives the connection up.
const KEEP_ALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(5);

/// How many requests a keep-alive or watch stream buffers before `send` waits.
const STREAM_BUFFER: usize = 16;

/// A cheaply cloned handle on an etcd cluster.
#[derive(Clone)]
pub(super) struct EtcdClient {
    channel: Channel,
    auth: Option<Arc<Auth>>,
}

/// A user's credentials and the token they were last exchanged for.
struct Auth {
    user: String,
    password: String,
    token: Mutex<Option<MetadataValue<Ascii>>>,
    /// Held while authenticating, so that calls which all meet an expired token renew it once.
    renewing: tokio::sync::Mutex<()>,
}

impl EtcdClient {
    /// A client of the cluster at `endpoints` (`http://host:port`, or `host:port`). Without a
    /// user nothing is sent until the first call; with one, the user is authenticated now.
    pub(super) async fn connect(
        endpoints: &[String],
        connect_timeout: Duration,
        user: Option<(String, String)>,
    ) -> Result<EtcdClient, RegistryError> {
        if endpoints.is_empty() {
            return Err(RegistryError::Invalid("no etcd endpoint given".into()));
        }
        let mut list = Vec::with_capacity(endpoints.len());
        for url in endpoints {
            list.push(endpoint(url)?.connect_timeout(connect_timeout));
        }
        let channel = Channel::balance_list(list.into_iter());
        let auth = user.map(|(user, password)| {
            Arc::new(Auth { user, password, token: Mutex::new(None), renewing: tokio::sync::Mutex::new(()) })
        });
        let client = EtcdClient { channel, auth };
        if let Some(auth) = &client.auth {
            client.authenticate(auth, None).await?;
        }
        Ok(client)
    }

    /// Exchanges the credentials for a token, unless another call already replaced `stale`.
    async fn authenticate(
        &self,
        auth: &Auth,
        stale: Option<&MetadataValue<Ascii>>,
    ) -> Result<(), RegistryError> {
        let _renewing = auth.renewing.lock().await;
        if stale.is_some() && current_token(auth).as_ref() != stale {
            return Ok(());
        }
        let request = AuthenticateRequest { name: auth.user.clone(), password: auth.password.clone() };
        let response = AuthClient::new(self.channel.clone())
            .authenticate(request)
            .await
            .map_err(unavailable)?
            .into_inner();
        let token = MetadataValue::try_from(response.token)
            .map_err(|_| RegistryError::Unavailable("etcd: the auth token is not valid metadata".into()))?;
        *auth.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(token);
        Ok(())
    }

    /// Makes a call with the current token; if etcd says the token is no longer good,
    /// authenticates again and makes the call once more.
    async fn call<T, F, Fut>(&self, call: F) -> Result<T, RegistryError>
    where
        F: Fn(Channel, Option<MetadataValue<Ascii>>) -> Fut,
        Fut: Future<Output = Result<T, Status>>,
    {
        let token = self.auth.as_deref().and_then(current_token);
        match call(self.channel.clone(), token.clone()).await {
            Err(status) if status.code() == Code::Unauthenticated && self.auth.is_some() => {
                if let Some(auth) = &self.auth {
                    tracing::debug!(
                        message = status.message(),
                        "etcd refused the auth token; authenticating again"
                    );
                    self.authenticate(auth, token.as_ref()).await?;
                }
                let token = self.auth.as_deref().and_then(current_token);
                call(self.channel.clone(), token).await.map_err(unavailable)
            }
            outcome => outcome.map_err(unavailable),
        }
    }

    /// Grants a lease of `ttl` seconds; returns its id.
    pub(super) async fn lease_grant(&self, ttl: i64) -> Result<i64, RegistryError> {
        let grant = LeaseGrantRequest { ttl, id: 0 };
        self.call(|channel, token| {
            let request = with_token(grant, token);
            async move { LeaseClient::new(channel).lease_grant(request).await }
        })
        .await
        .map(|response| response.into_inner().id)
    }

    /// The seconds lease `lease` has left: 0 or less when etcd no longer has it.
    pub(super) async fn lease_time_to_live(&self, lease: i64) -> Result<i64, RegistryError> {
        let ask = LeaseTimeToLiveRequest { id: lease, keys: false };
        self.call(|channel, token| {
            let request = with_token(ask, token);
            async move { LeaseClient::new(channel).lease_time_to_live(request).await }
        })
        .await
        .map(|response| response.into_inner().ttl)
    }

    /// Revokes `lease`, deleting the keys attached to it.
    pub(super) async fn lease_revoke(&self, lease: i64) -> Result<(), RegistryError> {
        let revoke = LeaseRevokeRequest { id: lease };
        self.call(|channel, token| {
            let request = with_token(revoke, token);
            async move { LeaseClient::new(channel).lease_revoke(request).await }
        })
        .await
        .map(drop)
    }

    /// Opens a keep-alive stream for `lease`, with one renewal already sent.
    pub(super) async fn lease_keep_alive(&self, lease: i64) -> Result<KeepAlive, RegistryError> {
        self.call(|channel, token| {
            let (requests, receiver) = mpsc::channel(STREAM_BUFFER);
            let first = requests.try_send(LeaseKeepAliveRequest { id: lease });
            debug_assert!(first.is_ok(), "a new channel has room");
            let request = with_token(receiver_stream(receiver), token);
            async move {
                let responses = LeaseClient::new(channel).lease_keep_alive(request).await?.into_inner();
                Ok(KeepAlive { lease, requests, responses })
            }
        })
        .await
    }

    /// Writes `key` = `value`, attached to `lease` (0: none).
    pub(super) async fn put(&self, key: &[u8], value: &[u8], lease: i64) -> Result<(), RegistryError> {
        let put = PutRequest { key: key.to_vec(), value: value.to_vec(), lease, ..PutRequest::default() };
        self.call(|channel, token| {
            let request = with_token(put.clone(), token);
            async move { KvClient::new(channel).put(request).await }
        })
        .await
        .map(drop)
    }

    /// Reads `key`.
    pub(super) async fn get(&self, key: &[u8]) -> Result<RangeResponse, RegistryError> {
        self.range(RangeRequest { key: key.to_vec(), ..RangeRequest::default() }).await
    }

    /// Reads every key that starts with `prefix`.
    pub(super) async fn get_prefix(&self, prefix: &[u8]) -> Result<RangeResponse, RegistryError> {
        self.range(RangeRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            ..RangeRequest::default()
        })
        .await
    }

    async fn range(&self, range: RangeRequest) -> Result<RangeResponse, RegistryError> {
        self.call(|channel, token| {
            let request = with_token(range.clone(), token);
            async move { KvClient::new(channel).range(request).await }
        })
        .await
        .map(tonic::Response::into_inner)
    }

    /// Deletes `key` if, and only if, it is attached to `lease`, in one transaction.
    pub(super) async fn delete_if_leased_by(&self, key: &[u8], lease: i64) -> Result<(), RegistryError> {
        let txn = TxnRequest {
            compare: vec![Compare {
                result: CompareResult::Equal.into(),
                target: CompareTarget::Lease.into(),
                key: key.to_vec(),
                range_end: Vec::new(),
                target_union: Some(TargetUnion::Lease(lease)),
            }],
            success: vec![RequestOp {
                request: Some(Op::RequestDeleteRange(DeleteRangeRequest {
                    key: key.to_vec(),
                    ..DeleteRangeRequest::default()
                })),
            }],
            failure: Vec::new(),
        };
        self.call(|channel, token| {
            let request = with_token(txn.clone(), token);
            async move { KvClient::new(channel).txn(request).await }
        })
        .await
        .map(drop)
    }

    /// Watches every key that starts with `prefix`, from `start_revision` on.
    pub(super) async fn watch_prefix(
        &self,
        prefix: &[u8],
        start_revision: i64,
    ) -> Result<Watching, RegistryError> {
        let create = WatchCreateRequest {
            key: prefix.to_vec(),
            range_end: prefix_end(prefix),
            start_revision,
            ..WatchCreateRequest::default()
        };
        self.call(|channel, token| {
            let (requests, receiver) = mpsc::channel(STREAM_BUFFER);
            let first = requests
                .try_send(WatchRequest { request_union: Some(RequestUnion::CreateRequest(create.clone())) });
            debug_assert!(first.is_ok(), "a new channel has room");
            let request = with_token(receiver_stream(receiver), token);
            async move {
                let responses = WatchClient::new(channel).watch(request).await?.into_inner();
                Ok(Watching { _requests: requests, responses })
            }
        })
        .await
    }
}

/// An open keep-alive stream for one lease.
pub(super) struct KeepAlive {
    lease: i64,
    requests: mpsc::Sender<LeaseKeepAliveRequest>,
    responses: Streaming<LeaseKeepAliveResponse>,
}

impl KeepAlive {
    /// Asks etcd to renew the lease.
    pub(super) async fn keep_alive(&mut self) -> Result<(), RegistryError> {
        self.requests
            .send(LeaseKeepAliveRequest { id: self.lease })
            .await
            .map_err(|_| RegistryError::Unavailable("etcd: the keep-alive stream is closed".into()))
    }

    /// The next answer: the lease's remaining TTL (0 or less: etcd no longer has it), or
    /// `None` if etcd ended the stream.
    pub(super) async fn message(&mut self) -> Result<Option<i64>, RegistryError> {
        self.responses.message().await.map(|response| response.map(|r| r.ttl)).map_err(unavailable)
    }
}

/// An open watch. Dropping it ends the watch.
pub(super) struct Watching {
    /// Kept open for as long as the watch: closing it would end the stream.
    _requests: mpsc::Sender<WatchRequest>,
    responses: Streaming<WatchResponse>,
}

impl Watching {
    /// The next batch of events, or `None` if etcd ended the stream.
    pub(super) async fn message(&mut self) -> Result<Option<WatchResponse>, RegistryError> {
        self.responses.message().await.map_err(unavailable)
    }
}

/// The gRPC endpoint for `url`: `http://host:port`, or a bare `host:port` (plain HTTP/2).
fn endpoint(url: &str) -> Result<Endpoint, RegistryError> {
    let invalid = |why: String| RegistryError::Invalid(format!("etcd endpoint {url:?}: {why}"));
    if url.starts_with("https://") {
        return Err(invalid("TLS to etcd is not supported; use an http:// endpoint".into()));
    }
    let url = if url.starts_with("http://") { url.to_owned() } else { format!("http://{url}") };
    Ok(Endpoint::from_shared(url)
        .map_err(|err| invalid(err.to_string()))?
        .http2_keep_alive_interval(KEEP_ALIVE_INTERVAL)
        .keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// The end of the range of keys that start with `prefix` (etcd's convention: the prefix with
/// its last byte below 0xff incremented; `\0`, "to the end", when every byte is 0xff).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn current_token(auth: &Auth) -> Option<MetadataValue<Ascii>> {
    auth.token.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
}

fn with_token<T>(message: T, token: Option<MetadataValue<Ascii>>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(token) = token {
        request.metadata_mut().insert(TOKEN_HEADER, token);
    }
    request
}

/// The receiving half of a channel as the request stream of a streaming call.
fn receiver_stream<T: Send + 'static>(
    mut receiver: mpsc::Receiver<T>,
) -> impl futures_util::Stream<Item = T> + Send + 'static {
    futures_util::stream::poll_fn(move |cx| receiver.poll_recv(cx))
}

fn unavailable(status: Status) -> RegistryError {
    RegistryError::Unavailable(format!("etcd: {}: {}", status.code(), status.message()))
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn a_prefix_range_ends_after_the_last_byte_that_can_grow() {
        assert_eq!(prefix_end(b"/rpc/a/"), b"/rpc/a0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }
}
