//! Streams of messages within a call: [`Streaming`] receives them, [`StreamSender`] sends
//! them. Both sides of every streaming call use these two types.
//!
//! Flow control is built in. A `StreamSender::send` waits while the peer has not granted
//! credit for more, so a slow consumer slows its producer down instead of making either side
//! buffer without bound; a `Streaming` grants credit back as its messages are read.
//!
//! Sending is cheap: each message is encoded straight into the stream's buffer, which the
//! connection writes to the socket a batch at a time. A producer with many messages ready
//! sends them back to back (or with [`StreamSender::send_all`]) and they go out together.

/// The default flow-control window per stream: 1 MiB.
pub const DEFAULT_STREAM_WINDOW: u64 = 1024 * 1024;

/// The default flow-control window per connection, shared by its streams: 16 MiB.
pub const DEFAULT_CONNECTION_WINDOW: u64 = 16 * 1024 * 1024;

pub use crate::wire::{MIN_CONNECTION_WINDOW, MIN_STREAM_WINDOW};

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use tokio::time::Sleep;

use crate::codec::Codec;
use crate::conn::{Messages, Note, Received, Recv, StreamCore};
use crate::metadata::Metadata;
use crate::status::Status;
use crate::wire::{Frame, FrameKind};

/// Which side of the call a stream end belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
}

/// Sends the messages of one side of a stream.
///
/// A server handler gets one for its responses; a client gets one for its requests. `send`
/// waits while the peer's flow-control credit is used up.
///
/// On the client, dropping the sender (or calling [`close`](StreamSender::close)) tells the
/// server that no more requests follow. On the server, the stream ends when the handler
/// returns, with the status it returned.
pub struct StreamSender<T> {
    core: Arc<StreamCore>,
    /// The codec's frame encoder for `T` (see [`encode_frame`]).
    encode: EncodeFrame<T>,
    side: Side,
    /// A message given to the [`Sink`](futures_sink::Sink) that waits for credit.
    pending: Option<T>,
}

impl<T> std::fmt::Debug for StreamSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSender").field("call_id", &self.core.id).finish_non_exhaustive()
    }
}

impl<T> StreamSender<T> {
    pub(crate) fn new<C: Codec<T>>(core: Arc<StreamCore>, side: Side) -> StreamSender<T> {
        StreamSender { core, encode: encode_frame::<T, C>, side, pending: None }
    }

    /// Sends a message, waiting for flow-control credit if the peer has fallen behind.
    ///
    /// Fails once the stream is over: the peer ended or cancelled it (with the status it
    /// ended with, where known), its deadline passed, or the connection was lost. A message
    /// larger than the peer's frame limit fails with `RESOURCE_EXHAUSTED` (on a client, the
    /// call is then cancelled).
    pub fn send(&mut self, message: T) -> SendFuture<'_, T> {
        SendFuture { sender: self, message: Some(message) }
    }

    /// Sends every message `messages` yields, in order, as they come, waiting for credit as
    /// needed: a stream fed from any [`Stream`](futures_util::Stream), such as a channel's
    /// receiver or another call's [`Streaming`] mapped to messages. Stops at the first
    /// failed send, with its status. The stream is not closed after: drop the sender (or
    /// `close` it) to end it.
    ///
    /// ```no_run
    /// # use rpc_core::{Status, StreamSender};
    /// # async fn run(mut points: StreamSender<u32>) -> Result<(), Status> {
    /// let items = futures_util::stream::iter([1, 2, 3]);
    /// points.send_stream(items).await?;
    /// # Ok(()) }
    /// ```
    pub async fn send_stream(&mut self, messages: impl futures_util::Stream<Item = T>) -> Result<(), Status> {
        use futures_util::StreamExt;
        let mut messages = std::pin::pin!(messages);
        while let Some(message) = messages.next().await {
            self.send(message).await?;
        }
        Ok(())
    }

    /// Sends every message of `messages` in order, waiting for credit as needed. The same as
    /// sending them one by one, only faster: as many as the credit allows are encoded at a
    /// time. The fastest way to stream messages that are ready (or cheap to make): pass an
    /// iterator that makes them as it goes.
    pub async fn send_all(&mut self, messages: impl IntoIterator<Item = T>) -> Result<(), Status> {
        let (mut iter, mut next) = (messages.into_iter(), None);
        let encode = self.encode;
        let sent = std::future::poll_fn(|cx| {
            let mut unsent = Unsent { next: &mut next, iter: &mut iter, encode };
            self.core.poll_send(Some(cx), &mut unsent)
        })
        .await;
        if let Err(status) = &sent {
            self.on_failed_send(status);
        }
        sent
    }

    fn poll_send_message(
        &self,
        cx: Option<&mut Context<'_>>,
        message: &mut Option<T>,
    ) -> Poll<Result<(), Status>> {
        let mut one = Unsent { next: message, iter: &mut std::iter::empty(), encode: self.encode };
        let polled = self.core.poll_send(cx, &mut one);
        if let Poll::Ready(Err(status)) = &polled {
            self.on_failed_send(status);
        }
        polled
    }

    /// A send failed: on a client, a message too large for the server calls the call off.
    fn on_failed_send(&self, status: &Status) {
        if self.side == Side::Client && !self.core.is_send_closed() {
            cancel(&self.core, status.clone());
        }
    }

    /// Sends a message without waiting: for the first message of a fresh stream, whose
    /// credit is whole.
    pub(crate) fn send_now(&mut self, message: T) -> Result<(), Status> {
        match self.poll_send_message(None, &mut Some(message)) {
            Poll::Ready(result) => result,
            Poll::Pending => Err(Status::internal("a fresh stream had no credit for its first message")),
        }
    }

    /// Whether the stream is over, so that `send` would fail.
    pub fn is_closed(&self) -> bool {
        self.core.is_send_closed()
    }

    /// Ends this side of the stream: on a client, tells the server that no more messages
    /// follow (dropping the sender does the same).
    pub fn close(self) {
        drop(self);
    }
}

