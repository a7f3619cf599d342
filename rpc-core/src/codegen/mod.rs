//! The seam between the runtime and generated code: what a generated `FooServer<T>` is made
//! of. Not meant to be used by hand, but stable enough that generated code from this version
//! keeps compiling.
//!
//! A generated server implements [`Service`]: it names its methods in a static
//! [`ServiceDescriptor`] and, for each incoming call, hands
//! the [`ServerCall`] to the helper for the method's kind ([`ServerCall::spawn_unary`] and
//! the three streaming ones). Each helper runs the handler in a task of its own, so the calls
//! of one connection run in parallel on every worker of the runtime, however long a handler
//! computes without yielding. The answer is encoded straight into the connection's outbox,
//! from the handler's task.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use futures_util::future::Either;
use tokio::task::AbortHandle;

use crate::codec::Codec;
use crate::conn::{Note, Outbox, Shared, StreamCore, ok_end, status_frame};
use crate::interceptor::{
    AnyMessage, CancelSignal, DynServerInterceptor, Guarded, HandlerEndpoint, ServerContext, panic_message,
    run_chain,
};
use crate::metadata::Metadata;
use crate::method::ServiceDescriptor;
use crate::status::{Code, Status};
use crate::stream::{Side, StreamSender, Streaming};
use crate::wire::{FrameKind, Header, WireError};

pub use crate::codec::RpcMessage;

/// Fails to compile, at the type, when `T` is not an [`RpcMessage`]: emitted by the macro.
pub fn assert_message<T: RpcMessage>() {}

/// A mountable service: what `#[service]` and the `.proto` generator implement for
/// `FooServer<T>`. Implementing it by hand is possible but rarely needed.
pub trait Service: Send + Sync + 'static {
    /// The service's name and methods.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Starts serving `call` to the method at index `method` of the descriptor.
    fn call(&self, method: usize, call: ServerCall) -> Spawned;

    /// The schema of the service, for the [reflection service](crate::reflection): an
    /// encoded `google.protobuf.FileDescriptorSet` holding the file that declares it and
    /// every file that file imports. Services generated from `.proto` files have one;
    /// services declared with `#[service]` have none (`None`, the default).
    fn file_descriptor_set(&self) -> Option<&'static [u8]> {
        None
    }
}

/// What became of a call handed to its handler: for the connection, which keeps what it
/// needs to stop a running handler if the call is cancelled.
#[derive(Debug)]
pub struct Spawned {
    /// The handler's task, to abort.
    pub(crate) abort: Option<AbortHandle>,
    /// Behind interceptors: the signal that stops the handler and lets the interceptors see
    /// the cancel, rather than aborting their task.
    pub(crate) cancel: Option<Arc<CancelSignal>>,
}

impl Spawned {
    /// Nothing is left running: the call was answered at once.
    fn done() -> Spawned {
        Spawned { abort: None, cancel: None }
    }
}

/// One incoming call, on its way to a handler.
pub struct ServerCall {
    pub(crate) id: u64,
    pub(crate) context: ServerContext,
    pub(crate) conn: Arc<Shared>,
    pub(crate) payload: Payload,
    pub(crate) interceptors: Option<Arc<[Arc<dyn DynServerInterceptor>]>>,
    /// How long a server-streaming call waits for its request.
    pub(crate) request_timeout: Duration,
}

impl std::fmt::Debug for ServerCall {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerCall")
            .field("id", &self.id)
            .field("method", &self.context.method())
            .field("interceptors", &self.interceptors.as_ref().map_or(0, |chain| chain.len()))
            .finish_non_exhaustive()
    }
}

/// What a call brings: a unary request's body, or the stream it opened.
#[derive(Debug)]
pub(crate) enum Payload {
    Unary(Bytes),
    Stream(Arc<StreamCore>),
}

impl ServerCall {
    /// Runs a unary handler. `handler` receives the context and the decoded request, and
    /// gives the context back with its result, so that response metadata set by the
    /// handler reaches the caller.
    ///
    /// A body that does not decode answers `InvalidArgument` at once. Otherwise the handler
    /// runs in a task of its own. It is abandoned at the caller's deadline
    /// (`DeadlineExceeded`) and when the caller cancels; a panic answers `Internal` for this
    /// call alone.
    pub fn spawn_unary<Req, Resp, C, F, Fut>(self, handler: F) -> Spawned
    where
        C: Codec<Req> + Codec<Resp>,
        Req: AnyMessage,
        Resp: AnyMessage,
        F: FnOnce(ServerContext, Req) -> Fut + Send + 'static,
        Fut: Future<Output = (ServerContext, Result<Resp, Status>)> + Send + 'static,
    {
        let ServerCall { id, context, conn, payload, interceptors, .. } = self;
        let responder = Responder { id, method: context.method(), conn: Some(conn) };
        let Payload::Unary(body) = payload else {
            return responder.mismatched(context.method());
        };
        match unary_task::<Req, Resp, C, F, Fut>(context, body, interceptors, responder, handler) {
            Some(task) => {
                let cancel = task.cancel.clone();
                Spawned { abort: Some(tokio::spawn(task).abort_handle()), cancel }
            }
            None => Spawned::done(),
        }
    }

