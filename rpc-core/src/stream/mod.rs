//! Streams of messages within a call: [`Streaming`] receives them, [`StreamSender`] sends
//! them. Both sides of every streaming call use these two types.
//!
//! Flow control is built in. A `StreamSender::send` waits while the peer has not granted
//! credit for more, so a slow consumer slows its producer down instead of making either side
//! buffer without bound; a `Streaming` grants credit back as its messages are read.

pub(crate) mod flow;
pub(crate) mod inbound;

/// The default flow-control window per stream: 1 MiB.
pub const DEFAULT_STREAM_WINDOW: u64 = 1024 * 1024;

/// The default flow-control window per connection, shared by its streams: 16 MiB.
pub const DEFAULT_CONNECTION_WINDOW: u64 = 16 * 1024 * 1024;

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::{Semaphore, mpsc};
use tokio::time::Sleep;

use crate::client::Command;
use crate::metadata::Metadata;
use crate::server::Outgoing;
use crate::status::Status;
use crate::wire::{Frame, FrameKind};
use inbound::InboundRx;

/// What the tasks at either end of a stream tell its connection.
// Messages are the common case: boxing the frame would cost an allocation per message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum StreamEvent {
    /// A message to send on stream `id`.
    Message { id: u64, body: Bytes },
    /// The stream's end: its `STREAM_END` frame (once per stream, so boxed: the events of a
    /// busy stream stay small).
    End(Box<Frame>),
    /// The consumer has taken `bytes` of messages: credit to grant back. `last`: the
    /// consumer is done with the stream (it read the end, or was dropped).
    Release { id: u64, bytes: u64, last: bool },
    /// The client abandons the call.
    Cancel { id: u64 },
}

/// The way from a stream's user to its connection's task.
#[derive(Debug, Clone)]
pub(crate) enum Outlet {
    Server(mpsc::UnboundedSender<Outgoing>),
    Client(mpsc::UnboundedSender<Command>),
}

impl Outlet {
    /// Sends an event; `false` if the connection is gone.
    fn send(&self, event: StreamEvent) -> bool {
        match self {
            Outlet::Server(tx) => tx.send(Outgoing::Stream(event)).is_ok(),
            Outlet::Client(tx) => tx.send(Command::Stream(event)).is_ok(),
        }
    }
}

/// What a connection delivers to a stream's consumer.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// A message, and the credit it used.
    Message { body: Bytes, cost: u64 },
    /// The end: the peer's trailing metadata, or the status the stream failed with.
    End(Result<Metadata, Status>),
}

/// State shared by a `StreamSender` and its connection: the sender's local budget of bytes
/// not yet written, and the outcome once the stream is closed.
#[derive(Debug)]
pub(crate) struct StreamShared {
    /// Bytes the sender may still queue; the connection gives them back as it writes.
    pub(crate) budget: Semaphore,
    /// The most one message takes from the budget, so a message larger than the whole
    /// budget still goes (alone).
    pub(crate) cap: u32,
    outcome: OnceLock<Status>,
    /// How the call ended, once it has: what a client interceptor around the stream sees.
    result: OnceLock<Result<(), Status>>,
    ended: tokio::sync::Notify,
}

impl StreamShared {
    pub(crate) fn new(budget: u64) -> Arc<StreamShared> {
        let cap = u32::try_from(budget).unwrap_or(u32::MAX);
        Arc::new(StreamShared {
            budget: Semaphore::new(cap as usize),
            cap,
            outcome: OnceLock::new(),
            result: OnceLock::new(),
            ended: tokio::sync::Notify::new(),
        })
    }

    /// The call is over: no more sending (waiting and later sends fail with `status`), and
    /// if the call had not ended yet, it ends with `status`.
    pub(crate) fn close(&self, status: Status) {
        self.complete(Err(status.clone()));
        self.stop_sending(status);
    }

    /// This side sends no more (it half-closed); the call itself goes on.
    pub(crate) fn stop_sending(&self, status: Status) {
        let _ = self.outcome.set(status);
        self.budget.close();
    }

    /// Records how the call ended (the first report wins).
    pub(crate) fn complete(&self, result: Result<(), Status>) {
        if self.result.set(result).is_ok() {
            self.ended.notify_waiters();
        }
    }

    /// Waits until the call has ended; how it ended.
    pub(crate) async fn completed(&self) -> Result<(), Status> {
        loop {
            let notified = self.ended.notified();
            let mut notified = std::pin::pin!(notified);
            notified.as_mut().enable();
            if let Some(result) = self.result.get() {
                return result.clone();
            }
            notified.await;
        }
    }

