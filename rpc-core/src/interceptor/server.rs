//! Server-side interceptors: around every call a server (or one service) handles.

use std::future::Future;
use std::sync::Arc;

use futures_util::future::BoxFuture;

use super::Context;
use crate::status::Status;

/// Runs around the calls of a server or a service: before the handler, around it, after it.
///
/// `ctx` is the call's [`Context`]: its method, peer, deadline, caller metadata (which the
/// interceptor may change), response metadata and extensions. Return an error to reject the
/// call without running the handler; call `next.run(ctx).await` to run the rest of the chain
/// and the handler, and see its outcome: `Ok(())`, or the status the call ends with. For a
/// streaming call, `next` completes when the whole stream has.
///
/// ```
/// use std::time::Instant;
/// use rpc_core::interceptor::{Next, ServerInterceptor};
/// use rpc_core::{Context, Status};
///
/// /// Logs every call with its outcome and latency, and rejects callers without an id.
/// struct Audit;
///
/// impl ServerInterceptor for Audit {
///     async fn intercept(&self, ctx: &mut Context, next: Next<'_>) -> Result<(), Status> {
///         if !ctx.metadata().contains_key("x-caller") {
///             return Err(Status::unauthenticated("who are you?"));
///         }
///         let started = Instant::now();
///         let outcome = next.run(ctx).await;
///         tracing::info!(method = ctx.method(), ok = outcome.is_ok(), took = ?started.elapsed());
///         outcome
///     }
/// }
/// ```
pub trait ServerInterceptor: Send + Sync + 'static {
    /// Handles one call; see the [trait docs](ServerInterceptor).
    fn intercept(&self, ctx: &mut Context, next: Next<'_>)
    -> impl Future<Output = Result<(), Status>> + Send;
}

/// The object-safe form of [`ServerInterceptor`] that chains hold.
pub(crate) trait DynServerInterceptor: Send + Sync + 'static {
    fn intercept_boxed<'a>(
        &'a self,
        ctx: &'a mut Context,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<(), Status>>;
}

impl<T: ServerInterceptor> DynServerInterceptor for T {
    fn intercept_boxed<'a>(
        &'a self,
        ctx: &'a mut Context,
        next: Next<'a>,
    ) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(self.intercept(ctx, next))
    }
}

/// The rest of the chain: the next interceptor, and at the end the handler.
pub struct Next<'a> {
    rest: &'a [Arc<dyn DynServerInterceptor>],
    end: &'a mut (dyn Endpoint + 'static),
}

impl std::fmt::Debug for Next<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Next").field("interceptors_left", &self.rest.len()).finish_non_exhaustive()
    }
}

impl Next<'_> {
    /// Runs the rest of the chain and the handler; their outcome.
    pub async fn run(self, ctx: &mut Context) -> Result<(), Status> {
        match self.rest.split_first() {
            Some((first, rest)) => first.intercept_boxed(ctx, Next { rest, end: self.end }).await,
            None => self.end.call(ctx).await,
        }
    }
}

/// The end of a chain: the handler, run once.
pub(crate) trait Endpoint: Send {
    fn call<'a>(&'a mut self, ctx: &'a mut Context) -> BoxFuture<'a, Result<(), Status>>;
}

/// A handler as the end of a chain: it gets the context lent, gives it back with its result,
/// and its output is kept for the runtime to send.
struct HandlerEndpoint<G, T> {
    handler: Option<G>,
    output: Option<T>,
}

impl<G, Fut, T> Endpoint for HandlerEndpoint<G, T>
where
    G: FnOnce(Context) -> Fut + Send,
    Fut: Future<Output = (Context, Result<T, Status>)> + Send,
    T: Send,
{
    fn call<'a>(&'a mut self, ctx: &'a mut Context) -> BoxFuture<'a, Result<(), Status>> {
        Box::pin(async move {
            let Some(handler) = self.handler.take() else {
                return Err(Status::internal("an interceptor ran the handler twice"));
            };
            let (returned, result) = handler(ctx.lend()).await;
            *ctx = returned;
            // The handler ran: whatever it returns is not a refusal.
            result.map(|output| self.output = Some(output)).map_err(Status::processed)
        })
    }
}

/// Runs `handler` (given the context, returning it with its result) behind `chain`.
pub(crate) async fn run_chain<G, Fut, T>(
    chain: &[Arc<dyn DynServerInterceptor>],
    mut ctx: Context,
    handler: G,
) -> (Context, Result<T, Status>)
where
    G: FnOnce(Context) -> Fut + Send + 'static,
    Fut: Future<Output = (Context, Result<T, Status>)> + Send,
    T: Send + 'static,
{
    let mut end = HandlerEndpoint { handler: Some(handler), output: None };
    let outcome = Next { rest: chain, end: &mut end }.run(&mut ctx).await;
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
/// # use rpc_core::interceptor::{Next, ServerChain, ServerInterceptor};
/// # use rpc_core::{Context, Status};
/// # struct A; struct B;
/// # impl ServerInterceptor for A { async fn intercept(&self, c: &mut Context, n: Next<'_>) -> Result<(), Status> { n.run(c).await } }
/// # impl ServerInterceptor for B { async fn intercept(&self, c: &mut Context, n: Next<'_>) -> Result<(), Status> { n.run(c).await } }
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
    /// HTTP requests (see [`Context::from_parts`]). `handler` gets the context (after the
    /// interceptors have seen it) and gives it back with its result; the outcome is the
    /// chain's, and the context comes back with the response metadata set along the way.
    ///
    /// ```
    /// use rpc_core::interceptor::{Next, ServerChain, ServerInterceptor};
    /// use rpc_core::method::MethodKind;
    /// use rpc_core::transport::PeerAddr;
    /// use rpc_core::{Context, Metadata, Status};
    ///
    /// struct NeedsCaller;
    /// impl ServerInterceptor for NeedsCaller {
    ///     async fn intercept(&self, ctx: &mut Context, next: Next<'_>) -> Result<(), Status> {
    ///         if !ctx.metadata().contains_key("x-caller") {
    ///             return Err(Status::unauthenticated("who are you?"));
    ///         }
    ///         next.run(ctx).await
    ///     }
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let chain = ServerChain::new().with(NeedsCaller);
    /// let ctx = Context::from_parts("/a.B/C", MethodKind::Unary, PeerAddr::Memory(1), Metadata::new(), None);
    /// let (_ctx, result) = chain.run(ctx, |ctx| async move { (ctx, Ok::<_, Status>("forwarded")) }).await;
    /// assert_eq!(result.unwrap_err().code(), rpc_core::Code::Unauthenticated);
    /// # }
    /// ```
    pub async fn run<G, Fut, T>(&self, ctx: Context, handler: G) -> (Context, Result<T, Status>)
    where
        G: FnOnce(Context) -> Fut + Send + 'static,
        Fut: Future<Output = (Context, Result<T, Status>)> + Send,
        T: Send + 'static,
    {
        run_chain(&self.interceptors, ctx, handler).await
    }

    /// `outer` then this chain, as the list a call runs through; `None` when empty, so calls
    /// without interceptors pay nothing for them.
    pub(crate) fn behind(&self, outer: &ServerChain) -> Option<Arc<[Arc<dyn DynServerInterceptor>]>> {
        let all: Vec<_> = outer.interceptors.iter().chain(&self.interceptors).cloned().collect();
        (!all.is_empty()).then(|| all.into())
    }
}
