//! The connection core: one state machine for both sides of a connection, generic over the
//! byte stream it runs on.
//!
//! A [`Connection`] owns a byte stream and drives it: the preface and `SETTINGS` exchange,
//! the read loop (one decoder, whose fast branch takes plain stream messages without building
//! a frame), the scheduling of writes (everything queued since the last write goes out
//! together; stream data a chunk at a time, round-robin), flow control, `PING`/`PONG` and
//! keepalive, `GOAWAY`, and the one table from errors to the `GOAWAY` that says why. What
//! differs between client and server (who opens calls, who answers them, how a `GOAWAY` or
//! a `STREAM_END` is taken) is the [`Peer`]'s: `client` and `server` each implement it.
//!
//! The tasks that use the connection never touch the socket: they put their frames in the
//! [`Shared`] outbox (callers their requests, handlers their answers, stream senders their
//! messages into their stream's buffer) and the driver writes them. See docs/ARCHITECTURE.md
//! for the life of a call through it.

mod budget;
mod flow;
mod io;
mod keepalive;
mod shared;
mod status;
mod stream;
mod watchdog;

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Sleep;

pub(crate) use budget::InputBudget;
pub(crate) use flow::Streams;
pub(crate) use shared::{Answer, Note, Outbox, Reply, Shared, window_update};
pub(crate) use status::{alarm_status, goaway_for, goaway_for_alarm, ok_end, status_frame, status_of};
pub(crate) use stream::{Messages, Received, Recv, StreamCore};
pub(crate) use watchdog::{Alarm, Timeouts};

use self::io::FrameIo;
use self::keepalive::Keepalive;
use self::watchdog::{Progress, Watchdog};
use crate::status::Status;
use crate::wire::{Frame, FrameCodec, FrameKind, Incoming, WireError};

/// Frames handled per poll before the driver yields to other tasks on its worker.
const POLL_BUDGET: usize = 128;

/// How many times a poll of the driver goes round while producers keep adding work.
const DRIVE_ROUNDS: usize = 4;

/// Fill-and-write rounds per poll while the socket keeps taking stream data.
const WRITE_ROUNDS: usize = 16;

/// Once this many bytes are waiting to be written while a batch of frames is still being
/// read, they are written at once rather than after the batch: the peer then reads the first
/// answers while the rest are being made. On separate CPUs (or machines) this more than
/// doubled a server's calls per second with 64 calls in flight.
const EARLY_WRITE: usize = 1024;

/// How one side runs its connections: what it announces in its `SETTINGS`, and its timers.
#[derive(Debug, Clone)]
pub(crate) struct ConnConfig {
    pub(crate) max_frame_size: usize,
    pub(crate) max_header_size: usize,
    /// Announced by servers only.
    pub(crate) max_concurrent_calls: Option<usize>,
    /// Announced by servers only: every stream whose handler starts is answered with a
    /// `STREAM_ACCEPT`.
    pub(crate) stream_accepts: bool,
    pub(crate) stream_window: u64,
    pub(crate) connection_window: u64,
    /// How long the peer has to send its preface.
    pub(crate) handshake_timeout: Duration,
    /// Ping after this much silence, and give up on the connection if nothing comes back in
    /// the second duration.
    pub(crate) keepalive: Option<(Duration, Duration)>,
    /// Idle and stall timeouts.
    pub(crate) timeouts: Timeouts,
}

/// The driver's state that the [`Peer`] works with: the shared outbox, and the streams.
pub(crate) struct State {
    pub(crate) shared: Arc<Shared>,
    pub(crate) streams: Streams,
}

impl State {
    /// Queues a frame of the driver's own (it goes out with the next write, in order with
    /// what producers queued before it). Fails, queuing nothing, if it is over the peer's
    /// limits.
    pub(crate) fn queue(&self, frame: &Frame) -> Result<(), WireError> {
        self.shared.queue_quietly(frame)
    }
}