    /// Runs a unary handler marked `#[rpc(inline)]`: like [`spawn_unary`](Self::spawn_unary),
    /// but its first poll happens right here, on the connection's task. A handler that
    /// answers without waiting is answered with no task spawned at all; one that waits goes
    /// on in a task of its own. The price: while a handler computes in that first poll, no
    /// other call on the connection makes progress. For handlers that answer at once.
    pub fn run_unary_inline<Req, Resp, C, F, Fut>(self, handler: F) -> Spawned
    where
        C: Codec<Req> + Codec<Resp>,
        Req: AnyMessage,
        Resp: AnyMessage,
        F: FnOnce(ServerContext, Req) -> Fut + Send + 'static,
        Fut: Future<Output = (ServerContext, Result<Resp, Status>)> + Send + 'static,
    {
        let ServerCall { id, context, conn, payload, interceptors, .. } = self;
        let responder = Responder { id, method: context.method(), conn: Some(conn) };
        let Payload::Unary(body) = payload else {
            return responder.mismatched(context.method());
        };
        let Some(task) = unary_task::<Req, Resp, C, F, Fut>(context, body, interceptors, responder, handler)
        else {
            return Spawned::done();
        };
        let cancel = task.cancel.clone();
        let mut task = Box::pin(task);
        // The handler's waker for this first poll wakes nothing: if it waits, the task it
        // moves to polls it again at once, with its own.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if task.as_mut().poll(&mut cx).is_ready() {
            return Spawned::done();
        }
        Spawned { abort: Some(tokio::spawn(task).abort_handle()), cancel }
    }

    /// Spawns a server-streaming handler: one request in, a stream of responses out.
    ///
    /// The single request is read (and decoded) inside the task, within the server's request
    /// timeout; the stream ends, after the
    /// messages the handler sent, with the status it returned. Deadline, cancellation and
    /// panics are handled as for [`spawn_unary`](Self::spawn_unary).
    pub fn spawn_server_streaming<Req, Resp, C, F, Fut>(self, handler: F) -> Spawned
    where
        C: Codec<Req> + Codec<Resp>,
        Req: AnyMessage,
        Resp: AnyMessage,
        F: FnOnce(ServerContext, Req, StreamSender<Resp>) -> Fut + Send + 'static,
        Fut: Future<Output = (ServerContext, Result<(), Status>)> + Send + 'static,
    {
        let wait = self.request_timeout;
        self.spawn_stream::<Req, Resp, C, _, _>(move |ctx, requests, responses| async move {
            // The handler starts once the request is complete: a client that never completes
            // it holds the call only this long.
            match tokio::time::timeout(wait, requests.single("request")).await {
                Ok(Ok(request)) => handler(ctx, request, responses).await,
                Ok(Err(status)) => (ctx, Err(status)),
                Err(_) => {
                    let status = Status::deadline_exceeded(format!(
                        "the request (one message, then the end of the client's stream) did not arrive within {wait:?}"
                    ));
                    (ctx, Err(status))
                }
            }
        })
    }

    /// Spawns a client-streaming handler: a stream of requests in, one response out.
    pub fn spawn_client_streaming<Req, Resp, C, F, Fut>(self, handler: F) -> Spawned
    where
        C: Codec<Req> + Codec<Resp>,
        Req: AnyMessage,
        Resp: AnyMessage,
        F: FnOnce(ServerContext, Streaming<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = (ServerContext, Result<Resp, Status>)> + Send + 'static,
    {
        self.spawn_stream::<Req, Resp, C, _, _>(move |ctx, requests, mut responses| async move {
            let (ctx, result) = handler(ctx, requests).await;
            let result = match result {
                Ok(response) => responses.send(response).await,
                Err(status) => Err(status),
            };
            (ctx, result)
        })
    }

    /// Spawns a bidirectional-streaming handler: streams both ways.
    pub fn spawn_bidi_streaming<Req, Resp, C, F, Fut>(self, handler: F) -> Spawned
    where
        C: Codec<Req> + Codec<Resp>,
        Req: AnyMessage,
        Resp: AnyMessage,
        F: FnOnce(ServerContext, Streaming<Req>, StreamSender<Resp>) -> Fut + Send + 'static,
        Fut: Future<Output = (ServerContext, Result<(), Status>)> + Send + 'static,
    {
        self.spawn_stream::<Req, Resp, C, _, _>(handler)
    }

    /// The common part of the streaming kinds: wires the stream's two ends to the handler,
    /// runs it like a unary handler, and ends the stream with its status and the response
    /// metadata it set.
    fn spawn_stream<Req, Resp, C, F, Fut>(self, handler: F) -> Spawned
    where
        C: Codec<Req> + Codec<Resp>,
        Req: AnyMessage,
        Resp: AnyMessage,
        F: FnOnce(ServerContext, Streaming<Req>, StreamSender<Resp>) -> Fut + Send + 'static,
        Fut: Future<Output = (ServerContext, Result<(), Status>)> + Send + 'static,
    {
        let ServerCall { id, context, conn, payload, interceptors, .. } = self;
        let responder = Responder { id, method: context.method(), conn: Some(conn) };
        let Payload::Stream(core) = payload else {
            return responder.mismatched(context.method());
        };
        let requests = Streaming::new::<C>(Arc::clone(&core), Side::Server, None);
        let responses = StreamSender::new::<C>(Arc::clone(&core), Side::Server);
        // The client learns that its call reached a handler (the method exists, and no
        // interceptor turned it away) before anything the handler sends.
        let accepted = Arc::clone(&core);
        let handler = move |ctx, requests, responses| {
            send_accept(&accepted);
            handler(ctx, requests, responses)
        };
        let method = context.method();
        let deadline = context.deadline_instant();
        let cancel = interceptors.as_ref().map(|_| Arc::new(CancelSignal::default()));
        let cancelled = cancel.clone();
        let task = async move {
            let outcome = match (interceptors, cancelled.clone()) {
                (Some(chain), Some(cancel)) => {
                    let end = HandlerEndpoint::stream(
                        move |ctx, ()| handler(ctx, requests, responses),
                        Arc::clone(&cancel),
                    );
                    Guarded::chain(method, deadline, cancel, run_chain(&chain, context, end)).await
                }
                _ => {
                    Guarded::handler(method, deadline, None, processed(handler(context, requests, responses)))
                        .await
                }
            };
            if cancelled.as_ref().is_some_and(|cancel| cancel.is_cancelled()) {
                // The client cancelled: the connection has ended the stream already.
                return responder.abandon();
            }
            let (metadata, result) = settle(outcome);
            responder.end_stream(&core, metadata, result);
        };
        Spawned { abort: Some(tokio::spawn(task).abort_handle()), cancel }
    }

    /// Answers `Unimplemented`: for generated methods of a kind this runtime cannot serve.
    pub fn unimplemented(self) -> Spawned {
        let method = self.context.method();
        let status = Status::unimplemented(format!("{method} is not implemented by this server"));
        let responder = Responder { id: self.id, method, conn: Some(self.conn) };
        match self.payload {
            Payload::Unary(_) => responder.fail(status),
            Payload::Stream(core) => {
                responder.end_stream(&core, Metadata::new(), Err(status));
                Spawned::done()
            }
        }
    }
}

