//! A unary call from the client side: the builder that generated stubs return, and the
//! future that waits for the answer.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::Bytes;
use tokio::sync::oneshot;
use tokio::time::Sleep;

use super::connection::{Answer, Request};
use super::{CallOptions, Channel, Endpoint, Route};
use crate::balance::{Balancer, InFlight};
use crate::codec::Codec;
use crate::interceptor::{BoxFuture, ClientContext, ClientEndpoint, ClientNext, DynClientInterceptor};
use crate::metadata::Metadata;
use crate::server::MethodKind;
use crate::status::{Code, Status};
use crate::wire::flags;

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
/// # use rpc_core::{Context, Status, client::Channel};
/// # #[derive(Clone, PartialEq, prost::Message)] pub struct HelloRequest {}
/// # #[derive(Clone, PartialEq, prost::Message)] pub struct HelloReply {}
/// # #[rpc_core::service] pub trait Greeter {
/// #     async fn say_hello(&self, ctx: &mut Context, req: HelloRequest) -> Result<HelloReply, Status>;
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
    method: &'static str,
    request: Req,
    options: CallOptions,
    _marker: PhantomData<fn() -> (Resp, C)>,
}

impl<'a, Req, Resp, C> UnaryCall<'a, Req, Resp, C>
where
    C: Codec<Req> + Codec<Resp>,
{
    pub(super) fn new(channel: &'a Channel, method: &'static str, request: Req) -> Self {
        UnaryCall { channel, method, request, options: CallOptions::default(), _marker: PhantomData }
    }

    call_option_methods!(
        "Fails the call with `DeadlineExceeded` if no answer came within `timeout`. The remaining \
         time travels with the request, so the server stops working at the same moment. Overrides \
         the channel's default timeout."
    );

    /// Sends the call; the future yields the message with the response's metadata.
    pub fn full(self) -> ResponseFuture<'a, Resp, C> {
        let body = <C as Codec<Req>>::encode_to_bytes(&self.request);
        let channel = self.channel;
        let inner = match (&channel.shared.interceptors, &channel.shared.route) {
            (None, Route::Direct(endpoint)) => {
                let deadline = channel.deadline_for(&self.options);
                let request = endpoint.request(self.method, self.options.metadata, body);
                Inner::Direct { raw: RawCall::send(Via::Direct(endpoint), request, self.method, deadline) }
            }
            (None, Route::Balanced(balancer)) => {
                let deadline = channel.deadline_for(&self.options);
                let call = BalancedCall::new(balancer, self.method, self.options.metadata, body, deadline);
                Inner::Balanced { call: Box::pin(call) }
            }
            (Some(chain), _) => {
                let chain = Arc::clone(chain);
                let call = intercepted(channel, chain, self.method, self.options, body);
                Inner::Intercepted { call: Box::pin(call) }
            }
        };
        ResponseFuture { inner, _marker: PhantomData }
    }
}

impl<'a, Req, Resp, C> IntoFuture for UnaryCall<'a, Req, Resp, C>
where
    C: Codec<Req> + Codec<Resp>,
{
    type Output = Result<Resp, Status>;
    type IntoFuture = MessageFuture<'a, Resp, C>;

    fn into_future(self) -> Self::IntoFuture {
        MessageFuture { inner: self.full() }
    }
}

/// A unary call through the channel's interceptors: the answer of the attempt that
/// succeeded.
async fn intercepted(
    channel: &Channel,
    chain: Arc<[Arc<dyn DynClientInterceptor>]>,
    method: &'static str,
    options: CallOptions,
    body: Bytes,
) -> Result<Answer, Status> {
    let deadline = channel.deadline_for(&options);
    let target = Arc::clone(&channel.shared.target);
    let mut ctx = ClientContext::new(method, MethodKind::Unary, target, options.metadata, deadline);
    let end = UnaryEndpoint { channel, body };
    ClientNext::new(&chain, &end).run(&mut ctx).await?;
    ctx.response.take().ok_or_else(|| Status::internal("an interceptor answered OK without sending the call"))
}

/// The end of a client chain for a unary call: one attempt, sent as the context says.
struct UnaryEndpoint<'a> {
    channel: &'a Channel,
    body: Bytes,
}

