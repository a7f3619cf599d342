//! A unary call from the client side: the builder that generated stubs return, and the
//! future that waits for the answer.
//!
//! On a channel with a connection up and a call slot free (the common case), the request is
//! encoded straight into the connection's outbox by the caller, and the future only waits
//! for the answer. Otherwise the request is encoded once into a body of its own, and sent
//! when a connection and a slot are there.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::router::{InFlight, Router};
use super::{CallOptions, Channel, ClientConn, Endpoint, Route};
use crate::codec::Codec;
use crate::conn::{Answer, Note};
use crate::interceptor::{AnyMessage, ClientContext, ClientEndpoint, ClientNext, DynClientInterceptor};
use crate::metadata::Metadata;
use crate::method::{MethodKind, MethodName};
use crate::status::Status;
use crate::wire::{Frame, FrameKind, Header, WireError};

/// A response message with the metadata the server sent along.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response<T> {
    message: T,
    metadata: Metadata,
}

impl<T> Response<T> {
    /// A response with no metadata.
    pub fn new(message: T) -> Response<T> {
        Response { message, metadata: Metadata::new() }
    }

    /// The message.
    pub fn get_ref(&self) -> &T {
        &self.message
    }

    /// The metadata the server sent.
    pub fn metadata(&self) -> &Metadata {
        &self.metadata
    }

    /// The message, dropping the metadata.
    pub fn into_inner(self) -> T {
        self.message
    }

    /// The metadata and the message.
    pub fn into_parts(self) -> (Metadata, T) {
        (self.metadata, self.message)
    }
}

/// A unary call being prepared: set per-call options, then `.await` it.
///
/// Generated clients return one from every unary method:
///
/// ```no_run
/// # use std::time::Duration;
/// # use rpc_core::{ServerContext, Status, client::Channel};
/// # #[derive(Clone, PartialEq, prost::Message)] pub struct HelloRequest {}
/// # #[derive(Clone, PartialEq, prost::Message)] pub struct HelloReply {}
/// # #[rpc_core::service] pub trait Greeter {
/// #     async fn say_hello(&self, ctx: &mut ServerContext, req: HelloRequest) -> Result<HelloReply, Status>;
/// # }
/// # async fn run(channel: Channel) -> Result<(), Status> {
/// let client = GreeterClient::new(channel);
///
/// // The plain call: the message, or the status it failed with.
/// let reply: HelloReply = client.say_hello(HelloRequest {}).await?;
///
/// // With a timeout and metadata, keeping the response's metadata.
/// let response = client
///     .say_hello(HelloRequest {})
///     .timeout(Duration::from_millis(200))
///     .metadata("x-request-id", "42")
///     .full()
///     .await?;
/// println!("{:?} {:?}", response.metadata(), response.get_ref());
/// # Ok(()) }
/// ```
#[must_use = "a call does nothing until it is awaited"]
pub struct UnaryCall<'a, Req, Resp, C> {
    channel: &'a Channel,
    method: MethodName,
    request: Req,
    options: CallOptions,
    _marker: PhantomData<fn() -> (Resp, C)>,
}

impl<'a, Req, Resp, C> UnaryCall<'a, Req, Resp, C>
where
    C: Codec<Req> + Codec<Resp>,
{
    pub(super) fn new(channel: &'a Channel, method: MethodName, request: Req) -> Self {
        UnaryCall { channel, method, request, options: CallOptions::default(), _marker: PhantomData }
    }

    call_option_methods!(
        "Fails the call with `DeadlineExceeded` if no answer came within `timeout`. The remaining \
         time travels with the request, so the server stops working at the same moment. Overrides \
         the channel's default timeout."
    );

    /// Sends the call; the future yields the message with the response's metadata.
    pub fn full(self) -> ResponseFuture<'a, Resp, C>
    where
        Req: AnyMessage,
        Resp: AnyMessage,
    {
        let UnaryCall { channel, method, request, options, .. } = self;
        let deadline = channel.deadline_for(options.timeout);
        let inner = match (channel.chain_for(options.interceptors), &channel.shared.route) {
            (None, Route::Direct(endpoint)) => {
                let raw = RawCall::start(
                    Via::Direct(endpoint),
                    method,
                    options.metadata,
                    deadline,
                    Body::Message {
                        len: <C as Codec<Req>>::encoded_len(&request),
                        write: &mut |buf| <C as Codec<Req>>::encode(&request, buf),
                        keep: &mut || <C as Codec<Req>>::encode_to_bytes(&request),
                    },
                );
                Inner::Direct { raw }
            }
            (None, Route::Balanced(router)) => {
                let body = <C as Codec<Req>>::encode_to_bytes(&request);
                let call = BalancedCall::new(router, method, options.metadata, body, deadline);
                Inner::Balanced { call: Box::pin(call) }
            }
            (Some(chain), _) => {
                let call =
                    intercepted::<Req, Resp, C>(channel, chain, method, options.metadata, deadline, request);
                Inner::Intercepted { call: Box::pin(call) }
            }
        };
        ResponseFuture { inner, _marker: PhantomData }
    }
}

