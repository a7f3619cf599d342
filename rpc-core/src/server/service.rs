//! The seam between the server runtime and generated dispatch code.
//!
//! A generated `FooServer<T>` implements [`Service`]: it names its methods in a static
//! [`ServiceDescriptor`] and, for each incoming call, hands a [`ServerCall`] to the helper
//! for the method's kind. A unary handler is polled once right there, on the connection's
//! task: most answer without waiting, and are answered then, with no task spawned; one
//! that waits moves to a task of its own. Streaming handlers always get a task, since they
//! run alongside their streams.

use std::future::Future;
use std::marker::PhantomData;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, Waker, ready};

use bytes::Bytes;
use futures_util::FutureExt;
use futures_util::future::{CatchUnwind, Either};
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Sleep;

use super::context::Context;
use crate::codec::Codec;
use crate::interceptor::{DynServerInterceptor, run_chain};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::stream::{Outlet, StreamEvent, StreamSender, StreamShared, Streaming};
use crate::wire::{Frame, FrameKind, flags};

/// The shape of a method's call: how many messages go each way.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MethodKind {
    /// One request, one response.
    Unary,
    /// One request, a stream of responses.
    ServerStreaming,
    /// A stream of requests, one response.
    ClientStreaming,
    /// Streams both ways.
    BidiStreaming,
}

/// A method of a service, as routed on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MethodDescriptor {
    /// The method's name within its service, e.g. `SayHello`.
    pub name: &'static str,
    /// The full name sent on the wire, e.g. `/helloworld.Greeter/SayHello`.
    pub path: &'static str,
    /// Its call shape.
    pub kind: MethodKind,
}

/// A service's name and methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServiceDescriptor {
    /// The full service name, e.g. `helloworld.Greeter`.
    pub name: &'static str,
    /// The methods, in declaration order; a method's index is its position here.
    pub methods: &'static [MethodDescriptor],
}

/// A mountable service: what `#[service]` and the `.proto` generator implement for
/// `FooServer<T>`. Implementing it by hand is possible but rarely needed.
pub trait Service: Send + Sync + 'static {
    /// The service's name and methods.
    fn descriptor(&self) -> &'static ServiceDescriptor;

    /// Starts serving `call` to the method at index `method` of the descriptor.
    fn call(&self, method: usize, call: ServerCall) -> Spawned;
}

/// What a handler task sends its connection.
#[derive(Debug)]
pub(crate) enum Outgoing {
    /// The response frame of a unary call that finished in a task of its own (boxed: the
    /// stream events that share the channel are small, and come per message).
    Response(Box<Frame>),
    /// A stream's message, end, or released credit.
    Stream(StreamEvent),
    /// The call's task ended without a response (cancelled or aborted).
    Finished(u64),
}

/// What became of a call handed to its handler: for the connection, which keeps a running
/// handler's handle to cancel it.
#[derive(Debug)]
pub struct Spawned(pub(crate) Handled);

/// See [`Spawned`].
// The answered frame is the common case, handed straight back: boxing it would cost an
// allocation per call to save a move.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Handled {
    /// The handler runs in a task of its own; its answer comes through the connection's
    /// channel.
    Running(AbortHandle),
    /// The handler answered at once: here is the response.
    Answered(Frame),
    /// The answer is already on its way through the connection's channel.
    Sent,
}

/// One incoming call, on its way to a handler.
pub struct ServerCall {
    pub(crate) id: u64,
    pub(crate) context: Context,
    pub(crate) out: mpsc::UnboundedSender<Outgoing>,
    pub(crate) payload: Payload,
    pub(crate) interceptors: Option<Arc<[Arc<dyn DynServerInterceptor>]>>,
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

/// What a call brings: a unary request's body, or a stream's plumbing.
#[derive(Debug)]
pub(crate) enum Payload {
    Unary(Bytes),
    Stream(StreamParts),
}

/// The server's ends of a stream, set up by the connection.
#[derive(Debug)]
pub(crate) struct StreamParts {
    pub(crate) inbound: crate::stream::inbound::InboundRx,
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) window: u64,
}