// The pending message is only ever moved, never pinned.
impl<T> Unpin for StreamSender<T> {}

/// A `StreamSender` is a [`Sink`](futures_sink::Sink) of its messages, for code written
/// against sinks (`stream.forward(sender)`, `SinkExt::send`). A message is taken once there is
/// room for it; flushing waits until the last one is in the stream's buffer (the connection
/// writes buffers on its own); closing ends this side of the stream, as dropping does.
impl<T> futures_sink::Sink<T> for StreamSender<T> {
    type Error = Status;

    fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        self.poll_flush(cx)
    }

    fn start_send(self: Pin<&mut Self>, item: T) -> Result<(), Status> {
        let this = self.get_mut();
        if this.pending.is_some() {
            return Err(Status::internal("start_send without poll_ready"));
        }
        this.pending = Some(item);
        Ok(())
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        let this = self.get_mut();
        if this.pending.is_none() {
            return Poll::Ready(Ok(()));
        }
        let mut pending = this.pending.take();
        let polled = this.poll_send_message(Some(cx), &mut pending);
        if polled.is_pending() {
            this.pending = pending;
        }
        polled
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        std::task::ready!(self.as_mut().poll_flush(cx))?;
        self.get_mut().end_client_side();
        Poll::Ready(Ok(()))
    }
}

impl<T> StreamSender<T> {
    /// On a client, tells the server that no more requests follow (once).
    fn end_client_side(&mut self) {
        if self.side == Side::Client {
            let id = self.core.id;
            self.core.finish_send(
                Frame::new(FrameKind::StreamEnd, id),
                false,
                Status::failed_precondition("the stream was closed by this side"),
            );
        }
    }
}

impl<T> Drop for StreamSender<T> {
    fn drop(&mut self) {
        self.end_client_side();
    }
}

/// The future of [`StreamSender::send`]: completes once the message is in the stream's
/// buffer (at once when there is flow-control credit, which is the common case).
#[must_use = "futures do nothing unless polled"]
pub struct SendFuture<'a, T> {
    sender: &'a StreamSender<T>,
    message: Option<T>,
}

impl<T> std::fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendFuture").field("call_id", &self.sender.core.id).finish_non_exhaustive()
    }
}

// The message is only ever moved out, never pinned.
impl<T> Unpin for SendFuture<'_, T> {}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        if this.message.is_none() {
            return Poll::Ready(Err(Status::internal("a send polled after it completed")));
        }
        this.sender.poll_send_message(Some(cx), &mut this.message)
    }
}

/// Appends `message` as a `STREAM_MESSAGE` frame of stream `id`, returning the frame's cost;
/// if that is over `max`, appends nothing and returns `Err` with it.
type EncodeFrame<T> = fn(&T, u64, usize, &mut BytesMut) -> Result<usize, usize>;

/// The [`EncodeFrame`] of codec `C`: one call per message, everything in it inlined.
fn encode_frame<T, C: Codec<T>>(
    message: &T,
    id: u64,
    max: usize,
    buf: &mut BytesMut,
) -> Result<usize, usize> {
    let body_len = C::encoded_len(message);
    let cost = Frame::message_payload_len(id, body_len);
    if cost > max {
        return Err(cost);
    }
    Frame::encode_message_with(id, body_len, buf, |buf| C::encode(message, buf));
    Ok(cost)
}

