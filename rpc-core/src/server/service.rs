//! The seam between the server runtime and generated dispatch code.
//!
//! A generated `FooServer<T>` implements [`Service`]: it names its methods in a static
//! [`ServiceDescriptor`] and, for each incoming call, hands a [`ServerCall`] to the helper
//! for the method's kind, which spawns the handler as one task. The handler's future is
//! spawned as its concrete type: there is no boxed future per call.

use std::future::Future;
use std::panic::AssertUnwindSafe;

use bytes::Bytes;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use super::context::Context;
use crate::codec::Codec;
use crate::status::{Code, Status};
use crate::wire::{Frame, FrameKind};

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
    /// The response frame of a finished call.
    Response(Frame),
    /// The call ended without a response (cancelled or aborted).
    Finished(u64),
}

/// The handle of a spawned handler, which the connection keeps to cancel it.
#[derive(Debug)]
pub struct Spawned(pub(crate) Option<AbortHandle>);

/// One incoming call, on its way to a handler.
#[derive(Debug)]
pub struct ServerCall {
    pub(crate) id: u64,
    pub(crate) body: Bytes,
    pub(crate) context: Context,
    pub(crate) out: mpsc::UnboundedSender<Outgoing>,
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
        let ServerCall { id, body, context, out } = self;
        let responder = Responder { id, out: Some(out) };
        let method = context.method();
        let deadline = context.deadline_instant();
        let task = async move {
            let outcome = match <C as Codec<Req>>::decode(body) {
                Err(err) => {
                    Err(Status::invalid_argument(format!("request to {method} does not decode: {err}")))
                }
                Ok(request) => {
                    let run = AssertUnwindSafe(async move { handler(context, request).await }).catch_unwind();
                    let finished = match deadline {
                        Some(deadline) => tokio::time::timeout_at(deadline, run).await.ok(),
                        None => Some(run.await),
                    };
                    match finished {
                        None => Err(Status::deadline_exceeded(format!(
                            "deadline exceeded while {method} was running"
                        ))),
                        Some(Err(panic)) => {
                            tracing::error!(method, panic = panic_message(&panic), "handler panicked");
                            Err(Status::internal(format!("handler for {method} panicked")))
                        }
                        Some(Ok((mut ctx, result))) => Ok((ctx.take_response_metadata(), result)),
                    }
                }
            };
            let frame = match outcome {
                Ok((metadata, Ok(message))) => {
                    let mut frame = Frame::new(FrameKind::Response, id);
                    frame.header.metadata = metadata;
                    frame.body = <C as Codec<Resp>>::encode_to_bytes(&message);
                    frame
                }
                Ok((metadata, Err(mut status))) => {
                    let mut md = metadata;
                    md.extend(std::mem::take(status.metadata_mut()));
                    error_response(id, status.with_metadata(md))
                }
                Err(status) => error_response(id, status),
            };
            responder.send(frame);
        };
        Spawned(Some(tokio::spawn(task).abort_handle()))
    }

    /// Answers `Unimplemented`: for generated methods of a kind this runtime cannot serve.
    pub fn unimplemented(self) -> Spawned {
        let method = self.context.method();
        let status = Status::unimplemented(format!("{method} is not implemented by this server"));
        let _ = self.out.send(Outgoing::Response(error_response(self.id, status)));
        Spawned(None)
    }
}

/// Builds a `Response` frame carrying a non-OK status.
pub(crate) fn error_response(id: u64, status: Status) -> Frame {
    let (code, message, metadata) = status.into_parts();
    let mut frame = Frame::new(FrameKind::Response, id);
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
