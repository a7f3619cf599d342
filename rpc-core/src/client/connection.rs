//! One client connection: calls in flight by id, responses routed back, keepalive.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::time::{Instant, Sleep};

use super::ChannelConfig;
use crate::metadata::Metadata;
use crate::status::{Code, Status};
use crate::stream::flow::StreamTable;
use crate::stream::inbound::InboundTx;
use crate::stream::{StreamEvent, StreamShared};
use crate::transport::{FrameIo, LocalSettings};
use crate::wire::CallMap;
use crate::wire::{Frame, FrameKind, WireError, flags};

/// Frames handled per poll before the task yields.
const POLL_BUDGET: usize = 128;

/// The body of keepalive pings.
const KEEPALIVE_PING: [u8; 8] = *b"keepaliv";

/// Where a call's answer goes: the response, or why there is none.
pub(crate) type Reply = oneshot::Sender<Result<Answer, Status>>;

/// A unary call on its way to the connection: what its `REQUEST` frame is made of (the
/// frame itself is built only when it is written, with the time then left as its timeout).
#[derive(Debug)]
pub(crate) struct Request {
    pub(crate) id: u64,
    pub(crate) method: &'static str,
    pub(crate) metadata: Metadata,
    pub(crate) body: Bytes,
}

/// A unary call's answer, as its caller needs it: what the `RESPONSE` frame carried.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) flags: u8,
    pub(crate) status_code: Option<u32>,
    pub(crate) status_message: Option<Bytes>,
    pub(crate) metadata: Metadata,
    pub(crate) body: Bytes,
}

impl From<Frame> for Answer {
    fn from(frame: Frame) -> Answer {
        let Frame { flags, header, body, .. } = frame;
        Answer {
            flags,
            status_code: header.status_code,
            status_message: header.status_message,
            metadata: header.metadata,
            body,
        }
    }
}

/// A connection to the channel's target, owned by the channel task.
pub(crate) struct ClientConnection {
    io: FrameIo<TcpStream>,
    pending: CallMap<Reply>,
    streams: StreamTable,
    ended: Vec<u64>,
    ready_waiters: Vec<oneshot::Sender<Result<(), Status>>>,
    goaway: Option<Status>,
    keepalive: Option<Keepalive>,
    frames_read: u64,
    /// Until the server's preface arrives: when to give up on it.
    handshake: Option<(Pin<Box<Sleep>>, Duration)>,
    target: Arc<str>,
}

impl ClientConnection {
    pub(crate) fn new(stream: TcpStream, config: &ChannelConfig, target: &Arc<str>) -> ClientConnection {
        let flow = config.flow();
        let io = FrameIo::open(
            stream,
            &LocalSettings {
                max_frame_size: config.max_frame_size,
                max_header_size: config.max_header_size,
                max_concurrent_calls: None,
                flow,
            },
        );
        ClientConnection {
            io,
            pending: CallMap::default(),
            streams: StreamTable::new(flow),
            ended: Vec::new(),
            ready_waiters: Vec::new(),
            goaway: None,
            keepalive: config
                .keepalive_interval
                .map(|interval| Keepalive::new(interval, config.keepalive_timeout)),
            frames_read: 0,
            handshake: Some((Box::pin(tokio::time::sleep(config.connect_timeout)), config.connect_timeout)),
            target: Arc::clone(target),
        }
    }

    /// Opens a stream: queues its `STREAM_OPEN` and registers its two ends.
    pub(crate) fn open_stream(
        &mut self,
        mut frame: Box<Frame>,
        inbound: InboundTx,
        shared: Arc<StreamShared>,
        deadline: Option<Instant>,
    ) {
        let id = frame.call_id;
        if let Err(status) = set_timeout(&mut frame, deadline) {
            inbound.end(Err(status.clone()));
            shared.close(status);
            return;
        }
        if let Err(err) = self.io.queue(&frame) {
            let status = Status::resource_exhausted(format!("the stream could not be opened: {err}"));
            inbound.end(Err(status.clone()));
            shared.close(status);
            return;
        }
        self.streams.open(id, inbound, shared);
    }

