//! Streaming calls from the client side: the builders generated stubs return for
//! server-streaming, client-streaming and bidirectional methods.

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Poll, ready};

use futures_util::future::{BoxFuture, Either};
use tokio::sync::oneshot;
use tokio::time::Instant;

use super::router::RecordOnEnd;
use super::{CallOptions, Channel, ClientConn, Endpoint, Route};
use crate::codec::Codec;
use crate::conn::{Note, StreamCore};
use crate::interceptor::{AnyMessage, ClientContext, ClientEndpoint, ClientNext};
use crate::metadata::Metadata;
use crate::method::{MethodKind, MethodName};
use crate::status::Status;
use crate::stream::{Side, StreamOutcome, StreamResponse, StreamSender, Streaming};
use crate::wire::{FrameKind, Header};

/// Marks a [`StreamingCall`] as server-streaming: one request, a stream of responses.
#[derive(Debug)]
pub enum ServerStreaming {}

/// Marks a [`StreamingCall`] as client-streaming: a stream of requests, one response.
#[derive(Debug)]
pub enum ClientStreaming {}

/// Marks a [`StreamingCall`] as bidirectional: streams both ways.
#[derive(Debug)]
pub enum BidiStreaming {}

/// A streaming call being prepared: set a timeout (covering the whole stream) or metadata,
/// then `.await` it to get the stream's ends.
///
/// The `.await` completes once the server has started the call's handler: a method the
/// server lacks (`Unimplemented`), a refusal, or an interceptor's verdict fails it there,
/// with the server's status. (A server-streaming call's request is sent before that wait.)
///
/// ```no_run
/// # use rpc_core::{ServerContext, Status, StreamSender, Streaming, client::Channel};
/// # #[derive(Clone, PartialEq, prost::Message)] pub struct Point { #[prost(int32, tag = "1")] pub x: i32 }
/// # #[derive(Clone, PartialEq, prost::Message)] pub struct Summary { #[prost(int32, tag = "1")] pub count: i32 }
/// # #[rpc_core::service] pub trait Route {
/// #     async fn list(&self, ctx: &mut ServerContext, req: Point, out: StreamSender<Point>) -> Result<(), Status>;
/// #     async fn record(&self, ctx: &mut ServerContext, req: Streaming<Point>) -> Result<Summary, Status>;
/// #     async fn chat(&self, ctx: &mut ServerContext, req: Streaming<Point>, out: StreamSender<Point>) -> Result<(), Status>;
/// # }
/// # async fn run(client: RouteClient) -> Result<(), Status> {
/// // Server streaming: read until the end; an error status arrives after the messages.
/// let mut points = client.list(Point { x: 1 }).await?;
/// while let Some(point) = points.message().await? {
///     println!("{point:?}");
/// }
///
/// // Client streaming: send, close, then await the single response.
/// let (mut requests, response) = client.record().await?;
/// requests.send(Point { x: 1 }).await?;
/// requests.close();
/// let summary = response.await?;
///
/// // Bidirectional: the two ends can move to different tasks.
/// let (mut tx, mut rx) = client.chat().timeout(std::time::Duration::from_secs(5)).await?;
/// tx.send(Point { x: 2 }).await?;
/// let echoed = rx.message().await?;
/// # Ok(()) }
/// ```
#[must_use = "a call does nothing until it is awaited"]
pub struct StreamingCall<'a, Req, Resp, C, K> {
    channel: &'a Channel,
    method: MethodName,
    request: Option<Req>,
    options: CallOptions,
    _marker: Marker<Resp, C, K>,
}

/// The call's response type, codec and kind, carried in the type only.
type Marker<Resp, C, K> = PhantomData<fn() -> (Resp, C, K)>;

