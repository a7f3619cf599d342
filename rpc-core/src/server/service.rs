//! The seam between the server runtime and generated dispatch code.
//!
//! A generated `FooServer<T>` implements [`Service`]: it names its methods in a static
//! [`ServiceDescriptor`] and, for each incoming call, hands a [`ServerCall`] to the helper
//! for the method's kind, which spawns the handler as one task. The handler's future is
//! spawned as its concrete type: there is no boxed future per call.

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::context::Context;
use crate::codec::Codec;
use crate::interceptor::{DynServerInterceptor, run_chain};
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::stream::{Inbound, Outlet, StreamEvent, StreamSender, StreamShared, Streaming};
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
    /// The response frame of a finished unary call.
    Response(Frame),
    /// A stream's message, end, or released credit.
    Stream(StreamEvent),
    /// The call's task ended without a response (cancelled or aborted).
    Finished(u64),
}

/// The handle of a spawned handler, which the connection keeps to cancel it.
#[derive(Debug)]
pub struct Spawned(pub(crate) Option<AbortHandle>);

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
    pub(crate) inbound: mpsc::UnboundedReceiver<Inbound>,
    pub(crate) shared: Arc<StreamShared>,
    pub(crate) window: u64,
}

impl ServerCall {
    /// Spawns a unary handler. `handler` receives the context and the decoded request, and
    /// gives the context back with its result, so that response metadata set by the
    /// handler reaches the caller.
    ///
    /// The request is decoded inside the task; a body that does not decode answers
    /// `InvalidArgument`. The handler is abandoned at the caller's deadline
    /// (`DeadlineExceeded`) and when the caller cancels; a panic answers `Internal` for
    /// this call alone.
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
        let responder = Responder { id, out: Some(out) };
        let method = context.method();
        let deadline = context.deadline_instant();
        let task = async move {
            let (metadata, result) = match decode_request::<Req, C>(body) {
                Err(status) => (Metadata::new(), Err(status)),
                Ok(request) => match interceptors {
                    None => run_handler(method, deadline, processed(handler(context, request))).await,
                    Some(chain) => {
                        let handler = move |ctx| handler(ctx, request);
                        run_handler(
                            method,
                            deadline,
                            async move { run_chain(&chain, context, handler).await },
                        )
                        .await
                    }
                },
            };
            let frame = match result {
                Ok(message) => {
                    let mut frame = Frame::new(FrameKind::Response, id);
                    frame.header.metadata = metadata;
                    frame.body = <C as Codec<Resp>>::encode_to_bytes(&message);
                    frame
                }
                Err(mut status) => {
                    let mut md = metadata;
                    md.extend(std::mem::take(status.metadata_mut()));
                    error_response(id, status.with_metadata(md))
                }
            };
            responder.send(frame);
        };
        Spawned(Some(tokio::spawn(task).abort_handle()))
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
        Spawned(Some(tokio::spawn(task).abort_handle()))
    }

    /// Answers `Unimplemented`: for generated methods of a kind this runtime cannot serve.
    pub fn unimplemented(self) -> Spawned {
        let method = self.context.method();
        let status = Status::unimplemented(format!("{method} is not implemented by this server"));
        mismatched_status(self.id, &self.out, &self.payload, status);
        Spawned(None)
    }
}

/// Runs a handler under the call's deadline, catching a panic: the response metadata it set
/// and its outcome.
async fn run_handler<T, Fut>(
    method: &'static str,
    deadline: Option<tokio::time::Instant>,
    handler: Fut,
) -> (Metadata, Result<T, Status>)
where
    Fut: Future<Output = (Context, Result<T, Status>)>,
{
    let run = AssertUnwindSafe(handler).catch_unwind();
    let finished = match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, run).await.ok(),
        None => Some(run.await),
    };
    match finished {
        None => (
            Metadata::new(),
            Err(Status::deadline_exceeded(format!("deadline exceeded while {method} was running"))),
        ),
        Some(Err(panic)) => {
            tracing::error!(method, panic = panic_message(&panic), "handler panicked");
            (Metadata::new(), Err(Status::internal(format!("handler for {method} panicked"))))
        }
        Some(Ok((mut ctx, result))) => (ctx.take_response_metadata(), result),
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
    let _ = out.send(Outgoing::Response(error_response(id, status)));
    Spawned(None)
}

/// Answers a call with `status` in the shape its kind expects.
fn mismatched_status(id: u64, out: &mpsc::UnboundedSender<Outgoing>, payload: &Payload, status: Status) {
    let mut frame = error_response(id, status);
    match payload {
        Payload::Unary(_) => {
            let _ = out.send(Outgoing::Response(frame));
        }
        Payload::Stream(_) => {
            frame.kind = FrameKind::StreamEnd;
            let _ = out.send(Outgoing::Stream(StreamEvent::Frame(frame)));
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
            let _ = out.send(Outgoing::Response(frame));
        }
    }

    fn send_stream_end(mut self, frame: Frame) {
        if let Some(out) = self.out.take() {
            let _ = out.send(Outgoing::Stream(StreamEvent::Frame(frame)));
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