/// Tells the client that its stream's handler starts (`STREAM_ACCEPT`, docs/PROTOCOL.md
/// §8.1), ahead of the messages the handler sends.
fn send_accept(core: &StreamCore) {
    core.shared.with_outbox(|outbox| {
        if outbox.closed.is_none() {
            // A frame of a few bytes: below any limit.
            let _ = outbox.queue(&crate::wire::Frame::new(FrameKind::StreamAccept, core.id));
        }
    });
}

/// A unary call's task: the request decoded, the handler behind its interceptors, under
/// its deadline, then the answer. `None` when the call was answered at once because the
/// request does not decode.
fn unary_task<Req, Resp, C, F, Fut>(
    context: ServerContext,
    body: Bytes,
    interceptors: Option<Arc<[Arc<dyn DynServerInterceptor>]>>,
    responder: Responder,
    handler: F,
) -> Option<UnaryTask<Resp, C, impl Future<Output = Handled<Resp>> + Send + 'static>>
where
    C: Codec<Req> + Codec<Resp>,
    Req: AnyMessage,
    Resp: AnyMessage,
    F: FnOnce(ServerContext, Req) -> Fut + Send + 'static,
    Fut: Future<Output = (ServerContext, Result<Resp, Status>)> + Send + 'static,
{
    let method = context.method();
    let deadline = context.deadline_instant();
    // A codec is user code: its panic fails this call, not the connection.
    let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| decode_request::<Req, C>(body)));
    let request = match decoded {
        Ok(Ok(request)) => request,
        Ok(Err(status)) => {
            responder.fail(status);
            return None;
        }
        Err(panic) => {
            tracing::error!(method, panic = panic_message(&panic), "decoding a request panicked");
            responder.fail(Status::internal(format!("decoding the request of {method} panicked")));
            return None;
        }
    };
    let (run, cancel) = match interceptors {
        None => (
            Either::Left(Guarded::handler(method, deadline, None, processed(handler(context, request)))),
            None,
        ),
        Some(chain) => {
            let cancel = Arc::new(CancelSignal::default());
            let end = HandlerEndpoint::unary(request, handler, Arc::clone(&cancel));
            let chained: BoxedHandler<Resp> =
                Box::pin(Guarded::chain(method, deadline, Arc::clone(&cancel), async move {
                    run_chain(&chain, context, end).await
                }));
            (Either::Right(chained), Some(cancel))
        }
    };
    Some(UnaryTask::<Resp, C, _> { run, responder: Some(responder), cancel, _codec: PhantomData })
}

