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
use futures_util::FutureExt;
use futures_util::future::{CatchUnwind, Either};
use tokio::task::AbortHandle;
use tokio::time::Sleep;

use crate::codec::Codec;
use crate::conn::{Note, Outbox, Shared, StreamCore, ok_end, status_frame};
use crate::interceptor::{Context, DynServerInterceptor, run_chain};
use crate::metadata::Metadata;
use crate::method::ServiceDescriptor;
use crate::status::{Code, Status};
use crate::stream::{Side, StreamSender, Streaming};
use crate::wire::{FrameKind, Header, WireError};

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

/// What became of a call handed to its handler: for the connection, which keeps a running
/// handler's handle to stop it if the call is cancelled.
#[derive(Debug)]
pub struct Spawned(pub(crate) Option<AbortHandle>);

/// One incoming call, on its way to a handler.
pub struct ServerCall {
    pub(crate) id: u64,
    pub(crate) context: Context,
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
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(Context, Req) -> Fut + Send + 'static,
        Fut: Future<Output = (Context, Result<Resp, Status>)> + Send + 'static,
    {
        let ServerCall { id, context, conn, payload, interceptors, .. } = self;
        let responder = Responder { id, method: context.method(), conn: Some(conn) };
        let Payload::Unary(body) = payload else {
            return responder.mismatched(context.method());
        };
        match unary_task::<Req, Resp, C, F, Fut>(context, body, interceptors, responder, handler) {
            Some(task) => Spawned(Some(tokio::spawn(task).abort_handle())),
            None => Spawned(None),
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
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(Context, Req) -> Fut + Send + 'static,
        Fut: Future<Output = (Context, Result<Resp, Status>)> + Send + 'static,
    {
        let ServerCall { id, context, conn, payload, interceptors, .. } = self;
        let responder = Responder { id, method: context.method(), conn: Some(conn) };
        let Payload::Unary(body) = payload else {
            return responder.mismatched(context.method());
        };
        let Some(task) = unary_task::<Req, Resp, C, F, Fut>(context, body, interceptors, responder, handler)
        else {
            return Spawned(None);
        };
        let mut task = Box::pin(task);
        // The handler's waker for this first poll wakes nothing: if it waits, the task it
        // moves to polls it again at once, with its own.
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        if task.as_mut().poll(&mut cx).is_ready() {
            return Spawned(None);
        }
        Spawned(Some(tokio::spawn(task).abort_handle()))
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
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(Context, Req, StreamSender<Resp>) -> Fut + Send + 'static,
        Fut: Future<Output = (Context, Result<(), Status>)> + Send + 'static,
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
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(Context, Streaming<Req>) -> Fut + Send + 'static,
        Fut: Future<Output = (Context, Result<Resp, Status>)> + Send + 'static,
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
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(Context, Streaming<Req>, StreamSender<Resp>) -> Fut + Send + 'static,
        Fut: Future<Output = (Context, Result<(), Status>)> + Send + 'static,
    {
        self.spawn_stream::<Req, Resp, C, _, _>(handler)
    }

    /// The common part of the streaming kinds: wires the stream's two ends to the handler,
    /// runs it like a unary handler, and ends the stream with its status and the response
    /// metadata it set.
    fn spawn_stream<Req, Resp, C, F, Fut>(self, handler: F) -> Spawned
    where
        C: Codec<Req> + Codec<Resp>,
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(Context, Streaming<Req>, StreamSender<Resp>) -> Fut + Send + 'static,
        Fut: Future<Output = (Context, Result<(), Status>)> + Send + 'static,
    {
        let ServerCall { id, context, conn, payload, interceptors, .. } = self;
        let responder = Responder { id, method: context.method(), conn: Some(conn) };
        let Payload::Stream(core) = payload else {
            return responder.mismatched(context.method());
        };
        let requests = Streaming::new::<C>(Arc::clone(&core), Side::Server, None);
        let responses = StreamSender::new::<C>(Arc::clone(&core), Side::Server);
        let method = context.method();
        let deadline = context.deadline_instant();
        let task = async move {
            let (metadata, result) = match interceptors {
                None => run_handler(method, deadline, processed(handler(context, requests, responses))).await,
                Some(chain) => {
                    let handler = move |ctx| handler(ctx, requests, responses);
                    run_handler(method, deadline, async move { run_chain(&chain, context, handler).await })
                        .await
                }
            };
            responder.end_stream(&core, metadata, result);
        };
        Spawned(Some(tokio::spawn(task).abort_handle()))
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
                Spawned(None)
            }
        }
    }
}

/// A unary call's task: the request decoded, the handler behind its interceptors, under
/// its deadline, then the answer. `None` when the call was answered at once because the
/// request does not decode.
fn unary_task<Req, Resp, C, F, Fut>(
    context: Context,
    body: Bytes,
    interceptors: Option<Arc<[Arc<dyn DynServerInterceptor>]>>,
    responder: Responder,
    handler: F,
) -> Option<impl Future<Output = ()> + Send + 'static>
where
    C: Codec<Req> + Codec<Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
    F: FnOnce(Context, Req) -> Fut + Send + 'static,
    Fut: Future<Output = (Context, Result<Resp, Status>)> + Send + 'static,
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
    let handling = match interceptors {
        None => Either::Left(processed(handler(context, request))),
        Some(chain) => {
            let handler = move |ctx| handler(ctx, request);
            let chained: BoxedHandler<Resp> =
                Box::pin(async move { run_chain(&chain, context, handler).await });
            Either::Right(chained)
        }
    };
    Some(UnaryTask::<Resp, C, _> {
        run: run_handler(method, deadline, handling),
        responder: Some(responder),
        _codec: PhantomData,
    })
}