/// What differs between the two sides of a connection.
pub(crate) trait Peer: Send + 'static {
    /// The peer's preface arrived: it speaks the protocol.
    fn on_established(&mut self, _state: &mut State) {}

    /// Applies a note a producer queued along with its frames. `base` is the byte offset,
    /// in the connection's output, at which those frames start.
    fn on_note(&mut self, state: &mut State, note: Note, base: u64);

    /// A frame that opens, answers, ends or cancels a call: `REQUEST`, `RESPONSE`,
    /// `STREAM_OPEN`, `STREAM_END` or `CANCEL`.
    fn on_call_frame(&mut self, state: &mut State, frame: Frame) -> Result<(), WireError>;

    /// A stream's end was moved to the socket: this side's part of the call is over.
    fn on_stream_ended(&mut self, state: &mut State, id: u64);

    /// The peer's `MAX_CONCURRENT_CALLS`.
    fn on_max_concurrent_calls(&mut self, _max: u64) {}

    /// The peer sent `GOAWAY`.
    fn on_goaway(&mut self, state: &mut State, status: Status);

    /// How many calls are in flight: while there are none, the connection is idle.
    fn in_flight(&self, state: &State) -> usize;

    /// The connection has been idle for its idle timeout: wind it down (the driver ends it
    /// once [`is_done`](Self::is_done)), or, returning `true`, end it now.
    fn on_idle(&mut self, state: &mut State) -> Result<bool, WireError>;

    /// A `PONG` that is not the keepalive's.
    fn on_pong(&mut self, _body: &Bytes) {}

    /// Everything up to byte `written` of the output has been written to the socket.
    fn on_written(&mut self, _written: u64) {}

    /// Role-specific signals and timers (a server's shutdown).
    fn poll_role(&mut self, _state: &mut State, _cx: &mut Context<'_>) -> Result<(), WireError> {
        Ok(())
    }

    /// Whether to stop reading for now, with `unwritten` bytes not yet written: a peer that
    /// sends but does not read must not make us buffer without bound.
    fn read_paused(&self, _unwritten: usize) -> bool {
        false
    }

    /// Whether the connection has nothing left to do (it drained after a `GOAWAY`).
    fn is_done(&self, state: &State) -> bool;

    /// The status the calls still on the connection end with, when it ended so.
    fn end_status(&self, ended: &Ended) -> Status;

    /// The connection is over, with `status` for every call still in flight on it.
    fn on_closed(&mut self, state: &mut State, status: &Status);
}

/// What a poll of the driver came to.
enum Step {
    /// The connection is over.
    Ended(Ended),
    /// Let the other ready tasks run, then poll again.
    Yield,
}

/// How a connection ended.
#[derive(Debug)]
pub(crate) enum Ended {
    /// It drained: every call is answered (after a `GOAWAY`).
    Drained,
    /// The peer closed it, between frames.
    Closed,
    /// A rule was broken, by the peer or the byte stream.
    Failed(WireError),
    /// Keepalive: the peer stopped answering.
    Unresponsive(Duration),
    /// The watchdog: idle, or the peer stalled (docs/PROTOCOL.md §12).
    TimedOut(Alarm),
}

/// One connection: a byte stream and the driver's state, run by [`run`].
pub(crate) struct Connection<T, P: Peer> {
    io: FrameIo<T>,
    state: State,
    peer: P,
    keepalive: Option<Keepalive>,
    watchdog: Option<Watchdog>,
    /// Frames of calls read and calls started, for the watchdog's idle check.
    call_activity: u64,
    /// The read buffer's room for a large frame, as counted in the connection's input.
    large_read: usize,
    /// Until the peer's preface arrives: when to give up on it.
    handshake: Option<Pin<Box<Sleep>>>,
    established: bool,
    frames_read: u64,
    /// Whether the last poll gave way to other tasks before writing.
    yielded: bool,
    /// Whether the last write gave way to the stream senders it woke.
    handed_off: bool,
    notes: Vec<Note>,
    ready: Vec<Arc<StreamCore>>,
    ended: Vec<u64>,
}