/// How a guarded handler (or chain) ended: the context it gave back with its result, or the
/// status it was stopped with.
type Handled<Resp> = Result<(ServerContext, Result<Resp, Status>), Status>;

/// A unary handler behind interceptors, guarded: boxed (the chain is boxed anyway), so that
/// the common case without interceptors keeps a small future.
type BoxedHandler<Resp> = Pin<Box<dyn Future<Output = Handled<Resp>> + Send>>;

/// The response metadata and the result to answer with.
fn settle<T>(handled: Handled<T>) -> (Metadata, Result<T, Status>) {
    match handled {
        Ok((mut ctx, result)) => (ctx.take_response_metadata(), result),
        Err(stopped) => (Metadata::new(), Err(stopped)),
    }
}

pin_project_lite::pin_project! {
    /// A unary handler's task: runs it, then answers (unless the client cancelled).
    struct UnaryTask<Resp, C, Fut> {
        #[pin]
        run: Fut,
        responder: Option<Responder>,
        cancel: Option<Arc<CancelSignal>>,
        _codec: PhantomData<fn() -> (Resp, C)>,
    }
}

impl<Resp, C, Fut> Future for UnaryTask<Resp, C, Fut>
where
    C: Codec<Resp>,
    Fut: Future<Output = Handled<Resp>>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.project();
        let handled = ready!(this.run.poll(cx));
        if let Some(responder) = this.responder.take() {
            if this.cancel.as_ref().is_some_and(|cancel| cancel.is_cancelled()) {
                // The client cancelled: nobody waits for an answer.
                responder.abandon();
            } else {
                let (metadata, result) = settle(handled);
                responder.answer::<Resp, C>(metadata, result);
            }
        }
        Poll::Ready(())
    }
}

/// A handler's outcome, with any refusal mark cleared: the handler ran. (Behind
/// interceptors, the chain's end does the same.)
async fn processed<T>(
    handler: impl Future<Output = (ServerContext, Result<T, Status>)>,
) -> (ServerContext, Result<T, Status>) {
    let (ctx, result) = handler.await;
    (ctx, result.map_err(Status::processed))
}

fn decode_request<Req, C: Codec<Req>>(body: Bytes) -> Result<Req, Status> {
    C::decode(body).map_err(|err| Status::invalid_argument(format!("request does not decode: {err}")))
}

/// Answers one call, exactly once: with its response, or, if its task ends without one
/// (aborted on cancel, dropped at shutdown), by telling the connection so.
struct Responder {
    id: u64,
    method: &'static str,
    conn: Option<Arc<Shared>>,
}

impl Responder {
    /// Answers a unary call with `result` and the handler's response `metadata`.
    fn answer<Resp, C: Codec<Resp>>(mut self, metadata: Metadata, result: Result<Resp, Status>) {
        let Some(conn) = self.conn.take() else { return };
        let (id, method) = (self.id, self.method);
        conn.with_outbox(|outbox| {
            if outbox.closed.is_some() {
                return;
            }
            match result {
                Ok(message) => answer_message::<Resp, C>(outbox, id, method, metadata, &message),
                Err(mut status) => {
                    let mut md = metadata;
                    md.extend(std::mem::take(status.metadata_mut()));
                    queue_status(outbox, FrameKind::Response, id, status.with_metadata(md));
                }
            }
            let end = outbox.len();
            outbox.note(Note::Answered { id, end });
        });
    }