impl<'a, Req, Resp, C, K> StreamingCall<'a, Req, Resp, C, K>
where
    C: Codec<Req> + Codec<Resp>,
{
    pub(super) fn new(channel: &'a Channel, method: MethodName, request: Option<Req>) -> Self {
        StreamingCall { channel, method, request, options: CallOptions::default(), _marker: PhantomData }
    }

    call_option_methods!(
        "Fails the call with `DeadlineExceeded` unless the whole stream is over within `timeout`. \
         The server is told and stops at the same moment. Overrides the channel's default timeout."
    );

    /// Opens the call: without interceptors, at once when a connection is up with a call
    /// slot free (else once there is one); through them otherwise, in a task that runs the
    /// chain until the stream has ended. `finish` turns the opened stream's ends into what
    /// the caller gets.
    fn start<T: Send + 'static>(self, kind: MethodKind, finish: Finish<Req, Resp, T>) -> OpenFuture<T>
    where
        Req: Send + 'static,
        Resp: Send + 'static,
    {
        let StreamingCall { channel, method, request, options, .. } = self;
        let deadline = channel.deadline_for(options.timeout);
        let Some(chain) = channel.chain_for(options.interceptors) else {
            let opening = match open_now::<Req, Resp, C>(channel, method, options.metadata, deadline) {
                Opening::Opened(Err(status)) => return OpenFuture::ready(Err(status)),
                Opening::Opened(Ok(opened)) => Either::Left(std::future::ready(Ok(opened))),
                Opening::Later(opening) => Either::Right(opening),
            };
            return OpenFuture {
                state: OpenState::Opening(Box::pin(async move {
                    let (core, sender, receiver) = opening.await?;
                    let ends = finish(request, sender, receiver)?;
                    accepted(&core, deadline).await?;
                    Ok(ends)
                })),
            };
        };
        let target = Arc::clone(&channel.shared.target);
        let mut ctx = ClientContext::new(method, kind, target, options.metadata, deadline);
        let (deliver, delivered) = oneshot::channel();
        let mut endpoint = StreamEndpoint::<Req, Resp, C, T> {
            channel: channel.clone(),
            request,
            deliver: Some(deliver),
            finish,
            _marker: PhantomData,
        };
        let run = async move {
            let outcome = ClientNext::new(&chain, &mut endpoint).run(&mut ctx).await;
            // If the chain never opened the stream (an interceptor said no), the caller
            // learns why.
            if let Some(deliver) = endpoint.deliver.take() {
                let status = outcome.err().unwrap_or_else(|| {
                    Status::internal("an interceptor answered OK without opening the stream")
                });
                let _ = deliver.send(Err(status));
            }
        };
        OpenFuture { state: OpenState::Intercepted { chain: Some(Box::pin(run)), delivered } }
    }
}

/// Turns an opened stream's ends (and a server-streaming call's request) into what the
/// caller gets.
type Finish<Req, Resp, T> = fn(Option<Req>, StreamSender<Req>, Streaming<Resp>) -> Result<T, Status>;

/// An opened stream: its state, and its two ends.
type OpenedStream<Req, Resp> = (Arc<StreamCore>, StreamSender<Req>, Streaming<Resp>);

/// A stream being opened: now, or once a connection (and a call slot) is there.
enum Opening<Req, Resp> {
    Opened(Result<OpenedStream<Req, Resp>, Status>),
    Later(BoxFuture<'static, Result<OpenedStream<Req, Resp>, Status>>),
}

/// Opens a stream to `method` where the channel sends its calls: its connection, or the
/// instance a balanced channel picks.
fn open_now<Req, Resp, C>(
    channel: &Channel,
    method: MethodName,
    metadata: Metadata,
    deadline: Option<Instant>,
) -> Opening<Req, Resp>
where
    C: Codec<Req> + Codec<Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    let (endpoint, record) = match &channel.shared.route {
        Route::Direct(endpoint) => (endpoint.clone(), None),
        Route::Balanced(router) => match router.pick(&metadata, &[]) {
            Ok(call) => {
                (call.node().endpoint().clone(), Some(RecordOnEnd { router: Arc::clone(router), call }))
            }
            Err(status) => return Opening::Opened(Err(status)),
        },
    };
    let ends = move |core: Arc<StreamCore>, record: Option<RecordOnEnd>| {
        let sender = StreamSender::new::<C>(Arc::clone(&core), Side::Client);
        let timer = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let mut receiver = Streaming::new::<C>(Arc::clone(&core), Side::Client, timer);
        if let Some(record) = record {
            receiver = receiver.with_outcome(Box::new(record));
        }
        (core, sender, receiver)
    };
    if let Some(conn) = endpoint.ready()
        && conn.slots.try_acquire()
    {
        match open_on(&conn, &method, metadata, deadline) {
            Ok(core) => return Opening::Opened(Ok(ends(core, record))),
            Err((status, None)) => {
                conn.slots.release();
                return Opening::Opened(Err(status));
            }
            Err((_, Some(metadata))) => {
                conn.slots.release();
                return later(endpoint, method, metadata, deadline, record, ends);
            }
        }
    }
    later(endpoint, method, metadata, deadline, record, ends)
}

