//! Server-side interceptors: around every call a server (or one service) handles.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::guard::{CancelSignal, Guarded};
use super::{AnyMessage, Run, ServerContext};
use crate::status::Status;

/// Runs around the calls of a server or a service: before the handler, around it, after it.
///
/// `ctx` is the call's [`ServerContext`]: its method, peer, deadline, caller metadata (which
/// the interceptor may change), response metadata and extensions. Return an error to reject
/// the call without running the handler; call `next.run(ctx).await` to run the rest of the
/// chain and the handler, and see its outcome: `Ok(())`, or the status the call ends with.
/// For a streaming call, `next` completes when the whole stream has.
///
/// The outcome comes back for every call, whatever ends it: the handler's answer, a
/// deadline that passed (`DEADLINE_EXCEEDED`; the handler is stopped), a handler that
/// panicked (`INTERNAL`), a call the client cancelled (`CANCELLED`; the handler is stopped
/// and no answer is sent). After a deadline or a cancel, the interceptors have
/// [`INTERCEPTOR_GRACE`](super::INTERCEPTOR_GRACE) to end on their own. Only a call whose
/// connection is lost, or that is still running when a shutdown's grace period ends, is
/// dropped without returning here: [`Run::on_end`](super::Run::on_end) reports those too.
///
/// For a unary call, the interceptor can read the request before running `next`, and
/// replace it ([`request_mut`](ServerNext::request_mut)); and the response after
/// ([`response`](ServerNext::response), [`response_mut`](ServerNext::response_mut)).
/// Looking costs nothing when no interceptor does.
///
/// ```
/// use std::time::Instant;
/// use rpc_core::interceptor::{ServerInterceptor, ServerNext};
/// use rpc_core::{ServerContext, Status};
///
/// /// Logs every call with its outcome and latency, and rejects callers without an id.
/// struct Audit;
///
/// impl ServerInterceptor for Audit {
///     async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
///         if !ctx.metadata().contains_key("x-caller") {
///             return Err(Status::unauthenticated("who are you?"));
///         }
///         tracing::debug!(request = ?next.request(), "calling {}", ctx.method());
///         let started = Instant::now();
///         let outcome = next.run(ctx).await;
///         tracing::info!(method = ctx.method(), ok = outcome.is_ok(), took = ?started.elapsed());
///         outcome
///     }
/// }
/// ```
pub trait ServerInterceptor: Send + Sync + 'static {
    /// Handles one call; see the [trait docs](ServerInterceptor).
    fn intercept(
        &self,
        ctx: &mut ServerContext,
        next: ServerNext<'_>,
    ) -> impl Future<Output = Result<(), Status>> + Send;
}

/// The object-safe form of [`ServerInterceptor`] that chains hold.
pub(crate) trait DynServerInterceptor: Send + Sync + 'static {
    fn intercept_boxed<'a>(
        &'a self,
        ctx: &'a mut ServerContext,
        next: ServerNext<'a>,
    ) -> BoxFuture<'a, Result<(), Status>>;
}

impl<T: ServerInterceptor> DynServerInterceptor for T {
    fn intercept_boxed<'a>(
        &'a self,
        ctx: &'a mut ServerContext,
        next: ServerNext<'a>,
    ) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(self.intercept(ctx, next))
    }
}

/// The rest of the chain: the next interceptor, and at the end the handler. Run it with
/// [`run`](ServerNext::run); before that, a unary call's request is in reach, and after
/// it, its response.
pub struct ServerNext<'a> {
    rest: &'a [Arc<dyn DynServerInterceptor>],
    end: &'a mut (dyn Endpoint + 'static),
}

impl std::fmt::Debug for ServerNext<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerNext").field("interceptors_left", &self.rest.len()).finish_non_exhaustive()
    }
}

impl ServerNext<'_> {
    /// Runs the rest of the chain and the handler; await it for their outcome (see
    /// [`Run`]). The handler runs once: running `next` again fails with `INTERNAL`.
    pub fn run<'n>(&'n mut self, ctx: &'n mut ServerContext) -> Run<'n> {
        let deadline = ctx.deadline();
        let call = match self.rest.split_first() {
            Some((first, rest)) => first.intercept_boxed(ctx, ServerNext { rest, end: &mut *self.end }),
            None => self.end.call(ctx),
        };
        Run::new(call, deadline)
    }

    /// A unary call's request, until the handler takes it; `None` for a streaming call,
    /// whose messages the handler reads as they come.
    pub fn request(&self) -> Option<&dyn AnyMessage> {
        self.end.request()
    }

    /// A unary call's request, to change or replace before the handler runs (downcast it
    /// with [`downcast_mut`](trait.AnyMessage.html#method.downcast_mut)).
    pub fn request_mut(&mut self) -> Option<&mut dyn AnyMessage> {
        self.end.request_mut()
    }

    /// A unary call's response, once the handler has returned it (after
    /// [`run`](ServerNext::run) succeeded); `None` otherwise, and for streaming calls.
    pub fn response(&self) -> Option<&dyn AnyMessage> {
        self.end.response()
    }

    /// A unary call's response, to change or replace before it is sent.
    pub fn response_mut(&mut self) -> Option<&mut dyn AnyMessage> {
        self.end.response_mut()
    }
}

