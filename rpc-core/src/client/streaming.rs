//! Streaming calls from the client side: the builders generated stubs return for
//! server-streaming, client-streaming and bidirectional methods.

use std::future::{IntoFuture, Ready, ready};
use std::marker::PhantomData;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::task::Command;
use super::{CallOptions, Channel};
use crate::codec::Codec;
use crate::status::Status;
use crate::stream::{Outlet, StreamResponse, StreamSender, StreamShared, Streaming};
use crate::wire::FrameKind;

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
/// ```no_run
/// # use rpc_core::{Context, Status, StreamSender, Streaming, client::Channel};
/// # #[derive(Clone, PartialEq, prost::Message)] pub struct Point { #[prost(int32, tag = "1")] pub x: i32 }
/// # #[derive(Clone, PartialEq, prost::Message)] pub struct Summary { #[prost(int32, tag = "1")] pub count: i32 }
/// # #[rpc_core::service] pub trait Route {
/// #     async fn list(&self, ctx: &mut Context, req: Point, out: StreamSender<Point>) -> Result<(), Status>;
/// #     async fn record(&self, ctx: &mut Context, req: Streaming<Point>) -> Result<Summary, Status>;
/// #     async fn chat(&self, ctx: &mut Context, req: Streaming<Point>, out: StreamSender<Point>) -> Result<(), Status>;
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
    method: &'static str,
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
    pub(super) fn new(channel: &'a Channel, method: &'static str, request: Option<Req>) -> Self {
        StreamingCall { channel, method, request, options: CallOptions::default(), _marker: PhantomData }
    }

    call_option_methods!(
        "Fails the call with `DeadlineExceeded` unless the whole stream is over within `timeout`. \
         The server is told and stops at the same moment. Overrides the channel's default timeout."
    );

    /// Sends the `STREAM_OPEN` and returns the call's two ends.
    fn open(self) -> (Option<Req>, StreamSender<Req>, Streaming<Resp>) {
        let shared = &self.channel.shared;
        let (frame, deadline) = self.channel.opening_frame(FrameKind::StreamOpen, self.method, self.options);
        let id = frame.call_id;

        let window = shared.config.stream_window;
        let (inbound_tx, inbound) = mpsc::unbounded_channel();
        let budget = StreamShared::new(window);
        // If the channel's task is gone, the command (and with it `inbound_tx`) is dropped:
        // the stream then reads as failed, which is what the caller needs to know.
        let _ = shared.tx.send(Command::OpenStream {
            frame,
            inbound: inbound_tx,
            shared: budget.clone(),
            deadline,
        });

        let outlet = Outlet::Client(shared.tx.clone());
        let sender = StreamSender::new(id, budget, outlet.clone(), encode::<Req, C>, true);
        let timer = deadline.map(|d| Box::pin(tokio::time::sleep_until(d)));
        let receiver = Streaming::new(id, inbound, outlet, decode::<Resp, C>, window, timer, true);
        (self.request, sender, receiver)
    }
}

impl<'a, Req, Resp, C> IntoFuture for StreamingCall<'a, Req, Resp, C, ServerStreaming>
where
    C: Codec<Req> + Codec<Resp>,
{
    type Output = Result<Streaming<Resp>, Status>;
    type IntoFuture = Ready<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        let (request, mut sender, responses) = self.open();
        let sent = match request {
            Some(request) => sender.send_now(request),
            None => Err(Status::internal("a server-streaming call needs its request")),
        };
        // Dropping the sender tells the server the one request is all there is.
        drop(sender);
        ready(sent.map(|()| responses))
    }
}

impl<'a, Req, Resp, C> IntoFuture for StreamingCall<'a, Req, Resp, C, ClientStreaming>
where
    C: Codec<Req> + Codec<Resp>,
{
    type Output = Result<(StreamSender<Req>, StreamResponse<Resp>), Status>;
    type IntoFuture = Ready<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        let (_, sender, responses) = self.open();
        ready(Ok((sender, StreamResponse::new(responses))))
    }
}

impl<'a, Req, Resp, C> IntoFuture for StreamingCall<'a, Req, Resp, C, BidiStreaming>
where
    C: Codec<Req> + Codec<Resp>,
{
    type Output = Result<(StreamSender<Req>, Streaming<Resp>), Status>;
    type IntoFuture = Ready<Self::Output>;

    fn into_future(self) -> Self::IntoFuture {
        let (_, sender, responses) = self.open();
        ready(Ok((sender, responses)))
    }
}

fn encode<T, C: Codec<T>>(message: &T) -> Bytes {
    C::encode_to_bytes(message)
}

fn decode<T, C: Codec<T>>(body: Bytes) -> Result<T, Status> {
    C::decode(body).map_err(|err| Status::internal(format!("stream message does not decode: {err}")))
}