    fn outcome(&self) -> Status {
        self.outcome.get().cloned().unwrap_or_else(|| Status::cancelled("the stream is closed"))
    }
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
    id: u64,
    shared: Arc<StreamShared>,
    outlet: Outlet,
    encode: fn(&T) -> Bytes,
    half_close_on_drop: bool,
}

impl<T> std::fmt::Debug for StreamSender<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StreamSender").field("call_id", &self.id).finish_non_exhaustive()
    }
}

impl<T> StreamSender<T> {
    pub(crate) fn new(
        id: u64,
        shared: Arc<StreamShared>,
        outlet: Outlet,
        encode: fn(&T) -> Bytes,
        half_close_on_drop: bool,
    ) -> StreamSender<T> {
        StreamSender { id, shared, outlet, encode, half_close_on_drop }
    }

    /// Sends a message, waiting for flow-control credit if the peer has fallen behind.
    ///
    /// Fails once the stream is over: the peer ended or cancelled it (with the status it
    /// ended with, where known), its deadline passed, or the connection was lost.
    pub fn send(&mut self, message: T) -> SendFuture<'_, T> {
        let body = (self.encode)(&message);
        let permits = Frame::message_payload_len(self.id, body.len()).min(self.shared.cap as usize) as u32;
        SendFuture { sender: self, body: Some(body), permits, waiting: None }
    }

    /// Sends a message without waiting: for the first message of a fresh stream, whose budget
    /// is whole.
    pub(crate) fn send_now(&mut self, message: T) -> Result<(), Status> {
        let body = (self.encode)(&message);
        let permits = Frame::message_payload_len(self.id, body.len()).min(self.shared.cap as usize) as u32;
        match self.shared.budget.try_acquire_many(permits) {
            Ok(permit) => permit.forget(),
            Err(_) => return Err(self.shared.outcome()),
        }
        if self.outlet.send(StreamEvent::Message { id: self.id, body }) {
            Ok(())
        } else {
            Err(Status::unavailable("the connection is gone"))
        }
    }

    /// Whether the stream is over, so that `send` would fail.
    pub fn is_closed(&self) -> bool {
        self.shared.budget.is_closed()
    }

    /// Ends this side of the stream: on a client, tells the server that no more messages
    /// follow (dropping the sender does the same).
    pub fn close(self) {
        drop(self);
    }
}

impl<T> Drop for StreamSender<T> {
    fn drop(&mut self) {
        if self.half_close_on_drop && !self.shared.budget.is_closed() {
            let _ = self.outlet.send(StreamEvent::End(Box::new(Frame::new(FrameKind::StreamEnd, self.id))));
        }
    }
}

/// The credit a [`SendFuture`] waits for, when it has to: boxed, since most sends find
/// credit at once and need no waiting state.
type WaitForCredit<'a> = Pin<
    Box<dyn Future<Output = Result<tokio::sync::SemaphorePermit<'a>, tokio::sync::AcquireError>> + Send + 'a>,
>;

/// The future of [`StreamSender::send`]: completes once the message is handed to the
/// connection (at once when there is flow-control credit, which is the common case).
#[must_use = "futures do nothing unless polled"]
pub struct SendFuture<'a, T> {
    sender: &'a StreamSender<T>,
    body: Option<Bytes>,
    permits: u32,
    waiting: Option<WaitForCredit<'a>>,
}

impl<T> std::fmt::Debug for SendFuture<'_, T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SendFuture").field("call_id", &self.sender.id).finish_non_exhaustive()
    }
}

impl<T> SendFuture<'_, T> {
    fn deliver(&mut self) -> Result<(), Status> {
        let Some(body) = self.body.take() else {
            return Err(Status::internal("a send polled after it completed"));
        };
        if self.sender.outlet.send(StreamEvent::Message { id: self.sender.id, body }) {
            Ok(())
        } else {
            Err(Status::unavailable("the connection is gone"))
        }
    }
}