/// A unary handler behind interceptors: the chain's future, boxed (the chain is boxed
/// anyway), so that the common case without interceptors keeps a small future.
type BoxedHandler<Resp> = Pin<Box<dyn Future<Output = (Context, Result<Resp, Status>)> + Send>>;

/// Runs a handler under the call's deadline, catching a panic: the response metadata it set
/// and its outcome.
fn run_handler<Fut: Future>(
    method: &'static str,
    deadline: Option<tokio::time::Instant>,
    handler: Fut,
) -> RunHandler<Fut> {
    RunHandler {
        handler: AssertUnwindSafe(handler).catch_unwind(),
        deadline: deadline.map(tokio::time::sleep_until),
        method,
    }
}

pin_project_lite::pin_project! {
    /// See [`run_handler`]: a plain struct rather than an `async fn`, which would hold the
    /// handler's future twice.
    struct RunHandler<Fut> {
        #[pin]
        handler: CatchUnwind<AssertUnwindSafe<Fut>>,
        #[pin]
        deadline: Option<Sleep>,
        method: &'static str,
    }
}

impl<T, Fut> Future for RunHandler<Fut>
where
    Fut: Future<Output = (Context, Result<T, Status>)>,
{
    type Output = (Metadata, Result<T, Status>);

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let method = *this.method;
        match this.handler.poll(cx) {
            Poll::Ready(Ok((mut ctx, result))) => return Poll::Ready((ctx.take_response_metadata(), result)),
            Poll::Ready(Err(panic)) => {
                tracing::error!(method, panic = panic_message(&panic), "handler panicked");
                let status = Status::internal(format!("handler for {method} panicked"));
                return Poll::Ready((Metadata::new(), Err(status)));
            }
            Poll::Pending => {}
        }
        if let Some(deadline) = this.deadline.as_pin_mut() {
            ready!(deadline.poll(cx));
            let status = Status::deadline_exceeded(format!("deadline exceeded while {method} was running"));
            return Poll::Ready((Metadata::new(), Err(status)));
        }
        Poll::Pending
    }
}

pin_project_lite::pin_project! {
    /// A unary handler's task: runs it, then answers.
    struct UnaryTask<Resp, C, Fut> {
        #[pin]
        run: RunHandler<Fut>,
        responder: Option<Responder>,
        _codec: PhantomData<fn() -> (Resp, C)>,
    }
}

impl<Resp, C, Fut> Future for UnaryTask<Resp, C, Fut>
where
    C: Codec<Resp>,
    Fut: Future<Output = (Context, Result<Resp, Status>)>,
{
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<()> {
        let this = self.project();
        let (metadata, result) = ready!(this.run.poll(cx));
        if let Some(responder) = this.responder.take() {
            responder.answer::<Resp, C>(metadata, result);
        }
        Poll::Ready(())
    }
}

/// A handler's outcome, with any refusal mark cleared: the handler ran. (Behind
/// interceptors, the chain's end does the same.)
async fn processed<T>(
    handler: impl Future<Output = (Context, Result<T, Status>)>,
) -> (Context, Result<T, Status>) {
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
        Spawned(None)
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

pub(crate) fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}