impl<'a, Req, Resp, C> IntoFuture for UnaryCall<'a, Req, Resp, C>
where
    C: Codec<Req> + Codec<Resp>,
    Req: AnyMessage,
    Resp: AnyMessage,
{
    type Output = Result<Resp, Status>;
    type IntoFuture = MessageFuture<'a, Resp, C>;

    fn into_future(self) -> Self::IntoFuture {
        MessageFuture { inner: self.full() }
    }
}

/// A unary call through interceptors: the response of the attempt that succeeded.
async fn intercepted<Req, Resp, C>(
    channel: &Channel,
    chain: Arc<[Arc<dyn DynClientInterceptor>]>,
    method: MethodName,
    metadata: Metadata,
    deadline: Option<Instant>,
    request: Req,
) -> Result<Response<Resp>, Status>
where
    C: Codec<Req> + Codec<Resp>,
    Req: AnyMessage,
    Resp: AnyMessage,
{
    let target = Arc::clone(&channel.shared.target);
    let mut ctx = ClientContext::new(method, MethodKind::Unary, target, metadata, deadline);
    let body = <C as Codec<Req>>::encode_to_bytes(&request);
    let mut end =
        UnaryEndpoint::<Req, Resp, C> { channel, body, request, response: None, _codec: PhantomData };
    ClientNext::new(&chain, &mut end).run(&mut ctx).await?;
    let message = end
        .response
        .take()
        .ok_or_else(|| Status::internal("an interceptor answered OK without sending the call"))?;
    Ok(Response { message, metadata: ctx.take_response_metadata() })
}

/// The end of a client chain for a unary call: one attempt per run, sent as the context
/// says; the request kept (encoded once) for every attempt, and the last response.
struct UnaryEndpoint<'a, Req, Resp, C> {
    channel: &'a Channel,
    body: Bytes,
    request: Req,
    response: Option<Resp>,
    _codec: PhantomData<fn() -> C>,
}

impl<Req, Resp, C> ClientEndpoint for UnaryEndpoint<'_, Req, Resp, C>
where
    C: Codec<Req> + Codec<Resp>,
    Req: AnyMessage,
    Resp: AnyMessage,
{
    fn call<'b>(&'b mut self, ctx: &'b mut ClientContext) -> BoxFuture<'b, Result<(), Status>> {
        Box::pin(async move {
            self.response = None;
            let method = ctx.method_name().clone();
            let deadline = ctx.deadline_instant();
            let metadata = ctx.metadata().clone();
            let result = match &self.channel.shared.route {
                Route::Direct(endpoint) => {
                    let body = Body::Bytes(self.body.clone());
                    RawCall::start(Via::Direct(endpoint), method, metadata, deadline, body).await
                }
                Route::Balanced(router) => {
                    BalancedCall::new(router, method, metadata, self.body.clone(), deadline).await
                }
            };
            match result.and_then(decode_response::<Resp, C>) {
                Ok(Response { message, metadata }) => {
                    ctx.set_response_metadata(metadata);
                    self.response = Some(message);
                    Ok(())
                }
                Err(status) => {
                    ctx.set_response_metadata(status.metadata().clone());
                    Err(status)
                }
            }
        })
    }

    fn request(&self) -> Option<&dyn AnyMessage> {
        Some(&self.request)
    }

    fn response(&self) -> Option<&dyn AnyMessage> {
        self.response.as_ref().map(|response| response as &dyn AnyMessage)
    }
}

/// A request's body, as a call starts: the message itself (encoded straight into the
/// connection's outbox if the call can go at once, or kept as bytes if it must wait), or
/// bytes already encoded.
enum Body<'r> {
    Message { len: usize, write: &'r mut dyn FnMut(&mut BytesMut), keep: &'r mut dyn FnMut() -> Bytes },
    Bytes(Bytes),
}

/// Where a call is sent: through a direct channel's endpoint, or to a balanced channel's
/// instance (counted in flight there while the call lives).
enum Via<'a> {
    Direct(&'a Endpoint),
    Node(InFlight),
}

impl Via<'_> {
    fn endpoint(&self) -> &Endpoint {
        match self {
            Via::Direct(endpoint) => endpoint,
            Via::Node(call) => call.node().endpoint(),
        }
    }
}