impl<T, P> Connection<T, P>
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
    P: Peer,
{
    /// A connection over `io` with our settings queued (our preface, our `SETTINGS`, and the
    /// connection-level credit we grant beyond the protocol's minimum), sharing `shared`.
    pub(crate) fn new(io: T, config: &ConnConfig, shared: Arc<Shared>, peer: P) -> Connection<T, P> {
        let codec = FrameCodec::new()
            .with_max_frame_size(config.max_frame_size)
            .with_max_header_size(config.max_header_size);
        let io = FrameIo::new(io, codec);
        let mut settings = Frame::new(FrameKind::Settings, 0);
        settings.header.max_frame_size = Some(config.max_frame_size as u64);
        settings.header.max_header_size = Some(config.max_header_size as u64);
        settings.header.max_concurrent_calls = config.max_concurrent_calls.map(|n| n as u64);
        settings.header.initial_window = Some(config.stream_window);
        settings.header.stream_accepts = config.stream_accepts.then_some(1);
        {
            let mut outbox = shared.lock();
            // Settings and window updates are a few bytes: below any limit a peer could set.
            let _ = outbox.queue(&settings);
            let extra = config.connection_window.saturating_sub(crate::wire::MIN_CONNECTION_WINDOW);
            // Part of the window the accounting counts from: not a grant back.
            if extra > 0 {
                let _ = outbox.queue(&window_update(0, extra));
            }
        }
        let streams = Streams::new(config.stream_window, config.connection_window, config.max_frame_size);
        Connection {
            io,
            state: State { shared, streams },
            peer,
            keepalive: config.keepalive.map(|(interval, timeout)| Keepalive::new(interval, timeout)),
            watchdog: Watchdog::new(config.timeouts),
            call_activity: 0,
            large_read: 0,
            handshake: Some(Box::pin(tokio::time::sleep(config.handshake_timeout))),
            established: false,
            frames_read: 0,
            yielded: false,
            handed_off: false,
            notes: Vec::new(),
            ready: Vec::new(),
            ended: Vec::new(),
        }
    }

    /// Takes what producers queued: frames into the write buffer, notes to the peer, ready
    /// streams into the turn order.
    fn take_outbox(&mut self, cx: &mut Context<'_>) {
        let base = self.io.queued_total();
        self.state.shared.take(cx.waker(), &mut self.io.write_buf, &mut self.notes, &mut self.ready);
        self.call_activity += self.notes.len() as u64;
        for note in self.notes.drain(..) {
            self.peer.on_note(&mut self.state, note, base);
        }
        self.state.streams.schedule(self.ready.drain(..));
    }

    fn on_frame(&mut self, frame: Frame) -> Result<(), WireError> {
        if frame.call_id != 0
            && matches!(
                frame.kind,
                FrameKind::Settings | FrameKind::Ping | FrameKind::Pong | FrameKind::GoAway
            )
        {
            return Err(WireError::Protocol(
                "a connection-level frame (SETTINGS, PING, PONG, GOAWAY) on a call id",
            ));
        }
        if frame.kind != FrameKind::Settings && self.state.shared.peer_accepts().is_none() {
            // A peer whose first frame is not its SETTINGS announced nothing, no
            // STREAM_ACCEPTS included.
            self.learn_stream_accepts(false);
        }
        match frame.kind {
            FrameKind::StreamMessage => self.state.streams.on_message(frame.into(), &self.state.shared),
            FrameKind::Settings => self.on_settings(&frame.header),
            FrameKind::WindowUpdate => match frame.header.window_increment {
                Some(increment) if increment > 0 => {
                    self.state.streams.on_window_update(frame.call_id, increment, &self.state.shared)
                }
                _ => Err(WireError::Protocol("WINDOW_UPDATE without a positive WINDOW_INCREMENT")),
            },
            FrameKind::Ping => {
                let mut pong = Frame::new(FrameKind::Pong, frame.call_id);
                pong.body = frame.body;
                self.state.queue(&pong)
            }
            FrameKind::Pong => {
                if !self.keepalive.as_mut().is_some_and(|k| k.on_pong(&frame.body)) {
                    self.peer.on_pong(&frame.body);
                }
                Ok(())
            }
            FrameKind::GoAway => {
                let status = match status_of(frame.header, frame.flags) {
                    Ok(_) => Status::unavailable("the peer is going away"),
                    Err(status) => status,
                };
                self.peer.on_goaway(&mut self.state, status);
                Ok(())
            }
            FrameKind::Request
            | FrameKind::Response
            | FrameKind::StreamOpen
            | FrameKind::StreamEnd
            | FrameKind::StreamAccept
            | FrameKind::Cancel => {
                self.call_activity += 1;
                self.peer.on_call_frame(&mut self.state, frame)
            }
        }
    }

    /// Applies the peer's `SETTINGS`, after checking them against the protocol's minimums
    /// (docs/PROTOCOL.md §6.1).
    fn on_settings(&mut self, header: &crate::wire::Header) -> Result<(), WireError> {
        use crate::wire::{MAX_FRAME_SIZE_CAP, MIN_MAX_FRAME_SIZE, MIN_MAX_HEADER_SIZE, MIN_STREAM_WINDOW};
        if header.max_frame_size.is_some_and(|max| max < MIN_MAX_FRAME_SIZE as u64) {
            return Err(WireError::Protocol("MAX_FRAME_SIZE below the minimum of 16,384"));
        }
        if header.max_header_size.is_some_and(|max| max < MIN_MAX_HEADER_SIZE as u64) {
            return Err(WireError::Protocol("MAX_HEADER_SIZE below the minimum of 1,024"));
        }
        if let Some(window) = header.initial_window {
            if window < MIN_STREAM_WINDOW {
                return Err(WireError::Protocol("INITIAL_WINDOW below the minimum of 65,536"));
            }
            self.state.streams.set_peer_window(window, &self.state.shared)?;
        }
        let mut limits = self.state.shared.lock().limits;
        if let Some(max) = header.max_frame_size {
            limits.max_frame = usize::try_from(max).unwrap_or(usize::MAX).min(MAX_FRAME_SIZE_CAP);
        }
        if let Some(max) = header.max_header_size {
            limits.max_header = usize::try_from(max).unwrap_or(usize::MAX);
        }
        self.state.shared.set_limits(limits);
        if let Some(max) = header.max_concurrent_calls {
            self.peer.on_max_concurrent_calls(max);
        }
        self.learn_stream_accepts(header.stream_accepts == Some(1));
        Ok(())
    }

    /// The peer's first `SETTINGS` (or, without one, its first frame) says whether it sends
    /// `STREAM_ACCEPT`s; streams waiting to hear are told it does not.
    fn learn_stream_accepts(&mut self, accepts: bool) {
        if self.state.shared.learn_peer_accepts(accepts) && !accepts {
            self.state.streams.accept_all();
        }
    }

    /// Reads and handles frames while the budget lasts, the socket has some, and the peer
    /// reads what we owe it.
    fn read(&mut self, cx: &mut Context<'_>, budget: &mut usize) -> Poll<Result<Ended, WireError>> {
        while *budget > 0 && !self.peer.read_paused(self.unwritten()) {
            // Holding too much of what was read: not another byte until the tasks it is for
            // have taken some (they wake the driver).
            if self.state.shared.input.is_over(cx.waker()) {
                break;
            }
            let polled = self.io.poll_next(cx);
            self.count_large_read();
            match polled {
                Poll::Ready(Ok(Some(incoming))) => {
                    self.frames_read += 1;
                    if !self.established && self.io.peer_preface_received() {
                        self.established = true;
                        self.handshake = None;
                        self.peer.on_established(&mut self.state);
                    }
                    match incoming {
                        Incoming::Messages(messages) => {
                            self.state.streams.on_message(messages, &self.state.shared)?
                        }
                        Incoming::Frame(frame) => {
                            self.on_frame(frame)?;
                            // Answers already made go out while the rest of the batch is read.
                            if self.unwritten() >= EARLY_WRITE {
                                self.take_outbox(cx);
                                if let Poll::Ready(Err(err)) = self.io.poll_write(cx) {
                                    return Poll::Ready(Err(err.into()));
                                }
                            }
                        }
                    }
                }
                Poll::Ready(Ok(None)) => return Poll::Ready(Ok(Ended::Closed)),
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
                Poll::Pending => {
                    if !self.established && self.io.peer_preface_received() {
                        self.established = true;
                        self.handshake = None;
                        self.peer.on_established(&mut self.state);
                    }
                    break;
                }
            }
            *budget -= 1;
        }
        Poll::Pending
    }

    /// Polls the watchdog: how the connection ends, if it must.
    fn watch(&mut self, cx: &mut Context<'_>, paused: bool) -> Result<Option<Ended>, WireError> {
        let Some(watchdog) = &mut self.watchdog else { return Ok(None) };
        let alarm = watchdog.poll(cx, || Progress {
            calls: self.peer.in_flight(&self.state),
            call_activity: self.call_activity,
            frames_read: self.frames_read,
            partial_frame: !paused && self.io.has_partial_frame(),
            written: self.io.written_total(),
            unwritten: self.io.write_buf.len() + self.state.shared.queued_len(),
        });
        match alarm {
            None => Ok(None),
            Some(Alarm::Idle(limit)) => {
                if self.peer.on_idle(&mut self.state)? {
                    return Ok(Some(Ended::TimedOut(Alarm::Idle(limit))));
                }
                watchdog.idle_grace(IDLE_GRACE.min(limit));
                Ok(None)
            }
            Some(alarm) => Ok(Some(Ended::TimedOut(alarm))),
        }
    }

    /// Counts the read buffer's room for a large frame in the connection's input.
    fn count_large_read(&mut self) {
        let large = self.io.large_read_buffer();
        if large > self.large_read {
            self.state.shared.input.add(large - self.large_read);
        } else if large < self.large_read {
            self.state.shared.release_input(self.large_read - large);
        }
        self.large_read = large;
    }

    /// Bytes queued and not yet written.
    fn unwritten(&self) -> usize {
        self.io.write_buf.len() + self.state.shared.queued_len()
    }

    /// Writes what is queued, topping the write buffer up with stream data a chunk at a time
    /// for as long as the socket takes it (then yields, to be polled again).
    ///
    /// `Ready(Ok(true))`: stream senders waiting for room were woken, and the driver gives
    /// way to them before it writes. A runtime runs a task woken by the running one next, on
    /// the same worker, after it; so a sender would otherwise wait out the socket write
    /// before it encodes its next batch. Given way to, it encodes while the driver, back in
    /// its worker's queue where another worker can take it, writes this batch. Once per
    /// batch: the next poll writes whatever it finds.
    fn write(&mut self, cx: &mut Context<'_>) -> Poll<Result<bool, WireError>> {
        for _ in 0..WRITE_ROUNDS {
            self.take_outbox(cx);
            let mut woke = false;
            let moved = self.state.streams.fill(&mut self.io.write_buf, &mut self.ended, &mut woke);
            for id in self.ended.drain(..) {
                self.peer.on_stream_ended(&mut self.state, id);
            }
            // Gives way once; the poll after writes, whoever it woke.
            if woke && !self.handed_off {
                self.handed_off = true;
                return Poll::Ready(Ok(true));
            }
            self.handed_off = false;
            match self.io.poll_write(cx) {
                Poll::Ready(Ok(())) => {
                    self.peer.on_written(self.io.written_total());
                    // Written out: more stream data may fit now that the buffer is empty.
                    if moved || self.state.streams.has_ready() {
                        continue;
                    }
                    return Poll::Ready(Ok(false));
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Err(err.into())),
                Poll::Pending => {
                    self.peer.on_written(self.io.written_total());
                    return Poll::Pending;
                }
            }
        }
        cx.waker().wake_by_ref();
        Poll::Ready(Ok(false))
    }

    /// Drives the connection until it ends.
    ///
    /// While it runs (and while it has yielded), producers do not wake it: before it waits,
    /// it looks at the outbox once more.
    fn poll_drive(&mut self, cx: &mut Context<'_>) -> Poll<Ended> {
        self.state.shared.driver_running();
        for _ in 0..DRIVE_ROUNDS {
            match self.poll_inner(cx) {
                Poll::Ready(Ok(Step::Ended(ended))) => return Poll::Ready(ended),
                Poll::Ready(Ok(Step::Yield)) => {
                    // Waking itself puts the task at the back of its worker's run queue,
                    // where another worker may take it (a task waiting elsewhere, in a
                    // worker's deferred list or its next-task slot, would be stuck behind a
                    // handler that blocks that worker).
                    cx.waker().wake_by_ref();
                    return Poll::Pending;
                }
                Poll::Ready(Err(err)) => return Poll::Ready(Ended::Failed(err)),
                Poll::Pending => {
                    if self.state.shared.driver_waiting() {
                        return Poll::Pending;
                    }
                }
            }
        }
        // Still more coming in: after the other tasks' turn.
        self.state.shared.driver_waiting();
        cx.waker().wake_by_ref();
        Poll::Pending
    }

    fn poll_inner(&mut self, cx: &mut Context<'_>) -> Poll<Result<Step, WireError>> {
        if let Some(timer) = &mut self.handshake
            && timer.as_mut().poll(cx).is_ready()
        {
            return Poll::Ready(Err(WireError::PrefaceTimeout));
        }
        self.peer.poll_role(&mut self.state, cx)?;

        // Reading needs nothing from the outbox: an answer can only come for a call whose
        // request, and the note that goes with it, was taken before it was written.
        let frames_before = self.frames_read;
        let mut budget = POLL_BUDGET;
        let read = self.read(cx, &mut budget);
        // Stream messages read above go to their consumers, a batch per stream (those read
        // before a broken rule too).
        self.state.streams.deliver(&self.state.shared);
        if let Poll::Ready(ended) = read {
            return Poll::Ready(ended.map(Step::Ended));
        }
        if budget == 0 {
            // More may be ready: come back after other tasks had a turn.
            cx.waker().wake_by_ref();
        }
        if self.frames_read == frames_before && !std::mem::take(&mut self.yielded) {
            // Woken by the tasks that use the connection, not by the peer: let the other
            // tasks that are ready to run do so first, so that their frames go out in the
            // same write. Without this, a runtime that runs a task right after the task that
            // woke it (Tokio does) would write each answer on its own.
            self.yielded = true;
            return Poll::Ready(Ok(Step::Yield));
        }
        if let Some(keepalive) = &mut self.keepalive {
            let frames_read = self.frames_read;
            match keepalive.poll(cx, frames_read) {
                keepalive::Action::None => {}
                keepalive::Action::Ping(ping) => self.state.queue(&ping)?,
                keepalive::Action::Dead(timeout) => {
                    return Poll::Ready(Ok(Step::Ended(Ended::Unresponsive(timeout))));
                }
            }
        }
        let paused = self.peer.read_paused(self.unwritten());
        if let Some(ended) = self.watch(cx, paused)? {
            return Poll::Ready(Ok(Step::Ended(ended)));
        }
        match self.write(cx) {
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Ready(Ok(true)) => {
                self.yielded = true;
                return Poll::Ready(Ok(Step::Yield));
            }
            _ => {}
        }
        if paused && !self.peer.read_paused(self.unwritten()) {
            // The write drained below the mark without waiting: read again now.
            cx.waker().wake_by_ref();
        }
        if self.peer.is_done(&self.state) && self.unwritten() == 0 {
            return Poll::Ready(Ok(Step::Ended(Ended::Drained)));
        }
        Poll::Pending
    }
}