impl<T> Future for SendFuture<'_, T> {
    type Output = Result<(), Status>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        // Nothing here is pinned: the waiting future is boxed.
        let this = self.get_mut();
        let shared = &this.sender.shared;
        if let Some(waiting) = &mut this.waiting {
            let acquired = std::task::ready!(waiting.as_mut().poll(cx));
            this.waiting = None;
            return Poll::Ready(match acquired {
                Ok(permit) => {
                    permit.forget();
                    this.deliver()
                }
                Err(_) => Err(shared.outcome()),
            });
        }
        match shared.budget.try_acquire_many(this.permits) {
            Ok(permit) => {
                permit.forget();
                Poll::Ready(this.deliver())
            }
            Err(tokio::sync::TryAcquireError::Closed) => Poll::Ready(Err(shared.outcome())),
            Err(tokio::sync::TryAcquireError::NoPermits) => {
                let mut waiting: WaitForCredit<'_> = Box::pin(shared.budget.acquire_many(this.permits));
                match waiting.as_mut().poll(cx) {
                    Poll::Ready(Ok(permit)) => {
                        permit.forget();
                        Poll::Ready(this.deliver())
                    }
                    Poll::Ready(Err(_)) => Poll::Ready(Err(shared.outcome())),
                    Poll::Pending => {
                        this.waiting = Some(waiting);
                        Poll::Pending
                    }
                }
            }
        }
    }
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
    id: u64,
    rx: InboundRx,
    outlet: Outlet,
    decode: fn(Bytes) -> Result<T, Status>,
    unreleased: u64,
    release_threshold: u64,
    deadline: Option<Pin<Box<Sleep>>>,
    cancel_on_drop: bool,
    done: bool,
    trailers: Metadata,
    /// On a client, the call's shared state, told when the deadline ends the call.
    reports_to: Option<Arc<StreamShared>>,
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
            .field("call_id", &self.id)
            .field("done", &self.done)
            .finish_non_exhaustive()
    }
}

impl<T> Streaming<T> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        rx: InboundRx,
        outlet: Outlet,
        decode: fn(Bytes) -> Result<T, Status>,
        window: u64,
        deadline: Option<Pin<Box<Sleep>>>,
        cancel_on_drop: bool,
    ) -> Streaming<T> {
        Streaming {
            id,
            rx,
            outlet,
            decode,
            unreleased: 0,
            // Report consumption in quarter windows: the connection grants credit back at
            // half a window, so the producer never waits on a report held back here.
            release_threshold: (window / 4).max(1),
            deadline,
            cancel_on_drop,
            done: false,
            trailers: Metadata::new(),
            reports_to: None,
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

    /// Records a deadline that ends the call in `shared`, for interceptors waiting on it.
    pub(crate) fn reporting_to(mut self, shared: Arc<StreamShared>) -> Streaming<T> {
        self.reports_to = Some(shared);
        self
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
        self.rx.len()
    }

    /// Polls for the next message.
    pub fn poll_message(&mut self, cx: &mut Context<'_>) -> Poll<Result<Option<T>, Status>> {
        if self.done {
            return Poll::Ready(Ok(None));
        }
        match self.rx.poll_recv(cx) {
            Poll::Ready(Some(Inbound::Message { body, cost })) => {
                self.unreleased += cost;
                // Report when enough has accumulated, or when we have caught up with the
                // producer: then nothing is held back while we wait for more.
                if self.unreleased >= self.release_threshold || self.rx.is_empty() {
                    let bytes = std::mem::take(&mut self.unreleased);
                    self.outlet.send(StreamEvent::Release { id: self.id, bytes, last: false });
                }
                Poll::Ready((self.decode)(body).map(Some))
            }
            Poll::Ready(Some(Inbound::End(end))) => {
                self.finish();
                self.conclude(end.as_ref().err());
                Poll::Ready(match end {
                    Ok(trailers) => {
                        self.trailers = trailers;
                        Ok(None)
                    }
                    Err(status) => Err(status),
                })
            }
            Poll::Ready(None) => {
                self.finish();
                let status = Status::unavailable("the connection closed before the stream ended");
                self.conclude(Some(&status));
                Poll::Ready(Err(status))
            }
            Poll::Pending => {
                if let Some(deadline) = &mut self.deadline
                    && deadline.as_mut().poll(cx).is_ready()
                {
                    let status = Status::deadline_exceeded("the stream's deadline passed");
                    if let Some(shared) = &self.reports_to {
                        shared.complete(Err(status.clone()));
                    }
                    self.cancel();
                    self.finish();
                    self.conclude(Some(&status));
                    return Poll::Ready(Err(status));
                }
                Poll::Pending
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

    fn cancel(&mut self) {
        if std::mem::take(&mut self.cancel_on_drop) {
            self.outlet.send(StreamEvent::Cancel { id: self.id });
        }
    }

    /// The stream is over for this consumer: gives back the credit of everything received
    /// and unread, and tells the connection it is done with the stream. Happens once.
    fn finish(&mut self) {
        if std::mem::replace(&mut self.done, true) {
            return;
        }
        // Closed first, so that nothing arrives between the drain and the drop unaccounted.
        self.rx.close();
        let mut bytes = std::mem::take(&mut self.unreleased);
        while let Some(inbound) = self.rx.try_recv() {
            if let Inbound::Message { cost, .. } = inbound {
                bytes += cost;
            }
        }
        self.outlet.send(StreamEvent::Release { id: self.id, bytes, last: true });
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
            self.cancel();
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