enum State {
    /// Waiting for a connection and a call slot; the request kept to send then.
    Waiting {
        ready: BoxFuture<'static, Result<Arc<ClientConn>, Status>>,
        metadata: Metadata,
        body: Bytes,
    },
    /// Sent: waiting for the answer.
    Sent {
        conn: Arc<ClientConn>,
        id: u64,
        answer: oneshot::Receiver<Result<Answer, Status>>,
    },
    Failed(Status),
    Done,
}

pin_project_lite::pin_project! {
    /// One request on its way: its answer, or why there is none. Dropping it before it
    /// completes cancels the call.
    struct RawCall<'a> {
        via: Option<Via<'a>>,
        method: MethodName,
        deadline: Option<Instant>,
        state: State,
        #[pin]
        sleep: Option<Sleep>,
    }

    impl<'a> PinnedDrop for RawCall<'a> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let State::Sent { conn, id, answer } = this.state {
                // Answered already: nothing to call off.
                if answer.try_recv().is_err() {
                    cancel(conn, *id);
                }
            }
        }
    }
}

/// Tells the server the call is off, and the connection to forget it.
fn cancel(conn: &ClientConn, id: u64) {
    conn.shared.with_outbox(|outbox| {
        if outbox.closed.is_none() {
            // A cancel frame is a few bytes: below any limit.
            let _ = outbox.queue(&Frame::new(FrameKind::Cancel, id));
            outbox.note(Note::Cancelled(id));
        }
    });
}

/// Why a request could not be queued on a connection.
enum NotSent {
    /// The connection stopped taking calls (a `GOAWAY`): another one will. The metadata is
    /// given back.
    Draining(Metadata),
    Failed(Status),
}

/// Queues a `REQUEST` on `conn` (whose call slot the caller holds): its answer comes on the
/// receiver.
fn send_on(
    conn: &ClientConn,
    method: &MethodName,
    metadata: Metadata,
    deadline: Option<Instant>,
    body_len: usize,
    write_body: &mut dyn FnMut(&mut BytesMut),
) -> Result<(u64, oneshot::Receiver<Result<Answer, Status>>), NotSent> {
    let timeout = match deadline {
        None => None,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let status = Status::deadline_exceeded("the deadline passed before the call could be sent");
                return Err(NotSent::Failed(status));
            }
            Some(left)
        }
    };
    let header = Header { method: Some(method.to_bytes()), timeout, metadata, ..Header::default() };
    let (reply, answer) = oneshot::channel();
    conn.shared
        .with_outbox(|outbox| {
            if let Some(status) = &outbox.closed {
                return Err(NotSent::Failed(status.clone().refused()));
            }
            if !conn.shared.is_accepting() {
                return Err(NotSent::Draining(header.metadata));
            }
            let id = outbox.next_call_id();
            outbox
                .queue_with(FrameKind::Request, 0, id, &header, body_len, write_body)
                .map_err(|err| NotSent::Failed(not_encoded(err)))?;
            outbox.note(Note::Sent { id, reply });
            Ok(id)
        })
        .map(|id| (id, answer))
}

/// The status of a request that could not be encoded.
fn not_encoded(err: WireError) -> Status {
    match err {
        WireError::FrameTooLarge { len, max } => Status::resource_exhausted(format!(
            "request of {len} bytes exceeds the server's limit of {max} bytes"
        )),
        WireError::HeaderTooLarge { len, max } => Status::resource_exhausted(format!(
            "request metadata of {len} bytes exceeds the server's limit of {max} bytes"
        )),
        err => Status::internal(format!("request could not be encoded: {err}")),
    }
}

/// A connection to `endpoint` with a call slot taken on it: waits for one to connect, and
/// for a slot (the server's `MAX_CONCURRENT_CALLS`) to free up.
async fn connection_with_slot(endpoint: Endpoint) -> Result<Arc<ClientConn>, Status> {
    loop {
        let conn = endpoint.connection().await?;
        if conn.slots.acquire().await {
            return Ok(conn);
        }
        // That connection ended while we waited: the next one.
    }
}