impl ServerCall {
    /// Runs a unary handler. `handler` receives the context and the decoded request, and
    /// gives the context back with its result, so that response metadata set by the
    /// handler reaches the caller.
    ///
    /// A body that does not decode answers `InvalidArgument` at once. The handler is polled
    /// once on the spot: if it finishes then (it did not need to wait), it is answered with
    /// no task spawned; otherwise it continues in a task of its own. It is abandoned at the
    /// caller's deadline (`DeadlineExceeded`) and when the caller cancels; a panic answers
    /// `Internal` for this call alone.
    pub fn spawn_unary<Req, Resp, C, F, Fut>(self, handler: F) -> Spawned
    where
        C: Codec<Req> + Codec<Resp>,
        Req: Send + 'static,
        Resp: Send + 'static,
        F: FnOnce(Context, Req) -> Fut + Send + 'static,
        Fut: Future<Output = (Context, Result<Resp, Status>)> + Send + 'static,
    {
        let ServerCall { id, context, out, payload, interceptors } = self;
        let Payload::Unary(body) = payload else {
            return mismatched(id, &out, context.method());
        };
        let method = context.method();
        let deadline = context.deadline_instant();
        // A codec is user code: its panic fails this call, not the connection.
        let decoded = std::panic::catch_unwind(AssertUnwindSafe(|| decode_request::<Req, C>(body)));
        let request = match decoded {
            Ok(Ok(request)) => request,
            Ok(Err(status)) => return Spawned(Handled::Answered(error_response(id, status))),
            Err(panic) => {
                tracing::error!(method, panic = panic_message(&panic), "decoding a request panicked");
                let status = Status::internal(format!("decoding the request of {method} panicked"));
                return Spawned(Handled::Answered(error_response(id, status)));
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
        let mut task = Box::pin(UnaryTask::<Resp, C, _> {
            run: run_handler(method, deadline, handling),
            id,
            _codec: PhantomData,
        });
        // The first poll, here: a handler that needs not wait is answered without a task. (A
        // handler that waits registers this no-op waker, then the task's on its next poll.)
        let mut cx = std::task::Context::from_waker(Waker::noop());
        match std::panic::catch_unwind(AssertUnwindSafe(|| task.as_mut().poll(&mut cx))) {
            Ok(Poll::Ready(frame)) => Spawned(Handled::Answered(frame)),
            Ok(Poll::Pending) => {
                let responder = Responder { id, out: Some(out) };
                let running = tokio::spawn(async move { responder.send(task.await) });
                Spawned(Handled::Running(running.abort_handle()))
            }
            Err(panic) => {
                tracing::error!(method, panic = panic_message(&panic), "encoding a response panicked");
                let status = Status::internal(format!("encoding the response of {method} panicked"));
                Spawned(Handled::Answered(error_response(id, status)))
            }
        }
    }

    /// Spawns a server-streaming handler: one request in, a stream of responses out.
    ///
    /// The single request is read (and decoded) inside the task; the stream ends, after the
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
        self.spawn_stream::<Req, Resp, C, _, _>(move |ctx, requests, responses| async move {
            match requests.single("request").await {
                Ok(request) => handler(ctx, request, responses).await,
                Err(status) => (ctx, Err(status)),
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
        let ServerCall { id, context, out, payload, interceptors } = self;
        let Payload::Stream(parts) = payload else {
            return mismatched(id, &out, context.method());
        };
        let outlet = Outlet::Server(out.clone());
        let requests = Streaming::new(
            id,
            parts.inbound,
            outlet.clone(),
            decode_request::<Req, C>,
            parts.window,
            None,
            false,
        );
        let responses = StreamSender::new(id, parts.shared, outlet, encode_message::<Resp, C>, false);
        let responder = Responder { id, out: Some(out) };
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
            let mut end = error_response(id, result.err().unwrap_or_else(|| Status::new(Code::Ok, "")));
            end.kind = FrameKind::StreamEnd;
            let mut trailers = metadata;
            trailers.extend(std::mem::take(&mut end.header.metadata));
            end.header.metadata = trailers;
            responder.send_stream_end(end);
        };
        Spawned(Handled::Running(tokio::spawn(task).abort_handle()))
    }

    /// Answers `Unimplemented`: for generated methods of a kind this runtime cannot serve.
    pub fn unimplemented(self) -> Spawned {
        let method = self.context.method();
        let status = Status::unimplemented(format!("{method} is not implemented by this server"));
        mismatched_status(self.id, &self.out, &self.payload, status);
        Spawned(Handled::Sent)
    }
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
    /// A unary handler run to its response frame.
    struct UnaryTask<Resp, C, Fut> {
        #[pin]
        run: RunHandler<Fut>,
        id: u64,
        _codec: PhantomData<fn() -> (Resp, C)>,
    }
}

impl<Resp, C, Fut> Future for UnaryTask<Resp, C, Fut>
where
    C: Codec<Resp>,
    Fut: Future<Output = (Context, Result<Resp, Status>)>,
{
    type Output = Frame;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Frame> {
        let this = self.project();
        let (metadata, result) = ready!(this.run.poll(cx));
        Poll::Ready(match result {
            Ok(message) => {
                let mut frame = Frame::new(FrameKind::Response, *this.id);
                frame.header.metadata = metadata;
                frame.body = C::encode_to_bytes(&message);
                frame
            }
            Err(mut status) => {
                let mut md = metadata;
                md.extend(std::mem::take(status.metadata_mut()));
                error_response(*this.id, status.with_metadata(md))
            }
        })
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

fn encode_message<Resp, C: Codec<Resp>>(message: &Resp) -> Bytes {
    C::encode_to_bytes(message)
}

/// A generated service spawned a call with the helper for another kind of method.
fn mismatched(id: u64, out: &mpsc::UnboundedSender<Outgoing>, method: &str) -> Spawned {
    let status = Status::internal(format!("{method} was dispatched as the wrong kind of call"));
    let _ = out.send(Outgoing::Response(Box::new(error_response(id, status))));
    Spawned(Handled::Sent)
}

/// Answers a call with `status` in the shape its kind expects.
fn mismatched_status(id: u64, out: &mpsc::UnboundedSender<Outgoing>, payload: &Payload, status: Status) {
    let mut frame = error_response(id, status);
    match payload {
        Payload::Unary(_) => {
            let _ = out.send(Outgoing::Response(Box::new(frame)));
        }
        Payload::Stream(_) => {
            frame.kind = FrameKind::StreamEnd;
            let _ = out.send(Outgoing::Stream(StreamEvent::End(Box::new(frame))));
        }
    }
}

/// Builds a `Response` frame carrying a non-OK status.
pub(crate) fn error_response(id: u64, status: Status) -> Frame {
    let refused = status.is_refused();
    let (code, message, metadata) = status.into_parts();
    let mut frame = Frame::new(FrameKind::Response, id);
    if refused {
        frame.flags |= flags::REFUSED;
    }
    if code != Code::Ok {
        frame.header.status_code = Some(code.as_u32());
    }
    if !message.is_empty() {
        frame.header.status_message = Some(Bytes::from(message));
    }
    frame.header.metadata = metadata;
    frame
}

/// Sends exactly one message to the connection for its call: the response, or, if the task
/// ends without one (aborted on cancel, or dropped at shutdown), `Finished`.
struct Responder {
    id: u64,
    out: Option<mpsc::UnboundedSender<Outgoing>>,
}

impl Responder {
    fn send(mut self, frame: Frame) {
        if let Some(out) = self.out.take() {
            // The connection may be gone; then nobody is waiting for the answer.
            let _ = out.send(Outgoing::Response(Box::new(frame)));
        }
    }

    fn send_stream_end(mut self, frame: Frame) {
        if let Some(out) = self.out.take() {
            let _ = out.send(Outgoing::Stream(StreamEvent::End(Box::new(frame))));
        }
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        if let Some(out) = self.out.take() {
            let _ = out.send(Outgoing::Finished(self.id));
        }
    }
}

fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> &str {
    if let Some(s) = panic.downcast_ref::<&str>() {
        s
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s
    } else {
        "non-string panic payload"
    }
}