impl ClientEndpoint for UnaryEndpoint<'_> {
    fn call<'b>(&'b self, ctx: &'b mut ClientContext) -> BoxFuture<'b, Result<(), Status>> {
        Box::pin(async move {
            let method = ctx.method();
            let deadline = ctx.deadline_instant();
            let response = match &self.channel.shared.route {
                Route::Direct(endpoint) => {
                    let request = endpoint.request(method, ctx.metadata().clone(), self.body.clone());
                    RawCall::send(Via::Direct(endpoint), request, method, deadline).await?
                }
                Route::Balanced(balancer) => {
                    let metadata = ctx.metadata().clone();
                    BalancedCall::new(balancer, method, metadata, self.body.clone(), deadline).await?
                }
            };
            ctx.set_response_metadata(response.metadata.clone());
            match status_of(&response) {
                Some(status) => Err(status),
                None => {
                    ctx.response = Some(response);
                    Ok(())
                }
            }
        })
    }
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
            Via::Node(in_flight) => in_flight.node().endpoint(),
        }
    }
}

enum State {
    Waiting(oneshot::Receiver<Result<Answer, Status>>),
    Failed(Status),
    Done,
}

pin_project_lite::pin_project! {
    /// One request on its way: its response frame, or why there is none. Dropping it before
    /// it completes cancels the call.
    struct RawCall<'a> {
        via: Option<Via<'a>>,
        id: u64,
        method: &'static str,
        state: State,
        #[pin]
        sleep: Option<Sleep>,
    }

    impl<'a> PinnedDrop for RawCall<'a> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if matches!(this.state, State::Waiting(_))
                && let Some(via) = this.via
            {
                via.endpoint().cancel(*this.id);
            }
        }
    }
}

impl<'a> RawCall<'a> {
    /// Sends `request`, a call to `method`, via `via`; the call gives up at `deadline`.
    fn send(
        via: Via<'a>,
        request: Request,
        method: &'static str,
        deadline: Option<tokio::time::Instant>,
    ) -> RawCall<'a> {
        let id = request.id;
        let state = match via.endpoint().send_call(request, deadline) {
            Ok(rx) => State::Waiting(rx),
            Err(status) => State::Failed(status),
        };
        RawCall { via: Some(via), id, method, state, sleep: deadline.map(tokio::time::sleep_until) }
    }

    /// A call that failed before it could be sent anywhere.
    fn failed(status: Status, method: &'static str) -> RawCall<'a> {
        RawCall { via: None, id: 0, method, state: State::Failed(status), sleep: None }
    }

    /// The balanced channel's instance the call went to.
    fn in_flight(&self) -> Option<&InFlight> {
        match &self.via {
            Some(Via::Node(in_flight)) => Some(in_flight),
            _ => None,
        }
    }
}

impl Future for RawCall<'_> {
    type Output = Result<Answer, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        match std::mem::replace(this.state, State::Done) {
            State::Waiting(mut rx) => {
                if let Poll::Ready(answer) = Pin::new(&mut rx).poll(cx) {
                    return Poll::Ready(match answer {
                        Ok(result) => result,
                        Err(_) => Err(Status::unavailable("the channel's connection task ended")),
                    });
                }
                if let Some(sleep) = this.sleep.as_pin_mut()
                    && sleep.poll(cx).is_ready()
                {
                    if let Some(via) = this.via {
                        via.endpoint().cancel(*this.id);
                    }
                    let method = this.method;
                    return Poll::Ready(Err(Status::deadline_exceeded(format!(
                        "{method}: the deadline passed before an answer came"
                    ))));
                }
                *this.state = State::Waiting(rx);
                Poll::Pending
            }
            State::Failed(status) => Poll::Ready(Err(status)),
            State::Done => Poll::Ready(Err(Status::internal("response future polled after it completed"))),
        }
    }
}