/// Opens the stream once a connection with a free call slot is there.
fn later<Req, Resp>(
    endpoint: Endpoint,
    method: MethodName,
    metadata: Metadata,
    deadline: Option<Instant>,
    record: Option<RecordOnEnd>,
    ends: impl FnOnce(Arc<StreamCore>, Option<RecordOnEnd>) -> OpenedStream<Req, Resp> + Send + 'static,
) -> Opening<Req, Resp>
where
    Req: Send + 'static,
    Resp: Send + 'static,
{
    Opening::Later(Box::pin(async move {
        let mut metadata = metadata;
        let waiting = async {
            loop {
                let conn = endpoint.connection().await?;
                if !conn.slots.acquire().await {
                    continue;
                }
                match open_on(&conn, &method, metadata, deadline) {
                    Ok(core) => return Ok(core),
                    Err((status, None)) => {
                        conn.slots.release();
                        return Err(status);
                    }
                    Err((_, Some(returned))) => {
                        conn.slots.release();
                        metadata = returned;
                    }
                }
            }
        };
        let opened = match deadline {
            Some(deadline) => tokio::time::timeout_at(deadline, waiting).await.unwrap_or_else(|_| {
                Err(Status::deadline_exceeded(format!(
                    "{method}: the deadline passed before the stream could open"
                )))
            }),
            None => waiting.await,
        };
        match opened {
            Ok(core) => Ok(ends(core, record)),
            Err(status) => {
                // On a balanced channel, the instance failed this call.
                if let Some(record) = record {
                    Box::new(record).ended(Some(&status));
                }
                Err(status)
            }
        }
    }))
}

/// Waits, within the call's deadline, until the server has started the stream's handler
/// (docs/PROTOCOL.md §8.1): a call to a method the server lacks, or one an interceptor
/// turned away, fails here, with the server's status, rather than at its first message.
async fn accepted(core: &StreamCore, deadline: Option<Instant>) -> Result<(), Status> {
    let wait = std::future::poll_fn(|cx| core.poll_accepted(cx));
    match deadline {
        Some(deadline) => tokio::time::timeout_at(deadline, wait).await.unwrap_or_else(|_| {
            Err(Status::deadline_exceeded("the deadline passed before the server started the stream"))
        }),
        None => wait.await,
    }
}

/// Queues a `STREAM_OPEN` on `conn` (whose call slot the caller holds). Fails with the
/// status, or, when the connection stopped taking calls, gives the metadata back for
/// another connection.
fn open_on(
    conn: &ClientConn,
    method: &MethodName,
    metadata: Metadata,
    deadline: Option<Instant>,
) -> Result<Arc<StreamCore>, (Status, Option<Metadata>)> {
    let timeout = match deadline {
        None => None,
        Some(deadline) => {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err((
                    Status::deadline_exceeded("the deadline passed before the stream could open"),
                    None,
                ));
            }
            Some(left)
        }
    };
    let header = Header { method: Some(method.to_bytes()), timeout, metadata, ..Header::default() };
    conn.shared.with_outbox(|outbox| {
        if let Some(status) = &outbox.closed {
            return Err((status.clone().refused(), None));
        }
        if !conn.shared.is_accepting() {
            return Err((Status::unavailable("the connection is draining"), Some(header.metadata)));
        }
        let id = outbox.next_call_id();
        let core = StreamCore::new(id, Arc::clone(&conn.shared));
        outbox.queue_with(FrameKind::StreamOpen, 0, id, &header, 0, |_| {}).map_err(|err| {
            (Status::resource_exhausted(format!("the stream could not be opened: {err}")), None)
        })?;
        outbox.note(Note::Opened(Arc::clone(&core)));
        Ok(core)
    })
}

/// The end of a client chain for a streaming call: opens the stream as the context says,
/// hands the caller its ends, and completes when the call has ended.
struct StreamEndpoint<Req, Resp, C, T> {
    channel: Channel,
    request: Option<Req>,
    deliver: Option<oneshot::Sender<Result<T, Status>>>,
    finish: Finish<Req, Resp, T>,
    _marker: PhantomData<fn() -> (Resp, C)>,
}

impl<Req, Resp, C, T> ClientEndpoint for StreamEndpoint<Req, Resp, C, T>
where
    C: Codec<Req> + Codec<Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
    T: Send,
{
    fn call<'b>(&'b mut self, ctx: &'b mut ClientContext) -> BoxFuture<'b, Result<(), Status>> {
        Box::pin(async move {
            let Some(deliver) = self.deliver.take() else {
                return Err(Status::failed_precondition("a streaming call cannot be sent twice"));
            };
            let metadata = ctx.metadata().clone();
            let opened = match open_now::<Req, Resp, C>(
                &self.channel,
                ctx.method_name().clone(),
                metadata,
                ctx.deadline_instant(),
            ) {
                Opening::Opened(opened) => opened,
                Opening::Later(opening) => opening.await,
            };
            let (core, sender, receiver) = match opened {
                Ok(ends) => ends,
                Err(status) => {
                    let _ = deliver.send(Err(status.clone()));
                    return Err(status);
                }
            };
            let mut ends = (self.finish)(self.request.take(), sender, receiver);
            if ends.is_ok()
                && let Err(status) = accepted(&core, ctx.deadline_instant()).await
            {
                ends = Err(status);
            }
            let failed = ends.as_ref().err().cloned();
            let _ = deliver.send(ends);
            match failed {
                Some(status) => Err(status),
                None => core.completed().await,
            }
        })
    }

    fn request(&self) -> Option<&dyn AnyMessage> {
        None
    }

    fn response(&self) -> Option<&dyn AnyMessage> {
        None
    }
}