impl<T, P: Peer> Connection<T, P> {
    /// The connection is over: nothing more is taken from the outbox (producers learn it is
    /// over from `status`), and every call still on it ends with `status`. Happens once.
    fn close(&mut self, status: &Status) {
        let unsent = {
            let mut outbox = self.state.shared.lock();
            if outbox.closed.is_some() {
                return;
            }
            outbox.closed = Some(status.clone());
            outbox.ready.clear();
            outbox.buf.clear();
            std::mem::take(&mut outbox.notes)
        };
        // Calls whose frames never left: not processed, so safe to send again.
        for note in unsent {
            match note {
                Note::Sent { reply, .. } => {
                    let _ = reply.send(Err(status.clone().refused()));
                }
                Note::Opened(core) => core.abort(status.clone().refused()),
                Note::Cancelled(_) | Note::Answered { .. } | Note::Unanswered(_) => {}
            }
        }
        self.state.shared.stop_accepting();
        self.peer.on_closed(&mut self.state, status);
        self.state.streams.close_all(status, &self.state.shared);
        self.state.shared.release_input(std::mem::take(&mut self.large_read));
    }
}

impl<T, P: Peer> Drop for Connection<T, P> {
    /// A connection dropped before it ended (its task was aborted, or the runtime shut
    /// down) ends its calls all the same.
    fn drop(&mut self) {
        self.close(&Status::unavailable("the connection was closed"));
    }
}

