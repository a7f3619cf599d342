//! Client-side interceptors: around every call made through a channel.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::{AnyMessage, Run};
use crate::extensions::Extensions;
use crate::metadata::Metadata;
use crate::method::{MethodKind, MethodName};
use crate::status::Status;

/// What a client interceptor knows about a call, and may change before it is sent.
#[derive(Debug)]
pub struct ClientContext {
    method: MethodName,
    kind: MethodKind,
    target: Arc<str>,
    metadata: Metadata,
    deadline: Option<tokio::time::Instant>,
    response_metadata: Metadata,
    extensions: Extensions,
    attempts: u32,
}

impl ClientContext {
    pub(crate) fn new(
        method: MethodName,
        kind: MethodKind,
        target: Arc<str>,
        metadata: Metadata,
        deadline: Option<tokio::time::Instant>,
    ) -> ClientContext {
        ClientContext {
            method,
            kind,
            target,
            metadata,
            deadline,
            response_metadata: Metadata::new(),
            extensions: Extensions::new(),
            attempts: 0,
        }
    }

    /// The full method name, e.g. `/helloworld.Greeter/SayHello`.
    pub fn method(&self) -> &str {
        self.method.as_str()
    }

    /// The full method name, to keep (a clone shares the text).
    pub fn method_name(&self) -> &MethodName {
        &self.method
    }

    /// The call's shape: unary, or which way it streams.
    pub fn kind(&self) -> MethodKind {
        self.kind
    }

    /// The address the channel calls.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The metadata to send.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The metadata to send, to change.
    pub fn metadata_mut(&mut self) -> &mut Metadata {
        &mut self.metadata
    }

    /// When the call gives up, if it has a deadline.
    pub fn deadline(&self) -> Option<Instant> {
        self.deadline.map(tokio::time::Instant::into_std)
    }

    /// The time left before the deadline; zero once passed, `None` without a deadline.
    pub fn remaining(&self) -> Option<Duration> {
        self.deadline.map(|d| d.saturating_duration_since(tokio::time::Instant::now()))
    }

    /// Sets the call's deadline (it travels to the server as the remaining time).
    pub fn set_deadline(&mut self, deadline: Option<Instant>) {
        self.deadline = deadline.map(tokio::time::Instant::from_std);
    }

    /// The metadata of the last response (after `next` has run).
    pub fn response_metadata(&self) -> &Metadata {
        &self.response_metadata
    }

    /// Values attached to the call by interceptors.
    pub fn extensions(&self) -> &Extensions {
        &self.extensions
    }

    /// The call's attached values, to change.
    pub fn extensions_mut(&mut self) -> &mut Extensions {
        &mut self.extensions
    }

    /// How many times the call has been sent so far (more than once when retried).
    pub fn attempts(&self) -> u32 {
        self.attempts
    }

    pub(crate) fn deadline_instant(&self) -> Option<tokio::time::Instant> {
        self.deadline
    }

    pub(crate) fn start_attempt(&mut self) {
        self.attempts += 1;
    }

    pub(crate) fn set_response_metadata(&mut self, metadata: Metadata) {
        self.response_metadata = metadata;
    }

    pub(crate) fn take_response_metadata(&mut self) -> Metadata {
        std::mem::take(&mut self.response_metadata)
    }
}

/// Runs around the calls made through a channel (or a client, or one call).
///
/// Change `ctx` (metadata, deadline) before the call goes out, reject it by returning an
/// error, or call `next.run(ctx).await` to send it and see its outcome: `Ok(())`, or the
/// status it failed with, its deadline included. `next` may be run more than once (a
/// retry). For a streaming call, `next` returns when the whole stream has ended. A call the
/// caller stops waiting for (it drops the call's future) never returns there:
/// [`Run::on_end`] reports it too.
///
/// For a unary call, [`ClientNext::request`] is the request, and after a successful `run`,
/// [`ClientNext::response`] is the response.
///
/// ```
/// use rpc_core::interceptor::{ClientContext, ClientInterceptor, ClientNext};
/// use rpc_core::Status;
///
/// /// Adds a request id to every call.
/// struct RequestId;
///
/// impl ClientInterceptor for RequestId {
///     async fn intercept(&self, ctx: &mut ClientContext, mut next: ClientNext<'_>) -> Result<(), Status> {
///         ctx.metadata_mut().insert("x-request-id", fastrand::u64(..).to_string());
///         next.run(ctx).await
///     }
/// }
/// ```
pub trait ClientInterceptor: Send + Sync + 'static {
    /// Handles one call; see the [trait docs](ClientInterceptor).
    fn intercept(
        &self,
        ctx: &mut ClientContext,
        next: ClientNext<'_>,
    ) -> impl Future<Output = Result<(), Status>> + Send;
}