impl<'a> RawCall<'a> {
    /// Starts a call to `method` via `via`, giving up at `deadline`: sent at once when a
    /// connection is up with a slot free, else once there is one.
    fn start(
        via: Via<'a>,
        method: MethodName,
        metadata: Metadata,
        deadline: Option<Instant>,
        mut body: Body<'_>,
    ) -> RawCall<'a> {
        let endpoint = via.endpoint();
        let mut metadata = metadata;
        if let Some(conn) = endpoint.ready()
            && conn.slots.try_acquire()
        {
            let sent = match &mut body {
                Body::Message { len, write, .. } => {
                    send_on(&conn, &method, metadata, deadline, *len, &mut **write)
                }
                Body::Bytes(bytes) => {
                    let bytes = bytes.clone();
                    send_on(&conn, &method, metadata, deadline, bytes.len(), &mut |buf| buf.put_slice(&bytes))
                }
            };
            let sleep = deadline.map(tokio::time::sleep_until);
            match sent {
                Ok((id, answer)) => {
                    return RawCall {
                        via: Some(via),
                        method,
                        deadline,
                        state: State::Sent { conn, id, answer },
                        sleep,
                    };
                }
                Err(NotSent::Failed(status)) => {
                    conn.slots.release();
                    return RawCall { via: Some(via), method, deadline, state: State::Failed(status), sleep };
                }
                Err(NotSent::Draining(returned)) => {
                    conn.slots.release();
                    metadata = returned;
                }
            }
        }
        let state = State::Waiting {
            ready: Box::pin(connection_with_slot(endpoint.clone())),
            metadata,
            body: keep(body),
        };
        RawCall { via: Some(via), method, deadline, state, sleep: deadline.map(tokio::time::sleep_until) }
    }

    /// A call that failed before it could be sent anywhere.
    fn failed(status: Status, method: MethodName) -> RawCall<'a> {
        RawCall { via: None, method, deadline: None, state: State::Failed(status), sleep: None }
    }

    /// The balanced channel's instance the call went to.
    fn in_flight(&self) -> Option<&InFlight> {
        match &self.via {
            Some(Via::Node(call)) => Some(call),
            _ => None,
        }
    }
}

/// The body kept as bytes, to be sent once the call can go.
fn keep(body: Body<'_>) -> Bytes {
    match body {
        Body::Message { keep, .. } => keep(),
        Body::Bytes(bytes) => bytes,
    }
}

impl Future for RawCall<'_> {
    type Output = Result<Answer, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            match std::mem::replace(this.state, State::Done) {
                State::Waiting { mut ready, metadata, body } => match ready.as_mut().poll(cx) {
                    Poll::Ready(Ok(conn)) => {
                        let endpoint = match this.via.as_ref() {
                            Some(via) => via.endpoint(),
                            None => return Poll::Ready(Err(Status::internal("a call without an endpoint"))),
                        };
                        let sent =
                            send_on(&conn, this.method, metadata, *this.deadline, body.len(), &mut |buf| {
                                buf.put_slice(&body)
                            });
                        *this.state = match sent {
                            Ok((id, answer)) => State::Sent { conn, id, answer },
                            Err(not_sent) => {
                                conn.slots.release();
                                match not_sent {
                                    NotSent::Failed(status) => State::Failed(status),
                                    NotSent::Draining(metadata) => State::Waiting {
                                        ready: Box::pin(connection_with_slot(endpoint.clone())),
                                        metadata,
                                        body,
                                    },
                                }
                            }
                        };
                    }
                    Poll::Ready(Err(status)) => return Poll::Ready(Err(status)),
                    Poll::Pending => {
                        *this.state = State::Waiting { ready, metadata, body };
                        if let Some(sleep) = this.sleep.as_mut().as_pin_mut()
                            && sleep.poll(cx).is_ready()
                        {
                            let method = this.method;
                            *this.state = State::Done;
                            return Poll::Ready(Err(Status::deadline_exceeded(format!(
                                "{method}: the deadline passed before the call could be sent"
                            ))));
                        }
                        return Poll::Pending;
                    }
                },
                State::Sent { conn, id, mut answer } => {
                    if let Poll::Ready(result) = Pin::new(&mut answer).poll(cx) {
                        return Poll::Ready(match result {
                            Ok(result) => result,
                            Err(_) => Err(Status::unavailable("the connection ended without an answer")),
                        });
                    }
                    if let Some(sleep) = this.sleep.as_mut().as_pin_mut()
                        && sleep.poll(cx).is_ready()
                    {
                        cancel(&conn, id);
                        let method = this.method;
                        return Poll::Ready(Err(Status::deadline_exceeded(format!(
                            "{method}: the deadline passed before an answer came"
                        ))));
                    }
                    *this.state = State::Sent { conn, id, answer };
                    return Poll::Pending;
                }
                State::Failed(status) => return Poll::Ready(Err(status)),
                State::Done => {
                    return Poll::Ready(Err(Status::internal("response future polled after it completed")));
                }
            }
        }
    }
}