/// Messages to send: the one held back (a single `send`'s, or the one `send_all` took out
/// last time), then the iterator's.
struct Unsent<'a, T, I> {
    next: &'a mut Option<T>,
    iter: &'a mut I,
    encode: EncodeFrame<T>,
}

impl<T, I: Iterator<Item = T>> Messages for Unsent<'_, T, I> {
    fn has_next(&mut self) -> bool {
        if self.next.is_none() {
            *self.next = self.iter.next();
        }
        self.next.is_some()
    }

    fn encode_next(&mut self, id: u64, max: usize, buf: &mut BytesMut) -> Result<usize, usize> {
        let Some(message) = self.next.as_ref() else { return Ok(0) };
        let cost = (self.encode)(message, id, max, buf)?;
        *self.next = None;
        Ok(cost)
    }
}

/// Cancels a client's call on `core`: the server is told (`CANCEL`), and both ends of the
/// stream end with `status`.
pub(crate) fn cancel(core: &Arc<StreamCore>, status: Status) {
    let id = core.id;
    core.shared.with_outbox(|outbox| {
        // A call the server has ended already needs no cancel.
        if outbox.closed.is_none() && !core.is_finished() {
            // A cancel frame is a few bytes: below any limit.
            let _ = outbox.queue(&Frame::new(FrameKind::Cancel, id));
            outbox.note(Note::Cancelled(id));
        }
    });
    core.abort(status);
}

/// Receives the messages of one side of a stream, in order, then its end.
///
/// Read it with [`message`](Streaming::message) or as a [`Stream`](futures_util::Stream) of
/// `Result<T, Status>`. It ends with `Ok(None)` (or the stream's `None`) when the sender
/// finished normally, and with `Err(status)` when the call failed: a server's error after
/// the messages it sent, a deadline, a lost connection.
///
/// A client that drops a `Streaming` before its end cancels the call; the server stops the
/// handler.
pub struct Streaming<T> {
    core: Arc<StreamCore>,
    /// Messages taken from the connection, not yet read.
    local: VecDeque<Received>,
    decode: fn(&mut Bytes, usize) -> Result<T, Status>,
    /// Credit of messages read and not yet granted back.
    unreleased: u64,
    release_threshold: u64,
    deadline: Option<Pin<Box<Sleep>>>,
    side: Side,
    done: bool,
    trailers: Metadata,
    /// On a balanced client, told how the stream ended (and counting it in flight until then).
    outcome: Option<Box<dyn StreamOutcome>>,
}

/// Told how a stream ended, once: `None` for a normal end, else the status it failed with.
/// Dropped untold if the stream is abandoned first.
pub(crate) trait StreamOutcome: Send + Sync {
    fn ended(self: Box<Self>, status: Option<&Status>);
}