    /// Whether stream `id` has its state here.
    pub(crate) fn has_stream(&self, id: u64) -> bool {
        self.streams.contains(id)
    }

    /// A message, end, or credit release from one of this connection's streams.
    pub(crate) fn on_stream_event(&mut self, event: StreamEvent) {
        match event {
            event @ (StreamEvent::Message { .. } | StreamEvent::End(_)) => self.streams.push(event),
            StreamEvent::Release { id, bytes, last } => self.streams.release(id, bytes, last, &mut self.io),
            StreamEvent::Cancel { id } => {
                self.cancel(id);
            }
        }
    }

    /// Whether the server answered with a valid preface: it speaks the protocol.
    pub(crate) fn is_established(&self) -> bool {
        self.io.peer_preface_received()
    }

    /// Whether new calls may be sent here (no `GOAWAY` received).
    pub(crate) fn accepts_calls(&self) -> bool {
        self.goaway.is_none()
    }

    /// Resolves `waiter` once the server has proven it speaks the protocol.
    pub(crate) fn when_established(&mut self, waiter: oneshot::Sender<Result<(), Status>>) {
        if self.is_established() {
            let _ = waiter.send(Ok(()));
        } else {
            self.ready_waiters.push(waiter);
        }
    }

    /// Queues a call's request frame and remembers where its answer goes.
    pub(crate) fn start_call(&mut self, request: Request, reply: Reply, deadline: Option<Instant>) {
        let Request { id, method, metadata, body } = request;
        let mut frame = Frame::new(FrameKind::Request, id);
        frame.header.method = Some(Bytes::from_static(method.as_bytes()));
        frame.header.metadata = metadata;
        frame.body = body;
        if let Err(status) = set_timeout(&mut frame, deadline) {
            let _ = reply.send(Err(status));
            return;
        }
        match self.io.queue(&frame) {
            Ok(()) => {
                self.pending.insert(id, reply);
            }
            Err(WireError::FrameTooLarge { len, max }) => {
                let _ = reply.send(Err(Status::resource_exhausted(format!(
                    "request of {len} bytes exceeds the server's limit of {max} bytes"
                ))));
            }
            Err(WireError::HeaderTooLarge { len, max }) => {
                let _ = reply.send(Err(Status::resource_exhausted(format!(
                    "request metadata of {len} bytes exceeds the server's limit of {max} bytes"
                ))));
            }
            Err(err) => {
                let _ = reply.send(Err(Status::internal(format!("request could not be encoded: {err}"))));
            }
        }
    }

    /// Abandons call `id` if it is in flight here, telling the server. Returns whether it was.
    pub(crate) fn cancel(&mut self, id: u64) -> bool {
        let unary = self.pending.remove(&id).is_some();
        let stream = self.streams.is_live(id);
        if !unary && !stream {
            return false;
        }
        if stream {
            self.streams.close(id, Status::cancelled("the call was cancelled"));
        }
        // A cancel frame is a few bytes: below any limit.
        let _ = self.io.queue(&Frame::new(FrameKind::Cancel, id));
        true
    }

