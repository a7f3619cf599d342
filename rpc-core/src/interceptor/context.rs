//! [`ServerContext`]: what a handler knows about the call it is serving.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::extensions::Extensions;
use crate::metadata::Metadata;
use crate::method::MethodKind;
use crate::transport::{PeerAddr, TlsInfo};

/// The call a handler is serving: who called, which method, the caller's metadata and
/// deadline, and the metadata to send back.
///
/// Every service method receives it as `ctx: &mut ServerContext`:
///
/// ```
/// use rpc_core::{ServerContext, Status};
/// # #[derive(Clone, PartialEq, prost::Message)] pub struct Req {}
/// # #[derive(Clone, PartialEq, prost::Message)] pub struct Reply {}
///
/// async fn handler(ctx: &mut ServerContext, _req: Req) -> Result<Reply, Status> {
///     let user = ctx.metadata().get_str("x-user").unwrap_or("anonymous").to_owned();
///     if let Some(left) = ctx.remaining() {
///         tracing::debug!(?left, %user, "time left for this call");
///     }
///     ctx.response_metadata_mut().insert("x-served-by", "replica-1");
///     Ok(Reply {})
/// }
/// ```
#[derive(Debug)]
pub struct ServerContext {
    method: &'static str,
    kind: MethodKind,
    peer: PeerAddr,
    tls: Option<Arc<TlsInfo>>,
    metadata: Metadata,
    deadline: Option<tokio::time::Instant>,
    response_metadata: Metadata,
    extensions: Extensions,
}

impl ServerContext {
    pub(crate) fn new(
        method: &'static str,
        kind: MethodKind,
        peer: PeerAddr,
        tls: Option<Arc<TlsInfo>>,
        metadata: Metadata,
        deadline: Option<tokio::time::Instant>,
    ) -> ServerContext {
        ServerContext {
            method,
            kind,
            peer,
            tls,
            metadata,
            deadline,
            response_metadata: Metadata::new(),
            extensions: Extensions::new(),
        }
    }

    /// A context for a call that reaches a [`ServerChain`](super::ServerChain) other than
    /// through a server of this crate (an HTTP request at a gateway, say), to run the chain
    /// around it with [`ServerChain::run`](super::ServerChain::run). `method` is the full
    /// name, `/package.Service/Method`. Such a context has no [TLS information](ServerContext::tls).
    pub fn from_parts(
        method: &'static str,
        kind: MethodKind,
        peer: PeerAddr,
        metadata: Metadata,
        deadline: Option<Instant>,
    ) -> ServerContext {
        ServerContext::new(method, kind, peer, None, metadata, deadline.map(tokio::time::Instant::from_std))
    }

    /// Moves the context out for the handler, leaving a shell with the call's identity
    /// (method, kind, peer, deadline) for the interceptors to see if the handler never gives
    /// it back (it panicked, or its deadline passed).
    pub(crate) fn lend(&mut self) -> ServerContext {
        let shell = ServerContext::new(
            self.method,
            self.kind,
            self.peer.clone(),
            self.tls.clone(),
            Metadata::new(),
            self.deadline,
        );
        std::mem::replace(self, shell)
    }

    /// The full method name, e.g. `/helloworld.Greeter/SayHello`.
    pub fn method(&self) -> &'static str {
        self.method
    }

    /// The call's shape: unary, or which way it streams.
    pub fn kind(&self) -> MethodKind {
        self.kind
    }

    /// Values attached to the call, for example by an interceptor (an authenticated caller's
    /// claims) for the handler.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The call's attached values, to change.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// Who called: a TCP address, a Unix socket, or an in-memory pipe.
    pub fn peer(&self) -> &PeerAddr {
        &self.peer
    }

    /// What the TLS handshake established about the caller (its certificate chain, under
    /// mutual TLS), when the server serves TLS; `None` on a plaintext connection.
    ///
    /// ```
    /// # use rpc_core::{ServerContext, Status};
    /// fn caller_certificate(ctx: &ServerContext) -> Result<&[u8], Status> {
    ///     let tls = ctx.tls().ok_or_else(|| Status::unauthenticated("TLS required"))?;
    ///     tls.peer_certificates().first().map(|der| &der[..])
    ///         .ok_or_else(|| Status::unauthenticated("a client certificate is required"))
    /// }
    /// ```
    pub fn tls(&self) -> Option<&TlsInfo> {
        self.tls.as_deref()
    }

    /// The caller's socket address, when it called over TCP.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        self.peer.socket_addr()
    }

    /// The metadata the caller sent.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The caller's metadata, to change (for example in an interceptor).
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// When the caller stops waiting, if it set a timeout. The server abandons the handler
    /// at this instant and answers `DeadlineExceeded`.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.map(tokio::time::Instant::into_std)
    }

    /// The time left before the deadline; zero once it has passed, `None` without one.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    /// Makes `deadline` the call's deadline, unless it already has an earlier one (the
    /// caller stops waiting then): for an interceptor that bounds how long handlers run.
    /// The interceptors after it and the handler see it, and the handler is stopped there.
    pub fn shorten_deadline(&mut self, deadline: Instant) {
        let deadline = tokio::time::Instant::from_std(deadline);
        self.deadline = Some(self.deadline.map_or(deadline, |current| current.min(deadline)));
    }

    /// Metadata sent back with the response, whether it succeeds or fails.
    pub fn response_metadata_mut(&mut self) -> &mut Metadata {
        &mut self.response_metadata
    }

    /// The metadata to be sent back with the response.
    pub fn response_metadata(&self) -> &Metadata {
        &self.response_metadata
    }

    pub(crate) fn deadline_instant(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    pub(crate) fn take_response_metadata(&mut self) -> Metadata {
        std::mem::take(&mut self.response_metadata)
    }
}