impl<T> std::fmt::Debug for Streaming<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Streaming")
            .field("call_id", &self.core.id)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T> Streaming<T> {
    pub(crate) fn new<C: Codec<T>>(
        core: Arc<StreamCore>,
        side: Side,
        deadline: Option<Pin<Box<Sleep>>>,
    ) -> Streaming<T> {
        // Credit goes back at half a window consumed: the producer always has the other half.
        let release_threshold = (core.shared.stream_window / 2).max(1);
        Streaming {
            core,
            local: VecDeque::new(),
            decode: match side {
                Side::Server => decode_request::<T, C>,
                Side::Client => decode_response::<T, C>,
            },
            unreleased: 0,
            release_threshold,
            deadline,
            side,
            done: false,
            trailers: Metadata::new(),
            outcome: None,
        }
    }

    /// Tells `outcome` how the stream ends.
    pub(crate) fn with_outcome(mut self, outcome: Box<dyn StreamOutcome>) -> Streaming<T> {
        self.outcome = Some(outcome);
        self
    }

    fn conclude(&mut self, status: Option<&Status>) {
        if let Some(outcome) = self.outcome.take() {
            outcome.ended(status);
        }
    }

    /// The next message; `Ok(None)` at the normal end, `Err` if the call failed.
    pub async fn message(&mut self) -> Result<Option<T>, Status> {
        std::future::poll_fn(|cx| self.poll_message(cx)).await
    }

    /// The metadata sent with the end of the stream, once it has ended normally (on a client,
    /// the server's response metadata).
    pub fn trailers(&self) -> &Metadata {
        &self.trailers
    }

    /// How many received messages are waiting to be read.
    pub fn queued(&self) -> usize {
        self.local.iter().map(|run| run.count as usize).sum::<usize>() + self.core.queued()
    }

    /// Polls for the next message.
    pub fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, Status>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        loop {
            if let Some(run) = self.local.front_mut() {
                let Some((decoded, cost)) = run.next_message_with(self.decode) else {
                    self.local.pop_front();
                    continue;
                };
                if run.is_empty() {
                    self.local.pop_front();
                }
                self.unreleased += cost;
                if self.unreleased >= self.release_threshold {
                    self.core.grant(std::mem::take(&mut self.unreleased));
                }
                return Poll::Ready(decoded.map(Some));
            }
            match self.core.poll_recv(cx, &mut self.local) {
                Poll::Ready(Recv::Messages) => {}
                Poll::Ready(Recv::End(end)) => {
                    self.finish();
                    self.conclude(end.as_ref().err());
                    return Poll::Ready(match end {
                        Ok(trailers) => {
                            self.trailers = trailers;
                            Ok(None)
                        }
                        Err(status) => Err(status),
                    });
                }
                Poll::Pending => {
                    if let Some(deadline) = &mut self.deadline
                        && deadline.as_mut().poll(cx).is_ready()
                    {
                        let status = Status::deadline_exceeded("the stream's deadline passed");
                        self.core.complete(Err(status.clone()));
                        self.cancel(status.clone());
                        self.finish();
                        self.conclude(Some(&status));
                        return Poll::Ready(Err(status));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// Reads exactly one message followed by the end of the stream.
    pub(crate) async fn single(mut self, what: &'static str) -> Result<T, Status> {
        let Some(message) = self.message().await? else {
            return Err(Status::invalid_argument(format!("the stream ended without its {what}")));
        };
        match self.message().await? {
            None => Ok(message),
            Some(_) => Err(Status::invalid_argument(format!("the stream had more than one {what}"))),
        }
    }

    /// On a client, abandons the call.
    fn cancel(&mut self, status: Status) {
        if self.side == Side::Client {
            cancel(&self.core, status);
        }
    }

    /// The stream is over for this consumer: gives back the credit of everything read and
    /// unread, and takes no more. Happens once.
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        let unread: u64 = self.local.drain(..).map(|run| run.cost).sum();
        let bytes = std::mem::take(&mut self.unreleased) + unread + self.core.detach();
        self.core.grant(bytes);
    }
}

impl<T> futures_util::Stream for Streaming<T> {
    type Item = Result<T, Status>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        // `Streaming` holds nothing pinned: `Sleep` is boxed.
        self.get_mut().poll_message(cx).map(Result::transpose)
    }
}

impl<T> Drop for Streaming<T> {
    fn drop(&mut self) {
        if !self.done {
            self.cancel(Status::cancelled("the call was cancelled"));
        }
        self.finish();
    }
}

/// The single response of a client-streaming call: await it after sending the requests and
/// closing the [`StreamSender`].
#[must_use = "futures do nothing unless polled"]
pub struct StreamResponse<T> {
    stream: Streaming<T>,
    message: Option<T>,
}

impl<T> std::fmt::Debug for StreamResponse<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamResponse").field("stream", &self.stream).finish_non_exhaustive()
    }
}

impl<T> StreamResponse<T> {
    pub(crate) fn new(stream: Streaming<T>) -> StreamResponse<T> {
        StreamResponse { stream, message: None }
    }

    /// The metadata the server sent with its response, once it has arrived.
    pub fn trailers(&self) -> &Metadata {
        self.stream.trailers()
    }
}

impl<T> Future for StreamResponse<T> {
    type Output = Result<T, Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        loop {
            match std::task::ready!(this.stream.poll_message(cx)) {
                Ok(Some(message)) if this.message.is_none() => this.message = Some(message),
                Ok(Some(_)) => {
                    return Poll::Ready(Err(Status::internal("the server sent more than one response")));
                }
                Ok(None) => {
                    return Poll::Ready(
                        this.message.take().ok_or_else(|| Status::internal("the server sent no response")),
                    );
                }
                Err(status) => return Poll::Ready(Err(status)),
            }
        }
    }
}

// Nothing in a `StreamResponse` is pinned: the message is only moved out, never polled.
impl<T> Unpin for StreamResponse<T> {}

/// A client's message to a server that does not decode: the caller sent bad data.
fn decode_request<T, C: Codec<T>>(frames: &mut Bytes, len: usize) -> Result<T, Status> {
    C::decode_front(frames, len)
        .map_err(|err| Status::invalid_argument(format!("request does not decode: {err}")))
}

/// A server's message to a client that does not decode.
fn decode_response<T, C: Codec<T>>(frames: &mut Bytes, len: usize) -> Result<T, Status> {
    C::decode_front(frames, len)
        .map_err(|err| Status::internal(format!("stream message does not decode: {err}")))
}