    /// Drives the connection. `Ready(reason)` when it is over: every call still in flight
    /// has been failed with `reason`.
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<Status> {
        let established = self.is_established();
        if let Some((timer, limit)) = &mut self.handshake {
            if established {
                self.handshake = None;
            } else if timer.as_mut().poll(cx).is_ready() {
                let reason = format!("{} did not answer with a preface within {limit:?}", self.target);
                return Poll::Ready(self.fail_all(Status::unavailable(reason)));
            }
        }
        let mut budget = POLL_BUDGET;
        while budget > 0 {
            // A busy stream's messages, straight off the read buffer.
            if let Some(message) = self.io.take_message() {
                self.frames_read += 1;
                if let Err(err) = self.streams.on_message(message, &mut self.io) {
                    let status = Status::internal(err.to_string());
                    self.goaway_best_effort(&status, cx);
                    return Poll::Ready(self.fail_all(status));
                }
                budget -= 1;
                continue;
            }
            match self.io.poll_read_frame(cx) {
                Poll::Ready(Ok(Some(frame))) => {
                    self.frames_read += 1;
                    if let Err(status) = self.handle_frame(frame) {
                        self.goaway_best_effort(&status, cx);
                        return Poll::Ready(self.fail_all(status));
                    }
                }
                Poll::Ready(Ok(None)) => {
                    let reason = match &self.goaway {
                        Some(goaway) => {
                            Status::unavailable(format!("server went away: {}", goaway.message()))
                        }
                        None => Status::unavailable("connection closed by the server"),
                    };
                    return Poll::Ready(self.fail_all(reason));
                }
                Poll::Ready(Err(err)) => {
                    let reason = Status::unavailable(format!("connection failed: {err}"));
                    if !matches!(
                        err,
                        WireError::Io(_) | WireError::BadPreface { .. } | WireError::TruncatedFrame { .. }
                    ) {
                        let code = match err {
                            WireError::FrameTooLarge { .. } | WireError::HeaderTooLarge { .. } => {
                                Code::ResourceExhausted
                            }
                            _ => Code::Internal,
                        };
                        self.goaway_best_effort(&Status::new(code, err.to_string()), cx);
                    }
                    return Poll::Ready(self.fail_all(reason));
                }
                Poll::Pending => break,
            }
            budget -= 1;
        }
        // Stream messages read above go to their consumers, a batch per stream.
        self.streams.deliver(&mut self.io);
        if budget == 0 {
            cx.waker().wake_by_ref();
        }
        if !self.ready_waiters.is_empty() && self.is_established() {
            for waiter in self.ready_waiters.drain(..) {
                let _ = waiter.send(Ok(()));
            }
        }
        if let Some(keepalive) = &mut self.keepalive
            && let Err(status) = keepalive.poll(cx, self.frames_read, &mut self.io)
        {
            return Poll::Ready(self.fail_all(status));
        }
        let mut written = self.streams.poll_write(&mut self.io, cx, &mut self.ended);
        // Our half-closes went out: nothing to do until the server ends those calls.
        self.ended.clear();
        let failed = self.streams.take_failed();
        if !failed.is_empty() {
            // Messages too large for the server: it is told the calls are off.
            for failed in failed {
                let _ = self.io.queue(&Frame::new(FrameKind::Cancel, failed.id));
            }
            written = self.io.poll_write(cx);
        }
        if let Poll::Ready(Err(err)) = written {
            return Poll::Ready(self.fail_all(Status::unavailable(format!("connection failed: {err}"))));
        }
        if let Some(goaway) = &self.goaway
            && self.pending.is_empty()
            && !self.streams.has_live()
            && !self.io.has_pending_writes()
        {
            // Drained: every call sent here has its answer.
            return Poll::Ready(goaway.clone());
        }
        Poll::Pending
    }

    /// Tells a misbehaving server why the connection ends, as far as one write goes: the
    /// connection is closed right after, whether or not the socket took it.
    fn goaway_best_effort(&mut self, reason: &Status, cx: &mut Context<'_>) {
        let mut goaway = Frame::new(FrameKind::GoAway, 0);
        goaway.header.status_code = Some(reason.code().as_u32());
        goaway.header.status_message = Some(Bytes::from(reason.message().to_owned()));
        if self.io.queue(&goaway).is_ok() {
            let _ = self.io.poll_write(cx);
        }
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), Status> {
        match frame.kind {
            FrameKind::Response => {
                // No entry: the call was cancelled or timed out, and nobody waits.
                if let Some(reply) = self.pending.remove(&frame.call_id) {
                    let _ = reply.send(Ok(Answer::from(frame)));
                }
            }
            FrameKind::Settings => {
                if let Some(window) = self.io.apply_peer_settings(&frame.header) {
                    self.streams.set_peer_stream_window(window);
                }
            }
            FrameKind::StreamMessage => {
                self.streams
                    .on_message(frame.into(), &mut self.io)
                    .map_err(|err| Status::internal(err.to_string()))?;
            }
            FrameKind::StreamEnd => {
                let id = frame.call_id;
                let code = frame.header.status_code.map_or(Code::Ok, Code::from_u32);
                if code == Code::Ok {
                    self.streams.complete(id, Ok(()));
                    self.streams.end_inbound(id, Ok(frame.header.metadata));
                    self.streams.finish(id, Status::failed_precondition("the server has ended the call"));
                } else {
                    let mut status =
                        status_of(frame.header.status_message, code).with_metadata(frame.header.metadata);
                    if frame.flags & flags::REFUSED != 0 {
                        status = status.refused();
                    }
                    self.streams.complete(id, Err(status.clone()));
                    self.streams.end_inbound(id, Err(status.clone()));
                    self.streams.finish(id, status);
                }
            }
            FrameKind::WindowUpdate => {
                self.streams.on_window_update(frame.call_id, frame.header.window_increment.unwrap_or(0));
            }
            FrameKind::GoAway => {
                let code = frame.header.status_code.map_or(Code::Ok, Code::from_u32);
                let status = status_of(frame.header.status_message, code);
                tracing::debug!(%status, "server sent GOAWAY");
                self.goaway = Some(status);
            }
            FrameKind::Ping => {
                let mut pong = Frame::new(FrameKind::Pong, frame.call_id);
                pong.body = frame.body;
                // A pong is as large as the server's own ping, which it accepts.
                let _ = self.io.queue(&pong);
            }
            FrameKind::Request | FrameKind::StreamOpen => {
                return Err(Status::internal("protocol violation: a server opened a call"));
            }
            // Keepalive answers count as activity already; cancels are not for clients.
            FrameKind::Pong | FrameKind::Cancel => {}
        }
        Ok(())
    }