/// The ends of an opened streaming call: what awaiting a [`StreamingCall`] gives.
#[must_use = "futures do nothing unless polled"]
#[derive(Debug)]
pub struct OpenFuture<T> {
    state: OpenState<T>,
}

enum OpenState<T> {
    Ready(Option<Result<T, Status>>),
    /// Waiting for a connection and a call slot.
    Opening(BoxFuture<'static, Result<T, Status>>),
    /// The chain runs here, in the caller's task (so interceptors see its task-locals), until
    /// it has delivered the stream's ends; the rest of it, which waits for the stream to end,
    /// then moves to a task of its own.
    Intercepted {
        chain: Option<BoxFuture<'static, ()>>,
        delivered: oneshot::Receiver<Result<T, Status>>,
    },
}

impl<T> std::fmt::Debug for OpenState<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpenState::Ready(_) => f.write_str("Ready"),
            OpenState::Opening(_) => f.write_str("Opening"),
            OpenState::Intercepted { .. } => f.write_str("Intercepted"),
        }
    }
}

impl<T> OpenFuture<T> {
    fn ready(result: Result<T, Status>) -> OpenFuture<T> {
        OpenFuture { state: OpenState::Ready(Some(result)) }
    }
}

impl<T> Future for OpenFuture<T> {
    type Output = Result<T, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> Poll<Self::Output> {
        // Nothing here is pinned: the result is only moved out.
        match &mut self.get_mut().state {
            OpenState::Ready(result) => {
                Poll::Ready(result.take().unwrap_or_else(|| Err(Status::internal("polled after completion"))))
            }
            OpenState::Opening(opening) => opening.as_mut().poll(cx),
            OpenState::Intercepted { chain, delivered } => {
                if let Some(run) = chain
                    && run.as_mut().poll(cx).is_ready()
                {
                    *chain = None;
                }
                let result = ready!(Pin::new(delivered).poll(cx));
                if let Some(rest) = chain.take() {
                    // The stream is open; the interceptors wait for its end on their own.
                    tokio::spawn(rest);
                }
                Poll::Ready(
                    result.unwrap_or_else(|_| Err(Status::internal("the call's interceptors failed"))),
                )
            }
        }
    }
}

impl<T> Unpin for OpenFuture<T> {}

impl<'a, Req, Resp, C> IntoFuture for StreamingCall<'a, Req, Resp, C, ServerStreaming>
where
    C: Codec<Req> + Codec<Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    type Output = Result<Streaming<Resp>, Status>;
    type IntoFuture = OpenFuture<Streaming<Resp>>;

    fn into_future(self) -> Self::IntoFuture {
        self.start(MethodKind::ServerStreaming, |request, mut sender, responses| {
            let Some(request) = request else {
                return Err(Status::internal("a server-streaming call needs its request"));
            };
            sender.send_now(request)?;
            // Dropping the sender tells the server the one request is all there is.
            drop(sender);
            Ok(responses)
        })
    }
}

impl<'a, Req, Resp, C> IntoFuture for StreamingCall<'a, Req, Resp, C, ClientStreaming>
where
    C: Codec<Req> + Codec<Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    type Output = Result<(StreamSender<Req>, StreamResponse<Resp>), Status>;
    type IntoFuture = OpenFuture<(StreamSender<Req>, StreamResponse<Resp>)>;

    fn into_future(self) -> Self::IntoFuture {
        self.start(MethodKind::ClientStreaming, |_, sender, responses| {
            Ok((sender, StreamResponse::new(responses)))
        })
    }
}

impl<'a, Req, Resp, C> IntoFuture for StreamingCall<'a, Req, Resp, C, BidiStreaming>
where
    C: Codec<Req> + Codec<Resp>,
    Req: Send + 'static,
    Resp: Send + 'static,
{
    type Output = Result<(StreamSender<Req>, Streaming<Resp>), Status>;
    type IntoFuture = OpenFuture<(StreamSender<Req>, Streaming<Resp>)>;

    fn into_future(self) -> Self::IntoFuture {
        self.start(MethodKind::BidiStreaming, |_, sender, responses| Ok((sender, responses)))
    }
}