    /// Answers a unary call with `status` without running anything.
    fn fail(mut self, status: Status) -> Spawned {
        if let Some(conn) = self.conn.take() {
            let id = self.id;
            conn.with_outbox(|outbox| {
                if outbox.closed.is_none() {
                    queue_status(outbox, FrameKind::Response, id, status);
                    let end = outbox.len();
                    outbox.note(Note::Answered { id, end });
                }
            });
        }
        Spawned::done()
    }

    /// Gives up the call without an answer: the client cancelled it, and the connection has
    /// forgotten it.
    fn abandon(mut self) {
        self.conn = None;
    }

    /// Ends a stream, after the messages already sent, with `result` and the handler's
    /// response `metadata`. Past the deadline the end goes at once, ahead of queued messages.
    fn end_stream(mut self, core: &Arc<StreamCore>, metadata: Metadata, result: Result<(), Status>) {
        self.conn = None;
        let (end, why, jump) = match result {
            Ok(()) => (
                ok_end(self.id, metadata),
                Status::failed_precondition("the stream was closed by this side"),
                false,
            ),
            Err(mut status) => {
                let jump = status.code() == Code::DeadlineExceeded;
                let mut md = metadata;
                md.extend(std::mem::take(status.metadata_mut()));
                let status = status.with_metadata(md);
                (status_frame(FrameKind::StreamEnd, self.id, status.clone()), status, jump)
            }
        };
        core.complete(match &end.header.status_code {
            None => Ok(()),
            Some(_) => Err(why.clone()),
        });
        core.finish_send(end, jump, why);
    }

    /// A generated service spawned a call with the helper for another kind of method.
    fn mismatched(self, method: &str) -> Spawned {
        self.fail(Status::internal(format!("{method} was dispatched as the wrong kind of call")))
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(conn) = self.conn.take() {
            let id = self.id;
            conn.with_outbox(|outbox| {
                if outbox.closed.is_none() {
                    outbox.note(Note::Unanswered(id));
                }
            });
        }
    }
}

/// Queues a unary call's successful answer: the message encoded straight into the outbox.
/// An answer over the client's limits is replaced by `RESOURCE_EXHAUSTED` saying so; a codec
/// that panics leaves nothing behind and answers `INTERNAL`.
fn answer_message<Resp, C: Codec<Resp>>(
    outbox: &mut Outbox,
    id: u64,
    method: &str,
    metadata: Metadata,
    message: &Resp,
) {
    let header = Header { metadata, ..Header::default() };
    let start = outbox.buf.len();
    let queued = std::panic::catch_unwind(AssertUnwindSafe(|| {
        let len = C::encoded_len(message);
        outbox.queue_with(FrameKind::Response, 0, id, &header, len, |buf| C::encode(message, buf))
    }));
    let status = match queued {
        Ok(Ok(())) => return,
        Ok(Err(WireError::FrameTooLarge { len, max })) => Status::resource_exhausted(format!(
            "response of {len} bytes exceeds the client's limit of {max} bytes"
        )),
        Ok(Err(WireError::HeaderTooLarge { len, max })) => Status::resource_exhausted(format!(
            "response metadata of {len} bytes exceeds the client's limit of {max} bytes"
        )),
        Ok(Err(err)) => Status::internal(format!("the response could not be encoded: {err}")),
        Err(panic) => {
            outbox.buf.truncate(start);
            tracing::error!(method, panic = panic_message(&panic), "encoding a response panicked");
            Status::internal(format!("encoding the response of {method} panicked"))
        }
    };
    queue_status(outbox, FrameKind::Response, id, status);
}

/// Queues a frame carrying `status`; if its metadata is over the peer's header limit, the
/// status goes without it, saying so.
pub(crate) fn queue_status(outbox: &mut Outbox, kind: FrameKind, id: u64, status: Status) {
    if let Err(err) = outbox.queue(&status_frame(kind, id, status)) {
        let status = Status::resource_exhausted(format!("the answer could not be sent: {err}"));
        // Without metadata, a status is far below any limit a peer may announce.
        let _ = outbox.queue(&status_frame(kind, id, status));
    }
}