/// How long a closing connection may take to flush its last frames.
const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(1);

/// How long a peer told that its connection is idle (by a `GOAWAY`) has to close it before
/// it is closed.
const IDLE_GRACE: Duration = Duration::from_secs(10);

/// Runs `conn` until it ends; then tells the peer why (a `GOAWAY`, where the error calls for
/// one), flushes and closes the byte stream, and ends every call still on it with the
/// status the [`Peer`] gives for how it ended. Returns how it ended.
pub(crate) async fn run<T, P>(mut conn: Connection<T, P>) -> Ended
where
    T: AsyncRead + AsyncWrite + Unpin + Send,
    P: Peer,
{
    let ended = std::future::poll_fn(|cx| conn.poll_drive(cx)).await;
    let status = conn.peer.end_status(&ended);
    conn.close(&status);
    let goaway = match &ended {
        Ended::Failed(err) => goaway_for(err),
        Ended::TimedOut(alarm) => goaway_for_alarm(*alarm),
        _ => None,
    };
    if let Some(goaway) = goaway {
        goaway.encode_unchecked(&mut conn.io.write_buf);
    }
    // A peer that does not read would hold the flush for its whole timeout.
    if !matches!(ended, Ended::Failed(WireError::Io(_)) | Ended::TimedOut(Alarm::WriteStall(_))) {
        let _ = tokio::time::timeout(CLOSE_FLUSH_TIMEOUT, conn.io.close()).await;
    }
    ended
}

#[cfg(test)]
mod tests;