pin_project_lite::pin_project! {
    #[project = InnerProj]
    enum Inner<'a> {
        Direct { #[pin] raw: RawCall<'a> },
        // Boxed: the common, direct call stays small.
        Balanced { call: Pin<Box<BalancedCall<'a>>> },
        Intercepted { call: BoxFuture<'a, Result<Answer, Status>> },
    }
}

pin_project_lite::pin_project! {
    /// The answer to a unary call, with its metadata: see [`UnaryCall::full`].
    ///
    /// Dropping it before it completes cancels the call: the server is told, and stops.
    #[must_use = "futures do nothing unless polled"]
    pub struct ResponseFuture<'a, Resp, C> {
        #[pin]
        inner: Inner<'a>,
        _marker: PhantomData<fn() -> (Resp, C)>,
    }
}

impl<Resp, C: Codec<Resp>> Future for ResponseFuture<'_, Resp, C> {
    type Output = Result<Response<Resp>, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let frame = match self.project().inner.project() {
            InnerProj::Direct { raw } => ready!(raw.poll(cx)),
            InnerProj::Balanced { call } => ready!(call.as_mut().poll(cx)),
            InnerProj::Intercepted { call } => ready!(call.as_mut().poll(cx)),
        };
        Poll::Ready(frame.and_then(decode_response::<Resp, C>))
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
    /// A unary call on a balanced channel: sent to the instance the policy picks, and to
    /// another one after a failure when that is safe (see [`crate::balance`]).
    struct BalancedCall<'a> {
        balancer: &'a Balancer,
        method: &'static str,
        // Kept to send the call again.
        metadata: Metadata,
        body: Bytes,
        deadline: Option<tokio::time::Instant>,
        // The addresses tried so far.
        tried: Vec<Arc<str>>,
        attempts: u32,
        #[pin]
        raw: RawCall<'a>,
    }
}

impl<'a> BalancedCall<'a> {
    fn new(
        balancer: &'a Balancer,
        method: &'static str,
        metadata: Metadata,
        body: Bytes,
        deadline: Option<tokio::time::Instant>,
    ) -> BalancedCall<'a> {
        let raw = match balancer.pick(&metadata, &[]) {
            Ok(node) => send_to(node, method, &metadata, &body, deadline),
            Err(status) => RawCall::failed(status, method),
        };
        BalancedCall { balancer, method, metadata, body, deadline, tried: Vec::new(), attempts: 1, raw }
    }
}

/// Sends a unary call to the instance of `call`.
fn send_to(
    call: InFlight,
    method: &'static str,
    metadata: &Metadata,
    body: &Bytes,
    deadline: Option<tokio::time::Instant>,
) -> RawCall<'static> {
    let request = call.node().endpoint().request(method, metadata.clone(), body.clone());
    RawCall::send(Via::Node(call), request, method, deadline)
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
                let status = match &result {
                    Ok(answer) => status_of(answer),
                    Err(status) => Some(status.clone()),
                };
                this.balancer.record(call, status.as_ref());
                (call.node().address(), status)
            };
            let Some(status) = status else { return Poll::Ready(result) };
            let time_left = this.deadline.is_none_or(|deadline| tokio::time::Instant::now() < deadline);
            if !time_left || !this.balancer.may_fail_over(this.method, &status, *this.attempts) {
                return Poll::Ready(result);
            }
            this.tried.push(Arc::clone(address));
            let Ok(next) = this.balancer.pick(this.metadata, this.tried) else {
                return Poll::Ready(result);
            };
            tracing::debug!(
                method = *this.method,
                failed = %status,
                next = %next.node().address(),
                "sending the call to another instance"
            );
            *this.attempts += 1;
            this.raw.set(send_to(next, this.method, this.metadata, this.body, *this.deadline));
        }
    }
}

/// The status an answer carries, if it is not OK.
fn status_of(answer: &Answer) -> Option<Status> {
    let code = answer.status_code.map_or(Code::Ok, Code::from_u32);
    if code == Code::Ok {
        return None;
    }
    let message =
        answer.status_message.as_ref().map(|m| String::from_utf8_lossy(m).into_owned()).unwrap_or_default();
    let status = Status::new(code, message).with_metadata(answer.metadata.clone());
    Some(if answer.flags & flags::REFUSED != 0 { status.refused() } else { status })
}

/// Turns an answer into the message, or the status it carries.
fn decode_response<Resp, C: Codec<Resp>>(answer: Answer) -> Result<Response<Resp>, Status> {
    if let Some(status) = status_of(&answer) {
        return Err(status);
    }
    match C::decode(answer.body) {
        Ok(message) => Ok(Response { message, metadata: answer.metadata }),
        Err(err) => Err(Status::internal(format!("response does not decode: {err}"))),
    }
}