/// The object-safe form of [`ClientInterceptor`] that chains hold.
pub(crate) trait DynClientInterceptor: Send + Sync + 'static {
    fn intercept_boxed<'a>(
        &'a self,
        ctx: &'a mut ClientContext,
        next: ClientNext<'a>,
    ) -> BoxFuture<'a, Result<(), Status>>;
}

impl<T: ClientInterceptor> DynClientInterceptor for T {
    fn intercept_boxed<'a>(
        &'a self,
        ctx: &'a mut ClientContext,
        next: ClientNext<'a>,
    ) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(self.intercept(ctx, next))
    }
}

/// The rest of the chain: the next interceptor, and at the end the call itself. Run it with
/// [`run`](ClientNext::run), as many times as the call should be sent.
pub struct ClientNext<'a> {
    rest: &'a [Arc<dyn DynClientInterceptor>],
    end: &'a mut (dyn ClientEndpoint + 'a),
}

impl std::fmt::Debug for ClientNext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientNext").field("interceptors_left", &self.rest.len()).finish_non_exhaustive()
    }
}

impl<'a> ClientNext<'a> {
    pub(crate) fn new(
        rest: &'a [Arc<dyn DynClientInterceptor>],
        end: &'a mut (dyn ClientEndpoint + 'a),
    ) -> Self {
        ClientNext { rest, end }
    }

    /// Runs the rest of the chain and sends the call; await it for the outcome (see
    /// [`Run`]). May be run again, to send the call again.
    pub fn run<'n>(&'n mut self, ctx: &'n mut ClientContext) -> Run<'n> {
        let deadline = ctx.deadline();
        let call = match self.rest.split_first() {
            Some((first, rest)) => first.intercept_boxed(ctx, ClientNext { rest, end: &mut *self.end }),
            None => {
                ctx.start_attempt();
                self.end.call(ctx)
            }
        };
        Run::new(call, deadline)
    }

    /// A unary call's request; `None` for a streaming call.
    pub fn request(&self) -> Option<&dyn AnyMessage> {
        self.end.request()
    }

    /// A unary call's response, after a [`run`](ClientNext::run) that succeeded; `None`
    /// otherwise, and for a streaming call.
    pub fn response(&self) -> Option<&dyn AnyMessage> {
        self.end.response()
    }
}

/// The end of a client chain: sending the call, and the messages it carries.
pub(crate) trait ClientEndpoint: Send {
    fn call<'a>(&'a mut self, ctx: &'a mut ClientContext) -> BoxFuture<'a, Result<(), Status>>;
    fn request(&self) -> Option<&dyn AnyMessage>;
    fn response(&self) -> Option<&dyn AnyMessage>;
}

/// An ordered list of client interceptors: the first registered runs outermost.
#[derive(Clone, Default)]
pub struct ClientChain {
    pub(crate) interceptors: Vec<Arc<dyn DynClientInterceptor>>,
}

impl std::fmt::Debug for ClientChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientChain").field("len", &self.interceptors.len()).finish()
    }
}

impl ClientChain {
    /// An empty chain.
    pub fn new() -> ClientChain {
        ClientChain::default()
    }

    /// Appends an interceptor: it runs inside the ones added before it.
    pub fn with(mut self, interceptor: impl ClientInterceptor) -> ClientChain {
        self.interceptors.push(Arc::new(interceptor));
        self
    }

    /// How many interceptors the chain holds.
    pub fn len(&self) -> usize {
        self.interceptors.len()
    }

    /// Whether the chain is empty.
    pub fn is_empty(&self) -> bool {
        self.interceptors.is_empty()
    }

    /// This chain, then `inner`'s interceptors, inside it.
    pub fn then(mut self, inner: ClientChain) -> ClientChain {
        self.interceptors.extend(inner.interceptors);
        self
    }

    /// The list a channel keeps; `None` when empty, so calls skip the mechanism.
    pub(crate) fn into_shared(self) -> Option<Arc<[Arc<dyn DynClientInterceptor>]>> {
        (!self.is_empty()).then(|| self.interceptors.into())
    }
}