    /// Fails every call in flight, and every waiter, with `reason`; returns it.
    pub(crate) fn fail_all(&mut self, reason: Status) -> Status {
        for (_, reply) in self.pending.drain() {
            let _ = reply.send(Err(reason.clone()));
        }
        for waiter in self.ready_waiters.drain(..) {
            let _ = waiter.send(Err(reason.clone()));
        }
        self.streams.close_all(&reason);
        reason
    }
}

/// Replaces the frame's `TIMEOUT` with the time left before `deadline`, now that it is being
/// written; a deadline already past fails the call without sending it.
fn set_timeout(frame: &mut Frame, deadline: Option<Instant>) -> Result<(), Status> {
    let Some(deadline) = deadline else { return Ok(()) };
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(Status::deadline_exceeded("the deadline passed before the call could be sent"));
    }
    frame.header.timeout = Some(left);
    Ok(())
}

/// A status from a frame's code and optional message.
fn status_of(message: Option<Bytes>, code: Code) -> Status {
    let message = message.map(|m| String::from_utf8_lossy(&m).into_owned()).unwrap_or_default();
    Status::new(code, message)
}

/// Pings an idle connection, and declares it dead when a ping goes unanswered.
struct Keepalive {
    interval: Duration,
    timeout: Duration,
    timer: Pin<Box<Sleep>>,
    awaiting_pong: bool,
    frames_seen: u64,
}

impl Keepalive {
    fn new(interval: Duration, timeout: Duration) -> Keepalive {
        Keepalive {
            interval,
            timeout,
            timer: Box::pin(tokio::time::sleep(interval)),
            awaiting_pong: false,
            frames_seen: 0,
        }
    }

    /// Checks for activity when the timer fires; a received frame of any kind counts, so
    /// busy connections never ping. The timer is re-armed only when it fires, not per frame.
    fn poll(
        &mut self,
        cx: &mut Context<'_>,
        frames_read: u64,
        io: &mut FrameIo<TcpStream>,
    ) -> Result<(), Status> {
        while self.timer.as_mut().poll(cx).is_ready() {
            if frames_read != self.frames_seen {
                self.frames_seen = frames_read;
                self.awaiting_pong = false;
                self.timer.as_mut().reset(Instant::now() + self.interval);
            } else if self.awaiting_pong {
                return Err(Status::unavailable(format!(
                    "keepalive ping unanswered for {:?}: connection presumed dead",
                    self.timeout
                )));
            } else {
                let mut ping = Frame::new(FrameKind::Ping, 0);
                ping.body = Bytes::from_static(&KEEPALIVE_PING);
                let _ = io.queue(&ping);
                self.awaiting_pong = true;
                self.timer.as_mut().reset(Instant::now() + self.timeout);
            }
        }
        Ok(())
    }
}