pin_project_lite::pin_project! {
    #[project = InnerProj]
    enum Inner<'a, Resp> {
        Direct { #[pin] raw: RawCall<'a> },
        // Boxed: the common, direct call stays small.
        Balanced { call: Pin<Box<BalancedCall<'a>>> },
        // Decoded at the end of the chain, for the interceptors to see.
        Intercepted { call: BoxFuture<'a, Result<Response<Resp>, Status>> },
    }
}

pin_project_lite::pin_project! {
    /// The answer to a unary call, with its metadata: see [`UnaryCall::full`].
    ///
    /// Dropping it before it completes cancels the call: the server is told, and stops.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<'a, Resp, C> {
        #[pin]
        inner: Inner<'a, Resp>,
        _marker: PhantomData<fn() -> (Resp, C)>,
    }
}

impl<Resp, C: Codec<Resp>> Future for ResponseFuture<'_, Resp, C> {
    type Output = Result<Response<Resp>, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let answer = match self.project().inner.project() {
            InnerProj::Direct { raw } => ready!(raw.poll(cx)),
            InnerProj::Balanced { call } => ready!(call.as_mut().poll(cx)),
            InnerProj::Intercepted { call } => return call.as_mut().poll(cx),
        };
        Poll::Ready(answer.and_then(decode_response::<Resp, C>))
    }
}

pin_project_lite::pin_project! {
    /// The answer to a unary call: what awaiting a [`UnaryCall`] gives.
    #[must_use = "futures do nothing unless polled"]
    pub struct MessageFuture<'a, Resp, C> {
        #[pin]
        inner: ResponseFuture<'a, Resp, C>,
    }
}

impl<Resp, C: Codec<Resp>> Future for MessageFuture<'_, Resp, C> {
    type Output = Result<Resp, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        self.project().inner.poll(cx).map(|r| r.map(Response::into_inner))
    }
}

pin_project_lite::pin_project! {
    /// A unary call on a balanced channel: sent to the instance the router picks, and to
    /// another one after a failure when that is safe (see [`crate::balance`]).
    struct BalancedCall<'a> {
        router: &'a Arc<dyn Router>,
        method: MethodName,
        // Kept to send the call again.
        metadata: Metadata,
        body: Bytes,
        deadline: Option<Instant>,
        // The addresses tried so far.
        tried: Vec<Arc<str>>,
        attempts: u32,
        #[pin]
        raw: RawCall<'static>,
    }
}

impl<'a> BalancedCall<'a> {
    fn new(
        router: &'a Arc<dyn Router>,
        method: MethodName,
        metadata: Metadata,
        body: Bytes,
        deadline: Option<Instant>,
    ) -> BalancedCall<'a> {
        let raw = match router.pick(&metadata, &[]) {
            Ok(call) => RawCall::start(
                Via::Node(call),
                method.clone(),
                metadata.clone(),
                deadline,
                Body::Bytes(body.clone()),
            ),
            Err(status) => RawCall::failed(status, method.clone()),
        };
        BalancedCall { router, method, metadata, body, deadline, tried: Vec::new(), attempts: 1, raw }
    }
}

impl Future for BalancedCall<'_> {
    type Output = Result<Answer, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        loop {
            let result = ready!(this.raw.as_mut().poll(cx));
            let (address, status) = {
                let Some(call) = this.raw.as_ref().get_ref().in_flight() else {
                    // No instance to send it to.
                    return Poll::Ready(result);
                };
                let status = result.as_ref().err().cloned();
                this.router.record(call, status.as_ref());
                (Arc::clone(call.node().address()), status)
            };
            let Some(status) = status else { return Poll::Ready(result) };
            let time_left = this.deadline.is_none_or(|deadline| Instant::now() < deadline);
            if !time_left || !this.router.may_fail_over(this.method.as_str(), &status, *this.attempts) {
                return Poll::Ready(result);
            }
            this.tried.push(address);
            let Ok(next) = this.router.pick(this.metadata, this.tried) else {
                return Poll::Ready(result);
            };
            tracing::debug!(method = this.method.as_str(), failed = %status, next = %next.node().address(), "sending the call to another instance");
            *this.attempts += 1;
            let body = Body::Bytes(this.body.clone());
            this.raw.set(RawCall::start(
                Via::Node(next),
                this.method.clone(),
                this.metadata.clone(),
                *this.deadline,
                body,
            ));
        }
    }
}

/// Turns an answer into the message.
fn decode_response<Resp, C: Codec<Resp>>(answer: Answer) -> Result<Response<Resp>, Status> {
    match C::decode(answer.body) {
        Ok(message) => Ok(Response { message, metadata: answer.metadata }),
        Err(err) => Err(Status::internal(format!("response does not decode: {err}"))),
    }
}
