//! One server connection: a single task that reads requests, spawns their handlers, writes
//! their responses, and drains on shutdown.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context as TaskContext, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;
use tokio::time::Sleep;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::ServerConfig;
use super::context::Context;
use super::routes::Routes;
use super::service::{Handled, MethodKind, Outgoing, Payload, ServerCall, StreamParts, error_response};
use crate::status::{Code, Status};
use crate::stream::flow::StreamTable;
use crate::stream::{StreamEvent, StreamShared};
use crate::transport::{FrameIo, LocalSettings};
use crate::wire::{CallMap, Frame, FrameKind, MAX_TIMEOUT, WireError, flags};

/// Frames handled per poll before the task yields to others on its worker.
const POLL_BUDGET: usize = 128;

/// Past this many unwritten bytes the connection stops reading requests until the client
/// has read its responses: a client that sends but never reads cannot make the server
/// buffer without bound.
pub(crate) const WRITE_HIGH_WATER: usize = 4 * 1024 * 1024;

/// Once this many bytes of answers are queued while a batch of requests is still being read,
/// they are written out at once rather than after the batch. The client then reads the first
/// answers while the server works through the rest: on separate CPUs (or machines) this more
/// than doubled the calls per second with 64 calls in flight. Both ends on one CPU, the extra
/// write costs about a fifth of them instead; the default serves the deployed case.
const EARLY_WRITE: usize = 1024;

/// How long a closing connection may take to flush its last frames.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// The body of the `PING` sent after a shutdown `GOAWAY`: its `PONG` proves the client has
/// read the `GOAWAY`, so no request of its can still be on the way.
pub(crate) const DRAIN_PING: [u8; 8] = *b"draining";

/// How a round of reading ended.
enum ReadEnd {
    /// The budget ran out, the socket had no more for now, or reading is paused.
    More,
    /// The peer closed its side cleanly between frames.
    Eof,
}

/// Serves one accepted connection until the peer leaves, it breaks a rule, or shutdown
/// drains it.
pub(crate) async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    routes: Arc<Routes>,
    config: Arc<ServerConfig>,
    shutdown: CancellationToken,
) {
    let mut conn = ServerConnection::new(stream, peer, routes, &config, shutdown);
    let outcome = std::future::poll_fn(|cx| conn.poll(cx)).await;
    match outcome {
        Ok(()) => tracing::debug!(%peer, "connection closed"),
        Err(err) if is_disconnect(&err) => tracing::debug!(%peer, %err, "the client went away"),
        Err(err) => {
            tracing::warn!(%peer, %err, "closing connection");
            if let Some(goaway) = goaway_for(&err) {
                let _ = conn.io.queue(&goaway);
            }
        }
    }
    let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, conn.io.close()).await;
}

/// Whether `err` is the client leaving abruptly (a reset, or a closed socket), which servers
/// see all the time, rather than a broken rule worth a warning.
fn is_disconnect(err: &WireError) -> bool {
    use std::io::ErrorKind;
    matches!(err, WireError::Io(io) if matches!(
        io.kind(),
        ErrorKind::ConnectionReset | ErrorKind::ConnectionAborted | ErrorKind::BrokenPipe | ErrorKind::UnexpectedEof
    ))
}

/// The `GOAWAY` that tells a misbehaving peer why it is being disconnected; none when the
/// peer does not speak the protocol or the socket itself failed.
fn goaway_for(err: &WireError) -> Option<Frame> {
    let code = match err {
        WireError::BadPreface { .. }
        | WireError::TruncatedPreface { .. }
        | WireError::PrefaceTimeout
        | WireError::TruncatedFrame { .. }
        | WireError::Io(_) => return None,
        WireError::FrameTooLarge { .. } | WireError::HeaderTooLarge { .. } => Code::ResourceExhausted,
        WireError::UnsupportedVersion(_) => Code::Unimplemented,
        _ => Code::Internal,
    };
    let mut frame = error_response(0, Status::new(code, err.to_string()));
    frame.kind = FrameKind::GoAway;
    Some(frame)
}

/// A call in flight: its handler task, and whether the caller cancelled it.
struct CallEntry {
    abort: Option<AbortHandle>,
    cancelled: bool,
}

struct ServerConnection {
    io: FrameIo<TcpStream>,
    peer: SocketAddr,
    routes: Arc<Routes>,
    max_concurrent_calls: usize,
    calls: CallMap<CallEntry>,
    /// Where each answered call's response ends in the output, until it has been written:
    /// those calls still count against the concurrency limit.
    owed: VecDeque<u64>,
    streams: StreamTable,
    stream_window: u64,
    tx: mpsc::UnboundedSender<Outgoing>,
    rx: mpsc::UnboundedReceiver<Outgoing>,
    preface_timer: Option<Pin<Box<Sleep>>>,
    shutdown: Option<Pin<Box<WaitForCancellationFutureOwned>>>,
    draining: bool,
    drain_acked: bool,
    ended: Vec<u64>,
}