/// The end of a chain: the handler, run once, and the messages it takes and gives.
pub(crate) trait Endpoint: Send {
    fn call<'a>(&'a mut self, ctx: &'a mut ServerContext) -> BoxFuture<'a, Result<(), Status>>;
    fn request(&self) -> Option<&dyn AnyMessage>;
    fn request_mut(&mut self) -> Option<&mut dyn AnyMessage>;
    fn response(&self) -> Option<&dyn AnyMessage>;
    fn response_mut(&mut self) -> Option<&mut dyn AnyMessage>;
}

/// A handler as the end of a chain: it gets the context lent and the request, gives the
/// context back with its result, and its output is kept for the runtime to send. It runs
/// under the deadline in the context when it starts, with its panics caught, and stops when
/// the client cancels: every outcome is the chain's to see.
pub(crate) struct HandlerEndpoint<Req, H, T> {
    request: Option<Req>,
    handler: Option<H>,
    output: Option<T>,
    cancel: Arc<CancelSignal>,
    /// Whether the request and output are a unary call's messages (a stream's handler takes
    /// `()` and gives `()`).
    unary: bool,
}

impl<Req, H, T> HandlerEndpoint<Req, H, T> {
    /// The end of a unary call's chain: `handler` will get `request`.
    pub(crate) fn unary(request: Req, handler: H, cancel: Arc<CancelSignal>) -> Self {
        HandlerEndpoint { request: Some(request), handler: Some(handler), output: None, cancel, unary: true }
    }
}

impl<H> HandlerEndpoint<(), H, ()> {
    /// The end of a streaming call's chain.
    pub(crate) fn stream(handler: H, cancel: Arc<CancelSignal>) -> Self {
        HandlerEndpoint { request: Some(()), handler: Some(handler), output: None, cancel, unary: false }
    }
}

impl<H, T> HandlerEndpoint<(), H, T> {
    /// The end of a chain run around a call that arrived another way
    /// ([`ServerChain::run`]): its messages are not shown to the interceptors.
    fn outside(handler: H, cancel: Arc<CancelSignal>) -> Self {
        HandlerEndpoint { request: Some(()), handler: Some(handler), output: None, cancel, unary: false }
    }
}

impl<Req, H, Fut, T> Endpoint for HandlerEndpoint<Req, H, T>
where
    Req: AnyMessage,
    H: FnOnce(ServerContext, Req) -> Fut + Send,
    Fut: Future<Output = (ServerContext, Result<T, Status>)> + Send,
    T: AnyMessage,
{
    fn call<'a>(&'a mut self, ctx: &'a mut ServerContext) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            let (Some(handler), Some(request)) = (self.handler.take(), self.request.take()) else {
                return Err(Status::internal("an interceptor ran the handler twice"));
            };
            let (method, deadline) = (ctx.method(), ctx.deadline_instant());
            let cancel = Some(Arc::clone(&self.cancel));
            match Guarded::handler(method, deadline, cancel, handler(ctx.lend(), request)).await {
                Ok((returned, result)) => {
                    *ctx = returned;
                    // The handler ran: whatever it returns is not a refusal.
                    result.map(|output| self.output = Some(output)).map_err(Status::processed)
                }
                Err(stopped) => Err(stopped),
            }
        })
    }

    fn request(&self) -> Option<&dyn AnyMessage> {
        self.request.as_ref().filter(|_| self.unary).map(|request| request as &dyn AnyMessage)
    }

    fn request_mut(&mut self) -> Option<&mut dyn AnyMessage> {
        self.request.as_mut().filter(|_| self.unary).map(|request| request as &mut dyn AnyMessage)
    }

    fn response(&self) -> Option<&dyn AnyMessage> {
        self.output.as_ref().filter(|_| self.unary).map(|output| output as &dyn AnyMessage)
    }

    fn response_mut(&mut self) -> Option<&mut dyn AnyMessage> {
        self.output.as_mut().filter(|_| self.unary).map(|output| output as &mut dyn AnyMessage)
    }
}