impl ServerConnection {
    fn new(
        stream: TcpStream,
        peer: SocketAddr,
        routes: Arc<Routes>,
        config: &ServerConfig,
        shutdown: CancellationToken,
    ) -> ServerConnection {
        let flow = config.flow();
        let io = FrameIo::open(
            stream,
            &LocalSettings {
                max_frame_size: config.max_frame_size,
                max_header_size: config.max_header_size,
                max_concurrent_calls: Some(config.max_concurrent_calls),
                flow,
            },
        );
        let (tx, rx) = mpsc::unbounded_channel();
        ServerConnection {
            io,
            peer,
            routes,
            max_concurrent_calls: config.max_concurrent_calls,
            calls: CallMap::default(),
            owed: VecDeque::new(),
            streams: StreamTable::new(flow),
            stream_window: flow.stream_window,
            tx,
            rx,
            preface_timer: Some(Box::pin(tokio::time::sleep(config.preface_timeout))),
            shutdown: Some(Box::pin(shutdown.cancelled_owned())),
            draining: false,
            drain_acked: false,
            ended: Vec::new(),
        }
    }

    /// Drives the connection. `Ready(Ok)` when it is done: the peer left, or it drained.
    fn poll(&mut self, cx: &mut TaskContext<'_>) -> Poll<Result<(), WireError>> {
        if let Some(timer) = &mut self.preface_timer {
            if self.io.peer_preface_received() {
                self.preface_timer = None;
            } else if timer.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(WireError::PrefaceTimeout));
            }
        }
        if let Some(signal) = &mut self.shutdown
            && signal.as_mut().poll(cx).is_ready()
        {
            self.shutdown = None;
            self.start_drain()?;
        }

        // Responses and stream events from handler tasks.
        let mut budget = POLL_BUDGET;
        while budget > 0 {
            match self.rx.poll_recv(cx) {
                Poll::Ready(Some(outgoing)) => self.on_outgoing(outgoing)?,
                // We hold a sender ourselves, so the channel never closes.
                Poll::Ready(None) | Poll::Pending => break,
            }
            budget -= 1;
        }

        // Frames from the peer; then the stream messages among them go to their consumers, a
        // batch per stream (those read before a broken rule too).
        let read = self.read_frames(cx, &mut budget);
        self.streams.deliver(&mut self.io);
        match read {
            Ok(ReadEnd::More) => {}
            Ok(ReadEnd::Eof) => return Poll::Ready(Ok(())),
            Err(err) => return Poll::Ready(Err(err)),
        }
        if budget == 0 {
            // More may be ready: come back after other tasks had a turn.
            cx.waker().wake_by_ref();
        }

        // Everything queued above goes out together; stream data is added a chunk at a time
        // as the socket takes it.
        let paused = self.io.pending_write_bytes() >= WRITE_HIGH_WATER;
        if let Poll::Ready(Err(err)) = self.streams.poll_write(&mut self.io, cx, &mut self.ended) {
            return Poll::Ready(Err(err.into()));
        }
        if self.after_fill()?
            && let Poll::Ready(Err(err)) = self.io.poll_write(cx)
        {
            return Poll::Ready(Err(err.into()));
        }
        let written = self.io.written_total();
        while self.owed.front().is_some_and(|&end| end <= written) {
            self.owed.pop_front();
        }
        if paused && self.io.pending_write_bytes() < WRITE_HIGH_WATER {
            // The write drained below the mark without waiting: read again now.
            cx.waker().wake_by_ref();
        }

        if self.draining && self.drain_acked && self.calls.is_empty() && !self.io.has_pending_writes() {
            return Poll::Ready(Ok(()));
        }
        Poll::Pending
    }

    /// Reads and handles frames while `budget` lasts, the socket has some and the peer is
    /// reading what we already owe it.
    fn read_frames(&mut self, cx: &mut TaskContext<'_>, budget: &mut usize) -> Result<ReadEnd, WireError> {
        while *budget > 0 && self.io.pending_write_bytes() < WRITE_HIGH_WATER {
            // A busy stream's messages, straight off the read buffer.
            if let Some(message) = self.io.take_message() {
                self.streams.on_message(message, &mut self.io)?;
                *budget -= 1;
                continue;
            }
            match self.io.poll_read_frame(cx) {
                Poll::Ready(Ok(Some(frame))) => {
                    self.handle_frame(frame)?;
                    // Answers already made go out while the rest of the batch is read.
                    if self.io.pending_write_bytes() >= EARLY_WRITE
                        && let Poll::Ready(Err(err)) = self.io.poll_write(cx)
                    {
                        return Err(err.into());
                    }
                }
                Poll::Ready(Ok(None)) => return Ok(ReadEnd::Eof),
                Poll::Ready(Err(err)) => return Err(err),
                Poll::Pending => break,
            }
            *budget -= 1;
        }
        Ok(ReadEnd::More)
    }

    fn on_outgoing(&mut self, outgoing: Outgoing) -> Result<(), WireError> {
        match outgoing {
            Outgoing::Response(frame) => self.send_response(*frame),
            Outgoing::Stream(event @ (StreamEvent::Message { .. } | StreamEvent::End(_))) => {
                self.streams.push(event);
                Ok(())
            }
            Outgoing::Stream(StreamEvent::Release { id, bytes, last }) => {
                self.streams.release(id, bytes, last, &mut self.io);
                Ok(())
            }
            // Only clients cancel.
            Outgoing::Stream(StreamEvent::Cancel { .. }) => Ok(()),
            Outgoing::Finished(id) => {
                let entry = self.calls.remove(&id);
                let live_stream = self.streams.is_live(id);
                self.streams.finish(id, Status::cancelled("the call was cancelled"));
                if entry.is_some_and(|entry| !entry.cancelled) {
                    // The task ended without answering and nobody cancelled it (e.g. a codec
                    // panicked outside the handler): the caller must still get an answer.
                    let mut frame =
                        error_response(id, Status::internal("the call's task ended without an answer"));
                    if live_stream {
                        frame.kind = FrameKind::StreamEnd;
                    }
                    self.io.queue(&frame)?;
                }
                Ok(())
            }
        }
    }

    /// Acts on what scheduling stream frames produced: calls whose end went out are over,
    /// and streams whose message could not be sent end with the reason. Returns whether it
    /// queued frames.
    fn after_fill(&mut self) -> Result<bool, WireError> {
        for id in self.ended.drain(..) {
            self.calls.remove(&id);
            self.streams.finish(id, Status::cancelled("the stream has ended"));
        }
        let failed = self.streams.take_failed();
        let queued = !failed.is_empty();
        for failed in failed {
            if let Some(entry) = self.calls.remove(&failed.id)
                && let Some(abort) = entry.abort
            {
                abort.abort();
            }
            let mut end = error_response(failed.id, failed.status);
            end.kind = FrameKind::StreamEnd;
            self.io.queue(&end)?;
        }
        Ok(queued)
    }

    fn handle_frame(&mut self, frame: Frame) -> Result<(), WireError> {
        match frame.kind {
            FrameKind::Request => self.start_call(frame),
            FrameKind::StreamOpen => self.start_call(frame),
            FrameKind::StreamMessage => self.streams.on_message(frame.into(), &mut self.io),
            FrameKind::StreamEnd => {
                // The client half-closed: its handler reads the end after the messages.
                self.streams.end_inbound(frame.call_id, Ok(frame.header.metadata));
                Ok(())
            }
            FrameKind::WindowUpdate => {
                self.streams.on_window_update(frame.call_id, frame.header.window_increment.unwrap_or(0));
                Ok(())
            }
            FrameKind::Settings => {
                if let Some(window) = self.io.apply_peer_settings(&frame.header) {
                    self.streams.set_peer_stream_window(window);
                }
                Ok(())
            }
            FrameKind::Cancel => {
                if let Some(entry) = self.calls.get_mut(&frame.call_id) {
                    entry.cancelled = true;
                    if let Some(abort) = &entry.abort {
                        abort.abort();
                    }
                }
                self.streams.close(frame.call_id, Status::cancelled("cancelled by the client"));
                Ok(())
            }
            FrameKind::Ping => {
                let mut pong = Frame::new(FrameKind::Pong, frame.call_id);
                pong.body = frame.body;
                self.io.queue(&pong)
            }
            FrameKind::Pong => {
                if self.draining && frame.body.as_ref() == DRAIN_PING {
                    self.drain_acked = true;
                }
                Ok(())
            }
            FrameKind::Response => Err(WireError::Protocol("a client sent a RESPONSE frame")),
            // The client is leaving; it closes the connection when its calls are done.
            FrameKind::GoAway => Ok(()),
        }
    }

    /// Starts a unary call (`REQUEST`) or a streaming one (`STREAM_OPEN`).
    fn start_call(&mut self, frame: Frame) -> Result<(), WireError> {
        let id = frame.call_id;
        let streaming = frame.kind == FrameKind::StreamOpen;
        if id == 0 {
            return Err(WireError::Protocol("call opened with call id 0"));
        }
        let Some(method) = frame.header.method else {
            return Err(WireError::Protocol("call opened without a method"));
        };
        if self.calls.contains_key(&id) || self.streams.contains(id) {
            return Err(WireError::Protocol("call id reused while its call is in flight"));
        }
        if self.draining {
            return self.refuse(id, streaming, Status::unavailable("server is shutting down"));
        }
        if self.calls.len() + self.owed.len() >= self.max_concurrent_calls {
            let limit = self.max_concurrent_calls;
            let status =
                Status::resource_exhausted(format!("over {limit} calls in flight on one connection"));
            return self.refuse(id, streaming, status);
        }
        let Some(route) = self.routes.get(&method) else {
            let status = Status::unimplemented(self.routes.describe_unknown(&method));
            return self.answer(id, streaming, status);
        };
        if (route.kind == MethodKind::Unary) == streaming {
            let (is, opened) =
                if streaming { ("unary", "a stream") } else { ("a streaming method", "unary") };
            let status = Status::unimplemented(format!("{} is {is}, called as {opened}", route.path));
            return self.answer(id, streaming, status);
        }
        // A timeout beyond the protocol's cap is no deadline at all.
        let deadline = frame
            .header
            .timeout
            .filter(|&timeout| timeout <= MAX_TIMEOUT)
            .and_then(|timeout| tokio::time::Instant::now().checked_add(timeout));
        let context = Context::new(route.path, route.kind, self.peer, frame.header.metadata, deadline);
        let payload = if streaming {
            let (inbound_tx, inbound) = crate::stream::inbound::channel();
            let shared = StreamShared::new(self.stream_window);
            self.streams.open(id, inbound_tx, Arc::clone(&shared));
            Payload::Stream(StreamParts { inbound, shared, window: self.stream_window })
        } else {
            Payload::Unary(frame.body)
        };
        let interceptors = route.interceptors.clone();
        let call = ServerCall { id, context, out: self.tx.clone(), payload, interceptors };
        match route.service.call(route.index, call).0 {
            // Answered on the spot: nothing to keep track of.
            Handled::Answered(frame) => self.queue_response(frame),
            Handled::Running(abort) => {
                self.calls.insert(id, CallEntry { abort: Some(abort), cancelled: false });
                Ok(())
            }
            Handled::Sent => {
                self.calls.insert(id, CallEntry { abort: None, cancelled: false });
                Ok(())
            }
        }
    }

    /// Answers a call the server will not run with `status`, in the frame its kind expects.
    fn answer(&mut self, id: u64, streaming: bool, status: Status) -> Result<(), WireError> {
        let mut frame = error_response(id, status);
        if streaming {
            frame.kind = FrameKind::StreamEnd;
        }
        self.io.queue(&frame)
    }

    /// Answers a call that was not processed, flagged so the caller knows it may retry it.
    fn refuse(&mut self, id: u64, streaming: bool, status: Status) -> Result<(), WireError> {
        let mut frame = error_response(id, status);
        frame.flags |= flags::REFUSED;
        if streaming {
            frame.kind = FrameKind::StreamEnd;
        }
        self.io.queue(&frame)
    }

    fn send_response(&mut self, frame: Frame) -> Result<(), WireError> {
        let Some(entry) = self.calls.remove(&frame.call_id) else {
            return Ok(());
        };
        if entry.cancelled {
            return Ok(());
        }
        self.queue_response(frame)
    }

    /// Queues a unary call's response; the call counts against the limit on calls in flight
    /// until it has been written.
    fn queue_response(&mut self, frame: Frame) -> Result<(), WireError> {
        let id = frame.call_id;
        let queued = match self.io.queue(&frame) {
            Err(WireError::FrameTooLarge { len, max }) => {
                let status = Status::resource_exhausted(format!(
                    "response of {len} bytes exceeds the client's limit of {max} bytes"
                ));
                self.io.queue(&error_response(id, status))
            }
            Err(WireError::HeaderTooLarge { len, max }) => {
                let status = Status::resource_exhausted(format!(
                    "response metadata of {len} bytes exceeds the client's limit of {max} bytes"
                ));
                self.io.queue(&error_response(id, status))
            }
            other => other,
        };
        self.owed.push_back(self.io.queued_total());
        queued
    }

    /// Tells the client to stop sending calls, and asks it to prove it heard.
    fn start_drain(&mut self) -> Result<(), WireError> {
        self.draining = true;
        let mut goaway = error_response(0, Status::unavailable("server is shutting down"));
        goaway.kind = FrameKind::GoAway;
        self.io.queue(&goaway)?;
        let mut ping = Frame::new(FrameKind::Ping, 0);
        ping.body = Bytes::from_static(&DRAIN_PING);
        self.io.queue(&ping)
    }
}

impl Drop for ServerConnection {
    /// However the connection ends (the peer left, it broke a rule, or the server was
    /// stopped) nobody is left to answer: its handlers are stopped too.
    fn drop(&mut self) {
        for entry in self.calls.values() {
            if let Some(abort) = &entry.abort {
                abort.abort();
            }
        }
        self.streams.close_all(&Status::unavailable("the connection closed"));
    }
}