/// Runs the handler at `end` behind `chain`: the context, with the handler's result.
pub(crate) async fn run_chain<Req, H, Fut, T>(
    chain: &[Arc<dyn DynServerInterceptor>],
    mut ctx: ServerContext,
    mut end: HandlerEndpoint<Req, H, T>,
) -> (ServerContext, Result<T, Status>)
where
    Req: AnyMessage,
    H: FnOnce(ServerContext, Req) -> Fut + Send + 'static,
    Fut: Future<Output = (ServerContext, Result<T, Status>)> + Send,
    T: AnyMessage,
{
    let outcome = ServerNext { rest: chain, end: &mut end }.run(&mut ctx).await;
    let result = outcome.and_then(|()| {
        end.output
            .take()
            .ok_or_else(|| Status::internal("an interceptor answered OK without running the handler"))
    });
    (ctx, result)
}

/// An ordered list of server interceptors: the first registered runs outermost.
///
/// ```
/// # use rpc_core::interceptor::{ServerNext, ServerChain, ServerInterceptor};
/// # use rpc_core::{ServerContext, Status};
/// # struct A; struct B;
/// # impl ServerInterceptor for A { async fn intercept(&self, c: &mut ServerContext, mut n: ServerNext<'_>) -> Result<(), Status> { n.run(c).await } }
/// # impl ServerInterceptor for B { async fn intercept(&self, c: &mut ServerContext, mut n: ServerNext<'_>) -> Result<(), Status> { n.run(c).await } }
/// // A runs first and sees the outcome last.
/// let chain = ServerChain::new().with(A).with(B);
/// assert_eq!(chain.len(), 2);
/// ```
#[derive(Clone, Default)]
pub struct ServerChain {
    pub(crate) interceptors: Vec<Arc<dyn DynServerInterceptor>>,
}

impl std::fmt::Debug for ServerChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerChain").field("len", &self.interceptors.len()).finish()
    }
}

impl ServerChain {
    /// An empty chain.
    pub fn new() -> ServerChain {
        ServerChain::default()
    }

    /// Appends an interceptor: it runs inside the ones added before it.
    pub fn with(mut self, interceptor: impl ServerInterceptor) -> ServerChain {
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

    /// Runs `handler` behind the chain, as a server runs a handler behind its interceptors:
    /// for calls that arrive other than through a server of this crate, such as a gateway's
    /// HTTP requests (see [`ServerContext::from_parts`]). `handler` gets the context (after the
    /// interceptors have seen it) and gives it back with its result; the outcome is the
    /// chain's, and the context comes back with the response metadata set along the way.
    ///
    /// ```
    /// use rpc_core::interceptor::{ServerChain, ServerInterceptor, ServerNext};
    /// use rpc_core::method::MethodKind;
    /// use rpc_core::transport::PeerAddr;
    /// use rpc_core::{Metadata, ServerContext, Status};
    ///
    /// struct NeedsCaller;
    /// impl ServerInterceptor for NeedsCaller {
    ///     async fn intercept(&self, ctx: &mut ServerContext, mut next: ServerNext<'_>) -> Result<(), Status> {
    ///         if !ctx.metadata().contains_key("x-caller") {
    ///             return Err(Status::unauthenticated("who are you?"));
    ///         }
    ///         next.run(ctx).await
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let chain = ServerChain::new().with(NeedsCaller);
    /// let ctx = ServerContext::from_parts("/a.B/C", MethodKind::Unary, PeerAddr::Memory(1), Metadata::new(), None);
    /// let (_ctx, result) = chain.run(ctx, |ctx| async move { (ctx, Ok::<_, Status>("forwarded")) }).await;
    /// assert_eq!(result.unwrap_err().code(), rpc_core::Code::Unauthenticated);
    /// # }
    /// ```
    ///
    /// The handler runs as a server's would: under the context's deadline, with its panic
    /// caught. Interceptors see no request or response message (they are the caller's own).
    pub async fn run<G, Fut, T>(&self, ctx: ServerContext, handler: G) -> (ServerContext, Result<T, Status>)
    where
        G: FnOnce(ServerContext) -> Fut + Send + 'static,
        Fut: Future<Output = (ServerContext, Result<T, Status>)> + Send,
        T: AnyMessage,
    {
        let end = HandlerEndpoint::outside(move |ctx, ()| handler(ctx), Arc::new(CancelSignal::default()));
        run_chain(&self.interceptors, ctx, end).await
    }

    /// `outer` then this chain, as the list a call runs through; `None` when empty, so calls
    /// without interceptors pay nothing for them.
    pub(crate) fn behind(&self, outer: &ServerChain) -> Option<Arc<[Arc<dyn DynServerInterceptor>]>> {
        let all: Vec<_> = outer.interceptors.iter().chain(&self.interceptors).cloned().collect();
        (!all.is_empty()).then(|| all.into())
    }
}
